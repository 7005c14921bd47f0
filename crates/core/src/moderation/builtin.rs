//! The child-safety rules every Tessera scheduler applies, whatever its
//! configuration says.
//!
//! Sexual content involving minors is refused: a term for a minor together
//! with a sexual term anywhere in a job's texts (prompt, negative prompt and
//! system text taken together), or a term that means it on its own. They
//! are written as the engine's own rules, in the normalised spelling
//! ([`super::normalise`]), so every evasion the normaliser undoes is undone
//! for them too. Configuration may give them another message; it may not
//! remove them, switch them off, narrow them to some plans or channels, or
//! make them anything but a refusal ([`super::PromptPolicy::compile`]).

use super::{Action, RuleConfig};

/// Names of the built-in rules; configuration naming one of them may only
/// change its message.
pub const CHILD_SAFETY: &str = "child_safety";
/// See [`CHILD_SAFETY`].
pub const CHILD_SAFETY_TERMS: &str = "child_safety_terms";

/// What a user reads when a built-in rule refuses.
pub const MESSAGE: &str =
    "This request was refused: sexual content involving minors is never allowed.";

/// Words for a minor (a trailing `s` is matched too).
const MINORS: &[&str] = &[
    "child",
    "children",
    "childs",
    "kid",
    "kiddie",
    "kiddo",
    "minor",
    "underage",
    "under age",
    "preteen",
    "pre teen",
    "tween",
    "toddler",
    "infant",
    "newborn",
    "baby girl",
    "baby boy",
    "schoolgirl",
    "schoolboy",
    "school girl",
    "school boy",
    "little girl",
    "little boy",
    "young girl",
    "young boy",
    "girl child",
    "boy child",
    "lolita",
    "teen",
    "teenage",
    "teenager",
    "young teen",
    "juvenile",
    "prepubescent",
    "pubescent",
    "youngster",
    "elementary school",
    "middle school",
    "grade schooler",
];

/// An age under eighteen: `12 year old`, `12yo`, `12-year-old`.
const MINOR_AGE: &str =
    r"\b(?:[1-9]|1[0-7]) ?(?:yo|yrs? old|years? old|yearold|yearsold|year olds?)\b";

/// Sexual terms.
const SEXUAL: &[&str] = &[
    "nude",
    "nudity",
    "naked",
    "sex",
    "sexy",
    "sexual",
    "sexualized",
    "sexualised",
    "porn",
    "porno",
    "pornographic",
    "nsfw",
    "erotic",
    "erotica",
    "lewd",
    "hentai",
    "topless",
    "bottomless",
    "undressed",
    "undressing",
    "explicit",
    "genital",
    "genitals",
    "genitalia",
    "penis",
    "vagina",
    "pussy",
    "nipple",
    "breast",
    "boob",
    "orgasm",
    "masturbating",
    "masturbation",
    "intercourse",
    "fetish",
    "bdsm",
    "bondage",
    "lingerie",
    "seductive",
    "cum",
    "blowjob",
    "rape",
    "molest",
    "molested",
    "panties",
    "spread legs",
];

/// Terms that mean sexual content involving minors on their own.
const ALONE: &[&str] = &[
    "loli",
    "lolicon",
    "shota",
    "shotacon",
    "jailbait",
    "pedo",
    "pedophile",
    "pedophilia",
    "paedophile",
    "paedophilia",
    "child porn",
    "childporn",
    "kiddie porn",
    "cp porn",
];

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| (*w).to_owned()).collect()
}

/// The built-in rules, as configuration would write them.
pub fn rules() -> Vec<RuleConfig> {
    vec![
        RuleConfig {
            name: CHILD_SAFETY.into(),
            words: words(MINORS),
            pattern: Some(MINOR_AGE.into()),
            with_words: words(SEXUAL),
            action: Action::Refuse,
            message: Some(MESSAGE.into()),
            ..RuleConfig::empty()
        },
        RuleConfig {
            name: CHILD_SAFETY_TERMS.into(),
            words: words(ALONE),
            action: Action::Refuse,
            message: Some(MESSAGE.into()),
            ..RuleConfig::empty()
        },
    ]
}

/// Whether a rule name is a built-in one.
pub fn is_builtin(name: &str) -> bool {
    name == CHILD_SAFETY || name == CHILD_SAFETY_TERMS
}
