//! `tessera simulate`: the scheduling simulator's command line.
//!
//! Replays one workload under each queue policy with
//! [`tessera_core::simulation`] (the scheduler's own policy code, in simulated
//! time), prints a Markdown report (a table per policy and the goals checked)
//! and can write it to a file and draw an SVG chart. With `--seeds N` it also
//! replays N different random draws of the same workload and counts how often
//! each goal holds, so one lucky draw cannot carry a conclusion.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use tessera_core::policy::{Policy, PolicyKind};
use tessera_core::simulation::{simulate, Outcome, Workload};

#[derive(Args)]
pub struct SimulateArgs {
    /// Simulated GPUs (workers), each able to run every model.
    #[arg(long, default_value_t = 4)]
    pub gpus: usize,
    /// Simulated hours.
    #[arg(long, default_value_t = 8.0)]
    pub hours: f64,
    /// Mean arrivals per hour (a Poisson process).
    #[arg(long, default_value_t = 340.0)]
    pub jobs_per_hour: f64,
    /// Models and their shares of arrivals, `name:share,...`.
    #[arg(
        long,
        default_value = "sdxl-1.0:0.4,flux-schnell:0.3,sd-1.5:0.2,playground-v2.5:0.1"
    )]
    pub models: String,
    /// Plans' shares of arrivals, FREE, STARTER, PRO, ADMIN.
    #[arg(long, default_value = "0.60,0.25,0.14,0.01")]
    pub plan_shares: String,
    /// Run time of a job, seconds, `min-max`.
    #[arg(long, default_value = "20-30")]
    pub run_secs: String,
    /// Loading a model not in memory, seconds, `min-max`.
    #[arg(long, default_value = "30-60")]
    pub load_secs: String,
    /// Starting a job on the loaded model, seconds, `min-max`.
    #[arg(long, default_value = "0-5")]
    pub warm_secs: String,
    /// Seed of the random draws.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Also replay this many seeds (from --seed on) and count the goals met.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Tessera's wait bound, seconds (queue.policy.max_wait_ms / 1000).
    #[arg(long)]
    pub max_wait_secs: Option<f64>,
    /// Tessera's affinity patience, seconds (queue.policy.affinity_patience_ms / 1000).
    #[arg(long)]
    pub patience_secs: Option<f64>,
    /// Write the Markdown report here too.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Draw an SVG chart here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

const POLICIES: [(PolicyKind, &str); 4] = [
    (PolicyKind::Fifo, "FIFO"),
    (PolicyKind::StrictPriority, "strict priority"),
    (PolicyKind::Seed, "seed's affinity rule"),
    (PolicyKind::Tessera, "Tessera"),
];

fn range(text: &str, what: &str) -> anyhow::Result<(f64, f64)> {
    let (lo, hi) = text
        .split_once('-')
        .with_context(|| format!("--{what} takes min-max seconds, not {text:?}"))?;
    let lo: f64 = lo
        .trim()
        .parse()
        .with_context(|| format!("--{what}: {lo:?}"))?;
    let hi: f64 = hi
        .trim()
        .parse()
        .with_context(|| format!("--{what}: {hi:?}"))?;
    anyhow::ensure!(0.0 <= lo && lo <= hi, "--{what}: need 0 <= min <= max");
    Ok((lo, hi))
}

fn workload(args: &SimulateArgs) -> anyhow::Result<Workload> {
    anyhow::ensure!(args.gpus > 0, "--gpus must be at least 1");
    anyhow::ensure!(args.hours > 0.0, "--hours must be positive");
    anyhow::ensure!(args.jobs_per_hour > 0.0, "--jobs-per-hour must be positive");
    let mut models = Vec::new();
    for part in args.models.split(',') {
        let (name, share) = part
            .split_once(':')
            .with_context(|| format!("--models takes name:share,..., not {part:?}"))?;
        let share: f64 = share
            .parse()
            .with_context(|| format!("--models: {part:?}"))?;
        anyhow::ensure!(share > 0.0, "--models: shares must be positive");
        models.push((name.trim().to_owned(), share));
    }
    let shares: Vec<f64> = args
        .plan_shares
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .context("--plan-shares takes four numbers")?;
    anyhow::ensure!(
        shares.len() == 4 && shares.iter().all(|s| *s >= 0.0) && shares.iter().sum::<f64>() > 0.0,
        "--plan-shares takes four shares (FREE, STARTER, PRO, ADMIN), not negative"
    );
    let mut w = Workload {
        gpus: args.gpus,
        hours: args.hours,
        jobs_per_hour: args.jobs_per_hour,
        models,
        run_secs: range(&args.run_secs, "run-secs")?,
        load_secs: range(&args.load_secs, "load-secs")?,
        warm_secs: range(&args.warm_secs, "warm-secs")?,
        seed: args.seed,
        ..Workload::default()
    };
    for (plan, share) in w.plans.iter_mut().zip(shares) {
        plan.2 = share;
    }
    Ok(w)
}

fn tessera_policy(args: &SimulateArgs) -> Policy {
    let mut p = Policy::default();
    if let Some(s) = args.max_wait_secs {
        p.max_wait_ms = (s * 1000.0) as i64;
    }
    if let Some(s) = args.patience_secs {
        p.affinity_patience_ms = (s * 1000.0) as i64;
    }
    p
}

/// The three goals, for one replay: throughput against FIFO, PRO's p95
/// against strict priority's, the longest wait against the policy's bound.
struct Goals {
    speedup: f64,
    pro_p95: (f64, f64),
    longest: (f64, f64),
}

impl Goals {
    fn of(outcomes: &[(PolicyKind, Outcome)], policy: &Policy) -> Goals {
        let get = |k: PolicyKind| &outcomes.iter().find(|(p, _)| *p == k).expect("run").1;
        let pro = |o: &Outcome| {
            o.waits
                .iter()
                .find(|w| w.plan == "pro")
                .map_or(0.0, |w| w.p95)
        };
        let (fifo, strict, tessera) = (
            get(PolicyKind::Fifo),
            get(PolicyKind::StrictPriority),
            get(PolicyKind::Tessera),
        );
        Goals {
            speedup: tessera.completed_per_gpu_hour
                / fifo.completed_per_gpu_hour.max(f64::MIN_POSITIVE),
            pro_p95: (pro(tessera), pro(strict)),
            longest: (
                tessera.longest_wait,
                2.0 * policy.max_wait_ms as f64 / 1000.0,
            ),
        }
    }

    fn met(&self) -> [bool; 3] {
        [
            self.speedup >= 1.3,
            self.pro_p95.0 <= self.pro_p95.1,
            self.longest.0 <= self.longest.1,
        ]
    }
}

fn replay(w: &Workload, tessera: Policy) -> Vec<(PolicyKind, Outcome)> {
    POLICIES
        .iter()
        .map(|(kind, _)| {
            let policy = if *kind == PolicyKind::Tessera {
                tessera
            } else {
                Policy {
                    kind: *kind,
                    ..tessera
                }
            };
            (*kind, simulate(w, policy))
        })
        .collect()
}

fn yes(b: bool) -> &'static str {
    if b {
        "met"
    } else {
        "**not met**"
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let w = workload(&args)?;
    let tessera = tessera_policy(&args);
    let outcomes = replay(&w, tessera);
    let goals = Goals::of(&outcomes, &tessera);

    let mut r = String::new();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let _ = writeln!(r, "## Scheduling simulation\n");
    let _ = writeln!(r, "- Command: `{command}`");
    let _ = writeln!(
        r,
        "- Workload: {} GPUs for {} h, {} jobs/h (Poisson), seed {}; models {}; plans FREE/STARTER/PRO/ADMIN {}; \
         run {}-{} s, model load {}-{} s, warm start {}-{} s; one model in memory per GPU.",
        w.gpus, w.hours, w.jobs_per_hour, w.seed, args.models, args.plan_shares,
        w.run_secs.0, w.run_secs.1, w.load_secs.0, w.load_secs.1, w.warm_secs.0, w.warm_secs.1
    );
    let _ = writeln!(
        r,
        "- Tessera's policy: wait bound {} s (strictly oldest first past {} s), affinity patience {} s.",
        tessera.max_wait_ms / 1000,
        2 * tessera.max_wait_ms / 1000,
        tessera.affinity_patience_ms as f64 / 1000.0
    );
    let _ = writeln!(
        r,
        "- Waits run from queued to started; jobs still queued at the end count with the age they reached.\n"
    );
    let _ = writeln!(
        r,
        "| policy | completed | per GPU-hour | vs FIFO | GPU time loading | loads | FREE wait p50/p95/p99 s | STARTER | PRO | ADMIN | longest wait s | queued at end |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let fifo = outcomes[0].1.completed_per_gpu_hour;
    for ((_, name), (_, o)) in POLICIES.iter().zip(&outcomes) {
        let waits: Vec<String> = o
            .waits
            .iter()
            .map(|p| format!("{:.0} / {:.0} / {:.0}", p.p50, p.p95, p.p99))
            .collect();
        let _ = writeln!(
            r,
            "| {name} | {} of {} | {:.1} | {:.2}x | {:.0} % | {} | {} | {:.0} | {} |",
            o.completed,
            o.arrived,
            o.completed_per_gpu_hour,
            o.completed_per_gpu_hour / fifo,
            o.load_share * 100.0,
            o.model_loads,
            waits.join(" | "),
            o.longest_wait,
            o.queued_at_end
        );
    }
    let met = goals.met();
    let _ = writeln!(r, "\nGoals:\n");
    let _ = writeln!(
        r,
        "- Tessera completes at least 30 % more jobs per GPU-hour than FIFO: {:.2}x, {}.",
        goals.speedup,
        yes(met[0])
    );
    let _ = writeln!(
        r,
        "- PRO's p95 wait no worse than strict priority's: {:.0} s against {:.0} s, {}.",
        goals.pro_p95.0,
        goals.pro_p95.1,
        yes(met[1])
    );
    let _ = writeln!(
        r,
        "- No job waits more than the bound (twice the wait bound): longest {:.0} s against {:.0} s, {}.",
        goals.longest.0,
        goals.longest.1,
        yes(met[2])
    );
    if args.seeds > 1 {
        let mut counts = [0u64; 3];
        let mut speedups = Vec::new();
        for seed in args.seed..args.seed + args.seeds {
            let ws = Workload { seed, ..w.clone() };
            let g = Goals::of(&replay(&ws, tessera), &tessera);
            speedups.push(g.speedup);
            for (c, m) in counts.iter_mut().zip(g.met()) {
                *c += u64::from(m);
            }
        }
        speedups.sort_by(f64::total_cmp);
        let _ = writeln!(
            r,
            "\nOver {} seeds ({}..{}): throughput goal met {} times (speedup {:.2}x to {:.2}x), \
             PRO goal {} times, wait bound {} times.",
            args.seeds,
            args.seed,
            args.seed + args.seeds - 1,
            counts[0],
            speedups.first().copied().unwrap_or(0.0),
            speedups.last().copied().unwrap_or(0.0),
            counts[1],
            counts[2]
        );
    }
    print!("{r}");
    if let Some(path) = &args.report {
        std::fs::write(path, &r).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, svg(&outcomes))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Two bar charts side by side: jobs per GPU-hour, and waits (PRO p95 and
/// the longest wait) on a logarithmic scale.
fn svg(outcomes: &[(PolicyKind, Outcome)]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 360.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 290.0;
    let colors = ["#8c8c8c", "#4c78a8", "#f58518", "#54a24b"];
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
"#
    );
    // Panel 1: throughput.
    let max_tp = outcomes
        .iter()
        .map(|(_, o)| o.completed_per_gpu_hour)
        .fold(1.0, f64::max)
        * 1.15;
    let _ = writeln!(
        s,
        r#"<text x="40" y="25" font-size="14" font-weight="bold">Completed jobs per GPU-hour</text>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="40" y1="{BOTTOM}" x2="420" y2="{BOTTOM}" stroke="black"/>"#
    );
    for (i, ((_, name), (_, o))) in POLICIES.iter().zip(outcomes).enumerate() {
        let x = 60.0 + i as f64 * 90.0;
        let h = (BOTTOM - TOP) * o.completed_per_gpu_hour / max_tp;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{:.1}" width="60" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{:.1}</text><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            BOTTOM - h,
            colors[i],
            x + 30.0,
            BOTTOM - h - 5.0,
            o.completed_per_gpu_hour,
            x + 30.0,
            BOTTOM + 18.0,
            short(name)
        );
    }
    // Panel 2: waits, log scale from 10 s to the largest.
    let waits: Vec<(f64, f64)> = outcomes
        .iter()
        .map(|(_, o)| {
            let pro = o
                .waits
                .iter()
                .find(|w| w.plan == "pro")
                .map_or(0.0, |w| w.p95);
            (pro.max(1.0), o.longest_wait.max(1.0))
        })
        .collect();
    let max_w = waits.iter().map(|w| w.1).fold(10.0, f64::max) * 1.5;
    let (lo, hi) = (1.0f64.ln(), max_w.ln());
    let y = |v: f64| BOTTOM - (BOTTOM - TOP) * (v.ln() - lo) / (hi - lo);
    let _ = writeln!(
        s,
        r#"<text x="480" y="25" font-size="14" font-weight="bold">Waits, seconds (log scale): PRO p95 and longest</text>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="480" y1="{BOTTOM}" x2="880" y2="{BOTTOM}" stroke="black"/>"#
    );
    let mut tick = 1.0;
    while tick <= max_w {
        let _ = writeln!(
            s,
            r##"<line x1="475" y1="{0:.1}" x2="880" y2="{0:.1}" stroke="#e0e0e0"/><text x="470" y="{1:.1}" text-anchor="end">{2}</text>"##,
            y(tick),
            y(tick) + 4.0,
            tick
        );
        tick *= 10.0;
    }
    for (i, ((_, name), (pro, longest))) in POLICIES.iter().zip(&waits).enumerate() {
        let x = 500.0 + i as f64 * 95.0;
        for (j, v) in [pro, longest].into_iter().enumerate() {
            let bx = x + j as f64 * 34.0;
            let opacity = if j == 0 { "1" } else { "0.45" };
            let _ = writeln!(
                s,
                r#"<rect x="{bx}" y="{:.1}" width="30" height="{:.1}" fill="{}" fill-opacity="{opacity}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{:.0}</text>"#,
                y(*v),
                BOTTOM - y(*v),
                colors[i],
                bx + 15.0,
                y(*v) - 4.0,
                v
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x + 32.0,
            BOTTOM + 18.0,
            short(name)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="480" y="{}" font-size="11">solid: PRO p95 wait; pale: longest wait of any job</text>"#,
        BOTTOM + 45.0
    );
    s.push_str("</svg>\n");
    s
}

fn short(name: &str) -> &str {
    match name {
        "strict priority" => "strict",
        "seed's affinity rule" => "seed rule",
        other => other,
    }
}
