//! docs/configuration.md shows every role's example configuration exactly as
//! the binary prints it (and each example is checked, in its own crate, to
//! parse to that role's defaults), so the reference cannot drift from the code.

const REFERENCE: &str = include_str!("../../../docs/configuration.md");

fn shown_verbatim(what: &str, example: &str) {
    let block = format!("```toml\n{example}```\n");
    assert!(
        REFERENCE.contains(&block),
        "docs/configuration.md must show `{what}` verbatim in a toml block"
    );
}

#[test]
fn the_reference_shows_every_example_as_printed() {
    shown_verbatim("tessera config example", tessera_scheduler::config::EXAMPLE);
    shown_verbatim(
        "tessera worker --print-example",
        tessera_worker::config::EXAMPLE,
    );
    shown_verbatim(
        "tessera telegram --print-example",
        tessera_telegram::config::EXAMPLE,
    );
    shown_verbatim(
        "tessera discord --print-example",
        tessera_discord::config::EXAMPLE,
    );
}

#[test]
fn the_reference_shows_the_website_flags_as_printed() {
    // clap wraps help at the terminal's width (COLUMNS fixes it) and shows
    // the values of variables that are set (there are none).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["web", "--help"])
        .env_clear()
        .env("COLUMNS", "100")
        .output()
        .expect("tessera runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("text");
    assert!(
        REFERENCE.contains(&format!("```text\n{help}```\n")),
        "docs/configuration.md must show `tessera web --help` verbatim in a text block:\n{help}"
    );
}
