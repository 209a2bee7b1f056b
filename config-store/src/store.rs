//! The `ConfigStore` trait: a versioned key-value store with multi-key
//! compare-and-swap, watches and leases — the shape both the embedded file
//! and etcd provide, so everything above it is written once.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Result;

/// A lease: keys written under it vanish when it is revoked or expires.
pub type LeaseId = i64;

/// A stored value with the store revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value bytes (BSON for model documents).
    pub value: Vec<u8>,
    /// The store revision of the transaction that last wrote this key.
    pub mod_revision: u64,
}

/// A consistent listing of a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The keys and values, in key order.
    pub entries: Vec<(String, Versioned)>,
    /// The store revision the listing was read at; watch from here.
    pub revision: u64,
}

/// A condition a transaction checks before applying its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key was last written at this revision; 0 means "the key is absent".
    ModRevision {
        /// The key to check.
        key: String,
        /// The expected revision, or 0 for absent.
        revision: u64,
    },
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`, attached to `lease` if given.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
        /// The lease the key lives under, if any.
        lease: Option<LeaseId>,
    },
    /// Remove `key` (no-op if absent).
    Delete {
        /// The key.
        key: String,
    },
}

/// A compare-and-swap transaction: if every compare holds, apply every op,
/// atomically, as one new store revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions that must all hold.
    pub compares: Vec<Compare>,
    /// Writes applied when they do.
    pub ops: Vec<Op>,
}

impl Txn {
    /// Adds a condition that `key` is absent.
    pub fn absent(mut self, key: impl Into<String>) -> Txn {
        self.compares.push(Compare::ModRevision {
            key: key.into(),
            revision: 0,
        });
        self
    }

    /// Adds a condition that `key` was last written at `revision`.
    pub fn unchanged(mut self, key: impl Into<String>, revision: u64) -> Txn {
        self.compares.push(Compare::ModRevision {
            key: key.into(),
            revision,
        });
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Txn {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease: None,
        });
        self
    }

    /// Adds a put attached to a lease.
    pub fn put_leased(mut self, key: impl Into<String>, value: Vec<u8>, lease: LeaseId) -> Txn {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease: Some(lease),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every compare held; the ops were applied at this revision.
    Committed(u64),
    /// A compare failed; nothing was written.
    Conflict,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The revision of the transaction that made the change.
    pub revision: u64,
    /// The key changed.
    pub key: String,
    /// The new value, or `None` when the key was deleted (or its lease ended).
    pub value: Option<Vec<u8>>,
}

/// Where the cluster metadata lives. Implementations are shared by every
/// connection of a router as `Arc<dyn ConfigStore>`.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// The value of `key`, if present.
    async fn get(&self, key: &str) -> Result<Option<Versioned>>;
    /// Every key starting with `prefix`, in key order, with the revision read at.
    async fn scan(&self, prefix: &str) -> Result<Listing>;
    /// Runs a compare-and-swap transaction.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome>;
    /// The current store revision.
    async fn revision(&self) -> Result<u64>;
    /// Changes to keys under `prefix` made after `after_revision`, in
    /// revision order. The channel closes when the watch breaks (store
    /// unreachable, history compacted: [`crate::StoreError::Compacted`] from
    /// this call); the caller then scans again and watches from there.
    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<mpsc::Receiver<WatchEvent>>;
    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    /// Renews a lease; [`crate::StoreError::LeaseExpired`] once it is gone.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;
    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
    /// A short description for logs and `serverStatus` (never a secret).
    fn describe(&self) -> String;

    /// Every key starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>> {
        Ok(self.scan(prefix).await?.entries)
    }
}
