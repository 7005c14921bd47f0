//! Metrics and alerts: `/metrics` on the real scheduler and a real worker move
//! as jobs run, answer only the right credential, and export every name the
//! alert rules, their unit tests and the Grafana dashboard use; then
//! `promtool` checks the rules against their tests and the Prometheus config.
//!
//! `promtool` comes from Debian's prometheus package, which `scripts/test`
//! installs when it is missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use tessera_api::internal::{Heartbeat, WorkerStatus};
use tessera_api::public::CreateJobRequest;
use tessera_core::{Capability, JobId, JobState, PaymentKind, PaymentProvider, Platform};
use tessera_scheduler::store::{ApplyOutcome, NewPaymentEvent};
use tessera_testkit::{backend_tests, sim, Backend, TestApp};

const BOT: &str = "web-1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One sample of an OpenMetrics text: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("a sample line without a value: {line:?}"),
        };
        let mut labels = Vec::new();
        let value_part = if let Some(body) = rest.strip_prefix('{') {
            // label="value",label="value"} value
            let mut chars = body.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '}' {
                    end = Some(i);
                    break;
                }
                let key_start = i;
                let mut key_end = i;
                for (j, c) in chars.by_ref() {
                    if c == '=' {
                        key_end = j;
                        break;
                    }
                }
                let key = body[key_start..key_end].trim_start_matches(',').to_owned();
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next().expect("an escape").1),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
                if let Some(&(_, ',')) = chars.peek() {
                    chars.next();
                }
            }
            &body[end.expect("labels end with }") + 1..]
        } else {
            rest
        };
        let value = value_part
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: value
                .parse()
                .unwrap_or_else(|_| panic!("value of {line:?}")),
        });
    }
    samples
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(url: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("scraping");
    let status = resp.status();
    if status == StatusCode::OK {
        let kind = resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    }
    (status, resp.text().await.unwrap())
}

async fn metrics(app: &TestApp, token: &str) -> Vec<Sample> {
    let (status, text) = scrape(&format!("{}/metrics", app.base_url()), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition");
    parse(&text)
}

async fn create(client: &tessera_api::Client, user: &str, prompt: &str) -> JobId {
    let req = CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Web,
        bot_id: BOT.parse().unwrap(),
        capability: Capability::Image,
        user_ref: user.parse().unwrap(),
        reply_context: None,
        params: json!({"prompt": prompt, "resolution": "512x512"}),
    };
    client
        .create_job(&req, None)
        .await
        .expect("creating")
        .job
        .job_id
}

async fn until_ended(client: &tessera_api::Client, ids: &[JobId]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in ids {
        loop {
            let job = client.get_job(id).await.unwrap();
            if job.status.is_terminal() {
                break;
            }
            assert!(Instant::now() < deadline, "{id} never ended: {job:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every `tessera_...` name in a rules, test or dashboard file.
fn names_in(path: &Path) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("tessera_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        // Names of jobs and files (`tessera-scheduler`) are not metrics.
        if name.len() > "tessera_".len() {
            names.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

fn promtool(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool does not run ({e}): run the suite with scripts/test, which installs \
                 it, or `apt-get install prometheus`"
            )
        });
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn metrics_move_with_the_jobs_and_cover_every_alert(backend: Backend) {
    let metrics_token = tessera_scheduler::auth::new_token();
    let token = metrics_token.clone();
    let app = TestApp::spawn_with(backend, move |c| {
        c.workers.heartbeat_interval_ms = 200;
        c.workers.max_attempts = 1;
        c.auth.metrics_token = Some(token);
        // A rule for the moderation counters below: the simulator's text
        // answers say "A reply of at most N tokens...".
        let mut rule = tessera_core::moderation::RuleConfig::empty();
        rule.name = "no_replies".into();
        rule.words = vec!["reply".into()];
        c.moderation.rules.push(rule);
        // A cap for the admission counter below.
        c.admission.max_queued_per_user.insert("starter".into(), 1);
    })
    .await;
    let web = app.frontend(Platform::Web, BOT).await;
    let url = format!("{}/metrics", app.base_url());

    // Only the metrics and admin tokens read them.
    let frontend_key = app.key(Platform::Web, "web-2").await;
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("not-a-real-token-at-all"), StatusCode::UNAUTHORIZED),
        (Some(frontend_key.as_str()), StatusCode::FORBIDDEN),
        (Some(app.internal_token.as_str()), StatusCode::FORBIDDEN),
        (Some(app.admin_token.as_str()), StatusCode::OK),
        (Some(metrics_token.as_str()), StatusCode::OK),
    ] {
        let (got, body) = scrape(&url, token).await;
        assert_eq!(got, status, "{token:?}: {body}");
        if status != StatusCode::OK {
            let error: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(error["error"]["code"].is_string(), "{body}");
        }
    }

    let before = metrics(&app, &metrics_token).await;
    assert_eq!(value(&before, "tessera_jobs_created_total", &[]), 0.0);
    assert_eq!(value(&before, "tessera_database_up", &[]), 1.0);
    let build = (
        "database",
        if backend == Backend::Postgres {
            "postgres"
        } else {
            "sqlite"
        },
    );
    assert_eq!(value(&before, "tessera_build_info", &[build]), 1.0);

    // Three jobs wait with no worker: the queue holds them.
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(create(&web, &format!("web:{i}"), "a lighthouse").await);
    }
    let poison = create(&web, "web:9", "a [poison] lighthouse").await;
    let unwanted = create(&web, "web:8", "a lighthouse, never mind").await;
    web.cancel_job(&unwanted)
        .await
        .expect("cancelling a queued job");
    let queued = metrics(&app, &metrics_token).await;
    let image_free = [("capability", "image"), ("plan", "free")];
    assert_eq!(value(&queued, "tessera_queue_depth", &image_free), 4.0);
    assert_eq!(
        value(&queued, "tessera_queue_depth", &[("plan", "pro")]),
        0.0
    );
    assert_eq!(
        value(&queued, "tessera_jobs_created_total", &image_free),
        5.0
    );
    assert_eq!(
        value(&queued, "tessera_jobs_cancelled_total", &image_free),
        1.0
    );
    assert_eq!(value(&queued, "tessera_users", &[("plan", "free")]), 5.0);
    assert_eq!(value(&queued, "tessera_revenue_per_day_dollars", &[]), 0.0);
    let creates = [
        ("method", "POST"),
        ("route", "/api/v1/jobs"),
        ("status", "201"),
    ];
    assert_eq!(value(&queued, "tessera_http_requests_total", &creates), 5.0);

    // A worker runs them; the poison job fails (one attempt allowed).
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![sim(Capability::Image, &["sdxl-1.0"], 0)],
        )
        .await;
    ids.push(poison);
    until_ended(&web, &ids).await;
    let done = metrics(&app, &metrics_token).await;
    assert_eq!(
        value(&done, "tessera_queue_depth", &[]),
        0.0,
        "the queue drained"
    );
    assert_eq!(value(&done, "tessera_jobs_running", &[]), 0.0);
    assert_eq!(
        value(&done, "tessera_jobs_dispatched_total", &image_free),
        4.0
    );
    assert_eq!(
        value(&done, "tessera_jobs_completed_total", &image_free),
        3.0
    );
    assert_eq!(
        value(
            &done,
            "tessera_jobs_failed_total",
            &[("capability", "image")]
        ),
        1.0
    );
    assert_eq!(value(&done, "tessera_job_run_seconds_count", &[]), 3.0);
    assert_eq!(value(&done, "tessera_job_latency_seconds_count", &[]), 3.0);
    assert_eq!(
        value(&done, "tessera_job_queue_wait_seconds_count", &[]),
        4.0
    );
    assert_eq!(
        value(&done, "tessera_worker_up", &[("worker", "worker-gpu-0")]),
        1.0
    );
    assert_eq!(
        value(&done, "tessera_workers", &[("status", "online")]),
        1.0
    );
    assert!(value(&done, "tessera_database_pool_max_connections", &[]) >= 1.0);

    // Money received shows in the revenue: a month of PRO paid, 12 dollars,
    // is 12 / 30 a day; an operator's plan (no money) adds nothing.
    app.admin
        .set_plan("web:0", &"starter".parse().unwrap())
        .await
        .expect("assigning a plan");
    let now = chrono::Utc::now().timestamp_millis();
    let payment = NewPaymentEvent {
        provider: PaymentProvider::Stripe,
        event_id: "evt_metrics".into(),
        kind: PaymentKind::Purchase,
        user_ref: Some("web:0".parse().unwrap()),
        plan_id: Some("pro".into()),
        amount_minor: 1200,
        currency: Some("usd".into()),
        period: Some((now, now + 30 * 86_400_000)),
        reference: Some("sub_metrics".into()),
        occurred_at: now,
    };
    assert!(matches!(
        app.store()
            .apply_payment_event(&payment, now)
            .await
            .unwrap(),
        ApplyOutcome::Recorded(_)
    ));
    let paid = metrics(&app, &metrics_token).await;
    let revenue = value(&paid, "tessera_revenue_per_day_dollars", &[]);
    assert!((revenue - 12.0 / 30.0).abs() < 1e-9, "{revenue}");
    let labels = [("provider", "stripe"), ("plan", "pro"), ("currency", "usd")];
    assert_eq!(
        value(&paid, "tessera_revenue_30d_minor_units", &labels),
        1200.0
    );
    assert_eq!(value(&paid, "tessera_users", &[("plan", "pro")]), 1.0);

    // The worker's own metrics: its runs, the one model load, its probes.
    let worker_url = format!("http://{}", worker.addr());
    let (status, _) = scrape(&format!("{worker_url}/metrics"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, text) = scrape(&format!("{worker_url}/metrics"), Some(&app.internal_token)).await;
    assert_eq!(status, StatusCode::OK);
    let own = parse(&text);
    let completed = [("capability", "image"), ("outcome", "completed")];
    assert_eq!(value(&own, "tessera_runs_total", &completed), 3.0);
    assert_eq!(value(&own, "tessera_runs_total", &[]), 4.0);
    assert_eq!(value(&own, "tessera_run_seconds_count", &[]), 4.0);
    assert_eq!(
        value(&own, "tessera_model_loads_total", &[("model", "sdxl-1.0")]),
        1.0,
        "the first run loads the model, the others find it loaded"
    );
    assert_eq!(value(&own, "tessera_running", &[]), 0.0);
    let http = reqwest::Client::new();
    for probe in ["healthz", "readyz"] {
        let resp = http
            .get(format!("{worker_url}/{probe}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{probe}");
    }
    worker.shutdown().await.unwrap();

    // GPU readings arrive with heartbeats (NVML on a real GPU machine).
    let heartbeat = Heartbeat {
        worker_id: "worker-gpu-9".parse().unwrap(),
        status: WorkerStatus::Idle,
        address: "http://127.0.0.1:9".into(),
        capabilities: vec![Capability::Image],
        models: vec!["sdxl-1.0".into()],
        loaded_models: vec![],
        model_memory: Vec::new(),
        current_job: None,
        gpu_name: Some("NVIDIA GeForce RTX 4090".into()),
        gpu_memory_used: Some(22_000),
        gpu_memory_total: Some(24_564),
        gpu_utilization: Some(87.0),
        engines: vec![],
    };
    let sent = reqwest::Client::new()
        .post(format!("{}/api/internal/heartbeat", app.base_url()))
        .bearer_auth(&app.internal_token)
        .json(&heartbeat)
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "{}", sent.text().await.unwrap());
    // A child-safety refusal (which suspends its user), so its counter,
    // which an alert reads, and the sanctions counter have a series.
    let refused = web
        .create_job(
            &tessera_api::public::CreateJobRequest {
                callback_url: None,
                frontend: Platform::Web,
                bot_id: BOT.parse().unwrap(),
                capability: Capability::Image,
                user_ref: "web:refused".parse().unwrap(),
                reply_context: None,
                context: None,
                params: serde_json::json!({"prompt": "a n4ked ch1ld"}),
            },
            None,
        )
        .await;
    assert_eq!(
        refused.unwrap_err().code(),
        Some("prompt_refused"),
        "the child-safety rules refuse"
    );
    // A report of an output, so the reports counter has a series too.
    web.report_job(
        &ids[0],
        &tessera_api::review::ReportRequest {
            user_ref: "web:reporter".parse().unwrap(),
            reason: "a test report".into(),
        },
    )
    .await
    .expect("a report");
    let gpu = metrics(&app, &metrics_token).await;
    let gpu9 = [
        ("worker", "worker-gpu-9"),
        ("gpu", "NVIDIA GeForce RTX 4090"),
    ];
    assert_eq!(
        value(&gpu, "tessera_worker_gpu_memory_used_bytes", &gpu9),
        22_000.0 * 1024.0 * 1024.0
    );
    let utilization = value(&gpu, "tessera_worker_gpu_utilization_ratio", &gpu9);
    assert!((utilization - 0.87).abs() < 1e-9, "{utilization}");

    // worker-gpu-9 is on no network the scheduler reaches: the job sent to
    // it comes back to the queue.
    let stranded = create(&web, "web:7", "a lighthouse, again").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metrics(&app, &metrics_token).await;
        if value(
            &now,
            "tessera_jobs_requeued_total",
            &[("capability", "image")],
        ) >= 1.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unreachable worker's job was never requeued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    web.cancel_job(&stranded).await.expect("cancelling");

    // Every name the alerts, their tests and the dashboard use is exported.
    let exported: BTreeSet<&str> = gpu.iter().map(|s| s.name.as_str()).collect();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts.test.yml",
        "deploy/grafana/tessera.json",
    ] {
        let used = names_in(&repo().join(file));
        assert!(!used.is_empty(), "{file} uses no tessera metric");
        let missing: Vec<_> = used
            .iter()
            .filter(|n| !exported.contains(n.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} uses {missing:?}, which the scheduler does not export; it exports {exported:?}"
        );
    }
    // Moderation: a create the prompt rules refuse, and a text answer
    // withheld for matching them, each counted by rule or label and channel.
    let refused = web
        .create_job(
            &CreateJobRequest {
                callback_url: None,
                frontend: Platform::Web,
                bot_id: BOT.parse().unwrap(),
                capability: Capability::Image,
                user_ref: "web:5".parse().unwrap(),
                reply_context: None,
                context: None,
                params: json!({"prompt": "a reply"}),
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        refused.is(tessera_api::ErrorCode::PromptRefused),
        "{refused}"
    );
    let _text = app
        .worker(
            "worker-text-0",
            vec![sim(Capability::Text, &["llama-3.2-3b"], 0)],
        )
        .await;
    let answer = web
        .create_job(
            &CreateJobRequest {
                callback_url: None,
                frontend: Platform::Web,
                bot_id: BOT.parse().unwrap(),
                capability: Capability::Text,
                user_ref: "web:5".parse().unwrap(),
                reply_context: None,
                context: None,
                params: json!({"prompt": "say something"}),
            },
            None,
        )
        .await
        .unwrap()
        .job
        .job_id;
    until_ended(&web, std::slice::from_ref(&answer)).await;
    let moderated = metrics(&app, &metrics_token).await;
    let rule = [("rule", "no_replies"), ("channel", "web")];
    assert_eq!(
        value(&moderated, "tessera_moderation_refusals_total", &rule),
        1.0
    );
    let label = [("label", "no_replies"), ("channel", "web")];
    assert_eq!(
        value(&moderated, "tessera_moderation_withheld_total", &label),
        1.0
    );

    // A STARTER user at their cap of one queued job (no worker serves the
    // model, so it waits) is refused by admission control.
    app.admin
        .set_plan("web:6", &"starter".parse().unwrap())
        .await
        .unwrap();
    let flux = CreateJobRequest {
        callback_url: None,
        frontend: Platform::Web,
        bot_id: BOT.parse().unwrap(),
        capability: Capability::Image,
        user_ref: "web:6".parse().unwrap(),
        reply_context: None,
        context: None,
        params: json!({"prompt": "a lamp", "model": "flux-schnell"}),
    };
    web.create_job(&flux, None).await.unwrap();
    let refused = web.create_job(&flux, None).await.unwrap_err();
    assert!(
        refused.is(tessera_api::ErrorCode::TooManyQueued),
        "{refused}"
    );
    let admitted = metrics(&app, &metrics_token).await;
    let capped = [("plan", "starter"), ("reason", "too_many_queued")];
    assert_eq!(
        value(&admitted, "tessera_admission_refusals_total", &capped),
        1.0
    );

    // NAMES lists exactly the families the scheduler registers.
    let (_, text) = scrape(&url, Some(&metrics_token)).await;
    let families: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE name kind");
            if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            }
        })
        .collect();
    let listed: BTreeSet<String> = tessera_scheduler::metrics::NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(families, listed);

    let job = web.get_job(&ids[0]).await.unwrap();
    assert_eq!(job.status, JobState::Completed);
    app.shutdown().await;
}

#[test]
fn the_alert_rules_pass_their_tests() {
    let repo = repo();
    promtool(&repo, &["check", "rules", "deploy/prometheus/alerts.yml"]);
    promtool(
        &repo,
        &["test", "rules", "deploy/prometheus/alerts.test.yml"],
    );
    // The Prometheus configurations, each with its token file where it says.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("tessera-metrics-token");
    std::fs::write(&token, "a-metrics-token-of-sixteen-or-more").unwrap();
    let prometheus = repo.join("deploy/prometheus");
    std::fs::copy(prometheus.join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    std::fs::copy(
        prometheus.join("prometheus.yml"),
        dir.path().join("prometheus.yml"),
    )
    .unwrap();
    let compose = std::fs::read_to_string(prometheus.join("compose.yml")).unwrap();
    assert!(compose.contains("/run/secrets/metrics-token"));
    let compose = compose.replace("/run/secrets/metrics-token", token.to_str().unwrap());
    std::fs::write(dir.path().join("compose.yml"), compose).unwrap();
    promtool(dir.path(), &["check", "config", "prometheus.yml"]);
    promtool(dir.path(), &["check", "config", "compose.yml"]);
}

backend_tests!(metrics_move_with_the_jobs_and_cover_every_alert);
