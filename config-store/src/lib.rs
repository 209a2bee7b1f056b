//! Cluster metadata for shardgate and the store that keeps it.
//!
//! # Layout
//! - [`store`]: the [`ConfigStore`] trait: versioned reads, multi-key
//!   compare-and-swap transactions, watches from a revision, leases.
//! - [`embedded`]: the default implementation, one crash-safe `redb` file
//!   owned by one process.
//! - [`etcd`]: the replicated implementation over an etcd cluster (and, with
//!   the `test-harness` feature, a local etcd cluster for tests).
//! - [`model`]: the metadata documents (shards, databases, collections,
//!   chunks, zone ranges, settings, routers, locks, migrations, changelog),
//!   shaped as the `config` database of a real cluster, and their store keys.
//! - [`catalog`]: typed reads and writes of the model over any store; chunk
//!   changes keep the chunks of a collection tiling the key space.
//! - [`shard_key`]: shard-key patterns, the order-preserving key encoding
//!   and MongoDB's hashed-index hash.
//! - [`chunk_map`]: [`chunk_map::ChunkMap`], chunk lookup by encoded key.
//! - [`loopback`]: ports for the servers tests and the demo start.
//! - [`open`]: turning a `--config-store` URL into a store.
//! - `error`: [`StoreError`], the store's errors with their MongoDB codes.
//! - The catalog's lease locks ([`catalog::LeaseLock`]): the balancer's
//!   migration lock and the per-namespace DDL lock.

pub mod catalog;
pub mod chunk_map;
pub mod embedded;
pub mod error;
pub mod etcd;
pub mod loopback;
pub mod model;
pub mod open;
pub mod shard_key;
pub mod store;

pub use catalog::Catalog;
pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use model::{DatabaseType, DatabaseVersion, ShardType};
pub use open::{open, StoreUrl};
pub use store::{
    Compare, ConfigStore, LeaseId, Listing, Op, Txn, TxnOutcome, Versioned, WatchEvent,
};
