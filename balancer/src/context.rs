//! What the balancer service shares: its settings, the catalog, its own
//! shard pools (a migration never competes with client traffic for a
//! router's connections), and its counters.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use bson::{doc, Document, RawDocumentBuf};
use shardgate_config_store::model::{ChangelogEntry, OrphanRange};
use shardgate_config_store::shard_key::ShardKeyPattern;
use shardgate_config_store::{Catalog, ShardType};
use shardgate_shard_client::{PoolConfig, ShardClient, ShardCursor, Target};

use crate::error::{BalancerError, Result};

/// The balancer service's settings.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// This process's id: the address of the router it runs beside (its
    /// `moveChunk` requests are run here first, and fail points set on that
    /// router apply here), or a name of its own.
    pub id: String,
    /// Run balancing rounds (else only the moves routers request).
    pub rounds: bool,
    /// Seconds between rounds.
    pub balancer_interval_secs: u64,
    /// A migrated range stays on its old owner this long before deletion.
    pub orphan_cleanup_delay_secs: u64,
    /// Honour the test-only fail point `shardgatePauseMigrationAt`.
    pub enable_test_commands: bool,
    /// The service's own shard pools.
    pub pool: PoolConfig,
}

/// Counters `balancerStatus` shows (also written to the store).
#[derive(Default)]
pub(crate) struct Stats {
    /// A round is running.
    pub in_round: AtomicBool,
    /// Rounds run (holding the lock).
    pub rounds: AtomicI64,
    /// Migrations those rounds ran.
    pub migrations: AtomicI64,
}

/// A committed migration's source range (an orphan range), to delete
/// once `due`.
pub(crate) struct PendingDeletion {
    /// When the grace period for open cursors ends.
    pub due: std::time::Instant,
    /// The collection's shard key.
    pub pattern: ShardKeyPattern,
    /// The range and the shard holding its copies.
    pub orphan: OrphanRange,
}

/// The balancer service's shared state.
pub struct Balancer {
    /// Its settings.
    pub(crate) config: BalancerConfig,
    /// The cluster metadata.
    pub(crate) catalog: Catalog,
    /// Its own shard pools.
    pub(crate) shards: Arc<dyn ShardClient>,
    /// Its counters.
    pub(crate) stats: Stats,
    /// Source ranges of committed migrations waiting for deletion.
    pub(crate) pending_deletions: std::sync::Mutex<Vec<PendingDeletion>>,
    /// The process's Prometheus metrics (rounds, migrations).
    pub(crate) metrics: Arc<shardgate_metrics::Metrics>,
    /// The running migration's progress as last published.
    pub(crate) migration_progress: std::sync::Mutex<Option<crate::migration::Published>>,
}

impl Balancer {
    /// A service over `catalog` talking to shards through `shards`.
    pub fn new(config: BalancerConfig, catalog: Catalog, shards: Arc<dyn ShardClient>) -> Balancer {
        Balancer {
            config,
            catalog,
            shards,
            stats: Stats::default(),
            pending_deletions: Default::default(),
            metrics: Default::default(),
            migration_progress: Default::default(),
        }
    }

    /// The same service, counting into `metrics` (shared with the router
    /// beside it, which serves them).
    pub fn with_metrics(mut self, metrics: Arc<shardgate_metrics::Metrics>) -> Balancer {
        self.metrics = metrics;
        self
    }

    /// This process's id.
    pub(crate) fn id(&self) -> &str {
        &self.config.id
    }

    /// The shard named `id`.
    pub(crate) async fn shard(&self, id: &str) -> Result<ShardType> {
        self.catalog
            .shards()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| {
                BalancerError::command(70, "ShardNotFound", format!("shard {id} not found"))
            })
    }

    /// Runs a command on `shard`; `{ok: 0}` is an error with the shard's code.
    pub(crate) async fn run_on_shard(
        &self,
        shard: &ShardType,
        command: Document,
    ) -> Result<Document> {
        let reply = self.run_on_shard_raw(shard, command).await?;
        Document::try_from(reply.as_ref()).map_err(|e| {
            BalancerError::Shard(shardgate_shard_client::ShardError::protocol(&shard.id, e))
        })
    }

    /// [`run_on_shard`](Self::run_on_shard), the reply kept raw.
    pub(crate) async fn run_on_shard_raw(
        &self,
        shard: &ShardType,
        command: Document,
    ) -> Result<RawDocumentBuf> {
        let body = RawDocumentBuf::try_from(&command)
            .map_err(|e| BalancerError::bad_value(e.to_string()))?;
        Ok(self.shards.command(target(shard), &body).await?)
    }

    /// Opens a shard cursor with `command` (with its `$db`).
    pub(crate) async fn open_cursor(
        &self,
        shard: &ShardType,
        command: &Document,
    ) -> Result<ShardCursor> {
        let body = RawDocumentBuf::try_from(command)
            .map_err(|e| BalancerError::bad_value(e.to_string()))?;
        Ok(ShardCursor::open(self.shards.clone(), target(shard), &body).await?)
    }

    /// Appends to `config.changelog`.
    pub(crate) async fn log_change(&self, what: &str, ns: &str, details: Document) {
        let entry = ChangelogEntry {
            id: format!("{}-{}", self.id(), bson::oid::ObjectId::new().to_hex()),
            server: self.id().to_owned(),
            client_addr: String::new(),
            time: bson::DateTime::now(),
            what: what.to_owned(),
            ns: ns.to_owned(),
            details,
        };
        if let Err(e) = self.catalog.log_change(&entry).await {
            tracing::warn!(error = %e, what, ns, "could not write the changelog");
        }
    }

    /// Writes the counters where `balancerStatus` on any router reads them.
    pub(crate) async fn publish_stats(&self) {
        let status = doc! {
            "inBalancerRound": self.stats.in_round.load(Ordering::SeqCst),
            "numBalancerRounds": self.stats.rounds.load(Ordering::SeqCst),
            "migrations": self.stats.migrations.load(Ordering::SeqCst),
            "process": self.id(),
        };
        if let Err(e) = self.catalog.put_balancer_status(&status).await {
            tracing::debug!(error = %e, "could not publish the balancer status");
        }
    }
}

/// How the shard client addresses `shard`.
pub(crate) fn target(shard: &ShardType) -> Target<'_> {
    Target {
        id: &shard.id,
        host: &shard.host,
    }
}

/// Now as a config timestamp.
pub(crate) fn now_ts() -> bson::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    bson::Timestamp {
        time: secs,
        increment: 1,
    }
}
