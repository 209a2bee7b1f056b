//! Commands: the registry of every command the router knows (`registry`,
//! `table`), dispatch through it, and the router's own command handlers;
//! a command the router does not answer goes where its namespace lives.

pub(crate) mod admin;
mod bulk_write;
pub(crate) mod chunks;
pub(crate) mod cluster;
mod cluster_params;
mod data_distribution;
mod diagnostic;
mod filemd5;

mod analyze_shard_key;
mod handshake;
mod host;
mod refine_shard_key;
pub(crate) mod registry;
mod rw_concern;
mod search;
pub(crate) mod shard_collection;
pub(crate) mod sharding;
mod table;
mod table_keys;
mod zones;

use std::sync::Arc;

use bson::{Document, RawDocument};
use shardgate_wire::OpMsg;

use crate::catalog_cache::placement::validate_db_name;
use crate::error::{Result, RouterError};
use crate::request::CommandInfo;
use crate::retry_cache::Claim;
use crate::state::RouterState;
use registry::{CommandSpec, Run};

pub(crate) use crate::session::{Reply, Request, Session};
pub(crate) use handshake::hello;
pub(crate) use registry::Registry;

/// The registry of every command the router knows: a constant table,
/// built once.
pub(crate) fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Registry::new(table::specs()))
}

/// Runs one OP_MSG command and returns the reply; errors become
/// MongoDB-shaped `{ok: 0}` replies. The flag says the body was not valid
/// BSON, after which the connection is closed as for any malformed frame.
pub(crate) async fn dispatch(
    state: &Arc<RouterState>,
    session: &mut Session,
    msg: &OpMsg,
) -> (Reply, bool) {
    match run(state, session, msg).await {
        Ok(reply) => (reply, false),
        Err(e) => {
            tracing::debug!(error = %e, blame = ?e.blame(), "command failed");
            let malformed = matches!(e, RouterError::Wire(_));
            (Reply::Body(e.to_reply()), malformed)
        }
    }
}

async fn run(state: &Arc<RouterState>, session: &mut Session, msg: &OpMsg) -> Result<Reply> {
    match rw_concern::apply(state, msg)? {
        Some(with_defaults) => run_msg(state, session, &with_defaults).await,
        None => run_msg(state, session, msg).await,
    }
}

async fn run_msg(state: &Arc<RouterState>, session: &mut Session, msg: &OpMsg) -> Result<Reply> {
    let info = CommandInfo::parse(msg)?;
    let (name, db, body) = (info.name, info.db, info.body);
    state.stats.count(name);
    let collection = match name {
        "getMore" => body.get_str("collection").ok(),
        _ => info.collection,
    };
    let req = Request {
        name,
        db,
        collection,
        body,
        msg,
    };
    let index = registry().index_of(name);
    let spec = index.and_then(|i| registry().all().get(i)).copied();
    let user = session
        .auth
        .users
        .first()
        .map(|u| format!("{}@{}", u.user, u.db));
    state.local_sessions.touch(body, user.as_deref());
    let started = std::time::Instant::now();
    // Boxed: the command's future is large (in debug builds, tens of KB),
    // and `traced` would otherwise nest copies of it in this one.
    let (reply, trace) =
        crate::metrics::trace::traced(Box::pin(checked(state, session, &req, spec))).await;
    let took = started.elapsed();
    let (targeting, docs) = crate::metrics::record(
        &state.metrics,
        index,
        (db, collection),
        took,
        &trace,
        reply.as_ref().ok(),
    );
    let done = crate::slow_log::Finished {
        took,
        trace: &trace,
        docs,
        targeting,
    };
    crate::slow_log::check(state, &req, &done);
    reply
}

/// Authorizes the command, applies the router's fail points, runs it.
async fn checked(
    state: &Arc<RouterState>,
    session: &mut Session,
    req: &Request<'_>,
    spec: Option<CommandSpec>,
) -> Result<Reply> {
    let (name, body) = (req.name, req.body);
    // A command the router does not know needs every action on the cluster.
    let need = spec.map_or(crate::auth::Need::AnyAction, |s| s.privilege.need(req));
    crate::auth::authorize(state, session, req, need).await?;
    let ctx = crate::labels::Context::of(name, body);
    let failing = match state.config.enable_test_commands {
        true => fail_point(state, session, req, ctx).await,
        false => None,
    };
    let mut reply = match failing {
        // The fail point answers before the command runs: a transaction
        // it fails a statement of stays open, as on mongod and mongos (a
        // driver may run the statement again).
        Some(Failing::Answer(reply)) => reply,
        Some(Failing::After(action)) => match in_session(state, session, req, spec).await {
            Ok(reply) => with_write_concern_error(reply, &action),
            Err(e) => error_reply(e, ctx),
        },
        None => match in_session(state, session, req, spec).await {
            Ok(reply) => reply,
            Err(e) => error_reply(e, ctx),
        },
    };
    if let Reply::Body(body) = &mut reply {
        state.clock.stamp(body);
    }
    Ok(reply)
}

/// Runs the command as an operation of the router (listed by
/// `currentOp`, interruptible by `killOp`) and, inside a transaction, as
/// its statement.
async fn in_session(
    state: &Arc<RouterState>,
    session: &mut Session,
    req: &Request<'_>,
    spec: Option<CommandSpec>,
) -> Result<Reply> {
    let txn = crate::txn::statement(state, req)?;
    let mut running =
        state
            .operations
            .begin(&session.slot, (req.name, req.db, req.collection), req.body);
    let outcome = tokio::select! {
        biased;
        // Boxed, as `checked` is in `run_msg`: passed by value, a large
        // future is copied into each layer.
        reply = in_transaction(txn.clone(), Box::pin(authorized(state, session, req.msg, req, spec))) => reply,
        e = running.interrupted() => Err(e),
    };
    match &txn {
        Some(t) => Ok(crate::txn::after(state, t, outcome).await),
        None => outcome,
    }
}

/// What the `failCommand` fail point does to a command.
enum Failing {
    /// This reply instead (an error, or nothing when the connection closes).
    Answer(Reply),
    /// Run it, then add a write concern error.
    After(crate::fail_points::Action),
}

async fn fail_point(
    state: &RouterState,
    session: &mut Session,
    req: &Request<'_>,
    ctx: crate::labels::Context,
) -> Option<Failing> {
    // A handshake names its application itself (the connection has no
    // name yet), and mongod matches the fail point's `appName` on it.
    let app = session.slot.app_name().or_else(|| {
        req.body
            .get_document("client")
            .and_then(|c| c.get_document("application"))
            .and_then(|a| a.get_str("name"))
            .ok()
            .map(str::to_owned)
    });
    let action = state.fail_points.check(req.name, app.as_deref(), ctx)?;
    if let Some(d) = action.block {
        tokio::time::sleep(d).await;
    }
    if action.close {
        session.close_now = true;
        abort_open_transaction(state, req).await;
        return Some(Failing::Answer(Reply::Body(Vec::new())));
    }
    if let Some(e) = &action.error {
        return Some(Failing::Answer(Reply::Body(e.to_vec().unwrap_or_default())));
    }
    action
        .write_concern_error
        .is_some()
        .then_some(Failing::After(action))
}

/// The open transaction `req` is a statement of, aborted: a connection the
/// fail point closes mid-transaction ends it, as mongos aborts a
/// transaction whose statement failed with the connection (its next
/// `commitTransaction` is NoSuchTransaction).
async fn abort_open_transaction(state: &RouterState, req: &Request<'_>) {
    if req.body.get_bool("autocommit").ok() != Some(false)
        || matches!(req.name, "commitTransaction" | "abortTransaction")
    {
        return;
    }
    let Ok((lsid, txn_number)) = crate::txn::ids(req) else {
        return;
    };
    let key = crate::txn::lsid_key(lsid);
    let Some(txn) = state.transactions.get(&key, txn_number) else {
        return;
    };
    if txn.state() == crate::txn::TxnState::Open {
        crate::txn::abort_all(state, &txn).await;
        txn.set_state(crate::txn::TxnState::Aborted);
        state.transactions.counters.aborted();
    }
}

/// A successful reply with the fail point's `writeConcernError` (and the
/// labels mongod adds) appended.
fn with_write_concern_error(reply: Reply, action: &crate::fail_points::Action) -> Reply {
    let Some(wce) = &action.write_concern_error else {
        return reply;
    };
    let mut extra = bson::doc! {"writeConcernError": wce.clone()};
    if !action.labels.is_empty() {
        extra.insert("errorLabels", action.labels.clone());
    }
    crate::txn::append(reply, &extra)
}

/// An error as the reply mongod would give in `ctx`: its labels (see
/// [`crate::labels`]), then the cluster time like any reply.
fn error_reply(e: RouterError, ctx: crate::labels::Context) -> Reply {
    let mut reply = bson::Document::from_reader(&e.to_reply()[..]).unwrap_or_default();
    crate::labels::relabel(&mut reply, ctx);
    Reply::Body(reply.to_vec().unwrap_or_default())
}

/// Runs `f` as a statement of `txn`, if there is one.
async fn in_transaction<F: std::future::Future>(
    txn: Option<Arc<crate::txn::Txn>>,
    f: F,
) -> F::Output {
    match txn {
        Some(t) => crate::txn::run(t, f).await,
        None => f.await,
    }
}

/// Runs a command the session may run: a retryable write through the
/// retry cache, anything else at once.
async fn authorized(
    state: &Arc<RouterState>,
    session: &mut Session,
    msg: &OpMsg,
    req: &Request<'_>,
    spec: Option<CommandSpec>,
) -> Result<Reply> {
    let retryable = spec.is_some_and(|s| s.retryable);
    if !retryable {
        return execute(state, session, req, spec.as_ref()).await;
    }
    // A retryable write: replay a lost reply instead of writing again.
    let ticket = match state.retries.claim(msg).await {
        Claim::Untracked => None,
        Claim::Replay(reply) => {
            state
                .metrics
                .retry_replays
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Reply::Body(reply));
        }
        Claim::Run(ticket) => Some(ticket),
    };
    let result = execute(state, session, req, spec.as_ref()).await;
    if let Some(ticket) = ticket {
        let body = match &result {
            Ok(Reply::Body(b)) => RawDocument::from_bytes(b).ok(),
            Ok(Reply::Msg(m)) => Some(m.body()),
            Err(_) => None,
        };
        // A reply with a write concern error is not final: a retry runs
        // again (the shards recognise the statements they applied) and
        // awaits the write concern anew.
        let recorded = body
            .filter(|b| reply_ok(b) && b.get_document("writeConcernError").is_err())
            .map(|b| b.as_bytes());
        state.retries.finish(ticket, recorded);
    }
    result
}

/// Runs one command: its handler, or where its namespace lives.
async fn execute(
    state: &Arc<RouterState>,
    session: &mut Session,
    req: &Request<'_>,
    spec: Option<&CommandSpec>,
) -> Result<Reply> {
    match spec.map(|s| s.run) {
        Some(Run::Router(handler)) => handler(state, session, req).await,
        Some(Run::Namespace) | None => route(state, session, req).await,
    }
}

/// Routes a command the router does not answer itself.
async fn route(state: &Arc<RouterState>, session: &Session, req: &Request<'_>) -> Result<Reply> {
    match req.db {
        "admin" => {
            // Router cursors on admin: `bulkWrite` results, `$currentOp`.
            if let Some(reply) = sharding::router_cursor(state, session, req).await? {
                return Ok(reply);
            }
            match req.name {
                "getMore" => {
                    return Err(RouterError::command(
                        43,
                        "CursorNotFound",
                        "cursor id not found",
                    ))
                }
                "killCursors" => return Ok(crate::read::get_more::kill_unknown_cursors(req)),
                _ => {}
            }
            if req.name == "aggregate" {
                if crate::change_streams::is_change_stream(req) {
                    return crate::change_streams::open(state, session, req).await;
                }
                if let Some(reply) = host::current_op_stage(state, req).await? {
                    return Ok(reply);
                }
                if let Some(reply) = data_distribution::stage(state, session, req).await? {
                    return Ok(reply);
                }
                return host::admin_aggregate(state, session, req).await;
            }
            if req.name == "renameCollection" {
                return rename_collection(state, req).await;
            }
            to_named_primary(state, req).await
        }
        "config" => {
            // Cursors over the view (a find or aggregate past one batch).
            if let Some(reply) = sharding::router_cursor(state, session, req).await? {
                return Ok(reply);
            }
            crate::config_view::run(state, session, req).await
        }
        "local" => Err(RouterError::command(
            20,
            "IllegalOperation",
            format!(
                "the 'local' database is per shard; connect to a shard for '{}'",
                req.name
            ),
        )),
        db => route_db(state, session, req, db).await,
    }
}

/// `renameCollection`: of a sharded collection by the router, else by the
/// database's primary; a query analyzer of the old name is forgotten.
async fn rename_collection(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Reply> {
    let reply = match crate::ddl::rename::rename(state, req).await {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => to_named_primary(state, req).await,
        Err(e) => Err(e),
    };
    if let Ok(from) = req.body.get_str("renameCollection") {
        crate::query_analysis::forget(state, from, &reply).await;
    }
    reply
}

/// Admin commands that name a namespace (`renameCollection`,
/// `cloneCollectionAsCapped`…) go to that database's primary.
async fn to_named_primary(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Reply> {
    let target = req
        .body
        .iter()
        .next()
        .and_then(|e| e.ok())
        .and_then(|(_, v)| v.as_str())
        .and_then(|ns| ns.split_once('.'))
        .map(|(db, _)| db);
    match target {
        Some(db) if validate_db_name(db).is_ok() && !is_internal_db(db) => {
            crate::shards::to_primary(state, db, req.msg)
                .await
                .map(Reply::Msg)
        }
        _ => Err(RouterError::command_not_found(req.name)),
    }
}

/// Routes a command on a user database: a change stream, a sharded
/// collection, a view over one, a pipeline reading one, else the primary.
async fn route_db(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
    db: &str,
) -> Result<Reply> {
    validate_db_name(db)?;
    // `watch()` on a collection (sharded or not) or a database.
    if crate::change_streams::is_change_stream(req) {
        return crate::change_streams::open(state, session, req).await;
    }
    let routed = route_collection(state, session, req, db);
    let reply = crate::query_analysis::sampled(state, req, db, routed).await;
    match (req.name, req.body.get_str(req.name)) {
        ("drop", Ok(coll)) => {
            crate::query_analysis::forget(state, &format!("{db}.{coll}"), &reply).await
        }
        ("dropDatabase", _) => {
            crate::query_analysis::forget(state, &format!("{db}."), &reply).await
        }
        _ => {}
    }
    reply
}

/// [`route_db`] past change streams (what query sampling wraps).
async fn route_collection(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
    db: &str,
) -> Result<Reply> {
    if let Some(refused) = search::refusal(req) {
        return Err(refused);
    }
    if req.name == "filemd5" {
        return filemd5::filemd5(state, req).await;
    }
    if matches!(req.name, "mapReduce" | "mapreduce") {
        // Boxed: its state is large, and futures nest in every request's.
        return Box::pin(crate::read::map_reduce::map_reduce(state, session, req)).await;
    }
    if let Some(reply) = sharding::route_sharded(state, session, req).await? {
        return Ok(reply);
    }
    if let Some(reply) = crate::read::views::run(state, session, req).await? {
        return Ok(reply);
    }
    if let Some(reply) = crate::read::pipeline::aggregate_unsharded(state, session, req).await? {
        return Ok(reply);
    }
    let wait = std::time::Duration::from_millis(state.config.critical_section_wait_ms);
    let _entered = state.write_gates.enter_db(db, wait).await?;
    crate::shards::to_primary(state, db, req.msg)
        .await
        .map(Reply::Msg)
}

fn is_internal_db(db: &str) -> bool {
    matches!(db, "admin" | "config" | "local")
}

/// A success reply: the fields of `d` plus `ok: 1`.
fn ok(mut d: Document) -> Result<Reply> {
    d.insert("ok", 1.0);
    d.to_vec()
        .map(Reply::Body)
        .map_err(|e| RouterError::command(1, "InternalError", format!("reply encoding: {e}")))
}

pub(crate) use crate::session::number_field;

pub(crate) use shardgate_shard_client::reply_ok;

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's future stays small: the large parts are boxed where they
    /// are made. Passed by value through `traced` and `in_transaction`, a
    /// command's future (tens of KB in a debug build) was copied into each
    /// layer, and the nested copies overflowed a worker thread's stack.
    #[tokio::test]
    async fn a_request_future_is_small() {
        let fake = Arc::new(crate::testing::FakeShards::default());
        let (state, _dir) = crate::testing::sharded_state(fake).await;
        let mut session = crate::testing::session();
        let (msg, _body) = crate::testing::message(bson::doc! {"find": "c", "$db": "db"});
        let size = std::mem::size_of_val(&dispatch(&state, &mut session, &msg));
        assert!(size < 4096, "dispatch's future is {size} bytes");
    }
}
