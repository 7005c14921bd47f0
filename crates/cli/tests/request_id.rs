//! One request id follows a job through every layer: the frontend's
//! `X-Request-Id` on the create is logged by the scheduler with the job, sent
//! to the worker with the job, logged by the worker on every line of the run,
//! and sent back with the result, whose upload the scheduler logs under it.
//! Real `tessera scheduler` and `tessera worker` processes, JSON logs.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(30);
const REQUEST_ID: &str = "trace-7f3a-from-the-bot";

fn spawn(dir: &Path, log: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    let out = std::fs::File::create(dir.join(log)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--log-format", "json", "--log", "info"])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("the tessera binary starts")
}

/// The JSON lines of a log so far; every line must be JSON.
fn lines(dir: &Path, log: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(log))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Every string in a JSON value, nested ones included.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn mentions(line: &Value, text: &str) -> bool {
    let mut all = Vec::new();
    strings(line, &mut all);
    all.iter().any(|s| s.contains(text))
}

async fn wait_for_line(dir: &Path, log: &str, what: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = lines(dir, log).into_iter().find(|l| what(l)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no such line in {log}:\n{}",
            std::fs::read_to_string(dir.join(log)).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("it stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_follows_its_job_from_the_frontend_to_the_worker_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = "admin-token-for-the-request-id-test";
    let internal = "internal-token-for-the-request-id-test";
    let db = format!("sqlite://{}", d.join("t.db").display());
    let artifacts = d.join("artifacts").display().to_string();
    let scheduler = spawn(
        d,
        "scheduler.log",
        &[
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
        ],
        &[
            ("TESSERA_AUTH__ADMIN_TOKEN", admin),
            ("TESSERA_AUTH__INTERNAL_TOKEN", internal),
            ("TESSERA_ARTIFACTS__LOCATION", &artifacts),
        ],
    );
    let listening = wait_for_line(d, "scheduler.log", |l| {
        l["message"] == "scheduler listening"
    })
    .await;
    let url = format!("http://{}", listening["addr"].as_str().unwrap());

    let worker_config = d.join("worker.toml");
    std::fs::write(
        &worker_config,
        "[[engines]]\nkind = \"sim\"\ncapability = \"image\"\nmodels = [\"sdxl-1.0\"]\nrun_ms = 300\nload_ms = 0\n",
    )
    .unwrap();
    let worker = spawn(
        d,
        "worker.log",
        &[
            "worker",
            "--config",
            worker_config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--scheduler-url",
            &url,
        ],
        &[
            ("TESSERA_WORKER__INTERNAL_TOKEN", internal),
            ("TESSERA_WORKER__ID", "worker-gpu-3"),
        ],
    );

    let http = reqwest::Client::new();
    let key: Value = http
        .post(format!("{url}/api/admin/keys"))
        .bearer_auth(admin)
        .json(&json!({"frontend": "telegram", "bot_id": "tg-image-bot-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["api_key"].as_str().unwrap().to_owned();
    // The worker registers (the variables named it worker-gpu-3).
    wait_for_line(d, "scheduler.log", |l| {
        l["message"] == "new worker" && mentions(l, "worker-gpu-3")
    })
    .await;

    let created = http
        .post(format!("{url}/api/v1/jobs"))
        .bearer_auth(&key)
        .header("x-request-id", REQUEST_ID)
        .json(&json!({"frontend": "telegram", "bot_id": "tg-image-bot-1",
                      "capability": "image", "user_ref": "telegram:5",
                      "params": {"prompt": "a lighthouse"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.headers()["x-request-id"], REQUEST_ID, "echoed back");
    let job_id = created.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The scheduler: created under the request id.
    let line = wait_for_line(d, "scheduler.log", |l| l["message"] == "job created").await;
    assert_eq!(line["job_id"], job_id.as_str());
    assert_eq!(line["request_id"], REQUEST_ID);
    // The worker: every line of the run carries both ids.
    let accepted = wait_for_line(d, "worker.log", |l| l["message"] == "job accepted").await;
    let finished = wait_for_line(d, "worker.log", |l| l["message"] == "job finished").await;
    for line in [&accepted, &finished] {
        assert!(mentions(line, &job_id), "{line}");
        assert!(mentions(line, REQUEST_ID), "{line}");
    }
    // Back at the scheduler: the result's upload is logged under it too.
    let completed = wait_for_line(d, "scheduler.log", |l| l["message"] == "job completed").await;
    assert!(mentions(&completed, &job_id), "{completed}");
    assert!(mentions(&completed, REQUEST_ID), "{completed}");

    // A request id that could forge log lines is not kept with the job.
    let forged = http
        .post(format!("{url}/api/v1/jobs"))
        .bearer_auth(&key)
        .header("x-request-id", "two words")
        .json(&json!({"frontend": "telegram", "bot_id": "tg-image-bot-1",
                      "capability": "image", "user_ref": "telegram:6",
                      "params": {"prompt": "a lighthouse"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 201);
    let forged_id = forged.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = wait_for_line(d, "scheduler.log", |l| {
        l["message"] == "job created" && l["job_id"] == forged_id.as_str()
    })
    .await;
    assert_eq!(line["request_id"], "-");

    stop(worker).await;
    stop(scheduler).await;
}
