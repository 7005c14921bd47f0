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
    ] {
        assert!(written.contains(policy), "{policy} in:\n{written}");
    }
    assert!(written.contains("Tessera completes at least 30 %"));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<rect").count(),
        1 + 4 + 8,
        "a background and twelve bars"
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
fn malformed_options_are_named() {
    let out = simulate(&["--run-secs", "25"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--run-secs takes min-max seconds"), "{err}");
    let out = simulate(&["--models", "sdxl-1.0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--models takes name:share"));
}
