//! Change streams through the router: `watch()` on a collection (sharded
//! or not), a database, or the whole cluster (`allChangesForCluster` on
//! `admin`) opens a `$changeStream` on every shard that can hold the
//! data and merges the events by cluster time, as mongos does.
//!
//! # Layout
//! - `feed`: one shard's stream, its unreleased events and high-water mark.
//! - `merge`: [`merge::ChangeStreamCursor`], the merge by cluster time
//!   (shard id breaking ties), invalidation on drop and rename.
//! - `token`: the router's resume token, which wraps every shard's token.
//!
//! Migration writes never reach a client: the balancer runs them under
//! tagged sessions and every shard stream drops their events first thing
//! (`shardgate_shard_client::migration_writes` says why this way). A shard
//! that gains a chunk of a watched collection joins the stream at the
//! stream's origin, so nothing it holds is missed.

pub(crate) mod ddl_events;
mod feed;
mod merge;
mod token;

use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use shardgate_config_store::ShardType;

use crate::cursors::{CursorKind, RouterCursor};
use crate::error::{Result, RouterError};
use crate::session::{Reply, Request, Session};
use crate::state::RouterState;
use feed::{Begin, Feed};
use merge::{ChangeStreamCursor, Scope, StreamSpec, DEFAULT_AWAIT};
use token::RouterToken;

/// Batch size of a first batch when the client names none.
const DEFAULT_BATCH: usize = 101;

/// Whether `req` is an `aggregate` with a `$changeStream` stage anywhere
/// (one not first is still sent to a shard, for the shard's error).
pub(crate) fn is_change_stream(req: &Request<'_>) -> bool {
    req.name == "aggregate"
        && req.body.get_array("pipeline").is_ok_and(|p| {
            p.into_iter().flatten().any(|s| {
                s.as_document()
                    .is_some_and(|d| d.get("$changeStream").ok().flatten().is_some())
            })
        })
}

/// What a client's `aggregate` asks for, checked.
struct Request2 {
    spec: StreamSpec,
    start: ClientStart,
    batch: usize,
}

/// Where the client asked the stream to start.
enum ClientStart {
    Now,
    At(Timestamp),
    Token(RouterToken, bool),
}

/// Opens a change stream; a request the router cannot read as one goes to
/// a shard, which answers its error.
pub(crate) async fn open(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Reply> {
    let Some(parsed) = parse(req)? else {
        return forward(state, session, req).await;
    };
    state.cursors.check_limit(
        session.connection_id,
        state.config.limits.max_cursors_per_connection,
    )?;
    let mut shards = target_shards(state, &parsed.spec.scope, true).await?;
    add_past_holders(state, &parsed.start, &mut shards);
    let (origin, starts) = match &parsed.start {
        ClientStart::Now => (None, vec![Begin::Now; shards.len()]),
        ClientStart::At(ts) => (Some(*ts), vec![Begin::At(*ts); shards.len()]),
        ClientStart::Token(t, after) => (Some(t.origin), token_starts(t, *after, &shards)),
    };
    let opens = shards.into_iter().zip(starts).map(|(shard, start)| {
        let client = state.shards.clone();
        let spec = parsed.spec.feed_spec();
        async move { Feed::open(client, shard, &spec, &start).await }
    });
    let mut feeds = Vec::new();
    let mut failure = None;
    for opened in futures::future::join_all(opens).await {
        match opened {
            Ok(f) => feeds.push(f),
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        for f in &mut feeds {
            f.kill().await;
        }
        return Err(e);
    }
    let origin = origin.unwrap_or_else(|| {
        feeds
            .iter()
            .map(|f| f.mark)
            .min()
            .unwrap_or_else(crate::session::now_ts)
    });
    let ns = namespace(&parsed.spec.scope);
    let mut cursor = ChangeStreamCursor::new(parsed.spec, feeds, origin);
    let first = cursor.drain(parsed.batch);
    let token = cursor.post_batch_token();
    let id = match cursor.finished {
        true => {
            cursor.kill_all().await;
            0
        }
        false => state.cursors.insert(
            None,
            RouterCursor {
                kind: CursorKind::ChangeStream(Box::new(cursor)),
                ns: ns.clone(),
                connection: session.connection_id,
                last_used: std::time::Instant::now(),
            },
        ),
    };
    reply(id, &ns, "firstBatch", first, token)
}

/// Adds the shards that may have held the data since a start in the past:
/// those the resume token names (a chunk may have left them since), every
/// shard for a start at a cluster time (the router does not know who owned
/// what then; events of non-owners are only migration writes, dropped).
fn add_past_holders(state: &RouterState, start: &ClientStart, shards: &mut Vec<ShardType>) {
    let past: Vec<ShardType> = match start {
        ClientStart::Now => return,
        ClientStart::At(_) => state.placement.shards(),
        ClientStart::Token(t, _) => t
            .shards
            .keys()
            .filter_map(|id| state.placement.shard(id).ok())
            .collect(),
    };
    for s in past {
        if !shards.iter().any(|have| have.id == s.id) {
            shards.push(s);
        }
    }
}

/// Each shard's start for a client's resume token: after its own token,
/// or where a joining shard starts ([`merge::join_time`]) when the token
/// predates the shard joining.
fn token_starts(t: &RouterToken, after: bool, shards: &[ShardType]) -> Vec<Begin> {
    shards
        .iter()
        .map(|s| match t.shards.get(&s.id) {
            Some(k) if after => Begin::StartAfter(k.clone()),
            Some(k) => Begin::ResumeAfter(k.clone()),
            None => Begin::At(merge::join_time(t.origin)),
        })
        .collect()
}

/// Reads the client's `aggregate`; `None` when the shards should judge it
/// (a `$changeStream` not first, a malformed or ambiguous spec).
fn parse(req: &Request<'_>) -> Result<Option<Request2>> {
    let body = Document::try_from(req.body).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let Ok(pipeline) = body.get_array("pipeline") else {
        return Ok(None);
    };
    let Some(Ok(first)) = pipeline.first().map(|s| s.as_document().ok_or(())) else {
        return Ok(None);
    };
    let Ok(mut options) = first.get_document("$changeStream").cloned() else {
        return Ok(None);
    };
    if first.len() != 1 {
        return Ok(None);
    }
    let cluster = options.get_bool("allChangesForCluster").unwrap_or(false);
    let scope = match (body.get("aggregate"), req.db, cluster) {
        (Some(v), "admin", true) if is_one(v) => Scope::Cluster,
        (Some(Bson::String(coll)), db, false) if db != "admin" => {
            Scope::Collection(db.into(), coll.clone())
        }
        (Some(v), db, false) if db != "admin" && is_one(v) => Scope::Database(db.into()),
        (Some(_), _, true) => return Err(invalid_namespace(
            "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database, and with no collection name",
        )),
        (Some(_), "admin", false) => return Err(invalid_namespace(
            "$changeStream may not be opened on the internal admin database",
        )),
        _ => return Ok(None),
    };
    let resume = options.remove("resumeAfter");
    let start_after = options.remove("startAfter");
    let at = options.remove("startAtOperationTime");
    let start = match (resume, start_after, at) {
        (None, None, None) => ClientStart::Now,
        (None, None, Some(Bson::Timestamp(ts))) => ClientStart::At(ts),
        (Some(Bson::Document(t)), None, None) => {
            ClientStart::Token(RouterToken::decode(&t)?, false)
        }
        (None, Some(Bson::Document(t)), None) => ClientStart::Token(RouterToken::decode(&t)?, true),
        _ => return Ok(None),
    };
    let mut passed = Document::new();
    for k in ["collation", "comment", "readConcern"] {
        if let Some(v) = body.get(k) {
            passed.insert(k, v.clone());
        }
    }
    let batch = body
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get("batchSize"))
        .map(|v| crate::session::int_of(Some(v)).max(0) as usize)
        .unwrap_or(DEFAULT_BATCH);
    let rest = pipeline.get(1..).unwrap_or_default().to_vec();
    let spec = StreamSpec {
        scope,
        options,
        rest,
        passed,
    };
    Ok(Some(Request2 { spec, start, batch }))
}

/// InvalidNamespace (73), as mongod answers a stream on the wrong database.
fn invalid_namespace(message: &str) -> RouterError {
    RouterError::command(73, "InvalidNamespace", message)
}

fn is_one(v: &Bson) -> bool {
    matches!(v, Bson::Int32(1) | Bson::Int64(1)) || v.as_f64() == Some(1.0)
}

/// Sends the client's request to one shard as it is (for its error); a
/// cursor the shard opens anyway is recorded so `getMore` reaches it.
async fn forward(state: &Arc<RouterState>, session: &Session, req: &Request<'_>) -> Result<Reply> {
    let shard = match req.db {
        "admin" => state.placement.shards().into_iter().next().ok_or_else(|| {
            RouterError::command(
                70,
                "ShardNotFound",
                "no shards found; add one with addShard first",
            )
        })?,
        db => {
            let choose = || crate::shards::least_loaded_shard(state);
            let entry = state
                .placement
                .get_or_create(&state.catalog, db, choose)
                .await?;
            state.placement.shard(&entry.primary)?
        }
    };
    let reply = crate::shards::to_shard(state, &shard, req.msg).await?;
    let cursor = reply.body().get_document("cursor").ok();
    let id = cursor.and_then(|c| c.get_i64("id").ok()).unwrap_or(0);
    let ns = cursor
        .and_then(|c| c.get_str("ns").ok())
        .unwrap_or_default();
    if id != 0 {
        let entry = RouterCursor {
            kind: CursorKind::PassThrough(shard),
            ns: ns.to_owned(),
            connection: session.connection_id,
            last_used: std::time::Instant::now(),
        };
        state.cursors.insert(Some(id), entry);
    }
    Ok(Reply::Msg(reply))
}

/// The shards that can hold what `scope` watches: a sharded collection's
/// chunk owners, an unsharded one's primary, every shard for a database
/// or the cluster. `create` places a new database (at open).
async fn target_shards(
    state: &Arc<RouterState>,
    scope: &Scope,
    create: bool,
) -> Result<Vec<ShardType>> {
    let Scope::Collection(db, coll) = scope else {
        return Ok(state.placement.shards());
    };
    let ids: Vec<String> = match state.routing.get(&format!("{db}.{coll}")) {
        Some(routing) => routing
            .chunks
            .shards()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        None if create => {
            let choose = || crate::shards::least_loaded_shard(state);
            vec![
                state
                    .placement
                    .get_or_create(&state.catalog, db, choose)
                    .await?
                    .primary,
            ]
        }
        None => state
            .placement
            .cached(db)
            .map(|d| d.primary)
            .into_iter()
            .collect(),
    };
    ids.iter().map(|id| state.placement.shard(id)).collect()
}

/// The `ns` of the cursor.
fn namespace(scope: &Scope) -> String {
    match scope {
        Scope::Collection(db, coll) => format!("{db}.{coll}"),
        Scope::Database(db) => format!("{db}.$cmd.aggregate"),
        Scope::Cluster => "admin.$cmd.aggregate".to_owned(),
    }
}

/// A change stream cursor reply, with its `postBatchResumeToken`.
fn reply(id: i64, ns: &str, field: &str, docs: Vec<Document>, token: Document) -> Result<Reply> {
    let cursor = doc! {field: docs, "postBatchResumeToken": token, "id": id, "ns": ns};
    let body = doc! {"cursor": cursor, "ok": 1.0};
    let raw = RawDocumentBuf::try_from(&body)
        .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?;
    Ok(Reply::Body(raw.into_bytes()))
}

/// `getMore` on a change stream cursor; `None` for any other cursor.
pub(crate) async fn get_more(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Option<Reply>> {
    let id = crate::session::number_field(req.body, "getMore").unwrap_or(0);
    let Some(entry) = state.cursors.get(id) else {
        return Ok(None);
    };
    let mut guard = entry.lock().await;
    let CursorKind::ChangeStream(stream) = &mut guard.kind else {
        return Ok(None);
    };
    let Some(cursor) = stream.as_any().downcast_mut::<ChangeStreamCursor>() else {
        return Ok(None);
    };
    let max_docs = match crate::session::number_field(req.body, "batchSize") {
        Some(n) if n > 0 => n as usize,
        _ => usize::MAX,
    };
    let wait = match crate::session::number_field(req.body, "maxTimeMS") {
        Some(ms) if ms > 0 => Duration::from_millis(ms as u64),
        _ => DEFAULT_AWAIT,
    };
    let outcome = match join_new_shards(state, cursor).await {
        Ok(()) => cursor.next_batch(max_docs, wait).await,
        Err(e) => Err(e),
    };
    let batch = match outcome {
        Ok(b) => b,
        Err(e) => {
            cursor.kill_all().await;
            drop(guard);
            state.cursors.remove(id);
            return Err(e);
        }
    };
    let token = cursor.post_batch_token();
    let finished = cursor.finished;
    let ns = guard.ns.clone();
    guard.last_used = std::time::Instant::now();
    guard.connection = session.connection_id;
    let reply_id = match finished {
        true => {
            crate::cursors::kill(&mut guard).await;
            drop(guard);
            state.cursors.remove(id);
            0
        }
        false => id,
    };
    reply(reply_id, &ns, "nextBatch", batch, token).map(Some)
}

/// Opens feeds on shards that joined what the stream watches (a chunk
/// moved to a shard new to the collection, a shard added to the cluster).
async fn join_new_shards(state: &Arc<RouterState>, cursor: &mut ChangeStreamCursor) -> Result<()> {
    let wanted = target_shards(state, &cursor.spec.scope, false).await?;
    for shard in wanted {
        if cursor.feeds.iter().any(|f| f.shard.id == shard.id) {
            continue;
        }
        tracing::debug!(shard = %shard.id, "a shard joins a change stream");
        let start = cursor.join_start();
        let spec = cursor.spec.feed_spec();
        let feed = Feed::open(state.shards.clone(), shard, &spec, &start).await?;
        cursor.add_feed(feed);
    }
    Ok(())
}
