//! Real nats-servers with JetStream, clustered on 127.0.0.1.

use super::{free_ports, http_get, tail, EXIT_TIMEOUT, READY_TIMEOUT};
use crate::process::{send_signal, wait_with_timeout};
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary: `TOKEND_NATS_SERVER`, which `make test-cluster`
/// sets to the pinned build it installs. Panics when it is unset or does not
/// exist.
pub fn nats_server_binary() -> PathBuf {
    const HOW: &str = "run the cluster suite with `make test-cluster`, which installs the pinned \
                       nats-server (tools/nats/install) and sets TOKEND_NATS_SERVER to its path";
    let Some(path) = std::env::var_os("TOKEND_NATS_SERVER") else {
        panic!("TOKEND_NATS_SERVER is not set: {HOW}");
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "TOKEND_NATS_SERVER is {}, which does not exist: {HOW}",
        path.display()
    );
    path
}

/// One server of a [`NatsCluster`]: its ports, files and process.
struct NatsServer {
    name: String,
    client_port: u16,
    cluster_port: u16,
    http_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    fn monitor(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// Starts the server. It gets SIGKILL when the thread that started it
    /// ends (Linux ties the parent-death signal to the thread), so no server
    /// outlives a test binary that exits or dies before dropping it; start
    /// servers from a thread that outlives them (a test's own thread does).
    fn spawn(&mut self, binary: &Path) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the server's log file opens");
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file handle is cloned"))
            .stderr(log);
        let parent = libc::pid_t::try_from(std::process::id()).expect("a pid");
        // SAFETY: between fork and exec the closure only makes two
        // async-signal-safe system calls and allocates nothing on success.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl took effect.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the test process is gone"));
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts ({}): {e}", self.name, binary.display()));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Why this server is not ready yet, or `None` when it is: `/healthz`
    /// answers 200 (JetStream is up, in contact with a meta leader when
    /// clustered, its streams and consumers current) and, when clustered,
    /// `/jsz` names the meta leader and a leader for every stream this
    /// server holds.
    fn not_ready(&mut self, clustered: bool) -> Option<String> {
        let Some(child) = self.child.as_mut() else {
            return Some("not running".to_owned());
        };
        if let Some(status) = child.try_wait().expect("the child can be polled") {
            return Some(format!("exited ({status})"));
        }
        match http_get(self.monitor(), "/healthz") {
            Ok((200, _)) => {}
            Ok((status, body)) => return Some(format!("/healthz: {status} {}", body.trim())),
            Err(e) => return Some(format!("/healthz: {e}")),
        }
        if clustered {
            let body = match http_get(self.monitor(), "/jsz?streams=true") {
                Ok((200, body)) => body,
                Ok((status, body)) => return Some(format!("/jsz: {status} {}", body.trim())),
                Err(e) => return Some(format!("/jsz: {e}")),
            };
            let jsz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match jsz["meta_cluster"]["leader"].as_str() {
                Some(leader) if !leader.is_empty() => {}
                _ => return Some("/jsz: no meta leader yet".to_owned()),
            }
            // After a restart, each replicated stream elects its own leader;
            // until then requests on it time out.
            let accounts = jsz["account_details"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for account in &accounts {
                for stream in account["stream_detail"].as_array().into_iter().flatten() {
                    let leader = stream["cluster"]["leader"].as_str().unwrap_or("");
                    if stream["cluster"].is_object() && leader.is_empty() {
                        return Some(format!("/jsz: stream {} has no leader yet", stream["name"]));
                    }
                }
            }
        }
        None
    }
}

/// `n` nats-servers with JetStream (file storage, `sync_interval: always`),
/// clustered with each other when `n > 1`, on ports picked free at start,
/// with their configs, store dirs and logs in a temporary directory.
/// Dropping it kills every server.
pub struct NatsCluster {
    binary: PathBuf,
    servers: Vec<NatsServer>,
    /// Declared last: removed after the servers are killed.
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` servers (`nats-1` … `nats-n`, cluster `tokend-test`) and
    /// waits until JetStream is ready on all of them and, for more than
    /// one, a meta leader has been elected.
    pub fn start(n: usize) -> NatsCluster {
        Self::start_listening(n, "127.0.0.1")
    }

    /// Like [`NatsCluster::start`], with client connections accepted on
    /// `client_host` (`0.0.0.0`: from other network namespaces too).
    pub fn start_listening(n: usize, client_host: &str) -> NatsCluster {
        assert!(n >= 1, "at least one nats-server");
        let binary = nats_server_binary();
        let dir = tempfile::Builder::new()
            .prefix("tokend-cluster-nats-")
            .tempdir()
            .expect("a temporary directory");
        let ports = free_ports(3 * n);
        let routes: Vec<String> = (0..n)
            .map(|i| format!("nats-route://127.0.0.1:{}", ports[3 * i + 1]))
            .collect();
        let servers = (0..n)
            .map(|i| {
                let name = format!("nats-{}", i + 1);
                let server = NatsServer {
                    client_port: ports[3 * i],
                    cluster_port: ports[3 * i + 1],
                    http_port: ports[3 * i + 2],
                    config: dir.path().join(format!("{name}.conf")),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    child: None,
                };
                let store = dir.path().join(&server.name);
                std::fs::create_dir_all(&store).expect("the store dir is created");
                std::fs::write(
                    &server.config,
                    config(&server, &store, &routes, client_host),
                )
                .expect("the config is written");
                server
            })
            .collect();
        let mut cluster = NatsCluster {
            binary,
            servers,
            dir,
        };
        cluster.start_all_again();
        cluster
    }

    /// The client port of server `i`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.servers[i].client_port
    }

    /// How many servers there are (running or not).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are none (never: `start` needs one).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// `nats://127.0.0.1:PORT` of server `i` (0-based).
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client_port)
    }

    /// Every server's URL, comma-separated, as `tokend serve --cluster`
    /// takes them.
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    /// Every server's URL.
    pub fn url_list(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.url(i)).collect()
    }

    /// The monitoring address (`/healthz`, `/varz`, `/jsz`) of server `i`.
    pub fn monitor_addr(&self, i: usize) -> SocketAddr {
        self.servers[i].monitor()
    }

    /// The server name (`server_name`) of server `i`: `nats-{i+1}`.
    pub fn name(&self, i: usize) -> &str {
        &self.servers[i].name
    }

    /// Whether server `i` is running (started and not killed or stopped).
    pub fn is_running(&self, i: usize) -> bool {
        self.servers[i].child.is_some()
    }

    /// SIGKILL to server `i`; waits until it is gone.
    pub fn kill(&mut self, i: usize) {
        let server = &mut self.servers[i];
        let child = server
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{} is not running", server.name));
        child.kill().expect("SIGKILL is delivered");
        child.wait().expect("the child is reaped");
        server.child = None;
    }

    /// Starts server `i` again after [`NatsCluster::kill`] or
    /// [`NatsCluster::stop_all`], with the same ports, config and store.
    /// Does not wait: with a majority of the servers down it cannot become
    /// ready on its own (see [`NatsCluster::wait_ready`]).
    pub fn start_again(&mut self, i: usize) {
        let binary = self.binary.clone();
        self.servers[i].spawn(&binary);
    }

    /// SIGTERM to every running server, then waits for each to exit
    /// (SIGKILL after a timeout).
    pub fn stop_all(&mut self) {
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            send_signal(server.child.as_ref().expect("running"), libc::SIGTERM);
        }
        for server in &mut self.servers {
            let Some(child) = server.child.as_mut() else {
                continue;
            };
            if wait_with_timeout(child, EXIT_TIMEOUT).is_none() {
                eprintln!(
                    "{} did not exit within {EXIT_TIMEOUT:?} of SIGTERM: SIGKILL",
                    server.name
                );
                server.kill();
            }
            server.child = None;
        }
    }

    /// Starts every server that is not running, then waits until all are
    /// ready (as after [`NatsCluster::start`]).
    pub fn start_all_again(&mut self) {
        let binary = self.binary.clone();
        for server in self.servers.iter_mut().filter(|s| s.child.is_none()) {
            server.spawn(&binary);
        }
        self.wait_ready(READY_TIMEOUT);
    }

    /// Waits until every running server is ready: JetStream up and, when
    /// clustered, a meta leader known. Panics with the servers' logs after
    /// `timeout`, or when one exits.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let clustered = self.servers.len() > 1;
        let deadline = Instant::now() + timeout;
        loop {
            let waiting: Vec<String> = self
                .servers
                .iter_mut()
                .filter(|s| s.child.is_some())
                .filter_map(|s| {
                    s.not_ready(clustered)
                        .map(|why| format!("{}: {why}", s.name))
                })
                .collect();
            if waiting.is_empty() {
                return;
            }
            let exited = waiting.iter().any(|w| w.contains(": exited ("));
            if exited || Instant::now() >= deadline {
                panic!(
                    "the NATS servers are not ready after {:?}:\n{}\n{}",
                    timeout,
                    waiting.join("\n"),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Server `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        self.servers[i].log_text()
    }

    /// The last lines of every server's log, for failure messages.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("===== {} =====\n{}\n", s.name, tail(&s.log_text(), 60)))
            .collect()
    }

    /// The directory of the configs, stores and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
    }
}

/// The config of one server: JetStream on `store` with an fsync before
/// every acknowledgement, and, when there are several servers, routes to
/// all of them. Servers do not advertise each other's client addresses:
/// nodes are given every server's url, and a node cut off from NATS in a
/// partition test must not find a way back through an advertised address.
fn config(server: &NatsServer, store: &Path, routes: &[String], client_host: &str) -> String {
    let mut config = format!(
        "server_name: {name}\n\
         listen: {client_host}:{client}\n\
         http: 127.0.0.1:{http}\n\
         jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n",
        name = server.name,
        client = server.client_port,
        http = server.http_port,
        store = store.display().to_string(),
    );
    if routes.len() > 1 {
        config.push_str(&format!(
            "cluster {{\n  name: tokend-test\n  listen: 127.0.0.1:{}\n  no_advertise: true\n  routes: [\n{}\n  ]\n}}\n",
            server.cluster_port,
            routes
                .iter()
                .map(|r| format!("    {r}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    config
}
