//! A real `tokend serve` in cluster mode.

use super::{free_ports, http_get, ADMIN_KEY, EXIT_TIMEOUT};
use crate::process::{send_signal, tokend_command, wait_with_timeout, Log};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a node is started:
///
/// ```text
/// TOKEND_ADMIN_KEY=… tokend serve --listen 127.0.0.1:PORT --data-dir DIR \
///     --cluster nats://…,nats://…,nats://… --node-id ID \
///     --cluster-name NAME --cluster-shards N [--cluster-allow-unsafe] [ARGS…]
/// ```
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `--cluster`: the NATS servers' URLs, comma-separated.
    pub nats_urls: String,
    /// `--node-id`.
    pub node_id: String,
    /// `--cluster-name`.
    pub cluster_name: String,
    /// `--cluster-shards`.
    pub shards: u16,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `TOKEND_ADMIN_KEY` (required in cluster mode).
    pub admin_key: String,
    /// `--cluster-allow-unsafe` (fewer than 3 NATS replicas).
    pub allow_unsafe: bool,
    /// `--listen 127.0.0.1:PORT`; `None` picks a free port at the first
    /// start (kept across restarts).
    pub port: Option<u16>,
    /// Extra flags.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl NodeConfig {
    /// A node on the NATS servers `nats_urls` with the suite's admin key.
    pub fn new(
        nats_urls: String,
        node_id: &str,
        cluster_name: &str,
        shards: u16,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            nats_urls,
            node_id: node_id.to_owned(),
            cluster_name: cluster_name.to_owned(),
            shards,
            data_dir,
            admin_key: ADMIN_KEY.to_owned(),
            allow_unsafe: false,
            port: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// With `--cluster-allow-unsafe`.
    pub fn allow_unsafe(mut self) -> Self {
        self.allow_unsafe = true;
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
}

/// The running process of a node (the child behind a lock so that
/// `&self` methods can poll it).
struct Running {
    child: Mutex<Child>,
    drainer: Option<JoinHandle<()>>,
}

/// A `tokend serve` in cluster mode, with a clean environment (no `TOKEND_*`
/// of the caller, `NO_COLOR=1`, `RUST_LOG=info` without request lines below
/// 5xx), its stderr drained into a [`Log`]. Its port and data dir stay the same across restarts. Dropping
/// it kills the process.
pub struct TokendNode {
    config: NodeConfig,
    port: u16,
    running: Option<Running>,
    /// This run's log.
    log: Log,
    /// The logs of earlier runs of this node.
    earlier: String,
    runs: usize,
}

impl TokendNode {
    /// Starts the node; does not wait for it (see
    /// [`TokendNode::wait_ready`]).
    pub fn start(config: NodeConfig) -> TokendNode {
        let port = config.port.unwrap_or_else(|| free_ports(1)[0]);
        std::fs::create_dir_all(&config.data_dir).expect("the data dir is created");
        let mut node = TokendNode {
            config,
            port,
            running: None,
            log: Log::default(),
            earlier: String::new(),
            runs: 0,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        assert!(self.running.is_none(), "{} is running", self.config.node_id);
        let config = &self.config;
        let mut command = tokend_command();
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&config.data_dir)
            .arg("--cluster")
            .arg(&config.nats_urls)
            .arg("--node-id")
            .arg(&config.node_id)
            .arg("--cluster-name")
            .arg(&config.cluster_name)
            .arg("--cluster-shards")
            .arg(config.shards.to_string());
        if config.allow_unsafe {
            command.arg("--cluster-allow-unsafe");
        }
        command
            .args(&config.args)
            .env("TOKEND_ADMIN_KEY", &config.admin_key);
        for (name, value) in &config.env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tokend binary starts");
        if self.runs > 0 {
            self.earlier.push_str(&self.log.text());
            self.earlier
                .push_str(&format!("----- {} restarted -----\n", config.node_id));
        }
        self.runs += 1;
        self.log = Log::default();
        let drainer = self.log.drain(child.stderr.take().expect("piped stderr"));
        self.running = Some(Running {
            child: Mutex::new(child),
            drainer: Some(drainer),
        });
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// `--node-id`.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// Its data dir.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The HTTP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Whether the process was started and has not been stopped by the
    /// harness (it may have exited on its own: see
    /// [`TokendNode::exit_status`]).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The exit status if the process has exited on its own.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let running = self.running.as_ref()?;
        let status = running.child.lock().try_wait();
        status.expect("the child can be polled")
    }

    /// The status of one `GET /health/ready` (`None`: no answer).
    pub fn ready_status(&self) -> Option<u16> {
        http_get(self.addr(), "/health/ready")
            .ok()
            .map(|(status, _)| status)
    }

    /// Polls `GET /health/ready` until it answers 200; `Err` with the
    /// reason (and the log) when the process exits or `timeout` passes
    /// first.
    pub fn try_wait_ready(&self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut last = None;
        loop {
            last = self.ready_status().or(last);
            if last == Some(200) {
                return Ok(started.elapsed());
            }
            if self.running.is_none() {
                return Err(format!("tokend {} is not running", self.config.node_id));
            }
            if let Some(status) = self.exit_status() {
                // Its stderr has ended: let the drainer catch up.
                self.log.wait_closed(Duration::from_secs(1));
                return Err(format!(
                    "tokend {} exited ({status}) before it was ready; its log:\n{}",
                    self.config.node_id,
                    self.log()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "tokend {} is not ready after {timeout:?} (last /health/ready: {}); its log:\n{}",
                    self.config.node_id,
                    last.map_or("no answer".to_owned(), |s| s.to_string()),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `GET /health/ready` answers 200; panics with the log
    /// when the process exits or `timeout` passes first. Returns how long
    /// it took.
    #[track_caller]
    pub fn wait_ready(&self, timeout: Duration) -> Duration {
        self.try_wait_ready(timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn running(&mut self) -> &mut Running {
        let id = self.config.node_id.clone();
        self.running
            .as_mut()
            .unwrap_or_else(|| panic!("tokend {id} is not running"))
    }

    fn finish(&mut self) -> ExitStatus {
        let mut running = self.running.take().expect("running");
        let status = running.child.get_mut().wait().expect("the child is reaped");
        if let Some(drainer) = running.drainer.take() {
            let _ = drainer.join();
        }
        status
    }

    /// SIGKILL; waits for the process and the end of its log.
    pub fn kill9(&mut self) -> ExitStatus {
        self.running()
            .child
            .get_mut()
            .kill()
            .expect("SIGKILL is delivered");
        self.finish()
    }

    /// SIGSTOP: the process stays but does nothing (its connections stay
    /// open, its NATS session times out), until [`TokendNode::sigcont`].
    pub fn sigstop(&mut self) {
        send_signal(self.running().child.get_mut(), libc::SIGSTOP);
    }

    /// SIGCONT after [`TokendNode::sigstop`].
    pub fn sigcont(&mut self) {
        send_signal(self.running().child.get_mut(), libc::SIGCONT);
    }

    /// SIGTERM (and SIGCONT, in case it is stopped), then waits for the
    /// process to exit; panics with the log if it does not within
    /// [`EXIT_TIMEOUT`]. Returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let child = self.running().child.get_mut();
        if child.try_wait().expect("the child can be polled").is_some() {
            // It had exited on its own.
            return self.finish();
        }
        send_signal(child, libc::SIGTERM);
        send_signal(child, libc::SIGCONT);
        if wait_with_timeout(child, EXIT_TIMEOUT).is_none() {
            self.kill9();
            panic!(
                "tokend {} did not exit within {EXIT_TIMEOUT:?} of SIGTERM; its log:\n{}",
                self.config.node_id,
                self.log()
            );
        }
        self.finish()
    }

    /// Starts the node again (same port, data dir and configuration) after
    /// it was killed or terminated, or kills it first if it still runs;
    /// does not wait for it (see [`TokendNode::wait_ready`]).
    pub fn restart(&mut self) {
        if self.running.is_some() {
            self.kill9();
        }
        self.spawn();
    }

    /// Like [`TokendNode::restart`], with a changed configuration (the port
    /// stays unless the new configuration names one).
    pub fn restart_with(&mut self, config: NodeConfig) {
        if self.running.is_some() {
            self.kill9();
        }
        if let Some(port) = config.port {
            self.port = port;
        }
        self.config = config;
        self.spawn();
    }

    /// Everything it logged so far, earlier runs included (colour codes
    /// removed).
    pub fn log(&self) -> String {
        format!("{}{}", self.earlier, self.log.text())
    }

    /// This run's log, to wait for a line
    /// ([`Log::wait_for_line`]).
    pub fn current_log(&self) -> &Log {
        &self.log
    }
}

impl Drop for TokendNode {
    fn drop(&mut self) {
        if let Some(running) = self.running.as_mut() {
            let child = running.child.get_mut();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
