//! Single-document writes whose filter pins neither the shard key nor
//! `_id` (`updateOne`, `replaceOne`, `deleteOne`, `findAndModify` by any
//! field), in two phases as mongos ≥ 7.0 runs them:
//! 1. find one matching document the shards own (honouring `sort` and
//!    `collation`) on the shards the filter reaches;
//! 2. write it on its owner by its `_id`, the original filter re-checked
//!    there. A write that matches nothing (a concurrent write changed the
//!    document, or a migration moved it) goes back to phase 1.
//!
//! Upserts still need the full shard key (ShardKeyNotFound, 61), as on
//! mongos.

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use shardgate_config_store::ShardType;
use shardgate_wire::OpMsg;

use super::exec::{outcome, Outcome};
use super::plan::WriteKind;
use crate::catalog_cache::routing::CollectionRouting;
use crate::collation::Collator;
use crate::cursors::merge::{strip_at, SortSpec, SORT_KEY_FIELD};
use crate::error::{Result, RouterError};
use crate::read::rewrite;
use crate::session::{Namespace, Reply, Request};
use crate::shards::to_shard;
use crate::state::RouterState;

/// Rounds of find-then-write before the write reports no match.
const ATTEMPTS: usize = 10;
/// Candidates each shard returns in phase 1 (the first it owns is taken).
const CANDIDATES: i64 = 16;

/// What phase 1 looks for.
pub(super) struct Search<'a> {
    pub filter: &'a Document,
    pub sort: Option<Document>,
    pub collation: Option<Document>,
}

impl<'a> Search<'a> {
    /// The search of a `findAndModify` with `query`.
    pub(super) fn of_find_and_modify(req: &Request<'_>, query: &'a Document) -> Result<Search<'a>> {
        Ok(Search {
            filter: query,
            sort: crate::read::doc_field(req.body, "sort")?,
            collation: crate::read::doc_field(req.body, "collation")?,
        })
    }
}

/// Phase 1: one document matching the search and its owner, the first in
/// `sort` order; `None` when no shard owns a match.
pub(super) async fn find_one(
    state: &RouterState,
    routing: &CollectionRouting,
    search: &Search<'_>,
) -> Result<Option<(Document, ShardType)>> {
    let ids = crate::targeting::target_shards(&routing.pattern, &routing.chunks, search.filter);
    let shards = ids
        .iter()
        .map(|id| state.placement.shard(id))
        .collect::<Result<Vec<_>>>()?;
    let spec = match &search.sort {
        Some(sort) => {
            let collator = search.collation.as_ref().and_then(Collator::from_spec);
            let collator = crate::collation::for_merge(state, collator, &shards).await;
            SortSpec::parse_shard_keyed(sort).map(|s| s.collated(collator))
        }
        None => None,
    };
    let finds = shards
        .iter()
        .map(|shard| candidates_on(state, routing, search, shard));
    // Each candidate with its sort key's bytes, in shard order.
    let mut candidates: Vec<(Vec<u8>, Document, &ShardType)> = Vec::new();
    for (shard, found) in shards.iter().zip(futures::future::join_all(finds).await) {
        for raw in found? {
            let mut key = Vec::new();
            let raw = match &spec {
                Some(spec) => {
                    let located = spec.encode(&raw, &mut key);
                    strip_at(raw, located)
                }
                None => raw,
            };
            let doc = Document::try_from(raw.as_ref())
                .map_err(|e| RouterError::bad_value(e.to_string()))?;
            if owns(routing, &shard.id, &doc) {
                candidates.push((key, doc, shard));
            }
        }
    }
    // Stable: equal keys keep the shards' order.
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(candidates
        .into_iter()
        .next()
        .map(|(_, doc, shard)| (doc, shard.clone())))
}

/// The first matches on `shard`, in the search's order, each with its
/// `$sortKey` when sorted.
async fn candidates_on(
    state: &RouterState,
    routing: &CollectionRouting,
    search: &Search<'_>,
    shard: &ShardType,
) -> Result<Vec<RawDocumentBuf>> {
    let Namespace { db, coll } = Namespace::parse(&routing.collection.ns);
    let mut find = doc! {"find": coll, "filter": search.filter.clone(), "limit": CANDIDATES, "batchSize": CANDIDATES, "singleBatch": true};
    if let Some(s) = &search.sort {
        find.insert("sort", s.clone());
        find.insert("projection", doc! {SORT_KEY_FIELD: {"$meta": "sortKey"}});
    }
    if let Some(c) = &search.collation {
        find.insert("collation", c.clone());
    }
    find.insert("$db", db);
    let reply = crate::shards::run_on_shard_raw(state, shard, find).await?;
    let Ok(batch) = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
    else {
        return Ok(Vec::new());
    };
    Ok(batch
        .into_iter()
        .filter_map(|d| d.ok().and_then(|d| d.as_document().map(|d| d.to_owned())))
        .collect())
}

/// Whether `shard` owns `doc` (a shard may hold orphans of a migration).
fn owns(routing: &CollectionRouting, shard: &str, doc: &Document) -> bool {
    let Ok(raw) = RawDocumentBuf::try_from(doc) else {
        return false;
    };
    match routing.pattern.extract_key(&raw) {
        Ok(key) => routing.chunks.chunk_for(&key).shard == shard,
        Err(_) => false,
    }
}

/// A document's `_id`.
pub(super) fn id_of(d: &Document) -> Bson {
    d.get("_id").cloned().unwrap_or(Bson::Null)
}

/// The filter of phase 2: the original one, and the document found.
fn by_id(filter: &Document, id: &Bson) -> Document {
    doc! {"$and": [filter.clone(), {"_id": id.clone()}]}
}

/// An `update` or `delete` statement (`stmt`, the client's `index`) run
/// in two phases.
pub(super) async fn write_one(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    kind: WriteKind,
    (stmt, index): (&RawDocument, usize),
    retryable: bool,
) -> Result<Outcome> {
    let mut stmt = Document::try_from(stmt).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let filter = stmt.get_document("q").cloned().unwrap_or_default();
    let search = Search {
        filter: &filter,
        sort: stmt.get_document("sort").ok().cloned(),
        collation: stmt.get_document("collation").ok().cloned(),
    };
    stmt.remove("sort");
    for _ in 0..ATTEMPTS {
        let Some((found, shard)) = find_one(state, routing, &search).await? else {
            return Ok(Outcome::default());
        };
        stmt.insert("q", by_id(&filter, &id_of(&found)));
        let mut extra = doc! {kind.field(): [stmt.clone()], "ordered": true};
        if retryable {
            let ids = super::exec::statement_ids(req, &[index]);
            extra.insert("stmtIds", ids);
        }
        let body = rewrite(req.body, &[kind.field(), "stmtIds", "ordered"], extra)?;
        let reply = to_shard(state, &shard, &OpMsg::from_body(body.into_bytes())).await?;
        let out = outcome(&shard.id, reply.body(), &[index])?;
        if out.n > 0 || !out.write_errors.is_empty() || !out.write_concern_errors.is_empty() {
            return Ok(out);
        }
    }
    Ok(Outcome::default())
}

/// A `findAndModify` without the shard key, in two phases.
pub(super) async fn find_and_modify(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    query: &Document,
) -> Result<Reply> {
    let search = Search::of_find_and_modify(req, query)?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let Some((found, shard)) = find_one(state, routing, &search).await? else {
            break;
        };
        let body = rewrite(
            req.body,
            &["sort"],
            doc! {"query": by_id(query, &id_of(&found))},
        )?;
        let reply = to_shard(state, &shard, &OpMsg::from_body(body.into_bytes())).await?;
        if !matched_none(reply.body()) {
            return Ok(Reply::Msg(reply));
        }
        last = Some(reply);
    }
    match last {
        Some(reply) => Ok(Reply::Msg(reply)),
        None => Ok(Reply::Body(
            doc! {"lastErrorObject": {"n": 0, "updatedExisting": false}, "value": Bson::Null, "ok": 1.0}
                .to_vec()
                .unwrap_or_default(),
        )),
    }
}

/// A `findAndModify` reply that found nothing.
fn matched_none(body: &RawDocument) -> bool {
    shardgate_shard_client::reply_ok(body)
        && body
            .get_document("lastErrorObject")
            .ok()
            .and_then(|l| crate::session::number_field(l, "n"))
            .unwrap_or(0)
            == 0
}
