//! One write gate per sharded collection, for the critical-section hold
//! (`write::critical`): writes hold its read side while they run, an
//! acknowledgement takes the write side. And one per database for
//! `movePrimary`: requests to its unsharded collections wait while it is
//! held.
//!
//! Nothing here is one process-wide lock: the gates sit in maps split
//! into [`PARTS`] independently locked parts (read-locked to find an
//! existing gate, write-locked only to create one), and whether any
//! database is held is one atomic counter read, so requests to different
//! namespaces never wait on each other.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// One namespace's (or database's) gate.
type Gate = Arc<tokio::sync::RwLock<()>>;

/// Independently locked parts of a gate map.
const PARTS: usize = 32;

/// Gates by name, split by a hash of the name.
struct GateMap {
    parts: Vec<RwLock<HashMap<String, Gate>>>,
}

impl Default for GateMap {
    fn default() -> Self {
        GateMap {
            parts: (0..PARTS).map(|_| RwLock::default()).collect(),
        }
    }
}

impl GateMap {
    /// The gate of `name`, created on first use.
    fn get(&self, name: &str) -> Gate {
        // FNV-1a: names are short, and the hash only spreads the parts.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let part = &self.parts[(hash % PARTS as u64) as usize];
        if let Some(gate) = part.read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return gate.clone();
        }
        let mut map = part.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }
}

/// One write gate per namespace: writes to a collection hold its read
/// side while they run; acknowledging a critical section of that
/// collection takes the write side, waiting for those in flight (and only
/// those: writes to other collections go on).
#[derive(Default)]
pub(crate) struct WriteGates {
    gates: GateMap,
    /// One gate per database, for requests to its unsharded collections.
    db_gates: GateMap,
    /// Databases whose unsharded collections a `movePrimary` holds.
    held_dbs: Mutex<HashSet<String>>,
    /// How many databases are held: requests read this, not the set,
    /// unless one is.
    held_count: AtomicUsize,
    /// Woken when a database is released.
    released: tokio::sync::Notify,
}

impl WriteGates {
    /// The gate of `ns`.
    pub(crate) fn of(&self, ns: &str) -> Gate {
        self.gates.get(ns)
    }

    /// Waits until every write to `ns` that started before now finished.
    pub(crate) async fn drain(&self, ns: &str) {
        drop(self.of(ns).write_owned().await);
    }

    /// The databases held now.
    pub(crate) fn held_dbs(&self) -> Vec<String> {
        self.held().iter().cloned().collect()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held_dbs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_held(&self, db: &str) -> bool {
        self.held_count.load(Ordering::SeqCst) != 0 && self.held().contains(db)
    }

    /// Holds requests to `db`'s unsharded collections, then waits for the
    /// ones in flight.
    pub(crate) async fn hold_db(&self, db: &str) {
        {
            let mut held = self.held();
            if held.insert(db.to_owned()) {
                self.held_count.fetch_add(1, Ordering::SeqCst);
            }
        }
        drop(self.db_gates.get(db).write_owned().await);
    }

    /// Lets requests to `db` go again.
    pub(crate) fn release_db(&self, db: &str) {
        let removed = self.held().remove(db);
        if removed {
            self.held_count.fetch_sub(1, Ordering::SeqCst);
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
                let guard = self.db_gates.get(db).read_owned().await;
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
