//! `find` on a sharded collection, and `getMore` / `killCursors` on router
//! cursors.

use std::sync::Arc;
use std::time::Instant;

use bson::{doc, Bson, Document, RawDocumentBuf};

use super::cursors::{kill, CursorKind, MergeCursor, RouterCursor, ShardStream};
use super::merge::{KWayMerge, SortSpec, SORT_KEY_FIELD};
use super::orphans::{exclusions, HashedOrphans, StreamFilter};
use super::{cursor_reply, doc_field, has_orphans, int_field, rewrite, target};
use crate::commands::{Reply, Request, Session};
use crate::error::{Result, RouterError};
use crate::routing::CollectionRouting;
use crate::state::RouterState;

/// mongos's default first batch.
const DEFAULT_FIRST_BATCH: i64 = 101;

/// `find` on a sharded collection.
pub(crate) async fn find(
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
    let body = req.body;
    let filter = doc_field(body, "filter")?.unwrap_or_default();
    let shards = target(state, routing, &filter, req.body)?;
    if shards.len() == 1 && !has_orphans(routing, &shards) {
        return pass_through(state, session, req, &shards[0], ns).await;
    }
    let sort = doc_field(body, "sort")?.filter(|s| !s.is_empty());
    let spec = match &sort {
        Some(s) => Some(SortSpec::parse(s).ok_or_else(|| {
            RouterError::command(
                238,
                "NotImplemented",
                format!("cannot merge sort {s} across shards"),
            )
        })?),
        None => None,
    };
    let skip = int_field(body, "skip")?.unwrap_or(0).max(0) as u64;
    let raw_limit = int_field(body, "limit")?.unwrap_or(0);
    let single_batch = body.get_bool("singleBatch").unwrap_or(false) || raw_limit < 0;
    let limit = raw_limit.unsigned_abs();
    let batch_size = int_field(body, "batchSize")?;
    let allow_partial = body.get_bool("allowPartialResults").unwrap_or(false);
    let mut add = Document::new();
    if limit > 0 {
        add.insert("limit", (limit + skip) as i64);
    }
    let mut projection = doc_field(body, "projection")?;
    if spec.is_some() {
        projection
            .get_or_insert_with(Document::new)
            .insert(SORT_KEY_FIELD, doc! {"$meta": "sortKey"});
    }
    if let Some(p) = projection {
        add.insert("projection", p);
    }
    let shard_batch = batch_size.unwrap_or(DEFAULT_FIRST_BATCH).max(1);
    add.insert("batchSize", shard_batch);
    let simple = crate::write_plan::simple_collation(body);
    let (adds, filters): (Vec<Document>, Vec<_>) = exclusions(state, routing, &shards, simple)
        .await
        .into_iter()
        .map(|exclusion| {
            let mut add = add.clone();
            add.insert("filter", exclusion.apply(&filter));
            let filter = exclusion
                .router()
                .map(|orphans| Arc::new(filter_stream(orphans, &mut add)));
            (add, filter)
        })
        .unzip();
    let getmore_batch = batch_size.unwrap_or(1000).max(1);
    let opens =
        shards
            .into_iter()
            .zip(adds)
            .zip(filters)
            .map(|((shard, add), filter)| async move {
                let cmd = rewrite(
                    body,
                    &["skip", "limit", "singleBatch", "allowPartialResults"],
                    add,
                )?;
                ShardStream::open(state, shard, &cmd, filter, getmore_batch).await
            });
    let mut streams = Vec::new();
    let mut merge_input = Vec::new();
    let mut failure = None;
    let mut partial = false;
    for opened in futures::future::join_all(opens).await {
        match opened {
            Ok((stream, docs, done)) => {
                streams.push(stream);
                merge_input.push((docs, done));
            }
            Err(e) if allow_partial && e.is_retryable() => partial = true,
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        for mut stream in streams {
            stream.close().await;
        }
        return Err(e);
    }
    let mut merge = KWayMerge::new(streams.len(), spec);
    for (i, (docs, done)) in merge_input.into_iter().enumerate() {
        merge.push(i, docs, done);
    }
    let mut cursor = MergeCursor {
        streams,
        merge,
        skip,
        remaining: (limit > 0).then_some(limit),
        strip: sort.is_some(),
        pending: None,
    };
    let first = batch_size.unwrap_or(DEFAULT_FIRST_BATCH).max(0) as usize;
    let first = if batch_size == Some(0) {
        0
    } else {
        first.max(1)
    };
    let batch = cursor.next_batch(state, first).await?;
    let extra = if partial {
        doc! {"partialResultsReturned": true}
    } else {
        Document::new()
    };
    let mut cursor_kind = RouterCursor {
        kind: CursorKind::Merge(Box::new(cursor)),
        ns: ns.to_owned(),
        connection: session.connection_id,
        last_used: Instant::now(),
    };
    let exhausted = matches!(&cursor_kind.kind, CursorKind::Merge(m) if m.is_exhausted());
    let id = if exhausted || single_batch {
        kill(state, &mut cursor_kind).await;
        0
    } else {
        state.cursors.insert(None, cursor_kind)
    };
    Ok(Reply::Body(cursor_reply(
        id,
        ns,
        "firstBatch",
        &batch,
        extra,
    )))
}

/// The router's part for a shard holding hashed orphans, and the change to
/// the shard's command (`add`) it needs: no limit (it would count orphans
/// the router drops) and a projection that keeps the shard key.
fn filter_stream(orphans: Arc<HashedOrphans>, add: &mut Document) -> StreamFilter {
    add.remove("limit");
    let (projection, reshape) = orphans.reshape_projection(add.get_document("projection").ok());
    match projection {
        Some(p) => add.insert("projection", p),
        None => add.remove("projection"),
    };
    StreamFilter {
        orphans,
        reshape,
        rest: Vec::new(),
        db: String::new(),
        options: Document::new(),
    }
}

/// A query that reaches one shard goes there unchanged; its cursor is
/// recorded so `getMore` finds the shard.
async fn pass_through(
    state: &RouterState,
    session: &Session,
    req: &Request<'_>,
    shard: &shardgate_config_store::ShardType,
    ns: &str,
) -> Result<Reply> {
    let reply = crate::commands::forward::to_shard(state, shard, req.msg).await?;
    let id = reply
        .body()
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_i64("id").ok())
        .unwrap_or(0);
    if id != 0 {
        state.cursors.insert(
            Some(id),
            RouterCursor {
                kind: CursorKind::PassThrough(shard.clone()),
                ns: ns.to_owned(),
                connection: session.connection_id,
                last_used: Instant::now(),
            },
        );
    }
    Ok(Reply::Msg(reply))
}

/// `getMore` on a router cursor; `None` when the id is not the router's.
pub(crate) async fn get_more(
    state: &RouterState,
    session: &Session,
    req: &Request<'_>,
) -> Result<Option<Reply>> {
    let id = match req.body.get("getMore") {
        Ok(Some(v)) => v.as_i64().unwrap_or(0),
        _ => 0,
    };
    let Some(entry) = state.cursors.get(id) else {
        return Ok(None);
    };
    let mut cursor = entry.lock().await;
    cursor.last_used = Instant::now();
    cursor.connection = session.connection_id;
    let ns = cursor.ns.clone();
    let batch_size = int_field(req.body, "batchSize")?
        .filter(|n| *n > 0)
        .map(|n| n as usize);
    let (batch, done) = match &mut cursor.kind {
        CursorKind::PassThrough(shard) => {
            let shard = shard.clone();
            drop(cursor);
            let reply = crate::commands::forward::to_shard(state, &shard, req.msg).await?;
            let still_open = reply
                .body()
                .get_document("cursor")
                .ok()
                .and_then(|c| c.get_i64("id").ok())
                .is_some_and(|id| id != 0);
            if !still_open {
                state.cursors.remove(id);
            }
            return Ok(Some(Reply::Msg(reply)));
        }
        CursorKind::Merge(m) => {
            let batch = m.next_batch(state, batch_size.unwrap_or(usize::MAX)).await;
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    kill(state, &mut cursor).await;
                    drop(cursor);
                    state.cursors.remove(id);
                    return Err(e);
                }
            };
            let done = m.is_exhausted();
            (batch, done)
        }
        CursorKind::Buffered(buffer) => {
            let n = batch_size.unwrap_or(usize::MAX).min(buffer.len());
            let batch: Vec<RawDocumentBuf> = buffer.drain(..n).collect();
            (batch, buffer.is_empty())
        }
    };
    let reply_id = if done {
        kill(state, &mut cursor).await;
        drop(cursor);
        state.cursors.remove(id);
        0
    } else {
        id
    };
    Ok(Some(Reply::Body(cursor_reply(
        reply_id,
        &ns,
        "nextBatch",
        &batch,
        Document::new(),
    ))))
}

/// The cursor ids a `killCursors` names.
fn cursor_ids(req: &Request<'_>) -> Vec<i64> {
    req.body
        .get_array("cursors")
        .map(|a| {
            a.into_iter()
                .filter_map(|v| v.ok().and_then(|v| v.as_i64()))
                .collect()
        })
        .unwrap_or_default()
}

/// `killCursors` on a sharded collection for ids the router does not hold:
/// `ok` with every id in `cursorsNotFound`, as mongos answers.
pub(crate) fn kill_unknown_cursors(req: &Request<'_>) -> Reply {
    let ids: Vec<Bson> = cursor_ids(req).into_iter().map(Bson::Int64).collect();
    let reply = doc! {
        "cursorsKilled": [],
        "cursorsNotFound": ids,
        "cursorsAlive": [],
        "cursorsUnknown": [],
        "ok": 1.0,
    };
    Reply::Body(reply.to_vec().unwrap_or_default())
}

/// `killCursors` for router cursors; `None` when none of the ids is the
/// router's (the command then goes where it would have gone).
pub(crate) async fn kill_cursors(state: &RouterState, req: &Request<'_>) -> Result<Option<Reply>> {
    let ids = cursor_ids(req);
    if !ids.iter().any(|id| state.cursors.get(*id).is_some()) {
        return Ok(None);
    }
    let (mut killed, mut not_found) = (Vec::new(), Vec::new());
    for id in ids {
        match state.cursors.remove(id) {
            Some(entry) => {
                let mut cursor = entry.lock().await;
                if let CursorKind::PassThrough(shard) = &cursor.kind {
                    let (db, coll) = cursor.ns.split_once('.').unwrap_or(("", ""));
                    let cmd = doc! {"killCursors": coll, "cursors": [id], "$db": db};
                    let _ = crate::commands::forward::run_on_shard(state, shard, cmd).await;
                }
                kill(state, &mut cursor).await;
                killed.push(Bson::Int64(id));
            }
            None => not_found.push(Bson::Int64(id)),
        }
    }
    let reply = doc! {
        "cursorsKilled": killed,
        "cursorsNotFound": not_found,
        "cursorsAlive": [],
        "cursorsUnknown": [],
        "ok": 1.0,
    };
    Ok(Some(Reply::Body(reply.to_vec().unwrap_or_default())))
}
