//! The state every connection task shares, handed in at construction.

use std::sync::atomic::AtomicI32;
use std::time::Instant;

use shardgate_config_store::Catalog;

use crate::config::RouterConfig;
use crate::placement::Placement;
use crate::pool::ShardRegistry;
use crate::routing::RoutingTable;
use crate::stats::Stats;

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
    pub cursors: crate::scatter::cursors::CursorTable,
    /// Shard connection pools.
    pub shards: ShardRegistry,
    /// Counters for `serverStatus`.
    pub stats: Stats,
    /// When the router started.
    pub started: Instant,
    /// The next client `connectionId`.
    pub next_connection_id: AtomicI32,
    /// The address the router listens on.
    pub listen: String,
}
