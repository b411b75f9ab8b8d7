//! The README's walk-through, continued by docs/lifecycle.md's, runs as
//! written: both shell blocks are pasted into bash against the built binary
//! (on a free port instead of 8080), and what they print is what the text
//! says they print. Needs `bash`, `curl`, `jq` and `openssl`.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// The first ```sh block of `path` that contains `marker`.
fn shell_block(path: &str, marker: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("{} has no sh block with {marker:?}", path.display()))
        .to_string()
}

#[test]
fn the_walk_throughs_run_as_written() {
    for tool in ["curl", "jq", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|out| out.status.success());
        assert!(found, "the walk-through needs {tool} on PATH");
    }
    let readme = shell_block("README.md", "TOKEND_ADMIN_KEY");
    let lifecycle = shell_block("docs/lifecycle.md", "holds");
    let (start, stop) = readme
        .split_once("\n# Stop the server")
        .expect("the README's block ends by stopping the server");
    assert!(stop.contains("kill %1"));
    // The same lines, with the binary this test was built with and a free
    // port, so the test runs beside anything else on 8080.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = format!(
        "{} serve --listen 127.0.0.1:{port}",
        env!("CARGO_BIN_EXE_tokend")
    );
    assert!(start.contains("make build\n") && start.contains("target/release/tokend serve"));
    let start = start
        .replace("make build\n", "")
        .replace("target/release/tokend serve", &server)
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let log_dir = tempfile::tempdir().expect("temp dir");
    let script = format!(
        "set -euo pipefail\ntrap 'kill %1 2>/dev/null || true' EXIT\n{start}\n{lifecycle}\nkill %1\nwait\n"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(log_dir.path())
        // `mktemp -d` (the walk-through's data dir) inside the test's dir.
        .env("TMPDIR", log_dir.path())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(log_dir.path().join("tokend.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the walk-through failed:\n{stdout}\n{}\nserver log:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    for printed in [
        "\"status\": \"redeemed\"",
        "\"idempotencyKey\": \"pos-42-txn-9\"",
        "\"code\": \"TOKEN_ALREADY_REDEEMED\"",
        "\"code\": \"TOKEN_HELD\"",
        "\"voidIdempotencyKey\": \"refund-881\"",
        "\"active\"",
        "\"redeemable\": false",
        "{\"status\":200,\"code\":null}",
        "{\"status\":409,\"code\":\"TOKEN_ALREADY_REDEEMED\"}",
    ] {
        assert!(
            stdout.contains(printed),
            "the walk-through did not print {printed}:\n{stdout}"
        );
    }
}
