//! `tessera up` as a new user runs it: in an empty folder, with nothing
//! configured, it prints where it listens and a key; that key creates a job
//! whose artifact downloads; Ctrl-C stops it cleanly; a second start finds the
//! same key and the same jobs. With a Telegram config whose bot has its token,
//! the bot starts too and answers `/imagine` with a photo.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use tessera_testkit::standins::telegram::{MessageKind, TelegramStandIn};

const WAIT: Duration = Duration::from_secs(60);

/// A running `tessera up`: what it printed until it was ready.
struct Up {
    child: Child,
    /// The API's address.
    url: String,
    /// The website's address.
    web: String,
    key: String,
    banner: String,
}

/// Starts `tessera up` in `dir` and reads its banner up to "Press Ctrl-C".
async fn up(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("up")
        // Free ports, so tests can run side by side; everything else default.
        .args(["--listen", "127.0.0.1:0", "--worker-listen", "127.0.0.1:0"])
        .args(["--web-listen", "127.0.0.1:0"])
        .args(["--sim-seconds", "0.2"])
        .args(extra)
        .envs(env.iter().copied())
        .env_remove("TESSERA_DATA_DIR")
        .env_remove("TESSERA_TELEGRAM_CONFIG")
        .env_remove("TESSERA_DISCORD_CONFIG")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the tessera binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let ready = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Press Ctrl-C to stop.") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        ready,
        Ok(true),
        "tessera up never said it was ready:\n{banner}"
    );
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let address = |label: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {label} address in:\n{banner}"))
            .to_owned()
    };
    let url = address("API:");
    let web = address("Website:");
    let key = banner
        .split("Authorization: Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no key in:\n{banner}"))
        .to_owned();
    Up {
        child,
        url,
        web,
        key,
        banner,
    }
}

/// Ctrl-C, as a person at the terminal would, then a clean exit.
async fn interrupt(mut up: Up) {
    let pid = up.child.id().expect("still running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(WAIT, up.child.wait())
        .await
        .expect("it stops on Ctrl-C")
        .unwrap();
    assert!(status.success(), "a clean exit: {status}");
}

async fn finished(http: &reqwest::Client, up: &Up, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let job: Value = http
            .get(format!("{}/api/v1/jobs/{id}", up.url))
            .bearer_auth(&up.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ["COMPLETED", "FAILED", "CANCELLED"].contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        assert!(Instant::now() < deadline, "{id} never finished: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_runs_tessera_up_and_downloads_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let first = up(dir.path(), &[], &[]).await;
    assert!(first.url.starts_with("http://127.0.0.1:"), "{}", first.url);

    // What the banner's curl line sends.
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/jobs", first.url))
        .bearer_auth(&first.key)
        .json(
            &json!({"frontend": "web", "bot_id": "demo", "capability": "image",
                      "user_ref": "web:me", "params": {"prompt": "a beautiful sunset"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["job_id"].as_str().unwrap().to_owned();
    let job = finished(&http, &first, &id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let artifact = &job["artifacts"][0];
    let bytes = http
        .get(format!(
            "{}{}",
            first.url,
            artifact["url"].as_str().unwrap()
        ))
        .bearer_auth(&first.key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    assert_eq!(bytes.len() as u64, artifact["file_size"].as_u64().unwrap());
    assert!(
        String::from_utf8_lossy(&bytes).contains("simulated"),
        "the local worker's images say they are simulated"
    );
    // The website is there too: a new visitor signs up with the form.
    assert!(first.web.starts_with("http://127.0.0.1:"), "{}", first.web);
    let page = http
        .get(format!("{}/signup", first.web))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's CSRF token");
    let signed_up = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/signup", first.web))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf),
            ("email", "new@example.org"),
            ("password", "a long enough password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 303, "signed up");
    assert_eq!(signed_up.headers()["location"], "/generate");

    let data = dir.path().join(".tessera");
    for file in [
        "tessera.db",
        "demo-key",
        "admin-token",
        "internal-token",
        "cookie-secret",
        "keys/web",
    ] {
        assert!(data.join(file).exists(), "{file} in the data folder");
    }
    interrupt(first).await;

    // Started again: the same key, the same job.
    let second = up(dir.path(), &[], &[]).await;
    let job = finished(&http, &second, &id).await;
    assert_eq!(job["status"], "COMPLETED");
    let key = std::fs::read_to_string(data.join("demo-key")).unwrap();
    assert_eq!(key.trim(), second.key);
    interrupt(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tessera_up_starts_the_bots_whose_tokens_are_set() {
    let tg = TelegramStandIn::start().await;
    let token = "7000001:AAE-up-image-bot";
    tg.add_bot(token, "up_image_bot");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("telegram.toml");
    std::fs::write(
        &config,
        format!(
            "api_url = {:?}\npoll_timeout_secs = 5\njob_poll_ms = 200\nmin_edit_ms = 500\n\n\
             [[bots]]\nid = \"up-image-bot\"\ncapabilities = [\"image\"]\n\n\
             [[bots]]\nid = \"up-video-bot\"\ncapabilities = [\"video\"]\n",
            tg.api_url()
        ),
    )
    .unwrap();
    let running = up(
        dir.path(),
        &["--telegram", config.to_str().unwrap()],
        &[("TELEGRAM_TOKEN_UP_IMAGE_BOT", token)],
    )
    .await;
    assert!(
        running.banner.contains("Telegram bots: up-image-bot\n"),
        "{}",
        running.banner
    );
    assert!(
        running.banner.contains("up-video-bot stays off"),
        "a bot without its token is named, not started:\n{}",
        running.banner
    );
    tg.wait_calls(token, "getUpdates", 1, WAIT).await;
    tg.user_text(token, 42, 42, "/imagine a lighthouse at dawn");
    let photo = tg
        .wait_sent(token, WAIT, |m| m.kind == MessageKind::Photo)
        .await
        .expect("the bot answers with a photo");
    assert_eq!(photo.chat_id, 42);
    assert!(photo.upload.unwrap().bytes.starts_with(b"\x89PNG"));
    let key = dir.path().join(".tessera/keys/up-image-bot");
    assert!(
        key.exists(),
        "the bot's frontend key is kept in the data folder"
    );
    interrupt(running).await;
}
