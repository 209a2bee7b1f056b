//! Commands on sharded collections: routing each to its shards, dropping
//! one, and the argument helpers the sharding admin commands share.

use std::sync::Arc;

use bson::{doc, Document, RawDocument};
use shardgate_config_store::shard_key::ShardKeyError;

use super::{Reply, Request, Session};
use crate::error::{Result, RouterError};

use crate::shards::to_shard;
use crate::state::RouterState;

/// Splits `db.coll` (InvalidNamespace when it is not one).
pub(crate) fn split_ns(ns: &str) -> Result<(&str, &str)> {
    match ns.split_once('.') {
        Some((db, coll))
            if !coll.is_empty()
                && crate::catalog_cache::placement::validate_db_name(db).is_ok() =>
        {
            Ok((db, coll))
        }
        _ => Err(RouterError::command(
            73,
            "InvalidNamespace",
            format!("Invalid namespace specified '{ns}'"),
        )),
    }
}

/// The command's first value as a string (a namespace, shard or zone
/// name); BadValue naming `what` otherwise.
pub(crate) fn name_arg<'a>(req: &Request<'a>, what: &str) -> Result<&'a str> {
    req.body
        .get_str(req.name)
        .map_err(|_| RouterError::bad_value(format!("{} takes {what}", req.name)))
}

/// A shard-key error with its MongoDB code.
pub(crate) fn key_error(e: ShardKeyError) -> RouterError {
    let (code, name) = e.code();
    RouterError::command(code, name, e.to_string())
}

/// A raw sub-document as an owned document (BadValue when not a document).
pub(crate) fn document_arg(body: &RawDocument, field: &str) -> Result<Document> {
    let raw = body
        .get_document(field)
        .map_err(|_| RouterError::bad_value(format!("'{field}' must be a document")))?;
    Document::try_from(raw).map_err(|e| RouterError::bad_value(format!("'{field}': {e}")))
}

pub(crate) use crate::session::now_ts;

/// Routes a command on a sharded collection (and `getMore`/`killCursors`
/// on router cursors). Reads scatter to the shards that own the data and
/// merge; inserts split by chunk owner; other commands go whole to the one
/// shard holding every chunk (across shards: `create` to the primary, a
/// command mongos does not know CommandNotFound). `None`: not the router's
/// business.
pub(crate) async fn route_sharded(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Option<Reply>> {
    use crate::read::{aggregate, find, get_more};
    use crate::write::plan::WriteKind;
    if let Some(reply) = router_cursor(state, session, req).await? {
        return Ok(Some(reply));
    }
    let explained = match req.name {
        "explain" => req.body.get_document("explain").ok(),
        _ => None,
    };
    let Some(coll) = collection_of(req, explained) else {
        return Ok(None);
    };
    let ns = format!("{}.{coll}", req.db);
    let Some(routing) = state.routing.get(&ns) else {
        return Ok(None);
    };
    if let Some(default) = &routing.collection.default_collation {
        if let Some(msg) = crate::collation::made_explicit(req.msg, req.name, default) {
            let req = Request {
                body: msg.body(),
                msg: &msg,
                ..*req
            };
            return Box::pin(route_sharded(state, session, &req)).await;
        }
    }
    if let Some(reply) = crate::ddl::route(state, req, &routing, &ns).await? {
        return Ok(Some(reply));
    }
    let reply = match req.name {
        "drop" => {
            drop_sharded(state, &ns, req).await?;
            Reply::Body(doc! {"ns": &ns, "ok": 1.0}.to_vec().unwrap_or_default())
        }
        "find" => find::find(state, session, req, &routing, &ns).await?,
        "count" => aggregate::count(state, req, &routing).await?,
        "distinct" => aggregate::distinct(state, req, &routing).await?,
        "aggregate" => match crate::ddl::stats::stage_per_shard(state, req, &routing, &ns).await? {
            Some(reply) => reply,
            None => crate::read::pipeline::aggregate(state, session, req, &routing, &ns).await?,
        },
        "insert" | "update" | "delete" => {
            let kind = WriteKind::of(req.name).expect("a write command");
            let written = crate::write::exec::write(state, req, &ns, kind).await;
            return unless_dropped(state, &ns, written);
        }
        "findAndModify" | "findandmodify" => {
            let written = crate::write::exec::find_and_modify(state, req, &ns).await;
            return unless_dropped(state, &ns, written);
        }
        "explain" => {
            let inner = explained
                .and_then(|d| Document::try_from(d).ok())
                .unwrap_or_default();
            let filter = inner
                .get_document("filter")
                .or_else(|_| inner.get_document("query"))
                .cloned()
                .unwrap_or_default();
            aggregate::explain_to_shards(state, req, &routing, &filter).await?
        }
        "getMore" => {
            return Err(RouterError::command(
                43,
                "CursorNotFound",
                format!("cursor not found on {ns}"),
            ))
        }
        "killCursors" => get_more::kill_unknown_cursors(req),
        _ => whole_to_one_shard(state, req, &routing).await?,
    };
    Ok(Some(reply))
}

/// The collection a command (or the command `explained`) names.
fn collection_of<'a>(req: &Request<'a>, explained: Option<&'a RawDocument>) -> Option<&'a str> {
    match explained {
        Some(inner) => inner
            .iter()
            .next()
            .and_then(|e| e.ok())
            .and_then(|(_, v)| v.as_str()),
        None => req.collection,
    }
}

/// A write's reply; `None` (the unsharded path) when it was held by a
/// `drop` and, nothing sent, found the collection no longer sharded.
fn unless_dropped(state: &RouterState, ns: &str, written: Result<Reply>) -> Result<Option<Reply>> {
    match written {
        Err(e) if e.code().0 == 13388 && state.routing.get(ns).is_none() => Ok(None),
        other => other.map(Some),
    }
}

/// `getMore` and `killCursors` of cursors the router holds.
pub(crate) async fn router_cursor(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Option<Reply>> {
    use crate::read::get_more;
    match req.name {
        "getMore" => match crate::change_streams::get_more(state, session, req).await? {
            Some(reply) => Ok(Some(reply)),
            None => get_more::get_more(state, session, req).await,
        },
        "killCursors" => get_more::kill_cursors(state, req).await,
        _ => Ok(None),
    }
}

/// Any other command on a sharded collection: `create` goes to the
/// database's primary, as mongos sends it (ok when the options match the
/// collection's, else NamespaceExists, from the shard); another command
/// goes whole to the one shard holding every chunk; across shards, a
/// command mongos does not know is CommandNotFound, as mongos answers it.
async fn whole_to_one_shard(
    state: &Arc<RouterState>,
    req: &Request<'_>,
    routing: &crate::catalog_cache::routing::CollectionRouting,
) -> Result<Reply> {
    if req.name == "create" {
        return crate::shards::to_primary(state, req.db, req.msg)
            .await
            .map(Reply::Msg);
    }
    match routing.single_shard() {
        Some(id) => {
            let shard = state.placement.shard(&id)?;
            Ok(Reply::Msg(to_shard(state, &shard, req.msg).await?))
        }
        _ => Err(RouterError::command_not_found(req.name)),
    }
}

/// Drops a sharded collection on every shard that owns a chunk (and the
/// primary), then forgets its metadata.
pub(crate) async fn drop_sharded(
    state: &Arc<RouterState>,
    ns: &str,
    req: &Request<'_>,
) -> Result<()> {
    if crate::ddl::drop::drop(state, ns, req.db).await? {
        super::cluster::log_change(state, "dropCollection", ns, Document::new()).await;
    }
    Ok(())
}
