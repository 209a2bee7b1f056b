//! `moveCollection` (mongos ≥ 8.0): an unsharded collection moves whole to
//! another shard while clients read and write.
//!
//! As on mongos, the collection becomes *tracked*: it gets a routing entry
//! marked `unsplittable`, with the key `{_id: 1}` and one chunk, which the
//! router routes by like any other (so its home need not be the database's
//! primary) and which the balancer, `split`, `mergeChunks` and `moveChunk`
//! leave alone. The chunk then moves by the migration protocol (clone,
//! change-stream catch-up, critical section, commit, range deletion), so
//! nothing written meanwhile is lost. The primary keeps the empty
//! collection with its options and indexes, so `listCollections` still
//! lists it. `shardCollection` of a tracked collection with the key
//! `{_id: 1}` makes it sharded where it lies; with another key, once it is
//! back on the primary.

use std::sync::Arc;

use bson::{doc, Bson, Document};
use shardgate_config_store::model::CollectionType;
use shardgate_config_store::shard_key::ShardKeyPattern;

use crate::commands::admin::admin_only;
use crate::commands::sharding::{name_arg, split_ns};
use crate::error::{Result, RouterError};
use crate::session::Request;
use crate::state::RouterState;

/// `moveCollection: <ns>, toShard: <shard>`.
pub(crate) async fn move_collection(
    state: &Arc<RouterState>,
    req: &Request<'_>,
) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    split_ns(ns)?;
    let to = req.body.get_str("toShard").map_err(|_| {
        RouterError::command(
            40414,
            "Location40414",
            "BSON field 'moveCollection.toShard' is missing but a required field",
        )
    })?;
    move_to(state, ns, to).await?;
    Ok(Document::new())
}

/// Moves the unsharded collection `ns` to the shard `to`, tracking it
/// first if it is not yet.
pub(crate) async fn move_to(state: &Arc<RouterState>, ns: &str, to: &str) -> Result<()> {
    let (db, coll) = split_ns(ns)?;
    state.placement.refresh_shards(&state.catalog).await?;
    state.placement.shard(to)?;
    match state.catalog.collection(ns).await? {
        Some(c) if !c.unsplittable => {
            return Err(RouterError::command(
                26,
                "NamespaceNotFound",
                "MoveCollection can only be called on an unsharded collection.",
            ))
        }
        Some(_) => {}
        None => track(state, ns, (db, coll)).await?,
    }
    state.routing.refresh(&state.catalog, ns).await?;
    let routing = state.routing.get(ns).ok_or_else(|| {
        RouterError::command(
            117,
            "ConflictingOperationInProgress",
            format!("{ns} was dropped while being moved"),
        )
    })?;
    if routing.single_shard().as_deref() != Some(to) {
        let bounds = (doc! {"_id": Bson::MinKey}, doc! {"_id": Bson::MaxKey});
        crate::commands::chunks::move_bounds(state, ns, bounds, to, true).await?;
    }
    Ok(())
}

/// Gives the unsharded collection `ns` its routing entry: one chunk on the
/// primary, key `{_id: 1}`, unsplittable and never balanced.
async fn track(state: &Arc<RouterState>, ns: &str, (db, coll): (&str, &str)) -> Result<()> {
    let database = state.catalog.database(db).await?.ok_or_else(|| {
        RouterError::command(26, "NamespaceNotFound", format!("database {db} not found"))
    })?;
    let primary = state.placement.shard(&database.primary)?;
    let list = doc! {"listCollections": 1, "filter": {"name": coll}, "$db": db};
    let listed = crate::shards::run_on_shard(state, &primary, list).await?;
    let found = listed
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| b.first())
        .and_then(Bson::as_document)
        .cloned();
    match found {
        None => {
            return Err(RouterError::command(
                26,
                "NamespaceNotFound",
                format!("Collection {ns} not found"),
            ))
        }
        Some(c) if c.get_str("type").ok() == Some("view") => {
            return Err(RouterError::command(
                166,
                "CommandNotSupportedOnView",
                format!("Namespace {ns} is a view, not a collection"),
            ))
        }
        Some(_) => {}
    }
    let cmd = doc! {
        "shardCollection": ns, "key": {"_id": 1}, "collation": {"locale": "simple"}, "$db": "admin",
    };
    let msg = shardgate_wire::OpMsg::from_body(
        cmd.to_vec()
            .map_err(|e| RouterError::bad_value(e.to_string()))?,
    );
    let inner = Request {
        name: "shardCollection",
        db: "admin",
        collection: None,
        body: msg.body(),
        msg: &msg,
    };
    crate::commands::shard_collection::shard_collection(state, &inner).await?;
    state
        .catalog
        .change_collection(ns, |c| {
            c.unsplittable = true;
            c.no_balance = true;
            true
        })
        .await?;
    Ok(())
}

/// `shardCollection` of a collection `moveCollection` tracks: with the key
/// `{_id: 1}` it becomes sharded where it lies (the balancer may then
/// split and move it); with another key, refused while it lies off the
/// primary, else its tracking goes (`None`: shard it as any unsharded
/// collection).
pub(crate) async fn shard_tracked(
    state: &Arc<RouterState>,
    existing: CollectionType,
    (pattern, unique): (&ShardKeyPattern, bool),
    primary: &str,
) -> Result<Option<Document>> {
    let ns = existing.ns.clone();
    if existing.key == pattern.to_document() && !unique {
        state
            .catalog
            .change_collection(&ns, |c| {
                c.unsplittable = false;
                c.no_balance = false;
                true
            })
            .await?;
        state.routing.refresh(&state.catalog, &ns).await?;
        return Ok(Some(
            doc! {"collectionsharded": &ns, "collectionUUID": existing.uuid},
        ));
    }
    let owner = state.routing.get(&ns).and_then(|r| r.single_shard());
    if owner.as_deref() == Some(primary) {
        state.catalog.drop_collection(&ns).await?;
        state.routing.refresh(&state.catalog, &ns).await?;
        return Ok(None);
    }
    Err(RouterError::command(
        20,
        "IllegalOperation",
        format!("{ns} was moved with moveCollection: shard it on {{_id: 1}} where it lies, or move it back to its database's primary and shard it there"),
    ))
}
