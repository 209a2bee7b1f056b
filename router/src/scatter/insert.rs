//! `insert` into a sharded collection: each document goes to the shard that
//! owns its chunk. Ordered batches go shard run by shard run, in the
//! client's order, and stop at the first error; unordered batches go to all
//! shards at once. `writeErrors` indexes are mapped back to the client's
//! batch; `lsid`, `txnNumber` and `writeConcern` pass through.

use std::collections::BTreeMap;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use shardgate_config_store::ShardType;

use super::{rewrite, run_raw};
use crate::commands::{Reply, Request};
use crate::error::{Result, RouterError};
use crate::routing::CollectionRouting;
use crate::state::RouterState;

/// The outcome of one shard batch, indexes already mapped to the client's.
#[derive(Default)]
struct Outcome {
    n: i64,
    write_errors: Vec<Document>,
    write_concern_error: Option<Document>,
}

/// The documents of an `insert`, from the body or a document sequence.
fn documents<'a>(req: &'a Request<'_>) -> Vec<&'a RawDocument> {
    let mut docs: Vec<&RawDocument> = req
        .body
        .get_array("documents")
        .map(|a| {
            a.into_iter()
                .filter_map(|d| d.ok().and_then(|d| d.as_document()))
                .collect()
        })
        .unwrap_or_default();
    for seq in req
        .msg
        .sequences
        .iter()
        .filter(|s| s.identifier == "documents")
    {
        docs.extend(seq.iter());
    }
    docs
}

/// `insert` on a sharded collection.
pub(crate) async fn insert(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
) -> Result<Reply> {
    let docs = documents(req);
    let ordered = req.body.get_bool("ordered").unwrap_or(true);
    // Owner of each document, or the error that stops it.
    let mut owners: Vec<std::result::Result<String, Document>> = Vec::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        owners.push(match routing.pattern.extract_key(d) {
            Ok(key) => Ok(routing.chunks.chunk_for(&key).shard.clone()),
            Err(e) => {
                let (code, _) = e.code();
                Err(doc! {"index": i as i32, "code": code, "errmsg": e.to_string()})
            }
        });
    }
    let mut total = Outcome::default();
    if ordered {
        let mut start = 0;
        while start < docs.len() {
            let shard = match &owners[start] {
                Ok(s) => s.clone(),
                Err(e) => {
                    total.write_errors.push(e.clone());
                    break;
                }
            };
            let end = (start..docs.len())
                .find(|i| owners[*i].as_ref().ok() != Some(&shard))
                .unwrap_or(docs.len());
            let indexes: Vec<usize> = (start..end).collect();
            let out = send(state, req, &shard, &docs, &indexes).await?;
            let failed = !out.write_errors.is_empty();
            merge(&mut total, out);
            if failed {
                break;
            }
            start = end;
        }
    } else {
        let mut by_shard: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, owner) in owners.iter().enumerate() {
            match owner {
                Ok(s) => by_shard.entry(s.clone()).or_default().push(i),
                Err(e) => total.write_errors.push(e.clone()),
            }
        }
        let calls = by_shard
            .iter()
            .map(|(shard, idx)| send(state, req, shard, &docs, idx));
        for out in futures::future::join_all(calls).await {
            merge(&mut total, out?);
        }
        total
            .write_errors
            .sort_by_key(|e| e.get_i32("index").unwrap_or(i32::MAX));
    }
    let mut reply = doc! {"n": total.n as i32};
    if !total.write_errors.is_empty() {
        reply.insert("writeErrors", total.write_errors);
    }
    if let Some(wce) = total.write_concern_error {
        reply.insert("writeConcernError", wce);
    }
    reply.insert("ok", 1.0);
    Ok(Reply::Body(reply.to_vec().unwrap_or_default()))
}

fn merge(total: &mut Outcome, out: Outcome) {
    total.n += out.n;
    total.write_errors.extend(out.write_errors);
    if total.write_concern_error.is_none() {
        total.write_concern_error = out.write_concern_error;
    }
}

/// Sends the documents at `indexes` to `shard`.
async fn send(
    state: &RouterState,
    req: &Request<'_>,
    shard_id: &str,
    docs: &[&RawDocument],
    indexes: &[usize],
) -> Result<Outcome> {
    let shard: ShardType = state.placement.shard(shard_id)?;
    let mut batch = bson::RawArrayBuf::new();
    for i in indexes {
        batch.push(docs[*i].to_owned());
    }
    let mut cmd: RawDocumentBuf = rewrite(req.body, &["documents"], Document::new())?;
    cmd.append(bson::cstr!("documents"), batch);
    let reply = match run_raw(state, &shard, &cmd).await {
        Ok(r) => r,
        Err(e) => {
            let (code, _) = e.code();
            let errors = indexes
                .iter()
                .map(|i| doc! {"index": *i as i32, "code": code, "errmsg": e.to_string()})
                .collect();
            return Ok(Outcome {
                n: 0,
                write_errors: errors,
                write_concern_error: None,
            });
        }
    };
    let n = reply.get_i32("n").map(i64::from).unwrap_or(0);
    let mut write_errors = Vec::new();
    if let Ok(errors) = reply.get_array("writeErrors") {
        for e in errors
            .into_iter()
            .filter_map(|e| e.ok().and_then(|e| e.as_document()))
        {
            let mut e = Document::try_from(e).map_err(|e| RouterError::bad_value(e.to_string()))?;
            let local = e.get_i32("index").unwrap_or(0).max(0) as usize;
            let global = indexes.get(local).copied().unwrap_or(0);
            e.insert("index", Bson::Int32(global as i32));
            write_errors.push(e);
        }
    }
    let write_concern_error = reply
        .get_document("writeConcernError")
        .ok()
        .and_then(|d| Document::try_from(d).ok());
    Ok(Outcome {
        n,
        write_errors,
        write_concern_error,
    })
}
