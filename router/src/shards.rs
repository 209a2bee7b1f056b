//! The router's calls to shards over its `ShardClient`: one shard, a shard
//! cursor, the database's primary, or every shard.

use std::sync::Arc;

use shardgate_config_store::ShardType;
use shardgate_shard_client::{ShardCursor, ShardError, Target};
use shardgate_wire::OpMsg;

use crate::error::{Result, RouterError};
use crate::state::RouterState;

/// How the shard client addresses `shard`.
pub(crate) fn target(shard: &ShardType) -> Target<'_> {
    Target {
        id: &shard.id,
        host: &shard.host,
    }
}

/// Sends `msg` to `shard` and returns its reply (`{ok: 0}` included).
pub(crate) async fn to_shard(state: &RouterState, shard: &ShardType, msg: &OpMsg) -> Result<OpMsg> {
    Ok(state.shards.send(target(shard), msg).await?)
}

/// Runs a command the router builds on `shard`; an `{ok: 0}` reply becomes
/// an error that keeps the shard's code and labels.
pub(crate) async fn run_on_shard(
    state: &RouterState,
    shard: &ShardType,
    command: bson::Document,
) -> Result<bson::Document> {
    let reply = run_on_shard_raw(state, shard, command).await?;
    bson::Document::try_from(reply.as_ref())
        .map_err(|e| RouterError::Shard(ShardError::protocol(&shard.id, e)))
}

/// Like [`run_on_shard`], but keeps the reply raw (no decoding of the
/// documents it carries).
pub(crate) async fn run_on_shard_raw(
    state: &RouterState,
    shard: &ShardType,
    command: bson::Document,
) -> Result<bson::RawDocumentBuf> {
    let body = bson::RawDocumentBuf::try_from(&command)
        .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?;
    Ok(state.shards.command(target(shard), &body).await?)
}

/// Opens a shard cursor with a command the router builds (with its `$db`).
pub(crate) async fn open_cursor(
    state: &RouterState,
    shard: &ShardType,
    command: &bson::Document,
) -> Result<ShardCursor> {
    let body = bson::RawDocumentBuf::try_from(command)
        .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?;
    Ok(ShardCursor::open(state.shards.clone(), target(shard), &body).await?)
}

/// Sends `msg` to the primary shard of `db`, placing the database first when
/// it is new.
pub(crate) async fn to_primary(state: &Arc<RouterState>, db: &str, msg: &OpMsg) -> Result<OpMsg> {
    let entry = state
        .placement
        .get_or_create(&state.catalog, db, || least_loaded_shard(state))
        .await?;
    let shard = state.placement.shard(&entry.primary)?;
    to_shard(state, &shard, msg).await
}

/// Sends `msg` to every shard at once; the replies come in shard order.
pub(crate) async fn to_all(state: &RouterState, msg: &OpMsg) -> Vec<(ShardType, Result<OpMsg>)> {
    let shards = state.placement.shards();
    let replies = futures::future::join_all(shards.iter().map(|s| to_shard(state, s, msg))).await;
    shards.into_iter().zip(replies).collect()
}

/// The shard a new database should live on: the one with the least data
/// (`listDatabases` `totalSize`), then the fewest primaries, then by name.
/// Shards that do not answer are passed over.
pub(crate) async fn least_loaded_shard(state: &RouterState) -> Result<String> {
    let shards = state.placement.shards();
    if shards.is_empty() {
        return Err(RouterError::command(
            70,
            "ShardNotFound",
            "no shards found; add one with addShard first",
        ));
    }
    let probe = bson::doc! {"listDatabases": 1, "$db": "admin"}
        .to_vec()
        .map(OpMsg::from_body)
        .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?;
    let replies = to_all(state, &probe).await;
    let primaries = state.placement.primaries_per_shard();
    let mut best: Option<(i64, usize, String)> = None;
    let mut last_error = None;
    for (shard, reply) in replies {
        let size = match reply {
            Ok(r) => total_size(&r),
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let key = (
            size,
            primaries.get(&shard.id).copied().unwrap_or(0),
            shard.id,
        );
        if best.as_ref().is_none_or(|b| key < *b) {
            best = Some(key);
        }
    }
    match (best, last_error) {
        (Some((_, _, id)), _) => Ok(id),
        (None, Some(e)) => Err(e),
        (None, None) => Err(RouterError::command(
            70,
            "ShardNotFound",
            "no shard answered",
        )),
    }
}

fn total_size(reply: &OpMsg) -> i64 {
    crate::session::number_field(reply.body(), "totalSize").unwrap_or(0)
}
