//! `refineCollectionShardKey`: a sharded collection's key gains suffix
//! fields (`{a: 1}` → `{a: 1, b: 1}`) without moving data, as mongos does
//! it: an index supporting the new key must exist on every shard owning a
//! chunk; then, under the namespace's DDL lock, every chunk and zone bound
//! is extended and the collection gets a new epoch.

use std::sync::Arc;

use bson::{doc, Document};
use shardgate_config_store::shard_key::ShardKeyPattern;

use super::admin::admin_only;
use super::shard_collection::has_supporting_index;
use super::sharding::{document_arg, key_error, name_arg, now_ts, split_ns};
use super::Request;
use crate::error::{Result, RouterError};
use crate::state::RouterState;

/// `refineCollectionShardKey: ns, key: {...}`.
pub(crate) async fn refine(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let (db, coll) = split_ns(ns)?;
    let key = document_arg(req.body, "key")?;
    let pattern = ShardKeyPattern::parse(&key).map_err(key_error)?;
    let routing = state.routing.get(ns).ok_or_else(|| {
        RouterError::command(118, "NamespaceNotSharded", format!("{ns} is not sharded"))
    })?;
    for id in routing.chunks.shards() {
        let shard = state.placement.shard(id)?;
        let unique = routing.collection.unique;
        if !has_supporting_index(state, &shard, db, coll, &pattern, unique).await? {
            return Err(RouterError::command(
                72,
                "InvalidOptions",
                format!("refineCollectionShardKey: shard {id} has no index that starts with the proposed shard key {key}; create one first"),
            ));
        }
    }
    let held = crate::ddl::lock::hold(state, ns, "refineCollectionShardKey").await?;
    let outcome = refine_held(state, ns, &key).await;
    held.release().await;
    outcome?;
    super::cluster::log_change(
        state,
        "refineCollectionShardKey.end",
        ns,
        doc! {"key": &key},
    )
    .await;
    Ok(Document::new())
}

async fn refine_held(state: &RouterState, ns: &str, key: &Document) -> Result<()> {
    // Orphan ranges and migration records are keyed by the old key's
    // encoding: wait for them to finish (as mongos waits for range
    // deletions).
    if !state.catalog.orphan_ranges(ns).await?.is_empty()
        || !state.catalog.migrations(ns).await?.is_empty()
    {
        return Err(RouterError::command(
            117,
            "ConflictingOperationInProgress",
            format!("{ns} has a migration or orphaned documents waiting for deletion; retry when they are gone"),
        ));
    }
    let old = state.catalog.sharded_collection(ns).await?;
    let refined = state.catalog.refine_shard_key(ns, key, now_ts()).await?;
    state.routing.refresh(&state.catalog, ns).await?;
    let desc = bson::doc! {"shardKey": &refined.key, "oldShardKey": &old.key};
    let uuid = bson::Bson::Binary(refined.uuid.into());
    crate::change_streams::ddl_events::record(state, ns, "refineCollectionShardKey", desc, uuid)
        .await;
    Ok(())
}
