//! Chunk migration: moving the range `[min, max)` of a sharded collection
//! from its owner S to another shard D without losing or duplicating a
//! document, as ARCHITECTURE.md describes:
//!
//! 1. Record the migration (`cloning`, fenced by the migration lock); the
//!    range becomes an orphan range on D, so reads never see D's copies.
//! 2. Open a change stream on S, then copy the range to D in shard-key order.
//! 3. Catch up: every document a change event names is read again on S and
//!    written (or deleted) on D, until a pass finds no new events.
//! 4. Critical section: the record says `critical`; every live router holds
//!    writes to the range, waits for its in-flight writes, and acknowledges
//!    under `migration_acks/`. Then the last events are drained.
//! 5. Commit, in one transaction fenced by the lock: D owns the chunk (major
//!    version bump), D's orphan range goes, S's copy becomes one, the record
//!    says `committed`. Routers release held writes to D.
//! 6. Delete the range on S (at once with `_waitForDelete`, else after
//!    `orphan_cleanup_delay_secs`), then drop the record and S's orphan range.
//!
//! A failure before the commit aborts: D's copies are deleted and the record
//! removed. A lock holder that died leaves its record; the next holder of
//! the lock [`recover`]s it: aborts one that had not committed, finishes
//! one that had.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document, RawDocumentBuf};
use shardgate_config_store::catalog::{new_chunk, ChunkChange, CollectionVersion};
use shardgate_config_store::model::{MigrationState, MigrationType, ShardType};
use shardgate_config_store::shard_key::{KeyBytes, ShardKeyPattern};
use shardgate_config_store::store::Txn;

use crate::commands::chunks::range_filter;
use crate::error::{Result, RouterError};
use crate::session::Namespace;
use crate::shards::open_cursor;
use crate::shards::run_on_shard;
use crate::state::RouterState;

/// The lock every migration (and balancer round) holds.
pub(crate) const LOCK: &str = "balancer";
/// Prefix of the routers' critical-section acknowledgements:
/// `migration_acks/<ns>/<router>`.
pub(crate) const ACKS: &str = "migration_acks/";
/// Documents per copy batch.
const BATCH: i32 = 1_000;
/// The lease of the migration lock: a holder that dies loses the lock this
/// long after its last keep-alive.
const LOCK_TTL: Duration = Duration::from_secs(5);
/// How long the critical section may wait for routers' acknowledgements.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// A held migration lock: its fencing token and the lease keeping it.
pub(crate) struct LockGuard {
    state: Arc<RouterState>,
    /// The fencing token.
    pub token: u64,
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    /// The compare every metadata change under this lock carries.
    pub(crate) fn fence(&self) -> Txn {
        self.state.catalog.lock_fence(LOCK, self.token)
    }

    /// Releases the lock.
    pub(crate) async fn release(self) {
        self.keeper.abort();
        let _ = self.state.catalog.unlock(LOCK, self.token).await;
        let _ = self.state.catalog.store().revoke_lease(self.lease).await;
    }
}

/// Takes the migration lock, waiting up to `wait` for another holder.
/// Recovers any migration a dead holder left behind before returning.
pub(crate) async fn lock(state: &Arc<RouterState>, why: &str, wait: Duration) -> Result<LockGuard> {
    let deadline = Instant::now() + wait;
    let store = state.catalog.store().clone();
    loop {
        let lease = store.grant_lease(LOCK_TTL).await?;
        if let Some(token) = state
            .catalog
            .try_lock(LOCK, &state.listen, why, lease)
            .await?
        {
            let keeper = {
                let store = store.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(LOCK_TTL / 4).await;
                        if store.keep_alive(lease).await.is_err() {
                            tracing::warn!("lost the migration lock's lease");
                            return;
                        }
                    }
                })
            };
            let guard = LockGuard {
                state: state.clone(),
                token,
                lease,
                keeper,
            };
            recover(state, &guard).await?;
            return Ok(guard);
        }
        let _ = store.revoke_lease(lease).await;
        if Instant::now() >= deadline {
            let holder = state
                .catalog
                .locks()
                .await?
                .into_iter()
                .find(|l| l.id == LOCK)
                .map(|l| format!("{} ({})", l.process, l.why))
                .unwrap_or_else(|| "another router".into());
            return Err(RouterError::command(
                46,
                "LockBusy",
                format!("the migration lock is held by {holder}; retry"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Finishes or aborts every migration recorded by a dead lock holder.
pub(crate) async fn recover(state: &Arc<RouterState>, guard: &LockGuard) -> Result<()> {
    for coll in state.catalog.collections().await? {
        let Ok(pattern) = ShardKeyPattern::parse(&coll.key) else {
            continue;
        };
        for m in state.catalog.migrations(&coll.ns).await? {
            tracing::info!(ns = %m.ns, state = ?m.state, "recovering a migration left by a dead balancer");
            match m.state {
                MigrationState::Committed => {
                    delete_range(state, &m.from_shard, &pattern, &m).await?;
                    state
                        .catalog
                        .finish_migration(&pattern, &m, &m.from_shard)
                        .await?;
                    log(state, "moveChunk.recovered", &m, doc! {"finished": true}).await;
                }
                _ => {
                    abort(state, &pattern, &m, "the balancer that ran it died").await?;
                }
            }
            let _ = guard;
        }
    }
    Ok(())
}

/// What a finished migration did.
#[derive(Debug, Default, Clone)]
pub(crate) struct MoveStats {
    /// Documents copied in the clone phase.
    pub cloned: u64,
    /// Bytes copied in the clone phase.
    pub bytes: u64,
    /// Documents re-synced from change events.
    pub caught_up: u64,
    /// How long writes to the range were held.
    pub critical: Duration,
    /// The source had no change stream: the copy ran in the critical section.
    pub copied_in_critical: bool,
    /// The whole migration.
    pub total: Duration,
}

/// Moves the chunk `[min, max)` of `ns` to `to`. The range must be one
/// chunk. Runs under `guard`.
pub(crate) async fn move_chunk(
    state: &Arc<RouterState>,
    guard: &LockGuard,
    ns: &str,
    min: &Document,
    max: &Document,
    to: &str,
    wait_for_delete: bool,
) -> Result<MoveStats> {
    let started = Instant::now();
    let routing = state.routing.get(ns).ok_or_else(|| {
        RouterError::command(118, "NamespaceNotSharded", format!("{ns} is not sharded"))
    })?;
    let pattern = routing.pattern.clone();
    let bad = |e: shardgate_config_store::shard_key::ShardKeyError| {
        RouterError::command(2, "BadValue", e.to_string())
    };
    let (lo, hi) = (
        pattern.encode_bound(min).map_err(bad)?,
        pattern.encode_bound(max).map_err(bad)?,
    );
    let chunk = routing
        .chunks
        .iter()
        .find(|c| c.min == lo && c.max == hi)
        .ok_or_else(|| {
            RouterError::command(
                2,
                "BadValue",
                format!("no chunk of {ns} has bounds [{min}, {max})"),
            )
        })?;
    let from = chunk.shard.clone();
    let dest = state.placement.shard(to)?;
    if dest.draining {
        return Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("cannot move a chunk to {to}: it is draining"),
        ));
    }
    if from == to {
        return Ok(MoveStats::default());
    }
    let source = state.placement.shard(&from)?;
    let migration = MigrationType {
        ns: ns.to_owned(),
        min: min.clone(),
        max: max.clone(),
        from_shard: from.clone(),
        to_shard: to.to_owned(),
        state: MigrationState::Cloning,
        fencing: guard.token,
    };
    if !state
        .catalog
        .start_migration(&pattern, &migration, guard.fence())
        .await?
    {
        return Err(RouterError::command(
            117,
            "ConflictingOperationInProgress",
            format!("another migration of {ns} is in progress, or the migration lock was lost"),
        ));
    }
    state.routing.refresh(&state.catalog, ns).await?;
    log(state, "moveChunk.start", &migration, doc! {}).await;
    let mut stats = MoveStats::default();
    let outcome = run(
        state, guard, &pattern, &migration, &source, &dest, &mut stats,
    )
    .await;
    if let Err(e) = outcome {
        tracing::warn!(%ns, error = %e, "migration failed; aborting");
        abort(state, &pattern, &migration, &e.to_string()).await?;
        return Err(e);
    }
    stats.total = started.elapsed();
    let details = doc! {
        "from": &from, "to": to,
        "cloned": stats.cloned as i64, "clonedBytes": stats.bytes as i64,
        "caughtUp": stats.caught_up as i64,
        "criticalSectionMillis": stats.critical.as_millis() as i64,
        "copiedInCriticalSection": stats.copied_in_critical,
        "totalMillis": stats.total.as_millis() as i64,
    };
    log(state, "moveChunk.commit", &migration, details).await;
    // Range deletion on the source: its copies are orphans now, excluded
    // from reads, so deleting them later only frees space.
    let mut committed = migration.clone();
    committed.state = MigrationState::Committed;
    if wait_for_delete || state.config.orphan_cleanup_delay_secs == 0 {
        cleanup(state, &pattern, &committed).await?;
    } else {
        let state = state.clone();
        let delay = Duration::from_secs(state.config.orphan_cleanup_delay_secs);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = cleanup(&state, &pattern, &committed).await {
                tracing::warn!(ns = %committed.ns, error = %e, "range deletion failed; the next lock holder retries it");
            }
        });
    }
    Ok(stats)
}

/// Deletes the source's copies and forgets the migration.
async fn cleanup(state: &RouterState, pattern: &ShardKeyPattern, m: &MigrationType) -> Result<()> {
    delete_range(state, &m.from_shard, pattern, m).await?;
    state
        .catalog
        .finish_migration(pattern, m, &m.from_shard)
        .await?;
    log(state, "moveChunk.rangeDeleted", m, doc! {}).await;
    Ok(())
}

/// Gives up a migration that had not committed: deletes what reached the
/// destination, then the record and the destination's orphan range.
async fn abort(
    state: &RouterState,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
    why: &str,
) -> Result<()> {
    if let Err(e) = delete_range(state, &m.to_shard, pattern, m).await {
        // The destination may be down: keep the record, so the next lock
        // holder deletes the copies; reads exclude them meanwhile.
        tracing::warn!(ns = %m.ns, error = %e, "could not delete the destination's copies yet");
        let mut aborted = m.clone();
        aborted.state = MigrationState::Aborted;
        state.catalog.put_migration(pattern, &aborted).await?;
        log(state, "moveChunk.error", m, doc! {"error": why}).await;
        return Ok(());
    }
    state
        .catalog
        .finish_migration(pattern, m, &m.to_shard)
        .await?;
    let _ = state.routing.refresh(&state.catalog, &m.ns).await;
    log(
        state,
        "moveChunk.error",
        m,
        doc! {"error": why, "aborted": true},
    )
    .await;
    Ok(())
}

async fn log(state: &RouterState, what: &str, m: &MigrationType, mut details: Document) {
    details.insert("min", m.min.clone());
    details.insert("max", m.max.clone());
    details.insert("from", m.from_shard.clone());
    details.insert("to", m.to_shard.clone());
    crate::commands::cluster::log_change(state, what, &m.ns, details).await;
}

#[allow(clippy::too_many_arguments)]
async fn run(
    state: &Arc<RouterState>,
    guard: &LockGuard,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
    source: &ShardType,
    dest: &ShardType,
    stats: &mut MoveStats,
) -> Result<()> {
    let Namespace { db, coll } = Namespace::parse(&m.ns);
    let range = Range::new(pattern, m)?;
    copy_indexes(state, source, dest, db, coll).await?;
    // Leftovers of an earlier attempt.
    delete_range(state, &dest.id, pattern, m).await?;
    let held;
    match ChangeStream::open(state, source, db, coll).await {
        Ok(mut stream) => {
            pause_point(state, "cloning").await;
            clone_range(state, source, dest, db, coll, &range, stats).await?;
            let mut catchup = m.clone();
            catchup.state = MigrationState::Catchup;
            put_fenced(state, guard, pattern, &catchup).await?;
            pause_point(state, "catchup").await;
            // Catch up until the lag is small (bounded: writers may never pause).
            for _ in 0..20 {
                let ids = stream.next_ids(state, &range, dest).await?;
                let small = ids.len() < 100;
                stats.caught_up += resync(state, source, dest, db, coll, &range, ids).await?;
                if small {
                    break;
                }
            }
            // Critical section: hold writes on every router, then drain.
            held = enter_critical(state, guard, pattern, m, &range).await?;
            // Writes to the range are held now: drain until nothing is left.
            for pass in 0.. {
                let ids = stream.next_ids(state, &range, dest).await?;
                if ids.is_empty() {
                    break;
                }
                if pass == 100 {
                    return Err(RouterError::command(
                        50,
                        "MaxTimeMSExpired",
                        "the range kept changing during the critical section",
                    ));
                }
                stats.caught_up += resync(state, source, dest, db, coll, &range, ids).await?;
            }
            stream.close(state).await;
        }
        Err(e) => {
            // No change stream on this shard: the critical section covers
            // the whole copy.
            tracing::info!(error = %e, "no change stream on the source; copying inside the critical section");
            held = enter_critical(state, guard, pattern, m, &range).await?;
            stats.copied_in_critical = true;
            clone_range(state, source, dest, db, coll, &range, stats).await?;
        }
    }
    // Commit: the chunk moves to the destination with a major version bump.
    let coll_entry = state.catalog.collection(&m.ns).await?.ok_or_else(|| {
        RouterError::command(118, "NamespaceNotSharded", format!("{} was dropped", m.ns))
    })?;
    let version = state.catalog.collection_version(&m.ns).await?;
    let (chunk, rev) = state
        .catalog
        .chunks(&m.ns)
        .await?
        .into_iter()
        .find(|(c, _)| c.min == m.min && c.max == m.max)
        .ok_or_else(|| {
            RouterError::command(
                117,
                "ConflictingOperationInProgress",
                "the chunk changed during the migration",
            )
        })?;
    let mut moved = new_chunk(
        &coll_entry,
        chunk.min.clone(),
        chunk.max.clone(),
        &m.to_shard,
        CollectionVersion {
            major: version.0.major + 1,
            minor: 0,
        },
        crate::commands::sharding::now_ts(),
    );
    moved.history = chunk.history.clone();
    let extra = state
        .catalog
        .migration_commit_ops(pattern, m, guard.fence())?;
    let change = ChunkChange {
        removed: vec![(chunk, rev)],
        added: vec![moved],
    };
    if !state
        .catalog
        .apply_chunk_change_with(&coll_entry, version, &change, extra)
        .await?
    {
        return Err(RouterError::command(
            117,
            "ConflictingOperationInProgress",
            "the commit lost a race (chunks changed or the migration lock was lost)",
        ));
    }
    stats.critical = held.elapsed();
    state.routing.refresh(&state.catalog, &m.ns).await?;
    clear_acks(state, &m.ns).await;
    pause_point(state, "committed").await;
    Ok(())
}

/// Records the critical section and waits until every live router holds
/// writes to the range; returns when it began.
async fn enter_critical(
    state: &RouterState,
    guard: &LockGuard,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
    range: &Range,
) -> Result<Instant> {
    let mut critical = m.clone();
    critical.state = MigrationState::Critical;
    put_fenced(state, guard, pattern, &critical).await?;
    let held = Instant::now();
    state.routing.refresh(&state.catalog, &m.ns).await?;
    wait_for_acks(state, &m.ns, &range.min_hex).await?;
    pause_point(state, "critical").await;
    Ok(held)
}

/// Test-only: waits here while the `shardgatePauseMigrationAt` fail point
/// names this state (a test kills the process meanwhile).
async fn pause_point(state: &RouterState, at: &str) {
    if !state.config.enable_test_commands {
        return;
    }
    let paused = || {
        state
            .migration_pause
            .lock()
            .map(|p| p.as_deref() == Some(at))
            .unwrap_or(false)
    };
    if paused() {
        tracing::info!(state = at, "test fault: migration paused");
    }
    while paused() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_fenced(
    state: &RouterState,
    guard: &LockGuard,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
) -> Result<()> {
    // The record write carries the fence: a holder that lost the lock stops.
    if state
        .catalog
        .put_migration_fenced(pattern, m, guard.fence())
        .await?
    {
        Ok(())
    } else {
        Err(RouterError::command(
            46,
            "LockBusy",
            "the migration lock was lost",
        ))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until every live router acknowledged the critical section of the
/// range starting at `min_hex` (or stopped being live).
async fn wait_for_acks(state: &RouterState, ns: &str, min_hex: &str) -> Result<()> {
    let deadline = Instant::now() + ACK_WAIT;
    loop {
        let routers: BTreeSet<String> = state
            .catalog
            .routers()
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut acked = BTreeSet::new();
        for (key, v) in state.catalog.store().list(&format!("{ACKS}{ns}/")).await? {
            let router = key.rsplit('/').next().unwrap_or("").to_owned();
            let ok = bson::Document::from_reader(&v.value[..])
                .ok()
                .and_then(|d| d.get_array("mins").ok().cloned())
                .is_some_and(|mins| mins.iter().any(|m| m.as_str() == Some(min_hex)));
            if ok {
                acked.insert(router);
            }
        }
        if routers.is_subset(&acked) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = routers.difference(&acked).cloned().collect();
            return Err(RouterError::command(
                50,
                "MaxTimeMSExpired",
                format!("routers {missing:?} did not acknowledge the critical section"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn clear_acks(state: &RouterState, ns: &str) {
    if let Ok(keys) = state.catalog.store().list(&format!("{ACKS}{ns}/")).await {
        let txn = keys
            .into_iter()
            .fold(Txn::default(), |t, (k, _)| t.delete(k));
        let _ = state.catalog.store().txn(txn).await;
    }
}

/// A router's acknowledgement: once every write to `ns` it had started
/// before seeing the critical section has finished, it records the ranges
/// it now holds.
pub(crate) async fn acknowledge(state: &RouterState, ns: &str) {
    let Some(routing) = state.routing.get(ns) else {
        return;
    };
    if routing.critical.is_empty() {
        return;
    }
    // Writes take the gate's read side; this waits for those in flight.
    state.write_gates.drain(ns).await;
    let mins: Vec<Bson> = routing
        .critical
        .iter()
        .map(|(min, _)| Bson::String(hex(&min.0)))
        .collect();
    let value = doc! {"mins": mins};
    let key = format!("{ACKS}{ns}/{}", state.listen);
    if let Ok(bytes) = value.to_vec() {
        let _ = state
            .catalog
            .store()
            .txn(Txn::default().put(key, bytes))
            .await;
    }
}

/// The migrating range, encoded, with the query that selects it on a shard.
struct Range {
    pattern: ShardKeyPattern,
    min: KeyBytes,
    max: KeyBytes,
    min_hex: String,
    /// The query for the range; `{}` for a hashed key (filtered here).
    filter: Document,
    sort: Document,
}

impl Range {
    fn new(pattern: &ShardKeyPattern, m: &MigrationType) -> Result<Range> {
        let enc = |d: &Document| {
            pattern
                .encode_bound(d)
                .map_err(|e| RouterError::bad_value(e.to_string()))
        };
        let (min, max) = (enc(&m.min)?, enc(&m.max)?);
        let fields: Vec<_> = pattern.fields().collect();
        let hashed = pattern.hashed_field().is_some();
        let filter = if hashed {
            Document::new()
        } else {
            range_filter(&fields, &m.min, &m.max)
        };
        let mut sort = Document::new();
        if !hashed {
            for (f, kind) in &fields {
                let dir = if *kind == shardgate_config_store::shard_key::KeyKind::Descending {
                    -1
                } else {
                    1
                };
                sort.insert(*f, dir);
            }
        }
        sort.insert("_id", 1);
        Ok(Range {
            pattern: pattern.clone(),
            min_hex: hex(&min.0),
            min,
            max,
            filter,
            sort,
        })
    }

    fn contains(&self, d: &bson::RawDocument) -> bool {
        self.pattern
            .extract_key(d)
            .is_ok_and(|k| self.min <= k && k < self.max)
    }
}

async fn copy_indexes(
    state: &RouterState,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    coll: &str,
) -> Result<()> {
    let reply = run_on_shard(state, source, doc! {"listIndexes": coll, "$db": db}).await?;
    let indexes: Vec<Bson> = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|b| {
            b.iter()
                .filter_map(Bson::as_document)
                .filter(|i| i.get_str("name").ok() != Some("_id_"))
                .map(|i| {
                    let mut i = i.clone();
                    i.remove("v");
                    i.remove("ns");
                    Bson::Document(i)
                })
                .collect()
        })
        .unwrap_or_default();
    if indexes.is_empty() {
        run_on_shard(state, dest, doc! {"create": coll, "$db": db})
            .await
            .or_else(|e| {
                if e.code().0 == 48 {
                    Ok(Document::new())
                } else {
                    Err(e)
                }
            })?;
        return Ok(());
    }
    run_on_shard(
        state,
        dest,
        doc! {"createIndexes": coll, "indexes": indexes, "$db": db},
    )
    .await?;
    Ok(())
}

/// Copies the range from the source to the destination in key order.
async fn clone_range(
    state: &RouterState,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    coll: &str,
    range: &Range,
    stats: &mut MoveStats,
) -> Result<()> {
    let find = doc! {"find": coll, "filter": range.filter.clone(), "sort": range.sort.clone(), "batchSize": BATCH, "$db": db};
    let mut cursor = open_cursor(state, source, &find)
        .await?
        .batch_size(i64::from(BATCH));
    while let Some(mut docs) = cursor.next_batch().await? {
        docs.retain(|d| range.contains(d));
        if !docs.is_empty() {
            stats.cloned += docs.len() as u64;
            stats.bytes += docs.iter().map(|d| d.as_bytes().len() as u64).sum::<u64>();
            insert(state, dest, db, coll, docs).await?;
            // Part of the range is on the destination, the rest not yet.
            pause_point(state, "cloningPartial").await;
        }
    }
    Ok(())
}

async fn insert(
    state: &RouterState,
    dest: &ShardType,
    db: &str,
    coll: &str,
    docs: Vec<RawDocumentBuf>,
) -> Result<()> {
    let mut array = bson::RawArrayBuf::new();
    for d in docs {
        array.push(d);
    }
    let mut body = RawDocumentBuf::new();
    body.append(bson::cstr!("insert"), coll);
    body.append(bson::cstr!("documents"), array);
    body.append(bson::cstr!("ordered"), false);
    body.append(bson::cstr!("$db"), db);
    let reply = crate::read::run_raw(state, dest, &body).await?;
    if let Ok(errors) = reply.get_array("writeErrors") {
        if let Some(Ok(e)) = errors.into_iter().next() {
            return Err(RouterError::command(
                1,
                "InternalError",
                format!("copying to {}: {:?}", dest.id, e),
            ));
        }
    }
    Ok(())
}

/// Makes the destination's copies of `ids` match the source: each is read
/// again on S; in the range it is written to D, else removed from D.
async fn resync(
    state: &RouterState,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    coll: &str,
    range: &Range,
    ids: Vec<Bson>,
) -> Result<u64> {
    let n = ids.len() as u64;
    for chunk in ids.chunks(500) {
        let found = find_all(
            state,
            source,
            db,
            coll,
            doc! {"find": coll, "filter": {"_id": {"$in": chunk.to_vec()}}},
        )
        .await?;
        let mut updates = Vec::new();
        let mut present = BTreeSet::new();
        for d in &found {
            if range.contains(d) {
                let id = d
                    .get("_id")
                    .ok()
                    .flatten()
                    .and_then(|v| Bson::try_from(v).ok());
                if let (Some(id), Ok(doc)) = (id, Document::try_from(d.as_ref())) {
                    present.insert(id.to_string());
                    updates.push(doc! {"q": {"_id": id}, "u": doc, "upsert": true});
                }
            }
        }
        let gone: Vec<Bson> = chunk
            .iter()
            .filter(|id| !present.contains(&id.to_string()))
            .cloned()
            .collect();
        if !updates.is_empty() {
            run_on_shard(
                state,
                dest,
                doc! {"update": coll, "updates": updates, "ordered": false, "$db": db},
            )
            .await?;
        }
        if !gone.is_empty() {
            run_on_shard(
                state,
                dest,
                doc! {"delete": coll, "deletes": [{"q": {"_id": {"$in": gone}}, "limit": 0}], "$db": db},
            )
            .await?;
        }
    }
    Ok(n)
}

/// Every document a `find` (on `db`, no `$db` in `cmd`) returns, through
/// all its batches.
pub(crate) async fn find_all(
    state: &RouterState,
    shard: &ShardType,
    db: &str,
    _coll: &str,
    mut cmd: Document,
) -> Result<Vec<RawDocumentBuf>> {
    cmd.insert("$db", db);
    Ok(open_cursor(state, shard, &cmd).await?.all().await?)
}

/// Deletes the range's documents on `shard`.
async fn delete_range(
    state: &RouterState,
    shard: &str,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
) -> Result<()> {
    let shard = state.placement.shard(shard)?;
    let Namespace { db, coll } = Namespace::parse(&m.ns);
    let range = Range::new(pattern, m)?;
    if pattern.hashed_field().is_none() {
        run_on_shard(
            state,
            &shard,
            doc! {"delete": coll, "deletes": [{"q": range.filter.clone(), "limit": 0}], "$db": db},
        )
        .await?;
        return Ok(());
    }
    // A hashed key: find the range's documents here, delete them by _id.
    let ids: Vec<Bson> = find_all(state, &shard, db, coll, doc! {"find": coll, "filter": {}})
        .await?
        .iter()
        .filter(|d| range.contains(d))
        .filter_map(|d| {
            d.get("_id")
                .ok()
                .flatten()
                .and_then(|v| Bson::try_from(v).ok())
        })
        .collect();
    for chunk in ids.chunks(1_000) {
        run_on_shard(
            state,
            &shard,
            doc! {"delete": coll, "deletes": [{"q": {"_id": {"$in": chunk.to_vec()}}, "limit": 0}], "$db": db},
        )
        .await?;
    }
    Ok(())
}

/// A change stream on the source collection, read for document ids.
struct ChangeStream {
    shard: ShardType,
    db: String,
    coll: String,
    id: i64,
    pending: Vec<Bson>,
}

impl ChangeStream {
    async fn open(state: &RouterState, shard: &ShardType, db: &str, coll: &str) -> Result<Self> {
        let reply = run_on_shard(
            state,
            shard,
            doc! {"aggregate": coll, "pipeline": [{"$changeStream": {"fullDocument": "updateLookup"}}], "cursor": {"batchSize": 0}, "$db": db},
        )
        .await
        .map_err(|e| {
            RouterError::command(
                e.code().0,
                "ChangeStreamUnavailable",
                format!("{} cannot open a change stream for the migration: {e}", shard.id),
            )
        })?;
        let cursor = reply
            .get_document("cursor")
            .map_err(|e| RouterError::bad_value(e.to_string()))?;
        Ok(ChangeStream {
            shard: shard.clone(),
            db: db.to_owned(),
            coll: coll.to_owned(),
            id: cursor.get_i64("id").unwrap_or(0),
            pending: cursor.get_array("firstBatch").cloned().unwrap_or_default(),
        })
    }

    /// The ids of documents in `range` that events since the last call
    /// name: inserts and updates whose document is in the range, and
    /// deletes of documents the destination holds.
    async fn next_ids(
        &mut self,
        state: &RouterState,
        range: &Range,
        dest: &ShardType,
    ) -> Result<Vec<Bson>> {
        let mut events = std::mem::take(&mut self.pending);
        loop {
            let reply = run_on_shard(
                state,
                &self.shard,
                doc! {"getMore": self.id, "collection": &self.coll, "batchSize": 10_000, "maxTimeMS": 20, "$db": &self.db},
            )
            .await?;
            let cursor = reply
                .get_document("cursor")
                .map_err(|e| RouterError::bad_value(e.to_string()))?;
            let batch = cursor.get_array("nextBatch").cloned().unwrap_or_default();
            let full = batch.len() >= 10_000;
            events.extend(batch);
            if !full {
                break;
            }
        }
        let mut ids = Vec::new();
        let mut maybe_gone = Vec::new();
        let mut seen = BTreeSet::new();
        for e in events.iter().filter_map(Bson::as_document) {
            let Some(id) = e
                .get_document("documentKey")
                .ok()
                .and_then(|k| k.get("_id"))
            else {
                continue;
            };
            if !seen.insert(id.to_string()) {
                continue;
            }
            match e.get_document("fullDocument") {
                Ok(d) => {
                    let in_range = bson::RawDocumentBuf::try_from(d)
                        .map(|raw| range.contains(&raw))
                        .unwrap_or(true);
                    if in_range {
                        ids.push(id.clone());
                    }
                }
                Err(_) => maybe_gone.push(id.clone()),
            }
        }
        // A deleted document matters only if the destination has a copy.
        for chunk in maybe_gone.chunks(1_000) {
            let reply = run_on_shard(
                state,
                dest,
                doc! {"find": &self.coll, "filter": {"_id": {"$in": chunk.to_vec()}}, "projection": {"_id": 1}, "batchSize": 10_000, "$db": &self.db},
            )
            .await?;
            if let Ok(found) = reply
                .get_document("cursor")
                .and_then(|c| c.get_array("firstBatch"))
            {
                ids.extend(
                    found
                        .iter()
                        .filter_map(Bson::as_document)
                        .filter_map(|d| d.get("_id").cloned()),
                );
            }
        }
        Ok(ids)
    }

    async fn close(self, state: &RouterState) {
        let _ = run_on_shard(
            state,
            &self.shard,
            doc! {"killCursors": &self.coll, "cursors": [self.id], "$db": &self.db},
        )
        .await;
    }
}
