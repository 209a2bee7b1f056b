//! The embedded config store: one `redb` file, crash-safe (every commit is
//! durable before it returns, and redb never exposes a torn write), locked
//! so that a second process opening it gets a clear error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};

use crate::error::{Result, StoreError};
use crate::store::{Compare, ConfigStore, Op, Txn, TxnOutcome, Versioned};

/// key -> (mod_revision, value)
const KV: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("kv");
/// "revision" -> the store revision
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// The embedded store over a `redb` file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in directory `dir`, as the file
    /// `dir/config.redb`.
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("config.redb");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.display().to_string(),
            },
            other => StoreError::Unavailable(format!("cannot open {}: {other}", path.display())),
        })?;
        let store = EmbeddedStore {
            db: Arc::new(db),
            path,
        };
        // Create the tables so read transactions always find them.
        let w = store.db.begin_write().map_err(unavailable)?;
        w.open_table(KV).map_err(unavailable)?;
        w.open_table(META).map_err(unavailable)?;
        w.commit().map_err(unavailable)?;
        Ok(store)
    }

    fn get_sync(&self, key: &str) -> Result<Option<Versioned>> {
        let r = self.db.begin_read().map_err(unavailable)?;
        let t = r.open_table(KV).map_err(unavailable)?;
        Ok(t.get(key).map_err(unavailable)?.map(|v| {
            let (rev, bytes) = v.value();
            Versioned {
                value: bytes.to_vec(),
                mod_revision: rev,
            }
        }))
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<(String, Versioned)>> {
        let r = self.db.begin_read().map_err(unavailable)?;
        let t = r.open_table(KV).map_err(unavailable)?;
        let mut out = Vec::new();
        for entry in t.range(prefix..).map_err(unavailable)? {
            let (k, v) = entry.map_err(unavailable)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (rev, bytes) = v.value();
            out.push((
                key.to_owned(),
                Versioned {
                    value: bytes.to_vec(),
                    mod_revision: rev,
                },
            ));
        }
        Ok(out)
    }

    fn txn_sync(&self, txn: Txn) -> Result<TxnOutcome> {
        let w = self.db.begin_write().map_err(unavailable)?;
        let revision = {
            let mut kv = w.open_table(KV).map_err(unavailable)?;
            for Compare::ModRevision { key, revision } in &txn.compares {
                let current = kv
                    .get(key.as_str())
                    .map_err(unavailable)?
                    .map(|v| v.value().0);
                if current.unwrap_or(0) != *revision {
                    return Ok(TxnOutcome::Conflict);
                }
            }
            let mut meta = w.open_table(META).map_err(unavailable)?;
            let revision = meta
                .get(REVISION)
                .map_err(unavailable)?
                .map_or(0, |v| v.value())
                + 1;
            meta.insert(REVISION, revision).map_err(unavailable)?;
            for op in &txn.ops {
                match op {
                    Op::Put { key, value } => {
                        kv.insert(key.as_str(), (revision, value.as_slice()))
                            .map_err(unavailable)?;
                    }
                    Op::Delete { key } => {
                        kv.remove(key.as_str()).map_err(unavailable)?;
                    }
                }
            }
            revision
        };
        w.commit().map_err(unavailable)?;
        Ok(TxnOutcome::Committed(revision))
    }

    fn revision_sync(&self) -> Result<u64> {
        let r = self.db.begin_read().map_err(unavailable)?;
        let t = r.open_table(META).map_err(unavailable)?;
        Ok(t.get(REVISION)
            .map_err(unavailable)?
            .map_or(0, |v| v.value()))
    }

    /// Runs a blocking redb call off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(EmbeddedStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait]
impl ConfigStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let key = key.to_owned();
        self.blocking(move |s| s.get_sync(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>> {
        let prefix = prefix.to_owned();
        self.blocking(move |s| s.list_sync(&prefix)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.blocking(move |s| s.txn_sync(txn)).await
    }

    async fn revision(&self) -> Result<u64> {
        self.blocking(|s| s.revision_sync()).await
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cas_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(s.revision().await.unwrap(), 0);
        let t = Txn::default()
            .absent("shards/a")
            .put("shards/a", b"1".to_vec());
        assert_eq!(s.txn(t.clone()).await.unwrap(), TxnOutcome::Committed(1));
        assert_eq!(s.txn(t).await.unwrap(), TxnOutcome::Conflict);
        let v = s.get("shards/a").await.unwrap().unwrap();
        assert_eq!(v.mod_revision, 1);
        let t = Txn::default()
            .unchanged("shards/a", 1)
            .put("shards/a", b"2".to_vec())
            .put("shards/b", b"3".to_vec());
        assert_eq!(s.txn(t).await.unwrap(), TxnOutcome::Committed(2));
        let all = s.list("shards/").await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1.value, b"2");
        s.txn(Txn::default().put("databases/x", vec![]))
            .await
            .unwrap();
        assert_eq!(s.list("shards/").await.unwrap().len(), 2);
        s.txn(Txn::default().delete("shards/b")).await.unwrap();
        assert_eq!(s.list("shards/").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn survives_reopen_and_refuses_second_opener() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            s.txn(Txn::default().put("k", b"v".to_vec())).await.unwrap();
            let err = EmbeddedStore::open(dir.path())
                .err()
                .expect("second open must fail");
            assert!(matches!(err, StoreError::InUse { .. }), "{err}");
            assert!(err.to_string().contains("in use"));
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(s.get("k").await.unwrap().unwrap().value, b"v");
        assert_eq!(s.revision().await.unwrap(), 1);
    }
}
