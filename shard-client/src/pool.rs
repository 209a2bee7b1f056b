//! A bounded connection pool per shard member, shared by every client
//! connection; [`Pools`] holds a shard's members (`topology`).
//!
//! A checkout takes a semaphore permit first, so a shard never sees more
//! than `max_size` connections from this router however many clients wait.
//! A network error bumps the pool's generation: connections opened before it
//! are dropped instead of reused (what the driver's CMAP does after a server
//! restart). A connection idle past `health_check_after` is pinged first.

pub(crate) mod conn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bson::{RawDocument, RawDocumentBuf};
use shardgate_wire::OpMsg;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use crate::config::PoolConfig;
use crate::error::{Result, ShardError};
use crate::topology::ReplicaSet;
use crate::{ShardClient, Target};
use conn::ShardConn;

/// Counters a pool exposes in `serverStatus`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    /// Connections open now.
    pub open: usize,
    /// Connections idle in the pool now.
    pub idle: usize,
    /// Most connections ever open at once.
    pub peak_open: usize,
    /// Connections created since start.
    pub created: u64,
    /// Times the pool was cleared after a network error.
    pub generation: u64,
    /// Requests waiting for a free connection now.
    pub waiting: usize,
    /// Checkouts since start (each waited for a permit, maybe not long).
    pub checkouts: u64,
    /// Total time checkouts waited for a permit, in nanoseconds.
    pub wait_nanos: u64,
}

/// The pool of one shard member.
pub(crate) struct ShardPool {
    shard: String,
    address: String,
    config: PoolConfig,
    tls: Option<TlsConnector>,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<ShardConn>>,
    generation: AtomicU64,
    open: AtomicUsize,
    peak_open: AtomicUsize,
    created: AtomicU64,
    waiting: AtomicUsize,
    checkouts: AtomicU64,
    wait_nanos: AtomicU64,
}

impl ShardPool {
    pub(crate) fn new(
        shard: &str,
        address: &str,
        config: PoolConfig,
        tls: Option<TlsConnector>,
    ) -> ShardPool {
        ShardPool {
            shard: shard.to_owned(),
            address: address.to_owned(),
            permits: Arc::new(Semaphore::new(config.max_size)),
            config,
            tls,
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            peak_open: AtomicUsize::new(0),
            created: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            checkouts: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
        }
    }

    /// Sends `msg` to the shard on a pooled connection and returns its
    /// reply, within the round-trip deadline (past it the connection is
    /// closed, never reused).
    pub(crate) async fn run(self: &Arc<Self>, msg: &OpMsg) -> Result<OpMsg> {
        let mut lease = self.checkout().await?;
        let conn = lease
            .conn
            .as_mut()
            .ok_or_else(|| self.unreachable("no connection"))?;
        let deadline = self.config.round_trip_timeout();
        match tokio::time::timeout(deadline, conn.round_trip(msg)).await {
            Ok(Ok(reply)) => {
                lease.healthy = true;
                Ok(reply)
            }
            Ok(Err(e)) => {
                self.clear();
                Err(self.unreachable(&e.to_string()))
            }
            Err(_) => Err(ShardError::Timeout {
                shard: self.shard.clone(),
                reason: format!(
                    "no reply within {} ms (pool.round_trip_timeout_ms)",
                    self.config.round_trip_timeout_ms
                ),
            }),
        }
    }

    async fn checkout(self: &Arc<Self>) -> Result<Lease> {
        let asked = Instant::now();
        let waiter = Waiter::new(&self.waiting);
        let acquired = tokio::time::timeout(
            self.config.wait_timeout(),
            self.permits.clone().acquire_owned(),
        )
        .await;
        drop(waiter);
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        let waited = u64::try_from(asked.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(waited, Ordering::Relaxed);
        let permit = acquired
            .map_err(|_| ShardError::Timeout {
                shard: self.shard.clone(),
                reason: format!(
                    "no free connection within {} ms (pool max_size {})",
                    self.config.wait_timeout_ms, self.config.max_size
                ),
            })?
            .map_err(|_| self.unreachable("pool closed"))?;
        let generation = self.generation.load(Ordering::Acquire);
        loop {
            let candidate = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
            let Some(mut conn) = candidate else { break };
            if conn.generation != generation {
                self.closed();
                continue;
            }
            if conn.last_used.elapsed() >= self.config.health_check_after()
                && !ping(&mut conn).await
            {
                self.closed();
                continue;
            }
            return Ok(self.lease(conn, permit));
        }
        let conn = tokio::time::timeout(
            self.config.connect_timeout(),
            ShardConn::connect(
                &self.address,
                generation,
                self.config.auth.as_ref(),
                self.tls.as_ref(),
            ),
        )
        .await
        .map_err(|_| ShardError::Timeout {
            shard: self.shard.clone(),
            reason: format!(
                "connect to {} took over {} ms",
                self.address, self.config.connect_timeout_ms
            ),
        })?
        .map_err(|e| {
            self.clear();
            self.unreachable(&e.to_string())
        })?;
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_open.fetch_max(open, Ordering::AcqRel);
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok(self.lease(conn, permit))
    }

    fn lease(self: &Arc<Self>, conn: ShardConn, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            pool: self.clone(),
            conn: Some(conn),
            healthy: false,
            _permit: permit,
        }
    }

    /// Drops every idle connection and makes checked-out ones stale.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let drained: Vec<ShardConn> = self
            .idle
            .lock()
            .map(|mut v| v.drain(..).collect())
            .unwrap_or_default();
        for _ in drained {
            self.closed();
        }
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    fn unreachable(&self, reason: &str) -> ShardError {
        ShardError::Unreachable {
            shard: self.shard.clone(),
            host: self.address.clone(),
            reason: reason.to_owned(),
        }
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            open: self.open.load(Ordering::Acquire),
            idle: self.idle.lock().map(|v| v.len()).unwrap_or(0),
            peak_open: self.peak_open.load(Ordering::Acquire),
            created: self.created.load(Ordering::Relaxed),
            generation: self.generation.load(Ordering::Acquire),
            waiting: self.waiting.load(Ordering::Relaxed),
            checkouts: self.checkouts.load(Ordering::Relaxed),
            wait_nanos: self.wait_nanos.load(Ordering::Relaxed),
        }
    }
}

/// One request waiting for a permit, counted while it lives (a cancelled
/// checkout stops counting too).
struct Waiter<'a>(&'a AtomicUsize);

impl<'a> Waiter<'a> {
    fn new(waiting: &'a AtomicUsize) -> Waiter<'a> {
        waiting.fetch_add(1, Ordering::Relaxed);
        Waiter(waiting)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pings an idle connection; false when it is dead.
async fn ping(conn: &mut ShardConn) -> bool {
    let Ok(body) = bson::doc! {"ping": 1, "$db": "admin"}.to_vec() else {
        return false;
    };
    let msg = OpMsg::from_body(body);
    let probe = conn.round_trip(&msg);
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), probe).await,
        Ok(Ok(_))
    )
}

/// A checked-out connection. Returned to the pool on drop only when its last
/// round trip completed; a request cancelled mid-flight closes it instead, so
/// no stale reply is ever read by the next user.
struct Lease {
    pool: Arc<ShardPool>,
    conn: Option<ShardConn>,
    healthy: bool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.healthy && conn.generation == self.pool.generation.load(Ordering::Acquire) {
            conn.last_used = Instant::now();
            if let Ok(mut idle) = self.pool.idle.lock() {
                idle.push(conn);
                return;
            }
        }
        self.pool.closed();
    }
}

/// One [`ReplicaSet`] (a pool per member) per shard, by name, created on
/// first use and replaced when the shard's connection string changes: the
/// pooled [`ShardClient`].
pub struct Pools {
    config: PoolConfig,
    tls: Option<TlsConnector>,
    sets: RwLock<HashMap<String, Arc<ReplicaSet>>>,
}

impl Pools {
    /// Pools with `config`; TLS files are read and checked here, so a bad
    /// setting fails at start with one line naming it.
    pub fn new(config: PoolConfig) -> std::result::Result<Pools, String> {
        if let Some(auth) = &config.auth {
            if crate::scram::Mechanism::from_name(&auth.mechanism).is_none() {
                return Err(format!(
                    "pool.auth.mechanism must be SCRAM-SHA-256 or SCRAM-SHA-1, got {:?}",
                    auth.mechanism
                ));
            }
        }
        let tls = config.tls.as_ref().map(crate::tls::connector).transpose()?;
        Ok(Pools {
            config,
            tls,
            sets: RwLock::new(HashMap::new()),
        })
    }

    fn set(&self, shard: Target<'_>) -> Arc<ReplicaSet> {
        if let Ok(sets) = self.sets.read() {
            if let Some(s) = sets.get(shard.id).filter(|s| s.seeds == shard.host) {
                return s.clone();
            }
        }
        let Ok(mut sets) = self.sets.write() else {
            return ReplicaSet::new(shard.id, shard.host, self.config.clone(), self.tls.clone());
        };
        match sets.get(shard.id).filter(|s| s.seeds == shard.host) {
            Some(s) => s.clone(),
            None => {
                let set =
                    ReplicaSet::new(shard.id, shard.host, self.config.clone(), self.tls.clone());
                sets.insert(shard.id.to_owned(), set.clone());
                set
            }
        }
    }
}

#[async_trait::async_trait]
impl ShardClient for Pools {
    async fn send(&self, shard: Target<'_>, msg: &OpMsg) -> Result<OpMsg> {
        self.set(shard).send(&crate::outgoing(msg)).await
    }

    async fn probe(&self, host: &str, body: &RawDocument) -> Result<RawDocumentBuf> {
        let hosts = crate::topology::hosts_of(host);
        let address = hosts.first().map_or(host, String::as_str);
        let failed = |reason: String| ShardError::Unreachable {
            shard: host.to_owned(),
            host: address.to_owned(),
            reason,
        };
        let connect = ShardConn::connect(address, 0, self.config.auth.as_ref(), self.tls.as_ref());
        let mut conn = tokio::time::timeout(self.config.connect_timeout(), connect)
            .await
            .map_err(|_| failed("connect timed out".into()))?
            .map_err(|e| failed(e.to_string()))?;
        let msg = OpMsg::from_body(body.as_bytes().to_vec());
        let reply = tokio::time::timeout(self.config.connect_timeout(), conn.round_trip(&msg))
            .await
            .map_err(|_| failed("no reply in time".into()))?
            .map_err(|e| failed(e.to_string()))?;
        if !crate::reply_ok(reply.body()) {
            return Err(ShardError::from_reply(host, reply.body()));
        }
        Ok(reply.body().to_owned())
    }

    fn stats(&self) -> Vec<PoolReport> {
        let sets: Vec<Arc<ReplicaSet>> = self
            .sets
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut v: Vec<PoolReport> = sets
            .iter()
            .flat_map(|set| {
                set.members().into_iter().map(|m| PoolReport {
                    shard: set.shard.clone(),
                    address: m.address.clone(),
                    max_size: m.pool.config.max_size,
                    stats: m.pool.stats(),
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.shard, &a.address).cmp(&(&b.shard, &b.address)));
        v
    }

    fn drop_connections(&self, host: &str) -> usize {
        let sets: Vec<Arc<ReplicaSet>> = self
            .sets
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut cleared = 0;
        for member in sets.iter().flat_map(|s| s.members()) {
            if member.address == host {
                member.pool.clear();
                cleared += 1;
            }
        }
        cleared
    }

    fn topology(&self) -> Vec<crate::TopologyReport> {
        let mut v: Vec<crate::TopologyReport> = self
            .sets
            .read()
            .map(|m| m.values().map(|s| s.report()).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.shard.cmp(&b.shard));
        v
    }
}

/// One shard's pool as `serverStatus` and `shardgate status` show it.
#[derive(Debug, Clone)]
pub struct PoolReport {
    /// The shard's name.
    pub shard: String,
    /// The address connected to.
    pub address: String,
    /// The pool's size limit.
    pub max_size: usize,
    /// Its counters.
    pub stats: PoolStats,
}
