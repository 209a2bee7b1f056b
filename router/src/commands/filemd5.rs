//! `filemd5`: the MD5 of a GridFS file's chunks (`<root>.chunks` with
//! `files_id` equal to the command's value, in `n` order), answered
//! `{numChunks, md5}` as mongod does. An unsharded chunks collection's
//! primary answers it when it can; the router reads the chunks and hashes
//! them itself when the collection is sharded (its chunks span shards) or
//! the primary has no `filemd5`.

use std::sync::Arc;

use bson::{doc, Bson, Document};
use md5::{Digest, Md5};

use crate::error::{Result, RouterError};
use crate::read::pipeline::{self, Ctx};
use crate::session::{Reply, Request};
use crate::state::RouterState;

/// `filemd5: <files_id>, root: <prefix>` on `req.db`.
pub(crate) async fn filemd5(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Reply> {
    let root = match req.body.get("root") {
        Ok(Some(v)) => v
            .as_str()
            .ok_or_else(|| RouterError::command(14, "TypeMismatch", "'root' must be a string"))?,
        _ => "fs",
    };
    let coll = format!("{root}.chunks");
    if state.routing.get(&format!("{}.{coll}", req.db)).is_none() {
        let reply = crate::shards::to_primary(state, req.db, req.msg).await?;
        if reply.body().get_i32("code").ok() != Some(59) {
            return Ok(Reply::Msg(reply));
        }
    }
    let id = req
        .body
        .get("filemd5")
        .ok()
        .flatten()
        .and_then(|v| Bson::try_from(v).ok())
        .ok_or_else(|| RouterError::bad_value("filemd5 needs a files_id"))?;
    let stages = vec![
        doc! {"$match": {"files_id": id}},
        doc! {"$sort": {"n": 1}},
        doc! {"$project": {"_id": 0, "n": 1, "data": 1}},
    ];
    let ctx = Ctx::plain(state, req.db);
    let chunks = pipeline::drain(pipeline::open(&ctx, Some(coll), stages).await?).await?;
    let mut md5 = Md5::new();
    for (expected, raw) in chunks.iter().enumerate() {
        let chunk =
            Document::try_from(raw.as_ref()).map_err(|e| RouterError::bad_value(e.to_string()))?;
        let n = chunk.get("n").and_then(|v| {
            v.as_i64()
                .or(v.as_i32().map(i64::from))
                .or(v.as_f64().map(|f| f as i64))
        });
        if n != Some(expected as i64) {
            return Err(RouterError::command(
                10040,
                "Location10040",
                "chunks out of order",
            ));
        }
        match chunk.get("data") {
            Some(Bson::Binary(b)) => md5.update(&b.bytes),
            _ => {
                return Err(RouterError::command(
                    10041,
                    "Location10041",
                    "a chunk has no binary data",
                ))
            }
        }
    }
    let hex: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let body = doc! {"numChunks": chunks.len() as i32, "md5": hex, "ok": 1.0};
    body.to_vec()
        .map(Reply::Body)
        .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))
}
