//! `unshardCollection` (mongos ≥ 8.0): a sharded collection becomes an
//! unsharded one, every document gathered on the database's primary shard
//! (where this router keeps unsharded collections) while clients read and
//! write — the resharding copy with a single chunk on the primary, then,
//! under the whole-collection write hold, the collection's metadata goes
//! (held writes then go to the primary, as after a `drop`) and the other
//! shards' copies are dropped. Onto another shard than the primary (its
//! `toShard`, or without one the shard holding the least data, as mongos
//! picks), the unsharded collection then moves there (`moveCollection`).

use bson::{doc, Document};
use shardgate_config_store::shard_key::ShardKeyPattern;
use std::sync::Arc;

use super::{clear_pending, copy, lock, plan, remove_copies, start};
use crate::commands::admin::admin_only;
use crate::commands::sharding::{key_error, name_arg, split_ns};
use crate::error::{Result, RouterError};
use crate::session::Namespace;
use crate::shards::run_on_shard;
use crate::state::RouterState;
use shardgate_config_store::model::{CollectionType, OrphanRange};

/// `unshardCollection`: onto `toShard`, else (as mongos) the shard holding
/// the least data; when that is not the database's primary, the
/// collection then moves there as `moveCollection` moves it.
pub(crate) async fn unshard(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let (db, _) = split_ns(ns)?;
    // A tracked unsharded collection (`moveCollection`'s) is not sharded.
    let sharded = state.catalog.collection(ns).await?;
    if sharded.is_none_or(|c| c.unsplittable) {
        return Err(RouterError::command(
            118,
            "NamespaceNotSharded",
            format!("{ns} is not sharded"),
        ));
    }
    let database = state.catalog.database(db).await?.ok_or_else(|| {
        RouterError::command(26, "NamespaceNotFound", format!("database {db} not found"))
    })?;
    let to = match req.body.get_str("toShard") {
        Ok(to) => state.placement.shard(to)?.id,
        // As mongos: the shard holding the least data.
        Err(_) => crate::shards::least_loaded_shard(state).await?,
    };
    let held = lock::hold(state, ns, "unshardCollection").await?;
    let outcome = unshard_held(state, ns, &database.primary).await;
    let _ = state.catalog.clear_migration_acks(ns).await;
    held.release().await;
    let _ = state.routing.refresh(&state.catalog, ns).await;
    outcome?;
    // Another shard than the primary: the collection, now unsharded,
    // moves there as `moveCollection` moves it (and stays tracked).
    if to != database.primary {
        crate::ddl::move_collection::move_to(state, ns, &to).await?;
    }
    crate::query_analysis::follow_uuid(state, ns).await;
    Ok(Document::new())
}

use crate::session::Request;

async fn unshard_held(state: &RouterState, ns: &str, primary: &str) -> Result<()> {
    let mut coll = state.catalog.sharded_collection(ns).await?;
    if coll.resharding.is_some() {
        remove_copies(state, &coll).await?;
        coll = state.catalog.sharded_collection(ns).await?;
    }
    clear_pending(state, &coll).await?;
    let layout = plan::onto(state, &coll, primary).await?;
    let hiding = plan::orphans_of(ns, &layout.old_pattern, &layout.old_chunks, &layout.shards);
    let pattern = layout.new_pattern.clone();
    let copied = match start(state, &mut coll, &pattern, &hiding).await {
        Ok(()) => copy::run(state, &coll, &layout).await,
        Err(e) => Err(e),
    };
    let fresh = state.catalog.sharded_collection(ns).await?;
    let outcome = match copied {
        Ok(streams) if !fresh.resharding.as_ref().is_some_and(|r| r.abort) => {
            commit(state, &fresh, &layout, &hiding, streams).await
        }
        Ok(streams) => {
            copy::close(state, streams).await;
            Err(RouterError::command(
                341,
                "ReshardCollectionAborted",
                format!("the unsharding of {ns} was aborted"),
            ))
        }
        Err(e) => Err(e),
    };
    if outcome.is_err() {
        if let Some(now) = state.catalog.collection(ns).await? {
            if now.resharding.is_some() {
                remove_copies(state, &now).await?;
            }
        }
    }
    outcome
}

/// Writes held, the last events applied, the metadata removed, the other
/// shards' copies dropped.
async fn commit(
    state: &RouterState,
    coll: &CollectionType,
    layout: &plan::Layout,
    hiding: &[OrphanRange],
    streams: copy::Streams,
) -> Result<()> {
    if let Err(e) = super::enter_commit(state, &coll.ns).await {
        copy::close(state, streams).await;
        return Err(e);
    }
    state.routing.refresh(&state.catalog, &coll.ns).await?;
    crate::write::critical::acknowledge(state, &coll.ns).await;
    let drained = async {
        crate::ddl::drop::await_writes_held(state, &coll.ns, &coll.key).await?;
        copy::drain(state, coll, layout, streams).await
    };
    if let Err(e) = drained.await {
        state.catalog.update_collection(coll).await?;
        return Err(e);
    }
    let old = ShardKeyPattern::parse(&coll.key).map_err(key_error)?;
    state.catalog.drop_collection(&coll.ns).await?;
    for orphan in hiding {
        state.catalog.remove_orphan_range(&old, orphan).await?;
    }
    state.routing.refresh(&state.catalog, &coll.ns).await?;
    let Namespace { db, coll: name } = Namespace::parse(&coll.ns);
    let primary = &layout.new_chunks[0].2;
    for shard in layout.shards.iter().filter(|s| s.id != *primary) {
        match run_on_shard(state, shard, doc! {"drop": name, "$db": db}).await {
            Ok(_) => {}
            Err(e) if e.code().0 == 26 => {}
            Err(e) => {
                tracing::warn!(shard = %shard.id, error = %e, "could not drop the unsharded collection's copy")
            }
        }
    }
    let details = doc! {"toShard": primary, "oldKey": &coll.key};
    crate::commands::cluster::log_change(state, "unshardCollection", &coll.ns, details).await;
    Ok(())
}
