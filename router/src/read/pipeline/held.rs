//! Documents the router makes itself — the `config` database's view of
//! the store, `$shardedDataDistribution`'s report — run through a
//! client's stages.
//!
//! The router's engine runs them when it can. When it lacks a stage or an
//! expression, or rejects the pipeline, a shard runs them over the
//! documents (inline as `$documents`, or through a temporary collection
//! when large), so the answer or the error is the server's own and never
//! a refusal that mongos would not give.

use std::collections::VecDeque;
use std::sync::Arc;

use bson::{Document, RawDocumentBuf};

use super::{shard, Ctx};
use crate::cursors::DocStream;
use crate::error::{Result, RouterError};
use crate::state::RouterState;
use shardgate_query as query;

/// The database a shard runs them in (and holds a temporary collection
/// of, when they are large).
const SHARD_DB: &str = "admin";

/// `stages` run over `docs`.
pub(crate) async fn run(
    state: &Arc<RouterState>,
    docs: Vec<Document>,
    stages: &[Document],
) -> Result<Box<dyn DocStream>> {
    let raw = docs
        .iter()
        .map(RawDocumentBuf::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| RouterError::bad_value(e.to_string()))?;
    let engine_error = match query::aggregate(docs, stages) {
        Ok(out) => return deque(out),
        Err(e) => super::query_error(e),
    };
    let Some(shard) = state
        .placement
        .shards()
        .into_iter()
        .min_by(|a, b| a.id.cmp(&b.id))
    else {
        return Err(engine_error);
    };
    tracing::debug!(error = %engine_error, shard = %shard.id, "a shard runs stages over the router's documents");
    let ctx = Ctx::plain(state, SHARD_DB);
    let none: Box<dyn DocStream> = Box::new(VecDeque::new());
    shard::run_on(&ctx, shard, raw, none, stages).await
}

fn deque(docs: Vec<Document>) -> Result<Box<dyn DocStream>> {
    let out = docs
        .iter()
        .map(RawDocumentBuf::try_from)
        .collect::<std::result::Result<VecDeque<_>, _>>()
        .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?;
    Ok(Box::new(out))
}
