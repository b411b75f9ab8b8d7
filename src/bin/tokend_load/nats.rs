//! The NATS side of the `cluster` profile: three nats-servers with
//! JetStream, clustered on 127.0.0.1, and the measurement of JetStream's raw
//! append rate on them.
//!
//! The servers run as `tools/cluster` runs them: file storage with an fsync
//! before every acknowledgement (`sync_interval: always`), routes to all
//! three. Ports are picked free at start; configs and stores go in the
//! run's temporary directory, logs in the results directory.

use super::error::{Context, LoadError, Result};
use super::http::{Call, Conn, Method, Target};
use super::server::die_with_parent;
use super::stats::{latency_histogram, process_cpu, Percentiles};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use serde::Serialize;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// NATS servers of the cluster: three, for the stream's three replicas.
pub const SERVERS: usize = 3;
/// How long the servers may take to elect a meta leader.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// The stream of the append measurement (its own, beside tokend's).
const APPEND_STREAM: &str = "tokend_load_append";

/// The nats-server binary: `--nats-server`, else `TOKEND_NATS_SERVER` (clap
/// reads both into the same flag).
pub fn find_nats_server(given: Option<&Path>) -> Result<PathBuf> {
    let Some(path) = given else {
        return Err(LoadError::new(
            "the cluster profile needs a nats-server: pass --nats-server PATH or set \
             TOKEND_NATS_SERVER (`make bench-cluster` installs the pinned one with \
             tools/nats/install)",
        ));
    };
    if !path.is_file() {
        return Err(LoadError::new(format!(
            "--nats-server {}: no such file",
            path.display()
        )));
    }
    Ok(path.to_owned())
}

/// `count` free ports on 127.0.0.1 (bound together, so they differ, then
/// released).
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context(|| "no free port on 127.0.0.1".to_owned())?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .context(|| "no free port on 127.0.0.1".to_owned())
}

/// One nats-server.
struct NatsServer {
    /// `nats-1` …
    name: String,
    /// Client port.
    client_port: u16,
    /// Monitoring port (`/healthz`, `/jsz`).
    http_port: u16,
    /// Its log.
    log: PathBuf,
    /// The process.
    child: Child,
}

/// Three nats-servers clustered with JetStream. Dropping it kills them.
pub struct NatsCluster {
    /// The servers.
    servers: Vec<NatsServer>,
}

/// The config of one server.
fn config(name: &str, ports: [u16; 3], store: &Path, routes: &[String]) -> String {
    let [client, cluster, http] = ports;
    format!(
        "server_name: {name}\n\
         listen: 127.0.0.1:{client}\n\
         http: 127.0.0.1:{http}\n\
         jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n\
         cluster {{\n  name: tokend-load\n  listen: 127.0.0.1:{cluster}\n  routes: [\n{}\n  ]\n}}\n",
        routes
            .iter()
            .map(|r| format!("    {r}"))
            .collect::<Vec<_>>()
            .join("\n"),
        store = store.display().to_string(),
    )
}

/// A plain `GET` of a monitoring endpoint: status and body.
async fn monitor_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let target = Target::from_addr(addr)?;
    let mut conn = Conn::new(&target, None)?;
    let reply = conn
        .send_within(
            Call {
                method: Method::Get,
                path,
                body: None,
            },
            Duration::from_secs(2),
        )
        .await
        .map_err(|e| LoadError::new(format!("GET {path}: {e}")))?;
    Ok((reply.status, reply.text()))
}

impl NatsCluster {
    /// Starts the servers (configs and stores under `dir`, logs under
    /// `logs`) and waits until JetStream is up on each and a meta leader is
    /// elected.
    pub async fn start(bin: &Path, dir: &Path, logs: &Path) -> Result<Self> {
        let ports = free_ports(3 * SERVERS)?;
        let routes: Vec<String> = (0..SERVERS)
            .map(|i| format!("nats-route://127.0.0.1:{}", ports[3 * i + 1]))
            .collect();
        let mut cluster = Self {
            servers: Vec::new(),
        };
        for i in 0..SERVERS {
            let name = format!("nats-{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store)
                .context(|| format!("cannot create {}", store.display()))?;
            let conf = dir.join(format!("{name}.conf"));
            let server_ports = [ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]];
            std::fs::write(&conf, config(&name, server_ports, &store, &routes))
                .context(|| format!("cannot write {}", conf.display()))?;
            let log = logs.join(format!("{name}.log"));
            let file = File::create(&log).context(|| format!("cannot create {}", log.display()))?;
            let err = file
                .try_clone()
                .context(|| format!("cannot open {}", log.display()))?;
            let mut command = Command::new(bin);
            command
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(err);
            die_with_parent(&mut command);
            let child = command
                .spawn()
                .context(|| format!("cannot start {}", bin.display()))?;
            cluster.servers.push(NatsServer {
                name,
                client_port: server_ports[0],
                http_port: server_ports[2],
                log,
                child,
            });
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Why server `i` is not ready, or `None`.
    async fn not_ready(&mut self, i: usize) -> Result<Option<String>> {
        let server = &mut self.servers[i];
        if let Some(status) = server
            .child
            .try_wait()
            .context(|| format!("cannot poll {}", server.name))?
        {
            return Err(LoadError::new(format!(
                "{} exited ({status}); see {}",
                server.name,
                server.log.display()
            )));
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], server.http_port));
        match monitor_get(addr, "/healthz").await {
            Ok((200, _)) => {}
            Ok((status, body)) => return Ok(Some(format!("/healthz: {status} {}", body.trim()))),
            Err(e) => return Ok(Some(e.to_string())),
        }
        let body = match monitor_get(addr, "/jsz").await {
            Ok((200, body)) => body,
            Ok((status, _)) => return Ok(Some(format!("/jsz: {status}"))),
            Err(e) => return Ok(Some(e.to_string())),
        };
        let jsz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match jsz["meta_cluster"]["leader"].as_str() {
            Some(leader) if !leader.is_empty() => Ok(None),
            _ => Ok(Some("no JetStream meta leader yet".to_owned())),
        }
    }

    /// Waits until every server is ready.
    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            let mut waiting = Vec::new();
            for i in 0..self.servers.len() {
                if let Some(why) = self.not_ready(i).await? {
                    waiting.push(format!("{}: {why}", self.servers[i].name));
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if started.elapsed() > READY_LIMIT {
                return Err(LoadError::new(format!(
                    "the NATS servers were not ready within {} s ({}); see their logs in {}",
                    READY_LIMIT.as_secs(),
                    waiting.join("; "),
                    self.log_dir()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where the logs are, for messages.
    pub fn log_dir(&self) -> String {
        self.servers
            .first()
            .and_then(|s| s.log.parent())
            .map_or("?".to_owned(), |d| d.display().to_string())
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect()
    }

    /// Name and pid of each server.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.servers
            .iter()
            .map(|s| (s.name.clone(), s.child.id()))
            .collect()
    }

    /// SIGTERM to every server, then waits for each (SIGKILL after a
    /// while).
    pub fn stop(mut self) {
        for server in &self.servers {
            if let Ok(pid) = libc::pid_t::try_from(server.child.id()) {
                // SAFETY: kill(2) with the pid of a child we own and have not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let asked = Instant::now();
        for server in &mut self.servers {
            while matches!(server.child.try_wait(), Ok(None)) {
                if asked.elapsed() > STOP_LIMIT {
                    eprintln!(
                        "warning: {} did not exit within {} s of SIGTERM: SIGKILL",
                        server.name,
                        STOP_LIMIT.as_secs()
                    );
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // After `stop` the children are reaped and this does nothing.
        for server in &mut self.servers {
            if let Ok(None) = server.child.try_wait() {
                let _ = server.child.kill();
                let _ = server.child.wait();
            }
        }
    }
}

/// One measurement of JetStream's append rate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendFigures {
    /// Concurrent publishers, each on its own subject.
    pub publishers: u32,
    /// Bytes per message.
    pub message_bytes: u32,
    /// Seconds from the first publish to the last acknowledgement.
    pub secs: f64,
    /// Acknowledged messages.
    pub messages: u64,
    /// Acknowledged messages per second.
    pub messages_per_sec: f64,
    /// Publishes that failed (a publisher stops at its first failure).
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Time from publish to acknowledgement, ms.
    pub ack_ms: Percentiles,
    /// CPU seconds of the NATS servers together.
    pub nats_cpu_secs: Option<f64>,
    /// NATS CPU per acknowledged message, µs.
    pub nats_cpu_per_message_us: Option<f64>,
}

/// What one publisher did.
struct PublisherOutcome {
    /// Acknowledged messages.
    acked: u64,
    /// Publish-to-acknowledgement latency, µs.
    latency: hdrhistogram::Histogram<u64>,
    /// Its failure, if any.
    error: Option<String>,
}

/// One publisher: appends `payload` to `subject` until `deadline`, each
/// publish conditional on the subject's last sequence (as tokend appends a
/// shard's log: `Nats-Expected-Last-Subject-Sequence` and a message id)
/// and waiting for its acknowledgement before the next.
async fn publish_until(
    js: jetstream::Context,
    subject: String,
    payload: bytes::Bytes,
    deadline: Instant,
) -> Result<PublisherOutcome> {
    let mut outcome = PublisherOutcome {
        acked: 0,
        latency: latency_histogram()?,
        error: None,
    };
    let mut last = 0u64;
    while Instant::now() < deadline {
        let message = PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("{subject}-{}", outcome.acked))
            .expected_last_subject_sequence(last);
        let sent = Instant::now();
        let acked = match js.send_publish(subject.clone(), message).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) if ack.duplicate => {
                outcome.error = Some(format!("{subject}: acknowledged as a duplicate"));
                break;
            }
            Ok(ack) => {
                last = ack.sequence;
                outcome.acked += 1;
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = outcome.latency.record(us.max(1));
            }
            Err(e) => {
                outcome.error = Some(format!("{subject}: {e}"));
                break;
            }
        }
    }
    Ok(outcome)
}

/// JetStream's raw append rate on `urls`: for each count of `publishers`,
/// that many concurrent publishers (spread over one client connection per
/// server) append `message_bytes`-byte messages for `secs` to their own
/// subjects of one stream with three replicas on file storage. `nats_pids`
/// are the servers, whose CPU time is counted.
pub async fn measure_appends(
    urls: &[String],
    nats_pids: &[u32],
    publishers: &[u32],
    message_bytes: u32,
    secs: u64,
) -> Result<Vec<AppendFigures>> {
    let mut clients = Vec::with_capacity(urls.len());
    for url in urls {
        let client = async_nats::ConnectOptions::new()
            .connect(url.as_str())
            .await
            .context(|| format!("cannot connect to {url}"))?;
        clients.push(jetstream::new(client));
    }
    let Some(js) = clients.first() else {
        return Err(LoadError::new("no NATS server to measure"));
    };
    let _ = js.delete_stream(APPEND_STREAM).await;
    js.create_stream(stream::Config {
        name: APPEND_STREAM.to_owned(),
        subjects: vec![format!("{APPEND_STREAM}.>")],
        num_replicas: SERVERS,
        storage: stream::StorageType::File,
        description: Some("tokend-load: JetStream's raw append rate".into()),
        ..Default::default()
    })
    .await
    .context(|| format!("cannot create stream {APPEND_STREAM}"))?;
    let payload = bytes::Bytes::from(vec![b'x'; message_bytes as usize]);
    let mut all = Vec::with_capacity(publishers.len());
    for (round, &count) in publishers.iter().enumerate() {
        let cpu_before: Option<Vec<Duration>> =
            nats_pids.iter().map(|&pid| process_cpu(pid)).collect();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(secs);
        let mut tasks = Vec::with_capacity(count as usize);
        for p in 0..count as usize {
            let js = clients[p % clients.len()].clone();
            let subject = format!("{APPEND_STREAM}.r{round}.p{p}");
            tasks.push(tokio::spawn(publish_until(
                js,
                subject,
                payload.clone(),
                deadline,
            )));
        }
        let mut outcomes = Vec::with_capacity(tasks.len());
        for task in tasks {
            outcomes.push(
                task.await
                    .context(|| "a publisher task failed".to_owned())??,
            );
        }
        let took = started.elapsed().as_secs_f64();
        let cpu_after: Option<Vec<Duration>> =
            nats_pids.iter().map(|&pid| process_cpu(pid)).collect();
        let mut latency = latency_histogram()?;
        let (mut messages, mut errors, mut first_error) = (0u64, 0u64, None);
        for outcome in outcomes {
            messages += outcome.acked;
            latency
                .add(&outcome.latency)
                .context(|| "merging histograms".to_owned())?;
            if let Some(e) = outcome.error {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
        let nats_cpu_secs = cpu_before.zip(cpu_after).map(|(before, after)| {
            before
                .iter()
                .zip(&after)
                .map(|(b, a)| a.saturating_sub(*b).as_secs_f64())
                .sum::<f64>()
        });
        let figures = AppendFigures {
            publishers: count,
            message_bytes,
            secs: took,
            messages,
            messages_per_sec: messages as f64 / took.max(1e-9),
            errors,
            first_error,
            ack_ms: Percentiles::of(&latency),
            nats_cpu_secs,
            nats_cpu_per_message_us: nats_cpu_secs.map(|c| c * 1e6 / messages.max(1) as f64),
        };
        eprintln!(
            "jetstream append: {count} publishers, {:.0} messages/s, p99 {:.2} ms, {} errors",
            figures.messages_per_sec, figures.ack_ms.p99, figures.errors
        );
        all.push(figures);
    }
    let _ = js.delete_stream(APPEND_STREAM).await;
    Ok(all)
}
