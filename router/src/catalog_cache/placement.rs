//! Database placement: which shard is each database's primary.
//!
//! The map is cached in memory and filled from the config store at start;
//! a database seen for the first time gets a primary (the shard holding the
//! least data) under a creation lock, so concurrent first uses agree.

use std::collections::HashMap;
use std::sync::RwLock;

use shardgate_config_store::{Catalog, DatabaseType, ShardType};

use crate::error::{Result, RouterError};

/// The cached database → primary shard map.
pub(crate) struct Placement {
    databases: RwLock<HashMap<String, DatabaseType>>,
    shards: RwLock<Vec<ShardType>>,
    create: tokio::sync::Mutex<()>,
}

impl Placement {
    /// Loads shards and databases from the store.
    pub(crate) async fn load(catalog: &Catalog) -> Result<Placement> {
        let databases = catalog
            .databases()
            .await?
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
        Ok(Placement {
            databases: RwLock::new(databases),
            shards: RwLock::new(catalog.shards().await?),
            create: tokio::sync::Mutex::new(()),
        })
    }

    /// Re-reads shards and databases from the store.
    pub(crate) async fn reload(&self, catalog: &Catalog) -> Result<()> {
        let databases: HashMap<String, DatabaseType> = catalog
            .databases()
            .await?
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
        self.refresh_shards(catalog).await?;
        if let Ok(mut m) = self.databases.write() {
            *m = databases;
        }
        Ok(())
    }

    /// Every shard, as last read from the store.
    pub(crate) fn shards(&self) -> Vec<ShardType> {
        self.shards.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// One shard by name.
    pub(crate) fn shard(&self, id: &str) -> Result<ShardType> {
        self.shards
            .read()
            .ok()
            .and_then(|s| s.iter().find(|s| s.id == id).cloned())
            .ok_or_else(|| {
                RouterError::command(70, "ShardNotFound", format!("shard {id} not found"))
            })
    }

    /// Re-reads the shard list from the store.
    pub(crate) async fn refresh_shards(&self, catalog: &Catalog) -> Result<()> {
        let shards = catalog.shards().await?;
        if let Ok(mut s) = self.shards.write() {
            *s = shards;
        }
        Ok(())
    }

    /// The cached entry of a database.
    pub(crate) fn cached(&self, db: &str) -> Option<DatabaseType> {
        self.databases.read().ok().and_then(|m| m.get(db).cloned())
    }

    /// Every cached database.
    pub(crate) fn databases(&self) -> Vec<DatabaseType> {
        let mut v: Vec<_> = self
            .databases
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The database's entry, creating it on `choose()`'s shard when new.
    pub(crate) async fn get_or_create<F, Fut>(
        &self,
        catalog: &Catalog,
        db: &str,
        choose: F,
    ) -> Result<DatabaseType>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String>>,
    {
        if let Some(d) = self.cached(db) {
            return Ok(d);
        }
        let _guard = self.create.lock().await;
        if let Some(d) = self.cached(db) {
            return Ok(d);
        }
        let entry = match catalog.database(db).await? {
            Some(existing) => existing,
            None => {
                let primary = choose().await?;
                catalog
                    .create_database(DatabaseType::new(db, primary))
                    .await?
            }
        };
        self.remember(entry.clone());
        Ok(entry)
    }

    /// Caches an entry the router wrote or read.
    pub(crate) fn remember(&self, entry: DatabaseType) {
        if let Ok(mut m) = self.databases.write() {
            m.insert(entry.name.clone(), entry);
        }
    }

    /// Forgets a dropped database.
    pub(crate) fn forget(&self, db: &str) {
        if let Ok(mut m) = self.databases.write() {
            m.remove(db);
        }
    }

    /// How many databases each shard is primary for.
    pub(crate) fn primaries_per_shard(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for d in self.databases() {
            *counts.entry(d.primary).or_insert(0) += 1;
        }
        counts
    }
}

/// Checks a database name as mongod does (code 73, InvalidNamespace).
pub(crate) fn validate_db_name(db: &str) -> Result<()> {
    let bad = db.is_empty()
        || db.len() >= 64
        || db
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'));
    if bad {
        return Err(RouterError::command(
            73,
            "InvalidNamespace",
            format!("Invalid database name: '{db}'"),
        ));
    }
    Ok(())
}
