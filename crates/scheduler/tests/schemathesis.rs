//! Schemathesis against the real scheduler: whatever it sends, the scheduler
//! never answers 5xx, and its answers match the document it serves.
//!
//! The scheduler runs on a loopback port over a fresh database (both
//! backends); Schemathesis, pinned in `crates/testkit/py/requirements.txt` and
//! run on the test engines' interpreter (`TESSERA_TEST_PYTHON`, set by
//! `scripts/test`), reads `/api/openapi.json` and tests every operation in it
//! four times: with the internal token (first, so its heartbeats register
//! workers the admin's run then lists), with a bot's frontend key, with the
//! website's key (which alone gets past the accounts' check) and with the
//! admin token, so each part of the API is reached past its credential
//! check at least once. Each run:
//!
//! - uses every phase: the document's examples, the coverage phase (boundary
//!   and near-miss values, one field at a time), fuzzing, and stateful
//!   sequences that follow links between operations (a created job read back,
//!   cancelled, acknowledged);
//! - draws at most [`MAX_EXAMPLES`] cases per operation with a fixed seed and
//!   no example database, so a run is repeatable and takes seconds;
//! - runs every check Schemathesis has (`--checks all`): no answer is a
//!   server error; every status, content type, header and body an answer has
//!   is documented; a request the document admits is not refused as invalid,
//!   and one it does not admit is refused; a missing credential is refused;
//!   a method the document does not list is answered 405 with `Allow`; a
//!   created resource can be read, a deleted one cannot. The one setting
//!   beyond Schemathesis's own is in `crates/testkit/py/schemathesis.toml`:
//!   operations whose rules no JSON Schema can state (a job's `params`
//!   against the user's plan and the model catalogue, a result's outcome
//!   against its error and parts, a heartbeat's engines against the worker's
//!   capabilities and models, an operator's grant ending in the future, a
//!   Telegram Stars payload the scheduler must have signed) may
//!   refuse a request their schema admits; it says why;
//! - loads `crates/testkit/py/schemathesis_hooks.py`, which lets
//!   Schemathesis send `audio/*` bodies, and taints the documented examples
//!   and generated requests with U+0000 and other hostile characters one
//!   string at a time (that is how the first runs found five 500s on
//!   PostgreSQL; see `nul_*` in `tests/api/security.rs`); a tainted request
//!   its schema no longer admits is checked as the invalid request it is.
//!
//! A failure prints Schemathesis's report: each failing case with a `curl`
//! line that reproduces it against a scheduler started the same way.

use std::process::Stdio;
use std::time::Duration;

use tessera_core::Platform;
use tessera_testkit::engines;
use tessera_testkit::{backend_tests, Backend, TestApp};

/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "50";
/// The seed every run uses: change it to explore, keep it to reproduce.
const SEED: &str = "20261201";
/// What is checked on every answer.
const CHECKS: &str = "all";
/// A run with every check takes about a minute on two idle cores, and two
/// or three times that while the rest of the suite builds and runs beside
/// it; this only stops a hung one.
const RUN_LIMIT: Duration = Duration::from_secs(480);

/// One Schemathesis run with `token` as the credential; returns its output.
async fn schemathesis(app: &TestApp, who: &str, token: &str) -> String {
    // Its working folder: Schemathesis writes nothing there with these
    // options, but a stray report must not land in the repository.
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut command = tokio::process::Command::new(engines::python());
    command
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(engines::script("schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/api/openapi.json", app.base_url()))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        .args(["--generation-database", "none"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .arg("--no-color")
        .env(
            "SCHEMATHESIS_HOOKS",
            engines::script("schemathesis_hooks.py"),
        )
        // Schemathesis's own settings from the environment would make runs differ.
        .env_remove("SCHEMATHESIS_CONFIG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("Schemathesis ({who}) ran past {RUN_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("cannot run Schemathesis ({who}): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "Schemathesis with the {who} found failures or errors ({}):\n{text}",
        output.status
    );
    // A run that tested nothing also exits 0: make sure it tested.
    let summary = text
        .lines()
        .map(str::trim)
        // `N generated, N passed`, and `, N skipped` when some were.
        .find(|l| l.contains(" generated, ") && l.contains(" passed"))
        .unwrap_or_else(|| panic!("no test-case summary in the output ({who}):\n{text}"));
    let generated: u64 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable summary {summary:?} ({who})"));
    assert!(
        generated >= 500,
        "Schemathesis with the {who} ran only {generated} cases:\n{text}"
    );
    for marker in ["Server error", "ST101", "[500]", "[502]", "[503]"] {
        assert!(
            !text.contains(marker),
            "Schemathesis with the {who} reports {marker:?}:\n{text}"
        );
    }
    text
}

async fn no_input_makes_a_server_error(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, "tg-image-bot-1").await;
    let web_key = app.key(Platform::Web, "web-1").await;
    // The internal token first: its heartbeats register workers, so the
    // admin's run reads a worker list that is not empty.
    for (who, token) in [
        ("internal token", app.internal_token.as_str()),
        ("frontend key", key.as_str()),
        ("web key", web_key.as_str()),
        ("admin token", app.admin_token.as_str()),
    ] {
        let output = schemathesis(&app, who, token).await;
        // Each credential must get past its own checks somewhere: a run
        // answered only 401/403 everywhere would prove nothing about the
        // handlers. Schemathesis counts the operations it could not get past.
        let refused = number_after(&output, "Authentication failed: ").unwrap_or(0);
        let selected = number_after(&output, "Selected: ").expect("operations selected");
        assert!(
            refused < selected,
            "Schemathesis with the {who} was refused on every operation:\n{output}"
        );
    }
    // The scheduler still answers, and is ready.
    let ready = reqwest::get(format!("{}/readyz", app.base_url()))
        .await
        .expect("readyz");
    assert!(ready.status().is_success());
    app.shutdown().await;
}

/// The number right after the first `label` in `text`.
fn number_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

backend_tests!(no_input_makes_a_server_error);
