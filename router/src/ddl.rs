//! DDL and statistics on sharded collections: commands that change or
//! describe a collection on every shard holding it, answered in mongos's
//! shape (`raw` per shard; an error names the shard that failed).
//!
//! # Layout
//! - `lock`: the namespace's DDL lock in the store (a migration takes it
//!   too, so no DDL and migration interleave).
//! - this file: `collMod` (TTL, validator, hidden index…), `compact` and
//!   the plan-cache commands on every shard holding the collection;
//!   `convertToCapped`, refused as mongos does;
//!   sending a command to those shards and mongos's `raw` reply.
//! - `indexes`: `createIndexes`, `dropIndexes`, `listIndexes`.
//! - `data_size`: `dataSize`, summed over the owning shards (counted by
//!   an aggregation on a shard without the command).
//! - `stats`: `collStats`, `validate`, `dbStats`, and the `$collStats` and
//!   `$indexStats` stages (one document per shard, with `shard`).
//! - `consistency`: `checkMetadataConsistency` (indexes that differ).
//! - `rename`: `renameCollection` of a sharded collection; `drop`: `drop`
//!   of one, on every shard.
//! - `move_primary`: `movePrimary`, a database's unsharded collections to
//!   another shard under a database-wide critical section.

pub(crate) mod consistency;
pub(crate) mod data_size;
pub(crate) mod drop;
mod indexes;
pub(crate) mod lock;
pub(crate) mod move_collection;
pub(crate) mod move_primary;
pub(crate) mod rename;
pub(crate) mod reshard;
pub(crate) mod stats;

use bson::{doc, Bson, Document};
use shardgate_config_store::ShardType;
use shardgate_wire::OpMsg;

use crate::catalog_cache::routing::CollectionRouting;
use crate::error::{Result, RouterError};
use crate::session::{Reply, Request};
use crate::shards::target;
use crate::state::RouterState;

/// Runs a DDL or statistics command on the sharded collection `ns`;
/// `None` for a command that is not one.
pub(crate) async fn route(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    ns: &str,
) -> Result<Option<Reply>> {
    let reply = match req.name {
        "createIndexes" => indexes::create(state, req, routing, ns).await?,
        "dropIndexes" | "deleteIndexes" => indexes::drop(state, req, routing, ns).await?,
        "listIndexes" => indexes::list(state, req, routing).await?,
        "collMod" => body(raw_reply(&everywhere(state, req, routing, ns).await?))?,
        "convertToCapped" => {
            return Err(RouterError::command(
                20,
                "IllegalOperation",
                format!("You can't convertToCapped a sharded collection: {ns}"),
            ))
        }
        "cloneCollectionAsCapped" => {
            return Err(RouterError::command(
                20,
                "IllegalOperation",
                format!("You can't cloneCollectionAsCapped a sharded collection: {ns}"),
            ))
        }
        "reIndex" => {
            // mongos has no reIndex (mongod runs it only standalone).
            return Err(RouterError::command_not_found(req.name));
        }
        "compact"
        | "planCacheClear"
        | "planCacheClearFilters"
        | "planCacheSetFilter"
        | "setIndexCommitQuorum" => {
            let shards = targets(state, routing, req.db)?;
            body(raw_reply(
                &on_shards(state, shards, &passthrough(req)?).await?,
            ))?
        }
        "planCacheListFilters" => {
            // The shards hold the same filters (set on all of them): the
            // first one's, as mongos answers.
            let shards = targets(state, routing, req.db)?;
            let first = on_shards(state, shards, &passthrough(req)?).await?;
            match first.into_iter().next() {
                Some(r) if r.ok() => body(r.reply)?,
                Some(r) => body(raw_reply(&[r]))?,
                None => body(doc! {"filters": [], "ok": 1.0})?,
            }
        }
        "collStats" => stats::coll_stats(state, req, routing, ns).await?,
        "validate" => stats::validate(state, req, routing).await?,
        _ => return Ok(None),
    };
    Ok(Some(reply))
}

/// The shards a DDL of `routing`'s collection goes to: each owning a chunk,
/// and the database's primary, in shard-id order.
pub(crate) fn targets(
    state: &RouterState,
    routing: &CollectionRouting,
    db: &str,
) -> Result<Vec<ShardType>> {
    let mut ids: Vec<String> = routing
        .chunks
        .shards()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(d) = state.placement.cached(db) {
        if !ids.contains(&d.primary) {
            ids.push(d.primary);
        }
    }
    ids.sort();
    ids.iter().map(|id| state.placement.shard(id)).collect()
}

/// The client's command on every shard of [`targets`], under the
/// namespace's DDL lock.
pub(crate) async fn everywhere(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    ns: &str,
) -> Result<Vec<ShardReply>> {
    let held = lock::hold(state, ns, req.name).await?;
    let shards = targets(state, routing, req.db);
    let replies = match shards {
        Ok(shards) => on_shards(state, shards, &passthrough(req)?).await,
        Err(e) => Err(e),
    };
    held.release().await;
    replies
}

/// One shard's reply to a command sent to several; a shard that could not
/// be reached answers `{ok: 0}` with the error.
pub(crate) struct ShardReply {
    /// The shard.
    pub shard: ShardType,
    /// Its reply, `{ok: 0}` included.
    pub reply: Document,
}

impl ShardReply {
    /// Whether the shard answered `ok: 1`.
    pub(crate) fn ok(&self) -> bool {
        match self.reply.get("ok") {
            Some(Bson::Double(f)) => *f == 1.0,
            Some(Bson::Int32(n)) => *n == 1,
            Some(Bson::Int64(n)) => *n == 1,
            Some(Bson::Boolean(b)) => *b,
            _ => false,
        }
    }

    /// mongos's name for the shard in `raw`: its connection string.
    pub(crate) fn name(&self) -> String {
        format!("{}/{}", self.shard.id, self.shard.host)
    }
}

/// Sends `body` (with its `$db`) to each of `shards` at once.
pub(crate) async fn on_shards(
    state: &RouterState,
    shards: Vec<ShardType>,
    body: &Document,
) -> Result<Vec<ShardReply>> {
    let bytes = body
        .to_vec()
        .map_err(|e| RouterError::bad_value(e.to_string()))?;
    let msg = OpMsg::from_body(bytes);
    let sends = shards.iter().map(|s| state.shards.send(target(s), &msg));
    let replies = futures::future::join_all(sends).await;
    Ok(shards
        .into_iter()
        .zip(replies)
        .map(|(shard, reply)| {
            let reply = match reply.map(|m| Document::try_from(m.body())) {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => failure(1, "InternalError", &e.to_string()),
                Err(e) => failure(e.code().0, e.code().1, &e.to_string()),
            };
            ShardReply { shard, reply }
        })
        .collect())
}

fn failure(code: i32, code_name: &str, errmsg: &str) -> Document {
    doc! {"ok": 0.0, "errmsg": errmsg, "code": code, "codeName": code_name}
}

/// The client's command passed to the shards: its own fields, without the
/// ones the router answers for (`lsid` and `txnNumber` stay with the
/// router's session; cluster time is the router's).
pub(crate) fn passthrough(req: &Request<'_>) -> Result<Document> {
    let mut body =
        Document::try_from(req.body).map_err(|e| RouterError::bad_value(e.to_string()))?;
    for f in [
        "$clusterTime",
        "$readPreference",
        "lsid",
        "txnNumber",
        "autocommit",
        "$db",
    ] {
        body.remove(f);
    }
    body.insert("$db", req.db);
    Ok(body)
}

/// mongos's reply to a command sent to several shards: `raw` with each
/// shard's reply; when any failed, `ok: 0`, an `errmsg` naming each failing
/// shard, and the `code` they agree on.
pub(crate) fn raw_reply(replies: &[ShardReply]) -> Document {
    let mut raw = Document::new();
    let mut errors = Vec::new();
    let mut code: Option<(i32, String)> = None;
    let mut agree = true;
    for r in replies {
        let mut reply = r.reply.clone();
        for f in [
            "$clusterTime",
            "operationTime",
            "$gleStats",
            "lastCommittedOpTime",
        ] {
            reply.remove(f);
        }
        raw.insert(r.name(), reply);
        if !r.ok() {
            let c = r.reply.get_i32("code").unwrap_or(1);
            let name = r
                .reply
                .get_str("codeName")
                .unwrap_or("UnknownError")
                .to_owned();
            errors.push(format!(
                "shard {} ({}): {}",
                r.shard.id,
                r.shard.host,
                r.reply.get_str("errmsg").unwrap_or("unknown error")
            ));
            match &code {
                None => code = Some((c, name)),
                Some((first, _)) if *first != c => agree = false,
                _ => {}
            }
        }
    }
    let mut out = doc! {"raw": raw};
    match code {
        None => {
            out.insert("ok", 1.0);
        }
        Some((c, name)) => {
            out.insert("ok", 0.0);
            out.insert("errmsg", errors.join("; "));
            if agree {
                out.insert("code", c);
                out.insert("codeName", name);
            }
        }
    }
    out
}

/// A document as the reply body.
pub(crate) fn body(d: Document) -> Result<Reply> {
    d.to_vec()
        .map(Reply::Body)
        .map_err(|e| RouterError::command(1, "InternalError", format!("reply encoding: {e}")))
}

/// A number as mongos appends a sum: an int when it fits, else a long.
pub(crate) fn long(n: i64) -> Bson {
    i32::try_from(n).map_or(Bson::Int64(n), Bson::Int32)
}

/// The rest of a pipeline (`stages`), run on `shard` over `docs` fed with
/// `$documents` (each as a literal: a field such as a `$currentOp`
/// entry's `command` may hold `$`-prefixed names a shard would otherwise
/// read as expressions), with the client's `cursor` options; the shard's
/// reply is the client's.
pub(crate) async fn rest_on_shard(
    state: &RouterState,
    shard: &ShardType,
    req: &Request<'_>,
    db: &str,
    docs: Vec<Bson>,
    stages: &[Document],
) -> Result<Reply> {
    let literals: Vec<Bson> = docs
        .into_iter()
        .map(|d| Bson::Document(doc! {"$literal": d}))
        .collect();
    let mut pipeline = vec![Bson::Document(doc! {"$documents": literals})];
    pipeline.extend(stages.iter().cloned().map(Bson::Document));
    let cursor = req
        .body
        .get_document("cursor")
        .ok()
        .and_then(|c| Document::try_from(c).ok())
        .unwrap_or_default();
    let command = doc! {"aggregate": 1, "pipeline": pipeline, "cursor": cursor, "$db": db};
    let bytes = command
        .to_vec()
        .map_err(|e| RouterError::bad_value(e.to_string()))?;
    let msg = OpMsg::from_body(bytes);
    Ok(Reply::Msg(
        crate::shards::to_shard(state, shard, &msg).await?,
    ))
}
