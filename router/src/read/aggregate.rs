//! `count`, `distinct`, `aggregate` and `explain` on a sharded collection.
//!
//! `aggregate` runs its leading per-document stages (`$match`, `$project`,
//! `$addFields`, `$set`, `$unset`, `$unwind`, `$replaceRoot`) on the shards.
//! When nothing follows them, the shard streams are merged like a `find`.
//! Otherwise a `$group` of `$sum`/`$min`/`$max`/`$count` runs partially on
//! the shards and is merged on the router; every other remaining stage runs
//! on the router's query engine over the shards' output, and a stage it
//! cannot run is a clear error, never a wrong answer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bson::{doc, Bson, Document, RawDocumentBuf};

use super::orphans::{count_owned, distinct_owned, exclusions, HashedOrphans, StreamFilter};
use super::{cursor_reply, doc_field, int_field, rewrite, run_raw, target};
use crate::catalog_cache::routing::CollectionRouting;
use crate::cursors::{BatchFilter, CursorKind, MergeCursor, RouterCursor, ShardStream};
use crate::error::{Result, RouterError};
use crate::session::Namespace;
use crate::session::{Reply, Request, Session};
use crate::state::RouterState;
use shardgate_query as query;

fn query_error(e: query::QueryError) -> RouterError {
    let (code, name) = e.code();
    RouterError::command(code, name, e.to_string())
}

/// `count`: summed over the target shards, then skip and limit applied.
pub(crate) async fn count(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
) -> Result<Reply> {
    let filter = doc_field(req.body, "query")?.unwrap_or_default();
    let skip = int_field(req.body, "skip")?.unwrap_or(0).max(0);
    let limit = int_field(req.body, "limit")?.unwrap_or(0).abs();
    let shards = target(state, routing, &filter, req.body)?;
    let ns = routing.collection.ns.as_str();
    let simple = crate::session::simple_collation(req.body);
    let excluded = exclusions(state, routing, &shards, simple).await;
    let calls = shards.iter().zip(excluded).map(|(s, exclusion)| {
        let mut add = doc! {"query": exclusion.apply(&filter)};
        if limit > 0 {
            add.insert("limit", limit + skip);
        }
        let filter = &filter;
        async move {
            if let Some(orphans) = exclusion.router() {
                return count_owned(state, s, &orphans, ns, filter, req.body).await;
            }
            let cmd = rewrite(req.body, &["skip", "limit"], add)?;
            let reply = run_raw(state, s, &cmd).await?;
            Ok(crate::session::number_field(&reply, "n").unwrap_or(0))
        }
    });
    let mut total: i64 = 0;
    for n in futures::future::join_all(calls).await {
        total += n?;
    }
    let mut n = (total - skip).max(0);
    if limit > 0 {
        n = n.min(limit);
    }
    Ok(Reply::Body(
        doc! {"n": n as i32, "ok": 1.0}.to_vec().unwrap_or_default(),
    ))
}

/// `distinct`: the union of the shards' values, deduplicated and in BSON order.
pub(crate) async fn distinct(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
) -> Result<Reply> {
    let filter = doc_field(req.body, "query")?.unwrap_or_default();
    let shards = target(state, routing, &filter, req.body)?;
    let ns = routing.collection.ns.as_str();
    let key = req.body.get_str("key").unwrap_or_default();
    let simple = crate::session::simple_collation(req.body);
    let excluded = exclusions(state, routing, &shards, simple).await;
    let calls = shards.iter().zip(excluded).map(|(s, exclusion)| {
        let add = doc! {"query": exclusion.apply(&filter)};
        let filter = &filter;
        async move {
            if let Some(orphans) = exclusion.router() {
                return distinct_owned(state, s, &orphans, ns, key, filter, req.body).await;
            }
            let cmd = rewrite(req.body, &[], add)?;
            let reply = run_raw(state, s, &cmd).await?;
            Ok(reply
                .get_array("values")
                .map(|arr| {
                    arr.into_iter()
                        .filter_map(|v| v.ok().and_then(|v| Bson::try_from(v).ok()))
                        .collect()
                })
                .unwrap_or_default())
        }
    });
    let mut values: Vec<Bson> = Vec::new();
    for shard_values in futures::future::join_all(calls).await {
        values.extend(shard_values?);
    }
    values.sort_by(query::compare_bson);
    values.dedup_by(|a, b| query::compare_bson(a, b) == std::cmp::Ordering::Equal);
    Ok(Reply::Body(
        doc! {"values": values, "ok": 1.0}
            .to_vec()
            .unwrap_or_default(),
    ))
}

/// Stages a shard can run on its own documents without changing the result.
fn per_document(stage: &Document) -> bool {
    matches!(
        stage.keys().next().map(String::as_str),
        Some(
            "$match"
                | "$project"
                | "$addFields"
                | "$set"
                | "$unset"
                | "$unwind"
                | "$replaceRoot"
                | "$replaceWith"
        )
    )
}

/// A `$group` whose accumulators can be merged: partial groups on the
/// shards, and the merging `$group` for the router.
fn split_group(stage: &Document) -> Option<(Document, Document)> {
    let spec = stage.get_document("$group").ok()?;
    let mut shard = Document::new();
    let mut merge = doc! {"_id": "$_id"};
    for (field, acc) in spec {
        if field == "_id" {
            shard.insert("_id", acc.clone());
            continue;
        }
        let acc = acc.as_document()?;
        let (op, arg) = acc.iter().next()?;
        let (partial, merged) = match op.as_str() {
            "$sum" => (
                doc! {"$sum": arg.clone()},
                doc! {"$sum": format!("${field}")},
            ),
            "$count" => (doc! {"$sum": 1}, doc! {"$sum": format!("${field}")}),
            "$min" => (
                doc! {"$min": arg.clone()},
                doc! {"$min": format!("${field}")},
            ),
            "$max" => (
                doc! {"$max": arg.clone()},
                doc! {"$max": format!("${field}")},
            ),
            _ => return None,
        };
        shard.insert(field.clone(), partial);
        merge.insert(field.clone(), merged);
    }
    Some((doc! {"$group": shard}, doc! {"$group": merge}))
}

/// `aggregate` on a sharded collection.
pub(crate) async fn aggregate(
    state: &RouterState,
    session: &Session,
    req: &Request<'_>,
    routing: &CollectionRouting,
    ns: &str,
) -> Result<Reply> {
    state.cursors.check_limit(
        session.connection_id,
        state.config.limits.max_cursors_per_connection,
    )?;
    let pipeline = pipeline_of(req.body)?;
    if req.body.get_bool("explain").unwrap_or(false) {
        return explain_to_shards(state, req, routing, &Document::new()).await;
    }
    let (shard_part, router_part) = split_pipeline(&pipeline);
    let filter = match pipeline.first().and_then(|s| s.get_document("$match").ok()) {
        Some(m) => m.clone(),
        None => Document::new(),
    };
    let shards = target(state, routing, &filter, req.body)?;
    let batch_size = req
        .body
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get("batchSize").ok().flatten())
        .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)));
    let mut cursor = open_shard_part(state, req, routing, shards, &shard_part, ns).await?;
    let first = batch_size.unwrap_or(101).max(0) as usize;
    if router_part.is_empty() {
        let batch = cursor.next_batch(first).await?;
        let done = cursor.is_exhausted();
        let kind = CursorKind::Merge(Box::new(cursor));
        return Ok(finish(state, session, ns, batch, kind, done));
    }
    let mut all = Vec::new();
    loop {
        let batch = cursor.next_batch(usize::MAX).await?;
        if batch.is_empty() && cursor.is_exhausted() {
            break;
        }
        all.extend(batch.into_iter().filter_map(|d| Document::try_from(d).ok()));
    }
    let out = query::aggregate(all, &router_part).map_err(query_error)?;
    let mut docs: VecDeque<RawDocumentBuf> = out
        .iter()
        .filter_map(|d| RawDocumentBuf::try_from(d).ok())
        .collect();
    let batch = crate::cursors::drain_batch(&mut docs, first);
    let done = docs.is_empty();
    Ok(finish(
        state,
        session,
        ns,
        batch,
        CursorKind::Buffered(docs),
        done,
    ))
}

/// The client's pipeline, each stage a document.
fn pipeline_of(body: &bson::RawDocument) -> Result<Vec<Document>> {
    body.get_array("pipeline")
        .map_err(|_| RouterError::command(14, "TypeMismatch", "'pipeline' must be an array"))?
        .into_iter()
        .map(|s| {
            s.ok()
                .and_then(|s| s.as_document())
                .and_then(|d| Document::try_from(d).ok())
                .ok_or_else(|| {
                    RouterError::command(
                        14,
                        "TypeMismatch",
                        "each pipeline stage must be a document",
                    )
                })
        })
        .collect()
}

/// The shards' part (the leading per-document stages, and a `$group`'s
/// partial half) and the router's part (the rest).
fn split_pipeline(pipeline: &[Document]) -> (Vec<Document>, Vec<Document>) {
    let cut = pipeline
        .iter()
        .position(|s| !per_document(s))
        .unwrap_or(pipeline.len());
    let mut shard_part: Vec<Document> = pipeline[..cut].to_vec();
    let mut router_part: Vec<Document> = pipeline[cut..].to_vec();
    if let Some((partial, merged)) = router_part.first().and_then(split_group) {
        shard_part.push(partial);
        router_part[0] = merged;
    }
    (shard_part, router_part)
}

/// Runs the shards' part on every target shard (orphans excluded) and
/// merges their streams behind one cursor.
async fn open_shard_part(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    shards: Vec<shardgate_config_store::ShardType>,
    shard_part: &[Document],
    ns: &str,
) -> Result<MergeCursor> {
    let simple = crate::session::simple_collation(req.body);
    let (pipelines, filters): (Vec<Vec<Document>>, Vec<_>) =
        exclusions(state, routing, &shards, simple)
            .await
            .into_iter()
            .map(|exclusion| match exclusion.router() {
                Some(orphans) => {
                    let (stages, filter) =
                        filter_pipeline(state, orphans, shard_part, req.body, ns);
                    (stages, Some(filter))
                }
                None => {
                    let mut stages = shard_part.to_vec();
                    stages.insert(0, doc! {"$match": exclusion.apply(&Document::new())});
                    (stages, None)
                }
            })
            .unzip();
    let opens = shards.into_iter().zip(pipelines).zip(filters).map(
        |((shard, stages), filter)| async move {
            let add = doc! {"pipeline": stages, "cursor": {"batchSize": 1000}};
            let cmd = rewrite(req.body, &[], add)?;
            ShardStream::open(state.shards.clone(), shard, &cmd, filter, 1000).await
        },
    );
    let opened = futures::future::join_all(opens).await;
    Ok(MergeCursor::from_opened(opened, None, false).await?.0)
}

/// The pipeline for a shard holding hashed orphans: its leading `$match`
/// stages only, so the documents arrive whole; the router drops the orphans
/// and runs the rest of the shard part over the survivors on that shard.
fn filter_pipeline(
    state: &RouterState,
    orphans: Arc<HashedOrphans>,
    shard_part: &[Document],
    body: &bson::RawDocument,
    ns: &str,
) -> (Vec<Document>, Arc<dyn BatchFilter>) {
    let matches = shard_part
        .iter()
        .take_while(|s| s.contains_key("$match"))
        .count();
    let mut options = Document::new();
    for name in ["collation", "let"] {
        if let Ok(Some(v)) = body.get(name) {
            if let Ok(v) = Bson::try_from(v) {
                options.insert(name, v);
            }
        }
    }
    let filter = StreamFilter {
        orphans,
        reshape: Default::default(),
        rest: shard_part[matches..].to_vec(),
        db: Namespace::parse(ns).db.to_owned(),
        options,
        client: state.shards.clone(),
    };
    (shard_part[..matches].to_vec(), Arc::new(filter))
}

/// The first batch; the rest stays behind a router cursor unless `done`.
fn finish(
    state: &RouterState,
    session: &Session,
    ns: &str,
    batch: Vec<RawDocumentBuf>,
    kind: CursorKind,
    done: bool,
) -> Reply {
    let id = if done {
        0
    } else {
        state.cursors.insert(
            None,
            RouterCursor {
                kind,
                ns: ns.to_owned(),
                connection: session.connection_id,
                last_used: Instant::now(),
            },
        )
    };
    Reply::Body(cursor_reply(id, ns, "firstBatch", &batch, Document::new()))
}

/// `explain` of a command on a sharded collection: each target shard's
/// explain, as mongos nests them under `shards`.
pub(crate) async fn explain_to_shards(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    filter: &Document,
) -> Result<Reply> {
    let shards = target(state, routing, filter, req.body)?;
    let mut per_shard = Vec::new();
    for s in &shards {
        let cmd = rewrite(req.body, &[], Document::new())?;
        let reply = run_raw(state, s, &cmd).await?;
        let explained = Document::try_from(reply.as_ref()).unwrap_or_default();
        per_shard
            .push(doc! {"shardName": &s.id, "connectionString": &s.host, "explain": explained});
    }
    let stage = if shards.len() == 1 {
        "SINGLE_SHARD"
    } else {
        "SHARD_MERGE"
    };
    let reply = doc! {
        "queryPlanner": {"mongosPlannerVersion": 1, "winningPlan": {"stage": stage, "shards": per_shard}},
        "ok": 1.0,
    };
    Ok(Reply::Body(reply.to_vec().unwrap_or_default()))
}
