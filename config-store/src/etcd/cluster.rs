//! A throwaway etcd cluster on loopback, for tests (cargo feature
//! `test-harness`).
//!
//! ```no_run
//! # use shardgate_config_store::etcd::cluster::EtcdCluster;
//! # async fn demo() -> shardgate_config_store::error::Result<()> {
//! let mut cluster = EtcdCluster::start(3).await;
//! let store = shardgate_config_store::open(&cluster.url("test")).await?;
//! cluster.kill(0);
//! cluster.restart(0).await;
//! # Ok(())
//! # }
//! ```
//!
//! Each member runs the `etcd` binary (or `$SHARDGATE_ETCD_BIN`) with its
//! data directory and log file in one temporary directory. Dropping the
//! cluster kills the members and removes the directory; the members also
//! die with the test process (`PR_SET_PDEATHSIG`), even if it is killed.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

/// Raft timing of the test members: fast elections, and a minimum lease
/// TTL of one second.
const HEARTBEAT_MS: u32 = 50;
const ELECTION_MS: u32 = 500;
/// How long a fresh cluster may take to elect a leader and serve.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running etcd cluster; see the module docs.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    token: String,
    members: Vec<Member>,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts an `n`-member cluster and waits until it serves linearizable
    /// reads. Panics (with the members' log tails) if it cannot.
    pub async fn start(n: usize) -> EtcdCluster {
        assert!(n > 0, "an etcd cluster needs at least one member");
        let mut last = String::new();
        // Ports are picked free and released; another process may grab one
        // before etcd binds it, so a failed start is tried again.
        for _ in 0..3 {
            match EtcdCluster::try_start(n).await {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("cannot start a {n}-member etcd cluster: {last}");
    }

    async fn try_start(n: usize) -> Result<EtcdCluster, String> {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::Builder::new()
            .prefix("shardgate-etcd-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let ports =
            crate::loopback::free_ports(2 * n).map_err(|e| format!("cannot pick ports: {e}"))?;
        let bin = std::env::var_os("SHARDGATE_ETCD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("etcd"));
        let token = format!(
            "shardgate-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            dir,
            bin,
            token,
            members,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        match cluster.wait_ready(READY_TIMEOUT).await {
            Ok(()) => Ok(cluster),
            Err(e) => Err(format!("{e}\n{}", cluster.log_tails())),
        }
    }

    /// The members' client addresses, `127.0.0.1:port`.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The client address of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// The `--config-store` URL of a store under `prefix` in this cluster.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoints().join(","))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never, once started).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether member `i` is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit; its data stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data and waits until it answers on
    /// its client port (a leader needs a majority of members running; use
    /// [`EtcdCluster::wait_ready`] to wait for one).
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        if let Err(e) = self.spawn(i) {
            panic!("cannot restart etcd member {i}: {e}");
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.is_running(i) {
                panic!("etcd member {i} exited on restart\n{}", self.log_tails());
            }
            if member_status(&self.endpoint(i)).await.is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd member {i} does not answer after restart\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running member serves a linearizable read (so
    /// the cluster has a leader and a quorum).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no member running");
        loop {
            let mut all = true;
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    continue;
                }
                if !self.is_running(i) {
                    return Err(format!("etcd member {i} exited"));
                }
                if let Err(e) = linearizable_read(&self.endpoint(i)).await {
                    last = format!("member {i}: {e}");
                    all = false;
                    break;
                }
            }
            if all && self.members.iter().any(|m| m.child.is_some()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("etcd cluster not ready after {timeout:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of every member's log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- etcd {} log (last lines) ---\n", m.name));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The log file of member `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let initial_cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let log = open_log(&self.log_path(i)).map_err(|e| format!("log file: {e}"))?;
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("{}.data", m.name)))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = spawn_tied(cmd).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!(
                "etcd binary {:?} not found: install etcd (Debian: etcd-server) or set SHARDGATE_ETCD_BIN",
                self.bin
            ),
            _ => format!("cannot run {:?}: {e}", self.bin),
        })?;
        self.members[i].child = Some(child);
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Spawns `cmd` from one long-lived thread, with `PR_SET_PDEATHSIG`
/// set to SIGKILL: the child dies when the thread that spawned it does,
/// and that thread lives as long as the process (a test's own thread, or
/// a runtime worker, may end before the cluster is dropped).
fn spawn_tied(cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("etcd-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_deathsig(&mut cmd));
                }
            })
            .expect("spawn the etcd spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .map_err(|_| io::Error::other("etcd spawner lock poisoned"))?
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("etcd spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("etcd spawner thread is gone"))?
}

fn spawn_with_deathsig(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn probe_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_require_leader(true)
}

/// A linearizable read through one member: it has a leader and a quorum.
async fn linearizable_read(endpoint: &str) -> Result<(), String> {
    let call = async {
        let client = Client::connect([format!("http://{endpoint}")], Some(probe_options())).await?;
        client
            .kv_client()
            .get("/shardgate-harness-probe", None)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(1), call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 1s".into()),
    }
}

/// The member's own status (answers without a leader).
async fn member_status(endpoint: &str) -> Result<(), String> {
    let call = async {
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_millis(500));
        let client = Client::connect([format!("http://{endpoint}")], Some(options)).await?;
        client.maintenance_client().status().await
    };
    match tokio::time::timeout(Duration::from_secs(1), call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 1s".into()),
    }
}
