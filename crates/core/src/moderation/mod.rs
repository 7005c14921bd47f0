//! Prompt policy: what a job's texts may say, decided before it is charged.
//!
//! The operator configures rules (`[[moderation.rules]]`): a word list or a
//! regular expression, optionally a second word list that must appear too,
//! and an action: refuse with a message the user reads, rewrite what
//! matched, or refuse unless the request's context allows adult content.
//! Built-in child-safety rules ([`builtin`]) come first and cannot be
//! removed or weakened. Every text a job carries (prompt, negative prompt,
//! system text, text to speak) is matched on its own and all of them
//! together, so a phrase split between prompt and negative prompt still
//! matches, after [`normalise`] has undone case, accents, look-alike
//! letters, invisible characters and spacing.
//!
//! Pure: the scheduler compiles a [`PromptPolicy`] once at start (a bad
//! rule stops it there, naming the rule) and calls [`PromptPolicy::check`]
//! with the job's parameters and a [`Context`].

pub mod builtin;
pub mod normalise;
pub mod outputs;

#[cfg(test)]
mod tests;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::params::JobParams;
use crate::{ErrorCode, Platform};
use normalise::View;

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Refuse the job (`prompt_refused`) with the rule's message.
    Refuse,
    /// Replace what matched with the rule's `replacement`.
    Rewrite,
    /// Refuse (`content_not_allowed`) unless the context allows adult content.
    RequireNsfw,
}

/// The `[moderation]` section of the scheduler's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerationConfig {
    /// The operator's rules, applied after the built-in ones in this order.
    pub rules: Vec<RuleConfig>,
    /// Plans (plan ids) whose users never get adult content, whatever the
    /// context says (an NSFW Discord channel, a Telegram chat whose admins
    /// turned it on, an account that confirmed its age). Empty: every plan
    /// allows it where the context does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adult_forbidden_plans: Vec<String>,
    /// What outputs may be delivered, from what the output classifier found.
    pub outputs: outputs::OutputsConfig,
    /// A user with this many refused prompts in 24 hours gets a `refusals`
    /// case in the review queue (one while it is open); 0 turns it off.
    pub review_after_refusals: u32,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            adult_forbidden_plans: Vec::new(),
            outputs: outputs::OutputsConfig::default(),
            review_after_refusals: 3,
        }
    }
}

impl ModerationConfig {
    /// Whether the plan `plan` may have adult content where the context allows it.
    pub fn plan_allows_adult(&self, plan: &str) -> bool {
        !self.adult_forbidden_plans.iter().any(|p| p == plan)
    }
}

/// One rule as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; names the rule in refusals' records and metrics.
    pub name: String,
    /// Words or phrases, any of which matches as whole words (a trailing
    /// `s` too), written plainly: they are normalised like the texts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<String>,
    /// A regular expression over the normalised text (lower case, single
    /// spaces, `i` and `l` as typed), instead of or as well as `words`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// When not empty, the rule matches only if one of these appears too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with_words: Vec<String>,
    pub action: Action,
    /// What the user reads when the rule refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What a `rewrite` puts in place of each match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// Plan ids the rule applies to; empty: every plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<String>,
    /// Channels (`telegram`, `discord`, `web`) the rule applies to; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Platform>,
    /// `false` switches a configured rule off (never a built-in one).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl RuleConfig {
    /// A rule with nothing to match, to fill in.
    pub fn empty() -> Self {
        Self {
            name: String::new(),
            words: Vec::new(),
            pattern: None,
            with_words: Vec::new(),
            action: Action::Refuse,
            message: None,
            replacement: None,
            plans: Vec::new(),
            channels: Vec::new(),
            enabled: true,
        }
    }
}

/// A configuration the policy cannot be built from, naming the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("moderation rule `{rule}`: {reason}")]
pub struct PolicyError {
    pub rule: String,
    pub reason: String,
}

/// Where a request comes from, as far as the rules care.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The user's plan id.
    pub plan: &'a str,
    /// The frontend that sent the request.
    pub channel: Platform,
    /// Whether adult content is allowed here.
    pub nsfw_allowed: bool,
}

/// Why a job was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rule: String,
    /// `prompt_refused` or `content_not_allowed`.
    pub code: ErrorCode,
    /// What the user reads.
    pub message: String,
    /// What matched, normalised (at most [`MAX_EXCERPT_CHARS`] characters).
    pub excerpt: String,
}

/// Longest excerpt kept of a match.
pub const MAX_EXCERPT_CHARS: usize = 200;

const DEFAULT_REFUSE: &str = "This request was refused by this service's content rules.";
const DEFAULT_NSFW: &str = "This request asks for adult content, which is not allowed here.";

/// Matches words or a pattern; words as whole tokens, or anywhere in a
/// spelled-out view.
#[derive(Clone, Debug)]
struct Matcher {
    bounded: Regex,
    loose: Option<Regex>,
}

impl Matcher {
    fn find(&self, view: &View) -> Option<(usize, usize)> {
        let re = if view.loose {
            self.loose.as_ref()?
        } else {
            &self.bounded
        };
        re.find(&view.text).map(|m| (m.start(), m.end()))
    }

    fn find_all(&self, view: &View) -> Vec<(usize, usize)> {
        let re = if view.loose {
            match self.loose.as_ref() {
                Some(r) => r,
                None => return Vec::new(),
            }
        } else {
            &self.bounded
        };
        re.find_iter(&view.text)
            .filter(|m| !m.is_empty())
            .map(|m| (m.start(), m.end()))
            .collect()
    }
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    action: Action,
    message: String,
    replacement: String,
    plans: Vec<String>,
    channels: Vec<Platform>,
    /// Any of these matches...
    first: Vec<Matcher>,
    /// ...and, when present, this too.
    with: Option<Matcher>,
}

impl Rule {
    fn applies(&self, ctx: &Context) -> bool {
        (self.plans.is_empty() || self.plans.iter().any(|p| p == ctx.plan))
            && (self.channels.is_empty() || self.channels.contains(&ctx.channel))
    }

    /// The excerpt of a match in these views, if the rule matches them.
    fn matches(&self, views: &[View]) -> Option<String> {
        let first = find_in(&self.first, views)?;
        let mut excerpt = first;
        if let Some(with) = &self.with {
            let second = find_in(std::slice::from_ref(with), views)?;
            excerpt = format!("{excerpt} … {second}");
        }
        Some(excerpt.chars().take(MAX_EXCERPT_CHARS).collect())
    }
}

fn find_in(matchers: &[Matcher], views: &[View]) -> Option<String> {
    views.iter().find_map(|v| {
        matchers
            .iter()
            .find_map(|m| m.find(v))
            .map(|(s, e)| v.text[s..e].to_owned())
    })
}

/// The compiled rules, built-in ones first.
#[derive(Clone, Debug)]
pub struct PromptPolicy {
    rules: Vec<Rule>,
}

impl PromptPolicy {
    /// Compiles the built-in rules and the configured ones. Refuses a rule
    /// without a name or anything to match, a name used twice, a pattern
    /// that is no regular expression, a rewrite without a replacement, and
    /// any attempt to remove, switch off, narrow or weaken a built-in rule.
    pub fn compile(config: &ModerationConfig) -> Result<Self, PolicyError> {
        let mut builtins = builtin::rules();
        let mut seen = std::collections::HashSet::new();
        for rule in &config.rules {
            let err = |reason: &str| PolicyError {
                rule: rule.name.clone(),
                reason: reason.to_owned(),
            };
            if rule.name.trim().is_empty() {
                return Err(err("every rule needs a name"));
            }
            if !seen.insert(rule.name.as_str()) {
                return Err(err("the name is used by another rule"));
            }
            if builtin::is_builtin(&rule.name) {
                let weakened = !rule.enabled
                    || rule.action != Action::Refuse
                    || !rule.words.is_empty()
                    || rule.pattern.is_some()
                    || !rule.with_words.is_empty()
                    || rule.replacement.is_some()
                    || !rule.plans.is_empty()
                    || !rule.channels.is_empty();
                if weakened {
                    return Err(err(
                        "this built-in child-safety rule cannot be switched off, narrowed or changed; only its `message` may be set (with `action = \"refuse\"`)",
                    ));
                }
                if let Some(message) = &rule.message {
                    if message.trim().is_empty() {
                        return Err(err("the message must not be empty"));
                    }
                    for b in builtins.iter_mut().filter(|b| b.name == rule.name) {
                        b.message = Some(message.clone());
                    }
                }
            }
        }
        let mut rules = Vec::new();
        for rule in builtins.iter().chain(
            config
                .rules
                .iter()
                .filter(|r| r.enabled && !builtin::is_builtin(&r.name)),
        ) {
            rules.push(compile_rule(rule)?);
        }
        Ok(Self { rules })
    }

    /// The names of the rules in force, built-in ones first.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Checks a job's parameters: rewrites its texts where a rewrite rule
    /// matched and returns the names of those rules, or the refusal.
    pub fn check(&self, params: &mut JobParams, ctx: &Context) -> Result<Vec<String>, Refusal> {
        let mut texts = texts_mut(params);
        let mut owned: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let rewrites = self.check_texts(&mut owned, ctx)?;
        for (slot, new) in texts.iter_mut().zip(owned) {
            **slot = new;
        }
        Ok(rewrites)
    }

    /// [`Self::check`] over plain texts.
    pub fn check_texts(&self, texts: &mut [String], ctx: &Context) -> Result<Vec<String>, Refusal> {
        self.refusals(texts, ctx)?;
        let mut applied = Vec::new();
        for rule in self
            .rules
            .iter()
            .filter(|r| r.action == Action::Rewrite && r.applies(ctx))
        {
            let mut changed = false;
            for text in texts.iter_mut() {
                if let Some(new) = rewrite(rule, text) {
                    *text = new;
                    changed = true;
                }
            }
            if changed {
                applied.push(rule.name.clone());
            }
        }
        if !applied.is_empty() {
            // A replacement may itself say what a rule refuses.
            self.refusals(texts, ctx)?;
        }
        Ok(applied)
    }

    fn refusals(&self, texts: &[String], ctx: &Context) -> Result<(), Refusal> {
        let mut all_views: Vec<Vec<View>> = texts.iter().map(|t| normalise::views(t)).collect();
        if texts.len() > 1 {
            all_views.push(normalise::views(&texts.join("\n")));
        }
        for rule in &self.rules {
            let code = match rule.action {
                Action::Rewrite => continue,
                Action::RequireNsfw if ctx.nsfw_allowed => continue,
                Action::RequireNsfw => ErrorCode::ContentNotAllowed,
                Action::Refuse => ErrorCode::PromptRefused,
            };
            if !rule.applies(ctx) {
                continue;
            }
            if let Some(excerpt) = all_views.iter().find_map(|v| rule.matches(v)) {
                return Err(Refusal {
                    rule: rule.name.clone(),
                    code,
                    message: rule.message.clone(),
                    excerpt,
                });
            }
        }
        Ok(())
    }
}

/// The text with every match of a rewrite rule replaced, or `None`.
fn rewrite(rule: &Rule, text: &str) -> Option<String> {
    let views = normalise::views(text);
    if let Some(with) = &rule.with {
        if !views.iter().any(|v| with.find(v).is_some()) {
            return None;
        }
    }
    let mut ranges: Vec<(usize, usize)> = views
        .iter()
        .flat_map(|v| {
            rule.first
                .iter()
                .flat_map(|m| m.find_all(v))
                .map(|(s, e)| v.original(s, e))
                .collect::<Vec<_>>()
        })
        .filter(|(s, e)| s < e)
        .collect();
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in merged {
        out.push_str(&text[at..s]);
        out.push_str(&rule.replacement);
        at = e;
    }
    out.push_str(&text[at..]);
    Some(out)
}

fn compile_rule(rule: &RuleConfig) -> Result<Rule, PolicyError> {
    let err = |reason: String| PolicyError {
        rule: rule.name.clone(),
        reason,
    };
    if rule.words.is_empty() && rule.pattern.is_none() {
        return Err(err("give `words` or a `pattern` to match".into()));
    }
    let mut first = Vec::new();
    if !rule.words.is_empty() {
        first.push(words_matcher(&rule.words).map_err(|r| err(format!("words: {r}")))?);
    }
    if let Some(pattern) = &rule.pattern {
        let re = RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| err(format!("pattern is not a valid regular expression: {e}")))?;
        if re.is_match("") {
            return Err(err(
                "pattern matches empty text, so it would match every prompt".into(),
            ));
        }
        first.push(Matcher {
            bounded: re,
            loose: None,
        });
    }
    let with = if rule.with_words.is_empty() {
        None
    } else {
        Some(words_matcher(&rule.with_words).map_err(|r| err(format!("with_words: {r}")))?)
    };
    let (message, replacement) = match rule.action {
        Action::Rewrite => {
            if rule.message.is_some() {
                return Err(err(
                    "a rewrite refuses nothing: give `replacement`, not `message`".into(),
                ));
            }
            let Some(r) = &rule.replacement else {
                return Err(err(
                    "a rewrite needs a `replacement` (it may be \"\")".into()
                ));
            };
            (String::new(), r.clone())
        }
        action => {
            if rule.replacement.is_some() {
                return Err(err("only a rewrite takes a `replacement`".into()));
            }
            let default = if action == Action::Refuse {
                DEFAULT_REFUSE
            } else {
                DEFAULT_NSFW
            };
            let message = rule.message.clone().unwrap_or_else(|| default.into());
            if message.trim().is_empty() {
                return Err(err("the message must not be empty".into()));
            }
            (message, String::new())
        }
    };
    Ok(Rule {
        name: rule.name.clone(),
        action: rule.action,
        message,
        replacement,
        plans: rule.plans.clone(),
        channels: rule.channels.clone(),
        first,
        with,
    })
}

/// Whole words (a trailing `s` too) in the bounded views, anywhere in the
/// spelled one. `i` and `l` match each other: `1` reads as `i`, and a
/// capital `I` passes for an `l`.
fn words_matcher(words: &[String]) -> Result<Matcher, String> {
    let mut alternatives = Vec::new();
    for w in words {
        let n = normalise::normalise(w);
        if n.is_empty() {
            return Err(format!("{w:?} has no letters or digits to match"));
        }
        let escaped: String = regex::escape(&n)
            .chars()
            .map(|c| match c {
                'i' | 'l' => "[il]".to_owned(),
                other => other.to_string(),
            })
            .collect();
        alternatives.push(escaped);
    }
    // Longest first, so a phrase wins over a word it starts with.
    alternatives.sort_by_key(|a| std::cmp::Reverse(a.len()));
    let any = alternatives.join("|");
    let build = |p: String| {
        RegexBuilder::new(&p)
            .size_limit(1 << 22)
            .build()
            .map_err(|e| e.to_string())
    };
    Ok(Matcher {
        bounded: build(format!(r"\b(?:{any})s?\b"))?,
        loose: Some(build(format!("(?:{any})"))?),
    })
}

/// The texts a job carries, by capability.
fn texts_mut(params: &mut JobParams) -> Vec<&mut String> {
    match params {
        JobParams::Image(p) => std::iter::once(&mut p.prompt)
            .chain(p.negative_prompt.as_mut())
            .collect(),
        JobParams::Video(p) => std::iter::once(&mut p.prompt)
            .chain(p.negative_prompt.as_mut())
            .collect(),
        JobParams::Text(p) => std::iter::once(&mut p.prompt)
            .chain(p.system.as_mut())
            .collect(),
        JobParams::TextToSpeech(p) => vec![&mut p.text],
        JobParams::SpeechToText(_) => Vec::new(),
    }
}
