//! Range deletion: the source's copies after a commit (at once, or after
//! the grace period for open cursors), the destination's after an abort.

use std::time::Instant;

use bson::{doc, Bson, Document, RawDocumentBuf};
use shardgate_config_store::model::{MigrationType, Namespace, ShardType};
use shardgate_config_store::shard_key::ShardKeyPattern;

use super::*;
use crate::context::Balancer;
use crate::error::Result;

pub(crate) use crate::context::PendingDeletion;

/// Deletes the source ranges whose grace period ended.
pub(crate) async fn delete_due(state: &Balancer) {
    let due: Vec<PendingDeletion> = {
        let mut pending = state
            .pending_deletions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (due, later) = pending.drain(..).partition(|p| p.due <= Instant::now());
        *pending = later;
        due
    };
    for p in due {
        if let Err(e) = cleanup(state, &p.pattern, &p.migration).await {
            tracing::warn!(ns = %p.migration.ns, error = %e, "range deletion failed; the next lock holder retries it");
        }
    }
}

/// Deletes the source's copies and forgets the migration — only while
/// the store still records this very migration as committed. A later lock
/// holder's recovery finishes a committed migration at once, and the next
/// migration of the range reuses its record; a deletion still pending here
/// for it would then remove documents its source may own again.
pub(super) async fn cleanup(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
) -> Result<()> {
    let current = state.catalog.migrations(&m.ns).await?;
    let recorded = current.iter().any(|r| {
        r.min == m.min
            && r.state == MigrationState::Committed
            && r.from_shard == m.from_shard
            && r.to_shard == m.to_shard
            && r.fencing == m.fencing
    });
    if !recorded {
        tracing::info!(ns = %m.ns, shard = %m.from_shard, "range deletion already done by a later migration's recovery");
        return Ok(());
    }
    delete_range(state, &m.from_shard, pattern, m).await?;
    state
        .catalog
        .finish_migration(pattern, m, &m.from_shard)
        .await?;
    log(state, "moveChunk.rangeDeleted", m, doc! {}).await;
    Ok(())
}

/// Every document a `find` (on `db`, no `$db` in `cmd`) returns, through
/// all its batches.
pub(crate) async fn find_all(
    state: &Balancer,
    shard: &ShardType,
    db: &str,
    _coll: &str,
    mut cmd: Document,
) -> Result<Vec<RawDocumentBuf>> {
    cmd.insert("$db", db);
    Ok(state.open_cursor(shard, &cmd).await?.all().await?)
}

/// Deletes the range's documents on `shard`.
pub(super) async fn delete_range(
    state: &Balancer,
    shard: &str,
    pattern: &ShardKeyPattern,
    m: &MigrationType,
) -> Result<()> {
    let shard = state.shard(shard).await?;
    let Namespace { db, coll } = Namespace::parse(&m.ns);
    let range = Range::new(pattern, m)?;
    if pattern.hashed_field().is_none() {
        let delete =
            doc! {"delete": coll, "deletes": [{"q": range.filter.clone(), "limit": 0}], "$db": db};
        return migration_delete(state, &shard, delete).await;
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
        let delete = doc! {"delete": coll, "deletes": [{"q": {"_id": {"$in": chunk.to_vec()}}, "limit": 0}], "$db": db};
        migration_delete(state, &shard, delete).await?;
    }
    Ok(())
}

/// Runs a range deletion's `delete` as a migration write, so change
/// streams never show it (`shardgate_shard_client::migration_write`).
async fn migration_delete(state: &Balancer, shard: &ShardType, delete: Document) -> Result<()> {
    let body = RawDocumentBuf::try_from(&delete)
        .map_err(|e| crate::error::BalancerError::bad_value(e.to_string()))?;
    shardgate_shard_client::migration_write(
        state.shards.as_ref(),
        crate::context::target(shard),
        &body,
    )
    .await?;
    Ok(())
}
