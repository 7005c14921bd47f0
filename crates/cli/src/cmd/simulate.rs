//! `tessera simulate`: the scheduling simulator's command line.
//!
//! Replays one workload under each queue policy with
//! [`tessera_core::simulation`] (the scheduler's own policy code, in simulated
//! time), prints a Markdown report (a table per policy and the goals checked)
//! and can write it to a file and draw an SVG chart. With `--seeds N` it also
//! replays N different random draws of the same workload and counts how often
//! each goal holds, so one lucky draw cannot carry a conclusion. With
//! `--goals` it runs the overload goals instead: 1x, 1.5x and 2x capacity,
//! each with and without a flooding user, over `--seeds` seeds, and writes
//! their report and chart.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use tessera_core::policy::{Policy, PolicyKind};
use tessera_core::simulation::{simulate, simulate_admitted, Admission, Flood, Outcome, Workload};

#[derive(Args)]
pub struct SimulateArgs {
    /// Run the issue's goals instead: 1x, 1.5x and 2x capacity, with and
    /// without a flooding user, over --seeds seeds (at least 12 advised).
    #[arg(long)]
    pub goals: bool,
    /// Arrivals as a multiple of capacity (overrides --jobs-per-hour):
    /// capacity = gpus x 3600 / (mean run + mean warm start + (1 - sum of
    /// model shares squared) x mean load).
    #[arg(long)]
    pub load: Option<f64>,
    /// Users per plan, FREE, STARTER, PRO, ADMIN.
    #[arg(long, default_value = "200,60,30,3")]
    pub users: String,
    /// Skew of a plan's arrivals over its users: user i weighs 1/(i+1)^skew.
    #[arg(long, default_value_t = 0.5)]
    pub user_skew: f64,
    /// The plan of one flooding user (free, starter, pro or admin).
    #[arg(long)]
    pub flood_plan: Option<String>,
    /// The flooding user's arrivals per hour.
    #[arg(long, default_value_t = 600.0)]
    pub flood_jobs_per_hour: f64,
    /// GPU memory of each GPU, GiB.
    #[arg(long, default_value_t = 16.0)]
    pub gpu_gib: f64,
    /// Models' footprints in GPU memory, `name:GiB,...` (others 7 GiB).
    #[arg(
        long,
        default_value = "sdxl-1.0:7,flux-schnell:12,sd-1.5:3,playground-v2.5:7"
    )]
    pub footprints: String,
    /// Admission bounds on a new job's expected wait per plan, seconds,
    /// FREE, STARTER, PRO, ADMIN (default: 1/9, 2/9, 4/9 and all of the
    /// policy's wait bound).
    #[arg(long)]
    pub admission_secs: Option<String>,
    /// Caps on one user's queued jobs per plan, FREE, STARTER, PRO, ADMIN
    /// (0: none).
    #[arg(long, default_value = "2,8,16,0")]
    pub max_queued_per_user: String,
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
    /// How long Tessera leaves a job whose model another GPU holds for that
    /// GPU, seconds (queue.policy.locality_wait_ms / 1000; 0: off).
    #[arg(long)]
    pub locality_wait_secs: Option<f64>,
    /// Write the Markdown report here too.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Draw an SVG chart here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// The policies compared, and whether admission control applies.
const POLICIES: [(PolicyKind, bool, &str); 5] = [
    (PolicyKind::Fifo, false, "FIFO"),
    (PolicyKind::StrictPriority, false, "strict priority"),
    (PolicyKind::Seed, false, "seed's affinity rule"),
    (PolicyKind::Tessera, false, "Tessera"),
    (PolicyKind::Tessera, true, "Tessera + admission"),
];

/// Index of "Tessera + admission" in [`POLICIES`].
const ADMITTED: usize = 4;
const PLANS: [&str; 4] = ["free", "starter", "pro", "admin"];

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

fn pairs(text: &str, what: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let (name, value) = part
            .split_once(':')
            .with_context(|| format!("--{what} takes name:number,..., not {part:?}"))?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("--{what}: {part:?}"))?;
        anyhow::ensure!(value > 0.0, "--{what}: numbers must be positive");
        out.push((name.trim().to_owned(), value));
    }
    Ok(out)
}

/// Four numbers, one per plan.
fn four<T: std::str::FromStr>(text: &str, what: &str) -> anyhow::Result<Vec<T>> {
    let v: Vec<T> = text
        .split(',')
        .map(|s| s.trim().parse::<T>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--{what} takes four numbers (FREE, STARTER, PRO, ADMIN)"))?;
    anyhow::ensure!(
        v.len() == 4,
        "--{what} takes four numbers (FREE, STARTER, PRO, ADMIN)"
    );
    Ok(v)
}

fn workload(args: &SimulateArgs) -> anyhow::Result<Workload> {
    anyhow::ensure!(args.gpus > 0, "--gpus must be at least 1");
    anyhow::ensure!(args.hours > 0.0, "--hours must be positive");
    anyhow::ensure!(args.jobs_per_hour > 0.0, "--jobs-per-hour must be positive");
    anyhow::ensure!(args.gpu_gib > 0.0, "--gpu-gib must be positive");
    let models = pairs(&args.models, "models")?;
    let shares: Vec<f64> = four(&args.plan_shares, "plan-shares")?;
    anyhow::ensure!(
        shares.iter().all(|s| *s >= 0.0) && shares.iter().sum::<f64>() > 0.0,
        "--plan-shares takes four shares (FREE, STARTER, PRO, ADMIN), not negative"
    );
    let mut w = Workload {
        gpus: args.gpus,
        hours: args.hours,
        jobs_per_hour: args.jobs_per_hour,
        models,
        users: four(&args.users, "users")?,
        user_skew: args.user_skew,
        gpu_gib: args.gpu_gib,
        footprints_gib: pairs(&args.footprints, "footprints")?,
        run_secs: range(&args.run_secs, "run-secs")?,
        load_secs: range(&args.load_secs, "load-secs")?,
        warm_secs: range(&args.warm_secs, "warm-secs")?,
        seed: args.seed,
        ..Workload::default()
    };
    for (plan, share) in w.plans.iter_mut().zip(shares) {
        plan.2 = share;
    }
    if let Some(load) = args.load {
        anyhow::ensure!(load > 0.0, "--load must be positive");
        w.jobs_per_hour = load * w.capacity_per_hour();
    }
    if let Some(plan) = &args.flood_plan {
        let plan = PLANS
            .iter()
            .position(|p| p == plan)
            .with_context(|| format!("--flood-plan: one of {PLANS:?}, not {plan:?}"))?;
        w.flood = Some(Flood {
            plan,
            jobs_per_hour: args.flood_jobs_per_hour,
        });
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
    if let Some(s) = args.locality_wait_secs {
        p.locality_wait_ms = (s * 1000.0) as i64;
    }
    p
}

fn admission(args: &SimulateArgs, w: &Workload, policy: &Policy) -> anyhow::Result<Admission> {
    let mut a = Admission::relative_to(w, policy);
    if let Some(secs) = &args.admission_secs {
        let secs: Vec<f64> = four(secs, "admission-secs")?;
        a.bounds_ms = secs.iter().map(|s| (s * 1000.0) as i64).collect();
    }
    let caps: Vec<u32> = four(&args.max_queued_per_user, "max-queued-per-user")?;
    a.caps = caps.into_iter().map(|c| (c > 0).then_some(c)).collect();
    Ok(a)
}

/// The three goals of a single run, for one replay: throughput against
/// FIFO, PRO's p95 against strict priority's, the longest wait against the
/// policy's bound (Tessera without admission, as before).
struct Goals {
    speedup: f64,
    pro_p95: (f64, f64),
    longest: (f64, f64),
}

fn pro(o: &Outcome) -> f64 {
    o.waits
        .iter()
        .find(|w| w.plan == "pro")
        .map_or(0.0, |w| w.p95)
}

impl Goals {
    fn of(outcomes: &[Outcome], policy: &Policy) -> Goals {
        let (fifo, strict, tessera) = (&outcomes[0], &outcomes[1], &outcomes[3]);
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

fn replay(w: &Workload, tessera: Policy, admission: &Admission) -> Vec<Outcome> {
    POLICIES
        .iter()
        .map(|(kind, admitted, _)| {
            let policy = Policy {
                kind: *kind,
                ..tessera
            };
            if *admitted {
                simulate_admitted(w, policy, admission)
            } else {
                simulate(w, policy)
            }
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

fn describe(r: &mut String, args: &SimulateArgs, w: &Workload, tessera: &Policy, a: &Admission) {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let _ = writeln!(r, "- Command: `{command}`");
    let _ = writeln!(
        r,
        "- Workload: {} GPUs for {} h, {:.0} jobs/h (Poisson; capacity {:.0} jobs/h), seed {}; models {}; plans FREE/STARTER/PRO/ADMIN {} \
         with {} users (skew {}); run {}-{} s, model load {}-{} s, warm start {}-{} s; {} GiB per GPU, footprints {} GiB, least recently used evicted.",
        w.gpus, w.hours, w.jobs_per_hour, w.capacity_per_hour(), w.seed, args.models, args.plan_shares,
        args.users, w.user_skew,
        w.run_secs.0, w.run_secs.1, w.load_secs.0, w.load_secs.1, w.warm_secs.0, w.warm_secs.1,
        w.gpu_gib, args.footprints
    );
    if let Some(f) = &w.flood {
        let _ = writeln!(
            r,
            "- A flooding {} user submits {} jobs/h besides.",
            PLANS[f.plan].to_ascii_uppercase(),
            f.jobs_per_hour
        );
    }
    let _ = writeln!(
        r,
        "- Tessera's policy: wait bound {} s (strictly oldest first past {} s), affinity patience {} s, locality wait {} s (a job whose model another GPU holds is left to it that long); fair tags per plan, every job costing 1.",
        tessera.max_wait_ms / 1000,
        2 * tessera.max_wait_ms / 1000,
        tessera.affinity_patience_ms as f64 / 1000.0,
        tessera.locality_wait_ms as f64 / 1000.0
    );
    let caps: Vec<String> = a
        .caps
        .iter()
        .map(|c| c.map_or("none".into(), |c| c.to_string()))
        .collect();
    let _ = writeln!(
        r,
        "- Admission (Tessera + admission only): expected-wait bounds FREE/STARTER/PRO/ADMIN {} s, queued jobs per user {}; the other rows admit every job.",
        a.bounds_ms
            .iter()
            .map(|b| (b / 1000).to_string())
            .collect::<Vec<_>>()
            .join("/"),
        caps.join("/")
    );
    let _ = writeln!(
        r,
        "- Waits run from queued to started; jobs still queued at the end count with the age they reached. \
         Jain's index is over each user's started jobs against their max-min fair share of the plan's; \
         the estimate error is |estimated − actual wait| / max(actual wait, mean run time), median and p90.\n"
    );
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.goals {
        return goals(&args);
    }
    let w = workload(&args)?;
    let tessera = tessera_policy(&args);
    let a = admission(&args, &w, &tessera)?;
    let outcomes = replay(&w, tessera, &a);
    let goals = Goals::of(&outcomes, &tessera);

    let mut r = String::new();
    let _ = writeln!(r, "## Scheduling simulation\n");
    describe(&mut r, &args, &w, &tessera, &a);
    let _ = writeln!(
        r,
        "| policy | completed | per GPU-hour | vs FIFO | GPU time loading | loads | FREE wait p50/p95/p99 s | STARTER | PRO | ADMIN | longest wait s | queued at end | refused FREE/STARTER/PRO/ADMIN | Jain FREE/STARTER/PRO/ADMIN | estimate error median/p90 |"
    );
    let _ = writeln!(
        r,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let fifo = outcomes[0].completed_per_gpu_hour;
    for ((_, _, name), o) in POLICIES.iter().zip(&outcomes) {
        let waits: Vec<String> = o
            .waits
            .iter()
            .map(|p| format!("{:.0} / {:.0} / {:.0}", p.p50, p.p95, p.p99))
            .collect();
        let refused: Vec<String> = o.waits.iter().map(|p| p.refused.to_string()).collect();
        let jain: Vec<String> = o.waits.iter().map(|p| format!("{:.2}", p.jain)).collect();
        let _ = writeln!(
            r,
            "| {name} | {} of {} | {:.1} | {:.2}x | {:.0} % | {} | {} | {:.0} | {} | {} | {} | {:.2} / {:.2} |",
            o.completed,
            o.arrived,
            o.completed_per_gpu_hour,
            o.completed_per_gpu_hour / fifo,
            o.load_share * 100.0,
            o.model_loads,
            waits.join(" | "),
            o.longest_wait,
            o.queued_at_end,
            refused.join(" / "),
            jain.join(" / "),
            o.eta.median,
            o.eta.p90
        );
    }
    if let Some(f) = &w.flood {
        let _ = writeln!(r, "\nThe flooding user and the others of their plan:\n");
        let _ = writeln!(
            r,
            "| policy | flooder's jobs | refused | started | flooder's p95 wait s | other users' p95 wait s |"
        );
        let _ = writeln!(r, "|---|---|---|---|---|---|");
        for ((_, _, name), o) in POLICIES.iter().zip(&outcomes) {
            if let Some(fl) = &o.flooder {
                let _ = writeln!(
                    r,
                    "| {name} | {} | {} | {} | {:.0} | {:.0} |",
                    fl.arrived, fl.refused, fl.started, fl.p95, o.waits[f.plan].regular_p95
                );
            }
        }
    }
    let met = goals.met();
    let _ = writeln!(
        r,
        "\nGoals (Tessera without admission, as before admission existed):\n"
    );
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
            let g = Goals::of(&replay(&ws, tessera, &a), &tessera);
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
fn svg(outcomes: &[Outcome]) -> String {
    const W: f64 = 1040.0;
    const H: f64 = 360.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 290.0;
    let colors = COLORS;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
"#
    );
    // Panel 1: throughput.
    let max_tp = outcomes
        .iter()
        .map(|o| o.completed_per_gpu_hour)
        .fold(1.0, f64::max)
        * 1.15;
    let _ = writeln!(
        s,
        r#"<text x="40" y="25" font-size="14" font-weight="bold">Completed jobs per GPU-hour</text>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="40" y1="{BOTTOM}" x2="440" y2="{BOTTOM}" stroke="black"/>"#
    );
    for (i, ((_, _, name), o)) in POLICIES.iter().zip(outcomes).enumerate() {
        let x = 55.0 + i as f64 * 77.0;
        let h = (BOTTOM - TOP) * o.completed_per_gpu_hour / max_tp;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{:.1}" width="56" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{:.1}</text><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            BOTTOM - h,
            colors[i],
            x + 28.0,
            BOTTOM - h - 5.0,
            o.completed_per_gpu_hour,
            x + 28.0,
            BOTTOM + 18.0,
            short(name)
        );
    }
    // Panel 2: waits, log scale from 10 s to the largest.
    let waits: Vec<(f64, f64)> = outcomes
        .iter()
        .map(|o| (pro(o).max(1.0), o.longest_wait.max(1.0)))
        .collect();
    let max_w = waits.iter().map(|w| w.1).fold(10.0, f64::max) * 1.5;
    let (lo, hi) = (1.0f64.ln(), max_w.ln());
    let y = |v: f64| BOTTOM - (BOTTOM - TOP) * (v.ln() - lo) / (hi - lo);
    let _ = writeln!(
        s,
        r#"<text x="500" y="25" font-size="14" font-weight="bold">Waits, seconds (log scale): PRO p95 and longest</text>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="500" y1="{BOTTOM}" x2="1020" y2="{BOTTOM}" stroke="black"/>"#
    );
    let mut tick = 1.0;
    while tick <= max_w {
        let _ = writeln!(
            s,
            r##"<line x1="495" y1="{0:.1}" x2="1020" y2="{0:.1}" stroke="#e0e0e0"/><text x="490" y="{1:.1}" text-anchor="end">{2}</text>"##,
            y(tick),
            y(tick) + 4.0,
            tick
        );
        tick *= 10.0;
    }
    for (i, ((_, _, name), (pro, longest))) in POLICIES.iter().zip(&waits).enumerate() {
        let x = 515.0 + i as f64 * 100.0;
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
        r#"<text x="500" y="{}" font-size="11">solid: PRO p95 wait; pale: longest wait of any job</text>"#,
        BOTTOM + 45.0
    );
    s.push_str("</svg>\n");
    s
}

const COLORS: [&str; 5] = ["#8c8c8c", "#4c78a8", "#f58518", "#54a24b", "#b279a2"];

fn short(name: &str) -> &str {
    match name {
        "strict priority" => "strict",
        "seed's affinity rule" => "seed rule",
        "Tessera + admission" => "+admission",
        other => other,
    }
}

/// One seed's flood comparison: the others' p95 without and with the flood,
/// how far it moved (%), the flooder's started jobs and p95, the plan's
/// Jain index with the flood, the others' refusals with it.
type FloodRow = (f64, f64, f64, f64, f64, f64, f64);

/// The loads the goals are run at, as multiples of capacity.
const LOADS: [f64; 3] = [1.0, 1.5, 2.0];

/// One seed at one load: every policy without the flood, and FIFO and
/// Tessera + admission with it.
struct Run {
    plain: Vec<Outcome>,
    fifo_flood: Outcome,
    admitted_flood: Outcome,
}

impl Run {
    fn admitted(&self) -> &Outcome {
        &self.plain[ADMITTED]
    }

    /// Tessera + admission had more work than it could take: it refused
    /// or left queued at the end more than 5 % of the arrivals (a burst's
    /// few refusals at light load are not a backlog: there throughput is
    /// what arrives, for every policy that keeps up).
    fn backlog(&self) -> bool {
        let o = self.admitted();
        (o.refused + o.queued_at_end) as f64 > 0.05 * o.arrived as f64
    }
}

/// How much the flood moved the other users' p95 wait of its plan, as a
/// fraction of the p95 without it.
fn moved(plain: &Outcome, flood: &Outcome, plan: usize) -> f64 {
    let before = plain.waits[plan].regular_p95;
    let after = flood.waits[plan].regular_p95;
    (after - before) / before.max(1.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn spread(v: &[f64], digits: usize) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let (lo, hi) = (
        s.first().copied().unwrap_or(0.0),
        s.last().copied().unwrap_or(0.0),
    );
    format!(
        "{:.d$} ({:.d$}–{:.d$})",
        median(s.clone()),
        lo,
        hi,
        d = digits
    )
}

fn goals(args: &SimulateArgs) -> anyhow::Result<()> {
    let base = workload(args)?;
    let tessera = tessera_policy(args);
    let flood_plan = match &args.flood_plan {
        Some(_) => base.flood.as_ref().map_or(0, |f| f.plan),
        None => 0,
    };
    let base = Workload {
        flood: None,
        ..base
    };
    let a = admission(args, &base, &tessera)?;
    let seeds: Vec<u64> = (args.seed..args.seed + args.seeds.max(1)).collect();
    // runs[load][seed]
    let runs: Vec<Vec<Run>> = LOADS
        .iter()
        .map(|load| {
            seeds
                .iter()
                .map(|&seed| {
                    let w = Workload {
                        seed,
                        jobs_per_hour: load * base.capacity_per_hour(),
                        ..base.clone()
                    };
                    let flooded = Workload {
                        flood: Some(Flood {
                            plan: flood_plan,
                            jobs_per_hour: args.flood_jobs_per_hour,
                        }),
                        ..w.clone()
                    };
                    Run {
                        plain: replay(&w, tessera, &a),
                        fifo_flood: simulate(
                            &flooded,
                            Policy {
                                kind: PolicyKind::Fifo,
                                ..tessera
                            },
                        ),
                        admitted_flood: simulate_admitted(&flooded, tessera, &a),
                    }
                })
                .collect()
        })
        .collect();

    let mut r = String::new();
    let _ = writeln!(r, "## Overload goals\n");
    let shown = Workload {
        jobs_per_hour: base.capacity_per_hour(),
        ..base.clone()
    };
    describe(&mut r, args, &shown, &tessera, &a);
    let _ = writeln!(
        r,
        "- Runs: {} seeds ({}..{}) at {} capacity ({:.0}, {:.0} and {:.0} jobs/h); each seed also with a flooding {} user at {} jobs/h \
         (FIFO and Tessera + admission), the other users' jobs unchanged. Figures are the median over seeds, with the range.\n",
        seeds.len(),
        seeds[0],
        seeds[seeds.len() - 1],
        LOADS.map(|l| format!("{l}x")).join(", "),
        base.capacity_per_hour(),
        1.5 * base.capacity_per_hour(),
        2.0 * base.capacity_per_hour(),
        PLANS[flood_plan].to_ascii_uppercase(),
        args.flood_jobs_per_hour
    );
    for (load, runs) in LOADS.iter().zip(&runs) {
        let _ = writeln!(r, "### {load}x capacity\n");
        let _ = writeln!(
            r,
            "| policy | per GPU-hour | vs FIFO | PRO p95 s | FREE p95 s | longest wait s | past the wait bound | refused | FREE Jain | estimate error (median) |"
        );
        let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|");
        for (i, (_, _, name)) in POLICIES.iter().enumerate() {
            let col = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
            let _ = writeln!(
                r,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                spread(&col(&|run| run.plain[i].completed_per_gpu_hour), 1),
                spread(
                    &col(&|run| run.plain[i].completed_per_gpu_hour
                        / run.plain[0].completed_per_gpu_hour.max(f64::MIN_POSITIVE)),
                    2
                ),
                spread(&col(&|run| pro(&run.plain[i])), 0),
                spread(&col(&|run| run.plain[i].waits[0].p95), 0),
                spread(&col(&|run| run.plain[i].longest_wait), 0),
                spread(&col(&|run| run.plain[i].past_wait_bound as f64), 0),
                spread(&col(&|run| run.plain[i].refused as f64), 0),
                spread(&col(&|run| run.plain[i].waits[0].jain), 2),
                spread(&col(&|run| run.plain[i].eta.median), 2),
            );
        }
        let col = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let refused: Vec<String> = (0..4)
            .map(|p| spread(&col(&|run| run.admitted().waits[p].refused as f64), 0))
            .collect();
        let _ = writeln!(
            r,
            "\nTessera + admission refused FREE {}, STARTER {}, PRO {}, ADMIN {}; accepted jobs past their plan's admission bound {}; \
             estimate error p90 {}. With the flood (other {} users' p95 wait without → with):\n",
            refused[0],
            refused[1],
            refused[2],
            refused[3],
            spread(&col(&|run| run.admitted().past_admission_bound as f64), 0),
            spread(&col(&|run| run.admitted().eta.p90), 2),
            PLANS[flood_plan].to_ascii_uppercase()
        );
        let _ = writeln!(
            r,
            "| policy | others' p95 s without | with | moved | flooder's jobs started | flooder's p95 s | {} Jain with the flood | others refused with the flood |",
            PLANS[flood_plan].to_ascii_uppercase()
        );
        let _ = writeln!(r, "|---|---|---|---|---|---|---|---|");
        for (name, plain, flood) in [
            ("FIFO", 0usize, true),
            ("Tessera + admission", ADMITTED, false),
        ] {
            let pick = |run: &Run| -> FloodRow {
                let f = if flood {
                    &run.fifo_flood
                } else {
                    &run.admitted_flood
                };
                let p = &run.plain[plain];
                let fl = f.flooder.as_ref().expect("a flooder");
                (
                    p.waits[flood_plan].regular_p95,
                    f.waits[flood_plan].regular_p95,
                    moved(p, f, flood_plan) * 100.0,
                    fl.started as f64,
                    fl.p95,
                    f.waits[flood_plan].jain,
                    (f.waits[flood_plan].refused - fl.refused) as f64,
                )
            };
            let v: Vec<_> = runs.iter().map(pick).collect();
            let c = |k: fn(&FloodRow) -> f64| v.iter().map(k).collect::<Vec<f64>>();
            let _ = writeln!(
                r,
                "| {name} | {} | {} | {} % | {} | {} | {} | {} |",
                spread(&c(|x| x.0), 0),
                spread(&c(|x| x.1), 0),
                spread(&c(|x| x.2), 0),
                spread(&c(|x| x.3), 0),
                spread(&c(|x| x.4), 0),
                spread(&c(|x| x.5), 2),
                spread(&c(|x| x.6), 0),
            );
        }
        let _ = writeln!(r);
    }

    // The goals, per seed.
    let n = seeds.len();
    let (light, heavy) = (&runs[0], &runs[2]);
    let pro_twice: Vec<bool> = (0..n)
        .map(|s| pro(heavy[s].admitted()) <= 2.0 * pro(light[s].admitted()))
        .collect();
    let pro_strict: Vec<bool> = (0..n)
        .map(|s| pro(heavy[s].admitted()) <= pro(&heavy[s].plain[1]) + 30.0)
        .collect();
    let count = |v: &[bool]| v.iter().filter(|b| **b).count();
    let _ = writeln!(r, "### Goals\n");
    let _ = writeln!(
        r,
        "- PRO's p95 at 2x no more than twice its 1x p95: {} of {n} seeds (2x {} s, 1x {} s); \
         no more than strict priority's + 30 s: {} of {n} (strict {} s). {}",
        count(&pro_twice),
        spread(
            &heavy.iter().map(|x| pro(x.admitted())).collect::<Vec<_>>(),
            0
        ),
        spread(
            &light.iter().map(|x| pro(x.admitted())).collect::<Vec<_>>(),
            0
        ),
        count(&pro_strict),
        spread(
            &heavy.iter().map(|x| pro(&x.plain[1])).collect::<Vec<_>>(),
            0
        ),
        yes(count(&pro_twice) == n && count(&pro_strict) == n)
    );
    let past: Vec<usize> = runs
        .iter()
        .flatten()
        .flat_map(|x| {
            [
                x.admitted().past_wait_bound,
                x.admitted_flood.past_wait_bound,
            ]
        })
        .collect();
    let longest = runs
        .iter()
        .flatten()
        .flat_map(|x| [x.admitted().longest_wait, x.admitted_flood.longest_wait])
        .fold(0.0, f64::max);
    let _ = writeln!(
        r,
        "- No accepted job waits past the wait bound ({} s): {} of {} runs; {} accepted jobs past it in all, the longest wait {:.0} s \
         (the policy's hard bound is {} s). {}",
        tessera.max_wait_ms / 1000,
        past.iter().filter(|p| **p == 0).count(),
        past.len(),
        past.iter().sum::<usize>(),
        longest,
        2 * tessera.max_wait_ms / 1000,
        yes(past.iter().all(|p| *p == 0))
    );
    let mut tp_lines = Vec::new();
    let mut tp_all = true;
    for (load, runs) in LOADS.iter().zip(&runs) {
        let backlogged: Vec<&Run> = runs.iter().filter(|x| x.backlog()).collect();
        let ok = backlogged
            .iter()
            .filter(|x| {
                x.admitted().completed_per_gpu_hour >= 1.3 * x.plain[0].completed_per_gpu_hour
            })
            .count();
        tp_all &= ok == backlogged.len();
        let ratios: Vec<f64> = backlogged
            .iter()
            .map(|x| x.admitted().completed_per_gpu_hour / x.plain[0].completed_per_gpu_hour)
            .collect();
        // 1.3x FIFO's completions as a share of arrivals: above 95 %, a run
        // with a backlog (more than 5 % not served) cannot reach it.
        let needed: Vec<f64> = runs
            .iter()
            .map(|x| 1.3 * x.plain[0].completed as f64 / x.plain[0].arrived.max(1) as f64)
            .collect();
        let unreachable = if median(needed.clone()) > 0.95 {
            format!(
                ", where 1.3x FIFO's is {} % of arrivals, more than any run with a backlog serves",
                spread(&needed.iter().map(|n| n * 100.0).collect::<Vec<_>>(), 0)
            )
        } else {
            String::new()
        };
        tp_lines.push(if backlogged.is_empty() {
            format!("{load}x: no backlog in any seed")
        } else {
            format!(
                "{load}x: backlog in {} seeds, met in {ok} ({}x){unreachable}",
                backlogged.len(),
                spread(&ratios, 2)
            )
        });
    }
    let _ = writeln!(
        r,
        "- Throughput at least 1.3x FIFO's wherever Tessera + admission has a backlog (it refused or left queued more than 5 % of arrivals): {}. {}",
        tp_lines.join("; "),
        yes(tp_all)
    );
    let mut flood_lines = Vec::new();
    let mut flood_all = true;
    for (load, runs) in LOADS.iter().zip(&runs) {
        let m: Vec<f64> = runs
            .iter()
            .map(|x| moved(x.admitted(), &x.admitted_flood, flood_plan) * 100.0)
            .collect();
        let ok = m.iter().filter(|v| v.abs() <= 10.0).count();
        flood_all &= ok == n;
        flood_lines.push(format!("{load}x: {ok} of {n} ({} %)", spread(&m, 0)));
    }
    let _ = writeln!(
        r,
        "- A flooding user moves the other {} users' p95 wait by at most 10 %: {}. {}",
        PLANS[flood_plan].to_ascii_uppercase(),
        flood_lines.join("; "),
        yes(flood_all)
    );
    let mut eta_lines = Vec::new();
    let mut eta_all = true;
    for (load, runs) in LOADS.iter().zip(&runs) {
        let e: Vec<f64> = runs.iter().map(|x| x.admitted().eta.median).collect();
        let ok = e.iter().filter(|v| **v <= 0.25).count();
        eta_all &= ok == n;
        eta_lines.push(format!("{load}x: {ok} of {n} ({})", spread(&e, 2)));
    }
    let _ = writeln!(
        r,
        "- The estimate's median error at most 25 %: {}. {}",
        eta_lines.join("; "),
        yes(eta_all)
    );
    print!("{r}");
    if let Some(path) = &args.report {
        std::fs::write(path, &r).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, goals_svg(&runs))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Two panels over the loads: jobs per GPU-hour, and PRO's p95 wait (log
/// scale), each policy's median over the seeds.
fn goals_svg(runs: &[Vec<Run>]) -> String {
    const W: f64 = 1040.0;
    const H: f64 = 380.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 290.0;
    let med = |load: usize, f: &dyn Fn(&Outcome) -> f64, i: usize| {
        median(runs[load].iter().map(|x| f(&x.plain[i])).collect())
    };
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
"#
    );
    let tp = |o: &Outcome| o.completed_per_gpu_hour;
    let max_tp = (0..LOADS.len())
        .flat_map(|l| (0..POLICIES.len()).map(move |i| (l, i)))
        .map(|(l, i)| med(l, &tp, i))
        .fold(1.0, f64::max)
        * 1.15;
    let _ = writeln!(
        s,
        r#"<text x="40" y="25" font-size="14" font-weight="bold">Completed jobs per GPU-hour (median of seeds)</text>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="40" y1="{BOTTOM}" x2="480" y2="{BOTTOM}" stroke="black"/>"#
    );
    for (l, load) in LOADS.iter().enumerate() {
        let x0 = 50.0 + l as f64 * 145.0;
        for (i, color) in COLORS.iter().enumerate() {
            let v = med(l, &tp, i);
            let h = (BOTTOM - TOP) * v / max_tp;
            let x = x0 + i as f64 * 26.0;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="22" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{v:.0}</text>"#,
                BOTTOM - h,
                color,
                x + 11.0,
                BOTTOM - h - 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{load}x capacity</text>"#,
            x0 + 65.0,
            BOTTOM + 18.0
        );
    }
    // PRO p95, log scale.
    let max_w = (0..LOADS.len())
        .flat_map(|l| (0..POLICIES.len()).map(move |i| (l, i)))
        .map(|(l, i)| med(l, &pro, i))
        .fold(10.0, f64::max)
        * 1.5;
    let (lo, hi) = (1.0f64.ln(), max_w.ln());
    let y = |v: f64| BOTTOM - (BOTTOM - TOP) * (v.max(1.0).ln() - lo) / (hi - lo);
    let _ = writeln!(
        s,
        r#"<text x="540" y="25" font-size="14" font-weight="bold">PRO p95 wait, seconds (log scale, median of seeds)</text>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="540" y1="{BOTTOM}" x2="1020" y2="{BOTTOM}" stroke="black"/>"#
    );
    let mut tick = 1.0;
    while tick <= max_w {
        let _ = writeln!(
            s,
            r##"<line x1="535" y1="{0:.1}" x2="1020" y2="{0:.1}" stroke="#e0e0e0"/><text x="530" y="{1:.1}" text-anchor="end">{2}</text>"##,
            y(tick),
            y(tick) + 4.0,
            tick
        );
        tick *= 10.0;
    }
    for (l, load) in LOADS.iter().enumerate() {
        let x0 = 555.0 + l as f64 * 155.0;
        for (i, color) in COLORS.iter().enumerate() {
            let v = med(l, &pro, i);
            let x = x0 + i as f64 * 27.0;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="23" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{v:.0}</text>"#,
                y(v),
                BOTTOM - y(v),
                color,
                x + 11.5,
                y(v) - 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{load}x capacity</text>"#,
            x0 + 67.0,
            BOTTOM + 18.0
        );
    }
    for (i, (_, _, name)) in POLICIES.iter().enumerate() {
        let x = 40.0 + i as f64 * 190.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{name}</text>"#,
            BOTTOM + 42.0,
            COLORS[i],
            x + 16.0,
            BOTTOM + 52.0
        );
    }
    s.push_str("</svg>\n");
    s
}
