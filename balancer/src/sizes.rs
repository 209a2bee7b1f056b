//! Chunk sizes as the balancer estimates them: `dataSize` where the shard
//! has it, else the range's document count (orphans left out) times
//! `collStats.avgObjSize`; and a collection's chunks in key order with
//! those estimates, for the round's decisions and defragmentation.

use bson::{doc, Bson, Document};
use shardgate_config_store::model::Namespace;
use shardgate_config_store::shard_key::{range_filter, ShardKeyPattern};
use shardgate_config_store::ShardType;

use crate::context::Balancer;
use crate::error::{BalancerError, Result};
use crate::policy::Chunk;

/// The chunks of a collection with their estimated sizes, in key order.
pub(crate) struct Sized {
    /// Encoded, for the policy, each with its estimated bytes.
    pub chunks: Vec<Chunk>,
    /// Their bounds as documents.
    pub bounds: Vec<(Document, Document)>,
}

/// [`snapshot`] with each chunk's estimated bytes.
pub(crate) async fn sized_snapshot(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    ns: &str,
) -> Result<Sized> {
    let (chunks, bounds) = snapshot(state, pattern, ns).await?;
    let sizes = estimate(state, pattern, ns, &chunks, &bounds).await?;
    let chunks = chunks
        .into_iter()
        .zip(&sizes)
        .map(|(c, (bytes, _))| Chunk { bytes: *bytes, ..c })
        .collect();
    Ok(Sized { chunks, bounds })
}

/// The chunks of `ns` (encoded, for the policy) and their bounds as
/// documents, in key order.
pub(crate) async fn snapshot(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    ns: &str,
) -> Result<(Vec<Chunk>, Vec<(Document, Document)>)> {
    let mut rows = Vec::new();
    for (c, _) in state.catalog.chunks(ns).await? {
        let min = pattern
            .encode_bound(&c.min)
            .map_err(|e| BalancerError::bad_value(e.to_string()))?;
        let max = pattern
            .encode_bound(&c.max)
            .map_err(|e| BalancerError::bad_value(e.to_string()))?;
        rows.push((
            Chunk {
                min,
                max,
                shard: c.shard.clone(),
                bytes: 0,
                jumbo: c.jumbo,
            },
            (c.min, c.max),
        ));
    }
    rows.sort_by(|a, b| a.0.min.cmp(&b.0.min));
    Ok(rows.into_iter().unzip())
}

/// `(bytes, documents)` per chunk.
pub(crate) async fn estimate(
    state: &Balancer,
    pattern: &ShardKeyPattern,
    ns: &str,
    chunks: &[Chunk],
    docs: &[(Document, Document)],
) -> Result<Vec<(u64, u64)>> {
    let Namespace { db, coll } = Namespace::parse(ns);
    let fields: Vec<_> = pattern.fields().collect();
    let hashed = pattern.hashed_field().is_some();
    let mut avg: std::collections::BTreeMap<String, (f64, u64)> = Default::default();
    let mut owned: std::collections::BTreeMap<String, u64> = Default::default();
    let mut out = Vec::with_capacity(chunks.len());
    for (c, (min, max)) in chunks.iter().zip(docs) {
        let shard = state.shard(&c.shard).await?;
        if !avg.contains_key(&c.shard) {
            let stats = state
                .run_on_shard(&shard, doc! {"collStats": coll, "$db": db})
                .await
                .unwrap_or_default();
            let size = number(&stats, "avgObjSize");
            let count = number(&stats, "count") as u64;
            avg.insert(c.shard.clone(), (size, count));
        }
        let (avg_size, shard_count) = avg[&c.shard];
        // `dataSize` where the shard has it.
        if !hashed {
            let data_size = state.run_on_shard(&shard,
                doc! {"dataSize": ns, "keyPattern": pattern.to_document(), "min": min.clone(), "max": max.clone(), "$db": db},
            )
            .await;
            if let Ok(r) = data_size {
                out.push((number(&r, "size") as u64, number(&r, "numObjects") as u64));
                continue;
            }
        }
        let count = if hashed {
            // A hashed range cannot be queried: share the documents the shard
            // owns (its orphans left out) evenly among its chunks.
            let on_shard = chunks.iter().filter(|x| x.shard == c.shard).count().max(1) as u64;
            let owned = match owned.get(&c.shard) {
                Some(n) => *n,
                None => {
                    let n = owned_count(state, ns, pattern, &shard)
                        .await?
                        .unwrap_or(shard_count);
                    owned.insert(c.shard.clone(), n);
                    n
                }
            };
            owned / on_shard
        } else {
            let r = state
                .run_on_shard(
                    &shard,
                    doc! {"count": coll, "query": range_filter(&fields, min, max), "$db": db},
                )
                .await?;
            number(&r, "n") as u64
        };
        out.push(((count as f64 * avg_size) as u64, count));
    }
    Ok(out)
}

/// How many documents of `ns` the shard owns when it holds orphan ranges
/// of a hashed key (`None`: it holds none, its collection count is exact):
/// its documents' keys are read and those in an orphan range left out.
async fn owned_count(
    state: &Balancer,
    ns: &str,
    pattern: &ShardKeyPattern,
    shard: &ShardType,
) -> Result<Option<u64>> {
    let mut ranges = Vec::new();
    for o in state.catalog.orphan_ranges(ns).await? {
        if o.shard != shard.id {
            continue;
        }
        let bad = |e: shardgate_config_store::shard_key::ShardKeyError| {
            BalancerError::bad_value(e.to_string())
        };
        ranges.push((
            pattern.encode_bound(&o.min).map_err(bad)?,
            pattern.encode_bound(&o.max).map_err(bad)?,
        ));
    }
    if ranges.is_empty() {
        return Ok(None);
    }
    let Namespace { db, coll } = Namespace::parse(ns);
    let keys: Vec<Bson> = pattern
        .fields()
        .map(|(name, _)| Bson::String(format!("${name}")))
        .collect();
    let find = doc! {"find": coll, "filter": {}, "projection": {"_id": 0, "k": keys}, "batchSize": 1000, "$db": db};
    let mut cursor = state.open_cursor(shard, &find).await?.batch_size(1000);
    let mut n = 0;
    while let Some(batch) = cursor.next_batch().await? {
        n += batch
            .iter()
            .filter(|d| {
                let key = d
                    .get_array("k")
                    .map_err(|_| ())
                    .and_then(|values| pattern.key_from_values(values).map_err(|_| ()));
                key.map_or(true, |k| !ranges.iter().any(|(lo, hi)| *lo <= k && k < *hi))
            })
            .count() as u64;
    }
    Ok(Some(n))
}

pub(crate) fn number(d: &Document, f: &str) -> f64 {
    match d.get(f) {
        Some(Bson::Int32(v)) => *v as f64,
        Some(Bson::Int64(v)) => *v as f64,
        Some(Bson::Double(v)) => *v,
        _ => 0.0,
    }
}
