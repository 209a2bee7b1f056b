//! `insert`, `update`, `delete` and `findAndModify` on sharded collections.
//!
//! Statements are routed and split by [`crate::write::plan`]; this module
//! waits out migration critical sections, sends the per-shard batches (as
//! OP_MSG document sequences), and merges the replies as mongos does: `n`,
//! `nModified` and `upserted` summed with indexes mapped back to the
//! client's batch, `writeErrors` in index order, one `writeConcernError`.
//!
//! `lsid`, `txnNumber` and `writeConcern` pass through; a retryable write
//! also gets `stmtIds` (the statements' client indexes), so a shard that
//! keeps per-statement records applies a retried statement once. A network
//! failure of a retryable write is a top-level retryable error, so the
//! driver retries the whole command; otherwise it becomes write errors.

use std::borrow::Cow;

use bson::{doc, Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf};
use bytes::Bytes;
use shardgate_shard_client::ShardError;
use shardgate_wire::{DocumentSequence, OpMsg};

use super::owned;
use crate::catalog_cache::routing::CollectionRouting;
use crate::error::{Result, RouterError};
use crate::read::orphans::{Exclusion, OwnedIds};
use crate::read::rewrite;
use crate::session::{Reply, Request};
use crate::shards::to_shard;
use crate::state::RouterState;
use crate::targeting;
use crate::write::critical::{overlaps_critical, route_when_writable, when_writable};
use crate::write::plan::{self, Batch, Routed, Step, StmtError, WriteKind};
use shardgate_shard_client::reply_ok;

/// An inserted document without `_id` gets one here, as on mongos, so every
/// shard and every retry sees the same document.
fn with_id(d: &RawDocument) -> Cow<'_, RawDocument> {
    if matches!(d.get("_id"), Ok(Some(_))) {
        return Cow::Borrowed(d);
    }
    let mut out = RawDocumentBuf::new();
    out.append(bson::cstr!("_id"), bson::oid::ObjectId::new());
    for (k, v) in d.iter().flatten() {
        out.append(k, v);
    }
    Cow::Owned(out)
}

/// Merged results of the batches sent so far.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) n: i64,
    pub(super) n_modified: i64,
    pub(super) upserted: Vec<(usize, Bson)>,
    pub(super) write_errors: Vec<Document>,
    pub(super) write_concern_errors: Vec<(String, Document)>,
}

/// `insert`, `update` or `delete` on a sharded collection.
pub(crate) async fn write(
    state: &RouterState,
    req: &Request<'_>,
    ns: &str,
    kind: WriteKind,
) -> Result<Reply> {
    let raw = req.documents(kind.field());
    let stmts: Vec<Cow<'_, RawDocument>> = match kind {
        WriteKind::Insert => raw.iter().map(|d| with_id(d)).collect(),
        _ => raw.iter().map(|d| Cow::Borrowed(*d)).collect(),
    };
    if stmts.is_empty() {
        return Err(RouterError::command(
            16,
            "InvalidLength",
            "Write batch sizes must be between 1 and 100000. Got 0 operations.",
        ));
    }
    let ordered = req.body.get_bool("ordered").unwrap_or(true);
    let retryable = matches!(req.body.get("txnNumber"), Ok(Some(_)));
    let (routing, routes, _gate) = route_when_writable(state, ns, kind, &stmts).await?;
    let sizes: Vec<usize> = stmts.iter().map(|s| s.as_bytes().len()).collect();
    let mut total = Outcome::default();
    for step in plan::plan(&routes, &sizes, ordered) {
        match step {
            Step::Fail(i) => {
                if let Err(e) = &routes[i] {
                    total.write_errors.push(e.to_write_error(i));
                }
                break;
            }
            Step::Alone(i) => {
                let stmt = (&*stmts[i], i);
                let key_change = matches!(&routes[i], Ok(r) if r.key_change);
                let out = if key_change {
                    super::key_update::update_one(state, req, &routing, stmt, retryable).await?
                } else {
                    super::without_key::write_one(state, req, &routing, kind, stmt, retryable)
                        .await?
                };
                let failed = !out.write_errors.is_empty();
                merge(&mut total, out);
                if ordered && failed {
                    break;
                }
            }
            Step::Send(batches) => {
                let sends = batches.iter().map(|b| {
                    send(
                        state, req, &routing, kind, &stmts, &routes, b, ordered, retryable,
                    )
                });
                let outs = futures::future::join_all(sends).await;
                let mut failed = false;
                for out in outs {
                    let out = out?;
                    failed |= !out.write_errors.is_empty();
                    merge(&mut total, out);
                }
                if ordered && failed {
                    break;
                }
            }
        }
    }
    if !ordered {
        for (i, r) in routes.iter().enumerate() {
            if let Err(e) = r {
                total.write_errors.push(e.to_write_error(i));
            }
        }
    }
    Ok(Reply::Body(reply(kind, total)))
}

/// Sends one batch to its shard and maps the reply to client indexes. On a
/// shard holding hashed orphans, a statement targeted by its filter writes
/// only the documents the shard owns ([`owned::write_owned`]).
#[allow(clippy::too_many_arguments)]
async fn send(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    kind: WriteKind,
    stmts: &[Cow<'_, RawDocument>],
    routes: &[std::result::Result<Routed, StmtError>],
    batch: &Batch,
    ordered: bool,
    retryable: bool,
) -> Result<Outcome> {
    let keyed = |i: usize| matches!(&routes[i], Ok(r) if r.key.is_some());
    let by_filter: Vec<usize> = match kind {
        WriteKind::Insert => Vec::new(),
        _ => batch
            .indexes
            .iter()
            .copied()
            .filter(|i| !keyed(*i))
            .collect(),
    };
    let shard = state.placement.shard(&batch.shard)?;
    let exclusion = if by_filter.is_empty() {
        Exclusion::None
    } else {
        let simple = by_filter.iter().all(|i| plan::simple_collation(&stmts[*i]));
        Exclusion::for_shard(state, routing, &shard, simple).await
    };
    let Some(orphans) = exclusion.router() else {
        let sent = Sent {
            batch,
            exclusion: &exclusion,
        };
        return send_batch(state, req, kind, stmts, routes, sent, ordered, retryable).await;
    };
    let ns = routing.collection.ns.as_str();
    let mut total = Outcome::default();
    for &i in &batch.indexes {
        let out = if keyed(i) {
            let one = Batch {
                shard: batch.shard.clone(),
                indexes: vec![i],
                bytes: stmts[i].as_bytes().len(),
            };
            let sent = Sent {
                batch: &one,
                exclusion: &Exclusion::None,
            };
            send_batch(state, req, kind, stmts, routes, sent, ordered, retryable).await?
        } else {
            let stmt = owned::Statement {
                kind,
                doc: &stmts[i],
                index: i,
            };
            owned::write_owned(state, req, &shard, ns, &orphans, stmt, retryable).await?
        };
        let failed = !out.write_errors.is_empty();
        merge(&mut total, out);
        if failed && ordered {
            break;
        }
    }
    Ok(total)
}

/// A batch as [`send_batch`] sends it.
struct Sent<'a> {
    /// The statements and their shard.
    batch: &'a Batch,
    /// The shard's orphans, kept out of statements targeted by filter.
    exclusion: &'a Exclusion,
}

/// The batch's statements as one document sequence; a statement targeted
/// by its filter gets the exclusion of the shard's orphan ranges, so it
/// does not touch documents the shard holds but does not own.
fn batch_documents(
    stmts: &[Cow<'_, RawDocument>],
    routes: &[std::result::Result<Routed, StmtError>],
    sent: &Sent<'_>,
) -> Result<Vec<u8>> {
    let orphans = !matches!(sent.exclusion, Exclusion::None);
    let mut documents = Vec::with_capacity(sent.batch.bytes);
    for &i in &sent.batch.indexes {
        let keyed = matches!(&routes[i], Ok(r) if r.key.is_some());
        if orphans && !keyed {
            let mut s = Document::try_from(stmts[i].as_ref())
                .map_err(|e| RouterError::bad_value(e.to_string()))?;
            let q = s.get_document("q").cloned().unwrap_or_default();
            s.insert("q", sent.exclusion.apply(&q));
            s.to_writer(&mut documents)
                .map_err(|e| RouterError::bad_value(e.to_string()))?;
        } else {
            documents.extend_from_slice(stmts[i].as_bytes());
        }
    }
    Ok(documents)
}

/// `stmtIds` of a retryable batch: the client's statement ids when it sent
/// them (a `bulkWrite` split by the router does), else the statements'
/// indexes.
pub(super) fn statement_ids(req: &Request<'_>, indexes: &[usize]) -> Vec<Bson> {
    let given: Vec<Bson> = req
        .body
        .get_array("stmtIds")
        .map(|a| {
            a.into_iter()
                .filter_map(|v| v.ok().and_then(|v| Bson::try_from(v).ok()))
                .collect()
        })
        .unwrap_or_default();
    indexes
        .iter()
        .map(|i| given.get(*i).cloned().unwrap_or(Bson::Int32(*i as i32)))
        .collect()
}

/// [`send`] of a batch the shard runs as it is.
#[allow(clippy::too_many_arguments)]
async fn send_batch(
    state: &RouterState,
    req: &Request<'_>,
    kind: WriteKind,
    stmts: &[Cow<'_, RawDocument>],
    routes: &[std::result::Result<Routed, StmtError>],
    sent: Sent<'_>,
    ordered: bool,
    retryable: bool,
) -> Result<Outcome> {
    let batch = sent.batch;
    let shard = state.placement.shard(&batch.shard)?;
    let documents = batch_documents(stmts, routes, &sent)?;
    let mut extra = Document::new();
    if retryable {
        extra.insert("stmtIds", statement_ids(req, &batch.indexes));
    }
    let body = rewrite(req.body, &[kind.field(), "stmtIds"], extra)?;
    let msg = OpMsg {
        flags: Default::default(),
        body: Bytes::from(body.into_bytes()),
        sequences: vec![DocumentSequence {
            identifier: kind.field().to_owned(),
            documents: Bytes::from(documents),
        }],
    };
    let failed = |code: i32, errmsg: String| {
        let indexes: &[usize] = if ordered {
            &batch.indexes[..1]
        } else {
            &batch.indexes
        };
        Outcome {
            write_errors: indexes
                .iter()
                .map(|i| doc! {"index": *i as i32, "code": code, "errmsg": &errmsg})
                .collect(),
            ..Outcome::default()
        }
    };
    let reply = match to_shard(state, &shard, &msg).await {
        Ok(r) => r,
        Err(e) if retryable && e.is_retryable() => return Err(e),
        Err(e) => return Ok(failed(e.code().0, e.to_string())),
    };
    let body = reply.body();
    if !reply_ok(body) {
        let e = ShardError::from_reply(&shard.id, body);
        if retryable && e.labels().iter().any(|l| l == "RetryableWriteError") {
            // The driver retries the whole command; the shards apply each
            // statement once (stmtIds), and the router replays nothing it
            // did not record.
            return Err(RouterError::Shard(e));
        }
        return Ok(failed(e.code().0, e.to_string()));
    }
    outcome(&shard.id, body, &batch.indexes)
}

/// A shard's write reply, its statement indexes mapped to the client's
/// (`indexes[local]`).
pub(super) fn outcome(shard: &str, body: &RawDocument, indexes: &[usize]) -> Result<Outcome> {
    let global = |local: i32| {
        indexes
            .get(local.max(0) as usize)
            .or(indexes.first())
            .copied()
            .unwrap_or(0)
    };
    let mut out = Outcome {
        n: number(body, "n"),
        n_modified: number(body, "nModified"),
        ..Outcome::default()
    };
    for u in documents_of(body, "upserted") {
        let index = global(u.get_i32("index").unwrap_or(0));
        if let Ok(Some(id)) = u.get("_id") {
            out.upserted
                .push((index, Bson::try_from(id).unwrap_or(Bson::Null)));
        }
    }
    for e in documents_of(body, "writeErrors") {
        let mut e = Document::try_from(e).map_err(|e| RouterError::bad_value(e.to_string()))?;
        let index = global(e.get_i32("index").unwrap_or(0));
        e.insert("index", index as i32);
        out.write_errors.push(e);
    }
    if let Ok(wce) = body.get_document("writeConcernError") {
        if let Ok(wce) = Document::try_from(wce) {
            out.write_concern_errors.push((shard.to_owned(), wce));
        }
    }
    Ok(out)
}

fn number(body: &RawDocument, field: &str) -> i64 {
    crate::session::number_field(body, field).unwrap_or(0)
}

fn documents_of<'a>(body: &'a RawDocument, field: &str) -> Vec<&'a RawDocument> {
    body.get_array(field)
        .map(|a| {
            a.into_iter()
                .filter_map(|v| match v {
                    Ok(RawBsonRef::Document(d)) => Some(d),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn merge(total: &mut Outcome, out: Outcome) {
    total.n += out.n;
    total.n_modified += out.n_modified;
    total.upserted.extend(out.upserted);
    total.write_errors.extend(out.write_errors);
    total.write_concern_errors.extend(out.write_concern_errors);
}

/// The client's reply, shaped like mongos's for `kind`.
fn reply(kind: WriteKind, mut total: Outcome) -> Vec<u8> {
    let mut reply = doc! {"n": total.n as i32};
    if kind == WriteKind::Update {
        reply.insert("nModified", total.n_modified as i32);
        if !total.upserted.is_empty() {
            total.upserted.sort_by_key(|(i, _)| *i);
            let upserted: Vec<Bson> = total
                .upserted
                .into_iter()
                .map(|(i, id)| Bson::Document(doc! {"index": i as i32, "_id": id}))
                .collect();
            reply.insert("upserted", upserted);
        }
    }
    if !total.write_errors.is_empty() {
        total
            .write_errors
            .sort_by_key(|e| e.get_i32("index").unwrap_or(i32::MAX));
        // A statement sent to several shards reports its first error once.
        total
            .write_errors
            .dedup_by_key(|e| e.get_i32("index").unwrap_or(i32::MAX));
        reply.insert("writeErrors", total.write_errors);
    }
    match total.write_concern_errors.len() {
        0 => {}
        1 => {
            let (_, wce) = total.write_concern_errors.remove(0);
            reply.insert("writeConcernError", wce);
        }
        _ => {
            // As mongos: one error naming every shard's.
            let code = total.write_concern_errors[0]
                .1
                .get_i32("code")
                .unwrap_or(64);
            let msg = total
                .write_concern_errors
                .iter()
                .map(|(s, e)| format!("{s}: {}", e.get_str("errmsg").unwrap_or("")))
                .collect::<Vec<_>>()
                .join(" :: and :: ");
            reply.insert(
                "writeConcernError",
                doc! {"code": code, "errmsg": format!("multiple errors reported : {msg}")},
            );
        }
    }
    reply.insert("ok", 1.0);
    reply.to_vec().unwrap_or_default()
}

/// `findAndModify` by `_id` on one of the shards it may be on: only a
/// document the shard owns may be modified there.
async fn find_and_modify_on(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    id: &str,
    query: &Document,
) -> Result<OpMsg> {
    let shard = state.placement.shard(id)?;
    let simple = plan::simple_collation(req.body);
    let exclusion = Exclusion::for_shard(state, routing, &shard, simple).await;
    let filter = match exclusion.router() {
        Some(orphans) => {
            let ns = routing.collection.ns.as_str();
            let collation = crate::read::doc_field(req.body, "collation")?;
            let mut ids =
                OwnedIds::open(state, &shard, orphans, ns, query, collation.as_ref()).await?;
            let owned = ids.next().await?.unwrap_or_default();
            ids.close().await;
            doc! {"$and": [query.clone(), {"_id": {"$in": owned}}]}
        }
        None => exclusion.apply(query),
    };
    let body = rewrite(req.body, &[], doc! {"query": filter})?;
    to_shard(state, &shard, &OpMsg::from_body(body.into_bytes())).await
}

/// `findAndModify` on a sharded collection: to the owner of the key its
/// query pins, or (an exact `_id` without upsert) to every shard the query
/// reaches, answering with the one that found the document.
pub(crate) async fn find_and_modify(
    state: &RouterState,
    req: &Request<'_>,
    ns: &str,
) -> Result<Reply> {
    let query = crate::read::doc_field(req.body, "query")?.unwrap_or_default();
    let update = match req.body.get("update") {
        Ok(Some(v)) => Some(Bson::try_from(v).map_err(|e| RouterError::bad_value(e.to_string()))?),
        _ => None,
    };
    let upsert = req.body.get_bool("upsert").unwrap_or(false);
    let simple = plan::simple_collation(req.body);
    let (routing, routed, _gate) = when_writable(state, ns, |routing| {
        let routed = plan::route_find_and_modify(
            &routing.pattern,
            &routing.chunks,
            &query,
            update.as_ref(),
            upsert,
            simple,
        )
        .map_err(|e| RouterError::command(e.code, e.code_name, e.errmsg))?;
        let held = match &routed.key {
            Some(key) => routing
                .critical
                .iter()
                .any(|(min, max)| min <= key && key < max),
            None => overlaps_critical(routing, &targeting::target(&routing.pattern, &query)),
        };
        Ok((routed, held))
    })
    .await?;
    if routed.key.is_some() {
        let shard = state.placement.shard(&routed.shards[0])?;
        return Ok(Reply::Msg(to_shard(state, &shard, req.msg).await?));
    }
    if routed.key_change {
        return super::key_update::find_and_modify(state, req, &routing, &query).await;
    }
    if routed.without_key {
        return super::without_key::find_and_modify(state, req, &routing, &query).await;
    }
    let sends = routed
        .shards
        .iter()
        .map(|id| find_and_modify_on(state, req, &routing, id, &query));
    let mut chosen: Option<OpMsg> = None;
    for reply in futures::future::join_all(sends).await {
        let reply = reply?;
        let body = reply.body();
        if !reply_ok(body) {
            return Ok(Reply::Msg(reply));
        }
        let found = body
            .get_document("lastErrorObject")
            .ok()
            .and_then(|l| crate::session::number_field(l, "n"))
            .unwrap_or(0)
            > 0;
        if found || chosen.is_none() {
            chosen = Some(reply);
        }
    }
    chosen
        .map(Reply::Msg)
        .ok_or_else(|| RouterError::command(1, "InternalError", "findAndModify reached no shard"))
}
