//! The deployment files under `deploy/` as the deploy tests read them: YAML
//! documents (compose, Kubernetes), Quadlet units as INI files, the
//! Containerfile's stages, what the `tessera` binary accepts and serves, and
//! how container paths and host names map onto this machine.
//! Shared by `deploy.rs`, which checks the files, and `deploy_system.rs`,
//! which runs the system they describe.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_norway::Value;

pub fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every document of a YAML file, with `<<` merge keys applied (compose uses
/// them to share settings between services).
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            // A merged mapping may bring merge keys of its own: apply until
            // none is left.
            while has_merge_key(&value) {
                value
                    .apply_merge()
                    .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            }
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

pub fn has_merge_key(value: &Value) -> bool {
    match value {
        Value::Mapping(m) => m.iter().any(|(k, v)| k == "<<" || has_merge_key(v)),
        Value::Sequence(items) => items.iter().any(has_merge_key),
        _ => false,
    }
}

pub fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

pub fn compose() -> Value {
    let mut docs = yaml_documents(&deploy().join("compose.yaml"));
    assert_eq!(docs.len(), 1, "compose.yaml is one document");
    docs.remove(0)
}

pub fn kubernetes() -> Vec<(PathBuf, Value)> {
    files_under(&deploy().join("kubernetes"), &["yaml", "yml"])
        .into_iter()
        .flat_map(|path| {
            yaml_documents(&path)
                .into_iter()
                .map(move |doc| (path.clone(), doc))
        })
        .collect()
}

pub fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// A compose service's volumes in the short form, `SOURCE:TARGET[:MODE]`.
pub fn short_volumes(service: &Value) -> Vec<String> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

pub fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(str_of).collect(),
        Value::Null => Vec::new(),
        other => vec![str_of(other)],
    }
}

/// A Quadlet unit: `(section, key, value)` for every `Key=Value` line, in order.
pub struct Unit {
    pub path: PathBuf,
    pub entries: Vec<(String, String, String)>,
}

impl Unit {
    pub fn read(path: &Path) -> Unit {
        let mut section = String::new();
        let mut entries = Vec::new();
        for (n, line) in read(path).lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            assert!(
                !line.ends_with('\\'),
                "{}:{}: no continuation lines, please",
                path.display(),
                n + 1
            );
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}:{}: not Key=Value: {line}", path.display(), n + 1));
            assert!(
                !section.is_empty(),
                "{}: a key before any section",
                path.display()
            );
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        Unit {
            path: path.to_path_buf(),
            entries,
        }
    }

    pub fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    pub fn all(&self, section: &str, key: &str) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.clone())
            .collect()
    }

    pub fn one(&self, section: &str, key: &str) -> Option<String> {
        let all = self.all(section, key);
        assert!(all.len() <= 1, "{}: {key} more than once", self.name());
        all.into_iter().next()
    }

    /// The unit as instance `instance` of a template (`%i`).
    pub fn instance(&self, instance: &str) -> Unit {
        Unit {
            path: self.path.clone(),
            entries: self
                .entries
                .iter()
                .map(|(s, k, v)| (s.clone(), k.clone(), v.replace("%i", instance)))
                .collect(),
        }
    }
}

pub fn quadlet_units() -> Vec<Unit> {
    files_under(
        &deploy().join("quadlet"),
        &["container", "network", "volume", "pod"],
    )
    .iter()
    .map(|p| Unit::read(p))
    .collect()
}

/// The Containerfile's stages: name (or the base image) and instructions.
pub fn containerfile_stages() -> Vec<(String, Vec<(String, String)>)> {
    let text = read(&deploy().join("Containerfile"));
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.is_empty()) {
        let (instruction, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                [image] => image.to_string(),
                other => panic!("FROM {other:?}"),
            };
            stages.push((name, vec![("FROM".into(), words[0].to_owned())]));
        } else if let Some((_, instructions)) = stages.last_mut() {
            instructions.push((instruction, rest.trim().to_owned()));
        }
    }
    stages
}

/// Runs `tessera ARGS --help`: succeeds only if every subcommand and flag
/// before `--help` exists and every value parses (addresses, for one).
pub fn assert_binary_accepts(args: &[String], place: &str) {
    assert!(!args.is_empty(), "{place}: an empty command");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .arg("--help")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("the tessera binary runs");
    assert!(
        out.status.success(),
        "{place}: `tessera {}` is not a command the binary accepts:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The subcommands of the binary that the deployments may run as services.
pub const SERVICE_ROLES: &[&str] = &["scheduler", "worker", "telegram", "discord", "bots", "web"];

/// Names of variables that hold secrets.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    !name.ends_with("_FILE")
        && ["TOKEN", "PASSWORD", "SECRET", "API_KEY", "ACCESS_KEY"]
            .iter()
            .any(|word| name.contains(word))
}

/// A URL's password, if it carries one (`postgres://user:password@host/db`).
pub fn url_has_password(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// The HTTP paths a role serves without credentials, for probes.
pub fn probe_paths(role: &str) -> &'static [&'static str] {
    match role {
        "scheduler" | "worker" | "web" => &["/healthz", "/readyz"],
        _ => &[],
    }
}

/// Container paths and host names, and what they are on this machine.
#[derive(Clone, Default)]
pub struct Mapping(Vec<(String, String)>);

impl Mapping {
    pub fn add(&mut self, from: impl Into<String>, to: impl Into<String>) {
        self.0.push((from.into(), to.into()));
        // Longest first, so /etc/tessera/worker.toml wins over /etc/tessera.
        self.0
            .sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    }

    pub fn apply(&self, text: &str) -> String {
        // One pass, so a replacement is never replaced again.
        let mut out = String::new();
        let mut rest = text;
        'outer: while !rest.is_empty() {
            for (from, to) in &self.0 {
                if let Some(after) = rest.strip_prefix(from.as_str()) {
                    out.push_str(to);
                    rest = after;
                    continue 'outer;
                }
            }
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

pub fn tessera(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}
