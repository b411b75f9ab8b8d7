//! Child processes for the suites that run real binaries (`tests/durability`,
//! `tests/cluster`): a clean `tokend` command, a stderr buffer filled by a
//! draining thread (so a child never blocks on a full pipe and tests can read
//! its log), bounded waits and signals.
//!
//! Included by each suite with `#[path = "../common/process.rs"] mod
//! process;`; each suite uses part of it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `tokend` binary Cargo built for these tests.
pub fn tokend_binary() -> &'static str {
    env!("CARGO_BIN_EXE_tokend")
}

/// A command for the `tokend` binary with a clean environment: no
/// `TOKEND_*` variable of the caller leaks in, no colours in the log,
/// `RUST_LOG=info` without the request lines of answers below 500 (suites
/// that send thousands of requests keep their logs to what they read).
pub fn tokend_command() -> Command {
    let mut command = Command::new(tokend_binary());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TOKEND_") {
            command.env_remove(name);
        }
    }
    command
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,tokend::access=warn");
    command
}

/// Removes ANSI escape sequences (`ESC [ … letter`), in case colours are on.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The child's stderr so far, and whether it has ended.
#[derive(Default)]
struct LogState {
    text: String,
    closed: bool,
}

/// A log buffer filled by a draining thread.
#[derive(Clone, Default)]
pub struct Log {
    state: Arc<(Mutex<LogState>, Condvar)>,
}

impl Log {
    /// Starts a thread that appends `stream`, line by line (colour codes
    /// removed), to this buffer until the stream ends.
    pub fn drain(&self, stream: impl Read + Send + 'static) -> JoinHandle<()> {
        let log = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = strip_ansi(&String::from_utf8_lossy(&line));
                        let (lock, ready) = &*log.state;
                        lock.lock().unwrap().text.push_str(&text);
                        ready.notify_all();
                    }
                }
            }
            let (lock, ready) = &*log.state;
            lock.lock().unwrap().closed = true;
            ready.notify_all();
        })
    }

    /// Everything logged so far (colour codes removed).
    pub fn text(&self) -> String {
        self.state.0.lock().unwrap().text.clone()
    }

    /// The first line containing `needle`, waiting up to `timeout` for it;
    /// `None` when the stream ends or time runs out first.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, ready) = &*self.state;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(line) = state.text.lines().find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return None;
            }
            state = ready.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits up to `timeout` for the stream to end; whether it has.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, ready) = &*self.state;
        let mut state = lock.lock().unwrap();
        loop {
            let now = Instant::now();
            if state.closed || now >= deadline {
                return state.closed;
            }
            state = ready.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Every line containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// The value of `name=value` in a log line (up to the next space).
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    let start = line
        .match_indices(&key)
        .find(|(at, _)| *at == 0 || line.as_bytes()[at - 1] == b' ')?
        .0
        + key.len();
    let rest = &line[start..];
    Some(rest.split(' ').next().unwrap_or(rest))
}

/// A numeric `name=value` field of a log line.
pub fn number_field(line: &str, name: &str) -> u64 {
    field(line, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name}= in log line: {line}"))
}

/// Waits up to `timeout` for the child to exit; `None` if it still runs.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be polled") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` to a child that has not been reaped; panics if it cannot
/// be delivered.
pub fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: plain kill(2) on our own child, which has not been reaped (so
    // its pid cannot have been reused).
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "signal {signal} is delivered to pid {pid}");
}
