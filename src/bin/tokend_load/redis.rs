//! The Redis comparison (`--compare-redis`): the issue's throughput target is
//! relative to `redis-server --appendonly yes --appendfsync always`
//! answering `GETDEL` on the same machine in the same run. The profiler
//! starts its own `redis-server` on a free loopback port and a fresh
//! directory, fills it with N distinct keys, then drives `GETDEL` of distinct
//! existing keys — each one deletes, so each goes through the AOF and its
//! fsync before the answer — with the same connections, driver, duration and
//! histograms as the HTTP phases.
//!
//! The RESP client is minimal on purpose: one command in flight per
//! connection, RESP2 replies parsed in place.

use super::affinity::ThreadCpus;
use super::cli::Pinning;
use super::driver::{run_phase, PhasePlan};
use super::error::{Context, LoadError, Result};
use super::http::{connect, fill, send, TransportError};
use super::stats::PhaseSummary;
use super::tokens::TokenPool;
use super::workload::{Answer, Client, Kind, Mix, Next, Workload};
use bytes::BytesMut;
use serde::Serialize;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Value stored under every key: 32 bytes, about a token id's size.
const VALUE: &[u8] = b"tokend-load-redis-value-32-bytes";
/// SETs sent per pipeline while filling Redis: one AOF write + fsync each.
const POPULATE_PIPELINE: u64 = 1000;
/// Connections filling Redis at once.
const POPULATE_CONNECTIONS: u64 = 4;
/// How long `redis-server` may take to answer `PING` after its start.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// Read buffer space ensured before each read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// How long the AOF rewrite after filling may take.
const REWRITE_LIMIT: Duration = Duration::from_secs(600);
/// Largest nesting of arrays accepted in a reply.
const MAX_DEPTH: usize = 8;

/// One RESP2 reply, borrowing the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp<'a> {
    /// `+OK`.
    Simple(&'a [u8]),
    /// `-ERR message`.
    Error(&'a [u8]),
    /// `:42`.
    Integer(i64),
    /// `$n` bulk string; `None` for the nil reply `$-1`.
    Bulk(Option<&'a [u8]>),
    /// `*n` array; `None` for the nil array `*-1`.
    Array(Option<Vec<Resp<'a>>>),
}

/// A malformed reply: the stream cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespError(
    /// What was wrong with the bytes.
    pub String,
);

/// Parses one reply at the start of `buf`: the reply and the bytes it spans,
/// or `None` while incomplete (more bytes are needed).
pub fn parse_reply(buf: &[u8]) -> std::result::Result<Option<(Resp<'_>, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

/// Parses one reply at `buf[at..]`; the length returned counts from 0.
fn parse_at(
    buf: &[u8],
    at: usize,
    depth: usize,
) -> std::result::Result<Option<(Resp<'_>, usize)>, RespError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[at + 1..at + eol];
    let next = at + eol + 2;
    match kind {
        b'+' => Ok(Some((Resp::Simple(line), next))),
        b'-' => Ok(Some((Resp::Error(line), next))),
        b':' => Ok(Some((Resp::Integer(number(line)?), next))),
        b'$' => {
            let len = number(line)?;
            if len == -1 {
                return Ok(Some((Resp::Bulk(None), next)));
            }
            let len = usize::try_from(len).map_err(|_| RespError(format!("bulk length {len}")))?;
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError("bulk string not ended by CRLF".to_owned()));
            }
            Ok(Some((Resp::Bulk(Some(&buf[next..end])), end + 2)))
        }
        b'*' => {
            let count = number(line)?;
            if count == -1 {
                return Ok(Some((Resp::Array(None), next)));
            }
            if depth >= MAX_DEPTH {
                return Err(RespError("arrays nested too deep".to_owned()));
            }
            let count =
                usize::try_from(count).map_err(|_| RespError(format!("array length {count}")))?;
            let mut items = Vec::with_capacity(count.min(1024));
            let mut at = next;
            for _ in 0..count {
                let Some((item, after)) = parse_at(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = after;
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        other => Err(RespError(format!(
            "unknown reply type {:?}",
            char::from(other)
        ))),
    }
}

/// A decimal integer of a reply line.
fn number(line: &[u8]) -> std::result::Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| RespError(format!("not a number: {:?}", String::from_utf8_lossy(line))))
}

/// Appends a command in RESP (an array of bulk strings) to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends the name of key number `i`: `key:` and 12 digits, the names
/// `redis-benchmark -r` gives `key:__rand_int__`, so that its reference
/// run hits the same keys.
pub fn key_name(out: &mut String, i: usize) {
    // Writing into a String cannot fail.
    let _ = write!(out, "key:{i:012}");
}

/// The class of a Redis error reply: its first word (`ERR`, `MISCONF`, …).
fn error_class(message: &[u8]) -> String {
    let word = message.split(|&b| b == b' ').next().unwrap_or(b"");
    format!("redis {}", String::from_utf8_lossy(word))
}

/// One connection to Redis, reopened after a transport error.
pub struct RedisConn {
    /// The server.
    addr: SocketAddr,
    /// The open connection, if any.
    stream: Option<TcpStream>,
    /// The command being sent, encoded; reused.
    out: Vec<u8>,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// Bytes of `read` taken by the last reply, dropped at the next command.
    consumed: usize,
}

impl RedisConn {
    /// A connection to `addr`, opened lazily.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            out: Vec::with_capacity(128),
            read: BytesMut::with_capacity(READ_CHUNK_BYTES),
            consumed: 0,
        }
    }

    /// Opens the connection now (so that connecting is not measured).
    pub async fn open(&mut self) -> std::result::Result<(), TransportError> {
        if self.stream.is_none() {
            self.stream = Some(connect(self.addr).await?);
            self.read.clear();
            self.consumed = 0;
        }
        Ok(())
    }

    /// Sends the commands encoded in `out` and reads `replies` (≥ 1)
    /// replies, passing all but the last to `check`; returns where the last
    /// one starts in `read` (it stays there until the next command). After
    /// a transport error the connection is dropped.
    async fn send_and_read(
        &mut self,
        replies: u64,
        mut check: impl FnMut(&Resp<'_>) -> std::result::Result<(), TransportError>,
    ) -> std::result::Result<usize, TransportError> {
        self.open().await?;
        let outcome = self.round_trip(replies, &mut check).await;
        if outcome.is_err() {
            self.stream = None;
        }
        outcome
    }

    /// [`RedisConn::send_and_read`] on an open connection.
    async fn round_trip(
        &mut self,
        replies: u64,
        check: &mut impl FnMut(&Resp<'_>) -> std::result::Result<(), TransportError>,
    ) -> std::result::Result<usize, TransportError> {
        let stream = send(
            self.stream.as_mut(),
            &mut self.read,
            &mut self.consumed,
            &self.out,
        )
        .await?;
        let (mut at, mut last) = (0, 0);
        for k in 0..replies {
            loop {
                match parse_reply(&self.read[at..]) {
                    Ok(Some((reply, len))) => {
                        if k + 1 < replies {
                            check(&reply)?;
                        }
                        last = at;
                        at += len;
                        break;
                    }
                    Ok(None) => {
                        if !fill(stream, &mut self.read, "recv").await? {
                            return Err(TransportError::new(
                                "recv",
                                "connection closed before the reply",
                            ));
                        }
                    }
                    Err(RespError(e)) => return Err(TransportError::new("protocol", e)),
                }
            }
        }
        self.consumed = at;
        Ok(last)
    }

    /// Sends one command; returns its reply.
    pub async fn command(
        &mut self,
        args: &[&[u8]],
    ) -> std::result::Result<Resp<'_>, TransportError> {
        self.out.clear();
        encode_command(&mut self.out, args);
        let at = self.send_and_read(1, |_| Ok(())).await?;
        self.reply_at(at)
    }

    /// The reply stored at `at` in the read buffer.
    fn reply_at(&self, at: usize) -> std::result::Result<Resp<'_>, TransportError> {
        match parse_reply(self.read.get(at..).unwrap_or(&[])) {
            Ok(Some((reply, _))) => Ok(reply),
            _ => Err(TransportError::new("protocol", "the reply was lost")),
        }
    }

    /// Sets keys `from..to` to [`VALUE`] in one pipeline; every reply must
    /// be `+OK`.
    pub async fn set_keys(
        &mut self,
        from: usize,
        to: usize,
        name: &mut String,
    ) -> std::result::Result<(), TransportError> {
        self.out.clear();
        for i in from..to {
            name.clear();
            key_name(name, i);
            encode_command(&mut self.out, &[b"SET", name.as_bytes(), VALUE]);
        }
        let ok = |reply: &Resp<'_>| match reply {
            Resp::Simple(b"OK") => Ok(()),
            other => Err(TransportError::new(
                "protocol",
                format!("SET answered {other:?}"),
            )),
        };
        let at = self.send_and_read((to - from) as u64, ok).await?;
        ok(&self.reply_at(at)?)
    }
}

impl Client for RedisConn {
    async fn call<'a>(
        &'a mut self,
        _workload: &'a Workload,
        next: Next,
        scratch: &'a mut String,
    ) -> std::result::Result<Answer, TransportError> {
        let (Kind::Getdel, Some(i)) = (next.kind, next.token) else {
            return Err(TransportError::new(
                "request",
                format!("{} cannot be sent to Redis", next.kind.name()),
            ));
        };
        scratch.clear();
        key_name(scratch, i);
        Ok(
            match self.command(&[b"GETDEL", scratch.as_bytes()]).await? {
                Resp::Bulk(Some(_)) => Answer::Ok {
                    win: true,
                    replayed: false,
                },
                // The key was not there: nothing was deleted or written.
                Resp::Bulk(None) => Answer::Error("redis nil (no such key)".to_owned()),
                Resp::Error(message) => Answer::Error(error_class(message)),
                other => Answer::Error(format!("redis unexpected {other:?}")),
            },
        )
    }
}

/// A `redis-server` the profiler started.
pub struct RedisServer {
    /// The process.
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its working directory (the AOF), removed at the end.
    dir: PathBuf,
    /// Its log file.
    log: PathBuf,
}

/// `redis-server` on the `PATH`, or the given binary.
pub fn find_redis(given: Option<&Path>) -> std::result::Result<PathBuf, String> {
    if let Some(path) = given {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(format!("--redis-server {}: no such file", path.display()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| "redis-server is not installed (not on the PATH)".to_owned())
}

/// A loopback port nobody listens on now (bound, then released: another
/// process could take it in between, in which case the start fails clearly).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context(|| "cannot find a free loopback port".to_owned())?;
    Ok(listener
        .local_addr()
        .context(|| "cannot find a free loopback port".to_owned())?
        .port())
}

/// The version `redis-server --version` prints (`v=7.0.15`).
fn redis_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .map(str::to_owned)
}

impl RedisServer {
    /// Starts `bin` durable like the issue's reference (`--appendonly yes
    /// --appendfsync always`, no RDB saves) on a fresh directory, logging
    /// to `log`, every thread of it on `cpu` when given, and waits until it
    /// answers `PING`.
    pub async fn start(bin: &Path, log: &Path, cpu: Option<usize>) -> Result<Self> {
        // Redis changes to `--dir` before it opens `--logfile`: a relative
        // log path would land in (or fail in) the temporary directory.
        let log =
            std::path::absolute(log).context(|| format!("cannot resolve {}", log.display()))?;
        let log = log.as_path();
        // What Redis prints before its log file is open (a bad option, a
        // log file it cannot open) goes to the same file.
        let output = File::options()
            .create(true)
            .append(true)
            .open(log)
            .context(|| format!("cannot open {}", log.display()))?;
        let output_too = output
            .try_clone()
            .context(|| format!("cannot open {}", log.display()))?;
        let dir = super::server::temp_data_dir()?;
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut command = Command::new(bin);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--logfile")
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(output_too));
        if let Some(cpu) = cpu {
            super::affinity::pin_command(&mut command, cpu)?;
        }
        let child = command
            .spawn()
            .context(|| format!("cannot start {}", bin.display()))?;
        let mut server = Self {
            child,
            addr,
            dir,
            log: log.to_owned(),
        };
        let started = Instant::now();
        let mut conn = RedisConn::new(addr);
        loop {
            if let Ok(Resp::Simple(b"PONG")) = conn.command(&[b"PING"]).await {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(LoadError::new(format!(
                    "{} exited at start ({status}); see {}",
                    bin.display(),
                    server.log.display()
                )));
            }
            if started.elapsed() > START_LIMIT {
                return Err(LoadError::new(format!(
                    "{} did not answer PING on {addr} within {} s; see {}",
                    bin.display(),
                    START_LIMIT.as_secs(),
                    server.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Bytes of the AOF files in its directory.
    pub fn aof_bytes(&self) -> u64 {
        fn size(path: &Path) -> u64 {
            match std::fs::read_dir(path) {
                Ok(entries) => entries.flatten().map(|e| size(&e.path())).sum(),
                Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
            }
        }
        size(&self.dir)
    }

    /// Stops it (SIGTERM, SIGKILL after a long wait) and removes its
    /// directory.
    pub fn stop(mut self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| LoadError::new("redis-server pid out of range"))?;
        // SAFETY: kill(2) with the pid of a child we own and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let asked = Instant::now();
        while self
            .child
            .try_wait()
            .context(|| "waiting for redis-server".to_owned())?
            .is_none()
        {
            if asked.elapsed() > STOP_LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_dir_all(&self.dir)
            .context(|| format!("cannot remove {}", self.dir.display()))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // After `stop` this finds the process reaped; on an error path it
        // kills it. The directory goes either way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fills Redis with keys `0..n` over a few pipelined connections.
async fn populate(addr: SocketAddr, n: u64) -> Result<()> {
    let per = n.div_ceil(POPULATE_CONNECTIONS).max(1);
    let mut tasks = Vec::new();
    for c in 0..POPULATE_CONNECTIONS {
        let (from, to) = ((c * per).min(n), ((c + 1) * per).min(n));
        tasks.push(tokio::spawn(async move {
            let mut conn = RedisConn::new(addr);
            let mut name = String::with_capacity(32);
            let mut at = from;
            while at < to {
                let end = (at + POPULATE_PIPELINE).min(to);
                conn.set_keys(at as usize, end as usize, &mut name)
                    .await
                    .map_err(|e| LoadError::new(format!("filling Redis: {e}")))?;
                at = end;
            }
            Ok::<_, LoadError>(())
        }));
    }
    for task in tasks {
        task.await
            .context(|| "a Redis filling task failed".to_owned())??;
    }
    let mut conn = RedisConn::new(addr);
    match conn.command(&[b"DBSIZE"]).await {
        Ok(Resp::Integer(k)) if u64::try_from(k).is_ok_and(|k| k == n) => Ok(()),
        Ok(other) => Err(LoadError::new(format!(
            "Redis holds {other:?} keys after filling {n}"
        ))),
        Err(e) => Err(LoadError::new(format!("DBSIZE: {e}"))),
    }
}

/// The value of `field` in the text of `INFO` (`field:value` lines).
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .find(|(name, _)| *name == field)
        .map(|(_, value)| value)
}

/// Rewrites the AOF once filling is done and waits for the rewrite to end,
/// so that the measured phase starts from a compact AOF: Redis rewrites it
/// on its own once it has grown past 64 MB (`auto-aof-rewrite-min-size`),
/// which the pipelined SETs of a large fill trigger, and a rewrite (a fork
/// and a full write of the data) running during the phase would measure the
/// rewrite, not `GETDEL`. Returns the seconds it took.
async fn settle_aof(addr: SocketAddr) -> Result<f64> {
    let started = Instant::now();
    let mut conn = RedisConn::new(addr);
    match conn.command(&[b"BGREWRITEAOF"]).await {
        // Started, or already running / scheduled: both end the same way.
        Ok(Resp::Simple(_) | Resp::Error(_)) => {}
        Ok(other) => return Err(LoadError::new(format!("BGREWRITEAOF answered {other:?}"))),
        Err(e) => return Err(LoadError::new(format!("BGREWRITEAOF: {e}"))),
    }
    loop {
        let info = match conn.command(&[b"INFO", b"persistence"]).await {
            Ok(Resp::Bulk(Some(text))) => String::from_utf8_lossy(text).into_owned(),
            Ok(other) => return Err(LoadError::new(format!("INFO answered {other:?}"))),
            Err(e) => return Err(LoadError::new(format!("INFO persistence: {e}"))),
        };
        let busy = |field| info_field(&info, field) != Some("0");
        if !busy("aof_rewrite_in_progress") && !busy("aof_rewrite_scheduled") {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > REWRITE_LIMIT {
            return Err(LoadError::new(format!(
                "the AOF rewrite after filling Redis did not end within {} s",
                REWRITE_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `redis-benchmark` said, for reference.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchmarkReference {
    /// The command line (without the binary).
    pub args: Vec<String>,
    /// Requests per second it reported.
    pub requests_per_sec: f64,
    /// Keys still present when it started: its random `GETDEL`s that miss
    /// (the key is gone) delete nothing and write no AOF record.
    pub keys_present: u64,
}

/// The Redis side of the comparison.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisFigures {
    /// The binary.
    pub bin: String,
    /// Its version.
    pub version: Option<String>,
    /// How it ran.
    pub config: &'static str,
    /// Keys filled before the run.
    pub keys: u64,
    /// Seconds filling them took (pipelined SETs).
    pub populate_secs: f64,
    /// Seconds the AOF rewrite after filling took (waited for before the
    /// phase).
    pub aof_rewrite_secs: f64,
    /// The `GETDEL` phase (`errorsByCode` counts nil replies: must be none).
    pub run: PhaseSummary,
    /// AOF bytes once filled, before the `GETDEL` phase.
    pub aof_bytes_before: u64,
    /// AOF bytes at the end of the phase: the growth is the `GETDEL`s'
    /// records (each delete is logged and fsynced before its reply).
    pub aof_bytes: u64,
    /// `redis-benchmark -c C … GETDEL key:__rand_int__`, when asked and
    /// installed.
    pub redis_benchmark: Option<BenchmarkReference>,
    /// `--pin`: the CPUs its threads could run on, read from the kernel
    /// once it was filled (the server's CPU alone when the pinning held).
    pub threads_cpus: Option<ThreadCpus>,
}

/// The command line `make bench` documents for the Redis server.
pub const CONFIG: &str = "--appendonly yes --appendfsync always --save ''";

/// Runs the comparison: start Redis (on the server's CPU with `--pin`), fill
/// `keys` keys, drive `GETDEL` with `connections` connections for
/// `duration`, optionally run `redis-benchmark`, stop Redis.
pub async fn compare(
    bin: &Path,
    log: &Path,
    keys: u64,
    connections: u32,
    duration: Duration,
    benchmark: bool,
    pinning: Option<Pinning>,
) -> Result<RedisFigures> {
    if let Ok(mut f) = File::options().create(true).append(true).open(log) {
        let _ = writeln!(f, "---- tokend-load: starting {} {CONFIG}", bin.display());
    }
    let server = RedisServer::start(bin, log, pinning.map(|p| p.server_cpu)).await?;
    eprintln!(
        "redis: pid {} on {} ({CONFIG}), filling {keys} keys",
        server.pid(),
        server.addr
    );
    let t = Instant::now();
    populate(server.addr, keys).await?;
    let populate_secs = t.elapsed().as_secs_f64();
    let aof_rewrite_secs = settle_aof(server.addr).await?;
    let aof_bytes_before = server.aof_bytes();
    let threads_cpus = pinning
        .map(|_| super::affinity::process_cpus(server.pid()))
        .transpose()?;
    let mut conns = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        let mut conn = RedisConn::new(server.addr);
        conn.open()
            .await
            .map_err(|e| LoadError::new(format!("cannot connect to Redis: {e}")))?;
        conns.push(conn);
    }
    let pool = Arc::new(TokenPool::numbered(keys as usize));
    let workload = Arc::new(Workload::new(Mix::Getdel, Arc::clone(&pool), Vec::new()));
    let plan = PhasePlan {
        name: "redis GETDEL".to_owned(),
        duration,
        rate: None,
        server_pid: Some(server.pid()),
        snapshot: None,
        cpus: pinning.map(Pinning::cpus).unwrap_or_default(),
    };
    let (conns, run) = run_phase(conns, workload, &plan).await?;
    drop(conns);
    let aof_bytes = server.aof_bytes();
    let redis_benchmark = if benchmark {
        let present = keys.saturating_sub(pool.taken() as u64);
        reference(
            server.addr,
            connections,
            keys,
            run.requests,
            present,
            pinning.map(|p| p.load_cpu),
        )
    } else {
        None
    };
    server.stop()?;
    Ok(RedisFigures {
        bin: bin.display().to_string(),
        version: redis_version(bin),
        config: CONFIG,
        keys,
        populate_secs,
        aof_rewrite_secs,
        run,
        aof_bytes_before,
        aof_bytes,
        redis_benchmark,
        threads_cpus,
    })
}

/// Runs `redis-benchmark` (when installed) with the same connections, about
/// as many requests as the measured phase answered, `GETDEL` of random keys
/// among the filled ones, on the load generator's CPU with `--pin`; `None`
/// when it is missing or says nothing usable.
fn reference(
    addr: SocketAddr,
    connections: u32,
    keys: u64,
    requests: u64,
    keys_present: u64,
    cpu: Option<usize>,
) -> Option<BenchmarkReference> {
    let bin = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-benchmark"))
        .find(|p| p.is_file());
    let Some(bin) = bin else {
        eprintln!("redis-benchmark is not installed: no reference figure");
        return None;
    };
    let args: Vec<String> = [
        "-h".to_owned(),
        addr.ip().to_string(),
        "-p".to_owned(),
        addr.port().to_string(),
        "-c".to_owned(),
        connections.to_string(),
        "-n".to_owned(),
        requests.clamp(10_000, 2_000_000).to_string(),
        "-r".to_owned(),
        keys.to_string(),
        "-q".to_owned(),
        "GETDEL".to_owned(),
        "key:__rand_int__".to_owned(),
    ]
    .into();
    eprintln!("redis-benchmark {}", args.join(" "));
    // Blocking is fine here: nothing else runs at this point of the run.
    let mut command = Command::new(&bin);
    command.args(&args).stdin(Stdio::null());
    if let Some(cpu) = cpu {
        super::affinity::pin_command(&mut command, cpu).ok()?;
    }
    let out = command.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = benchmark_rate(&text);
    if rate.is_none() {
        eprintln!("redis-benchmark said nothing usable: {}", text.trim());
    }
    Some(BenchmarkReference {
        args,
        requests_per_sec: rate?,
        keys_present,
    })
}

/// The requests per second of `redis-benchmark -q` output
/// (`GETDEL key:__rand_int__: 61000.00 requests per second, p50=…`); the
/// progress it prints before, separated by `\r`, is skipped.
pub fn benchmark_rate(output: &str) -> Option<f64> {
    output
        .split(['\r', '\n'])
        .filter_map(|line| line.split_once(" requests per second"))
        .filter_map(|(before, _)| before.rsplit([' ', ':']).next()?.parse::<f64>().ok())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` to the parser in pieces of `step` bytes, the way reads
    /// arrive, and collects the replies' debug forms.
    fn replies_in_pieces(stream: &[u8], step: usize) -> Vec<String> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some((reply, len)) = parse_reply(&buf).unwrap() {
                out.push(format!("{reply:?}"));
                buf.drain(..len);
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn parses_replies_split_at_every_byte() {
        let stream: &[u8] = b"+OK\r\n$32\r\ntokend-load-redis-value-32-bytes\r\n$-1\r\n\
            -ERR unknown command 'GETDEL'\r\n:1000000\r\n$0\r\n\r\n\
            *3\r\n$1\r\na\r\n*-1\r\n:-7\r\n$4\r\na\r\nb\r\n";
        let whole = replies_in_pieces(stream, stream.len());
        assert_eq!(
            whole,
            [
                r#"Simple([79, 75])"#.to_owned(),
                format!("Bulk(Some({:?}))", VALUE),
                "Bulk(None)".to_owned(),
                format!("Error({:?})", b"ERR unknown command 'GETDEL'"),
                "Integer(1000000)".to_owned(),
                "Bulk(Some([]))".to_owned(),
                "Array(Some([Bulk(Some([97])), Array(None), Integer(-7)]))".to_owned(),
                // The bulk length counts bytes, CRLF inside included.
                format!("Bulk(Some({:?}))", b"a\r\nb"),
            ]
        );
        for step in 1..8 {
            assert_eq!(replies_in_pieces(stream, step), whole, "step {step}");
        }
    }

    #[test]
    fn rejects_malformed_replies() {
        assert!(parse_reply(b"?what\r\n").is_err());
        assert!(parse_reply(b":12x\r\n").is_err());
        assert!(parse_reply(b"$3\r\nabcd\r\n").is_err());
        assert!(parse_reply(b"$-2\r\n").is_err());
        assert_eq!(parse_reply(b"").unwrap(), None);
        assert_eq!(parse_reply(b"*2\r\n:1\r\n").unwrap(), None);
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse_reply(deep.as_bytes()).is_err());
    }

    #[test]
    fn encodes_commands_and_key_names() {
        let mut out = Vec::new();
        let mut name = String::new();
        key_name(&mut name, 42);
        assert_eq!(name, "key:000000000042");
        encode_command(&mut out, &[b"GETDEL", name.as_bytes()]);
        assert_eq!(out, b"*2\r\n$6\r\nGETDEL\r\n$16\r\nkey:000000000042\r\n");
        assert_eq!(error_class(b"MISCONF Errors writing"), "redis MISCONF");
    }

    #[test]
    fn reads_fields_of_info() {
        let info = "# Persistence\r\nloading:0\r\naof_rewrite_in_progress:1\r\n\
                    aof_rewrite_scheduled:0\r\naof_last_bgrewrite_status:ok\r\n";
        assert_eq!(info_field(info, "aof_rewrite_in_progress"), Some("1"));
        assert_eq!(info_field(info, "aof_rewrite_scheduled"), Some("0"));
        assert_eq!(info_field(info, "aof_rewrite"), None);
        assert_eq!(info_field(info, "# Persistence"), None);
    }

    #[test]
    fn reads_the_rate_of_redis_benchmark() {
        let out = "GETDEL key:__rand_int__: rps=0.0 (overall: nan) avg_msec=nan\r\
            GETDEL key:__rand_int__: 61234.57 requests per second, p50=0.519 msec\n\n";
        assert_eq!(benchmark_rate(out), Some(61234.57));
        let old = "GETDEL key:__rand_int__: 58000.00 requests per second\n";
        assert_eq!(benchmark_rate(old), Some(58000.0));
        assert_eq!(benchmark_rate("Could not connect"), None);
    }
}
