//! The shardgate router: what drivers connect to in place of `mongos`.
//!
//! # Layout
//! - [`config`]: [`RouterConfig`] (serde defaults, then `validate`).
//! - [`server`]: [`run`], the listener and the shutdown drain.
//! - `connection`: one task per client connection: framing, decoding,
//!   replying with the client's `requestID`, compression.
//! - `commands`: classification and handling of each command:
//!   `handshake` (`hello` as a mongos), `diagnostic` (`ping`, `buildInfo`,
//!   `serverStatus`, `getParameter`, …), `admin` (`addShard`, `listShards`,
//!   `enableSharding`, `listDatabases`, …), `forward` (everything else, to
//!   the database's primary shard, or to every shard).
//! - `pool`: a bounded connection pool per shard, shared by all clients.
//! - [`request`]: [`CommandInfo`], the routing fields read from a raw body.
//! - `routing`: the routing table (shard key + chunk map per sharded
//!   collection); `background`: following the config store to keep it and
//!   the placement current, and registering in `config.mongos`.
//! - `config_view`: the `config` database as a view of the store.
//! - The document engine (match, sort, project, aggregate) that the config
//!   view and result merging use is the `shardgate-query` crate.
//! - `placement`: the database → primary shard cache over the config store.
//! - `error`: [`RouterError`] and the MongoDB-shaped error reply.
//! - `stats`: counters behind `serverStatus`.

mod auth;
mod background;
mod balancer;
mod catalog_cache;
mod commands;
pub mod config;
mod config_view;
mod connection;
pub mod error;
mod migration;
pub mod read;
pub mod request;
mod retry_cache;
pub mod server;
mod session;
mod shards;
mod state;
mod stats;
pub mod targeting;
#[cfg(test)]
mod testing;
mod tls;
pub mod write;

pub use config::{LimitsConfig, PoolConfig, RouterConfig, ShardAuth, ShardTls, TlsConfig, TlsMode};
pub use error::RouterError;
pub use request::CommandInfo;
pub use server::run;
