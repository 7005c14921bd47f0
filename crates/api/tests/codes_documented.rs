//! The README's list of error codes and [`ErrorCode`] name the same codes:
//! a code added to the enum is documented, and the README promises none that
//! does not exist.

use std::collections::BTreeSet;

use tessera_api::ErrorCode;

#[test]
fn the_readme_lists_every_error_code_and_no_other() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let start = readme
        .find("Every error is JSON")
        .expect("the README's errors paragraph");
    let end = start + readme[start..].find("\n\n").expect("the paragraph's end");
    let listed: BTreeSet<&str> = readme[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        // The error's fields the paragraph names beside the codes.
        .filter(|s| {
            !matches!(
                *s,
                "code" | "resets_at" | "expected_wait_seconds" | "retry_after_seconds"
            )
        })
        .collect();
    let known: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let undocumented: Vec<_> = known.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&known).collect();
    assert!(
        undocumented.is_empty(),
        "codes missing from README.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "README.md lists codes ErrorCode lacks: {unknown:?}"
    );
}
