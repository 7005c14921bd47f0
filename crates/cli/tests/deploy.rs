//! The deployment files under `deploy/`, checked by what can run here.
//!
//! No container runtime, cluster or GPU is needed: every YAML file is parsed
//! (compose, Kubernetes, monitoring), the Quadlet units are read as the INI
//! files they are, and the Containerfile's stages are read line by line. Every
//! command line they give the `tessera` image is handed to the real binary
//! with `--help` appended, so an unknown subcommand or flag fails here. Then
//! the system runs as the files describe it, on loopback: the real scheduler,
//! workers and bots started with the compose services' commands, environment,
//! mounted configuration files and secrets (made by `deploy/secrets.sh`),
//! with container paths mapped to a temporary folder, container host names to
//! 127.0.0.1 and free ports, PostgreSQL replaced by SQLite, and Telegram,
//! Discord and ComfyUI by the testkit's loopback stand-ins. The simulated
//! worker speaks through espeak-ng, as in the image: `scripts/test` installs
//! it for the worker's tests too.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use serde_norway::Value;
use tessera_api::admin::CreateKeyRequest;
use tessera_api::public::CreateJobRequest;
use tessera_api::Client;
use tessera_core::{Capability, JobState, Platform};
use tessera_testkit::standins::comfyui::ComfyUi;
use tessera_testkit::standins::discord::DiscordStandIn;
use tessera_testkit::standins::telegram::TelegramStandIn;

use common::farm::terminate;

const WAIT: Duration = Duration::from_secs(30);

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Reading the files

/// Every document of a YAML file, with `<<` merge keys applied (compose uses
/// them to share settings between services).
fn yaml_documents(path: &Path) -> Vec<Value> {
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

fn has_merge_key(value: &Value) -> bool {
    match value {
        Value::Mapping(m) => m.iter().any(|(k, v)| k == "<<" || has_merge_key(v)),
        Value::Sequence(items) => items.iter().any(has_merge_key),
        _ => false,
    }
}

fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
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

fn compose() -> Value {
    let mut docs = yaml_documents(&deploy().join("compose.yaml"));
    assert_eq!(docs.len(), 1, "compose.yaml is one document");
    docs.remove(0)
}

fn kubernetes() -> Vec<(PathBuf, Value)> {
    files_under(&deploy().join("kubernetes"), &["yaml", "yml"])
        .into_iter()
        .flat_map(|path| {
            yaml_documents(&path)
                .into_iter()
                .map(move |doc| (path.clone(), doc))
        })
        .collect()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// A compose service's volumes in the short form, `SOURCE:TARGET[:MODE]`.
fn short_volumes(service: &Value) -> Vec<String> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(str_of).collect(),
        Value::Null => Vec::new(),
        other => vec![str_of(other)],
    }
}

/// A Quadlet unit: `(section, key, value)` for every `Key=Value` line, in order.
struct Unit {
    path: PathBuf,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn read(path: &Path) -> Unit {
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

    fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn all(&self, section: &str, key: &str) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.clone())
            .collect()
    }

    fn one(&self, section: &str, key: &str) -> Option<String> {
        let all = self.all(section, key);
        assert!(all.len() <= 1, "{}: {key} more than once", self.name());
        all.into_iter().next()
    }

    /// The unit as instance `instance` of a template (`%i`).
    fn instance(&self, instance: &str) -> Unit {
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

fn quadlet_units() -> Vec<Unit> {
    files_under(
        &deploy().join("quadlet"),
        &["container", "network", "volume", "pod"],
    )
    .iter()
    .map(|p| Unit::read(p))
    .collect()
}

/// The Containerfile's stages: name (or the base image) and instructions.
fn containerfile_stages() -> Vec<(String, Vec<(String, String)>)> {
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

// ---------------------------------------------------------------------------
// What the binary accepts and serves

/// Runs `tessera ARGS --help`: succeeds only if every subcommand and flag
/// before `--help` exists and every value parses (addresses, for one).
fn assert_binary_accepts(args: &[String], place: &str) {
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
const SERVICE_ROLES: &[&str] = &["scheduler", "worker", "telegram", "discord", "bots", "web"];

/// Names of variables that hold secrets.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    !name.ends_with("_FILE")
        && ["TOKEN", "PASSWORD", "SECRET", "API_KEY", "ACCESS_KEY"]
            .iter()
            .any(|word| name.contains(word))
}

/// A URL's password, if it carries one (`postgres://user:password@host/db`).
fn url_has_password(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

// ---------------------------------------------------------------------------
// Static checks

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = files_under(&deploy(), &["yaml", "yml"]);
    assert!(files.len() >= 8, "the YAML files: {files:?}");
    for file in files {
        assert!(
            !yaml_documents(&file).is_empty(),
            "{} has no document",
            file.display()
        );
    }
}

#[test]
fn the_containerfile_builds_one_binary_and_a_stage_per_role() {
    let stages = containerfile_stages();
    let stage = |name: &str| {
        stages
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| i.clone())
            .unwrap_or_else(|| panic!("no stage {name} in deploy/Containerfile"))
    };
    let get = |instructions: &[(String, String)], what: &str| {
        instructions
            .iter()
            .filter(|(i, _)| i == what)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let build = stage("build");
    assert!(get(&build, "FROM")[0].contains("rust:"));
    let run = get(&build, "RUN").join(" ");
    assert!(
        run.contains("cargo build --release --locked -p tessera-cli"),
        "{run}"
    );

    let runtime = stage("runtime");
    assert!(get(&runtime, "FROM")[0].contains("debian:${DEBIAN_VERSION}-slim"));
    let installs = get(&runtime, "RUN").join(" ");
    for package in ["ca-certificates", "espeak-ng"] {
        assert!(installs.contains(package), "the runtime installs {package}");
    }
    let user = get(&runtime, "USER");
    assert_eq!(user.len(), 1);
    assert!(
        !user[0].starts_with("0") && !user[0].starts_with("root"),
        "a non-root user: {user:?}"
    );
    assert_eq!(
        get(&runtime, "ENTRYPOINT"),
        vec![r#"["tessera"]"#.to_owned()]
    );

    for role in ["scheduler", "worker", "bots", "web"] {
        let instructions = stage(role);
        assert_eq!(get(&instructions, "FROM"), vec!["runtime".to_owned()]);
        let cmd = get(&instructions, "CMD");
        assert_eq!(cmd.len(), 1, "{role}: one CMD");
        let args: Vec<String> = serde_json::from_str(&cmd[0])
            .unwrap_or_else(|e| panic!("{role}: CMD in exec form: {e}"));
        assert_eq!(args[0], role);
        assert_binary_accepts(&args, &format!("Containerfile stage {role}"));
        assert!(
            get(&instructions, "HEALTHCHECK").is_empty(),
            "no HEALTHCHECK: the image has no HTTP client"
        );
    }
    assert_eq!(get(&stage("scheduler"), "EXPOSE"), vec!["8000".to_owned()]);
    assert_eq!(get(&stage("worker"), "EXPOSE"), vec!["9000".to_owned()]);
    assert_eq!(get(&stage("web"), "EXPOSE"), vec!["3000".to_owned()]);

    let ignore = read(&deploy().join("../.dockerignore"));
    for path in ["/target", "/.git", "/deploy/secrets", "/deploy/.env"] {
        assert!(
            ignore.lines().any(|l| l.trim() == path),
            ".dockerignore keeps {path} out of the build context"
        );
    }
}

#[test]
fn compose_services_run_real_commands_and_keep_secrets_out_of_the_file() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let secrets = compose["secrets"].as_mapping().expect("top-level secrets");
    for (name, secret) in secrets {
        let file = str_of(&secret["file"]);
        assert!(
            file.starts_with("./secrets/"),
            "secret {name:?} is a file under deploy/secrets/, not a value: {file}"
        );
    }
    let gitignore = read(&deploy().join(".gitignore"));
    assert!(gitignore.lines().any(|l| l == "/secrets/") && gitignore.lines().any(|l| l == "/.env"));

    let mut roles = BTreeSet::new();
    for (name, service) in services {
        let name = str_of(name);
        let image = str_of(&service["image"]);
        for (key, value) in service["environment"].as_mapping().into_iter().flatten() {
            let (key, value) = (str_of(key), str_of(value));
            if is_secret_name(&key) {
                assert!(
                    value.starts_with("${") && value.ends_with('}'),
                    "{name}: {key} must come from outside the file (${{VAR}}), not be written in it"
                );
            }
            assert!(!url_has_password(&value), "{name}: {key} holds a password");
        }
        if image.starts_with("docker.io/library/postgres:") {
            assert!(image.contains(":15"), "PostgreSQL 15: {image}");
            continue;
        }
        if !image.contains("tessera") {
            // Prometheus and Grafana: optional, under a profile.
            assert_eq!(strings(&service["profiles"]), vec!["monitoring".to_owned()]);
            continue;
        }
        let command = strings(&service["command"]);
        assert!(
            SERVICE_ROLES.contains(&command[0].as_str()),
            "{name}: runs `tessera {}`",
            command[0]
        );
        roles.insert(command[0].clone());
        assert_binary_accepts(&command, &format!("compose service {name}"));
        for volume in short_volumes(service) {
            if let Some(source) = volume.strip_prefix("./") {
                let source = source.split(':').next().unwrap();
                assert!(
                    deploy().join(source).exists(),
                    "{name} mounts deploy/{source}, which does not exist"
                );
            }
        }
        if command[0] == "worker" {
            let networks = strings(&service["networks"]);
            for network in &networks {
                assert_eq!(
                    compose["networks"][network.as_str()]["internal"],
                    Value::Bool(true),
                    "{name}: workers are on internal networks only"
                );
            }
        }
        if command[0] == "bots" {
            assert_eq!(strings(&service["profiles"]), vec!["bots".to_owned()]);
        }
    }
    assert!(
        ["scheduler", "worker", "bots", "web"]
            .iter()
            .all(|r| roles.contains(*r)),
        "{roles:?}"
    );

    // The monitoring profile mounts the alert rules and the dashboard.
    let mounts = |service: &str| -> Vec<String> {
        services[service]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v["source"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(mounts("prometheus").contains(&"./prometheus/alerts.yml".to_owned()));
    assert!(mounts("grafana").contains(&"./grafana/tessera.json".to_owned()));
    // Prometheus's configuration there: the rules beside it, every job reading
    // /metrics with the metrics token compose mounts, at a service's address.
    let config = services["prometheus"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["target"] == "/etc/prometheus/prometheus.yml")
        .map(|v| str_of(&v["source"]))
        .expect("a mounted prometheus.yml");
    let prometheus = &yaml_documents(&deploy().join(&config))[0];
    assert_eq!(
        strings(&prometheus["rule_files"]),
        vec!["alerts.yml".to_owned()]
    );
    let token = format!(
        "/run/secrets/{}",
        str_of(&services["prometheus"]["secrets"][0]["target"])
    );
    let mut jobs = Vec::new();
    for job in prometheus["scrape_configs"].as_sequence().unwrap() {
        jobs.push(str_of(&job["job_name"]));
        assert_eq!(str_of(&job["authorization"]["credentials_file"]), token);
        for target in strings(&job["static_configs"][0]["targets"]) {
            let (host, _) = target.split_once(':').unwrap();
            assert!(
                services.contains_key(host),
                "{config}: {target} is no service"
            );
        }
    }
    assert!(
        jobs.contains(&"tessera-scheduler".to_owned()),
        "alerts.yml names it"
    );
}

#[test]
fn kubernetes_manifests_run_real_commands_with_gpus_probes_and_no_secret_values() {
    let docs = kubernetes();
    let kinds: Vec<String> = docs.iter().map(|(_, d)| str_of(&d["kind"])).collect();
    for kind in [
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "NetworkPolicy",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "a {kind}: {kinds:?}");
    }
    let mut worker_pools = 0;
    for (path, doc) in &docs {
        let kind = str_of(&doc["kind"]);
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let place = format!("{} {kind}/{name}", path.display());
        if kind == "Kustomization" {
            // It applies every other file of the folder.
            let listed = strings(&doc["resources"]);
            for file in files_under(&deploy().join("kubernetes"), &["yaml"]) {
                let file = file.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    file == "kustomization.yaml" || listed.contains(&file),
                    "{place} leaves out {file}"
                );
            }
        }
        assert_ne!(
            kind, "Secret",
            "{place}: Secrets are made by hand, never committed"
        );
        if kind != "Deployment" {
            continue;
        }
        let pod = &doc["spec"]["template"]["spec"];
        let mut gpus = 0;
        let mut roles = Vec::new();
        for container in pod["containers"].as_sequence().unwrap() {
            let cname = str_of(&container["name"]);
            let place = format!("{place} container {cname}");
            for env in container["env"].as_sequence().into_iter().flatten() {
                let var = str_of(&env["name"]);
                if is_secret_name(&var) || var == "TESSERA_DATABASE__URL" {
                    assert!(
                        env["value"].is_null() && !env["valueFrom"]["secretKeyRef"].is_null(),
                        "{place}: {var} comes from a Secret"
                    );
                }
            }
            if let Some(limit) = container["resources"]["limits"]["nvidia.com/gpu"].as_u64() {
                gpus += limit;
            }
            if !str_of(&container["image"]).contains("/tessera/tessera:") {
                continue;
            }
            assert!(
                container["command"].is_null(),
                "{place}: the image's entrypoint is tessera"
            );
            // Kubernetes expands $(VAR) in arguments from the container's
            // environment; the pod's fields get sample values here.
            let mut vars = Mapping::default();
            for env in container["env"].as_sequence().into_iter().flatten() {
                let var = str_of(&env["name"]);
                let sample = match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("status.podIP") => Some("10.1.2.3".to_owned()),
                    Some(_) => Some("tessera-pod-7c9f".to_owned()),
                    None => env["value"].as_str().map(str::to_owned),
                };
                if let Some(sample) = sample {
                    vars.add(format!("$({var})"), sample);
                }
            }
            let args: Vec<String> = strings(&container["args"])
                .iter()
                .map(|a| vars.apply(a))
                .collect();
            assert!(!args.iter().any(|a| a.contains("$(")), "{place}: {args:?}");
            assert!(
                SERVICE_ROLES.contains(&args[0].as_str()),
                "{place}: {args:?}"
            );
            assert_binary_accepts(&args, &place);
            roles.push(args[0].clone());
            let port = container["ports"][0]["containerPort"].as_u64().unwrap();
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                let probe = &container[probe];
                if probe.is_null() {
                    continue;
                }
                if !probe["httpGet"].is_null() {
                    let path = str_of(&probe["httpGet"]["path"]);
                    // The live test asks the running binary for each of these.
                    assert!(
                        probe_paths(&args[0]).contains(&path.as_str()),
                        "{place}: probe {path} is not one the test checks"
                    );
                } else {
                    assert_eq!(str_of(&probe["tcpSocket"]["port"]), "http", "{place}");
                    assert_eq!(container["ports"][0]["name"], Value::from("http"));
                }
            }
            match args[0].as_str() {
                "scheduler" => {
                    assert_eq!(port, 8000);
                    assert_eq!(doc["spec"]["replicas"].as_u64(), Some(2), "{place}");
                    for probe in ["livenessProbe", "readinessProbe"] {
                        assert!(!container[probe]["httpGet"].is_null(), "{place}: {probe}");
                    }
                }
                "worker" => {
                    assert_eq!(port, 9000);
                    for probe in ["livenessProbe", "readinessProbe"] {
                        assert!(!container[probe]["httpGet"].is_null(), "{place}: {probe}");
                    }
                }
                _ => {}
            }
        }
        if roles.iter().any(|r| r == "worker") {
            worker_pools += 1;
            assert_eq!(gpus, 1, "{place}: one GPU per worker pod");
            assert_eq!(
                doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"],
                Value::from("worker"),
                "{place}: the network policy selects workers by this label"
            );
        }
    }
    assert!(worker_pools >= 1);

    // Workers: reachable from the scheduler only, reaching the scheduler and DNS only.
    let policy = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "NetworkPolicy")
        .unwrap();
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        Value::from("worker")
    );
    assert_eq!(
        strings(&spec["policyTypes"]),
        vec!["Ingress".to_owned(), "Egress".to_owned()]
    );
    let ingress = spec["ingress"].as_sequence().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        ingress[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        Value::from("tessera-scheduler")
    );
    assert!(ingress[0]["from"][0]["namespaceSelector"].is_null());

    // The configuration files in the ConfigMaps are what the binary loads.
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    for token in ["internal-token", "admin-token"] {
        std::fs::write(secrets.join(token), "a-test-token-of-32-characters-00\n").unwrap();
    }
    for (_, doc) in &docs {
        if doc["kind"] != "ConfigMap" {
            continue;
        }
        let name = str_of(&doc["metadata"]["name"]);
        for (file, text) in doc["data"].as_mapping().unwrap() {
            let (file, text) = (str_of(file), str_of(text));
            let text = text.replace("/run/secrets/tessera", &secrets.display().to_string());
            let path = dir.path().join(format!("{name}-{file}"));
            std::fs::write(&path, &text).unwrap();
            if file == "scheduler.toml" {
                let out = tessera(&["config", "check", "--config", path.to_str().unwrap()])
                    .env(
                        "TESSERA_DATABASE__URL",
                        "postgres://tessera@db.example:5432/tessera",
                    )
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "ConfigMap {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            } else if file == "worker.toml" {
                tessera_worker::WorkerConfig::load(Some(&path))
                    .unwrap_or_else(|e| panic!("ConfigMap {name}: {e:#}"));
            }
        }
    }
}

/// The HTTP paths a role serves without credentials, for probes.
fn probe_paths(role: &str) -> &'static [&'static str] {
    match role {
        "scheduler" | "worker" | "web" => &["/healthz", "/readyz"],
        _ => &[],
    }
}

#[test]
fn quadlet_units_describe_the_seed_machines() {
    let units = quadlet_units();
    let by_name = |name: &str| -> &Unit {
        units
            .iter()
            .find(|u| u.name() == name)
            .unwrap_or_else(|| panic!("no Quadlet unit {name}"))
    };
    for name in [
        "control-plane/tessera-postgres.container",
        "control-plane/tessera-scheduler.container",
        "control-plane/tessera-web.container",
        "gpu-machine/tessera-worker@.container",
        "gpu-machine/comfyui@.container",
    ] {
        by_name(name.rsplit('/').next().unwrap());
        assert!(deploy().join("quadlet").join(name).exists(), "{name}");
    }
    for unit in &units {
        let name = unit.name();
        let dir = unit.path.parent().unwrap();
        for (section, key, value) in &unit.entries {
            assert!(
                [
                    "Unit",
                    "Container",
                    "Service",
                    "Install",
                    "Network",
                    "Volume",
                    "Pod"
                ]
                .contains(&section.as_str()),
                "{name}: section [{section}]"
            );
            if key == "Environment" {
                let (var, val) = value.split_once('=').unwrap();
                assert!(
                    !is_secret_name(var),
                    "{name}: {var} is a Podman secret, not an Environment line"
                );
                assert!(!url_has_password(val), "{name}: {var} holds a password");
            }
        }
        if !name.ends_with(".container") {
            continue;
        }
        assert!(unit.one("Container", "Image").is_some(), "{name}: Image=");
        assert!(
            unit.one("Install", "WantedBy").is_some(),
            "{name}: WantedBy="
        );
        for network in unit.all("Container", "Network") {
            assert!(
                dir.join(&network).exists(),
                "{name}: Network={network} is a unit beside it"
            );
        }
        for volume in unit.all("Container", "Volume") {
            let source = volume.split(':').next().unwrap();
            if source.ends_with(".volume") {
                assert!(dir.join(source).exists(), "{name}: Volume={volume}");
            }
        }
        for secret in unit.all("Container", "Secret") {
            let options: BTreeMap<&str, &str> = secret
                .split(',')
                .skip(1)
                .filter_map(|o| o.split_once('='))
                .collect();
            match options.get("type") {
                Some(&"env") => assert!(options.contains_key("target")),
                Some(&"mount") => {
                    assert!(options["target"].starts_with("/run/secrets/"));
                    assert_eq!(
                        options.get("uid"),
                        Some(&"10001"),
                        "{name}: readable by tessera"
                    );
                }
                other => panic!("{name}: Secret={secret} has type {other:?}"),
            }
        }
        let Some(exec) = unit.one("Container", "Exec") else {
            continue;
        };
        let args: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
        assert!(
            SERVICE_ROLES.contains(&args[0].as_str()),
            "{name}: Exec={exec}"
        );
        assert_binary_accepts(&args, &format!("Quadlet {name}"));
        for volume in unit.all("Container", "Volume") {
            let source = volume.split(':').next().unwrap();
            if let Some(file) = source.strip_prefix("/etc/tessera/") {
                if file.ends_with(".toml") {
                    let file = file.replace("-%i", "");
                    assert!(
                        deploy().join("config").join(&file).exists(),
                        "{name}: mounts {source}, made from deploy/config/{file}"
                    );
                }
            }
        }
    }
    for network in ["tessera-db.network", "tessera-engines.network"] {
        assert_eq!(
            by_name(network).one("Network", "Internal").as_deref(),
            Some("true")
        );
    }

    // The GPU machine: one worker and one ComfyUI per GPU, each with its GPU;
    // ComfyUI holds the models and outputs and has no network but the
    // engines' internal one.
    let comfyui = by_name("comfyui@.container");
    assert_eq!(
        comfyui.all("Container", "AddDevice"),
        vec!["nvidia.com/gpu=%i"]
    );
    assert_eq!(
        comfyui.all("Container", "Network"),
        vec!["tessera-engines.network"]
    );
    assert!(comfyui.all("Container", "PublishPort").is_empty());
    let targets: Vec<String> = comfyui
        .all("Container", "Volume")
        .iter()
        .map(|v| v.split(':').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(targets, vec!["/models", "/outputs"]);
    let worker = by_name("tessera-worker@.container");
    assert_eq!(
        worker.all("Container", "AddDevice"),
        vec!["nvidia.com/gpu=%i"]
    );
    assert_eq!(
        worker.one("Container", "ContainerName").as_deref(),
        Some("worker-gpu-%i")
    );
    assert!(worker
        .all("Container", "Network")
        .contains(&"tessera-engines.network".to_owned()));
    // The scheduler reaches GPU 0's worker where its port is published:
    // worker-gpu.toml is GPU 0's file.
    let w = worker.instance("0");
    let published = w.one("Container", "PublishPort").unwrap();
    let gpu0: toml::Value =
        toml::from_str(&read(&deploy().join("config/worker-gpu.toml"))).unwrap();
    let advertise = gpu0["worker"]["advertise_url"].as_str().unwrap();
    let (host_port, container_port) = published.split_once(':').unwrap();
    assert!(
        advertise.ends_with(&format!(":{host_port}")),
        "{advertise} vs {published}"
    );
    assert_eq!(container_port, "9000");
    assert_eq!(gpu0["worker"]["listen"].as_str(), Some("0.0.0.0:9000"));
}

// ---------------------------------------------------------------------------
// The system, running as the files say

/// Children killed when the test ends, however it ends.
struct Processes {
    dir: PathBuf,
    children: Vec<(String, tokio::process::Child)>,
}

impl Processes {
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.children
            .iter()
            .map(|(name, _)| format!("--- {name} ---\n{}", self.log(name)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn spawn(&mut self, name: &str, launch: &Launch) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
        command
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        // Only what the deployment gives, plus what a process needs to run.
        command.env_clear();
        for var in ["PATH", "HOME", "LANG", "TMPDIR"] {
            if let Some(value) = std::env::var_os(var) {
                command.env(var, value);
            }
        }
        command.envs(&launch.env).env("TESSERA_LOG", "info");
        let child = command.spawn().expect("the tessera binary starts");
        self.children.push((name.to_owned(), child));
    }

    /// SIGTERM to each, as a service manager stops them; each must exit cleanly.
    async fn stop_all(&mut self) {
        for (_, child) in &self.children {
            terminate(child);
        }
        for (name, child) in &mut self.children {
            let status = tokio::time::timeout(WAIT, child.wait())
                .await
                .unwrap_or_else(|_| panic!("{name} did not stop on SIGTERM"))
                .unwrap();
            assert!(status.success(), "{name} exited with {status}");
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

/// How to start one service here: its arguments and environment, with
/// container paths and host names already mapped.
#[derive(Clone, Debug, Default)]
struct Launch {
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

/// Container paths and host names, and what they are on this machine.
#[derive(Clone, Default)]
struct Mapping(Vec<(String, String)>);

impl Mapping {
    fn add(&mut self, from: impl Into<String>, to: impl Into<String>) {
        self.0.push((from.into(), to.into()));
        // Longest first, so /etc/tessera/worker.toml wins over /etc/tessera.
        self.0
            .sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    }

    fn apply(&self, text: &str) -> String {
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

/// Compose's `${VAR}`, `${VAR:?message}`, `${VAR:-default}` with variables
/// from `vars` (the .env file); any other use of `$` is refused.
fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let inner = after
            .strip_prefix('{')
            .and_then(|a| a.split_once('}'))
            .unwrap_or_else(|| panic!("unsupported interpolation in {text:?}"));
        let (expr, tail) = inner;
        let (name, default) = match expr.find([':', '-', '?']) {
            Some(i) => {
                let op = expr[i..].trim_start_matches(':');
                (&expr[..i], op.strip_prefix('-'))
            }
            None => (expr, None),
        };
        match (vars.get(name), default) {
            (Some(value), _) if !value.is_empty() => out.push_str(value),
            (_, Some(default)) => out.push_str(default),
            _ => panic!("{text:?} needs {name}, which the .env file does not set"),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn env_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tessera(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The compose project made runnable here: secrets from `deploy/secrets.sh`,
/// the services' mounts copied into a temporary folder with their container
/// paths and host names mapped.
struct Project {
    compose: Value,
    dir: tempfile::TempDir,
    dotenv: BTreeMap<String, String>,
    mapping: Mapping,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("sh")
            .arg(deploy().join("secrets.sh"))
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "deploy/secrets.sh");
        let dotenv = env_file(&dir.path().join(".env"));
        assert!(dotenv["POSTGRES_PASSWORD"].len() >= 32);
        let compose = compose();
        let mut mapping = Mapping::default();
        // Secrets: compose mounts each at /run/secrets/<target>.
        for service in compose["services"].as_mapping().unwrap().values() {
            for secret in service["secrets"].as_sequence().into_iter().flatten() {
                let source = str_of(&secret["source"]);
                let target = str_of(&secret["target"]);
                let file = str_of(&compose["secrets"][source.as_str()]["file"]);
                let host = dir.path().join(file.trim_start_matches("./"));
                // The website's key is made by the operator once the
                // scheduler runs (the test does so below); secrets.sh made the rest.
                if target != "web-api-key" {
                    assert!(host.exists(), "secrets.sh made {file}");
                }
                mapping.add(format!("/run/secrets/{target}"), host.display().to_string());
            }
        }
        // Named volumes: a folder each.
        for service in compose["services"].as_mapping().unwrap().values() {
            for volume in short_volumes(service) {
                let mut parts = volume.split(':');
                let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
                if !source.starts_with('.') && !source.starts_with('/') {
                    let host = dir.path().join("volumes").join(source);
                    std::fs::create_dir_all(&host).unwrap();
                    mapping.add(target, host.display().to_string());
                }
            }
        }
        Project {
            compose,
            dir,
            dotenv,
            mapping,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn service(&self, name: &str) -> &Value {
        let service = &self.compose["services"][name];
        assert!(!service.is_null(), "no compose service {name}");
        service
    }

    fn services_running(&self, role: &str) -> Vec<String> {
        self.compose["services"]
            .as_mapping()
            .unwrap()
            .iter()
            .filter(|(_, s)| strings(&s["command"]).first().map(String::as_str) == Some(role))
            .map(|(name, _)| str_of(name))
            .collect()
    }

    /// The service's command and environment (its env_file too), its bind
    /// mounts copied here with paths and host names mapped.
    fn launch(&self, name: &str, extra: &Mapping) -> Launch {
        let service = self.service(name);
        let map = |text: &str| extra.apply(&self.mapping.apply(text));
        let mut files = Mapping::default();
        for volume in short_volumes(service) {
            let mut parts = volume.split(':');
            let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
            if let Some(source) = source.strip_prefix("./") {
                let text = read(&deploy().join(source));
                let copy = self.path(&format!("{name}-{}", source.replace('/', "-")));
                std::fs::write(&copy, map(&text)).unwrap();
                files.add(target, copy.display().to_string());
            }
        }
        let mut env = BTreeMap::new();
        for file in service["env_file"].as_sequence().into_iter().flatten() {
            let path = str_of(&file["path"]);
            let path = self.path(path.trim_start_matches("./"));
            if path.exists() {
                env.extend(env_file(&path));
            }
        }
        for (key, value) in service["environment"].as_mapping().into_iter().flatten() {
            let value = interpolate(&str_of(value), &self.dotenv);
            env.insert(str_of(key), files.apply(&map(&value)));
        }
        let args = strings(&service["command"])
            .iter()
            .map(|a| files.apply(&map(a)))
            .collect();
        Launch { args, env }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_system_runs_on_loopback_as_the_files_describe_it() {
    let project = Project::new();
    let mut procs = Processes {
        dir: project.path("logs"),
        children: Vec::new(),
    };
    std::fs::create_dir(&procs.dir).unwrap();

    // Host names on the compose networks become loopback addresses.
    let scheduler_port = free_port();
    let mut hosts = Mapping::default();
    hosts.add("scheduler:8000", format!("127.0.0.1:{scheduler_port}"));
    let workers = project.services_running("worker");
    assert!(!workers.is_empty());
    let mut worker_ports = BTreeMap::new();
    for name in &workers {
        let port = free_port();
        hosts.add(format!("{name}:9000"), format!("127.0.0.1:{port}"));
        worker_ports.insert(name.clone(), port);
    }
    let base = format!("http://127.0.0.1:{scheduler_port}");

    // The scheduler's configuration with the compose environment checks out...
    let schedulers = project.services_running("scheduler");
    assert_eq!(schedulers, vec!["scheduler".to_owned()]);
    let scheduler = project.launch("scheduler", &hosts);
    let config =
        scheduler.args[scheduler.args.iter().position(|a| a == "--config").unwrap() + 1].clone();
    let out = tessera(&["config", "check", "--config", &config])
        .env_clear()
        .envs(&scheduler.env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tessera config check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("configuration is valid"), "{said}");
    assert!(
        said.contains("postgres://tessera@postgres:5432/tessera"),
        "{said}"
    );

    // ...and it runs, on SQLite instead of the PostgreSQL container.
    let mut scheduler = scheduler;
    scheduler.args.extend([
        "--listen".to_owned(),
        format!("127.0.0.1:{scheduler_port}"),
        "--database-url".to_owned(),
        format!("sqlite://{}", project.path("tessera.db").display()),
    ]);
    procs.spawn("scheduler", &scheduler);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ok = |path: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    assert!(
        wait_until(WAIT, || ok("/healthz")).await,
        "the scheduler answers /healthz:\n{}",
        procs.logs()
    );
    // Every path a Kubernetes probe asks for, without credentials.
    for path in probe_paths("scheduler") {
        assert!(ok(path).await, "GET {path}");
    }

    // The workers, as compose runs them, register with it.
    for name in &workers {
        let mut worker = project.launch(name, &hosts);
        worker.args.extend([
            "--listen".to_owned(),
            format!("127.0.0.1:{}", worker_ports[name]),
        ]);
        procs.spawn(name, &worker);
    }
    let admin_token = read(&project.path("secrets/admin-token")).trim().to_owned();
    let internal_token = read(&project.path("secrets/internal-token"))
        .trim()
        .to_owned();
    let admin = Client::new(&base, admin_token).unwrap();
    let registered = wait_until(WAIT, || {
        let admin = admin.clone();
        let expected: BTreeMap<String, String> = workers
            .iter()
            .map(|w| (w.clone(), format!("http://127.0.0.1:{}", worker_ports[w])))
            .collect();
        async move {
            let Ok(list) = admin.list_workers().await else {
                return false;
            };
            expected.iter().all(|(id, address)| {
                list.workers.iter().any(|w| {
                    &w.heartbeat.worker_id == id && &w.heartbeat.address == address && w.online
                })
            })
        }
    })
    .await;
    assert!(registered, "the workers register:\n{}", procs.logs());
    for (name, port) in &worker_ports {
        let health: serde_json::Value = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .bearer_auth(&internal_token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["worker_id"], json!(name));
        // Every path a Kubernetes probe asks a worker for, without credentials.
        for path in probe_paths("worker") {
            let url = format!("http://127.0.0.1:{port}{path}");
            let answers = wait_until(WAIT, || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    http.get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            })
            .await;
            assert!(answers, "GET {url}");
        }
    }

    // Prometheus reads the scheduler's and the workers' metrics with the
    // metrics token compose gives them all (the monitoring profile).
    let metrics_token = read(&project.path("secrets/metrics-token"))
        .trim()
        .to_owned();
    let mut scraped = vec![format!("{base}/metrics")];
    scraped.extend(
        worker_ports
            .values()
            .map(|port| format!("http://127.0.0.1:{port}/metrics")),
    );
    for url in scraped {
        let status = |token: Option<String>| {
            let request = http.get(&url);
            let request = match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            async move { request.send().await.unwrap().status() }
        };
        assert_eq!(status(Some(metrics_token.clone())).await, 200, "{url}");
        assert_eq!(status(None).await, 401, "{url}");
    }

    // A frontend's jobs run on them: a simulated image and real espeak-ng speech.
    let key = admin
        .create_key(&CreateKeyRequest {
            frontend: Platform::Web,
            bot_id: "deploy-test".into(),
        })
        .await
        .unwrap();
    let web = Client::new(&base, key.api_key).unwrap();
    for (capability, params) in [
        (Capability::Image, json!({"prompt": "a lighthouse at dawn"})),
        (
            Capability::TextToSpeech,
            json!({"text": "Hello from the deployment test."}),
        ),
    ] {
        let created = web
            .create_job(
                &CreateJobRequest {
                    frontend: Platform::Web,
                    bot_id: "deploy-test".into(),
                    capability,
                    user_ref: "web:deploy".into(),
                    reply_context: None,
                    params,
                },
                None,
            )
            .await
            .unwrap();
        let id = created.job.job_id;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let job = loop {
            let job = web.get_job(&id).await.unwrap();
            if job.status.is_terminal() || tokio::time::Instant::now() > deadline {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            job.status,
            JobState::Completed,
            "the {capability} job completes: {job:?}\n{}",
            procs.logs()
        );
        assert!(!job.artifacts.is_empty());
    }

    // The bots profile: the seed's twelve bots with the configurations and
    // environment compose gives them, against loopback Telegram and Discord.
    let tg = TelegramStandIn::start().await;
    let dc = DiscordStandIn::start().await;
    let bots_service = project.services_running("bots");
    assert_eq!(bots_service, vec!["bots".to_owned()]);
    let mut bots_env = String::new();
    let mut tokens = Vec::new();
    for (platform, file) in [
        (Platform::Telegram, "telegram.toml"),
        (Platform::Discord, "discord.toml"),
    ] {
        let config: toml::Value =
            toml::from_str(&read(&deploy().join("config").join(file))).unwrap();
        let ids: Vec<String> = config["bots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 6, "{file}: the seed's six bots");
        for (n, id) in ids.iter().enumerate() {
            let key = admin
                .create_key(&CreateKeyRequest {
                    frontend: platform,
                    bot_id: id.clone(),
                })
                .await
                .unwrap();
            let token = match platform {
                Platform::Telegram => {
                    let token = format!("70000{n}:AAE-deploy-{id}");
                    tg.add_bot(&token, &id.replace('-', "_"));
                    bots_env.push_str(&format!(
                        "{}={token}\n",
                        tessera_chat::secret::env_name("TELEGRAM_TOKEN_", id)
                    ));
                    token
                }
                _ => {
                    let token = format!("MTAw.deploy-{id}.secret");
                    dc.add_bot(&token, 1_000_000_000_000_000_000 + n as u64, id);
                    bots_env.push_str(&format!(
                        "{}={token}\n",
                        tessera_chat::secret::env_name("DISCORD_TOKEN_", id)
                    ));
                    token
                }
            };
            bots_env.push_str(&format!(
                "{}={}\n",
                tessera_chat::secret::env_name("TESSERA_API_KEY_", id),
                key.api_key
            ));
            tokens.push((platform, token));
        }
    }
    // As an operator fills secrets/bots.env.
    std::fs::write(project.path("secrets/bots.env"), bots_env).unwrap();
    let mut bots = project.launch("bots", &hosts);
    bots.env
        .insert("TESSERA_TELEGRAM__API_URL".into(), tg.api_url());
    bots.env
        .insert("TESSERA_DISCORD__API_URL".into(), dc.base_url());
    bots.env
        .insert("TESSERA_DISCORD__GATEWAY_URL".into(), dc.gateway_url());
    procs.spawn("bots", &bots);
    for (platform, token) in &tokens {
        let up = match platform {
            Platform::Telegram => tg.wait_calls(token, "getUpdates", 1, WAIT).await,
            _ => dc.wait_connected(token, WAIT).await,
        };
        assert!(up, "bot with token {token} runs:\n{}", procs.log("bots"));
    }

    // The web profile, with the key the operator made and kept in secrets/.
    let key = admin
        .create_key(&CreateKeyRequest {
            frontend: Platform::Web,
            bot_id: "web".into(),
        })
        .await
        .unwrap();
    std::fs::write(project.path("secrets/web-api-key"), &key.api_key).unwrap();
    let web_port = free_port();
    let mut web_hosts = hosts.clone();
    web_hosts.add("0.0.0.0:3000", format!("127.0.0.1:{web_port}"));
    procs.spawn("web", &project.launch("web", &web_hosts));
    let http = reqwest::Client::new();
    let web = format!("http://127.0.0.1:{web_port}");
    let ready = wait_until(WAIT, || async {
        http.get(format!("{web}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ready, "the website is ready:\n{}", procs.log("web"));
    for path in probe_paths("web") {
        let resp = http.get(format!("{web}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "web {path}");
    }
    let pricing = http
        .get(format!("{web}/pricing"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        pricing.contains("STARTER"),
        "the website reads the plans through the scheduler with its key"
    );

    procs.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quadlet_gpu_worker_starts_with_its_unit_and_config() {
    // The GPU machine's worker as tessera-worker@0 runs it, against a
    // loopback scheduler and a ComfyUI stand-in: its configuration, the
    // example workflow templates as its models' templates, and its unit's
    // environment.
    let dir = tempfile::tempdir().unwrap();
    let token = "an-internal-token-for-the-quadlet-test";
    let admin_token = "an-admin-token-for-the-quadlet-test";
    std::fs::write(dir.path().join("internal-token"), format!("{token}\n")).unwrap();
    let workflows = dir.path().join("workflows");
    std::fs::create_dir(&workflows).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/workflows");
    std::fs::copy(
        examples.join("image-example.json"),
        workflows.join("sdxl-1.0.json"),
    )
    .unwrap();
    std::fs::copy(
        examples.join("video-example.json"),
        workflows.join("wan-2.1.json"),
    )
    .unwrap();
    let comfyui = ComfyUi::start().await;

    let scheduler_port = free_port();
    let worker_port = free_port();
    let mut map = Mapping::default();
    map.add("pc2.lan:8000", format!("127.0.0.1:{scheduler_port}"));
    map.add("pc1.lan:9000", format!("127.0.0.1:{worker_port}"));
    map.add("http://comfyui-gpu-0:8188", comfyui.url());
    map.add(
        "/run/secrets/internal-token",
        dir.path().join("internal-token").display().to_string(),
    );
    map.add("/etc/tessera/workflows", workflows.display().to_string());

    let unit =
        Unit::read(&deploy().join("quadlet/gpu-machine/tessera-worker@.container")).instance("0");
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        map.apply(&read(&deploy().join("config/worker-gpu.toml"))),
    )
    .unwrap();
    map.add("/etc/tessera/worker.toml", config.display().to_string());
    let mut launch = Launch {
        args: unit
            .one("Container", "Exec")
            .unwrap()
            .split_whitespace()
            .map(|a| map.apply(a))
            .collect(),
        env: BTreeMap::new(),
    };
    for line in unit.all("Container", "Environment") {
        let (k, v) = line.split_once('=').unwrap();
        launch.env.insert(k.to_owned(), map.apply(v));
    }
    launch
        .args
        .extend(["--listen".to_owned(), format!("127.0.0.1:{worker_port}")]);

    let mut procs = Processes {
        dir: dir.path().to_path_buf(),
        children: Vec::new(),
    };
    let scheduler = Launch {
        args: vec![
            "scheduler".into(),
            "--listen".into(),
            format!("127.0.0.1:{scheduler_port}"),
            "--database-url".into(),
            format!("sqlite://{}", dir.path().join("tessera.db").display()),
        ],
        env: BTreeMap::from([
            ("TESSERA_AUTH__INTERNAL_TOKEN".to_owned(), token.to_owned()),
            (
                "TESSERA_AUTH__ADMIN_TOKEN".to_owned(),
                admin_token.to_owned(),
            ),
            (
                "TESSERA_ARTIFACTS__LOCATION".to_owned(),
                dir.path().join("artifacts").display().to_string(),
            ),
        ]),
    };
    procs.spawn("scheduler", &scheduler);
    let admin = Client::new(&format!("http://127.0.0.1:{scheduler_port}"), admin_token).unwrap();
    assert!(
        wait_until(WAIT, || {
            let admin = admin.clone();
            async move { admin.list_workers().await.is_ok() }
        })
        .await,
        "the scheduler starts:\n{}",
        procs.logs()
    );
    procs.spawn("worker-gpu-0", &launch);
    let deadline = tokio::time::Instant::now() + WAIT;
    let seen = loop {
        let found = admin.list_workers().await.ok().and_then(|list| {
            list.workers
                .into_iter()
                .find(|w| w.heartbeat.worker_id == "worker-gpu-0")
        });
        if found.is_some() || tokio::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(seen.is_some(), "worker-gpu-0 registers:\n{}", procs.logs());
    let hb = seen.unwrap().heartbeat;
    assert_eq!(hb.address, format!("http://127.0.0.1:{worker_port}"));
    for capability in [
        Capability::Image,
        Capability::Video,
        Capability::TextToSpeech,
    ] {
        assert!(
            hb.capabilities.contains(&capability),
            "{:?}",
            hb.capabilities
        );
    }
    procs.stop_all().await;
}
