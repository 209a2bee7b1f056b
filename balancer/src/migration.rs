//! Chunk migration: moving the range `[min, max)` of a sharded collection
//! from its owner S to another shard D without losing or duplicating a
//! document, as ARCHITECTURE.md describes:
//!
//! 1. Record the migration (`cloning`, fenced by the migration lock); the
//!    range becomes an orphan range on D, so reads never see D's copies —
//!    once every live router acknowledged excluding it (`migration_acks/`).
//! 2. Open a change stream on S, then copy the range to D in shard-key order.
//! 3. Catch up: every document a change event names is read again on S and
//!    written (or deleted) on D, until a pass finds no new events.
//! 4. Critical section: the record says `critical`; every live router holds
//!    writes to the range, waits for its in-flight writes, and acknowledges
//!    under `migration_acks/`. Then the last events are drained.
//! 5. Commit, in one transaction fenced by the lock: D owns the chunk (major
//!    version bump), D's orphan range goes, S's copy becomes one, the record
//!    says `committed`. Routers release held writes to D.
//! 6. Drop the record; delete the range on S (at once with
//!    `_waitForDelete`, else after `orphan_cleanup_delay_secs`, under the
//!    lock), then S's orphan range.
//!
//! A failure before the commit aborts: D's copies are deleted and the record
//! removed. A lock holder that died leaves its record; the next holder of
//! the lock [`recover`]s it: aborts one that had not committed, finishes
//! one that had.

mod catchup;
mod clone;
mod critical;
mod progress;
mod range_deleter;
mod recovery;
mod timings;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use shardgate_config_store::catalog::{
    ddl_lock_name, new_chunk, ChunkChange, CollectionVersion, LeaseLock,
};
use shardgate_config_store::model::{MigrationState, MigrationType, ShardType};
use shardgate_config_store::shard_key::{KeyBytes, ShardKeyPattern};

use shardgate_config_store::model::{Namespace, PAUSE_MIGRATION};
use shardgate_config_store::shard_key::range_filter;

use crate::context::Balancer;
use crate::error::{BalancerError, Result};
use crate::lock::{lock, LockGuard};
use catchup::{apply, ChangeStream};
use clone::{clone_range, copy_indexes};
use critical::{clear_acks, enter_critical, wait_for_acks};
pub(crate) use progress::Published;
use range_deleter::delete_range;
pub(crate) use range_deleter::{delete_due, find_all};
use recovery::abort;
pub(crate) use recovery::recover;
use timings::lap;
pub(crate) use timings::Timings;

/// Documents per copy batch.
pub(super) const BATCH: i32 = 1_000;
/// How long the critical section may wait for routers' acknowledgements.
pub(super) const ACK_WAIT: Duration = Duration::from_secs(10);

/// Takes the lock (waiting up to `wait`) and finishes or aborts what a dead
/// holder left before anything else runs under it.
pub(crate) async fn take_lock(
    state: &Arc<Balancer>,
    why: &str,
    wait: Duration,
) -> Result<LockGuard> {
    let guard = lock(state, why, wait).await?;
    if let Err(e) = recover(state, &guard).await {
        guard.release().await;
        return Err(e);
    }
    Ok(guard)
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
    /// Catch-up passes over the source's change stream.
    pub passes: u64,
    /// How long writes to the range were held.
    pub critical: Duration,
    /// The source had no change stream: the copy ran in the critical section.
    pub copied_in_critical: bool,
    /// Where the time went.
    pub timings: Timings,
}

/// Moves the chunk `[min, max)` of `ns` to `to`. The range must be one
/// chunk. Runs under `guard`.
pub(crate) async fn move_chunk(
    state: &Arc<Balancer>,
    guard: &LockGuard,
    ns: &str,
    min: &Document,
    max: &Document,
    to: &str,
    wait_for_delete: bool,
) -> Result<MoveStats> {
    let started = Instant::now();
    let Some((pattern, migration, source, dest)) = plan(state, guard, ns, min, max, to).await?
    else {
        return Ok(MoveStats::default());
    };
    // No DDL on the collection (an index build, a rename) interleaves with
    // the migration: the copy would miss it.
    let ddl = ddl_lock(state, ns).await?;
    state.metrics.balancer.migration_started();
    let outcome = migrate(state, guard, &pattern, &migration, &source, &dest).await;
    state
        .metrics
        .balancer
        .migration_ended(
            outcome
                .as_ref()
                .ok()
                .map(|s| shardgate_metrics::MigrationFigures {
                    docs: s.cloned,
                    bytes: s.bytes,
                    caught_up: s.caught_up,
                    passes: s.passes,
                    critical: s.critical,
                }),
        );
    ddl.release().await;
    let stats = outcome?;
    let details = doc! {
        "from": &source.id, "to": to,
        "cloned": stats.cloned as i64, "clonedBytes": stats.bytes as i64,
        "caughtUp": stats.caught_up as i64,
        "criticalSectionMillis": stats.critical.as_millis() as i64,
        "copiedInCriticalSection": stats.copied_in_critical,
        "totalMillis": started.elapsed().as_millis() as i64,
        "phaseMillis": stats.timings.to_doc(),
    };
    tracing::info!(%ns, %to, cloned = stats.cloned, bytes = stats.bytes, caught_up = stats.caught_up,
        total_ms = started.elapsed().as_millis() as u64, phases = %stats.timings.to_doc(), "chunk migrated");
    log(state, "moveChunk.commit", &migration, details).await;
    range_deleter::after_commit(state, pattern, &migration, wait_for_delete).await?;
    Ok(stats)
}

/// The namespace's DDL lock, waited for up to a minute.
async fn ddl_lock(state: &Balancer, ns: &str) -> Result<LeaseLock> {
    let name = ddl_lock_name(ns);
    let ttl = Duration::from_secs(5);
    match LeaseLock::acquire(
        &state.catalog,
        &name,
        state.id(),
        "moveChunk",
        ttl,
        Duration::from_secs(60),
    )
    .await?
    {
        Some(held) => Ok(held),
        None => Err(BalancerError::command(
            46,
            "LockBusy",
            format!(
                "{ns} is locked by {}; the migration will be retried",
                LeaseLock::holder(&state.catalog, &name).await
            ),
        )),
    }
}

/// Steps 1 to 5 under the DDL lock: record, run, and abort on failure.
async fn migrate(
    state: &Arc<Balancer>,
    guard: &LockGuard,
    pattern: &ShardKeyPattern,
    migration: &MigrationType,
    source: &ShardType,
    dest: &ShardType,
) -> Result<MoveStats> {
    let ns = &migration.ns;
    if !state
        .catalog
        .start_migration(pattern, migration, guard.fence())
        .await?
    {
        return Err(BalancerError::command(
            117,
            "ConflictingOperationInProgress",
            format!("another migration of {ns} is in progress, or the migration lock was lost"),
        ));
    }
    log(state, "moveChunk.start", migration, doc! {}).await;
    progress::begin(state, pattern, migration, source).await;
    let mut stats = MoveStats::default();
    let step = Step {
        state,
        guard,
        pattern,
        m: migration,
        source,
        dest,
    };
    let outcome = run(&step, &mut stats).await;
    progress::end(state).await;
    if let Err(e) = outcome {
        tracing::warn!(%ns, error = %e, "migration failed; aborting");
        abort(state, pattern, migration, &e.to_string()).await?;
        return Err(e);
    }
    Ok(stats)
}

/// What a move needs, checked: the collection's key, the migration record
/// to start, and both shards; `None` when the chunk is already on `to`.
async fn plan(
    state: &Balancer,
    guard: &LockGuard,
    ns: &str,
    min: &Document,
    max: &Document,
    to: &str,
) -> Result<Option<(ShardKeyPattern, MigrationType, ShardType, ShardType)>> {
    let coll = state.catalog.collection(ns).await?.ok_or_else(|| {
        BalancerError::command(118, "NamespaceNotSharded", format!("{ns} is not sharded"))
    })?;
    if coll.permit_migrations == Some(false) {
        return Err(BalancerError::command(
            117,
            "ConflictingOperationInProgress",
            format!("migrations of {ns} are not allowed (setAllowMigrations)"),
        ));
    }
    let pattern = ShardKeyPattern::parse(&coll.key)
        .map_err(|e| BalancerError::command(2, "BadValue", e.to_string()))?;
    let chunk = state
        .catalog
        .chunks(ns)
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .find(|c| c.min == *min && c.max == *max)
        .ok_or_else(|| {
            BalancerError::command(
                2,
                "BadValue",
                format!("no chunk of {ns} has bounds [{min}, {max})"),
            )
        })?;
    let dest = state.shard(to).await?;
    if dest.draining {
        return Err(BalancerError::command(
            20,
            "IllegalOperation",
            format!("cannot move a chunk to {to}: it is draining"),
        ));
    }
    if chunk.shard == to {
        return Ok(None);
    }
    let source = state.shard(&chunk.shard).await?;
    let migration = MigrationType {
        ns: ns.to_owned(),
        min: min.clone(),
        max: max.clone(),
        from_shard: chunk.shard,
        to_shard: to.to_owned(),
        state: MigrationState::Cloning,
        fencing: guard.token,
    };
    Ok(Some((pattern, migration, source, dest)))
}

pub(super) async fn log(state: &Balancer, what: &str, m: &MigrationType, mut details: Document) {
    details.insert("min", m.min.clone());
    details.insert("max", m.max.clone());
    details.insert("from", m.from_shard.clone());
    details.insert("to", m.to_shard.clone());
    state.log_change(what, &m.ns, details).await;
}

/// One running migration, as each step sees it.
pub(super) struct Step<'a> {
    pub state: &'a Arc<Balancer>,
    pub guard: &'a LockGuard,
    pub pattern: &'a ShardKeyPattern,
    pub m: &'a MigrationType,
    pub source: &'a ShardType,
    pub dest: &'a ShardType,
}

/// Steps 1 to 5: an error from any of them aborts the migration.
async fn run(step: &Step<'_>, stats: &mut MoveStats) -> Result<()> {
    let Step {
        state, pattern, m, ..
    } = *step;
    let range = Range::new(pattern, m)?;
    let mut at = Instant::now();
    // Every live router excludes the destination's copies before the first
    // one arrives.
    let orphan = format!("{}/{}", m.to_shard, range.min_hex);
    wait_for_acks(state, &m.ns, "the destination's orphan range", |ack| {
        ack.orphans.contains(&orphan)
    })
    .await?;
    let Namespace { db, coll } = Namespace::parse(&m.ns);
    copy_indexes(state, step.source, step.dest, db, coll).await?;
    // Leftovers of an earlier attempt.
    delete_range(state, &step.dest.id, pattern, m).await?;
    let opened = ChangeStream::open(state, step.source, db, coll).await;
    stats.timings.prepare = lap(&mut at);
    let held = match opened {
        Ok(stream) => copy_and_catch_up(step, &range, stream, stats).await?,
        Err(e) => {
            // No change stream on this shard: the critical section covers
            // the whole copy.
            tracing::info!(error = %e, "no change stream on the source; copying inside the critical section");
            let held = enter_critical(state, step.guard, pattern, m, &range).await?;
            stats.copied_in_critical = true;
            clone_range(state, step.source, step.dest, db, coll, &range, stats).await?;
            held
        }
    };
    let mut at = Instant::now();
    commit(step).await?;
    stats.timings.commit = lap(&mut at);
    stats.critical = held.elapsed();
    clear_acks(state, &m.ns).await;
    pause_point(state, "committed").await;
    Ok(())
}

/// Steps 2 to 4 with a change stream on the source: the copy, catch-up
/// until the lag is small, then the critical section and the last drain.
/// Returns when the critical section began.
async fn copy_and_catch_up(
    step: &Step<'_>,
    range: &Range,
    mut stream: ChangeStream,
    stats: &mut MoveStats,
) -> Result<Instant> {
    let Step {
        state,
        guard,
        pattern,
        m,
        source,
        dest,
    } = *step;
    let Namespace { db, coll } = Namespace::parse(&m.ns);
    pause_point(state, "cloning").await;
    clone_range(state, source, dest, db, coll, range, stats).await?;
    progress::cloned(state).await;
    let mut at = Instant::now();
    let mut catchup = m.clone();
    catchup.state = MigrationState::Catchup;
    put_fenced(state, guard, pattern, &catchup).await?;
    pause_point(state, "catchup").await;
    // Catch up until the lag is small (bounded: writers may never pause).
    for _ in 0..20 {
        let changes = stream.next_changes(state, range, dest).await?;
        let small = changes.len() < 100;
        stats.passes += 1;
        stats.caught_up += apply(state, source, dest, db, coll, range, changes).await?;
        if small {
            break;
        }
    }
    stats.timings.catchup = lap(&mut at);
    let held = enter_critical(state, guard, pattern, m, range).await?;
    stats.timings.enter_critical = lap(&mut at);
    // Writes to the range are held now: drain until nothing is left.
    for pass in 0.. {
        let changes = stream.next_changes(state, range, dest).await?;
        stats.passes += 1;
        if changes.len() == 0 {
            break;
        }
        if pass == 100 {
            return Err(BalancerError::command(
                50,
                "MaxTimeMSExpired",
                "the range kept changing during the critical section",
            ));
        }
        stats.caught_up += apply(state, source, dest, db, coll, range, changes).await?;
    }
    stats.timings.drain = lap(&mut at);
    stream.close(state).await;
    Ok(held)
}

/// Step 5: the chunk moves to the destination with a major version bump,
/// in one store transaction fenced by the lock.
async fn commit(step: &Step<'_>) -> Result<()> {
    let Step {
        state,
        guard,
        pattern,
        m,
        ..
    } = *step;
    let coll_entry = state.catalog.collection(&m.ns).await?.ok_or_else(|| {
        BalancerError::command(118, "NamespaceNotSharded", format!("{} was dropped", m.ns))
    })?;
    let version = state.catalog.collection_version(&m.ns).await?;
    let (chunk, rev) = state
        .catalog
        .chunks(&m.ns)
        .await?
        .into_iter()
        .find(|(c, _)| c.min == m.min && c.max == m.max)
        .ok_or_else(|| {
            BalancerError::command(
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
        crate::context::now_ts(),
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
        return Err(BalancerError::command(
            117,
            "ConflictingOperationInProgress",
            "the commit lost a race (chunks changed or the migration lock was lost)",
        ));
    }
    Ok(())
}

/// Test-only: waits here while the `shardgatePauseMigrationAt` fail point
/// that the router beside this service was given names this state (a test
/// kills the process meanwhile).
pub(super) async fn pause_point(state: &Balancer, at: &str) {
    if !state.config.enable_test_commands {
        return;
    }
    let paused = || async {
        state
            .catalog
            .fail_point(PAUSE_MIGRATION, state.id())
            .await
            .ok()
            .flatten()
            .is_some_and(|d| d.get_str("state").ok() == Some(at))
    };
    if paused().await {
        tracing::info!(state = at, "test fault: migration paused");
    }
    while paused().await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn put_fenced(
    state: &Balancer,
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
        Err(BalancerError::command(
            46,
            "LockBusy",
            "the migration lock was lost",
        ))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The migrating range, encoded, with the query that selects it on a shard.
pub(super) struct Range {
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
                .map_err(|e| BalancerError::bad_value(e.to_string()))
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
            min_hex: hex(min.as_slice()),
            min,
            max,
            filter,
            sort,
        })
    }

    /// The shard key's fields: what places a document in the range.
    fn pins(&self) -> Vec<&str> {
        self.pattern.fields().map(|(f, _)| f).collect()
    }

    fn contains(&self, d: &bson::RawDocument) -> bool {
        self.pattern
            .extract_key(d)
            .is_ok_and(|k| self.min <= k && k < self.max)
    }
}

#[cfg(test)]
mod tests;
