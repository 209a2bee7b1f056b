//! Cluster commands: `removeShard`, the balancer state commands,
//! `flushRouterConfig`, `getShardVersion`, and the changelog.

use std::sync::Arc;

use bson::{doc, Bson, Document};
use shardgate_config_store::model::ChangelogEntry;

use super::admin::admin_only;
use super::sharding::name_arg;
use super::Request;
use crate::error::{Result, RouterError};
use crate::state::RouterState;

/// Appends to `config.changelog`; a failure is logged, never fatal.
pub(crate) async fn log_change(state: &RouterState, what: &str, ns: &str, details: Document) {
    let entry = ChangelogEntry {
        id: format!("{}-{}", state.listen, bson::oid::ObjectId::new().to_hex()),
        server: state.listen.clone(),
        client_addr: String::new(),
        time: bson::DateTime::now(),
        what: what.to_owned(),
        ns: ns.to_owned(),
        details,
    };
    if let Err(e) = state.catalog.log_change(&entry).await {
        tracing::warn!(error = %e, what, ns, "could not write the changelog");
    }
}

/// `removeShard`: starts draining, reports progress, and removes the shard
/// once it owns no chunk and is primary for no database.
pub(crate) async fn remove_shard(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let name = name_arg(req, "a shard name")?;
    state.placement.refresh_shards(&state.catalog).await?;
    let shards = state.placement.shards();
    let shard = shards
        .iter()
        .find(|s| s.id == name)
        .cloned()
        .ok_or_else(|| {
            RouterError::command(70, "ShardNotFound", format!("shard {name} not found"))
        })?;
    if shards.len() == 1 {
        return Err(RouterError::command(
            20,
            "IllegalOperation",
            "Operation not allowed because it would remove the last shard",
        ));
    }
    let chunks = state.routing.chunks_on(&shard.id);
    let dbs: Vec<String> = state
        .placement
        .databases()
        .into_iter()
        .filter(|d| d.primary == shard.id)
        .map(|d| d.name)
        .collect();
    if !shard.draining {
        state.catalog.set_draining(&shard.id, true).await?;
        state.placement.refresh_shards(&state.catalog).await?;
        if chunks > 0 || !dbs.is_empty() {
            return Ok(doc! {
                "msg": "draining started successfully",
                "state": "started",
                "shard": &shard.id,
                "note": "you need to call movePrimary for the databases in dbsToMove; the balancer moves the chunks",
                "dbsToMove": dbs,
                "collectionsToMove": [],
            });
        }
    }
    // Migrations still deleting a moved range there (or copying to it).
    let mut pending = 0i64;
    for coll in state.catalog.collections().await? {
        pending += state
            .catalog
            .migrations(&coll.ns)
            .await?
            .iter()
            .filter(|m| m.from_shard == shard.id || m.to_shard == shard.id)
            .count() as i64;
    }
    if chunks == 0 && dbs.is_empty() && pending == 0 {
        state.catalog.remove_shard(&shard.id).await?;
        state.placement.refresh_shards(&state.catalog).await?;
        log_change(state, "removeShard", "", doc! {"shard": &shard.id}).await;
        return Ok(
            doc! {"msg": "removeshard completed successfully", "state": "completed", "shard": &shard.id},
        );
    }
    Ok(doc! {
        "msg": "draining ongoing",
        "state": "ongoing",
        "remaining": {"chunks": chunks as i64, "dbs": dbs.len() as i64, "jumboChunks": 0i64, "migrations": pending},
        "note": "you need to call movePrimary for the databases in dbsToMove; the balancer moves the chunks",
        "dbsToMove": dbs,
        "collectionsToMove": [],
    })
}

/// `balancerStart` / `balancerStop`: the balancer mode in `config.settings`.
pub(crate) async fn set_balancer(
    state: &RouterState,
    req: &Request<'_>,
    start: bool,
) -> Result<Document> {
    admin_only(req)?;
    let mut setting = state
        .catalog
        .setting("balancer")
        .await?
        .unwrap_or_else(|| doc! {"_id": "balancer"});
    setting.insert("mode", if start { "full" } else { "off" });
    setting.insert("stopped", !start);
    state.catalog.put_setting("balancer", &setting).await?;
    Ok(Document::new())
}

/// `balancerStatus`: the configured mode, and this router's rounds (each
/// router runs rounds only while it holds the migration lock).
pub(crate) async fn balancer_status(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let stopped = state.catalog.balancer_stopped().await?;
    // The balancer service publishes its counters in the store.
    let b = state.catalog.balancer_status().await?.unwrap_or_default();
    let number = |f: &str| match b.get(f) {
        Some(bson::Bson::Int64(n)) => *n,
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        _ => 0,
    };
    let mut reply = doc! {
        "mode": if stopped { "off" } else { "full" },
        "inBalancerRound": b.get_bool("inBalancerRound").unwrap_or(false),
        "numBalancerRounds": number("numBalancerRounds"),
        "numMigrations": number("migrations"),
        "balancerEnabledOnThisRouter": state.config.balancer,
    };
    // shardgate's own: the running migration and how far its copy got.
    if let Some((p, migration_state)) = state.catalog.migration_progress().await? {
        reply.insert(
            "currentMigration",
            doc! {
                "ns": p.ns, "min": p.min, "max": p.max,
                "fromShard": p.from_shard, "toShard": p.to_shard,
                "state": migration_state.name(),
                "docsCopied": p.docs_copied, "docsEstimate": p.docs_estimate,
                "bytesCopied": p.bytes_copied, "started": p.started,
                "process": p.process,
            },
        );
    }
    Ok(reply)
}

/// `flushRouterConfig`: reloads every cached routing table and placement.
pub(crate) async fn flush_router_config(state: &RouterState) -> Result<Document> {
    state.placement.reload(&state.catalog).await?;
    state.routing.load_all(&state.catalog).await?;
    Ok(doc! {"flushed": true})
}

/// `getShardVersion`: the collection version this router holds.
pub(crate) async fn get_shard_version(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let routing = state.routing.get(ns).ok_or_else(|| {
        RouterError::command(
            118,
            "NamespaceNotSharded",
            format!("Collection {ns} is not sharded."),
        )
    })?;
    let v = routing.version();
    Ok(doc! {
        "version": Bson::Timestamp(bson::Timestamp { time: v.major, increment: v.minor }),
        "versionEpoch": routing.collection.epoch,
        "versionTimestamp": routing.collection.timestamp,
        "numChunks": routing.chunks.len() as i64,
    })
}

/// `configureCollectionBalancing`: `chunkSize` (MB; 0 restores the cluster
/// default) for one collection.
pub(crate) async fn configure_collection_balancing(
    state: &RouterState,
    req: &Request<'_>,
) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let mut coll = state.catalog.collection(ns).await?.ok_or_else(|| {
        RouterError::command(118, "NamespaceNotSharded", format!("{ns} is not sharded"))
    })?;
    if let Some(mb) = crate::commands::number_field(req.body, "chunkSize") {
        if !(0..=1024).contains(&mb) {
            return Err(RouterError::bad_value(
                "chunkSize must be between 0 and 1024 MB",
            ));
        }
        coll.max_chunk_size_bytes = (mb > 0).then_some(mb * 1024 * 1024);
    }
    if let Ok(enable) = req.body.get_bool("enableAutoMerger") {
        coll.enable_auto_merger = Some(enable);
    }
    let defragment = req.body.get_bool("defragmentCollection").ok();
    if let Some(on) = defragment {
        // The balancer runs the phases and clears the flag when done;
        // `false` stops it.
        coll.defragment_collection = on.then_some(true);
    }
    state.catalog.update_collection(&coll).await?;
    if defragment == Some(true) {
        // Its first phase at once, even while the balancer is stopped:
        // every run of contiguous chunks on a shard becomes one chunk.
        super::chunks::merge_everywhere(state, ns, None).await?;
    }
    Ok(Document::new())
}

/// `setAllowMigrations: ns, allowMigrations: bool`: while false, neither
/// the balancer nor `moveChunk` moves a chunk of the collection.
pub(crate) async fn set_allow_migrations(
    state: &RouterState,
    req: &Request<'_>,
) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let allow = req
        .body
        .get_bool("allowMigrations")
        .map_err(|_| RouterError::bad_value("setAllowMigrations needs allowMigrations: <bool>"))?;
    let mut coll = state.catalog.collection(ns).await?.ok_or_else(|| {
        RouterError::command(118, "NamespaceNotSharded", format!("{ns} is not sharded"))
    })?;
    coll.permit_migrations = (!allow).then_some(false);
    state.catalog.update_collection(&coll).await?;
    Ok(Document::new())
}
