//! Index commands on a sharded collection: `createIndexes` and
//! `dropIndexes` on every shard owning a chunk and on the primary, under the
//! namespace's DDL lock; `listIndexes` from the shard owning the `MinKey`
//! chunk, as mongos reads it.

use crate::catalog_cache::routing::CollectionRouting;
use crate::error::{Result, RouterError};
use crate::session::{Reply, Request};
use crate::shards::to_shard;
use crate::state::RouterState;

use super::{body, everywhere, raw_reply, ShardReply};

/// `createIndexes`: a shard that refuses an index fails the command with
/// that shard named; the shards that built it keep it, which
/// `checkMetadataConsistency` reports until the command is run again.
pub(crate) async fn create(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    ns: &str,
) -> Result<Reply> {
    let replies = everywhere(state, req, routing, ns).await;
    body(raw_reply(&replies?))
}

/// `dropIndexes`: a shard that lacks the index (or the collection) while
/// another dropped it is not an error, so a drop also repairs an index
/// left on some shards.
pub(crate) async fn drop(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    ns: &str,
) -> Result<Reply> {
    let replies = everywhere(state, req, routing, ns).await;
    let mut replies = replies?;
    let missing = |r: &ShardReply| matches!(r.reply.get_i32("code"), Ok(26 | 27));
    if replies.iter().any(|r| r.ok()) {
        replies.retain(|r| r.ok() || !missing(r));
    }
    body(raw_reply(&replies))
}

/// `listIndexes`: the indexes of the shard owning the `MinKey` chunk.
pub(crate) async fn list(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
) -> Result<Reply> {
    let first =
        routing.chunks.iter().next().ok_or_else(|| {
            RouterError::command(1, "InternalError", "a collection without chunks")
        })?;
    let shard = state.placement.shard(&first.shard)?;
    Ok(Reply::Msg(to_shard(state, &shard, req.msg).await?))
}
