//! The state every connection task shares, handed in at construction.

use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::time::Instant;

use shardgate_config_store::Catalog;

use crate::catalog_cache::placement::Placement;
use crate::catalog_cache::routing::RoutingTable;
use crate::config::RouterConfig;
use crate::stats::Stats;
use shardgate_shard_client::ShardClient;

/// Shared router state (`Arc<RouterState>` in every connection task).
pub(crate) struct RouterState {
    /// The validated configuration.
    pub config: RouterConfig,
    /// Typed access to the config store.
    pub catalog: Catalog,
    /// Database placement cache.
    pub placement: Placement,
    /// Sharded collections and their chunk maps.
    pub routing: RoutingTable,
    /// Open router cursors.
    pub cursors: crate::cursors::CursorTable,
    /// How the router talks to shards (pooled connections; a fake in unit
    /// tests).
    pub shards: std::sync::Arc<dyn ShardClient>,
    /// Per shard, whether it evaluates `$toHashedIndexKey` (asked once).
    pub hashed_key_expr: std::sync::Mutex<std::collections::HashMap<String, bool>>,
    /// Per shard, whether its `$sortKey` under a collation holds comparison
    /// keys (asked once; `collation::for_merge`).
    pub collated_sort_keys: std::sync::Mutex<std::collections::HashMap<String, bool>>,
    /// Counters for `serverStatus`.
    pub stats: Stats,
    /// When the router started.
    pub started: Instant,
    /// The next client `connectionId`.
    pub next_connection_id: AtomicI32,
    /// The address the router listens on.
    pub listen: String,
    /// Test-only fault (`--enable-test-commands`): how many more client
    /// connections to close right after a write command was applied,
    /// without replying (-1: every one). Set by the router's own fail point
    /// `shardgateCloseConnectionAfterWrite`.
    pub close_after_write: AtomicI64,
    /// Replies of retryable writes, for replaying to a driver's retry.
    pub retries: crate::retry_cache::RetryCache,
    /// The sessions clients used through this router (`$listLocalSessions`).
    pub local_sessions: crate::local_sessions::LocalSessions,
    /// One gate per sharded collection: its writes hold the read side while
    /// they run; a critical-section acknowledgement takes the write side to
    /// wait for the writes in flight.
    pub write_gates: crate::write_gates::WriteGates,
    /// The budget of incoming bytes buffered over all connections, in KB.
    pub buffered: std::sync::Arc<tokio::sync::Semaphore>,
    /// Open client connections per IP address.
    pub clients_by_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// The cluster's default read and write concerns
    /// (`setDefaultRWConcern`), applied to commands that carry none;
    /// kept current from the store.
    pub rw_defaults: std::sync::RwLock<RwDefaults>,
    /// The collections whose queries this router samples
    /// (`configureQueryAnalyzer`) and the samples waiting to be stored.
    pub query_analyzers: crate::query_analysis::QueryAnalyzers,
    /// The router's own operations in progress (`currentOp`, `killOp`).
    pub operations: crate::operations::Operations,
    /// Test-only fault: milliseconds a coordinated commit waits after its
    /// decision is stored (`shardgatePauseAfterCommitDecision`).
    pub pause_after_commit_decision_ms: std::sync::atomic::AtomicU64,
    /// The router's own fail points (`failCommand`).
    pub fail_points: crate::fail_points::FailPoints,
    /// Open transactions.
    pub transactions: crate::transactions::Transactions,
    /// The highest cluster time the shards told.
    pub clock: std::sync::Arc<crate::transactions::ClusterClock>,
    /// View definitions of databases holding sharded collections.
    pub views: crate::read::views::Views,
    /// The shard client without the transaction and metrics layers (for
    /// `/readyz` pings, which are not client operations).
    pub pool_client: std::sync::Arc<dyn ShardClient>,
    /// Prometheus metrics and the operation traces' shard handles.
    pub metrics: std::sync::Arc<crate::metrics::RouterMetrics>,
    /// The slow operation threshold in ms (`slowms`).
    pub slow_ms: std::sync::atomic::AtomicU64,
}

/// The `config.settings` document holding the default concerns.
pub(crate) const RW_DEFAULTS_SETTING: &str = "ReadWriteConcernDefaults";

/// Default read and write concerns set with `setDefaultRWConcern`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RwDefaults {
    /// `defaultReadConcern`, when set.
    pub read: Option<bson::Document>,
    /// `defaultWriteConcern`, when set.
    pub write: Option<bson::Document>,
    /// The `defaultMaxTimeMS` cluster parameter's `readOperations`, when
    /// above 0: the `maxTimeMS` of reads that set none.
    pub read_max_time_ms: Option<i64>,
}

impl RouterState {
    /// The state of a router with these parts and nothing open yet.
    #[cfg(test)]
    pub(crate) fn new(
        config: RouterConfig,
        catalog: Catalog,
        placement: Placement,
        routing: RoutingTable,
        shards: std::sync::Arc<dyn ShardClient>,
        listen: String,
    ) -> RouterState {
        let metrics = crate::metrics::RouterMetrics::new(false, Default::default(), Vec::new());
        let metrics = std::sync::Arc::new(metrics);
        Self::with_metrics(config, catalog, placement, routing, shards, listen, metrics)
    }

    /// [`RouterState::new`] with these metrics.
    pub(crate) fn with_metrics(
        config: RouterConfig,
        catalog: Catalog,
        placement: Placement,
        routing: RoutingTable,
        shards: std::sync::Arc<dyn ShardClient>,
        listen: String,
        metrics: std::sync::Arc<crate::metrics::RouterMetrics>,
    ) -> RouterState {
        let pool_client = shards.clone();
        let shards: std::sync::Arc<dyn ShardClient> = std::sync::Arc::new(
            crate::metrics::trace::MeteredShards::new(shards, metrics.clone()),
        );
        let buffered_kb = (config.limits.max_buffered_mb as usize)
            .saturating_mul(1024)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        let clock = std::sync::Arc::new(crate::transactions::ClusterClock::default());
        let shards: std::sync::Arc<dyn ShardClient> =
            std::sync::Arc::new(crate::transactions::TxnShards::new(shards, clock.clone()));
        let config_slow_ms = config.slow_op_threshold_ms;
        RouterState {
            shards,
            hashed_key_expr: Default::default(),
            collated_sort_keys: Default::default(),
            routing,
            cursors: Default::default(),
            config,
            catalog,
            placement,
            stats: Stats::default(),
            started: Instant::now(),
            next_connection_id: AtomicI32::new(1),
            close_after_write: Default::default(),
            retries: Default::default(),
            local_sessions: Default::default(),
            write_gates: Default::default(),
            buffered: std::sync::Arc::new(tokio::sync::Semaphore::new(buffered_kb)),
            clients_by_ip: Default::default(),
            operations: Default::default(),
            query_analyzers: Default::default(),
            transactions: Default::default(),
            fail_points: Default::default(),
            views: Default::default(),
            pause_after_commit_decision_ms: Default::default(),
            clock,
            rw_defaults: Default::default(),
            listen,
            pool_client,
            metrics,
            slow_ms: std::sync::atomic::AtomicU64::new(config_slow_ms),
        }
    }

    /// Reads the default read and write concerns, and the default
    /// `maxTimeMS` of reads, from the store.
    pub(crate) async fn reload_rw_defaults(&self) -> crate::error::Result<()> {
        let stored = self
            .catalog
            .setting(RW_DEFAULTS_SETTING)
            .await?
            .unwrap_or_default();
        let read_max_time_ms = self
            .catalog
            .cluster_parameters()
            .await?
            .iter()
            .find(|p| p.get_str("_id").ok() == Some("defaultMaxTimeMS"))
            .and_then(|p| p.get_i64("readOperations").ok())
            .filter(|ms| *ms > 0);
        let defaults = RwDefaults {
            read: stored.get_document("defaultReadConcern").ok().cloned(),
            write: stored.get_document("defaultWriteConcern").ok().cloned(),
            read_max_time_ms,
        };
        *self.rw_defaults.write().unwrap_or_else(|e| e.into_inner()) = defaults;
        Ok(())
    }

    /// Whether the fault hook wants this write's connection closed.
    pub(crate) fn take_close_after_write(&self) -> bool {
        self.close_after_write
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                -1 => Some(-1),
                n => Some(n - 1),
            })
            .is_ok()
    }
}
