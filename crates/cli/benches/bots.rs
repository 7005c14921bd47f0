//! Memory of the seed's twelve bot instances under load: all twelve in one
//! `tessera bots` process, then as twelve `tessera telegram|discord`
//! processes, each time with many users asking for images and videos at once
//! while the scheduler and `sim` workers run in this process and the
//! platforms are loopback stand-ins.
//!
//! `cargo bench -p tessera-cli --bench bots -- [--users N] [--run-ms MS]
//! [--report PATH]`; `scripts/bench bots` runs it. Users are per bot.

#[path = "../tests/common/farm.rs"]
mod farm;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_core::Platform;
use tessera_testkit::standins::discord::SentInteraction;
use tessera_testkit::standins::telegram::MessageKind;
use tessera_testkit::Backend;

use farm::{memory, terminate, BotSpec, Farm, Memory};

struct Args {
    users: usize,
    run_ms: u64,
    workers: usize,
    report: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        users: 100,
        run_ms: 50,
        workers: 4,
        report: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--users" => a.users = it.next().and_then(|v| v.parse().ok()).expect("--users N"),
            "--run-ms" => a.run_ms = it.next().and_then(|v| v.parse().ok()).expect("--run-ms MS"),
            "--workers" => a.workers = it.next().and_then(|v| v.parse().ok()).expect("--workers N"),
            "--report" => a.report = it.next(),
            // cargo bench passes --bench; other harness flags mean nothing here.
            _ => {}
        }
    }
    a
}

/// One measured layout.
struct Outcome {
    layout: &'static str,
    processes: usize,
    jobs: usize,
    delivered: usize,
    seconds: f64,
    /// Per process: when idle before the load, and the peaks during it
    /// (`peak_rss` from the kernel; `pss` and `anon` the largest sampled).
    memory: Vec<(Memory, Memory)>,
}

impl Outcome {
    /// MiB per instance of a figure summed over the processes.
    fn per_instance(&self, figure: impl Fn(&(Memory, Memory)) -> u64) -> f64 {
        self.memory.iter().map(figure).sum::<u64>() as f64 / 1024.0 / 12.0
    }
    fn largest_process_mib(&self) -> f64 {
        self.memory.iter().map(|m| m.1.peak_rss).max().unwrap_or(0) as f64 / 1024.0
    }
}

/// Raises `peak` to what `pid` uses now.
fn sample(pid: u32, peak: &mut Memory) {
    if let Some(m) = memory(pid) {
        peak.peak_rss = peak.peak_rss.max(m.peak_rss);
        peak.pss = peak.pss.max(m.pss);
        peak.anon = peak.anon.max(m.anon);
    }
}

/// Outputs delivered so far: files sent on Telegram, follow-ups with files on
/// Discord.
fn delivered(farm: &Farm, interactions: &[SentInteraction]) -> usize {
    let tg: usize = farm
        .bots
        .iter()
        .filter(|b| b.platform == Platform::Telegram)
        .map(|b| {
            farm.tg
                .sent(&b.token)
                .iter()
                .filter(|m| m.kind != MessageKind::Text)
                .count()
        })
        .sum();
    let dc = interactions
        .iter()
        .filter(|i| {
            farm.dc
                .interaction(i.id)
                .is_some_and(|r| r.followups.iter().any(|m| !m.attachments.is_empty()))
        })
        .count();
    tg + dc
}

async fn measure(
    farm: &Farm,
    layout: &'static str,
    processes: Vec<tokio::process::Child>,
    users: usize,
    round: u64,
) -> Outcome {
    let pids: Vec<u32> = processes.iter().filter_map(|p| p.id()).collect();
    // Ready: every Discord bot on the gateway, every Telegram bot polling.
    for b in &farm.bots {
        let ready = match b.platform {
            Platform::Telegram => {
                farm.tg
                    .wait_calls(&b.token, "getUpdates", 1, Duration::from_secs(60))
                    .await
            }
            _ => {
                farm.dc
                    .wait_connected(&b.token, Duration::from_secs(60))
                    .await
            }
        };
        assert!(ready, "{} did not start", b.id);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: Vec<Memory> = pids
        .iter()
        .map(|p| memory(*p).unwrap_or_default())
        .collect();
    let before = delivered(farm, &[]);
    let started = Instant::now();
    let mut interactions = Vec::new();
    let bots: Vec<&BotSpec> = farm.bots.iter().collect();
    for u in 0..users {
        for (i, b) in bots.iter().enumerate() {
            // Distinct users per round, bot and index.
            let user = round * 1_000_000 + (i as u64) * 10_000 + u as u64 + 1;
            let prompt = format!("test pattern {u}");
            match b.platform {
                Platform::Telegram => {
                    farm.tg.user_text(
                        &b.token,
                        user as i64,
                        user as i64,
                        &format!("/{} {prompt}", b.command()),
                    );
                }
                _ => interactions.push(farm.dc.slash(
                    &b.token,
                    5_000_000 + user,
                    user,
                    b.command(),
                    json!({"prompt": prompt}),
                )),
            }
        }
    }
    let jobs = users * bots.len();
    let mut peak = vec![Memory::default(); pids.len()];
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        for (p, pid) in pids.iter().enumerate() {
            sample(*pid, &mut peak[p]);
        }
        let done = delivered(farm, &interactions) - before;
        if done >= jobs || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = delivered(farm, &interactions) - before;
    for (p, pid) in pids.iter().enumerate() {
        sample(*pid, &mut peak[p]);
    }
    for mut p in processes {
        terminate(&p);
        let _ = tokio::time::timeout(Duration::from_secs(30), p.wait()).await;
        let _ = p.kill().await;
    }
    Outcome {
        layout,
        processes: pids.len(),
        jobs,
        delivered: done,
        seconds,
        memory: idle.into_iter().zip(peak).collect(),
    }
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let farm = Farm::new(Backend::Sqlite, args.workers, args.run_ms).await;
        let telegram: Vec<&BotSpec> = farm
            .bots
            .iter()
            .filter(|b| b.platform == Platform::Telegram)
            .collect();
        let discord: Vec<&BotSpec> = farm
            .bots
            .iter()
            .filter(|b| b.platform == Platform::Discord)
            .collect();
        let tg = farm.config("telegram.toml", &telegram);
        let dc = farm.config("discord.toml", &discord);
        let one = farm.spawn(
            "one-process",
            &[
                "--log",
                "warn",
                "bots",
                "--telegram",
                tg.to_str().unwrap(),
                "--discord",
                dc.to_str().unwrap(),
            ],
        );
        eprintln!(
            "twelve instances in one process, {} users each...",
            args.users
        );
        let a = measure(
            &farm,
            "one `tessera bots` process",
            vec![one],
            args.users,
            1,
        )
        .await;

        let mut separate = Vec::new();
        for b in &farm.bots {
            let path = farm.config(&format!("{}.toml", b.id), &[b]);
            let sub = match b.platform {
                Platform::Telegram => "telegram",
                _ => "discord",
            };
            separate.push(farm.spawn(
                &b.id,
                &["--log", "warn", sub, "--config", path.to_str().unwrap()],
            ));
        }
        eprintln!("twelve processes, {} users each...", args.users);
        let b = measure(&farm, "twelve processes", separate, args.users, 2).await;

        for o in [&a, &b] {
            assert_eq!(
                o.delivered, o.jobs,
                "{}: not every job was delivered; the figures would mislead",
                o.layout
            );
        }
        let report = report(&args, &[a, b]);
        println!("{report}");
        if let Some(path) = &args.report {
            // cargo runs benchmarks in the package's folder; a relative path
            // means the workspace's.
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let path = root.join(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::write(&path, &report).expect("writing the report");
        }
    });
}

fn report(args: &Args, outcomes: &[Outcome]) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut r = String::new();
    let _ = writeln!(r, "# Bots benchmark: twelve instances under load\n");
    let _ = writeln!(
        r,
        "How it was run: `cargo bench -p tessera-cli --bench bots -- --users {} --run-ms {} --workers {}` \
         (release build) on {cores} cores. The scheduler (SQLite) and {} `sim` workers ({} ms a job) run \
         in the benchmark's process with loopback stand-ins of Telegram and Discord; the bots are real \
         `tessera` processes. {} users per bot each ask for one image or video at once (the seed's six \
         image and six video bots), so every instance follows {} jobs to delivery.\n",
        args.users, args.run_ms, args.workers, args.workers, args.run_ms, args.users, args.users
    );
    let _ = writeln!(
        r,
        "Memory is read from /proc, summed over the processes and divided by twelve: RSS counts \
         pages shared between processes (the binary's code) in full for each, PSS divides them \
         among their sharers, so PSS is what twelve processes really occupy; anonymous memory \
         (heap and stacks) is each process's own. Peak RSS is the kernel's high-water mark; peak \
         PSS and anonymous memory are the largest of samples taken every 250 ms.\n"
    );
    let _ = writeln!(
        r,
        "| layout | processes | jobs | delivered | seconds | idle RSS | idle PSS | peak RSS | peak PSS | peak anonymous | largest process (peak RSS) |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {:.1} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            o.layout,
            o.processes,
            o.jobs,
            o.delivered,
            o.seconds,
            o.per_instance(|m| m.0.rss),
            o.per_instance(|m| m.0.pss),
            o.per_instance(|m| m.1.peak_rss),
            o.per_instance(|m| m.1.pss),
            o.per_instance(|m| m.1.anon),
            o.largest_process_mib()
        );
    }
    let _ = writeln!(
        r,
        "\nFigures are per instance. Target: under 20 MB resident per instance."
    );
    r
}
