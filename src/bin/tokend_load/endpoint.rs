//! The server a run talks to: one the profiler spawned (and stops), or an
//! external `--target`.

use super::cli::Args;
use super::error::{Context, LoadError, Result};
use super::http::Target;
use super::report::ServerInfo;
use super::server::{find_binary, temp_data_dir, Server, ServerSpec};
use std::path::PathBuf;

/// The server of a run.
pub struct Endpoint {
    /// Where requests go.
    pub target: Target,
    /// The admin key.
    pub admin_key: String,
    /// The spawned server and how it was started.
    pub spawned: Option<(Server, ServerSpec)>,
    /// Whether the data dir is removed at the end.
    remove_data: bool,
}

/// A random admin key for a spawned server.
pub fn random_admin_key() -> Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).context(|| "no randomness for the admin key".to_owned())?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("tkadmin_load_{hex}"))
}

/// A keyring of one data key generated for the run (`TOKEND_DATA_KEY`).
fn random_data_key() -> Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).context(|| "no randomness for the data key".to_owned())?;
    Ok(format!(
        "load:{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// How to spawn the server for `args`, logging to `log`.
pub fn spec(args: &Args, log: PathBuf) -> Result<(ServerSpec, bool)> {
    let bin = find_binary(args.server_bin.as_deref())?;
    let (data_dir, remove) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
            let empty = std::fs::read_dir(dir)
                .context(|| format!("cannot read {}", dir.display()))?
                .next()
                .is_none();
            if !empty {
                return Err(LoadError::new(format!(
                    "--data-dir {}: not empty (the profiler needs a fresh data dir)",
                    dir.display()
                )));
            }
            (dir.clone(), false)
        }
        None => (temp_data_dir()?, !args.keep_data),
    };
    let admin_key = match &args.admin_key {
        Some(key) => key.clone(),
        None => random_admin_key()?,
    };
    Ok((
        ServerSpec {
            bin,
            data_dir,
            fsync: args.fsync.name().to_owned(),
            shards: args.shards,
            http_workers: args.http_workers,
            cpu: args.pinning().map(|p| p.server_cpu),
            admin_key,
            log,
            extra_args: Vec::new(),
            data_key: args.data_key_env.then(random_data_key).transpose()?,
        },
        remove,
    ))
}

impl Endpoint {
    /// Spawns a server or resolves `--target`.
    pub fn open(args: &Args, log: PathBuf) -> Result<Self> {
        if let Some(url) = &args.target {
            let admin_key = args.admin_key.clone().ok_or_else(|| {
                LoadError::new("--target needs --admin-key (or TOKEND_ADMIN_KEY)")
            })?;
            return Ok(Self {
                target: Target::from_url(url)?,
                admin_key,
                spawned: None,
                remove_data: false,
            });
        }
        let (spec, remove_data) = spec(args, log)?;
        eprintln!(
            "starting {} (fsync {}, data dir {}, log {}{})",
            spec.bin.display(),
            spec.fsync,
            spec.data_dir.display(),
            spec.log.display(),
            spec.cpu
                .map_or(String::new(), |cpu| format!(", pinned to CPU {cpu}"))
        );
        let server = Server::start(&spec)?;
        eprintln!("server pid {} ready on {}", server.pid(), server.addr);
        Ok(Self {
            target: Target::from_addr(server.addr)?,
            admin_key: spec.admin_key.clone(),
            spawned: Some((server, spec)),
            remove_data,
        })
    }

    /// Stops a spawned server (SIGTERM), removes a temporary data dir, and
    /// describes the server.
    pub fn close(mut self) -> Result<ServerInfo> {
        let mut info = ServerInfo {
            spawned: self.spawned.is_some(),
            url: self.target.url(),
            bin: None,
            fsync: None,
            shards: None,
            http_workers: None,
            exit_code: None,
            stop_secs: None,
        };
        if let Some((server, spec)) = self.spawned.take() {
            let (status, took) = server.stop()?;
            info.bin = Some(spec.bin.display().to_string());
            info.fsync = Some(spec.fsync.clone());
            info.shards = spec.shards;
            info.http_workers = spec.http_workers;
            info.exit_code = status.code();
            info.stop_secs = Some(took.as_secs_f64());
            if !status.success() {
                eprintln!(
                    "warning: the server exited with {status} after SIGTERM; see {}",
                    spec.log.display()
                );
            }
            if self.remove_data {
                std::fs::remove_dir_all(&spec.data_dir)
                    .context(|| format!("cannot remove {}", spec.data_dir.display()))?;
            }
        }
        Ok(info)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Only reached with a server still running on an error path: the
        // server is killed by its own drop; the temporary data dir goes too.
        if let Some((server, spec)) = self.spawned.take() {
            drop(server);
            if self.remove_data {
                let _ = std::fs::remove_dir_all(&spec.data_dir);
            }
        }
    }
}
