//! `reshardCollection`: a sharded collection moves to a new shard key, its
//! documents redistributed over new chunks while clients go on reading and
//! writing, in place (each shard keeps the collection under its name):
//!
//! 1. Under the collection's DDL lock, the new chunks are planned from a
//!    sample of the new key's values (contiguous runs of chunks per shard),
//!    the new key's index is built on every shard, and the collection is
//!    marked `reshardingFields: {state: "cloning"}` (the balancer leaves it
//!    alone). Each shard's documents that it does not own under the old
//!    key are recorded as orphan ranges (the complement of its chunks), so
//!    the copies about to arrive stay invisible to reads; every live
//!    router acknowledges excluding them.
//! 2. Clone: a change stream opens on every shard (leaving out migration
//!    writes), then each shard's owned documents whose new owner is another
//!    shard are copied there as migration writes.
//! 3. Catch-up: the documents the streams name are read again on their old
//!    owner and their copies made to match (`shard_client::resync`).
//! 4. Commit: the state becomes `committing`, every live router holds
//!    writes to the collection and says so, the last events are applied,
//!    and one store transaction swaps the key, the chunks and the orphan
//!    ranges (now each shard's documents it does not own under the new
//!    key). Routers refresh and release the writes. The balancer deletes
//!    the new orphan ranges after its grace period.
//!
//! Any failure before the commit (or `abortReshardCollection`) deletes the
//! copies and restores the collection as it was. A router that died
//! mid-way leaves the mark: the balancer undoes it once it finds the
//! collection's DDL lock free (so do `abortReshardCollection` and the next
//! `reshardCollection`).

mod copy;
mod plan;
pub(crate) mod unshard;

use std::sync::Arc;

use bson::{doc, Document};
use shardgate_config_store::catalog::ReshardCommit;
use shardgate_config_store::model::CollectionType;
use shardgate_config_store::model::{OrphanRange, ReshardingFields};
use shardgate_config_store::shard_key::ShardKeyPattern;
use shardgate_config_store::ShardType;

use crate::catalog_cache::routing::RESHARD_COMMITTING;
use crate::commands::admin::admin_only;
use crate::commands::sharding::{document_arg, key_error, name_arg};
use crate::error::{Result, RouterError};
use crate::session::{now_ts, Request};
use crate::state::RouterState;

use super::lock;
use plan::Layout;

/// `reshardingFields.state` while copying and catching up.
const CLONING: &str = "cloning";

/// `reshardCollection`.
pub(crate) async fn reshard(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let key = document_arg(req.body, "key")?;
    let pattern = ShardKeyPattern::parse(&key).map_err(key_error)?;
    check_options(req)?;
    let chunks = crate::session::number_field(req.body, "numInitialChunks").unwrap_or(0);
    let force = req.body.get_bool("forceRedistribution").unwrap_or(false);
    if let Some(coll) = state.catalog.collection(ns).await? {
        let running = coll.resharding.is_some() && !lock::is_free(state, ns).await;
        if running {
            return Err(RouterError::command(
                338,
                "ReshardCollectionInProgress",
                format!("a resharding of {ns} is already in progress"),
            ));
        }
    }
    let held = lock::hold(state, ns, "reshardCollection").await?;
    let zones: Vec<bson::Bson> = match req.body.get_array("zones") {
        Ok(z) => z
            .into_iter()
            .flatten()
            .filter_map(|v| bson::Bson::try_from(v).ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    let outcome = reshard_held(state, ns, &pattern, (chunks, force, &zones)).await;
    let _ = state.catalog.clear_migration_acks(ns).await;
    held.release().await;
    let _ = state.routing.refresh(&state.catalog, ns).await;
    outcome.map(|()| Document::new())
}

/// `commitReshardCollection`: the resharding in progress commits as soon
/// as its current catch-up pass ends.
pub(crate) async fn commit_now(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    flag(state, ns, |r| r.commit = true).await?;
    Ok(Document::new())
}

/// `abortReshardCollection`: stops a resharding in progress (it removes its
/// copies), or cleans up after one whose router died.
pub(crate) async fn abort(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    flag(state, ns, |r| r.abort = true).await?;
    // The running resharding sees the flag between passes and cleans up;
    // without one (its router died), the lock is free: clean up here.
    if let Ok(held) = lock::hold(state, ns, "abortReshardCollection").await {
        if let Some(coll) = state.catalog.collection(ns).await? {
            if coll.resharding.is_some() {
                remove_copies(state, &coll).await?;
            }
        }
        held.release().await;
    }
    state.routing.refresh(&state.catalog, ns).await?;
    Ok(Document::new())
}

fn no_resharding(ns: &str) -> RouterError {
    RouterError::command(
        339,
        "NoSuchReshardCollection",
        format!("Could not find an in-progress resharding operation for {ns}"),
    )
}

/// The options mongos checks: the new key cannot be unique, its collation
/// must be simple.
fn check_options(req: &Request<'_>) -> Result<()> {
    if req.body.get_bool("unique").unwrap_or(false) {
        return Err(RouterError::bad_value(
            "reshardCollection with unique: true is not supported",
        ));
    }
    if let Ok(c) = req.body.get_document("collation") {
        if c.get_str("locale").ok() != Some("simple") {
            return Err(RouterError::bad_value(
                "The collation for reshardCollection must be {locale: 'simple'}",
            ));
        }
    }
    Ok(())
}

async fn reshard_held(
    state: &RouterState,
    ns: &str,
    pattern: &ShardKeyPattern,
    (chunks, force, zones): (i64, bool, &[bson::Bson]),
) -> Result<()> {
    let Some(mut coll) = state.catalog.collection(ns).await? else {
        return Err(RouterError::command(
            118,
            "NamespaceNotSharded",
            format!("{ns} is not sharded"),
        ));
    };
    if coll.resharding.is_some() {
        // Left by a router that died (this one holds the lock now).
        remove_copies(state, &coll).await?;
        coll = state.catalog.sharded_collection(ns).await?;
    }
    if coll.key == pattern.to_document() && !force {
        return Ok(());
    }
    clear_pending(state, &coll).await?;
    let layout = plan::plan(state, &coll, pattern, (chunks, zones)).await?;
    plan::prepare_shards(state, &coll, &layout).await?;
    let hiding = plan::orphans_of(
        &coll.ns,
        &layout.old_pattern,
        &layout.old_chunks,
        &layout.shards,
    );
    let outcome = match start(state, &mut coll, pattern, &hiding).await {
        Ok(()) => copy::run(state, &coll, &layout).await,
        Err(e) => Err(e),
    };
    let fresh = state.catalog.sharded_collection(ns).await?;
    match outcome {
        Ok(streams) if !fresh.resharding.as_ref().is_some_and(|r| r.abort) => {
            let committed = commit(state, &fresh, &layout, &hiding, streams).await;
            if let Err(e) = committed {
                let now = state.catalog.sharded_collection(ns).await?;
                if now.resharding.is_some() {
                    remove_copies(state, &now).await?;
                }
                return Err(e);
            }
            Ok(())
        }
        Ok(streams) => {
            copy::close(state, streams).await;
            remove_copies(state, &fresh).await?;
            Err(RouterError::command(
                341,
                "ReshardCollectionAborted",
                format!("the resharding of {ns} was aborted"),
            ))
        }
        Err(e) => {
            remove_copies(state, &fresh).await?;
            Err(e)
        }
    }
}

/// Step 1's marks: the collection's `reshardingFields` and the orphan
/// ranges hiding the copies, acknowledged by every live router.
async fn start(
    state: &RouterState,
    coll: &mut CollectionType,
    pattern: &ShardKeyPattern,
    hiding: &[OrphanRange],
) -> Result<()> {
    coll.resharding = Some(ReshardingFields {
        key: pattern.to_document(),
        state: CLONING.to_owned(),
        abort: false,
        commit: false,
    });
    state.catalog.update_collection(coll).await?;
    let old = ShardKeyPattern::parse(&coll.key).map_err(key_error)?;
    let mut wanted = Vec::new();
    for o in hiding {
        state.catalog.add_orphan_range(&old, o).await?;
        let min = old.encode_bound(&o.min).map_err(key_error)?;
        wanted.push(format!("{}/{min}", o.shard));
    }
    state.routing.refresh(&state.catalog, &coll.ns).await?;
    crate::write::critical::acknowledge(state, &coll.ns).await;
    super::drop::await_acks(state, &coll.ns, "exclude the copies", |ack| {
        wanted.iter().all(|w| ack.orphans.contains(w))
    })
    .await
}

/// Step 4: writes held, the last events applied, the store swapped.
async fn commit(
    state: &RouterState,
    coll: &CollectionType,
    layout: &Layout,
    hiding: &[OrphanRange],
    streams: copy::Streams,
) -> Result<()> {
    let committing = match enter_commit(state, &coll.ns).await {
        Ok(c) => c,
        Err(e) => {
            copy::close(state, streams).await;
            return Err(e);
        }
    };
    state.routing.refresh(&state.catalog, &coll.ns).await?;
    crate::write::critical::acknowledge(state, &coll.ns).await;
    let held = std::time::Instant::now();
    let drained = async {
        super::drop::await_writes_held(state, &coll.ns, &coll.key).await?;
        copy::drain(state, coll, layout, streams).await
    };
    if let Err(e) = drained.await {
        // Writes go on under the old key while the copies are removed.
        state.catalog.update_collection(coll).await?;
        return Err(e);
    }
    let now = now_ts();
    let mut new = coll.clone();
    new.key = layout.new_pattern.to_document();
    new.epoch = bson::oid::ObjectId::new();
    new.timestamp = now;
    new.last_modified = bson::DateTime::now();
    new.resharding = None;
    let new_chunks = layout.chunk_types(&new, now);
    let new_orphans = plan::orphans_of(
        &coll.ns,
        &layout.new_pattern,
        &layout.new_chunks,
        &layout.shards,
    );
    let old_chunks = state.catalog.chunks(&coll.ns).await?;
    let old_zones = state.catalog.zone_ranges(&coll.ns).await?;
    state
        .catalog
        .commit_reshard(&ReshardCommit {
            old: &committing,
            new: &new,
            old_chunks: &old_chunks,
            new_chunks: &new_chunks,
            old_orphans: hiding,
            new_orphans: &new_orphans,
            old_zones: &old_zones,
            new_zones: &layout.new_zones,
        })
        .await?;
    state.routing.refresh(&state.catalog, &coll.ns).await?;
    let details = doc! {
        "oldKey": &coll.key, "newKey": &new.key,
        "numChunks": new_chunks.len() as i64,
        "criticalSectionMillis": held.elapsed().as_millis() as i64,
    };
    crate::commands::cluster::log_change(state, "resharding.commit", &coll.ns, details).await;
    let desc = doc! {
        "reshardUUID": bson::Bson::Binary(bson::Uuid::new().into()),
        "shardKey": &new.key, "oldShardKey": &coll.key, "unique": false,
        "numInitialChunks": new_chunks.len() as i64,
    };
    let uuid = bson::Bson::Binary(new.uuid.into());
    crate::change_streams::ddl_events::record(state, &coll.ns, "reshardCollection", desc, uuid)
        .await;
    crate::query_analysis::follow_uuid(state, &coll.ns).await;
    Ok(())
}

/// The state becomes `committing` (every router then holds writes), in
/// one compare-and-swap with `abortReshardCollection`'s flag: aborted, it
/// stays as it is (ReshardCollectionAborted).
async fn enter_commit(state: &RouterState, ns: &str) -> Result<CollectionType> {
    let entry = state
        .catalog
        .change_collection(ns, |c| match c.resharding.as_mut() {
            Some(r) if !r.abort => {
                r.state = RESHARD_COMMITTING.to_owned();
                true
            }
            _ => false,
        })
        .await?;
    match entry {
        Some(c)
            if c.resharding
                .as_ref()
                .is_some_and(|r| r.state == RESHARD_COMMITTING) =>
        {
            Ok(c)
        }
        _ => Err(RouterError::command(
            341,
            "ReshardCollectionAborted",
            format!("the resharding of {ns} was aborted"),
        )),
    }
}

/// Sets a flag of the resharding in progress (not once it commits), in
/// one compare-and-swap; NoSuchReshardCollection without one,
/// ReshardCollectionCommitted once committing.
async fn flag(state: &RouterState, ns: &str, set: fn(&mut ReshardingFields)) -> Result<()> {
    let entry = state
        .catalog
        .change_collection(ns, |c| match c.resharding.as_mut() {
            Some(r) if r.state != RESHARD_COMMITTING => {
                set(r);
                true
            }
            _ => false,
        })
        .await?;
    match entry.and_then(|c| c.resharding) {
        None => Err(no_resharding(ns)),
        Some(r) if r.state == RESHARD_COMMITTING => Err(RouterError::command(
            340,
            "ReshardCollectionCommitted",
            format!("the resharding of {ns} is committing"),
        )),
        Some(_) => Ok(()),
    }
}

/// Refuses while a migration of `coll` is pending; runs the range deletions
/// still waiting (an earlier migration's or resharding's leftovers) now, so
/// the copies about to be made are the only ones.
async fn clear_pending(state: &RouterState, coll: &CollectionType) -> Result<()> {
    let ns = coll.ns.as_str();
    if !state.catalog.migrations(ns).await?.is_empty() {
        return Err(RouterError::command(
            117,
            "ConflictingOperationInProgress",
            format!("{ns} has a migration pending; retry once it finishes"),
        ));
    }
    if !state.catalog.orphan_ranges(ns).await?.is_empty() {
        tracing::info!(%ns, "deleting the pending orphan ranges first");
        delete_orphans(state, coll).await?;
    }
    Ok(())
}

/// Deletes each shard's documents in the orphan ranges recorded under the
/// current key, then the ranges.
async fn delete_orphans(state: &RouterState, coll: &CollectionType) -> Result<()> {
    let pattern = ShardKeyPattern::parse(&coll.key).map_err(key_error)?;
    for orphan in state.catalog.orphan_ranges(&coll.ns).await? {
        let shard: ShardType = state.placement.shard(&orphan.shard)?;
        copy::delete_range(state, &shard, coll, &pattern, &orphan).await?;
        state.catalog.remove_orphan_range(&pattern, &orphan).await?;
    }
    Ok(())
}

/// Deletes a resharding's copies (the orphan ranges hiding them), then the
/// mark.
async fn remove_copies(state: &RouterState, coll: &CollectionType) -> Result<()> {
    delete_orphans(state, coll).await?;
    let mut restored = state.catalog.sharded_collection(&coll.ns).await?;
    restored.resharding = None;
    state.catalog.update_collection(&restored).await?;
    state.routing.refresh(&state.catalog, &coll.ns).await?;
    Ok(())
}
