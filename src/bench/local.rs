//! `--start-shards N`: a throw-away local cluster to measure — `N` shard
//! servers ([`ShardLauncher::from_env`]: `SHARDGATE_SHARD_BIN`, else
//! SecantusDB's `secantusd-py`), a `shardgate serve` child process (this
//! binary) on the embedded store with them added, and one more shard server
//! outside the cluster for the one-shard comparison. Everything lives in a
//! temporary directory and is killed when the cluster is dropped.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use bson::doc;

use crate::shard_process::{free_port, ShardLauncher, ShardProcess};

/// How long the router may take to answer `ping`.
const ROUTER_READY: Duration = Duration::from_secs(30);

/// The running local cluster.
pub struct LocalCluster {
    /// The cluster's shards, then the standalone one.
    shards: Vec<ShardProcess>,
    router: Child,
    /// The router's connection string.
    pub router_uri: String,
    /// The standalone shard's connection string (`directConnection=true`).
    pub standalone_uri: String,
    _dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts `n` cluster shards, the standalone shard and the router.
    pub async fn start(n: usize) -> anyhow::Result<LocalCluster> {
        let launcher = ShardLauncher::from_env()?;
        let dir = tempfile::Builder::new()
            .prefix("shardgate-bench-")
            .tempdir()?;
        eprintln!(
            "bench: starting {n} + 1 shard servers ({}) and a router in {}",
            launcher.bin.display(),
            dir.path().display()
        );
        let starts = (0..=n).map(|i| {
            let (launcher, d) = (launcher.clone(), dir.path().join(format!("shard{i}")));
            async move { launcher.start(&d, false).await }
        });
        let shards = futures::future::try_join_all(starts).await?;
        let port = free_port()?;
        let router = start_router(port, &dir)?;
        let standalone = shards.last().map(|s| s.address()).unwrap_or_default();
        let cluster = LocalCluster {
            router_uri: format!("mongodb://127.0.0.1:{port}"),
            standalone_uri: format!("mongodb://{standalone}/?directConnection=true"),
            shards,
            router,
            _dir: dir,
        };
        cluster.add_shards(n).await?;
        Ok(cluster)
    }

    /// Waits for the router, then adds the first `n` shards.
    async fn add_shards(&self, n: usize) -> anyhow::Result<()> {
        let client = mongodb::Client::with_uri_str(&self.router_uri).await?;
        let admin = client.database("admin");
        let started = tokio::time::Instant::now();
        while admin.run_command(doc! {"ping": 1}).await.is_err() {
            anyhow::ensure!(
                started.elapsed() < ROUTER_READY,
                "the local router did not answer ping within {ROUTER_READY:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for s in &self.shards[..n] {
            admin
                .run_command(doc! {"addShard": s.address()})
                .await
                .with_context(|| format!("addShard {}", s.address()))?;
        }
        Ok(())
    }
}

/// `shardgate serve` (this executable) on `port`, logging into the directory.
fn start_router(port: u16, dir: &tempfile::TempDir) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.path().join("router.log"))?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(&exe);
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config-store")
        .arg(format!("embedded:{}", dir.path().join("config").display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; the router dies with this process.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start the router {}", exe.display()))
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.router.kill();
        let _ = self.router.wait();
    }
}
