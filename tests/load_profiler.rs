//! `tokend-load` end to end with tiny settings: it spawns the real server,
//! runs the `redeem`, `hot-collection`, `batch-redeem`, `hold-capture` and
//! `restore` profiles (with the snapshot phase, the baseline comparison and
//! the Redis comparison, and the lifecycle profiles' read-back), the pinned
//! comparison (`--pin`), and writes its results; the `cluster` profile,
//! which needs a nats-server, only as far as its refusal without one.

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
            "20000",
            "--snapshot-during",
            "--snapshot-phase-secs",
            "2",
            "--snapshot-at-secs",
            "0.5",
        ],
    );
    assert!(stdout.contains("spend-once: passed"), "{stdout}");
    assert!(stdout.contains("snapshot of 20 000 tokens"), "{stdout}");
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
    // CPU per request of the load generator and of the spawned server.
    for phase in ["ceiling", "run", "snapshotPhase"] {
        assert!(number(&results, &format!("/{phase}/cpu/clientCpuSecs")) > 0.0);
        assert!(number(&results, &format!("/{phase}/cpu/clientCpuPerRequestUs")) > 0.0);
        number(&results, &format!("/{phase}/cpu/serverCpuPerRequestUs"));
        assert!(number(&results, &format!("/{phase}/cpu/otherCoresBusy")) >= 0.0);
    }
    // The snapshot phase: the same profile, a snapshot of every token in
    // it, latency before / during / after.
    let phase = &results["snapshotPhase"];
    assert_eq!(phase["name"], "redeem+snapshot");
    assert_eq!(phase["errors"], 0);
    let impact = &phase["snapshot"];
    assert_eq!(impact["tokens"], 20000);
    assert!(number(impact, "/bytes") > 0.0);
    assert!(number(impact, "/sentAtSecs") >= 0.5);
    assert!(number(impact, "/tookSecs") > 0.0);
    let windows: f64 = ["before", "during", "after"]
        .iter()
        .map(|w| number(impact, &format!("/{w}/requests")))
        .sum();
    assert_eq!(windows, number(phase, "/requests"));
    assert!(number(impact, "/before/requests") > 0.0);
    assert!(number(impact, "/during/requests") > 0.0);
    assert!(number(impact, "/before/latencyMs/p99") > 0.0);
    assert!(number(impact, "/p99Ratio") > 0.0);
    // Both phases redeemed tokens of the pool, each at most once.
    assert_eq!(
        number(&results, "/spendOnce/tokensRedeemed"),
        number(&results, "/run/ok") + number(phase, "/ok")
    );
    assert!(results["redis"].is_null() && results["redisSkipped"].is_null());
    let svg = std::fs::read_to_string(out.path().join("latency-redeem.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[test]
fn restore_profile_reports_memory_snapshot_and_restart() {
    let out = tempfile::tempdir().unwrap();
    // 5 000 tokens in requests of 700: seven whole batches and a last one of 100.
    let stdout = run_profiler(
        out.path(),
        &[
            "--profile",
            "restore",
            "--tokens",
            "5000",
            "--batch-size",
            "700",
        ],
    );
    assert!(stdout.contains("restart"), "{stdout}");
    assert!(stdout.contains("700 per request"), "{stdout}");
    let results = read_json(&out.path().join("results-restore.json"));
    assert_eq!(results["tokens"], 5000);
    assert_eq!(results["create"]["batchSize"], 700);
    assert!(number(&results, "/create/tokensPerSec") > 0.0);
    assert!(number(&results, "/memory/rssAfterBytes") > 0.0);
    number(&results, "/memory/bytesPerToken");
    assert_eq!(results["snapshot"]["tokens"], 5000);
    assert!(number(&results, "/snapshot/bytes") > 0.0);
    assert!(number(&results, "/restart/secsToReady") > 0.0);
    assert!(number(&results, "/restart/tokensPerSec") > 0.0);
    assert_eq!(results["stop"]["exitCode"], 0);
}

#[test]
fn hot_collection_is_compared_with_a_redeem_baseline() {
    let out = tempfile::tempdir().unwrap();
    let common = [
        "--connections",
        "4",
        "--duration-secs",
        "1",
        "--tokens",
        "2000",
        "--ceiling-secs",
        "0",
    ];
    run_profiler(
        out.path(),
        &[&["--profile", "redeem"], &common[..]].concat(),
    );
    let baseline = out.path().join("results-redeem.json");
    let mut args = vec!["--profile", "hot-collection", "--baseline"];
    args.push(baseline.to_str().unwrap());
    args.extend(common);
    let stdout = run_profiler(out.path(), &args);
    assert!(stdout.contains("of its throughput"), "{stdout}");
    let results = read_json(&out.path().join("results-hot-collection.json"));
    assert_eq!(results["settings"]["collections"], 1);
    assert!(results["ceiling"].is_null());
    let redeem = read_json(&baseline);
    let b = &results["baseline"];
    assert_eq!(b["profile"], "redeem");
    assert_eq!(b["okThroughput"], redeem["run"]["okThroughput"]);
    let expected = number(&results, "/run/okThroughput") / number(b, "/okThroughput");
    assert!((number(b, "/throughputRatio") - expected).abs() < 1e-9);
    assert!(number(b, "/p99Ratio") > 0.0);
}

#[test]
fn batch_redeem_profile_counts_tokens_and_reads_every_one_back() {
    let out = tempfile::tempdir().unwrap();
    let stdout = run_profiler(
        out.path(),
        &[
            "--profile",
            "batch-redeem",
            "--batch-items",
            "50",
            "--connections",
            "4",
            "--duration-secs",
            "1",
            "--tokens",
            "20000",
            "--ceiling-secs",
            "0",
        ],
    );
    assert!(stdout.contains("spend-once: passed"), "{stdout}");
    assert!(stdout.contains("tokens/s redeemed"), "{stdout}");
    assert!(stdout.contains("item errors: none"), "{stdout}");
    let results = read_json(&out.path().join("results-batch-redeem.json"));
    assert_eq!(results["profile"], "batch-redeem");
    assert_eq!(results["settings"]["batchItems"], 50);
    let run = &results["run"];
    assert!(number(run, "/kinds/batchRedeem/requests") > 0.0);
    assert_eq!(run["errors"], 0);
    // Every item of every batch answered 200: 50 tokens per request, each
    // counted as a token redeemed.
    let items = &run["items"];
    assert_eq!(items["errors"], 0);
    assert_eq!(items["ok"], items["answered"]);
    assert_eq!(items["ok"], run["redeemed"]);
    let per_request = number(items, "/perRequest");
    assert!(per_request > 0.0 && per_request <= 50.0, "{per_request}");
    assert!(number(run, "/redeemedPerSec") > number(run, "/okThroughput"));
    // The audit: one win per token, a second redeem refused, every token
    // read back as redeemed (by a redeem, not a capture).
    let check = &results["spendOnce"];
    assert_eq!(check["passed"], true);
    assert_eq!(check["violations"], 0);
    assert_eq!(check["tokensRedeemed"], run["redeemed"]);
    assert_eq!(
        check["probe"]["answers"]["409 TOKEN_ALREADY_REDEEMED"],
        check["probe"]["sent"]
    );
    let readback = &check["readback"];
    assert_eq!(readback["expected"], "redeemed");
    assert_eq!(readback["tokens"], run["redeemed"]);
    assert_eq!(readback["matched"], readback["tokens"]);
    assert_eq!(readback["passed"], true);
    assert!(out.path().join("latency-batch-redeem.svg").exists());
}

#[test]
fn hold_capture_is_compared_with_a_redeem_baseline_and_read_back() {
    let out = tempfile::tempdir().unwrap();
    let common = [
        "--connections",
        "4",
        "--duration-secs",
        "1",
        "--tokens",
        "5000",
        "--ceiling-secs",
        "0",
    ];
    run_profiler(
        out.path(),
        &[&["--profile", "redeem"], &common[..]].concat(),
    );
    let baseline = out.path().join("results-redeem.json");
    let mut args = vec!["--profile", "hold-capture", "--baseline"];
    args.push(baseline.to_str().unwrap());
    args.extend(common);
    let stdout = run_profiler(out.path(), &args);
    assert!(stdout.contains("spend-once: passed"), "{stdout}");
    assert!(stdout.contains("pairs/s captured"), "{stdout}");
    assert!(stdout.contains("target ≥ 0.45×"), "{stdout}");
    let results = read_json(&out.path().join("results-hold-capture.json"));
    let run = &results["run"];
    assert_eq!(run["errors"], 0);
    // One unit of work is a pair; its hold and capture are timed alone.
    let pairs = number(run, "/kinds/holdCapture/requests");
    assert!(pairs > 0.0);
    assert_eq!(number(run, "/steps/hold/requests"), pairs);
    assert_eq!(number(run, "/steps/capture/requests"), pairs);
    assert_eq!(number(run, "/redeemed"), pairs);
    assert!(number(run, "/steps/capture/latencyMs/p99") > 0.0);
    // Against the redeem run: tokens redeemed per second, with the target.
    let redeem = read_json(&baseline);
    let b = &results["baseline"];
    assert_eq!(b["profile"], "redeem");
    assert_eq!(b["redeemedPerSec"], redeem["run"]["redeemedPerSec"]);
    assert_eq!(redeem["run"]["redeemed"], redeem["run"]["ok"]);
    let expected = number(run, "/redeemedPerSec") / number(b, "/redeemedPerSec");
    assert!((number(b, "/redeemedRatio") - expected).abs() < 1e-9);
    assert_eq!(b["redeemedRatioTarget"], 0.45);
    assert!(b["targetMet"].is_boolean());
    // The audit: every captured token reads back redeemed with its hold.
    let check = &results["spendOnce"];
    assert_eq!(check["passed"], true);
    assert_eq!(number(check, "/tokensRedeemed"), pairs);
    assert_eq!(
        check["probe"]["answers"]["409 TOKEN_ALREADY_REDEEMED"],
        check["probe"]["sent"]
    );
    let readback = &check["readback"];
    assert_eq!(readback["expected"], "captured");
    assert_eq!(number(readback, "/tokens"), pairs);
    assert_eq!(readback["matched"], readback["tokens"]);
    assert!(readback["mismatches"].as_object().unwrap().is_empty());
}

#[test]
fn a_missing_baseline_or_bad_snapshot_moment_is_a_clear_error() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tokend-load"))
        .args([
            "--spawn",
            "--server-bin",
            env!("CARGO_BIN_EXE_tokend"),
            "--out",
        ])
        .arg(out.path())
        .args(["--tokens", "10", "--baseline", "/nonexistent/results.json"])
        .output()
        .expect("tokend-load starts");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--baseline /nonexistent/results.json"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_tokend-load"))
        .args(["--out"])
        .arg(out.path())
        .args(["-d", "2", "--snapshot-during", "--snapshot-at-secs", "5"])
        .output()
        .expect("tokend-load starts");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--snapshot-at-secs 5"), "{stderr}");
}

#[test]
fn the_cluster_profile_without_a_nats_server_fails_before_starting_anything() {
    let out = tempfile::tempdir().unwrap();
    let cluster = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tokend-load"))
            .env_remove("TOKEND_NATS_SERVER")
            .args([
                "--spawn",
                "--server-bin",
                env!("CARGO_BIN_EXE_tokend"),
                "--profile",
                "cluster",
                "--tokens",
                "10",
                "--out",
            ])
            .arg(out.path())
            .args(extra)
            .output()
            .expect("tokend-load starts")
    };
    let output = cluster(&[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--nats-server") && stderr.contains("TOKEND_NATS_SERVER"),
        "{stderr}"
    );
    let output = cluster(&["--nats-server", "/nonexistent/nats-server"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--nats-server /nonexistent/nats-server"),
        "{stderr}"
    );
    // Refused before the single-node run: no server was started, no log
    // written.
    assert!(!out.path().join("cluster").exists());
    assert!(!out.path().join("results-cluster.json").exists());
}

#[test]
fn redis_comparison_is_skipped_with_a_reason_when_redis_is_missing() {
    let out = tempfile::tempdir().unwrap();
    let stdout = run_profiler(
        out.path(),
        &[
            "--connections",
            "2",
            "--duration-secs",
            "1",
            "--tokens",
            "500",
            "--ceiling-secs",
            "0",
            "--compare-redis",
            "--redis-server",
            "/nonexistent/redis-server",
        ],
    );
    assert!(stdout.contains("redis comparison skipped"), "{stdout}");
    let results = read_json(&out.path().join("results-redeem.json"));
    assert!(results["redis"].is_null());
    assert!(results["redisSkipped"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/redis-server"));
    assert_eq!(results["spendOnce"]["passed"], true);
}

/// `redis-server` on the PATH, if installed.
fn redis_server() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

#[test]
fn redis_comparison_drives_getdel_of_existing_keys() {
    let Some(redis) = redis_server() else {
        eprintln!("redis-server is not installed: the end-to-end Redis comparison is not run");
        return;
    };
    // A relative --out, as `make bench` passes: Redis changes directory
    // before opening its log, so the profiler must hand it an absolute path.
    std::fs::create_dir_all("target").unwrap();
    let out = tempfile::tempdir_in("target").unwrap();
    let cwd = std::env::current_dir().unwrap();
    let relative = out.path().strip_prefix(&cwd).unwrap_or(out.path());
    assert!(relative.is_relative(), "{}", relative.display());
    let stdout = run_profiler(
        relative,
        &[
            "--connections",
            "4",
            "--duration-secs",
            "1",
            "--tokens",
            "20000",
            "--ceiling-secs",
            "0",
            "--compare-redis",
            "--redis-server",
            redis.to_str().unwrap(),
        ],
    );
    assert!(stdout.contains("GETDEL/s"), "{stdout}");
    let results = read_json(&out.path().join("results-redeem.json"));
    let r = &results["redis"];
    assert_eq!(r["keys"], 20000);
    assert_eq!(
        r["config"],
        "--appendonly yes --appendfsync always --save ''"
    );
    assert!(number(r, "/run/okThroughput") > 0.0);
    // Every GETDEL found its key (a nil reply would be an error).
    assert_eq!(r["run"]["errors"], 0);
    assert_eq!(r["run"]["ok"], r["run"]["requests"]);
    assert!(number(r, "/run/latencyMs/p99") > 0.0);
    assert!(number(r, "/run/cpu/serverCpuPerRequestUs") > 0.0);
    // The deletes were written to the AOF.
    assert!(number(r, "/aofBytes") > number(r, "/aofBytesBefore"));
    let expected = number(&results, "/run/okThroughput") / number(r, "/run/okThroughput");
    assert!((number(&results, "/ratioToRedis") - expected).abs() < 1e-9);
}

/// CPUs this process may use (the pinned comparison needs two).
fn cpus_available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A number at a JSON pointer that must be positive and finite.
fn positive(v: &Value, pointer: &str) -> f64 {
    let n = number(v, pointer);
    assert!(n.is_finite() && n > 0.0, "{pointer} = {n} in {v:#}");
    n
}

#[test]
fn pinned_comparison_reports_the_three_phases_with_server_cpu_per_request() {
    let out = tempfile::tempdir().unwrap();
    let args = [
        "--pin",
        "--connections",
        "4",
        "--duration-secs",
        "1",
        "--ceiling-secs",
        "1",
        "--tokens",
        "20000",
    ];
    if cpus_available() < 2 {
        let output = Command::new(env!("CARGO_BIN_EXE_tokend-load"))
            .args([
                "--spawn",
                "--server-bin",
                env!("CARGO_BIN_EXE_tokend"),
                "--out",
            ])
            .arg(out.path())
            .args(args)
            .output()
            .expect("tokend-load starts");
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--pin needs at least 2 CPUs"), "{stderr}");
        return;
    }
    let stdout = run_profiler(out.path(), &args);
    assert!(
        stdout.contains("pinned: server and Redis on CPU 0, load generator on CPU 1"),
        "{stdout}"
    );
    assert!(stdout.contains("tokend 1 shard, 1 HTTP worker"), "{stdout}");
    assert!(
        stdout.contains("redeem: server CPU per request"),
        "{stdout}"
    );
    assert!(stdout.contains("redeem/s ÷ /health/live/s"), "{stdout}");
    assert!(stdout.contains("spend-once: passed"), "{stdout}");
    let results = read_json(&out.path().join("results-redeem.json"));
    // The server was started with one shard and one HTTP worker, and every
    // one of its threads ran on CPU 0.
    assert_eq!(results["server"]["shards"], 1);
    assert_eq!(results["server"]["httpWorkers"], 1);
    let pin = &results["pin"];
    assert_eq!(pin["serverCpu"], 0);
    assert_eq!(pin["loadCpu"], 1);
    assert_eq!(pin["shards"], 1);
    assert_eq!(pin["httpWorkers"], 1);
    assert!(number(pin, "/serverThreads/threads") >= 2.0);
    assert_eq!(pin["serverThreads"]["cpus"], serde_json::json!([0]));
    // The two tokend phases: throughput, latency, and the server's CPU per
    // request measured over each.
    for phase in ["healthLive", "redeem"] {
        let p = &pin[phase];
        assert_eq!(p["errors"], 0, "{phase}: {p:#}");
        positive(p, "/requests");
        positive(p, "/okPerSec");
        positive(p, "/p50Ms");
        assert!(number(p, "/p99Ms") >= number(p, "/p50Ms"), "{p:#}");
        positive(p, "/serverCpuPerRequestUs");
        positive(p, "/serverCoreShare");
        positive(p, "/loadCpuPerRequestUs");
        number(p, "/serverCpuBusy");
        number(p, "/loadCpuBusy");
    }
    assert_eq!(pin["healthLive"]["name"], "health/live");
    assert_eq!(pin["redeem"]["name"], "redeem");
    assert_eq!(
        number(pin, "/redeem/serverCpuPerRequestUs"),
        number(&results, "/run/cpu/serverCpuPerRequestUs")
    );
    assert_eq!(
        number(pin, "/redeem/requests"),
        number(&results, "/run/requests")
    );
    let expected = number(pin, "/redeem/okPerSec") / number(pin, "/healthLive/okPerSec");
    assert!((number(pin, "/redeemPerHealthLive") - expected).abs() < 1e-9);
    // The targets, each with its figure and verdict.
    let targets = pin["targets"].as_array().unwrap();
    let target = |key: &str| {
        targets
            .iter()
            .find(|t| t["key"] == key)
            .unwrap_or_else(|| panic!("no target {key} in {pin:#}"))
    };
    assert_eq!(
        target("serverCpuPerRequestUs")["measured"],
        pin["redeem"]["serverCpuPerRequestUs"]
    );
    assert_eq!(target("serverCpuPerRequestUs")["target"], 15.0);
    assert_eq!(target("p99Ms")["measured"], pin["redeem"]["p99Ms"]);
    assert_eq!(target("p99Ms")["target"], 5.0);
    assert_eq!(target("redeemPerRedisGetdel")["target"], 0.9);
    assert!(target("redeemPerHealthLive")["met"].is_boolean());
    // The Redis phase ran (its CPU too), or is reported as skipped.
    match pin["redisGetdel"].as_object() {
        Some(_) => {
            let r = &pin["redisGetdel"];
            assert!(pin["redisSkipped"].is_null());
            assert_eq!(r["name"], "redis GETDEL");
            assert_eq!(r["errors"], 0, "{r:#}");
            positive(r, "/okPerSec");
            let cpu = number(r, "/serverCpuPerRequestUs");
            assert!(cpu.is_finite() && cpu >= 0.0, "{cpu}");
            assert_eq!(pin["redisThreads"]["cpus"], serde_json::json!([0]));
            let expected = number(pin, "/redeem/okPerSec") / number(r, "/okPerSec");
            assert!((number(pin, "/redeemPerRedisGetdel") - expected).abs() < 1e-9);
            assert_eq!(
                target("redeemPerRedisGetdel")["measured"],
                pin["redeemPerRedisGetdel"]
            );
            assert!(target("redeemPerRedisGetdel")["met"].is_boolean());
            assert!(stdout.contains("redeem/s ÷ Redis GETDEL/s"), "{stdout}");
        }
        None => {
            let why = pin["redisSkipped"].as_str().unwrap();
            assert!(why.contains("redis-server"), "{why}");
            assert!(pin["redeemPerRedisGetdel"].is_null());
            assert!(target("redeemPerRedisGetdel")["met"].is_null());
            assert!(
                stdout.contains(&format!("redis GETDEL     skipped: {why}")),
                "{stdout}"
            );
        }
    }
}

#[test]
fn pinning_server_and_load_generator_to_one_cpu_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let pinned = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tokend-load"))
            .args([
                "--spawn",
                "--server-bin",
                env!("CARGO_BIN_EXE_tokend"),
                "--tokens",
                "10",
                "--pin",
                "--out",
            ])
            .arg(out.path())
            .args(extra)
            .output()
            .expect("tokend-load starts")
    };
    let output = pinned(&["--pin-server-cpu", "1", "--pin-load-cpu", "1"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--pin-server-cpu and --pin-load-cpu are both CPU 1"),
        "{stderr}"
    );
    // A CPU this process may not use.
    let output = pinned(&["--pin-load-cpu", "1023"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if cpus_available() >= 2 {
        assert!(
            stderr.contains("--pin-load-cpu 1023: no such CPU available"),
            "{stderr}"
        );
    } else {
        assert!(stderr.contains("--pin needs at least 2 CPUs"), "{stderr}");
    }
    // Refused before anything started: no server log, no results.
    assert!(!out.path().join("server-redeem.log").exists());
    assert!(!out.path().join("results-redeem.json").exists());
    // --pin pins the server it spawns: not one given with --target.
    let output = Command::new(env!("CARGO_BIN_EXE_tokend-load"))
        .args(["--target", "http://127.0.0.1:9", "--pin"])
        .output()
        .expect("tokend-load starts");
    assert_eq!(output.status.code(), Some(2));
}
