//! Recovery and abort: what a dead lock holder left is finished (when
//! committed) or aborted; an abort deletes what reached the destination.

use bson::doc;
use shardgate_config_store::model::{MigrationState, MigrationType};
use shardgate_config_store::shard_key::ShardKeyPattern;

use std::sync::Arc;

use super::*;
use crate::context::Balancer;
use crate::error::Result;
use crate::lock::LockGuard;

/// Finishes or aborts every migration recorded by a dead lock holder.
pub(crate) async fn recover(state: &Arc<Balancer>, guard: &LockGuard) -> Result<()> {
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
