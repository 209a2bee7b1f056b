//! The running migration's progress — documents copied of the range's
//! estimate — published in the store, where `balancerStatus` on any router
//! reads it and `shardgate status` shows it. Publishing is best effort: a
//! store that does not answer slows neither the copy nor its outcome.

use std::time::{Duration, Instant};

use shardgate_config_store::model::{MigrationProgress, MigrationType, ShardType};
use shardgate_config_store::shard_key::ShardKeyPattern;

use super::MoveStats;
use crate::context::Balancer;
use crate::sizes::{estimate, snapshot};

/// At most one store write per this interval while copying.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The published progress and when it was last written.
pub(crate) struct Published {
    /// What the store holds.
    progress: MigrationProgress,
    /// When it was written.
    at: Instant,
}

/// Publishes the start of `m`: nothing copied, the range's estimated
/// document count.
pub(super) async fn begin(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
    source: &ShardType,
) {
    let progress = MigrationProgress {
        ns: m.ns.clone(),
        min: m.min.clone(),
        max: m.max.clone(),
        from_shard: source.id.clone(),
        to_shard: m.to_shard.clone(),
        docs_copied: 0,
        bytes_copied: 0,
        docs_estimate: range_docs(state, pattern, m).await.unwrap_or(0) as i64,
        started: bson::DateTime::now(),
        process: state.id().to_owned(),
    };
    publish(state, &progress).await;
    *slot(state) = Some(Published {
        progress,
        at: Instant::now(),
    });
}

/// Records what the copy reached; written to the store on the first batch
/// and then at most every [`PUBLISH_EVERY`].
pub(super) async fn copied(state: &Balancer, stats: &MoveStats) {
    let due = {
        let mut slot = slot(state);
        let Some(p) = slot.as_mut() else { return };
        let first = p.progress.docs_copied == 0;
        p.progress.docs_copied = stats.cloned as i64;
        p.progress.bytes_copied = stats.bytes as i64;
        let due = first || p.at.elapsed() >= PUBLISH_EVERY;
        if due {
            p.at = Instant::now();
        }
        due.then(|| p.progress.clone())
    };
    if let Some(progress) = due {
        publish(state, &progress).await;
    }
}

/// Publishes the copy's final count (before the catch-up begins).
pub(super) async fn cloned(state: &Balancer) {
    let last = slot(state).as_ref().map(|p| p.progress.clone());
    if let Some(progress) = last {
        publish(state, &progress).await;
    }
}

/// The migration ended (committed or aborted): no current migration.
pub(super) async fn end(state: &Balancer) {
    *slot(state) = None;
    if let Err(e) = state.catalog.put_migration_progress(None).await {
        tracing::debug!(error = %e, "could not clear the migration progress");
    }
}

fn slot(state: &Balancer) -> std::sync::MutexGuard<'_, Option<Published>> {
    state
        .migration_progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

async fn publish(state: &Balancer, progress: &MigrationProgress) {
    if let Err(e) = state.catalog.put_migration_progress(Some(progress)).await {
        tracing::debug!(error = %e, "could not publish the migration progress");
    }
}

/// The range's documents as the round's size estimate counts them (a
/// hashed range's share of its shard needs every chunk of the shard).
async fn range_docs(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
) -> crate::error::Result<u64> {
    let (chunks, bounds) = snapshot(state, pattern, &m.ns).await?;
    let Some(i) = bounds
        .iter()
        .position(|(min, max)| *min == m.min && *max == m.max)
    else {
        return Ok(0);
    };
    let (at, range) = if pattern.hashed_field().is_some() {
        (i, 0..chunks.len())
    } else {
        (0, i..i + 1)
    };
    let sizes = estimate(
        state,
        pattern,
        &m.ns,
        &chunks[range.clone()],
        &bounds[range],
    )
    .await?;
    Ok(sizes.get(at).map_or(0, |(_, docs)| *docs))
}
