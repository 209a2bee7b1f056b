//! `getMore` and `killCursors` on router cursors: a scatter cursor refills
//! its merge from the shard cursors behind it; a pass-through cursor goes
//! to its one shard; `killCursors` of ids the router does not hold on a
//! sharded collection answers them not found, as mongos does.

use std::time::Instant;

use bson::{doc, Bson, Document};

use super::{cursor_reply, int_field};
use crate::cursors::{kill, CursorKind};
use crate::error::Result;
use crate::session::Namespace;
use crate::session::{Reply, Request, Session};
use crate::state::RouterState;

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
            let reply = crate::shards::to_shard(state, &shard, req.msg).await?;
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
            let batch = m.next_batch(batch_size.unwrap_or(usize::MAX)).await;
            (batch, m.is_exhausted())
        }
        CursorKind::Stream(stream) => {
            let batch = stream.next_batch(batch_size.unwrap_or(usize::MAX)).await;
            (batch, stream.is_exhausted())
        }
        CursorKind::Buffered(buffer) => {
            let batch = crate::cursors::drain_batch(buffer, batch_size.unwrap_or(usize::MAX));
            (Ok(batch), buffer.is_empty())
        }
        // Change stream cursors are served by `change_streams::get_more`.
        CursorKind::ChangeStream(_) => return Ok(None),
    };
    let batch = match batch {
        Ok(b) => b,
        Err(e) => {
            kill(&mut cursor).await;
            drop(cursor);
            state.cursors.remove(id);
            return Err(e);
        }
    };
    let reply_id = if done {
        kill(&mut cursor).await;
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
                    let Namespace { db, coll } = Namespace::parse(&cursor.ns);
                    let cmd = doc! {"killCursors": coll, "cursors": [id], "$db": db};
                    let _ = crate::shards::run_on_shard(state, shard, cmd).await;
                }
                kill(&mut cursor).await;
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
