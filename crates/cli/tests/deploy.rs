//! The deployment files under `deploy/`, checked by what can run here.
//!
//! No container runtime, cluster or GPU is needed: every YAML file is parsed
//! (compose, Kubernetes, monitoring), the Quadlet units are read as the INI
//! files they are, and the Containerfile's stages are read line by line. Every
//! command line they give the `tessera` image is handed to the real binary
//! with `--help` appended, so an unknown subcommand or flag fails here.
//! `deploy_system.rs` then runs the system as the files describe it; how both
//! read the files is in `common/deploy.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::Value;

use common::deploy::{
    assert_binary_accepts, compose, containerfile_stages, deploy, files_under, is_secret_name,
    kubernetes, probe_paths, quadlet_units, read, short_volumes, str_of, strings, tessera,
    url_has_password, yaml_documents, Mapping, Unit, SERVICE_ROLES,
};

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
    for token in ["internal-token", "admin-token", "link-secret"] {
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
