//! Cluster-wide records: settings, the cluster id, live routers, locks and
//! the changelog.

use bson::oid::ObjectId;
use bson::Document;

use super::{decode, encode, Catalog};
use crate::error::Result;
use crate::model::keys::{
    CHANGELOG, CLUSTER_PARAMETERS, FCV, LOCKS, MONGOS, QUERY_ANALYZERS, SETTINGS, VERSION,
};
use crate::model::{ChangelogEntry, LockType, MongosType, VersionType};
use crate::store::{LeaseId, Txn, TxnOutcome};

/// Default chunk size in MB (`config.settings` `chunksize`).
pub const DEFAULT_CHUNK_SIZE_MB: i64 = 64;

impl Catalog {
    /// A `config.settings` document by `_id`.
    pub async fn setting(&self, id: &str) -> Result<Option<Document>> {
        let key = format!("{SETTINGS}{id}");
        match self.store().get(&key).await? {
            Some(v) => decode(&key, &v.value).map(Some),
            None => Ok(None),
        }
    }

    /// Every `config.settings` document.
    pub async fn settings(&self) -> Result<Vec<Document>> {
        self.list(SETTINGS).await
    }

    /// Writes a `config.settings` document (its `_id` names it).
    pub async fn put_setting(&self, id: &str, doc: &Document) -> Result<()> {
        self.store()
            .txn(Txn::default().put(format!("{SETTINGS}{id}"), encode(doc)?))
            .await?;
        Ok(())
    }

    /// Removes a `config.settings` document.
    pub async fn delete_setting(&self, id: &str) -> Result<()> {
        self.store()
            .txn(Txn::default().delete(format!("{SETTINGS}{id}")))
            .await?;
        Ok(())
    }

    /// Every cluster parameter set with `setClusterParameter` (`_id`: its
    /// name).
    pub async fn cluster_parameters(&self) -> Result<Vec<Document>> {
        self.list(CLUSTER_PARAMETERS).await
    }

    /// Writes a cluster parameter (its `_id` names it).
    pub async fn put_cluster_parameter(&self, name: &str, doc: &Document) -> Result<()> {
        self.store()
            .txn(Txn::default().put(format!("{CLUSTER_PARAMETERS}{name}"), encode(doc)?))
            .await?;
        Ok(())
    }

    /// Every `config.queryAnalyzers` document (`_id`: the namespace).
    pub async fn query_analyzers(&self) -> Result<Vec<Document>> {
        self.list(QUERY_ANALYZERS).await
    }

    /// Writes a `config.queryAnalyzers` document (its `_id` names it).
    pub async fn put_query_analyzer(&self, ns: &str, doc: &Document) -> Result<()> {
        self.store()
            .txn(Txn::default().put(format!("{QUERY_ANALYZERS}{ns}"), encode(doc)?))
            .await?;
        Ok(())
    }

    /// Removes the query analyzer of `ns` (a drop or rename of it).
    pub async fn delete_query_analyzer(&self, ns: &str) -> Result<()> {
        self.store()
            .txn(Txn::default().delete(format!("{QUERY_ANALYZERS}{ns}")))
            .await?;
        Ok(())
    }

    /// The feature compatibility version document, if one was ever set.
    pub async fn feature_compatibility_version(&self) -> Result<Option<Document>> {
        match self.store().get(FCV).await? {
            Some(v) => decode(FCV, &v.value).map(Some),
            None => Ok(None),
        }
    }

    /// Records the feature compatibility version document.
    pub async fn put_feature_compatibility_version(&self, doc: &Document) -> Result<()> {
        self.store()
            .txn(Txn::default().put(FCV, encode(doc)?))
            .await?;
        Ok(())
    }

    /// The chunk size in bytes (`chunksize` setting, MB, default 64).
    pub async fn chunk_size_bytes(&self) -> Result<i64> {
        let mb = self
            .setting("chunksize")
            .await?
            .and_then(|d| match d.get("value") {
                Some(bson::Bson::Int32(v)) => Some(*v as i64),
                Some(bson::Bson::Int64(v)) => Some(*v),
                Some(bson::Bson::Double(v)) => Some(*v as i64),
                _ => None,
            })
            .filter(|v| *v > 0)
            .unwrap_or(DEFAULT_CHUNK_SIZE_MB);
        Ok(mb * 1024 * 1024)
    }

    /// Whether the balancer is stopped (`balancer` setting).
    pub async fn balancer_stopped(&self) -> Result<bool> {
        Ok(self.setting("balancer").await?.is_some_and(|d| {
            d.get_bool("stopped").unwrap_or(false) || d.get_str("mode").ok() == Some("off")
        }))
    }

    /// The cluster id, created on first use.
    pub async fn version(&self) -> Result<VersionType> {
        if let Some(v) = self.store().get(VERSION).await? {
            return decode(VERSION, &v.value);
        }
        let fresh = VersionType {
            id: 1,
            cluster_id: ObjectId::new(),
        };
        let txn = Txn::default().absent(VERSION).put(VERSION, encode(&fresh)?);
        match self.store().txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(fresh),
            TxnOutcome::Conflict => match self.store().get(VERSION).await? {
                Some(v) => decode(VERSION, &v.value),
                None => Ok(fresh),
            },
        }
    }

    /// Registers (or refreshes) a live router under its lease.
    pub async fn register_router(&self, router: &MongosType, lease: LeaseId) -> Result<()> {
        self.store()
            .txn(Txn::default().put_leased(
                format!("{MONGOS}{}", router.id),
                encode(router)?,
                lease,
            ))
            .await?;
        Ok(())
    }

    /// The live routers.
    pub async fn routers(&self) -> Result<Vec<MongosType>> {
        self.list(MONGOS).await
    }

    /// The held locks.
    pub async fn locks(&self) -> Result<Vec<LockType>> {
        self.list(LOCKS).await
    }

    /// Takes the lock `name` under `lease` if nobody holds it. Returns the
    /// fencing token (the store revision that wrote the lock): a holder's
    /// later writes compare it with [`lock_fence`](Self::lock_fence), so a
    /// holder whose lease ended cannot commit anything.
    pub async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        why: &str,
        lease: LeaseId,
    ) -> Result<Option<u64>> {
        let key = format!("{LOCKS}{name}");
        let lock = LockType {
            id: name.to_owned(),
            state: 2,
            process: holder.to_owned(),
            when: bson::DateTime::now(),
            why: why.to_owned(),
        };
        let txn = Txn::default()
            .absent(&key)
            .put_leased(&key, encode(&lock)?, lease);
        Ok(match self.store().txn(txn).await? {
            TxnOutcome::Committed(rev) => Some(rev),
            TxnOutcome::Conflict => None,
        })
    }

    /// The compare that holds while the lock `name` is still the one taken
    /// at `token`.
    pub fn lock_fence(&self, name: &str, token: u64) -> Txn {
        Txn::default().unchanged(format!("{LOCKS}{name}"), token)
    }

    /// Releases the lock `name` if it is still the one taken at `token`.
    pub async fn unlock(&self, name: &str, token: u64) -> Result<()> {
        let key = format!("{LOCKS}{name}");
        self.store()
            .txn(Txn::default().unchanged(&key, token).delete(key))
            .await?;
        Ok(())
    }

    /// Appends a changelog entry; its key orders entries by time.
    pub async fn log_change(&self, entry: &ChangelogEntry) -> Result<()> {
        let key = format!(
            "{CHANGELOG}{:020}-{}",
            entry.time.timestamp_millis(),
            ObjectId::new().to_hex()
        );
        self.store()
            .txn(Txn::default().put(key, encode(entry)?))
            .await?;
        Ok(())
    }

    /// Every changelog entry, oldest first.
    pub async fn changelog(&self) -> Result<Vec<ChangelogEntry>> {
        self.list(CHANGELOG).await
    }
}
