//! Runs the real `tokend` binary: a server on a data dir, found through its
//! `tokend ready` log line, stopped by SIGKILL or SIGTERM; and the offline
//! tools. The child's stderr is drained by a thread into a buffer (see
//! `process`), so the child never blocks on a full pipe and tests can read
//! its log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::process::{field, number_field, Log};
use crate::process::{send_signal, strip_ansi, tokend_command as command, wait_with_timeout};

/// The admin key servers are started with unless a test says otherwise.
pub const ADMIN_KEY: &str = "durability-tests-admin-key-0123";
/// How long a server may take to restore and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping server may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a server.
#[derive(Clone)]
pub struct ServerOptions {
    dir: PathBuf,
    admin_key: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    fsync_flag: Option<String>,
    shards: u16,
}

impl ServerOptions {
    /// Defaults: two shards, `--fsync always`, the test admin key.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            admin_key: Some(ADMIN_KEY.to_owned()),
            args: Vec::new(),
            env: Vec::new(),
            fsync_flag: Some("always".to_owned()),
            shards: 2,
        }
    }

    /// `--shards N` (default 2).
    pub fn shards(mut self, shards: u16) -> Self {
        self.shards = shards;
        self
    }

    /// Starts without `TOKEND_ADMIN_KEY` (the server generates or reuses one).
    pub fn without_admin_key(mut self) -> Self {
        self.admin_key = None;
        self
    }

    /// `--fsync MODE`; `None` leaves the flag out (the env or default decides).
    pub fn fsync(mut self, mode: Option<&str>) -> Self {
        self.fsync_flag = mode.map(str::to_owned);
        self
    }

    /// An extra flag.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// An extra environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn spawn(&self) -> (Child, Log, JoinHandle<()>) {
        let mut command = command();
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg(format!("--shards={}", self.shards))
            .arg("--data-dir")
            .arg(&self.dir);
        if let Some(mode) = &self.fsync_flag {
            command.args(["--fsync", mode]);
        }
        command.args(&self.args);
        if let Some(key) = &self.admin_key {
            command.env("TOKEND_ADMIN_KEY", key);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tokend binary starts");
        let log = Log::default();
        let drainer = log.drain(child.stderr.take().expect("piped stderr"));
        (child, log, drainer)
    }

    /// Starts the server and waits until it is ready; panics with its log
    /// when it exits or takes too long instead.
    pub fn start(&self) -> Server {
        let (mut child, log, drainer) = self.spawn();
        let Some(line) = log.wait_for_line("tokend ready", READY_TIMEOUT) else {
            let _ = child.kill();
            let status = child.wait().expect("the child is reaped");
            let _ = drainer.join();
            panic!(
                "tokend did not become ready ({status}); its log:\n{}",
                log.text()
            );
        };
        let addr: SocketAddr = field(&line, "addr")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr= in the ready line: {line}"));
        Server {
            child: Some(child),
            log,
            drainer: Some(drainer),
            addr,
        }
    }

    /// Starts the server expecting it to fail: returns its exit status and
    /// log. Panics if it becomes ready instead.
    pub fn start_expecting_failure(&self) -> (ExitStatus, String) {
        let (mut child, log, drainer) = self.spawn();
        let deadline = Instant::now() + READY_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("the child can be polled") {
                break Some(status);
            }
            if Instant::now() >= deadline || log.text().contains("tokend ready") {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = drainer.join();
            panic!(
                "tokend should have refused to start but is running; its log:\n{}",
                log.text()
            );
        };
        // The child has exited: its stderr ends.
        let _ = drainer.join();
        (status, log.text())
    }
}

/// A running `tokend serve`; killed when dropped.
pub struct Server {
    child: Option<Child>,
    log: Log,
    drainer: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Server {
    /// Starts a server on `dir` with the default options.
    pub fn start(dir: &Path) -> Server {
        ServerOptions::new(dir).start()
    }

    /// The default options for `dir`, to adjust.
    pub fn options(dir: &Path) -> ServerOptions {
        ServerOptions::new(dir)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The server's log so far.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The log line containing `needle`; panics (with the whole log) if none.
    #[track_caller]
    pub fn log_line(&self, needle: &str) -> String {
        self.log
            .wait_for_line(needle, Duration::ZERO)
            .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{}", self.log.text()))
    }

    fn finish(&mut self, status: ExitStatus) -> ExitStatus {
        self.child = None;
        if let Some(drainer) = self.drainer.take() {
            let _ = drainer.join();
        }
        status
    }

    /// SIGKILL, then waits for the process and the end of its log.
    pub fn kill9(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("the server is running");
        child.kill().expect("SIGKILL is delivered");
        let status = child.wait().expect("the child is reaped");
        self.finish(status)
    }

    /// SIGTERM, then waits (bounded) for the process to exit; returns its
    /// exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal` (SIGTERM, SIGINT), then waits (bounded) for the
    /// process to exit; returns its exit status.
    pub fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        let child = self.child.as_mut().expect("the server is running");
        send_signal(child, signal);
        let Some(status) = wait_with_timeout(child, EXIT_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tokend did not exit within {EXIT_TIMEOUT:?} of signal {signal}:\n{}",
                self.log.text()
            );
        };
        self.finish(status)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What an offline tool printed and how it exited.
pub struct ToolRun {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error (colour codes removed).
    pub stderr: String,
}

impl ToolRun {
    /// Both streams, for messages.
    pub fn output(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs `tokend <tool> --data-dir DIR` to completion.
pub fn run_tool(tool: &str, dir: &Path) -> ToolRun {
    let output = command()
        .arg(tool)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the tokend binary runs");
    ToolRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: strip_ansi(&String::from_utf8_lossy(&output.stderr)),
    }
}
