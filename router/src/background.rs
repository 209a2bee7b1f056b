//! Background tasks of a router: following the config store (cache
//! coherence) and registering the router in `config.mongos`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use shardgate_config_store::model::{keys, DatabaseType, MongosType};
use shardgate_config_store::{StoreError, WatchEvent};
use tokio::sync::watch;

use crate::state::RouterState;

/// What a batch of store events changed.
#[derive(Default)]
struct Changes {
    /// Namespaces whose routing must be reloaded.
    namespaces: BTreeSet<String>,
    /// The shard list.
    shards: bool,
    /// `config.settings` (the default concerns among them) or a cluster
    /// parameter (`defaultMaxTimeMS`).
    settings: bool,
    /// `config.queryAnalyzers`.
    query_analyzers: bool,
    /// Databases whose `movePrimary` critical section began or ended.
    dbs: BTreeSet<String>,
}

/// Applies a batch of store events to the placement cache; returns what
/// else must be reloaded.
fn apply_events(state: &RouterState, batch: &[WatchEvent], revision: &mut u64) -> Changes {
    let mut changes = Changes::default();
    let dirty = &mut changes.namespaces;
    for ev in batch {
        *revision = (*revision).max(ev.revision);
        if ev.key.starts_with(keys::SHARDS) {
            changes.shards = true;
        } else if ev.key.starts_with(keys::SETTINGS) || ev.key.starts_with(keys::CLUSTER_PARAMETERS)
        {
            changes.settings = true;
        } else if ev.key.starts_with(keys::QUERY_ANALYZERS) {
            changes.query_analyzers = true;
        } else if let Some(db) = ev.key.strip_prefix(keys::DB_CRITICAL) {
            changes.dbs.insert(db.to_owned());
        } else if let Some(name) = ev.key.strip_prefix(keys::DATABASES) {
            match ev
                .value
                .as_deref()
                .map(bson::deserialize_from_slice::<DatabaseType>)
            {
                Some(Ok(db)) => state.placement.remember(db),
                Some(Err(_)) => {}
                None => state.placement.forget(name),
            }
        } else if let Some(ns) = ev.key.strip_prefix(keys::COLLECTIONS) {
            dirty.insert(ns.to_owned());
        } else if let Some(ns) = ev.key.strip_prefix("collversion/") {
            dirty.insert(ns.to_owned());
        } else if let Some(ns) = keys::namespace_of(&ev.key, keys::CHUNKS)
            .or_else(|| keys::namespace_of(&ev.key, keys::MIGRATIONS))
        {
            dirty.insert(ns);
        } else if let Some(rest) = ev.key.strip_prefix(keys::ORPHANS) {
            if let Some((ns, _)) = rest.split_once('/') {
                dirty.insert(ns.to_owned());
            }
        }
    }
    changes
}

/// Reloads what changed, and tells the balancer what this router now
/// excludes and holds (for a critical section, once the writes in flight
/// are done: in the background, as they may wait for this watch).
async fn refresh(state: &Arc<RouterState>, changes: Changes) {
    if changes.shards {
        let _ = state.placement.refresh_shards(&state.catalog).await;
    }
    if changes.settings {
        if let Err(e) = state.reload_rw_defaults().await {
            tracing::warn!(error = %e, "reading the default concerns failed");
        }
    }
    if changes.query_analyzers {
        if let Err(e) = state.query_analyzers.reload(state).await {
            tracing::warn!(error = %e, "reading the query analyzers failed");
        }
    }
    for db in changes.dbs {
        follow_db_critical(state, db).await;
    }
    for ns in changes.namespaces {
        if let Err(e) = state.routing.refresh(&state.catalog, &ns).await {
            tracing::warn!(%ns, error = %e, "routing refresh failed; keeping the cached table");
        }
        let st = state.clone();
        tokio::spawn(async move { crate::write::critical::acknowledge(&st, &ns).await });
    }
}

/// Follows every change in the store from `revision` on, refreshing the
/// placement and routing caches; on a broken watch it reloads everything
/// and watches again. Serving continues from the caches meanwhile.
pub(crate) async fn follow_store(
    state: Arc<RouterState>,
    mut revision: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let store = state.catalog.store().clone();
    loop {
        let mut events = match store.watch("", revision).await {
            Ok(rx) => rx,
            Err(e) => {
                if !matches!(e, StoreError::Compacted { .. }) {
                    tracing::warn!(error = %e, "config store watch failed; routing from cache");
                }
                if pause(&mut shutdown, Duration::from_millis(500)).await {
                    return;
                }
                revision = reload(&state).await.unwrap_or(revision);
                follow_all_db_criticals(&state).await;
                follow_all_db_criticals(&state).await;
                continue;
            }
        };
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                ev = events.recv() => ev,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while let Ok(ev) = events.try_recv() {
                batch.push(ev);
            }
            let changes = apply_events(&state, &batch, &mut revision);
            refresh(&state, changes).await;
        }
        tracing::debug!("config store watch ended; reloading");
        if pause(&mut shutdown, Duration::from_millis(200)).await {
            return;
        }
        revision = reload(&state).await.unwrap_or(revision);
        follow_all_db_criticals(&state).await;
    }
}

/// Reloads every cache; returns the revision to watch from.
async fn reload(state: &RouterState) -> Option<u64> {
    let revision = state.catalog.store().revision().await.ok()?;
    state.placement.reload(&state.catalog).await.ok()?;
    state.routing.load_all(&state.catalog).await.ok()?;
    state.reload_rw_defaults().await.ok()?;
    state.query_analyzers.reload(state).await.ok()?;
    Some(revision)
}

/// Follows every `movePrimary` critical section in force (at start-up and
/// after the watch was lost).
pub(crate) async fn follow_all_db_criticals(state: &Arc<RouterState>) {
    let Ok(dbs) = state.catalog.dbs_in_critical().await else {
        return;
    };
    for db in state.write_gates.held_dbs() {
        if !dbs.contains(&db) {
            state.write_gates.release_db(&db);
        }
    }
    for db in dbs {
        follow_db_critical(state, db).await;
    }
}

/// Holds or releases `db` as its `movePrimary` critical section says; a
/// hold is acknowledged once this router's requests in flight to the
/// database are done (in the background: they may wait for this watch).
async fn follow_db_critical(state: &Arc<RouterState>, db: String) {
    match state.catalog.db_critical(&db).await {
        Ok(Some(_)) => {
            let st = state.clone();
            tokio::spawn(async move {
                st.write_gates.hold_db(&db).await;
                if let Err(e) = st.catalog.put_db_ack(&db, &st.listen).await {
                    tracing::warn!(%db, error = %e, "could not acknowledge the movePrimary hold");
                }
            });
        }
        Ok(None) => state.write_gates.release_db(&db),
        Err(e) => tracing::warn!(%db, error = %e, "reading a movePrimary critical section failed"),
    }
}

/// Sleeps unless shutdown begins first; true when it did.
async fn pause(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.wait_for(|s| *s) => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Keeps this router's `config.mongos` entry alive under a lease, pinging
/// every few seconds; revokes it on shutdown.
pub(crate) async fn register(state: Arc<RouterState>, mut shutdown: watch::Receiver<bool>) {
    let store = state.catalog.store().clone();
    loop {
        let lease = match store.grant_lease(Duration::from_secs(15)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot register in config.mongos yet");
                if pause(&mut shutdown, Duration::from_secs(2)).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let entry = MongosType {
                id: state.listen.clone(),
                ping: bson::DateTime::now(),
                up: state.started.elapsed().as_secs() as i64,
                waiting: true,
                mongo_version: "8.0.0".into(),
                shardgate_version: env!("CARGO_PKG_VERSION").into(),
            };
            let alive = store.keep_alive(lease).await.is_ok()
                && state.catalog.register_router(&entry, lease).await.is_ok();
            if !alive {
                break;
            }
            if pause(&mut shutdown, Duration::from_secs(5)).await {
                let _ = store.revoke_lease(lease).await;
                return;
            }
        }
    }
}

/// Closes router cursors idle past the configured timeout.
pub(crate) async fn reap_cursors(state: Arc<RouterState>, mut shutdown: watch::Receiver<bool>) {
    let idle = Duration::from_secs(state.config.cursor_idle_timeout_secs.max(1));
    let every = (idle / 10).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        if pause(&mut shutdown, every).await {
            return;
        }
        state.cursors.kill_idle(idle).await;
    }
}
