//! Local shard servers as child processes: SecantusDB's `secantusd-py` by
//! default, or any mongod-compatible binary named by `SHARDGATE_SHARD_BIN`
//! (a real `mongod` gets the same settings through its own flags). Each
//! server binds 127.0.0.1 on a free port, is ready once it answers `hello`,
//! and is killed (with its process group) when dropped, even on a panic.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::BytesMut;
use shardgate_wire::{check_frame, Message, OpMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which flag dialect the shard binary speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardKind {
    /// SecantusDB (`secantusd-py`): `--port --storage-path`.
    Secantus,
    /// A real `mongod`: `--port --dbpath --bind_ip`.
    Mongod,
}

/// How to start shard servers.
#[derive(Debug, Clone)]
pub struct ShardLauncher {
    /// The server binary.
    pub bin: PathBuf,
    /// Its flag dialect.
    pub kind: ShardKind,
    /// More flags for every server started (`--auth`, TLS files).
    pub extra_args: Vec<String>,
}

impl ShardLauncher {
    /// `SHARDGATE_SHARD_BIN` (dialect from `SHARDGATE_SHARD_KIND`, else from
    /// the file name), else `.venv/bin/secantusd-py` in the project.
    pub fn from_env() -> anyhow::Result<ShardLauncher> {
        let bin = match std::env::var_os("SHARDGATE_SHARD_BIN") {
            Some(b) => PathBuf::from(b),
            None => default_bin()?,
        };
        let kind = match std::env::var("SHARDGATE_SHARD_KIND").ok().as_deref() {
            Some("mongod") => ShardKind::Mongod,
            Some("secantus") => ShardKind::Secantus,
            Some(other) => {
                bail!("SHARDGATE_SHARD_KIND must be 'secantus' or 'mongod', got {other:?}")
            }
            None if bin
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mongod")) =>
            {
                ShardKind::Mongod
            }
            None => ShardKind::Secantus,
        };
        Ok(ShardLauncher {
            bin,
            kind,
            extra_args: Vec::new(),
        })
    }

    /// Starts a server on a free port storing in `dir`; waits until ready.
    pub async fn start(&self, dir: &Path, test_commands: bool) -> anyhow::Result<ShardProcess> {
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match self.start_on(port, dir, test_commands).await {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("shard did not start")))
    }

    /// Starts a server on `port` storing in `dir`; waits until ready.
    pub async fn start_on(
        &self,
        port: u16,
        dir: &Path,
        test_commands: bool,
    ) -> anyhow::Result<ShardProcess> {
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join("shard.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&self.bin);
        let data = dir.join("data");
        match self.kind {
            ShardKind::Secantus => {
                cmd.arg("--host")
                    .arg("127.0.0.1")
                    .arg("--port")
                    .arg(port.to_string());
                cmd.arg("--storage-path")
                    .arg(&data)
                    .arg("--log-level")
                    .arg("WARNING");
                if test_commands {
                    cmd.arg("--enable-test-commands");
                }
            }
            ShardKind::Mongod => {
                std::fs::create_dir_all(&data)?;
                cmd.arg("--bind_ip")
                    .arg("127.0.0.1")
                    .arg("--port")
                    .arg(port.to_string());
                cmd.arg("--dbpath").arg(&data);
                if test_commands {
                    cmd.arg("--setParameter").arg("enableTestCommands=1");
                }
            }
        }
        cmd.args(&self.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; it asks the kernel to kill the
        // server if this process dies without running destructors.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start shard server {}", self.bin.display()))?;
        let mut process = ShardProcess {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            log_path,
        };
        process.wait_ready(Duration::from_secs(60)).await?;
        Ok(process)
    }
}

fn default_bin() -> anyhow::Result<PathBuf> {
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/secantusd-py"),
        PathBuf::from(".venv/bin/secantusd-py"),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("no shard server: run scripts/setup.sh (installs SecantusDB into .venv) or set SHARDGATE_SHARD_BIN"))
}

/// A free loopback port, from below the ephemeral range (see
/// [`shardgate_config_store::loopback`]).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(shardgate_config_store::loopback::free_port()?)
}

/// A running shard server; killed on drop.
#[derive(Debug)]
pub struct ShardProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log_path: PathBuf,
}

impl ShardProcess {
    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server (and its process group) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain syscall on the group we created.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server cleanly (SIGTERM, so it flushes its data), killing
    /// it if it has not exited within 15 s.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: plain syscall on our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }

    /// Waits until the server answers `hello`.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                    bail!("shard server exited with {status}: {}", tail(&log));
                }
            }
            if hello(&self.address()).await.is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                self.kill();
                bail!(
                    "shard server on port {} not ready after {timeout:?}: {}",
                    self.port,
                    tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ShardProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Sends `hello` to `address` over OP_MSG and checks `ok: 1`.
pub async fn hello(address: &str) -> anyhow::Result<()> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await??;
    let body = bson::doc! {"hello": 1, "$db": "admin"}.to_vec()?;
    s.write_all(&OpMsg::from_body(body).encode(1, 0)).await?;
    let mut buf = BytesMut::new();
    let frame = loop {
        if let Some(len) = check_frame(&buf)? {
            break buf.split_to(len).freeze();
        }
        let n = tokio::time::timeout(Duration::from_secs(2), s.read_buf(&mut buf)).await??;
        if n == 0 {
            bail!("closed");
        }
    };
    match Message::decode(frame)?.message {
        Message::Msg(m) if m.body().get_f64("ok").ok() == Some(1.0) => Ok(()),
        other => bail!("unexpected hello reply {other:?}"),
    }
}
