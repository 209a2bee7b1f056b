//! Typed reads and writes of the metadata model over any [`ConfigStore`].
//!
//! Every write is one compare-and-swap transaction, so concurrent routers
//! never interleave half-applied changes; the chunk operations also check
//! that the chunks of a collection still tile the key space.

mod balancing;
mod cluster;
mod lease_lock;
mod merges;
mod primary;
mod refine;
mod reshard;
pub use cluster::DEFAULT_CHUNK_SIZE_MB;
pub use lease_lock::{ddl_lock_name, LeaseLock};
mod sharding;
mod splits;
mod transactions;
pub use transactions::{decision_key, TxnDecision, TXN_DECISIONS};
mod zones;

pub use reshard::{ReshardCommit, RESHARD_MAX_OPS};
pub use sharding::{new_chunk, version_doc, ChunkChange, CollectionVersion};

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::model::{DatabaseType, ShardType};
use crate::store::{ConfigStore, Txn, TxnOutcome};

use crate::model::keys::{DATABASES, SHARDS};

/// What `add_shard` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddShardOutcome {
    /// The shard was added.
    Added,
    /// The same shard (same name and host) was already there.
    AlreadyPresent,
    /// The name is taken by a shard with another host.
    NameTaken(ShardType),
    /// The host is already a shard under another name.
    HostTaken(ShardType),
}

/// Typed access to the cluster metadata.
#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn ConfigStore>,
}

impl Catalog {
    /// A catalog over `store`.
    pub fn new(store: Arc<dyn ConfigStore>) -> Catalog {
        Catalog { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ConfigStore> {
        &self.store
    }

    /// Every shard, by name.
    pub async fn shards(&self) -> Result<Vec<ShardType>> {
        self.list(SHARDS).await
    }

    /// Adds a shard unless its name or host is taken.
    pub async fn add_shard(&self, shard: ShardType) -> Result<AddShardOutcome> {
        loop {
            let existing = self.shards().await?;
            if let Some(same) = existing.iter().find(|s| s.id == shard.id) {
                return Ok(if same.host == shard.host {
                    AddShardOutcome::AlreadyPresent
                } else {
                    AddShardOutcome::NameTaken(same.clone())
                });
            }
            let addrs = shard.addresses();
            if let Some(other) = existing
                .iter()
                .find(|s| s.addresses().iter().any(|a| addrs.contains(a)))
            {
                return Ok(AddShardOutcome::HostTaken(other.clone()));
            }
            let key = format!("{SHARDS}{}", shard.id);
            let txn = Txn::default().absent(&key).put(&key, encode(&shard)?);
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(AddShardOutcome::Added);
            }
        }
    }

    /// Every database, by name.
    pub async fn databases(&self) -> Result<Vec<DatabaseType>> {
        self.list(DATABASES).await
    }

    /// One database, if it exists.
    pub async fn database(&self, name: &str) -> Result<Option<DatabaseType>> {
        let key = format!("{DATABASES}{name}");
        match self.store.get(&key).await? {
            Some(v) => decode(&key, &v.value).map(Some),
            None => Ok(None),
        }
    }

    /// Creates `db` unless the name exists; returns the entry that won.
    pub async fn create_database(&self, db: DatabaseType) -> Result<DatabaseType> {
        let key = format!("{DATABASES}{}", db.name);
        let txn = Txn::default().absent(&key).put(&key, encode(&db)?);
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(db),
            TxnOutcome::Conflict => self.database(&db.name).await?.ok_or_else(|| {
                StoreError::Unavailable(format!("database {} vanished while created", db.name))
            }),
        }
    }

    /// Removes a database entry.
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        self.store
            .txn(Txn::default().delete(format!("{DATABASES}{name}")))
            .await?;
        Ok(())
    }

    /// Removes a shard entry (after `removeShard` drained it).
    pub async fn remove_shard(&self, id: &str) -> Result<()> {
        self.store
            .txn(Txn::default().delete(format!("{SHARDS}{id}")))
            .await?;
        Ok(())
    }

    /// Sets or clears a shard's `draining` flag.
    pub async fn set_draining(&self, id: &str, draining: bool) -> Result<()> {
        loop {
            let Some((mut shard, rev)) = self
                .shards_versioned()
                .await?
                .into_iter()
                .find(|(s, _)| s.id == id)
            else {
                return Err(StoreError::rejected(
                    70,
                    "ShardNotFound",
                    format!("shard {id} not found"),
                ));
            };
            shard.draining = draining;
            if self.put_shard_if(&shard, rev).await? {
                return Ok(());
            }
        }
    }

    /// Rewrites a shard entry (draining flag, zones), if it is unchanged
    /// since `read`; false on a conflict.
    pub(crate) async fn put_shard_if(&self, shard: &ShardType, read: u64) -> Result<bool> {
        let key = format!("{SHARDS}{}", shard.id);
        let txn = Txn::default()
            .unchanged(&key, read)
            .put(&key, encode(shard)?);
        Ok(matches!(
            self.store.txn(txn).await?,
            TxnOutcome::Committed(_)
        ))
    }

    /// Every shard with the revision of its entry.
    pub(crate) async fn shards_versioned(&self) -> Result<Vec<(ShardType, u64)>> {
        self.store
            .list(SHARDS)
            .await?
            .into_iter()
            .map(|(k, v)| decode(&k, &v.value).map(|s| (s, v.mod_revision)))
            .collect()
    }

    pub(crate) async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        self.store
            .list(prefix)
            .await?
            .into_iter()
            .map(|(k, v)| decode(&k, &v.value))
            .collect()
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bson::serialize_to_vec(value).map_err(|e| StoreError::Corrupt {
        key: String::new(),
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    bson::deserialize_from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;

    #[tokio::test]
    async fn shards_and_databases_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::new(Arc::new(EmbeddedStore::open(dir.path()).unwrap()));
        let a = ShardType::new("shard0", "127.0.0.1:1");
        assert_eq!(
            c.add_shard(a.clone()).await.unwrap(),
            AddShardOutcome::Added
        );
        assert_eq!(
            c.add_shard(a.clone()).await.unwrap(),
            AddShardOutcome::AlreadyPresent
        );
        assert!(matches!(
            c.add_shard(ShardType::new("shard0", "127.0.0.1:2"))
                .await
                .unwrap(),
            AddShardOutcome::NameTaken(_)
        ));
        assert!(matches!(
            c.add_shard(ShardType::new("other", "127.0.0.1:1"))
                .await
                .unwrap(),
            AddShardOutcome::HostTaken(_)
        ));
        assert_eq!(c.shards().await.unwrap(), vec![a]);

        let db = c
            .create_database(DatabaseType::new("app", "shard0"))
            .await
            .unwrap();
        let again = c
            .create_database(DatabaseType::new("app", "shard9"))
            .await
            .unwrap();
        assert_eq!(again, db, "the first placement wins");
        assert_eq!(c.database("app").await.unwrap(), Some(db));
        c.drop_database("app").await.unwrap();
        assert_eq!(c.database("app").await.unwrap(), None);
    }
}
