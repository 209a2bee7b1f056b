//! Range deletion: the source's copies after a commit, the destination's
//! after an abort.
//!
//! After a commit the migration record goes at once (the next migration of
//! the collection may start) and the source's copies stay recorded as an
//! orphan range, which routers exclude from reads. They are deleted at once
//! (`_waitForDelete`, or no grace period), else after
//! `orphan_cleanup_delay_secs`, so cursors opened on the source before the
//! commit can finish. A deletion runs under the migration lock, and only
//! while the store still records that orphan range and no migration of the
//! collection is under way: a chunk moved back to its old source deletes
//! the stale copies itself before copying, and its commit drops the range.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document, RawDocumentBuf};
use shardgate_config_store::model::{MigrationType, Namespace, OrphanRange, ShardType};
use shardgate_config_store::shard_key::ShardKeyPattern;

use super::*;
use crate::context::Balancer;
use crate::error::Result;

use crate::context::PendingDeletion;

/// After the commit of `m` (under the lock): the source's copies deleted
/// now, then the record and their orphan range go together; or, with a
/// grace period, the record goes now and the copies later.
pub(super) async fn after_commit(
    state: &Balancer,
    pattern: ShardKeyPattern,
    m: &MigrationType,
    wait_for_delete: bool,
) -> Result<()> {
    if wait_for_delete || state.config.orphan_cleanup_delay_secs == 0 {
        delete_range(state, &m.from_shard, &pattern, m).await?;
        state
            .catalog
            .finish_migration(&pattern, m, &m.from_shard)
            .await?;
        log(state, "moveChunk.rangeDeleted", m, doc! {}).await;
        return Ok(());
    }
    state.catalog.remove_migration(&pattern, m).await?;
    // Later, from the service loop (`delete_due`); if this process stops
    // first, the next lock holder's recovery schedules it again.
    schedule(state, pattern, source_copies(m));
    Ok(())
}

/// The orphan range a commit leaves on the source.
fn source_copies(m: &MigrationType) -> OrphanRange {
    OrphanRange {
        ns: m.ns.clone(),
        shard: m.from_shard.clone(),
        min: m.min.clone(),
        max: m.max.clone(),
    }
}

/// Deletes `orphan`'s copies once the grace period for open cursors has
/// passed, counted from now.
pub(super) fn schedule(state: &Balancer, pattern: ShardKeyPattern, orphan: OrphanRange) {
    let delay = Duration::from_secs(state.config.orphan_cleanup_delay_secs);
    pending(state).push(PendingDeletion {
        due: Instant::now() + delay,
        pattern,
        orphan,
    });
}

/// Whether this process already waits to delete `orphan`'s copies.
pub(super) fn is_scheduled(state: &Balancer, orphan: &OrphanRange) -> bool {
    pending(state).iter().any(|p| &p.orphan == orphan)
}

fn pending(state: &Balancer) -> std::sync::MutexGuard<'_, Vec<PendingDeletion>> {
    state
        .pending_deletions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Deletes the ranges whose grace period ended, under the migration lock
/// (tried again at the next poll while another holder has it).
pub(crate) async fn delete_due(state: &Arc<Balancer>) {
    let due: Vec<PendingDeletion> = {
        let mut pending = pending(state);
        let (due, later) = pending.drain(..).partition(|p| p.due <= Instant::now());
        *pending = later;
        due
    };
    if due.is_empty() {
        return;
    }
    let guard = match take_lock(state, "range deletion", Duration::ZERO).await {
        Ok(guard) => guard,
        Err(_) => return pending(state).extend(due),
    };
    for p in due {
        match delete_orphans(state, &p.pattern, &p.orphan).await {
            Ok(true) => {}
            Ok(false) => pending(state).push(p),
            Err(e) => {
                tracing::warn!(ns = %p.orphan.ns, error = %e, "range deletion failed; tried again later");
                pending(state).push(p);
            }
        }
    }
    guard.release().await;
}

/// Deletes `orphan`'s documents on its shard and forgets the range, while
/// the store records it and no migration of the collection is under way.
/// Run under the migration lock. `false`: not now (a migration is).
pub(super) async fn delete_orphans(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    orphan: &OrphanRange,
) -> Result<bool> {
    if !state.catalog.migrations(&orphan.ns).await?.is_empty() {
        return Ok(false);
    }
    let resharding = state.catalog.collection(&orphan.ns).await?;
    if resharding.is_some_and(|c| c.resharding.is_some()) {
        return Ok(false);
    }
    let recorded = state.catalog.orphan_ranges(&orphan.ns).await?;
    if !recorded.contains(orphan) {
        tracing::info!(ns = %orphan.ns, shard = %orphan.shard, "range already deleted, or owned again");
        return Ok(true);
    }
    delete_orphan(state, pattern, orphan).await?;
    let details = doc! {"min": &orphan.min, "max": &orphan.max, "shard": &orphan.shard};
    state
        .log_change("moveChunk.rangeDeleted", &orphan.ns, details)
        .await;
    Ok(true)
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

/// Deletes an orphan range's documents on its shard, then the record of
/// the range.
pub(super) async fn delete_orphan(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    orphan: &OrphanRange,
) -> Result<()> {
    let m = MigrationType {
        ns: orphan.ns.clone(),
        min: orphan.min.clone(),
        max: orphan.max.clone(),
        from_shard: orphan.shard.clone(),
        to_shard: String::new(),
        state: MigrationState::Committed,
        fencing: 0,
    };
    delete_range(state, &orphan.shard, pattern, &m).await?;
    state.catalog.remove_orphan_range(pattern, orphan).await?;
    Ok(())
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
