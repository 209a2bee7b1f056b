//! Defragmentation of a collection (`configureCollectionBalancing` with
//! `defragmentCollection: true`), run by the balancer's rounds as on
//! MongoDB: (1) every run of contiguous chunks on a shard merges into one;
//! (2) each chunk under a quarter of the chunk size moves to a contiguous
//! neighbour's shard (the smaller neighbour, same zone, together within the
//! chunk size) and merges with it, until none is left; (3) chunks past the
//! chunk size are split by the round's usual split step. Then the flag is
//! cleared and `balancerCollectionStatus` is compliant again.

use std::sync::Arc;

use shardgate_config_store::model::CollectionType;
use shardgate_config_store::shard_key::ShardKeyPattern;

use crate::context::Balancer;
use crate::error::Result;
use crate::lock::LockGuard;
use crate::policy::{self, Chunk, ZoneRange};
use crate::sizes::{sized_snapshot, Sized};

/// Move-and-merge steps one round runs at most, so other collections get
/// their turn.
const STEPS_PER_ROUND: usize = 16;

/// One round's share of defragmenting `coll`; clears its flag when done.
pub(crate) async fn defragment(
    state: &Arc<Balancer>,
    guard: &LockGuard,
    coll: &CollectionType,
    pattern: &ShardKeyPattern,
    zones: &[ZoneRange],
    chunk_size: u64,
) -> Result<()> {
    let ns = coll.ns.as_str();
    merge_runs(state, pattern, ns).await?;
    for _ in 0..STEPS_PER_ROUND {
        let Sized { chunks, bounds } = sized_snapshot(state, pattern, ns).await?;
        let Some((small, neighbour)) = policy::defragment_step(&chunks, zones, chunk_size) else {
            return finish(state, ns).await;
        };
        let to = chunks[neighbour].shard.clone();
        let (min, max) = &bounds[small];
        tracing::info!(%ns, %min, %to, "defragmentation moves a small chunk to its neighbour");
        crate::migration::move_chunk(state, guard, ns, min, max, &to, false).await?;
        let (lo, hi) = (small.min(neighbour), small.max(neighbour));
        let details = state
            .catalog
            .merge_range(ns, &bounds[lo].0, &bounds[hi].1, crate::context::now_ts())
            .await?;
        state.log_change("merge", ns, details).await;
    }
    Ok(())
}

/// Phase 1: every run of contiguous chunks on one shard becomes one chunk.
async fn merge_runs(state: &Balancer, pattern: &ShardKeyPattern, ns: &str) -> Result<()> {
    let Sized { chunks, bounds } = sized_snapshot(state, pattern, ns).await?;
    let unsized_: Vec<Chunk> = chunks
        .into_iter()
        .map(|c| Chunk { bytes: 0, ..c })
        .collect();
    for (first, last) in policy::merges(&unsized_, u64::MAX) {
        let details = state
            .catalog
            .merge_range(
                ns,
                &bounds[first].0,
                &bounds[last].1,
                crate::context::now_ts(),
            )
            .await?;
        state.log_change("merge", ns, details).await;
    }
    Ok(())
}

/// Clears the flag (on the entry as the store has it now).
async fn finish(state: &Balancer, ns: &str) -> Result<()> {
    if let Some(mut coll) = state.catalog.collection(ns).await? {
        if coll.defragment_collection.is_some() {
            coll.defragment_collection = None;
            state.catalog.update_collection(&coll).await?;
            tracing::info!(%ns, "defragmentation finished");
        }
    }
    Ok(())
}
