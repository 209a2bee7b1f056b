//! The shardgate balancer service: what the config servers' balancer does
//! for mongos. It meets the routers only through the config store.
//!
//! # Layout
//! - [`policy`]: the decisions, pure (zone splits, which chunk moves where).
//! - `service`: [`run`] (and [`run_with_metrics`]), the loop: balancing rounds every interval (when
//!   [`BalancerConfig::rounds`]) and the `moveChunk`/`moveRange` requests
//!   routers leave in the store, each under the lease lock.
//! - `round`: one balancing round — zone splits, size estimates and
//!   auto-split, the moves `policy` decides; `defragment`: a collection's
//!   defragmentation (merge runs, move small chunks to a neighbour and
//!   merge), a share per round; `sizes`: chunk size estimates.
//! - `lock`: the `balancer` lease lock with its fencing token; taking it
//!   recovers what a dead holder left.
//! - `migration`: moving one chunk — record, clone, catch-up, critical
//!   section, commit, range deletion, abort and recovery.
//! - `context`: [`Balancer`], what the service shares: config, catalog,
//!   its own shard pools, counters and the process's Prometheus metrics
//!   (`shardgate-metrics`); `error`: [`BalancerError`].

mod context;
mod defragment;
mod error;
mod lock;
mod migration;
pub mod policy;
mod round;
mod service;
mod sizes;

pub use context::{Balancer, BalancerConfig};
pub use error::BalancerError;
pub use policy::{moves, zone_of, zone_splits, Chunk, Move, Reason, Shard, ZoneRange};
pub use service::{run, run_with_metrics};
