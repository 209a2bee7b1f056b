//! Single-document updates that may change a document's shard key
//! (`updateOne`, `replaceOne`, `findAndModify`), as mongos handles
//! `WouldChangeOwningShard`: the document is found (by its filter, on the
//! shards the filter reaches), updated on its shard inside a transaction,
//! and when its new key belongs to another shard, deleted there and
//! inserted on the new owner in the same transaction, committed as one.
//! The transaction is the client's when it runs one, else one the router
//! runs itself. A move is allowed only in a transaction or a retryable
//! write; otherwise IllegalOperation (20) with mongos's message, and
//! nothing changes. A key change that keeps the document on its shard is
//! just an update.

use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use shardgate_config_store::shard_key::range_filter;
use shardgate_config_store::ShardType;

use super::exec::Outcome;
use super::without_key::{find_one, id_of, Search};
use crate::catalog_cache::routing::CollectionRouting;
use crate::error::{Result, RouterError};
use crate::session::{Namespace, Reply, Request};
use crate::shards::run_on_shard;
use crate::state::RouterState;
use crate::transactions::Txn;

/// Rounds of find-then-change when a concurrent write gets in the way.
const ATTEMPTS: usize = 10;

/// Fields of an update statement the shard's `findAndModify` takes as is.
const PASSED: [&str; 3] = ["arrayFilters", "collation", "bypassDocumentValidation"];

/// What the update does, once the document is found.
struct Change<'a> {
    routing: &'a CollectionRouting,
    /// The client's filter, checked again on the document's shard.
    filter: &'a Document,
    /// The update (operators, replacement or pipeline) and its options.
    update: Document,
    /// Moving the document to another shard is allowed.
    may_move: bool,
    in_txn: bool,
    /// Insert the document when none matches (a filter with an exact
    /// `_id` but not the full shard key, as mongos ≥ 7.0 accepts).
    upsert: bool,
}

/// What applying a change did.
enum Applied {
    /// Nothing matched (and no upsert).
    Nothing,
    /// The document before and after the update.
    Updated(Document, Document),
    /// The document an upsert inserted.
    Upserted(Document),
}

/// An `update` statement (`stmt`, the client's `index`).
pub(super) async fn update_one(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    (stmt, index): (&RawDocument, usize),
    retryable: bool,
) -> Result<Outcome> {
    let stmt = Document::try_from(stmt).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let filter = stmt.get_document("q").cloned().unwrap_or_default();
    let search = Search {
        filter: &filter,
        sort: stmt.get_document("sort").ok().cloned(),
        collation: stmt.get_document("collation").ok().cloned(),
    };
    let mut update = doc! {"update": stmt.get("u").cloned().unwrap_or(Bson::Null)};
    for f in PASSED {
        if let Some(v) = stmt.get(f) {
            update.insert(f, v.clone());
        }
    }
    let in_txn = req.body.get_bool("autocommit").is_ok();
    let upsert = stmt.get_bool("upsert").unwrap_or(false);
    let change = Change {
        routing,
        filter: &filter,
        update,
        may_move: retryable || in_txn || upsert,
        in_txn,
        upsert,
    };
    match find_and_apply(state, &change, &search).await {
        Ok(Applied::Nothing) => Ok(Outcome::default()),
        Ok(Applied::Updated(pre, post)) => Ok(Outcome {
            n: 1,
            n_modified: i64::from(post != pre),
            ..Outcome::default()
        }),
        Ok(Applied::Upserted(post)) => Ok(Outcome {
            n: 1,
            upserted: vec![(index, id_of(&post))],
            ..Outcome::default()
        }),
        Err(e) => Ok(Outcome {
            write_errors: vec![
                doc! {"index": index as i32, "code": e.code().0, "errmsg": e.to_string()},
            ],
            ..Outcome::default()
        }),
    }
}

/// Finds the document and applies the change (or upserts). Outside the
/// client's transaction, a transient failure (a write conflict with a
/// concurrent write or a migration) runs both again, as mongos's internal
/// transactions retry.
async fn find_and_apply(
    state: &RouterState,
    change: &Change<'_>,
    search: &Search<'_>,
) -> Result<Applied> {
    let mut attempt = 0;
    loop {
        let found = find_one(state, change.routing, search).await?;
        let result = match &found {
            Some((pre, owner)) => apply(state, change, Some(pre), owner).await,
            None if change.upsert => {
                let first = change
                    .routing
                    .chunks
                    .shards()
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let owner = state.placement.shard(first)?;
                apply(state, change, None, &owner).await
            }
            None => return Ok(Applied::Nothing),
        };
        match result {
            Ok(post) => {
                return Ok(match found {
                    Some((pre, _)) => Applied::Updated(pre, post),
                    None => Applied::Upserted(post),
                })
            }
            Err(e)
                if !change.in_txn
                    && crate::labels::is_transient(e.code().0)
                    && attempt < ATTEMPTS =>
            {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A `findAndModify` whose update may change the shard key.
pub(super) async fn find_and_modify(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    query: &Document,
) -> Result<Reply> {
    let search = Search::of_find_and_modify(req, query)?;
    let body = Document::try_from(req.body).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let mut update = doc! {"update": body.get("update").cloned().unwrap_or(Bson::Null)};
    for f in PASSED {
        if let Some(v) = body.get(f) {
            update.insert(f, v.clone());
        }
    }
    let in_txn = body.get_bool("autocommit").is_ok();
    let upsert = body.get_bool("upsert").unwrap_or(false);
    let change = Change {
        routing,
        filter: query,
        update,
        may_move: body.get_i64("txnNumber").is_ok() || in_txn || upsert,
        in_txn,
        upsert,
    };
    let new = body.get_bool("new").unwrap_or(false);
    let (mut value, last_error) = match find_and_apply(state, &change, &search).await? {
        Applied::Nothing => {
            let none = doc! {"lastErrorObject": {"n": 0, "updatedExisting": false}, "value": Bson::Null, "ok": 1.0};
            return Ok(Reply::Body(none.to_vec().unwrap_or_default()));
        }
        Applied::Updated(pre, post) => (
            if new { post } else { pre },
            doc! {"n": 1, "updatedExisting": true},
        ),
        Applied::Upserted(post) => {
            let last_error = doc! {"n": 1, "updatedExisting": false, "upserted": id_of(&post)};
            if !new {
                let reply = doc! {"lastErrorObject": last_error, "value": Bson::Null, "ok": 1.0};
                return Ok(Reply::Body(reply.to_vec().unwrap_or_default()));
            }
            (post, last_error)
        }
    };
    if let Ok(fields) = body.get_document("fields") {
        let collation = body.get_document("collation").ok();
        value = super::projection::project(state, value, fields, (query, collation)).await?;
    }
    let reply = doc! {"lastErrorObject": last_error, "value": value, "ok": 1.0};
    Ok(Reply::Body(reply.to_vec().unwrap_or_default()))
}

/// Applies the change to `pre` (on `owner`) in a transaction — the
/// client's, or one of the router's own, committed here — moving the
/// document when its new key belongs to another shard. Returns the
/// document after the update.
async fn apply(
    state: &RouterState,
    change: &Change<'_>,
    pre: Option<&Document>,
    owner: &ShardType,
) -> Result<Document> {
    if change.in_txn {
        return update_and_move(state, change, pre, owner).await;
    }
    let txn = Arc::new(Txn::internal());
    let work = update_and_move(state, change, pre, owner);
    match crate::transactions::run(txn.clone(), work).await {
        Ok(post) => {
            crate::txn::commit(state, &txn, None).await?;
            Ok(post)
        }
        Err(e) => {
            crate::txn::abort_all(state, &txn).await;
            Err(e)
        }
    }
}

/// The statements of the change, run inside its transaction: the update
/// of `pre` (or the upsert, without `pre`) on `owner`, then the move.
async fn update_and_move(
    state: &RouterState,
    change: &Change<'_>,
    pre: Option<&Document>,
    owner: &ShardType,
) -> Result<Document> {
    let Namespace { db, coll } = Namespace::parse(&change.routing.collection.ns);
    let query = match pre {
        Some(pre) => doc! {"$and": [change.filter.clone(), {"_id": id_of(pre)}]},
        None => change.filter.clone(),
    };
    let mut fam =
        doc! {"findAndModify": coll, "query": query, "new": true, "upsert": pre.is_none()};
    fam.extend(change.update.clone());
    fam.insert("$db", db);
    let reply = run_on_shard(state, owner, fam).await?;
    let post = reply.get_document("value").cloned().map_err(|_| {
        RouterError::command(
            112,
            "WriteConflict",
            "the document changed during the update; retry",
        )
    })?;
    let raw = RawDocumentBuf::try_from(&post).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let key = change
        .routing
        .pattern
        .extract_key(&raw)
        .map_err(|e| RouterError::command(61, "ShardKeyNotFound", e.to_string()))?;
    let new_owner = change.routing.chunks.chunk_for(&key).shard.clone();
    if new_owner == owner.id {
        return Ok(post);
    }
    if !change.may_move {
        return Err(RouterError::command(
            20,
            "IllegalOperation",
            "Must run update to shard key field in a multi-statement transaction or with retryWrites: true.",
        ));
    }
    move_to(
        state,
        change,
        &post,
        pre.unwrap_or(&post),
        owner,
        &new_owner,
    )
    .await?;
    Ok(post)
}

/// Deletes the updated document `post` from `owner` and inserts it on
/// `new_owner`, inside the change's transaction.
async fn move_to(
    state: &RouterState,
    change: &Change<'_>,
    post: &Document,
    pre: &Document,
    owner: &ShardType,
    new_owner: &str,
) -> Result<()> {
    let Namespace { db, coll } = Namespace::parse(&change.routing.collection.ns);
    let id = id_of(post);
    let delete =
        doc! {"delete": coll, "deletes": [{"q": {"_id": id.clone()}, "limit": 1}], "$db": db};
    run_on_shard(state, owner, delete).await?;
    let target = state.placement.shard(new_owner)?;
    // A copy of the document there (an orphan, or a migration's) would
    // fail the insert, and a write error ends the transaction there: it is
    // looked for first, outside the transaction.
    clear_the_way(state, change, &target, pre, false).await?;
    let insert = doc! {"insert": coll, "documents": [post.clone()], "$db": db};
    let reply = run_on_shard(state, &target, insert).await?;
    let Some(e) = reply
        .get_array("writeErrors")
        .ok()
        .and_then(|w| w.first())
        .and_then(Bson::as_document)
    else {
        return Ok(());
    };
    if duplicate_id(e) {
        // A copy arrived since: the change runs again once it is gone.
        clear_the_way(state, change, &target, pre, true).await?;
    }
    Err(RouterError::command(
        e.get_i32("code").unwrap_or(1),
        "WriteError",
        format!(
            "Failed to update document's shard key field. There is either an orphan for this document or _id for this collection is not globally unique. {}",
            e.get_str("errmsg").unwrap_or_default()
        ),
    ))
}

/// Looks, outside the transaction, at what holds `pre`'s `_id` on `target`
/// and deletes it when it is an orphaned copy. WriteConflict (112, so the
/// change runs again) when a migration's copy is in the way, or when
/// `after_failure` (the insert failed, the transaction ended there) and
/// anything but another document was there.
async fn clear_the_way(
    state: &RouterState,
    change: &Change<'_>,
    target: &ShardType,
    pre: &Document,
    after_failure: bool,
) -> Result<()> {
    let copy = Box::pin(crate::transactions::outside(copy_on(
        state, change, target, pre,
    )))
    .await?;
    let retry = match copy {
        Copy::Gone if after_failure => "its copy there was deleted since",
        Copy::Migrating => "it holds a migration's copy of the document",
        Copy::Orphan(filter) => {
            let delete = delete_orphan(state, change, target, filter);
            Box::pin(crate::transactions::outside(delete)).await?;
            if !after_failure {
                return Ok(());
            }
            "it held an orphaned copy of the document, now deleted"
        }
        Copy::Gone | Copy::Other => return Ok(()),
    };
    Err(RouterError::command(
        112,
        "WriteConflict",
        format!("moving the document to {}: {retry}; retry", target.id),
    ))
}

/// Whether a write error is a duplicate `_id`.
fn duplicate_id(e: &Document) -> bool {
    if e.get_i32("code").ok() != Some(11000) {
        return false;
    }
    match e.get_document("keyPattern") {
        Ok(pattern) => pattern.keys().eq(["_id"]),
        Err(_) => e.get_str("errmsg").is_ok_and(|m| m.contains(" _id_ ")),
    }
}

/// What holds the moved document's `_id` on its new owner.
enum Copy {
    /// Nothing any more (a range deletion got there first).
    Gone,
    /// A copy of this document that a migration is moving or has just
    /// moved there: the change runs again once the migration is through.
    Migrating,
    /// A stale copy in a range the shard holds but does not own; the
    /// filter that selects it there.
    Orphan(Document),
    /// Another document with the same `_id`.
    Other,
}

/// Looks at what holds `pre`'s `_id` on `shard` (outside the transaction,
/// which the duplicate ended there), against the store's orphan ranges and
/// migrations. A copy in an orphan range is stale unless a migration into
/// `shard` is copying that range now, and is then removable only when it
/// is this document's own copy (whose source this change deletes).
async fn copy_on(
    state: &RouterState,
    change: &Change<'_>,
    shard: &ShardType,
    pre: &Document,
) -> Result<Copy> {
    let Namespace { db, coll } = Namespace::parse(&change.routing.collection.ns);
    let id = id_of(pre);
    let find = doc! {"find": coll, "filter": {"_id": id.clone()}, "limit": 1, "$db": db};
    let reply = run_on_shard(state, shard, find).await?;
    let Some(copy) = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| b.first())
        .and_then(Bson::as_document)
    else {
        return Ok(Copy::Gone);
    };
    let pattern = &change.routing.pattern;
    let key_of = |d: &Document| {
        RawDocumentBuf::try_from(d)
            .ok()
            .and_then(|raw| pattern.extract_key(&raw).ok())
    };
    let (Some(key), pre_key) = (key_of(copy), key_of(pre)) else {
        return Ok(Copy::Other);
    };
    let ns = &change.routing.collection.ns;
    let contains = |min: &Document, max: &Document| {
        let bound = |b: &Document| pattern.encode_bound(b).ok();
        matches!((bound(min), bound(max)), (Some(lo), Some(hi)) if lo <= key && key < hi)
    };
    let orphan = state
        .catalog
        .orphan_ranges(ns)
        .await?
        .into_iter()
        .find(|o| o.shard == shard.id && contains(&o.min, &o.max));
    let own = Some(&key) == pre_key.as_ref();
    let Some(orphan) = orphan else {
        return Ok(if own { Copy::Migrating } else { Copy::Other });
    };
    let copying_in = state
        .catalog
        .migrations(ns)
        .await?
        .iter()
        .any(|m| m.to_shard == shard.id && contains(&m.min, &m.max));
    if copying_in && !own {
        return Ok(Copy::Migrating);
    }
    let mut filter = doc! {"_id": id};
    if pattern.hashed_field().is_none() {
        let fields: Vec<_> = pattern.fields().collect();
        filter.extend(range_filter(&fields, &orphan.min, &orphan.max));
    }
    Ok(Copy::Orphan(filter))
}

/// Deletes an orphaned copy as a migration write (change streams do not
/// show it: the document itself is not deleted).
async fn delete_orphan(
    state: &RouterState,
    change: &Change<'_>,
    shard: &ShardType,
    filter: Document,
) -> Result<()> {
    let Namespace { db, coll } = Namespace::parse(&change.routing.collection.ns);
    let delete = doc! {"delete": coll, "deletes": [{"q": filter, "limit": 1}], "$db": db};
    let body =
        RawDocumentBuf::try_from(&delete).map_err(|e| RouterError::bad_value(e.to_string()))?;
    shardgate_shard_client::migration_write(
        state.shards.as_ref(),
        crate::shards::target(shard),
        &body,
    )
    .await?;
    Ok(())
}
