//! `movePrimary`: a database's unsharded collections (and views) move to
//! another shard, which becomes the database's primary, as a chunk
//! migration moves a range. Under the database's DDL lock:
//! 1. clone: a change stream opens on the database at the old primary,
//!    then each collection is created on the new shard with its options
//!    and indexes and its documents copied, while clients go on writing;
//! 2. catch-up: the documents the stream names are read again on the old
//!    primary and written to (or removed from) the new one, until the lag
//!    is small;
//! 3. critical section: every live router holds requests to the
//!    database's unsharded collections (recorded in the store,
//!    acknowledged once each router's requests in flight are done), the
//!    last events are applied, the primary switches and the hold ends;
//! 4. the old copies are dropped.
//!
//! A shard without change streams, or a DDL event on the database during
//! the clone (a collection created, dropped or re-indexed), makes the copy
//! run whole inside the critical section instead, where requests wait (up
//! to `critical_section_wait_ms`, then a retryable StaleConfig). A failure
//! before the switch drops what reached the new shard and leaves the
//! primary where it was. The changelog's `movePrimary` entry says which
//! way it went and how long the critical section lasted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use shardgate_config_store::ShardType;

use crate::error::{Result, RouterError};
use crate::session::Request;
use crate::shards::{open_cursor, run_on_shard};
use crate::state::RouterState;

use super::lock;

mod online;

/// How long the routers may take to acknowledge the hold.
const ACK_WAIT: Duration = Duration::from_secs(15);
/// Documents per insert while copying.
const BATCH: usize = 1_000;

/// One unsharded collection or view of the database.
pub(super) struct Unsharded {
    pub(super) name: String,
    /// `create` options (a view's `viewOn` and `pipeline` among them).
    options: Document,
    pub(super) view: bool,
}

/// `movePrimary: <db>, to: <shard>`: the reply, and the changelog
/// entry's details.
pub(crate) async fn move_primary(
    state: &RouterState,
    req: &Request<'_>,
) -> Result<(Document, Document)> {
    let db = req
        .body
        .get_str("movePrimary")
        .or_else(|_| req.body.get_str("moveprimary"))
        .map_err(|_| RouterError::bad_value("movePrimary takes a database name"))?;
    let to = req
        .body
        .get_str("to")
        .map_err(|_| RouterError::bad_value("movePrimary needs 'to'"))?;
    if matches!(db, "admin" | "config" | "local") {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            format!("Can't move primary for {db} database"),
        ));
    }
    let database = state.catalog.database(db).await?.ok_or_else(|| {
        RouterError::command(26, "NamespaceNotFound", format!("database {db} not found"))
    })?;
    let dest = state.placement.shard(to)?;
    let reply = doc! {"primary": format!("{}:{}", dest.id, dest.host)};
    if database.primary == dest.id {
        return Ok((reply, Document::new()));
    }
    if dest.draining {
        return Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("cannot move the primary of {db} to {to}: it is draining"),
        ));
    }
    let source = state.placement.shard(&database.primary)?;
    let held = lock::hold(state, db, "movePrimary").await?;
    let outcome = move_held(state, db, &source, &dest).await;
    held.release().await;
    let mut details = outcome?;
    details.insert("from", &source.id);
    details.insert("to", &dest.id);
    Ok((reply, details))
}

async fn move_held(
    state: &RouterState,
    db: &str,
    source: &ShardType,
    dest: &ShardType,
) -> Result<Document> {
    let collections = unsharded(state, source, db).await?;
    let online = online::clone(state, source, dest, db, &collections).await;
    state.catalog.enter_db_critical(db, &dest.id).await?;
    let held = Instant::now();
    let copied = match wait_for_acks(state, db).await {
        Ok(()) => online::finish(state, online, source, dest, db, &collections).await,
        Err(e) => Err(e),
    };
    let mut details = match copied {
        Ok(details) => details,
        Err(e) => {
            // Nothing switched: the copies on the new shard go, the hold ends.
            drop_all(state, dest, db, &collections).await;
            state.catalog.leave_db_critical(db).await?;
            return Err(e);
        }
    };
    let entry = state.catalog.set_primary(db, &dest.id).await?;
    state.placement.remember(entry);
    state.catalog.leave_db_critical(db).await?;
    let critical_ms = held.elapsed().as_millis() as i64;
    drop_all(state, source, db, &collections).await;
    details.insert("criticalSectionMillis", critical_ms);
    Ok(details)
}

/// The database's unsharded collections and views on its primary.
async fn unsharded(state: &RouterState, source: &ShardType, db: &str) -> Result<Vec<Unsharded>> {
    let reply = run_on_shard(state, source, doc! {"listCollections": 1, "$db": db}).await?;
    let listed = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for c in listed.iter().filter_map(Bson::as_document) {
        let name = c.get_str("name").unwrap_or_default().to_owned();
        let sharded = state.routing.get(&format!("{db}.{name}")).is_some();
        if name.is_empty() || name.starts_with("system.") || sharded {
            continue;
        }
        out.push(Unsharded {
            options: c.get_document("options").cloned().unwrap_or_default(),
            view: c.get_str("type").ok() == Some("view"),
            name,
        });
    }
    Ok(out)
}

/// Waits until every live router (this one included) holds the database.
async fn wait_for_acks(state: &RouterState, db: &str) -> Result<()> {
    let deadline = Instant::now() + ACK_WAIT;
    loop {
        let routers: BTreeSet<String> = state
            .catalog
            .routers()
            .await?
            .into_iter()
            .map(|r| r.id)
            .chain(std::iter::once(state.listen.clone()))
            .collect();
        let acked: BTreeSet<String> = state.catalog.db_acks(db).await?.into_iter().collect();
        if routers.is_subset(&acked) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = routers.difference(&acked).cloned().collect();
            return Err(RouterError::command(
                50,
                "MaxTimeMSExpired",
                format!("routers {missing:?} did not hold {db} for movePrimary"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates every collection (options, indexes) and view on `dest` and
/// copies the collections' documents.
pub(super) async fn copy_all(
    state: &RouterState,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    collections: &[Unsharded],
) -> Result<()> {
    // Leftovers of an earlier attempt: nothing reads them (the database's
    // unsharded collections are read on its primary only).
    drop_all(state, dest, db, collections).await;
    for c in collections.iter().filter(|c| !c.view) {
        let mut create = doc! {"create": &c.name};
        create.extend(c.options.clone());
        create.insert("$db", db);
        run_on_shard(state, dest, create).await?;
        copy_indexes(state, source, dest, db, &c.name).await?;
        copy_documents(state, source, dest, db, &c.name).await?;
    }
    for v in collections.iter().filter(|c| c.view) {
        let mut create = doc! {"create": &v.name};
        create.extend(v.options.clone());
        create.insert("$db", db);
        run_on_shard(state, dest, create).await?;
    }
    Ok(())
}

pub(crate) async fn copy_indexes(
    state: &RouterState,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    coll: &str,
) -> Result<()> {
    let reply = run_on_shard(state, source, doc! {"listIndexes": coll, "$db": db}).await?;
    let indexes: Vec<Bson> = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| match i {
            Bson::Document(mut i) if i.get_str("name").ok() != Some("_id_") => {
                i.remove("v");
                i.remove("ns");
                Some(Bson::Document(i))
            }
            _ => None,
        })
        .collect();
    if !indexes.is_empty() {
        run_on_shard(
            state,
            dest,
            doc! {"createIndexes": coll, "indexes": indexes, "$db": db},
        )
        .await?;
    }
    Ok(())
}

async fn copy_documents(
    state: &RouterState,
    source: &ShardType,
    dest: &ShardType,
    db: &str,
    coll: &str,
) -> Result<()> {
    let find = doc! {"find": coll, "sort": {"$natural": 1}, "batchSize": BATCH as i32, "$db": db};
    let mut cursor = open_cursor(state, source, &find).await?;
    while let Some(batch) = cursor.next_batch().await? {
        for chunk in batch.chunks(BATCH) {
            let docs: Vec<Bson> = chunk
                .iter()
                .filter_map(|d| Document::try_from(d.as_ref()).ok().map(Bson::Document))
                .collect();
            let reply = run_on_shard(
                state,
                dest,
                doc! {"insert": coll, "documents": docs, "ordered": true, "$db": db},
            )
            .await?;
            if let Ok(errors) = reply.get_array("writeErrors") {
                return Err(RouterError::command(
                    1,
                    "InternalError",
                    format!("copying {db}.{coll} to {}: {errors:?}", dest.id),
                ));
            }
        }
    }
    Ok(())
}

/// Drops the collections and views on `shard`; best effort (a shard that
/// lacks one has nothing to drop).
async fn drop_all(state: &RouterState, shard: &ShardType, db: &str, collections: &[Unsharded]) {
    for c in collections {
        if let Err(e) = run_on_shard(state, shard, doc! {"drop": &c.name, "$db": db}).await {
            if e.code().0 != 26 {
                tracing::warn!(%db, coll = %c.name, shard = %shard.id, error = %e, "movePrimary could not drop a copy");
            }
        }
    }
}
