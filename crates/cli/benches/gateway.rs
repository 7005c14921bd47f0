//! Time to first token through the gateway against the engine's own, in
//! the same run: the real llama.cpp server (the suite's tiny model), asked
//! directly and through scheduler, worker and `/v1/chat/completions`, in
//! turns, the same streamed request each time.
//!
//! `cargo bench -p tessera-cli --bench gateway -- [--rounds N]
//! [--max-tokens N] [--report PATH]`; `scripts/bench gateway` runs it. The
//! scheduler (SQLite) and the worker run in this process; the llama.cpp
//! server is the one the tests start (a Python virtualenv, see
//! `scripts/engines.sh`). Time to first token is from sending the request
//! to reading the first chunk with text; the whole is to `[DONE]`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use tessera_api::public::{Credentials, NewDeveloperKeyRequest};
use tessera_core::Platform;
use tessera_testkit::engines::LlamaServer;
use tessera_testkit::{Backend, TestApp};
use tessera_worker::config::EngineConfig;

struct Args {
    rounds: usize,
    max_tokens: u32,
    report: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 30,
        max_tokens: 32,
        report: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--max-tokens" => {
                a.max_tokens = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--max-tokens N")
            }
            "--report" => a.report = it.next(),
            // cargo bench passes --bench; other harness flags mean nothing here.
            _ => {}
        }
    }
    a
}

/// One streamed request: time to the first text chunk, and to `[DONE]`.
async fn stream(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> (Duration, Duration) {
    let start = Instant::now();
    let mut req = http.post(url).json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.expect("request");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let mut first = None;
    let mut buffer = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(piece) = body.next().await {
        buffer.extend_from_slice(&piece.expect("stream"));
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                return (first.expect("a text chunk before [DONE]"), start.elapsed());
            }
            let chunk: Value = serde_json::from_str(data).expect("a JSON chunk");
            let text = chunk["choices"][0]["delta"]["content"].as_str();
            if first.is_none() && text.is_some_and(|t| !t.is_empty()) {
                first = Some(start.elapsed());
            }
        }
    }
    panic!("{url}: the stream ended without [DONE]");
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let args = args();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(args));
}

async fn run(args: Args) {
    let llama = LlamaServer::start();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.workers.dispatch_tick_ms = 100;
    })
    .await;
    let engines: Vec<EngineConfig> = serde_json::from_value(json!([
        { "kind": "openai_chat", "url": llama.url,
          "models": ["llama-3.2-3b"], "upstream_model": llama.model },
    ]))
    .expect("engine settings");
    let _worker = app.worker("w-llama", engines).await;
    let web = app.frontend(Platform::Web, "website").await;
    let account = web
        .create_account(&Credentials {
            email: "bench@example.org".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("account");
    app.admin
        .set_plan(&account.user_ref, &"admin".parse().unwrap())
        .await
        .expect("plan");
    let key = web
        .create_developer_key(
            &account.user_ref,
            &NewDeveloperKeyRequest {
                name: "bench".into(),
                capabilities: None,
            },
        )
        .await
        .expect("key")
        .api_key;

    let http = reqwest::Client::new();
    let body = |model: &str| {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": "Write a short story about the sea."}],
            "max_tokens": args.max_tokens,
            "stream": true,
        })
    };
    let direct_url = format!("{}/v1/chat/completions", llama.url);
    let gateway_url = format!("{}/v1/chat/completions", app.base_url());
    // One of each first, unmeasured: the model loads, the worker warms.
    stream(&http, &direct_url, None, &body(&llama.model)).await;
    stream(&http, &gateway_url, Some(&key), &body("llama-3.2-3b")).await;
    let (mut direct, mut gateway) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        direct.push(stream(&http, &direct_url, None, &body(&llama.model)).await);
        gateway.push(stream(&http, &gateway_url, Some(&key), &body("llama-3.2-3b")).await);
    }
    let mut report = String::new();
    let _ = writeln!(
        report,
        "How it was run: `cargo bench -p tessera-cli --bench gateway -- --rounds {} --max-tokens {}` \
         (release build), on {} cores. The llama.cpp server (the suite's tiny model, 2 threads) \
         is asked the same streamed chat completion directly and through the gateway, in turns; \
         the scheduler (SQLite, dispatch tick 100 ms) and one worker with the `openai_chat` engine \
         run in the benchmark's process, all on loopback.\n",
        args.rounds,
        args.max_tokens,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let _ = writeln!(
        report,
        "| path | TTFT p50 | TTFT p90 | whole p50 | whole p90 |\n|---|---|---|---|---|"
    );
    for (name, runs) in [
        ("llama.cpp directly", &direct),
        ("through the gateway", &gateway),
    ] {
        let mut ttft: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        let mut whole: Vec<Duration> = runs.iter().map(|r| r.1).collect();
        ttft.sort();
        whole.sort();
        let _ = writeln!(
            report,
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            quantile(&ttft, 0.5),
            quantile(&ttft, 0.9),
            quantile(&whole, 0.5),
            quantile(&whole, 0.9),
        );
    }
    print!("{report}");
    if let Some(path) = &args.report {
        std::fs::write(path, &report).expect("writing the report");
    }
    app.shutdown().await;
}
