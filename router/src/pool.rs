//! A bounded connection pool per shard, shared by every client connection.
//!
//! A checkout takes a semaphore permit first, so a shard never sees more
//! than `max_size` connections from this router however many clients wait.
//! A network error bumps the pool's generation: connections opened before it
//! are dropped instead of reused (what the driver's CMAP does after a server
//! restart). A connection idle past `health_check_after` is pinged first.

mod conn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use shardgate_config_store::ShardType;
use shardgate_wire::OpMsg;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::PoolConfig;
use crate::error::{Result, RouterError};
pub(crate) use conn::ShardConn;

/// Counters a pool exposes in `serverStatus`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PoolStats {
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
}

/// The pool of one shard.
pub(crate) struct ShardPool {
    shard: String,
    address: String,
    config: PoolConfig,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<ShardConn>>,
    generation: AtomicU64,
    open: AtomicUsize,
    peak_open: AtomicUsize,
    created: AtomicU64,
    /// Whether the shard evaluates `$toHashedIndexKey` (asked once).
    pub(crate) hashed_key_expr: std::sync::OnceLock<bool>,
}

impl ShardPool {
    fn new(shard: &ShardType, config: PoolConfig) -> ShardPool {
        ShardPool {
            shard: shard.id.clone(),
            address: shard.addresses().into_iter().next().unwrap_or_default(),
            permits: Arc::new(Semaphore::new(config.max_size)),
            config,
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            peak_open: AtomicUsize::new(0),
            created: AtomicU64::new(0),
            hashed_key_expr: std::sync::OnceLock::new(),
        }
    }

    /// Sends `msg` to the shard on a pooled connection and returns its reply.
    pub(crate) async fn run(self: &Arc<Self>, msg: &OpMsg) -> Result<OpMsg> {
        let mut lease = self.checkout().await?;
        let conn = lease
            .conn
            .as_mut()
            .ok_or_else(|| self.unreachable("no connection"))?;
        match conn.round_trip(msg).await {
            Ok(reply) => {
                lease.healthy = true;
                Ok(reply)
            }
            Err(e) => {
                self.clear();
                Err(self.unreachable(&e.to_string()))
            }
        }
    }

    async fn checkout(self: &Arc<Self>) -> Result<Lease> {
        let permit = tokio::time::timeout(
            self.config.wait_timeout(),
            self.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| RouterError::ShardTimeout {
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
                self.config.tls.as_ref(),
            ),
        )
        .await
        .map_err(|_| RouterError::ShardTimeout {
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
    fn clear(&self) {
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

    fn unreachable(&self, reason: &str) -> RouterError {
        RouterError::ShardUnreachable {
            shard: self.shard.clone(),
            host: self.address.clone(),
            reason: reason.to_owned(),
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            open: self.open.load(Ordering::Acquire),
            idle: self.idle.lock().map(|v| v.len()).unwrap_or(0),
            peak_open: self.peak_open.load(Ordering::Acquire),
            created: self.created.load(Ordering::Relaxed),
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn max_size(&self) -> usize {
        self.config.max_size
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

/// The pools of every shard, created on first use.
pub(crate) struct ShardRegistry {
    config: PoolConfig,
    pools: RwLock<HashMap<String, Arc<ShardPool>>>,
}

impl ShardRegistry {
    pub(crate) fn new(config: PoolConfig) -> ShardRegistry {
        ShardRegistry {
            config,
            pools: RwLock::new(HashMap::new()),
        }
    }

    /// The pool for `shard`, replaced when its connection string changed.
    pub(crate) fn pool(&self, shard: &ShardType) -> Arc<ShardPool> {
        let address = shard.addresses().into_iter().next().unwrap_or_default();
        if let Ok(pools) = self.pools.read() {
            if let Some(p) = pools.get(&shard.id).filter(|p| p.address == address) {
                return p.clone();
            }
        }
        let pool = Arc::new(ShardPool::new(shard, self.config.clone()));
        if let Ok(mut pools) = self.pools.write() {
            return pools
                .entry(shard.id.clone())
                .and_modify(|p| {
                    if p.address != address {
                        *p = pool.clone();
                    }
                })
                .or_insert(pool)
                .clone();
        }
        pool
    }

    /// Every pool, by shard name.
    pub(crate) fn all(&self) -> Vec<(String, Arc<ShardPool>)> {
        let mut v: Vec<_> = self
            .pools
            .read()
            .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
