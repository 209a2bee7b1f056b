//! The balancer task. Every router runs it (unless `balancer = false`);
//! each round first takes the migration lock, so only one router acts at a
//! time, and the lock's fencing token guards every metadata change.
//!
//! A round, per sharded collection with balancing on: split chunks at zone
//! boundaries; estimate chunk sizes (`dataSize` where the shard has it,
//! else the range's document count × `collStats.avgObjSize`) and split
//! chunks above the chunk size at points from a sorted key scan, marking
//! those that cannot be split (one key value) jumbo; then run the moves
//! `shardgate_balancer::moves` decides (zones, draining shards, balance by
//! data size), one migration at a time. `balancerStop` (or leaving the
//! active window) is checked before every step, so a round stops after the
//! running migration completes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document};
use shardgate_config_store::model::CollectionType;
use shardgate_config_store::shard_key::{KeyBytes, ShardKeyPattern};

use shardgate_config_store::model::Namespace;
use shardgate_config_store::shard_key::range_filter;

use crate::context::{now_ts, Balancer};
use crate::error::{BalancerError, Result};
use crate::lock::LockGuard;
use crate::migration;
use crate::policy::{self, Chunk, Shard, ZoneRange};
use crate::sizes::{estimate, sized_snapshot, snapshot, Sized};

/// Whether the balancer may act now: not stopped, and inside the active
/// window (`config.settings` `balancer.activeWindow {start, stop}`, "HH:MM"
/// UTC) when one is set.
async fn enabled(state: &Balancer) -> Result<bool> {
    if state.catalog.balancer_stopped().await? {
        return Ok(false);
    }
    let Some(setting) = state.catalog.setting("balancer").await? else {
        return Ok(true);
    };
    let Ok(window) = setting.get_document("activeWindow") else {
        return Ok(true);
    };
    let minutes = |s: &str| -> Option<u32> {
        let (h, m) = s.split_once(':')?;
        Some(h.trim().parse::<u32>().ok()? * 60 + m.trim().parse::<u32>().ok()?)
    };
    let (Some(start), Some(stop)) = (
        window.get_str("start").ok().and_then(minutes),
        window.get_str("stop").ok().and_then(minutes),
    ) else {
        return Ok(true);
    };
    let now = (bson::DateTime::now().timestamp_millis() / 60_000 % 1440) as u32;
    Ok(if start <= stop {
        start <= now && now < stop
    } else {
        now >= start || now < stop
    })
}

/// One round, if this router gets the lock.
pub(crate) async fn round(state: &Arc<Balancer>) -> Result<()> {
    if !enabled(state).await? {
        return Ok(());
    }
    let guard = match crate::migration::take_lock(state, "balancer round", Duration::ZERO).await {
        Ok(g) => g,
        Err(e) if e.code().0 == 46 => return Ok(()),
        Err(e) => return Err(e),
    };
    state.stats.in_round.store(true, Ordering::SeqCst);
    state.publish_stats().await;
    let outcome = round_locked(state, &guard).await;
    state.stats.in_round.store(false, Ordering::SeqCst);
    state.stats.rounds.fetch_add(1, Ordering::SeqCst);
    state.metrics.balancer.round(match outcome {
        Ok(()) => shardgate_metrics::RoundOutcome::Completed,
        Err(_) => shardgate_metrics::RoundOutcome::Failed,
    });
    state.publish_stats().await;
    guard.release().await;
    outcome
}

async fn round_locked(state: &Arc<Balancer>, guard: &LockGuard) -> Result<()> {
    let default_chunk = state.catalog.chunk_size_bytes().await?;
    for coll in state.catalog.collections().await? {
        // A resharding moves the whole collection itself.
        if coll.no_balance || coll.resharding.is_some() {
            continue;
        }
        if !enabled(state).await? {
            return Ok(());
        }
        let chunk_size = coll
            .max_chunk_size_bytes
            .filter(|b| *b > 0)
            .unwrap_or(default_chunk)
            .max(1) as u64;
        if let Err(e) = balance_collection(state, guard, &coll, chunk_size).await {
            tracing::warn!(ns = %coll.ns, error = %e, "balancing stopped for this round");
        }
    }
    Ok(())
}

/// One collection's share of a round: splits at zone bounds, splits of
/// chunks past the chunk size, defragmentation (when asked for), the
/// moves, then (when the collection enables it) the auto-merger.
async fn balance_collection(
    state: &Arc<Balancer>,
    guard: &LockGuard,
    coll: &CollectionType,
    chunk_size: u64,
) -> Result<()> {
    let pattern =
        ShardKeyPattern::parse(&coll.key).map_err(|e| BalancerError::bad_value(e.to_string()))?;
    let zones = split_at_zones(state, &pattern, &coll.ns).await?;
    if !split_large_chunks(state, coll, &pattern, chunk_size).await? {
        return Ok(());
    }
    if coll.permit_migrations != Some(false) {
        if coll.defragment_collection == Some(true) {
            crate::defragment::defragment(state, guard, coll, &pattern, &zones, chunk_size).await?;
        }
        move_chunks(state, guard, &pattern, &coll.ns, &zones, chunk_size).await?;
    }
    if coll.enable_auto_merger == Some(true) {
        auto_merge(state, &pattern, &coll.ns, chunk_size).await?;
    }
    Ok(())
}

/// The auto-merger: runs of contiguous chunks on one shard that together
/// stay within the chunk size become one chunk.
async fn auto_merge(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    ns: &str,
    chunk_size: u64,
) -> Result<()> {
    let Sized {
        chunks,
        bounds: docs,
    } = sized_snapshot(state, pattern, ns).await?;
    for (first, last) in policy::merges(&chunks, chunk_size) {
        let (min, max) = (&docs[first].0, &docs[last].1);
        let details = state
            .catalog
            .merge_range(ns, min, max, crate::context::now_ts())
            .await?;
        state.log_change("merge", ns, details).await;
    }
    Ok(())
}

/// Step 1: splits chunks at zone boundaries; returns the zone ranges.
async fn split_at_zones(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    ns: &str,
) -> Result<Vec<ZoneRange>> {
    let enc = |d: &Document| {
        pattern
            .encode_bound(d)
            .map_err(|e| BalancerError::bad_value(e.to_string()))
    };
    let tags = state.catalog.zone_ranges(ns).await?;
    let zones: Vec<ZoneRange> = tags
        .iter()
        .map(|t| {
            Ok(ZoneRange {
                min: enc(&t.min)?,
                max: enc(&t.max)?,
                zone: t.tag.clone(),
            })
        })
        .collect::<Result<_>>()?;
    let bounds: Vec<(KeyBytes, Document)> = tags
        .iter()
        .flat_map(|t| [t.min.clone(), t.max.clone()])
        .filter_map(|d| enc(&d).ok().map(|k| (k, d)))
        .collect();
    let chunks = snapshot(state, pattern, ns).await?;
    for (_, at) in policy::zone_splits(&chunks.0, &zones) {
        if let Some((_, doc)) = bounds.iter().find(|(k, _)| *k == at) {
            split_at(state, ns, doc).await?;
        }
    }
    Ok(zones)
}

/// Step 2: sizes, and splits of chunks above the chunk size (a chunk that
/// cannot be split is marked jumbo). False when the balancer was stopped.
async fn split_large_chunks(
    state: &Balancer,
    coll: &CollectionType,
    pattern: &ShardKeyPattern,
    chunk_size: u64,
) -> Result<bool> {
    let ns = &coll.ns;
    let (chunks, docs) = snapshot(state, pattern, ns).await?;
    let sizes = estimate(state, pattern, ns, &chunks, &docs).await?;
    for (i, (bytes, count)) in sizes.iter().enumerate() {
        if *bytes <= chunk_size || chunks[i].jumbo || *count < 2 {
            continue;
        }
        if !enabled(state).await? {
            return Ok(false);
        }
        let per_piece = ((chunk_size / 2).max(1) * count / bytes).max(1);
        let points = split_points(
            state, pattern, ns, &chunks[i], &docs[i], per_piece, chunk_size,
        )
        .await?;
        if points.is_empty() {
            mark_jumbo(state, coll, &docs[i]).await?;
            continue;
        }
        for p in points {
            split_at(state, ns, &p).await?;
        }
    }
    Ok(true)
}

/// Step 3: the policy's moves, each a migration.
async fn move_chunks(
    state: &Arc<Balancer>,
    guard: &LockGuard,
    pattern: &ShardKeyPattern,
    ns: &str,
    zones: &[ZoneRange],
    chunk_size: u64,
) -> Result<()> {
    let shards: Vec<Shard> = state
        .catalog
        .shards()
        .await?
        .into_iter()
        .map(|s| Shard {
            id: s.id,
            zones: s.tags.into_iter().collect(),
            draining: s.draining,
        })
        .collect();
    let Sized {
        chunks,
        bounds: docs,
    } = sized_snapshot(state, pattern, ns).await?;
    let threshold = 3 * chunk_size;
    for mv in policy::moves(&shards, &chunks, zones, threshold) {
        if !enabled(state).await? {
            return Ok(());
        }
        let d = &docs[mv.chunk];
        tracing::info!(%ns, min = %d.0, to = %mv.to, reason = ?mv.reason, "balancer moves a chunk");
        migration::move_chunk(state, guard, ns, &d.0, &d.1, &mv.to, false).await?;
        state.stats.migrations.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

/// Splits `ns` at `at` and logs it (no-op at a chunk bound).
async fn split_at(state: &Balancer, ns: &str, at: &Document) -> Result<()> {
    if let Some(details) = state.catalog.split_at(ns, at, now_ts()).await? {
        state.log_change("split", ns, details).await;
    }
    Ok(())
}

/// Split points of one chunk: the shard's `splitVector` where it has one,
/// else the key of every `per_piece`-th document in key order, skipping
/// points equal to the chunk's min or to the previous point. Empty when the
/// chunk holds a single key value (jumbo).
async fn split_points(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    ns: &str,
    chunk: &Chunk,
    bounds: &(Document, Document),
    per_piece: u64,
    chunk_size: u64,
) -> Result<Vec<Document>> {
    if pattern.hashed_field().is_some() {
        // Hashed chunks split at the middle of their hash range.
        return Ok(hashed_middle(pattern, bounds).into_iter().collect());
    }
    let Namespace { db, coll } = Namespace::parse(ns);
    let shard = state.shard(&chunk.shard).await?;
    // `splitVector` where the shard has it.
    let vector = state
        .run_on_shard(
            &shard,
            doc! {
                "splitVector": ns, "keyPattern": pattern.to_document(),
                "min": bounds.0.clone(), "max": bounds.1.clone(),
                "maxChunkObjects": per_piece as i64 * 2,
                "maxChunkSizeBytes": chunk_size as i64, "$db": "admin",
            },
        )
        .await;
    if let Ok(reply) = vector {
        let keys = reply.get_array("splitKeys").cloned().unwrap_or_default();
        return Ok(keys
            .into_iter()
            .filter_map(|k| match k {
                Bson::Document(d) => Some(d),
                _ => None,
            })
            .collect());
    }
    let fields: Vec<_> = pattern.fields().collect();
    let mut projection = doc! {"_id": 0};
    let mut sort = Document::new();
    for (f, kind) in &fields {
        projection.insert(*f, 1);
        let dir = if *kind == shardgate_config_store::shard_key::KeyKind::Descending {
            -1
        } else {
            1
        };
        sort.insert(*f, dir);
    }
    let keys = migration::find_all(
        state,
        &shard,
        db,
        coll,
        doc! {"find": coll, "filter": range_filter(&fields, &bounds.0, &bounds.1), "projection": projection, "sort": sort},
    )
    .await?;
    let mut points = Vec::new();
    let mut last: Option<KeyBytes> = Some(chunk.min.clone());
    let mut since = 0u64;
    for k in keys {
        since += 1;
        let Ok(key) = pattern.extract_key(&k) else {
            continue;
        };
        if since >= per_piece && last.as_ref().is_none_or(|l| key > *l) && key < chunk.max {
            if let Ok(doc) = pattern.key_document(&k) {
                points.push(doc);
                last = Some(key);
                since = 0;
            }
        }
    }
    Ok(points)
}

/// The middle of a hashed chunk's range, when it has room.
fn hashed_middle(pattern: &ShardKeyPattern, bounds: &(Document, Document)) -> Option<Document> {
    let field = pattern.hashed_field()?;
    let as_i128 = |d: &Document, default: i128| match d.get(field) {
        Some(Bson::Int64(v)) => *v as i128,
        Some(Bson::Int32(v)) => *v as i128,
        _ => default,
    };
    let lo = as_i128(&bounds.0, i64::MIN as i128);
    let hi = as_i128(&bounds.1, i64::MAX as i128);
    if hi - lo < 2 {
        return None;
    }
    let mid = ((lo + hi) / 2) as i64;
    let mut doc = Document::new();
    for (f, _) in pattern.fields() {
        if f == field {
            doc.insert(f, mid);
        } else {
            doc.insert(f, Bson::MinKey);
        }
    }
    Some(doc)
}

/// Marks a chunk jumbo: too big, one key value, never moved for balance.
async fn mark_jumbo(
    state: &Balancer,
    coll: &CollectionType,
    bounds: &(Document, Document),
) -> Result<()> {
    if state
        .catalog
        .set_jumbo(&coll.ns, &bounds.0, &bounds.1, true)
        .await?
    {
        tracing::info!(ns = %coll.ns, min = %bounds.0, "chunk marked jumbo");
        state
            .log_change("jumbo", &coll.ns, doc! {"min": &bounds.0, "max": &bounds.1})
            .await;
    }
    Ok(())
}
