//! `tessera admin` as an operator runs it, for the admin command tests.

#![allow(dead_code)]

use tokio::process::Command;

use tessera_testkit::TestApp;

/// Runs `tessera admin <args>` against the app: success, stdout, stderr.
pub async fn admin(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("admin")
        .args(args)
        .env("TESSERA_URL", app.base_url())
        .env("TESSERA_ADMIN_TOKEN", &app.admin_token)
        .env_remove("TESSERA_LOG_FORMAT")
        .output()
        .await
        .expect("tessera runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
