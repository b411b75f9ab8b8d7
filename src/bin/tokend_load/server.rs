//! A tokend server started by the profiler: fresh data dir, port 0, admin key
//! in the environment; its stderr goes to a log file and is watched for the
//! `tokend ready … addr=…` line; stopped with SIGTERM.

use super::error::{Context, LoadError, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The spawned server's `RUST_LOG` unless the profiler's own is set: the
/// server's defaults without the request lines of answers below 500.
const SERVER_LOG_FILTER: &str = "info,tokend::access=warn";
/// How long a start (including a restore) may take before giving up.
const START_LIMIT: Duration = Duration::from_secs(600);
/// How long a graceful stop may take before SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(300);

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The binary.
    pub bin: PathBuf,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// `--fsync`.
    pub fsync: String,
    /// `--shards`, when set.
    pub shards: Option<u16>,
    /// `--http-workers`, when set.
    pub http_workers: Option<u16>,
    /// The one CPU every thread of it runs on (`--pin`), when set.
    pub cpu: Option<usize>,
    /// `TOKEND_ADMIN_KEY`.
    pub admin_key: String,
    /// File its stderr is appended to.
    pub log: PathBuf,
    /// Further `serve` flags (cluster mode).
    pub extra_args: Vec<String>,
    /// `TOKEND_DATA_KEY`, when encryption at rest is on.
    pub data_key: Option<String>,
}

/// A running server.
pub struct Server {
    /// The process.
    child: Child,
    /// When it was started.
    pub started: Instant,
    /// The address it listens on.
    pub addr: SocketAddr,
}

/// Finds the server binary: `--server-bin`, else `tokend` next to this
/// executable, else `target/release/tokend`.
pub fn find_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(LoadError::new(format!(
                "--server-bin {}: no such file",
                path.display()
            )))
        };
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("tokend")));
    if let Some(path) = sibling.filter(|p| p.is_file()) {
        return Ok(path);
    }
    let release = PathBuf::from("target/release/tokend");
    if release.is_file() {
        return Ok(release);
    }
    Err(LoadError::new(
        "no server binary: build it with `cargo build --release` or pass --server-bin",
    ))
}

/// Makes the child get SIGKILL when the profiler dies (an error path that
/// skips the drops, a signal), so that no server outlives a run. The signal
/// follows the thread that spawned the child: the profiler spawns from the
/// thread that runs its main future, which lives as long as the process.
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// A fresh directory under the system temp dir.
pub fn temp_data_dir() -> Result<PathBuf> {
    temp_dir("tokend-load")
}

/// A fresh directory under the system temp dir, its name starting with
/// `prefix`.
pub fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos:09}", std::process::id()));
    std::fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Strips ANSI escape sequences (colour codes) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address of a `tokend ready` log line.
fn ready_addr(line: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    if !line.contains("tokend ready") {
        return None;
    }
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("addr="))
        .and_then(|a| a.trim_matches('"').parse().ok())
}

impl Server {
    /// Starts the server and waits for its `tokend ready` line.
    pub fn start(spec: &ServerSpec) -> Result<Self> {
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&spec.log)
            .context(|| format!("cannot open {}", spec.log.display()))?;
        let _ = writeln!(log, "---- tokend-load: starting {}", spec.bin.display());
        let mut command = Command::new(&spec.bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--fsync")
            .arg(&spec.fsync)
            .env("TOKEND_ADMIN_KEY", &spec.admin_key)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(shards) = spec.shards {
            command.arg("--shards").arg(shards.to_string());
        }
        if let Some(workers) = spec.http_workers {
            command.arg("--http-workers").arg(workers.to_string());
        }
        if let Some(cpu) = spec.cpu {
            super::affinity::pin_command(&mut command, cpu)?;
        }
        // The request log writes a line per request: at load-test rates
        // that is the profiler's own drain thread and disk competing with
        // the server. Unless the caller chose a filter, keep it to 5xx.
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", SERVER_LOG_FILTER);
        }
        command.args(&spec.extra_args);
        if let Some(keyring) = &spec.data_key {
            command.env("TOKEND_DATA_KEY", keyring);
        }
        die_with_parent(&mut command);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .context(|| format!("cannot start {}", spec.bin.display()))?;
        let Some(stderr) = child.stderr.take() else {
            return Err(LoadError::new("the server's stderr is not piped"));
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(addr) = ready_addr(&line) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        match ready_rx.recv_timeout(START_LIMIT) {
            Ok(addr) => Ok(Self {
                child,
                started,
                addr,
            }),
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(LoadError::new(format!(
                    "{} did not print `tokend ready` ({}; exit status {}); see {}",
                    spec.bin.display(),
                    match e {
                        mpsc::RecvTimeoutError::Timeout => "timed out",
                        mpsc::RecvTimeoutError::Disconnected => "its stderr closed",
                    },
                    status.map_or("unknown".to_owned(), |s| s.to_string()),
                    spec.log.display()
                )))
            }
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory from `/proc/<pid>/status` (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).context(|| format!("cannot read {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| LoadError::new(format!("{path} has no VmRSS line")))
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after a long wait).
    /// Returns the exit status and how long the stop took.
    pub fn stop(mut self) -> Result<(ExitStatus, Duration)> {
        let asked = Instant::now();
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| LoadError::new("server pid out of range"))?;
        // SAFETY: kill(2) with a pid of a child we own and have not reaped.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(LoadError::new(format!("cannot send SIGTERM to {pid}: {e}")));
        }
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context(|| "waiting for the server".to_owned())?
            {
                return Ok((status, asked.elapsed()));
            }
            if asked.elapsed() > STOP_LIMIT {
                let _ = self.child.kill();
                let status = self
                    .child
                    .wait()
                    .context(|| "waiting for the server".to_owned())?;
                return Err(LoadError::new(format!(
                    "the server did not stop within {} s of SIGTERM (killed: {status})",
                    STOP_LIMIT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only reached when `stop` was not called (an error path).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ready_line_with_or_without_colours() {
        let plain = "2026-01-01T00:00:00Z  INFO tokend: tokend ready addr=127.0.0.1:4567 shards=2 fsync=always";
        assert_eq!(ready_addr(plain), Some("127.0.0.1:4567".parse().unwrap()));
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m tokend ready \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:80 \u{1b}[3mshards\u{1b}[0m=2";
        assert_eq!(ready_addr(coloured), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(ready_addr("tokend stopped"), None);
    }
}
