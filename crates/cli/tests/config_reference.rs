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
