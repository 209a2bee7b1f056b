//! Running a merge part over a stream: cut into segments at the stages the
//! router must run itself (`foreign`); each segment runs on the router's
//! query engine when the engine has all its stages and its input fits the
//! merge budget, otherwise on the merging shard (`shard`).

use std::collections::VecDeque;

use bson::{Document, RawDocumentBuf};
use futures::future::BoxFuture;

use super::{foreign, shard, Ctx};
use crate::cursors::DocStream;
use crate::error::Result;
use shardgate_query as query;

/// Runs `stages` over `input`.
pub(super) fn run<'a>(
    ctx: &'a Ctx,
    input: Box<dyn DocStream>,
    stages: &'a [Document],
) -> BoxFuture<'a, Result<Box<dyn DocStream>>> {
    Box::pin(async move {
        let (mut input, mut stages) = (input, stages);
        loop {
            let cut = stages
                .iter()
                .position(|s| foreign::is_router_stage(ctx, s))
                .unwrap_or(stages.len());
            if cut > 0 {
                input = segment(ctx, input, &stages[..cut]).await?;
            }
            let Some(stage) = stages.get(cut) else {
                return Ok(input);
            };
            input = foreign::apply(ctx, input, stage).await?;
            stages = &stages[cut + 1..];
        }
    })
}

/// Runs stages none of which is the router's own.
async fn segment(
    ctx: &Ctx,
    mut input: Box<dyn DocStream>,
    stages: &[Document],
) -> Result<Box<dyn DocStream>> {
    // The engine compares strings by their bytes: under another collation
    // the merging shard runs the stages.
    if query::check_pipeline(stages).is_err() || ctx.collated() {
        return shard::run_on_shard(ctx, Vec::new(), input, stages).await;
    }
    let budget = ctx.budget();
    let (mut buffered, mut bytes) = (Vec::new(), 0usize);
    while bytes <= budget && !input.is_exhausted() {
        let batch = match input.next_batch(usize::MAX).await {
            Ok(b) => b,
            Err(e) => {
                input.close().await;
                return Err(e);
            }
        };
        bytes += batch.iter().map(|d| d.as_bytes().len()).sum::<usize>();
        buffered.extend(batch);
    }
    if input.is_exhausted() {
        if let Some(out) = on_router(&buffered, stages) {
            input.close().await;
            return Ok(Box::new(out));
        }
    }
    shard::run_on_shard(ctx, buffered, input, stages).await
}

/// The stages run by the router's engine; `None` when it fails (the
/// merging shard then runs them, so an error is a server's own).
fn on_router(docs: &[RawDocumentBuf], stages: &[Document]) -> Option<VecDeque<RawDocumentBuf>> {
    let docs: Vec<Document> = docs
        .iter()
        .filter_map(|d| Document::try_from(d.as_ref()).ok())
        .collect();
    let out = query::aggregate(docs, stages).ok()?;
    Some(
        out.iter()
            .filter_map(|d| RawDocumentBuf::try_from(d).ok())
            .collect(),
    )
}

/// Where a merge part runs, as explain names it: `mongos` (the router)
/// when its engine has every stage (and the data fits), else the
/// database's `primaryShard`.
pub(super) fn merge_type(stages: &[Document]) -> &'static str {
    if query::check_pipeline(stages).is_ok() {
        "mongos"
    } else {
        "primaryShard"
    }
}
