//! The shardgate router: what drivers connect to in place of `mongos`.
//!
//! # Layout
//! Calls go downward: `server` → `connection` → `commands` → `read` /
//! `write` → `catalog_cache` / `targeting` → `shards`.
//! - [`config`]: [`RouterConfig`] (serde defaults, then `validate`).
//! - [`server`]: [`run`], the listener and the shutdown drain; `tls`:
//!   client TLS; `connection`: one task per client connection (framing,
//!   decoding, replying with the client's `requestID`, compression).
//! - `session`: `Session`, `Request`, `Reply`, `Namespace`.
//! - [`request`]: [`CommandInfo`], the routing fields read from a raw body.
//! - `commands`: the command registry (`registry`, `table`: names,
//!   privileges, writes/retryable, handlers), dispatch, and the router's
//!   own commands (`handshake`, `diagnostic`, `host`, `admin`, `sharding`,
//!   `shard_collection`, `refine_shard_key`, `chunks`, `zones`, `cluster`,
//!   `data_distribution`, `rw_concern`, `bulk_write`).
//! - `auth`: SCRAM conversations, users and roles, the privilege check.
//! - `catalog_cache`: the routing table and database placement, kept
//!   current by `background`, which follows the config store's watch and
//!   registers this router in `config.mongos`.
//! - [`targeting`]: filter → key ranges → shards (pure).
//! - [`read`]: scatter reads — `find`, `get_more`, `aggregate`, `orphans`;
//!   `cursors`: the router cursor manager (table, merged shard streams,
//!   `merge`, the k-way merge), free of router state.
//! - [`write`]: the sharded write path — `plan`, `critical`, `exec`, `owned`;
//!   `write_gates`: one write gate per sharded collection.
//! - `change_streams`: `$changeStream` on collections, databases and the
//!   cluster, merged from every shard by cluster time, with the router's
//!   own resume token.
//! - `shards`: the router's calls over its `ShardClient`.
//! - `config_view`: the `config` database as a view of the store.
//! - `ddl`: DDL and statistics on sharded collections (indexes, `collMod`,
//!   `collStats`, `dbStats`, `validate`, `checkMetadataConsistency`),
//!   under the namespace's DDL lock.
//! - `fail_points`: `failCommand` acting on the router's own commands;
//!   `labels`: the error labels and code names mongod gives.
//! - `txn`: the transaction router's protocols (statements, commit and
//!   abort, their recovery) over `transactions`: the open transactions,
//!   the `ShardClient` wrapper that joins shards to them, the cluster time.
//! - `operations`: the router's own operations in progress (`currentOp`,
//!   `killOp`); [`log`]: the recent log lines `getLog` answers.
//! - `metrics`: Prometheus metrics (per command, namespace and shard
//!   latency, targeting, pools, cursors, connections, transactions) over
//!   the `shardgate-metrics` crate; `metrics/trace`: what one operation
//!   did on the shards (`MeteredShards` fills it); `metrics/http`: the
//!   `/metrics`, `/healthz` and `/readyz` listener. `slow_log`: the slow
//!   operation log (`slowms`) with the command's redacted shape.
//! - `local_sessions`: the sessions clients used (`$listLocalSessions`).
//! - `query_analysis`: query sampling (`configureQueryAnalyzer`,
//!   `$listSampledQueries`) and `analyzeShardKey`'s read and write
//!   distributions.
//! - `retry_cache`: replies of retryable writes; `stats`: `serverStatus`
//!   counters; `state`: what every connection shares; `error`:
//!   [`RouterError`] and the MongoDB-shaped error reply.
//! - `testing` (tests only): a fake `ShardClient` and a router state over it.
//!
//! The document engine the config view and result merging use is the
//! `shardgate-query` crate; shard connections are `shardgate-shard-client`.

mod auth;
mod background;
mod catalog_cache;
mod change_streams;
mod collation;
mod commands;
pub mod config;
mod config_view;
mod connection;
mod cursors;
mod ddl;
pub mod error;
mod fail_points;
mod js;
mod labels;
mod local_sessions;
pub mod log;
mod metrics;
mod operations;
mod query_analysis;
pub mod read;
pub mod request;
mod retry_cache;
pub mod server;
mod session;
mod shards;
mod slow_log;
mod state;
mod stats;
pub mod targeting;
#[cfg(test)]
mod testing;
mod tls;
mod transactions;
mod txn;
pub mod write;
mod write_gates;

pub use config::{LimitsConfig, PoolConfig, RouterConfig, ShardAuth, ShardTls, TlsConfig, TlsMode};
pub use error::RouterError;
pub use request::CommandInfo;
pub use server::{run, run_with_metrics};
