//! A bot farm for tests and the bots benchmark: the real scheduler and `sim`
//! workers in this process, loopback stand-ins of Telegram and Discord, and
//! the seed's twelve bot instances run as real `tessera` processes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tessera_core::{Capability, Platform};
use tessera_testkit::standins::discord::{DiscordOptions, DiscordStandIn};
use tessera_testkit::standins::telegram::TelegramStandIn;
use tessera_testkit::{sim, Backend, TestApp};

/// One of the seed's bots.
#[derive(Clone, Debug)]
pub struct BotSpec {
    pub id: String,
    pub platform: Platform,
    pub capability: Capability,
    /// Its platform token.
    pub token: String,
    /// Its Discord application id.
    pub application_id: u64,
}

impl BotSpec {
    /// The slash command its users run.
    pub fn command(&self) -> &'static str {
        match self.capability {
            Capability::Video => "video",
            _ => "imagine",
        }
    }
}

/// The seed's deployment: tg-image-bot-1..3, tg-video-bot-1..3,
/// dc-image-bot-1..3, dc-video-bot-1..3.
pub fn seed_bots() -> Vec<BotSpec> {
    let mut bots = Vec::new();
    for (platform, prefix) in [(Platform::Telegram, "tg"), (Platform::Discord, "dc")] {
        for (capability, kind) in [(Capability::Image, "image"), (Capability::Video, "video")] {
            for n in 1..=3u64 {
                let index = bots.len() as u64 + 1;
                let token = match platform {
                    Platform::Telegram => format!("{}00{index}:AAE-{prefix}-{kind}-{n}", 7_000_000),
                    _ => format!("MTAw.{prefix}-{kind}-{n}.secret"),
                };
                bots.push(BotSpec {
                    id: format!("{prefix}-{kind}-bot-{n}"),
                    platform,
                    capability,
                    token,
                    application_id: 1_000_000_000_000_000_000 + index,
                });
            }
        }
    }
    bots
}

pub struct Farm {
    pub app: TestApp,
    pub workers: Vec<tessera_worker::WorkerHandle>,
    pub tg: TelegramStandIn,
    pub dc: DiscordStandIn,
    pub dir: tempfile::TempDir,
    pub bots: Vec<BotSpec>,
    /// Frontend API keys by bot id.
    pub keys: HashMap<String, String>,
}

impl Farm {
    /// The scheduler, `workers` sim workers (image and video, `run_ms` a
    /// job), both stand-ins with the twelve bots known, and a key per bot.
    pub async fn new(backend: Backend, workers: usize, run_ms: u64) -> Farm {
        let app = TestApp::spawn_with(backend, |c| {
            c.workers.heartbeat_interval_ms = 500;
            c.workers.dispatch_tick_ms = 100;
        })
        .await;
        let mut handles = Vec::new();
        for i in 0..workers {
            handles.push(
                app.worker(
                    &format!("worker-gpu-{i}"),
                    vec![
                        sim(Capability::Image, &["sdxl-1.0"], run_ms),
                        sim(Capability::Video, &["wan-2.1"], run_ms),
                    ],
                )
                .await,
            );
        }
        let tg = TelegramStandIn::start().await;
        let dc = DiscordStandIn::start_with(DiscordOptions {
            heartbeat_interval: Duration::from_secs(5),
            // Many users, few routes: do not let the stand-in's per-route
            // limit stand for Discord's per-interaction ones.
            route_limit: 10_000,
            ..Default::default()
        })
        .await;
        let bots = seed_bots();
        let mut keys = HashMap::new();
        for b in &bots {
            match b.platform {
                Platform::Telegram => tg.add_bot(&b.token, &b.id.replace('-', "_")),
                _ => dc.add_bot(&b.token, b.application_id, &b.id),
            }
            keys.insert(b.id.clone(), app.key(b.platform, &b.id).await);
        }
        Farm {
            app,
            workers: handles,
            tg,
            dc,
            dir: tempfile::tempdir().unwrap(),
            bots,
            keys,
        }
    }

    pub fn bot(&self, id: &str) -> &BotSpec {
        self.bots.iter().find(|b| b.id == id).expect("a seed bot")
    }

    /// Writes a config file for these bots of one platform, with their
    /// secrets in files beside it; answers its path.
    pub fn config(&self, name: &str, bots: &[&BotSpec]) -> PathBuf {
        let platform = bots[0].platform;
        let mut text = match platform {
            Platform::Telegram => format!(
                "scheduler_url = {:?}\napi_url = {:?}\npoll_timeout_secs = 5\njob_poll_ms = 500\nmin_edit_ms = 1000\n",
                self.app.base_url(),
                self.tg.api_url()
            ),
            _ => format!(
                "scheduler_url = {:?}\napi_url = {:?}\ngateway_url = {:?}\njob_poll_ms = 500\nmin_edit_ms = 1000\n",
                self.app.base_url(),
                self.dc.base_url(),
                self.dc.gateway_url()
            ),
        };
        for b in bots {
            assert_eq!(b.platform, platform, "one platform per file");
            let token = self.dir.path().join(format!("{}.token", b.id));
            let key = self.dir.path().join(format!("{}.key", b.id));
            std::fs::write(&token, &b.token).unwrap();
            std::fs::write(&key, &self.keys[&b.id]).unwrap();
            text.push_str(&format!(
                "\n[[bots]]\nid = {:?}\ncapabilities = [{:?}]\ntoken_file = {:?}\napi_key_file = {:?}\n# Many users share few ids in a load test.\nlimits = {{ jobs_per_minute = 600, job_burst = 100, commands_per_minute = 600 }}\n",
                b.id,
                b.capability.as_str(),
                token.display().to_string(),
                key.display().to_string()
            ));
        }
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `tessera <args>`, its output in `<dir>/<log>.log`.
    pub fn spawn(&self, log: &str, args: &[&str]) -> tokio::process::Child {
        self.spawn_logging("info", log, args)
    }

    /// As [`Self::spawn`], logging at `level`.
    pub fn spawn_logging(&self, level: &str, log: &str, args: &[&str]) -> tokio::process::Child {
        let out = std::fs::File::create(self.dir.path().join(format!("{log}.log"))).unwrap();
        let err = out.try_clone().unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env_remove("RUST_LOG")
            .env("TESSERA_LOG", level)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("the tessera binary starts")
    }

    /// What a process wrote.
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{log}.log"))).unwrap_or_default()
    }
}

/// Memory of a process, KiB, from `/proc/<pid>/status` and `smaps_rollup`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Resident set now (`VmRSS`): pages shared with other processes count
    /// in full for each.
    pub rss: u64,
    /// Peak resident set (`VmHWM`).
    pub peak_rss: u64,
    /// Proportional set size: shared pages divided among their sharers, so
    /// the sum over processes is what they really occupy.
    pub pss: u64,
    /// Anonymous memory (heap, stacks): this process's own.
    pub anon: u64,
}

/// Reads a process's memory; `None` once it is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let proc = Path::new("/proc").join(pid.to_string());
    let status = std::fs::read_to_string(proc.join("status")).ok()?;
    let rollup = std::fs::read_to_string(proc.join("smaps_rollup")).unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Memory {
        rss: field(&status, "VmRSS:")?,
        peak_rss: field(&status, "VmHWM:")?,
        pss: field(&rollup, "Pss:").unwrap_or(0),
        anon: field(&rollup, "Anonymous:").unwrap_or(0),
    })
}

/// Sends SIGTERM, as a service manager would.
pub fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}
