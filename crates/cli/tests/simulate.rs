//! `tessera simulate` as an operator runs it: a report and a chart from the
//! command line, the same figures for the same seed, and a clear error for a
//! malformed option. (The simulator's own behaviour is tested in
//! `tessera_core::simulation`.)

use std::process::Command;

fn simulate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--log", "warn", "simulate", "--hours", "1"])
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

#[test]
fn the_simulator_writes_a_report_and_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.md");
    let plot = dir.path().join("policies.svg");
    let out = simulate(&[
        "--report",
        report.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let written = std::fs::read_to_string(&report).unwrap();
    assert_eq!(printed, written);
    for policy in [
        "| FIFO |",
        "| strict priority |",
        "| seed's affinity rule |",
        "| Tessera |",
        "| Tessera + admission |",
    ] {
        assert!(written.contains(policy), "{policy} in:\n{written}");
    }
    assert!(written.contains("Tessera completes at least 30 %"));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<rect").count(),
        1 + 5 + 10,
        "a background and fifteen bars"
    );

    // The same seed, the same figures (only the command line differs).
    let again = simulate(&["--report", report.to_str().unwrap()]);
    let table = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("| "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        table(&String::from_utf8(again.stdout).unwrap()),
        table(&written)
    );
}

#[test]
fn the_goals_run_writes_its_report_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("overload.md");
    let plot = dir.path().join("overload.svg");
    let out = simulate(&[
        "--goals",
        "--seeds",
        "1",
        "--report",
        report.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&report).unwrap();
    for part in [
        "### 1x capacity",
        "### 1.5x capacity",
        "### 2x capacity",
        "PRO's p95 at 2x",
        "No accepted job waits past the wait bound",
        "Throughput at least 1.3x FIFO's",
        "A flooding user moves",
        "median error at most 25 %",
    ] {
        assert!(written.contains(part), "{part} in:\n{written}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<rect").count(),
        1 + 2 * 3 * 5 + 5,
        "a background, two panels of three loads of five bars, a legend"
    );
}

#[test]
fn malformed_options_are_named() {
    let out = simulate(&["--run-secs", "25"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--run-secs takes min-max seconds"), "{err}");
    let out = simulate(&["--models", "sdxl-1.0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--models takes name:number"));
    let out = simulate(&["--flood-plan", "gold"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--flood-plan"));
}
