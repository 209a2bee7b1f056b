//! Moving a database's primary shard: the database-wide critical section
//! `movePrimary` records (routers hold requests to the database's
//! unsharded collections and acknowledge once their requests in flight are
//! done), and the switch of the primary with a version bump.

use bson::{doc, Document};

use super::{decode, encode, Catalog};
use crate::error::{Result, StoreError};
use crate::model::keys::{DATABASES, DB_ACKS, DB_CRITICAL};
use crate::model::DatabaseType;
use crate::store::Txn;

impl Catalog {
    /// Records that `db`'s unsharded collections are held while they move
    /// to `to`.
    pub async fn enter_db_critical(&self, db: &str, to: &str) -> Result<()> {
        let record = doc! {"_id": db, "to": to, "since": bson::DateTime::now()};
        self.store()
            .txn(Txn::default().put(format!("{DB_CRITICAL}{db}"), encode(&record)?))
            .await?;
        Ok(())
    }

    /// The critical-section record of `db`, if one is in force.
    pub async fn db_critical(&self, db: &str) -> Result<Option<Document>> {
        let key = format!("{DB_CRITICAL}{db}");
        match self.store().get(&key).await? {
            Some(v) => decode(&key, &v.value).map(Some),
            None => Ok(None),
        }
    }

    /// Every database in a critical section.
    pub async fn dbs_in_critical(&self) -> Result<Vec<String>> {
        Ok(self
            .store()
            .list(DB_CRITICAL)
            .await?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(DB_CRITICAL).map(str::to_owned))
            .collect())
    }

    /// Ends `db`'s critical section and forgets its acknowledgements.
    pub async fn leave_db_critical(&self, db: &str) -> Result<()> {
        let mut txn = Txn::default().delete(format!("{DB_CRITICAL}{db}"));
        for (k, _) in self.store().list(&format!("{DB_ACKS}{db}/")).await? {
            txn = txn.delete(k);
        }
        self.store().txn(txn).await?;
        Ok(())
    }

    /// `router` holds `db` and its requests in flight are done.
    pub async fn put_db_ack(&self, db: &str, router: &str) -> Result<()> {
        self.store()
            .txn(Txn::default().put(format!("{DB_ACKS}{db}/{router}"), Vec::new()))
            .await?;
        Ok(())
    }

    /// The routers that acknowledged `db`'s critical section.
    pub async fn db_acks(&self, db: &str) -> Result<Vec<String>> {
        let prefix = format!("{DB_ACKS}{db}/");
        Ok(self
            .store()
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    /// Makes `to` the primary shard of `db` (its version's `lastMod`
    /// bumped); returns the new entry.
    pub async fn set_primary(&self, db: &str, to: &str) -> Result<DatabaseType> {
        let mut entry = self
            .database(db)
            .await?
            .ok_or_else(|| StoreError::Rejected {
                code: 26,
                code_name: "NamespaceNotFound",
                message: format!("database {db} not found"),
            })?;
        entry.primary = to.to_owned();
        entry.version.last_mod += 1;
        self.store()
            .txn(Txn::default().put(format!("{DATABASES}{db}"), encode(&entry)?))
            .await?;
        Ok(entry)
    }
}
