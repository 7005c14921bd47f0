//! `tessera_core::user_ref`: `platform:id` as frontends name users, read from
//! request bodies, URL paths and query strings.
//!
//! Asserted: no panic; parsing as text and as JSON (serde) agree; a
//! reference that parses is on a known platform with an id of 1 to 64
//! allowed characters, and prints back as exactly the text it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;

use tessera_core::UserRef;

fuzz_target!(|text: &str| {
    let parsed = text.parse::<UserRef>();
    let from_json = serde_json::from_value::<UserRef>(serde_json::Value::String(text.to_owned()));
    assert_eq!(
        parsed.is_ok(),
        from_json.is_ok(),
        "text and JSON disagree on {text:?}"
    );
    let Ok(user) = parsed else {
        return;
    };
    assert_eq!(Ok(&user), from_json.as_ref().map_err(|_| ()));
    let id = user.platform_user_id();
    assert!((1..=UserRef::MAX_ID_LEN).contains(&id.len()), "id {id:?}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@')),
        "id {id:?}"
    );
    assert_eq!(user.to_string(), text, "does not print back as it came");
    assert_eq!(format!("{}:{id}", user.platform()), text);
});
