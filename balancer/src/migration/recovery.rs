//! Recovery and abort: what a dead lock holder left is finished (when
//! committed) or aborted; an abort deletes what reached the destination.
//! Orphan ranges no migration accounts for are source copies whose
//! deletion a process that stopped was waiting for: they are deleted after
//! a grace period counted from now (at once without one), unless this
//! process already waits for them.

use bson::doc;
use shardgate_config_store::model::{MigrationState, MigrationType, OrphanRange};
use shardgate_config_store::shard_key::ShardKeyPattern;

use std::sync::Arc;

use super::range_deleter::{after_commit, delete_orphan, delete_orphans, is_scheduled, schedule};
use super::*;
use crate::context::Balancer;
use crate::error::Result;
use crate::lock::LockGuard;

/// Finishes or aborts every migration recorded by a dead lock holder, and
/// takes over the source copies left to delete.
pub(crate) async fn recover(state: &Arc<Balancer>, guard: &LockGuard) -> Result<()> {
    let _ = guard;
    for coll in state.catalog.collections().await? {
        let Ok(pattern) = ShardKeyPattern::parse(&coll.key) else {
            continue;
        };
        // A resharding's orphan ranges hide its copies until it commits; one
        // whose router died (its DDL lock is free) is undone here.
        if coll.resharding.is_some() {
            undo_dead_resharding(state, &coll, &pattern).await?;
            continue;
        }
        for m in state.catalog.migrations(&coll.ns).await? {
            match m.state {
                MigrationState::Committed => {
                    tracing::info!(ns = %m.ns, "finishing a migration committed by a dead balancer");
                    after_commit(state, pattern.clone(), &m, false).await?;
                    log(state, "moveChunk.recovered", &m, doc! {"finished": true}).await;
                }
                _ => {
                    tracing::info!(ns = %m.ns, state = ?m.state, "aborting a migration left by a dead balancer");
                    abort(state, &pattern, &m, "the balancer that ran it died").await?;
                }
            }
        }
        if !state.catalog.migrations(&coll.ns).await?.is_empty() {
            continue; // an abort whose destination is down: kept for later
        }
        for orphan in state.catalog.orphan_ranges(&coll.ns).await? {
            if !is_scheduled(state, &orphan) {
                take_over(state, &pattern, orphan).await?;
            }
        }
    }
    Ok(())
}

/// Undoes a resharding whose router died: under the collection's DDL lock
/// (not taken: it still runs), each shard's copies in the orphan ranges
/// hiding them are deleted, then the ranges and the mark (which also
/// releases writes a commit that never happened was holding).
async fn undo_dead_resharding(
    state: &Balancer,
    coll: &shardgate_config_store::model::CollectionType,
    pattern: &ShardKeyPattern,
) -> Result<()> {
    let name = shardgate_config_store::catalog::ddl_lock_name(&coll.ns);
    let ttl = std::time::Duration::from_secs(5);
    let wait = std::time::Duration::ZERO;
    let why = "resharding recovery";
    let acquired = shardgate_config_store::catalog::LeaseLock::acquire(
        &state.catalog,
        &name,
        state.id(),
        why,
        ttl,
        wait,
    )
    .await?;
    let Some(held) = acquired else {
        return Ok(());
    };
    tracing::info!(ns = %coll.ns, "undoing a resharding whose router died");
    let undone = async {
        for orphan in state.catalog.orphan_ranges(&coll.ns).await? {
            delete_orphan(state, pattern, &orphan).await?;
        }
        let mut restored = state.catalog.sharded_collection(&coll.ns).await?;
        restored.resharding = None;
        state.catalog.update_collection(&restored).await?;
        Ok::<_, crate::error::BalancerError>(())
    };
    let outcome = undone.await;
    held.release().await;
    outcome
}

/// Deletes a left orphan range now when there is no grace period, else
/// schedules it.
async fn take_over(state: &Balancer, pattern: &ShardKeyPattern, orphan: OrphanRange) -> Result<()> {
    if state.config.orphan_cleanup_delay_secs == 0 {
        delete_orphans(state, pattern, &orphan).await?;
    } else {
        schedule(state, pattern.clone(), orphan);
    }
    Ok(())
}

/// Gives up a migration that had not committed: deletes what reached the
/// destination, then the record and the destination's orphan range.
pub(super) async fn abort(
    state: &Balancer,
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
    log(
        state,
        "moveChunk.error",
        m,
        doc! {"error": why, "aborted": true},
    )
    .await;
    Ok(())
}
