//! Cluster metadata for shardgate and the store that keeps it.
//!
//! # Layout
//! - [`store`]: the [`ConfigStore`] trait: versioned reads, multi-key
//!   compare-and-swap transactions. Every implementation keeps one
//!   store-wide revision that each committed transaction advances.
//! - [`embedded`]: the default implementation, one crash-safe `redb` file
//!   owned by one process.
//! - [`model`]: the metadata documents (`ShardType`, `DatabaseType`), shaped
//!   as the `config` database documents of a real cluster.
//! - [`catalog`]: typed reads and writes of the model over any store.
//! - [`open`]: turning a `--config-store` URL into a store.
//!
//! Collections, chunks, zones, leases, watches and the etcd implementation
//! arrive with the cluster-metadata issue; keys are namespaced
//! (`shards/…`, `databases/…`) so they slot in beside these.

pub mod catalog;
pub mod chunk_map;
pub mod embedded;
pub mod etcd;
pub mod error;
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
