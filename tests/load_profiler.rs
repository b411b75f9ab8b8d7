//! `tokend-load` end to end with tiny settings: it spawns the real server,
//! runs the `redeem` and `restore` profiles, and writes its results.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs `tokend-load` with `args` against the server binary built with the
/// tests, writing to `out`; returns its stdout after checking exit 0.
fn run_profiler(out: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tokend-load"))
        .arg("--spawn")
        .arg("--server-bin")
        .arg(env!("CARGO_BIN_EXE_tokend"))
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .expect("tokend-load starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "tokend-load {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Reads a JSON file.
fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("results file written");
    serde_json::from_str(&text).expect("results file is JSON")
}

/// A number at a JSON pointer.
fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing or not a number in {v:#}"))
}

#[test]
fn redeem_profile_reports_throughput_latency_and_spend_once() {
    let out = tempfile::tempdir().unwrap();
    let stdout = run_profiler(
        out.path(),
        &[
            "--profile",
            "redeem",
            "--connections",
            "4",
            "--duration-secs",
            "1",
            "--tokens",
            "2000",
        ],
    );
    assert!(stdout.contains("spend-once: passed"), "{stdout}");
    let results = read_json(&out.path().join("results-redeem.json"));
    assert_eq!(results["profile"], "redeem");
    assert_eq!(results["settings"]["connections"], 4);
    assert!(number(&results, "/ceiling/throughput") > 0.0);
    assert!(number(&results, "/run/throughput") > 0.0);
    assert!(number(&results, "/run/kinds/redeem/requests") > 0.0);
    assert!(number(&results, "/ratioToCeiling") > 0.0);
    for p in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(
            number(&results, &format!("/run/latencyMs/{p}")) > 0.0,
            "{p}"
        );
    }
    assert!(!results["run"]["timeline"].as_array().unwrap().is_empty());
    assert_eq!(results["spendOnce"]["passed"], true);
    assert_eq!(results["spendOnce"]["violations"], 0);
    assert!(number(&results, "/spendOnce/tokensRedeemed") > 0.0);
    assert!(number(&results, "/spendOnce/probe/sent") > 0.0);
    assert_eq!(
        results["spendOnce"]["probe"]["answers"]["409 TOKEN_ALREADY_REDEEMED"],
        results["spendOnce"]["probe"]["sent"]
    );
    assert_eq!(results["server"]["exitCode"], 0);
    let svg = std::fs::read_to_string(out.path().join("latency-redeem.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[test]
fn restore_profile_reports_memory_snapshot_and_restart() {
    let out = tempfile::tempdir().unwrap();
    let stdout = run_profiler(out.path(), &["--profile", "restore", "--tokens", "5000"]);
    assert!(stdout.contains("restart"), "{stdout}");
    let results = read_json(&out.path().join("results-restore.json"));
    assert_eq!(results["tokens"], 5000);
    assert!(number(&results, "/create/tokensPerSec") > 0.0);
    assert!(number(&results, "/memory/rssAfterBytes") > 0.0);
    number(&results, "/memory/bytesPerToken");
    assert_eq!(results["snapshot"]["tokens"], 5000);
    assert!(number(&results, "/snapshot/bytes") > 0.0);
    assert!(number(&results, "/restart/secsToReady") > 0.0);
    assert!(number(&results, "/restart/tokensPerSec") > 0.0);
    assert_eq!(results["stop"]["exitCode"], 0);
}
