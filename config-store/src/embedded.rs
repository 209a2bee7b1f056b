//! The embedded config store: one `redb` file, crash-safe (every commit is
//! durable before it returns, and redb never exposes a torn write), locked
//! so that a second process opening it gets a clear error.
//!
//! Watches are served from an in-memory log of recent changes; leases live
//! in memory, since only this process can hold them. Keys written under a
//! lease by an earlier process are removed when the store opens.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use crate::error::{Result, StoreError};
use crate::store::{
    Compare, ConfigStore, LeaseId, Listing, Op, Txn, TxnOutcome, Versioned, WatchEvent,
};

/// key -> (mod_revision, lease or 0, value)
const KV: TableDefinition<&str, (u64, i64, &[u8])> = TableDefinition::new("kv");
/// "revision" -> the store revision
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// How many recent changes a watch can replay.
const EVENT_LOG_LEN: usize = 16_384;
/// Buffer of one watch; a watcher that falls this far behind is dropped.
const WATCH_BUFFER: usize = 4_096;

/// The embedded store over a `redb` file.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    log: Mutex<EventLog>,
    leases: Mutex<HashMap<LeaseId, LeaseState>>,
    next_lease: AtomicI64,
}

#[derive(Default)]
struct EventLog {
    events: VecDeque<WatchEvent>,
    watchers: Vec<(String, mpsc::Sender<WatchEvent>)>,
}

struct LeaseState {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
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
            inner: Arc::new(Inner {
                db,
                path,
                log: Mutex::new(EventLog::default()),
                leases: Mutex::new(HashMap::new()),
                next_lease: AtomicI64::new(1),
            }),
        };
        store.drop_stale_leased_keys()?;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(reap_leases(Arc::downgrade(&store.inner)));
        }
        Ok(store)
    }

    /// Creates the tables and removes keys an earlier process wrote under
    /// its leases (those leases died with it).
    fn drop_stale_leased_keys(&self) -> Result<()> {
        let w = self.inner.db.begin_write().map_err(unavailable)?;
        {
            let mut kv = w.open_table(KV).map_err(unavailable)?;
            w.open_table(META).map_err(unavailable)?;
            let mut stale = Vec::new();
            for entry in kv.iter().map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                if v.value().1 != 0 {
                    stale.push(k.value().to_owned());
                }
            }
            for k in stale {
                kv.remove(k.as_str()).map_err(unavailable)?;
            }
        }
        w.commit().map_err(unavailable)?;
        Ok(())
    }

    fn get_sync(&self, key: &str) -> Result<Option<Versioned>> {
        let r = self.inner.db.begin_read().map_err(unavailable)?;
        let t = r.open_table(KV).map_err(unavailable)?;
        Ok(t.get(key).map_err(unavailable)?.map(|v| {
            let (rev, _, bytes) = v.value();
            Versioned {
                value: bytes.to_vec(),
                mod_revision: rev,
            }
        }))
    }

    fn scan_sync(&self, prefix: &str) -> Result<Listing> {
        let r = self.inner.db.begin_read().map_err(unavailable)?;
        let t = r.open_table(KV).map_err(unavailable)?;
        let meta = r.open_table(META).map_err(unavailable)?;
        let revision = meta
            .get(REVISION)
            .map_err(unavailable)?
            .map_or(0, |v| v.value());
        let mut entries = Vec::new();
        for entry in t.range(prefix..).map_err(unavailable)? {
            let (k, v) = entry.map_err(unavailable)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (rev, _, bytes) = v.value();
            entries.push((
                key.to_owned(),
                Versioned {
                    value: bytes.to_vec(),
                    mod_revision: rev,
                },
            ));
        }
        Ok(Listing { entries, revision })
    }

    fn txn_sync(&self, txn: Txn) -> Result<TxnOutcome> {
        for op in &txn.ops {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
            {
                if !self.lease_alive(*lease) {
                    return Err(StoreError::LeaseExpired(*lease));
                }
            }
        }
        let w = self.inner.db.begin_write().map_err(unavailable)?;
        let mut events = Vec::new();
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
                    Op::Put { key, value, lease } => {
                        kv.insert(
                            key.as_str(),
                            (revision, lease.unwrap_or(0), value.as_slice()),
                        )
                        .map_err(unavailable)?;
                        events.push(WatchEvent {
                            revision,
                            key: key.clone(),
                            value: Some(value.clone()),
                        });
                    }
                    Op::Delete { key } => {
                        if kv.remove(key.as_str()).map_err(unavailable)?.is_some() {
                            events.push(WatchEvent {
                                revision,
                                key: key.clone(),
                                value: None,
                            });
                        }
                    }
                }
            }
            revision
        };
        // Publish under the log lock, committed first: a watch registered
        // meanwhile either replays these events or receives them, never both.
        let mut log = self.inner.log.lock().map_err(poisoned)?;
        w.commit().map_err(unavailable)?;
        self.attach_leases(&txn);
        for event in events {
            log.watchers.retain(|(prefix, tx)| {
                !event.key.starts_with(prefix.as_str()) || tx.try_send(event.clone()).is_ok()
            });
            if log.events.len() == EVENT_LOG_LEN {
                log.events.pop_front();
            }
            log.events.push_back(event);
        }
        Ok(TxnOutcome::Committed(revision))
    }

    fn attach_leases(&self, txn: &Txn) {
        let Ok(mut leases) = self.inner.leases.lock() else {
            return;
        };
        for op in &txn.ops {
            match op {
                Op::Put { key, lease, .. } => {
                    for (id, state) in leases.iter_mut() {
                        if Some(*id) == *lease {
                            state.keys.insert(key.clone());
                        } else {
                            state.keys.remove(key);
                        }
                    }
                }
                Op::Delete { key } => {
                    for state in leases.values_mut() {
                        state.keys.remove(key);
                    }
                }
            }
        }
    }

    fn lease_alive(&self, lease: LeaseId) -> bool {
        self.inner
            .leases
            .lock()
            .map(|l| l.get(&lease).is_some_and(|s| s.deadline > Instant::now()))
            .unwrap_or(false)
    }

    fn watch_sync(&self, prefix: &str, after: u64) -> Result<mpsc::Receiver<WatchEvent>> {
        let current = self.revision_sync()?;
        let mut log = self.inner.log.lock().map_err(poisoned)?;
        let oldest = log.events.front().map_or(current + 1, |e| e.revision);
        if after < current && after + 1 < oldest {
            return Err(StoreError::Compacted { revision: oldest });
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        for event in log.events.iter().filter(|e| e.revision > after) {
            if event.key.starts_with(prefix) && tx.try_send(event.clone()).is_err() {
                return Err(StoreError::Compacted { revision: oldest });
            }
        }
        log.watchers.push((prefix.to_owned(), tx));
        Ok(rx)
    }

    fn revision_sync(&self) -> Result<u64> {
        let r = self.inner.db.begin_read().map_err(unavailable)?;
        let t = r.open_table(META).map_err(unavailable)?;
        Ok(t.get(REVISION)
            .map_err(unavailable)?
            .map_or(0, |v| v.value()))
    }

    /// Deletes the keys of leases past their deadline.
    fn reap_sync(&self) -> Result<()> {
        let expired: Vec<(LeaseId, HashSet<String>)> = {
            let Ok(mut leases) = self.inner.leases.lock() else {
                return Ok(());
            };
            let now = Instant::now();
            let ids: Vec<LeaseId> = leases
                .iter()
                .filter(|(_, s)| s.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| leases.remove(&id).map(|s| (id, s.keys)))
                .collect()
        };
        for (_, keys) in expired {
            if keys.is_empty() {
                continue;
            }
            let txn = keys.into_iter().fold(Txn::default(), |t, k| t.delete(k));
            self.txn_sync(txn)?;
        }
        Ok(())
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

/// Expires leases every 100 ms while the store is alive.
async fn reap_leases(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(inner) = inner.upgrade() else { return };
        let store = EmbeddedStore { inner };
        let _ = tokio::task::spawn_blocking(move || store.reap_sync()).await;
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Unavailable("embedded store lock poisoned".into())
}

#[async_trait]
impl ConfigStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let key = key.to_owned();
        self.blocking(move |s| s.get_sync(&key)).await
    }

    async fn scan(&self, prefix: &str) -> Result<Listing> {
        let prefix = prefix.to_owned();
        self.blocking(move |s| s.scan_sync(&prefix)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.blocking(move |s| s.txn_sync(txn)).await
    }

    async fn revision(&self) -> Result<u64> {
        self.blocking(|s| s.revision_sync()).await
    }

    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<mpsc::Receiver<WatchEvent>> {
        let prefix = prefix.to_owned();
        self.blocking(move |s| s.watch_sync(&prefix, after_revision))
            .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let id = self.inner.next_lease.fetch_add(1, Ordering::Relaxed);
        self.inner.leases.lock().map_err(poisoned)?.insert(
            id,
            LeaseState {
                ttl,
                deadline: Instant::now() + ttl,
                keys: HashSet::new(),
            },
        );
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut leases = self.inner.leases.lock().map_err(poisoned)?;
        match leases.get_mut(&lease) {
            Some(s) if s.deadline > Instant::now() => {
                s.deadline = Instant::now() + s.ttl;
                Ok(())
            }
            _ => Err(StoreError::LeaseExpired(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        if let Some(s) = self.inner.leases.lock().map_err(poisoned)?.get_mut(&lease) {
            s.deadline = Instant::now();
        }
        self.blocking(|s| s.reap_sync()).await
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.inner.path.display())
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
        let all = s.scan("shards/").await.unwrap();
        assert_eq!(all.entries.len(), 2);
        assert_eq!(all.revision, 2);
        assert_eq!(all.entries[0].1.value, b"2");
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
            let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
            s.txn(Txn::default().put_leased("routers/me", b"1".to_vec(), lease))
                .await
                .unwrap();
            let err = EmbeddedStore::open(dir.path())
                .err()
                .expect("second open must fail");
            assert!(matches!(err, StoreError::InUse { .. }), "{err}");
            assert!(err.to_string().contains("in use"));
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(s.get("k").await.unwrap().unwrap().value, b"v");
        assert_eq!(
            s.get("routers/me").await.unwrap(),
            None,
            "leased keys die with the process"
        );
    }

    #[tokio::test]
    async fn watch_replays_then_follows() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.txn(Txn::default().put("chunks/a", b"1".to_vec()))
            .await
            .unwrap();
        s.txn(Txn::default().put("other/x", b"1".to_vec()))
            .await
            .unwrap();
        let mut w = s.watch("chunks/", 0).await.unwrap();
        let first = w.recv().await.unwrap();
        assert_eq!((first.revision, first.key.as_str()), (1, "chunks/a"));
        s.txn(
            Txn::default()
                .delete("chunks/a")
                .put("chunks/b", b"2".to_vec()),
        )
        .await
        .unwrap();
        let del = w.recv().await.unwrap();
        assert_eq!((del.revision, del.value.clone()), (3, None));
        let put = w.recv().await.unwrap();
        assert_eq!(
            (put.key.as_str(), put.value),
            ("chunks/b", Some(b"2".to_vec()))
        );
    }

    #[tokio::test]
    async fn leases_expire_and_take_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let lease = s.grant_lease(Duration::from_millis(300)).await.unwrap();
        s.txn(Txn::default().put_leased("locks/balancer", b"me".to_vec(), lease))
            .await
            .unwrap();
        s.keep_alive(lease).await.unwrap();
        assert!(s.get("locks/balancer").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(s.get("locks/balancer").await.unwrap(), None);
        assert!(matches!(
            s.keep_alive(lease).await,
            Err(StoreError::LeaseExpired(_))
        ));
        let put = Txn::default().put_leased("x", vec![], lease);
        assert!(matches!(s.txn(put).await, Err(StoreError::LeaseExpired(_))));
    }
}
