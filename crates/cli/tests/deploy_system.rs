//! The system runs as the files under `deploy/` describe it, on loopback: the
//! real scheduler, workers and bots started with the compose services'
//! commands, environment, mounted configuration files and secrets (made by
//! `deploy/secrets.sh`), with container paths mapped to a temporary folder,
//! container host names to 127.0.0.1 and free ports, PostgreSQL replaced by
//! SQLite, and Telegram, Discord and ComfyUI by the testkit's loopback
//! stand-ins; the GPU machine's Quadlet worker runs with its unit and
//! configuration. The simulated worker speaks through espeak-ng, as in the
//! image: `scripts/test` installs it for the worker's tests too. The files
//! themselves are checked by `deploy.rs`.

mod common;

use std::collections::BTreeMap;
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

use common::deploy::{
    compose, deploy, probe_paths, read, short_volumes, str_of, strings, tessera, Mapping, Unit,
};
use common::farm::terminate;

const WAIT: Duration = Duration::from_secs(30);

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
            bot_id: "deploy-test".parse().unwrap(),
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
                    callback_url: None,
                    context: None,
                    frontend: Platform::Web,
                    bot_id: "deploy-test".parse().unwrap(),
                    capability,
                    user_ref: "web:deploy".parse().unwrap(),
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
                    bot_id: (id.clone()).parse().unwrap(),
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
            bot_id: "web".parse().unwrap(),
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
