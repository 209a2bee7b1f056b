//! One write gate per sharded collection, for the critical-section hold
//! (`write::critical`): writes hold its read side while they run, an
//! acknowledgement takes the write side. And one per database for
//! `movePrimary`: requests to its unsharded collections wait while it is
//! held.

/// One write gate per namespace: writes to a collection hold its read
/// side while they run; acknowledging a critical section of that
/// collection takes the write side, waiting for those in flight (and only
/// those: writes to other collections go on).
#[derive(Default)]
pub(crate) struct WriteGates {
    gates: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<tokio::sync::RwLock<()>>>,
    >,
    /// One gate per database, for requests to its unsharded collections.
    db_gates: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<tokio::sync::RwLock<()>>>,
    >,
    /// Databases whose unsharded collections a `movePrimary` holds.
    held_dbs: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Woken when a database is released.
    released: tokio::sync::Notify,
}

impl WriteGates {
    /// The gate of `ns`.
    pub(crate) fn of(&self, ns: &str) -> std::sync::Arc<tokio::sync::RwLock<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.entry(ns.to_owned()).or_default().clone()
    }

    /// Waits until every write to `ns` that started before now finished.
    pub(crate) async fn drain(&self, ns: &str) {
        drop(self.of(ns).write_owned().await);
    }

    /// The gate of the database `db`'s unsharded collections.
    fn of_db(&self, db: &str) -> std::sync::Arc<tokio::sync::RwLock<()>> {
        let mut gates = self.db_gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(db) {
            return gate.clone();
        }
        gates.entry(db.to_owned()).or_default().clone()
    }

    /// The databases held now.
    pub(crate) fn held_dbs(&self) -> Vec<String> {
        self.held_dbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn is_held(&self, db: &str) -> bool {
        self.held_dbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(db)
    }

    /// Holds requests to `db`'s unsharded collections, then waits for the
    /// ones in flight.
    pub(crate) async fn hold_db(&self, db: &str) {
        self.held_dbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(db.to_owned());
        drop(self.of_db(db).write_owned().await);
    }

    /// Lets requests to `db` go again.
    pub(crate) fn release_db(&self, db: &str) {
        let removed = self
            .held_dbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(db);
        if removed {
            self.released.notify_waiters();
        }
    }

    /// Enters `db` for one request to its primary shard: waits while a
    /// `movePrimary` holds it (up to `wait`, then a retryable error), and
    /// keeps the database's gate until the guard is dropped.
    pub(crate) async fn enter_db(
        &self,
        db: &str,
        wait: std::time::Duration,
    ) -> crate::error::Result<tokio::sync::OwnedRwLockReadGuard<()>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let released = self.released.notified();
            if !self.is_held(db) {
                let guard = self.of_db(db).read_owned().await;
                // Held meanwhile: the hold waits for this guard; let it go.
                if !self.is_held(db) {
                    return Ok(guard);
                }
                continue;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(crate::error::RouterError::command(
                    13388,
                    "StaleConfig",
                    format!("database {db} is moving to another primary shard; retry"),
                ));
            }
        }
    }
}
