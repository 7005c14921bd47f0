//! Faults on real processes (RELIABILITY.md), each followed by the invariant
//! check of `tessera_testkit::invariants`: every job created is there in one
//! state, none completed twice, tokens charged equal the costs not refunded,
//! every completed job has its artifacts and their bytes.
//!
//! - the scheduler killed with SIGKILL three times under load;
//! - a worker that hangs (SIGSTOP: no heartbeats, its connections open), then
//!   wakes up;
//! - the artifact disk full (a 1 MiB tmpfs, filled), then freed;
//! - a worker cut off by a network partition (its own network namespace,
//!   the link taken down), then healed.
//!
//! The last two need root (mount, ip netns), as `scripts/test` runs.
//! Each test prints one line of figures for RELIABILITY.md.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::{Child, Command};

use tessera_api::public::CreateJobRequest;
use tessera_api::Client;
use tessera_core::{Capability, JobId, JobState, Platform};
use tessera_testkit::{invariants, sim, Backend, TestDb};

const WAIT: Duration = Duration::from_secs(60);
const ADMIN: &str = "admin-token-of-the-fault-tests";
const INTERNAL: &str = "internal-token-of-the-fault-tests";
const BOT: &str = "tg-image-bot-1";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (mount, ip netns): run the suite with scripts/test as root"
    );
}

/// `tessera scheduler` on `listen`, logging into `dir/<log>`.
fn scheduler(dir: &Path, log: &str, listen: &str, db: &str, artifacts: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--log", "warn", "scheduler", "--listen", listen])
        .args(["--database-url", db])
        .env("TESSERA_AUTH__ADMIN_TOKEN", ADMIN)
        .env("TESSERA_AUTH__INTERNAL_TOKEN", INTERNAL)
        .env("TESSERA_ARTIFACTS__LOCATION", artifacts)
        .env("TESSERA_WORKERS__HEARTBEAT_INTERVAL_MS", "300")
        .env("TESSERA_WORKERS__DISPATCH_TICK_MS", "100")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("the tessera binary starts")
}

/// `tessera worker` with one sim image engine taking `run_ms`, optionally
/// inside network namespace `netns`.
fn worker_process(
    dir: &Path,
    id: &str,
    listen: &str,
    url: &str,
    run_ms: u64,
    netns: Option<&str>,
) -> Child {
    let config = dir.join(format!("{id}.toml"));
    std::fs::write(
        &config,
        format!(
            "[worker]\nheartbeat_interval_ms = 300\n\n[[engines]]\nkind = \"sim\"\ncapability = \"image\"\n\
             models = [\"sdxl-1.0\"]\nrun_ms = {run_ms}\nload_ms = 0\n"
        ),
    )
    .unwrap();
    let out = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
    let tessera = env!("CARGO_BIN_EXE_tessera");
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, tessera]);
            c
        }
        None => Command::new(tessera),
    };
    command
        .args([
            "--log",
            "info",
            "worker",
            "--config",
            config.to_str().unwrap(),
        ])
        .args(["--id", id, "--listen", listen, "--scheduler-url", url])
        .env("TESSERA_WORKER__INTERNAL_TOKEN", INTERNAL)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("the tessera binary starts")
}

/// An in-process worker with one sim image engine taking `run_ms`.
async fn sim_worker(id: &str, url: &str, run_ms: u64) -> tessera_worker::WorkerHandle {
    tessera_worker::Worker::start(tessera_worker::WorkerConfig {
        worker: tessera_worker::config::AgentConfig {
            id: id.parse().unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            scheduler_url: url.to_owned(),
            internal_token: Some(INTERNAL.into()),
            heartbeat_interval_ms: 300,
            ..Default::default()
        },
        engines: vec![sim(Capability::Image, &["sdxl-1.0"], run_ms)],
        moderation: Default::default(),
    })
    .await
    .expect("starting a worker")
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn healthy(url: &str) -> bool {
    reqwest::get(format!("{url}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn frontend_key(url: &str) -> String {
    let admin = Client::new(url, ADMIN.to_owned()).unwrap();
    admin
        .create_key(&tessera_api::admin::CreateKeyRequest {
            frontend: Platform::Telegram,
            bot_id: BOT.parse().unwrap(),
        })
        .await
        .expect("a frontend key")
        .api_key
}

/// Creates a job as a careful frontend does: one idempotency key, retried
/// while the scheduler is away, so it is created and charged once.
async fn create(client: &Client, user: u32, n: u32) -> JobId {
    let req = CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Telegram,
        bot_id: BOT.parse().unwrap(),
        capability: Capability::Image,
        user_ref: format!("telegram:{user}").parse().unwrap(),
        reply_context: None,
        params: json!({"prompt": format!("job {n}"), "resolution": "512x512"}),
    };
    let key = format!("fault-{user}-{n}");
    tessera_testkit::create_retrying(client, &req, &key, WAIT, Duration::from_millis(50), |e| {
        e.code().is_none() || e.code() == Some("database_unavailable")
    })
    .await
}

async fn wait_all_ended(client: &Client, ids: &[JobId]) {
    for id in ids {
        until(&format!("{id} never ended"), || async {
            client
                .get_job(id)
                .await
                .is_ok_and(|j| j.status.is_terminal())
        })
        .await;
    }
}

/// A `tessera scheduler` process on a fresh PostgreSQL database, with a
/// frontend client and an admin client. Its artifact folder is
/// `dir/artifacts`, where a test may mount something first.
struct ControlPlane {
    /// Unmounted before `dir` goes (fields drop in this order).
    _mount: Option<Tmpfs>,
    dir: tempfile::TempDir,
    db: TestDb,
    artifacts: std::path::PathBuf,
    listen: String,
    url: String,
    process: Child,
    client: Client,
    admin: Client,
}

impl ControlPlane {
    /// Starts the scheduler on `host` (a free port) and waits until it is ready.
    async fn start(host: &str, dir: tempfile::TempDir, mount: Option<Tmpfs>) -> ControlPlane {
        let db = TestDb::new(Backend::Postgres).await;
        let artifacts = dir.path().join("artifacts");
        let listen = format!("{host}:{}", free_port());
        let url = format!("http://{listen}");
        let process = scheduler(dir.path(), "scheduler.log", &listen, &db.url, &artifacts);
        until("the scheduler never got ready", || healthy(&url)).await;
        let client = Client::new(&url, frontend_key(&url).await).unwrap();
        let admin = Client::new(&url, ADMIN.to_owned()).unwrap();
        ControlPlane {
            _mount: mount,
            dir,
            db,
            artifacts,
            listen,
            url,
            process,
            client,
            admin,
        }
    }

    /// SIGKILL, then the same scheduler started again on the same port.
    async fn crash_and_restart(&mut self) {
        signal(&self.process, "-KILL");
        self.process.wait().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.process = scheduler(
            self.dir.path(),
            "scheduler.log",
            &self.listen,
            &self.db.url,
            &self.artifacts,
        );
        until("the scheduler never came back", || healthy(&self.url)).await;
    }

    /// Waits until `n` workers are online.
    async fn until_online(&self, n: usize, what: &str) {
        until(what, || async {
            self.admin
                .list_workers()
                .await
                .is_ok_and(|w| w.workers.iter().filter(|w| w.online).count() == n)
        })
        .await;
    }

    /// Waits until job `id` is in `state`.
    async fn until_job(&self, id: &JobId, state: JobState, what: &str) {
        until(what, || async {
            self.client
                .get_job(id)
                .await
                .is_ok_and(|j| j.status == state)
        })
        .await;
    }

    /// Checks the invariants on every job, then stops the scheduler with SIGTERM.
    async fn check_and_stop(mut self, ids: &[JobId]) -> invariants::Checked {
        let store = self.db.store().await;
        let checked = invariants::check(&*store, ids, Some(&self.artifacts), true).await;
        signal(&self.process, "-TERM");
        self.process.wait().await.unwrap();
        checked
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_killed_three_times_under_load_loses_nothing() {
    let mut cp = ControlPlane::start("127.0.0.1", tempfile::tempdir().unwrap(), None).await;
    let mut workers = Vec::new();
    for i in 0..3 {
        workers.push(sim_worker(&format!("worker-gpu-{i}"), &cp.url, 40).await);
    }

    // A steady load from 60 users (4 jobs each, within FREE quotas) while the
    // scheduler is killed three times.
    let load = {
        let client = cp.client.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..240u32 {
                ids.push(create(&client, n % 60, n).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ids
        })
    };
    let mut kills = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        cp.crash_and_restart().await;
        kills += 1;
    }
    let ids = load.await.unwrap();
    wait_all_ended(&cp.client, &ids).await;
    for w in workers {
        w.shutdown().await.unwrap();
    }
    let checked = cp.check_and_stop(&ids).await;
    assert_eq!(checked.jobs, ids.len(), "every create made one job");
    assert_eq!(
        checked.by_state.get("COMPLETED"),
        Some(&ids.len()),
        "{checked:?}"
    );
    eprintln!(
        "faults: scheduler SIGKILL x{kills} under load: {} jobs created, {} checked, {} completed, {} retried",
        ids.len(),
        checked.jobs,
        checked.by_state.get("COMPLETED").copied().unwrap_or(0),
        checked.retried
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_is_replaced_and_its_late_result_refused() {
    let cp = ControlPlane::start("127.0.0.1", tempfile::tempdir().unwrap(), None).await;

    // Only the worker that will hang is there when the job arrives.
    let hung_listen = format!("127.0.0.1:{}", free_port());
    let mut hung = worker_process(
        cp.dir.path(),
        "worker-gpu-0",
        &hung_listen,
        &cp.url,
        3000,
        None,
    );
    cp.until_online(1, "the worker never registered").await;
    let id = create(&cp.client, 1, 1).await;
    cp.until_job(&id, JobState::Running, "the job never started")
        .await;
    // It hangs mid-job: no heartbeats, its connections stay open.
    signal(&hung, "-STOP");
    let spare = sim_worker("worker-gpu-1", &cp.url, 50).await;
    cp.until_job(
        &id,
        JobState::Completed,
        "the hung worker's job was never completed by another",
    )
    .await;
    let job = cp.client.get_job(&id).await.unwrap();
    assert_eq!(job.attempts, 2, "taken back once: {job:#?}");
    // It wakes up: its report of the old attempt is refused.
    signal(&hung, "-CONT");
    let log = cp.dir.path().join("worker-gpu-0.log");
    until(
        "the woken worker never heard its attempt was over",
        || async {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("no longer wants this attempt"))
        },
    )
    .await;
    let again = cp.client.get_job(&id).await.unwrap();
    assert_eq!(again.status, JobState::Completed);
    assert_eq!(again.attempts, 2);
    assert_eq!(
        again.artifacts, job.artifacts,
        "the late result changed nothing"
    );
    spare.shutdown().await.unwrap();
    hung.kill().await.unwrap();
    let checked = cp.check_and_stop(&[id]).await;
    eprintln!(
        "faults: hung worker (SIGSTOP mid-job): job taken back and completed by another; woken, its report of the old attempt refused; {} checked",
        checked.jobs
    );
}

/// Runs a command that must succeed (mount, ip).
fn sh(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_artifact_disk_holds_results_back_until_there_is_room() {
    require_root("the full-disk test");
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    let disk = Tmpfs::mount(&artifacts, "1m");
    // Fill it: the write stops when the disk is full.
    let filler = artifacts.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 2 << 20]);
    let cp = ControlPlane::start("127.0.0.1", dir, Some(disk)).await;
    let client = &cp.client;
    let worker = sim_worker("worker-gpu-0", &cp.url, 20).await;

    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(create(client, n, n).await);
    }
    // Runs end, but no result can be kept: the jobs stay RUNNING, the
    // worker keeps its result and retries, and an upload is refused clearly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        let job = client.get_job(id).await.unwrap();
        assert_ne!(job.status, JobState::Completed, "{job:#?}");
        assert!(!job.status.is_terminal(), "{job:#?}");
    }
    let refused = client
        .upload_input("audio/wav", vec![7u8; 256 * 1024])
        .await
        .expect_err("no room for an input");
    assert_eq!(refused.code(), Some("storage_unavailable"), "{refused:?}");
    let created = create(client, 9, 9).await;
    ids.push(created);

    // Room again: every held result lands, once.
    std::fs::remove_file(&filler).unwrap();
    wait_all_ended(client, &ids).await;
    worker.shutdown().await.unwrap();
    let checked = cp.check_and_stop(&ids).await;
    assert_eq!(checked.by_state.get("COMPLETED"), Some(&ids.len()));
    eprintln!(
        "faults: artifact disk full (1 MiB tmpfs) for 2 s under {} jobs: results held by the worker, an upload refused with storage_unavailable, all {} completed once room returned",
        ids.len(),
        checked.jobs
    );
}

/// A network namespace joined to this one by a veth pair, deleted when dropped.
struct Netns {
    name: String,
    host_link: String,
    host: String,
    inside: String,
}

impl Netns {
    fn new() -> Netns {
        let tag: u32 = rand::random::<u32>() % 0xffff;
        let name = format!("tessera-{tag:04x}");
        let (host_link, ns_link) = (format!("tv{tag:04x}h"), format!("tv{tag:04x}n"));
        let octet = tag % 250 + 1;
        let (host, inside) = (format!("10.213.{octet}.1"), format!("10.213.{octet}.2"));
        sh("ip", &["netns", "add", &name]);
        let ns = Netns {
            name: name.clone(),
            host_link: host_link.clone(),
            host: host.clone(),
            inside: inside.clone(),
        };
        sh(
            "ip",
            &[
                "link", "add", &host_link, "type", "veth", "peer", "name", &ns_link,
            ],
        );
        sh("ip", &["link", "set", &ns_link, "netns", &name]);
        sh(
            "ip",
            &["addr", "add", &format!("{host}/30"), "dev", &host_link],
        );
        sh("ip", &["link", "set", &host_link, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name.as_str(), "ip"];
            all.extend_from_slice(args);
            sh("ip", &all);
        };
        exec(&["addr", "add", &format!("{inside}/30"), "dev", &ns_link]);
        exec(&["link", "set", &ns_link, "up"]);
        exec(&["link", "set", "lo", "up"]);
        ns
    }

    /// Cuts the link (`false`) or mends it (`true`).
    fn link(&self, up: bool) {
        sh(
            "ip",
            &[
                "link",
                "set",
                &self.host_link,
                if up { "up" } else { "down" },
            ],
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_workers_job_moves_on_and_its_late_result_is_refused() {
    require_root("the network partition test");
    let net = Netns::new();
    // The scheduler listens on this side of the link only.
    let cp = ControlPlane::start(&net.host, tempfile::tempdir().unwrap(), None).await;

    // A worker on the far side of the link, as on another machine.
    let far_listen = format!("{}:9000", net.inside);
    let dir = cp.dir.path();
    let mut far = worker_process(
        dir,
        "worker-gpu-0",
        &far_listen,
        &cp.url,
        3000,
        Some(&net.name),
    );
    cp.until_online(1, "the far worker never registered").await;
    let id = create(&cp.client, 1, 1).await;
    cp.until_job(
        &id,
        JobState::Running,
        "the job never started on the far worker",
    )
    .await;
    net.link(false);
    let near = sim_worker("worker-gpu-1", &cp.url, 50).await;
    cp.until_job(
        &id,
        JobState::Completed,
        "the cut-off worker's job never moved on",
    )
    .await;
    let job = cp.client.get_job(&id).await.unwrap();
    assert_eq!(job.attempts, 2, "{job:#?}");
    // Healed: the first heartbeat's answer tells the far worker to stop the
    // old attempt, and its report of it is refused.
    net.link(true);
    let log = dir.join("worker-gpu-0.log");
    until(
        "the far worker never heard its attempt was over",
        || async {
            std::fs::read_to_string(&log).is_ok_and(|l| {
                l.contains("no longer wants the running job; cancelling")
                    && l.contains("no longer wants this attempt")
            })
        },
    )
    .await;
    cp.until_online(2, "the far worker never came back online")
        .await;
    let again = cp.client.get_job(&id).await.unwrap();
    assert_eq!((again.status, again.attempts), (JobState::Completed, 2));
    assert_eq!(again.artifacts, job.artifacts);
    near.shutdown().await.unwrap();
    far.kill().await.unwrap();
    let checked = cp.check_and_stop(&[id]).await;
    eprintln!(
        "faults: network partition (veth down) of a worker mid-job: job taken back and completed by another; after healing the worker was told to stop the old attempt, its report refused, and it came back online; {} checked",
        checked.jobs
    );
}
