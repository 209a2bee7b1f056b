//! Test harness: real shard servers, an in-process router, real clients.
//!
//! Shards are child processes started by `shardgate::shard_process`
//! (SecantusDB by default, `SHARDGATE_SHARD_BIN` for another binary); they
//! are killed on drop, also when a test panics. The router runs in the test's
//! runtime on `127.0.0.1:0` over an embedded store in a temporary directory.
#![allow(dead_code)]

pub mod replica_set;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use bytes::{Bytes, BytesMut};
use shardgate::shard_process::{ShardLauncher, ShardProcess};
use shardgate_config_store::{ConfigStore, EmbeddedStore};
use shardgate_router::RouterConfig;
use shardgate_wire::{check_frame, Message, OpMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts `n` shard servers in parallel under `dir`.
pub async fn start_shards(dir: &Path, n: usize, test_commands: bool) -> Vec<ShardProcess> {
    let launcher = ShardLauncher::from_env().expect("shard launcher");
    let starts = (0..n).map(|i| {
        let launcher = launcher.clone();
        let d = dir.join(format!("shard{i}"));
        async move { launcher.start(&d, test_commands).await }
    });
    futures::future::try_join_all(starts)
        .await
        .expect("shard servers start")
}

/// A router running in this process.
pub struct RouterHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its config store, while it runs (a stopped router closes it).
    store: std::sync::Weak<dyn ConfigStore>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), shardgate_router::RouterError>>>,
}

impl RouterHandle {
    /// Starts a router over the embedded store in `store_dir`.
    pub async fn start(store_dir: &Path, config: RouterConfig) -> RouterHandle {
        let store: Arc<dyn ConfigStore> = Arc::new(EmbeddedStore::open(store_dir).expect("store"));
        RouterHandle::start_with_store(store, config).await
    }

    /// Starts a router over any config store, and beside it the balancer
    /// service: with `config.balancer` it runs rounds, else it only runs
    /// the moves this router is asked for (as a `serve` process with
    /// `balancer = true` and no rounds due would).
    pub async fn start_with_store(
        store: Arc<dyn ConfigStore>,
        config: RouterConfig,
    ) -> RouterHandle {
        RouterHandle::start_inner(store, config, true).await
    }

    /// Starts a router with no balancer service beside it (its moves are
    /// run by another process's balancer).
    pub async fn start_router_only(
        store: Arc<dyn ConfigStore>,
        config: RouterConfig,
    ) -> RouterHandle {
        RouterHandle::start_inner(store, config, false).await
    }

    async fn start_inner(
        store: Arc<dyn ConfigStore>,
        config: RouterConfig,
        balancer: bool,
    ) -> RouterHandle {
        let keep = Arc::downgrade(&store);
        // One set of metrics for the router and its balancer, as `serve` has.
        let metrics = Arc::new(shardgate_metrics::Metrics::default());
        let store: Arc<dyn ConfigStore> =
            Arc::new(shardgate_metrics::MeteredStore::new(store, metrics.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = watch::channel(false);
        let balancer_task = balancer.then(|| {
            let b = shardgate::balancer_config(&config, addr.to_string(), config.balancer);
            let run =
                shardgate_balancer::run_with_metrics(b, store.clone(), rx.clone(), metrics.clone());
            tokio::spawn(run)
        });
        let router = shardgate_router::run_with_metrics(listener, config, store, rx, metrics);
        let task = tokio::spawn(async move {
            let routed = router.await;
            if let Some(b) = balancer_task {
                let _ = b.await;
            }
            routed
        });
        RouterHandle {
            addr,
            store: keep,
            shutdown: tx,
            task: Some(task),
        }
    }

    /// Stops the router and waits for it (its store is closed after).
    pub async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            t.await.expect("router task").expect("router run");
        }
    }

    /// Its config store (for a second router in this process).
    pub fn store(&self) -> Arc<dyn ConfigStore> {
        self.store.upgrade().expect("the router is running")
    }

    /// A driver connection string for this router.
    pub fn uri(&self) -> String {
        format!("mongodb://{}/", self.addr)
    }
}

impl Drop for RouterHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Shards, a router, and the temporary directories behind them.
pub struct TestCluster {
    /// The shard servers.
    pub shards: Vec<ShardProcess>,
    /// The router.
    pub router: RouterHandle,
    /// The config store directory.
    pub store_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// `n` shards and a router with default settings but no balancer (its
    /// rounds would add queries the tests count), shards added.
    pub async fn start(n: usize) -> TestCluster {
        let config = RouterConfig {
            balancer: false,
            ..RouterConfig::default()
        };
        TestCluster::start_with(n, config, false).await
    }

    /// `n` shards (test commands on if asked) and a router with `config`.
    pub async fn start_with(n: usize, config: RouterConfig, test_commands: bool) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let shards = start_shards(dir.path(), n, test_commands).await;
        let store_dir = dir.path().join("config");
        let router = RouterHandle::start(&store_dir, config).await;
        let cluster = TestCluster {
            shards,
            router,
            store_dir,
            dir,
        };
        let client = cluster.client().await;
        for s in &cluster.shards {
            client
                .database("admin")
                .run_command(doc! {"addShard": s.address()})
                .await
                .expect("addShard");
        }
        cluster
    }

    /// `n` shards and a router with `config`, shards not added (for a
    /// router that requires authentication).
    pub async fn start_bare(n: usize, config: RouterConfig) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let shards = start_shards(dir.path(), n, false).await;
        let store_dir = dir.path().join("config");
        let router = RouterHandle::start(&store_dir, config).await;
        TestCluster {
            shards,
            router,
            store_dir,
            dir,
        }
    }

    /// A Rust driver client for the router.
    pub async fn client(&self) -> mongodb::Client {
        client(&self.router.uri()).await
    }

    /// A second router on this cluster's store (the embedded store is one
    /// process's: it shares the first router's handle), without a
    /// balancer.
    pub async fn second_router(&self) -> RouterHandle {
        let config = RouterConfig {
            balancer: false,
            ..Default::default()
        };
        RouterHandle::start_router_only(self.router.store(), config).await
    }

    /// Restarts the router over the same store.
    pub async fn restart_router(&mut self, config: RouterConfig) {
        self.router.stop().await;
        self.router = RouterHandle::start(&self.store_dir, config).await;
    }

    /// The directory of this cluster's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A Rust driver client.
pub async fn client(uri: &str) -> mongodb::Client {
    let mut opts = mongodb::options::ClientOptions::parse(uri)
        .await
        .expect("uri");
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    mongodb::Client::with_options(opts).expect("client")
}

/// A driver client straight to one shard (the differential baseline).
pub async fn direct_client(shard: &ShardProcess) -> mongodb::Client {
    client(&format!(
        "mongodb://{}/?directConnection=true",
        shard.address()
    ))
    .await
}

/// Runs a pymongo script with `URI` set; returns its stdout. Fails the test on error.
pub fn pymongo(uri: &str, script: &str) -> String {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .env("URI", uri)
        .output()
        .expect("run .venv/bin/python (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "pymongo script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `mongosh --eval` against `uri`; returns its stdout.
pub fn mongosh(uri: &str, eval: &str) -> String {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin/mongosh");
    let out = std::process::Command::new(&bin)
        .arg(uri)
        .arg("--quiet")
        .arg("--norc")
        .arg("--eval")
        .arg(eval)
        .env("MONGOSH_NO_UPDATE_CHECK", "1")
        .output()
        .expect("run mongosh (scripts/setup.sh installs it into .tools)");
    assert!(
        out.status.success(),
        "mongosh failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw wire-protocol connection, for what drivers never send.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    buf: BytesMut,
    next_id: i32,
}

impl RawConn {
    /// Wraps a connected socket.
    pub fn from_stream(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Runs a command as OP_MSG and returns the reply body.
    pub async fn command(&mut self, body: Document) -> Document {
        let id = self.next_id;
        self.next_id += 1;
        let frame = OpMsg::from_body(body.to_vec().expect("encode")).encode(id, 0);
        self.send(&frame).await;
        let reply = self.read_frame().await.expect("reply");
        let header = shardgate_wire::MsgHeader::parse(&reply).expect("header");
        assert_eq!(
            header.response_to, id,
            "reply answers the request just sent"
        );
        match Message::decode(reply).expect("decode reply").message {
            Message::Msg(m) => Document::from_reader(&m.body[..]).expect("reply body"),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// Reads one frame, or `None` when the server closed the connection
    /// (or sent nothing for 10 s).
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Ok(Some(len)) = check_frame(&self.buf) {
                return Some(self.buf.split_to(len).freeze());
            }
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await;
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Whether the server closed the connection (EOF within 10 s).
    pub async fn is_closed(&mut self) -> bool {
        let mut scratch = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut scratch))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// The error code of a failed driver call.
pub fn error_code(e: &mongodb::error::Error) -> i32 {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Command(c) => c.code,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code,
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => w.code,
        ErrorKind::InsertMany(m) => match &m.write_errors {
            Some(errors) if !errors.is_empty() => errors[0].code,
            _ => panic!("insert_many error without write errors: {m:?}"),
        },
        other => panic!("not a command or write error: {other:?}"),
    }
}

/// Runs an admin command and returns its error code (the test fails if it succeeds).
pub async fn admin_error(client: &mongodb::Client, cmd: Document) -> i32 {
    match client.database("admin").run_command(cmd.clone()).await {
        Ok(r) => panic!("{cmd} should fail, got {r}"),
        Err(e) => error_code(&e),
    }
}

/// Runs an admin command that must succeed.
pub async fn admin(client: &mongodb::Client, cmd: Document) -> Document {
    client
        .database("admin")
        .run_command(cmd.clone())
        .await
        .unwrap_or_else(|e| panic!("{cmd} failed: {e}"))
}

/// Reads a config view collection through the router, sorted as given.
pub async fn config_docs(
    client: &mongodb::Client,
    coll: &str,
    filter: Document,
    sort: Document,
) -> Vec<Document> {
    use futures::TryStreamExt;
    client
        .database("config")
        .collection::<Document>(coll)
        .find(filter)
        .sort(sort)
        .await
        .expect("find on the config view")
        .try_collect()
        .await
        .expect("config view cursor")
}

/// Every document `pipeline` gives on `coll`.
pub async fn aggregate_all(
    coll: &mongodb::Collection<Document>,
    pipeline: Vec<Document>,
) -> Vec<Document> {
    use futures::TryStreamExt;
    coll.aggregate(pipeline)
        .await
        .expect("aggregate")
        .try_collect()
        .await
        .expect("aggregate cursor")
}

/// Every document of `coll`, in `_id` order.
pub async fn all_by_id(coll: &mongodb::Collection<Document>) -> Vec<Document> {
    use futures::TryStreamExt;
    coll.find(bson::doc! {})
        .sort(bson::doc! {"_id": 1})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("find cursor")
}

/// The `ok` field of a reply as a number.
pub fn ok_of(reply: &Document) -> f64 {
    match reply.get("ok") {
        Some(bson::Bson::Double(d)) => *d,
        Some(bson::Bson::Int32(i)) => *i as f64,
        Some(bson::Bson::Int64(i)) => *i as f64,
        _ => -1.0,
    }
}
