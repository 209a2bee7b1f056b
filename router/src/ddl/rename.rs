//! `renameCollection` of a sharded collection, as mongos does it: within
//! its database only, under both namespaces' DDL locks, on every shard
//! (one that held chunks earlier keeps an empty copy), then in the metadata with a
//! new epoch; refused while a migration left orphaned documents waiting
//! for deletion (they would surface under the new name).

use bson::doc;

use crate::error::{Result, RouterError};
use crate::session::{Namespace, Reply, Request};
use crate::state::RouterState;

use super::{body, lock, on_shards, raw_reply};

/// Renames when the source is a sharded collection; `None` otherwise (the
/// command goes to the database's primary shard).
pub(crate) async fn rename(state: &RouterState, req: &Request<'_>) -> Result<Option<Reply>> {
    let Ok(from) = req.body.get_str("renameCollection") else {
        return Ok(None);
    };
    if state.routing.get(from).is_none() {
        let to = req.body.get_str("to").unwrap_or_default();
        if state.routing.get(to).is_some() {
            return Err(RouterError::command(
                20,
                "IllegalOperation",
                format!("cannot rename {from} over the sharded collection {to}; drop it first"),
            ));
        }
        return Ok(None);
    }
    let to = req
        .body
        .get_str("to")
        .map_err(|_| RouterError::bad_value("renameCollection needs 'to'"))?;
    let (source, target) = (Namespace::parse(from), Namespace::parse(to));
    if source.db != target.db {
        return Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("cannot rename the sharded collection {from} to another database"),
        ));
    }
    if state.routing.get(to).is_some() {
        return Err(RouterError::command(
            48,
            "NamespaceExists",
            format!("target namespace {to} is a sharded collection"),
        ));
    }
    let first = lock::hold(state, from, "renameCollection").await?;
    let second = match lock::hold(state, to, "renameCollection").await {
        Ok(l) => l,
        Err(e) => {
            first.release().await;
            return Err(e);
        }
    };
    let outcome = rename_held(state, req, from, to).await;
    second.release().await;
    first.release().await;
    outcome.map(Some)
}

async fn rename_held(
    state: &RouterState,
    req: &Request<'_>,
    from: &str,
    to: &str,
) -> Result<Reply> {
    if !state.catalog.orphan_ranges(from).await?.is_empty() {
        return Err(RouterError::command(
            117,
            "ConflictingOperationInProgress",
            format!("{from} has orphaned documents waiting for deletion after a migration; retry when they are gone"),
        ));
    }
    let command = doc! {
        "renameCollection": from, "to": to,
        "dropTarget": req.body.get_bool("dropTarget").unwrap_or(false),
        "$db": "admin",
    };
    // Every shard: one that held chunks earlier keeps an empty collection
    // (and its indexes), which must not stay behind under the old name.
    let mut replies = on_shards(state, state.placement.shards(), &command).await?;
    // A shard that never held the collection has nothing to rename.
    replies.retain(|r| r.ok() || r.reply.get_i32("code").ok() != Some(26));
    let reply = raw_reply(&replies);
    if reply.get_f64("ok").ok() != Some(1.0) {
        return body(reply);
    }
    state
        .catalog
        .rename_collection(from, to, crate::session::now_ts())
        .await?;
    state.routing.refresh(&state.catalog, from).await?;
    state.routing.refresh(&state.catalog, to).await?;
    body(doc! {"ok": 1.0})
}
