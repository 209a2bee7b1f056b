//! `analyzeShardKey` (mongos ≥ 7.0): metrics for judging a candidate shard
//! key of a collection, sharded or not. A mongod computes them over its own
//! copy; the shards here know nothing of each other, so the router computes
//! them over every shard that holds the collection:
//!
//! - `keyCharacteristics`: `numDocsTotal`, `avgDocSizeBytes`,
//!   `numOrphanDocs` (sharded), `numDocsSampled` (`sampleRate` /
//!   `sampleSize`, else every document), `isUnique` (the supporting index is
//!   unique on exactly the key), `numDistinctValues` and the five
//!   `mostCommonValues` (each shard groups its documents by the key, the
//!   router adds the groups up), and `monotonicity`: the correlation of the
//!   key's order with the insertion (natural) order on the primary shard,
//!   monotonic at |r| ≥ 0.7 as on mongod; a hashed key is not
//!   monotonic.
//! - `readDistribution` / `writeDistribution`: from the queries sampled
//!   since `configureQueryAnalyzer` (see `query_analysis::distribution`).
//!
//! Needs an index whose key starts with the candidate key (IllegalOperation
//! otherwise, as on mongod).

use std::collections::HashMap;
use std::sync::Arc;

use bson::{doc, Bson, Document};
use shardgate_config_store::shard_key::{KeyKind, ShardKeyPattern};
use shardgate_config_store::ShardType;

use super::admin::admin_only;
use super::sharding::{document_arg, key_error, name_arg, split_ns};
use super::Request;
use crate::error::{Result, RouterError};
use crate::shards::{open_cursor, run_on_shard};
use crate::state::RouterState;

/// Most common values reported.
const MOST_COMMON: usize = 5;
/// |correlation| at or above which a key counts as monotonic.
const MONOTONIC: f64 = 0.7;
/// Documents read for the monotonicity check.
const MONOTONICITY_SAMPLE: i64 = 100_000;

/// `analyzeShardKey`.
pub(crate) async fn analyze(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let (db, coll) = split_ns(ns)?;
    let key = document_arg(req.body, "key")?;
    let pattern = ShardKeyPattern::parse(&key).map_err(key_error)?;
    let sample = sampling(req)?;
    if !req.body.get_bool("keyCharacteristics").unwrap_or(true)
        && !req.body.get_bool("readWriteDistribution").unwrap_or(true)
    {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            "Cannot specify both 'keyCharacteristics' and 'readWriteDistribution' to false",
        ));
    }
    let shards = holders(state, ns, db).await?;
    let index = supporting_index(state, &shards, db, coll, &pattern).await?;
    let mut reply = Document::new();
    if req.body.get_bool("keyCharacteristics").unwrap_or(true) {
        let Some(index) = index else {
            return Err(RouterError::command(
                20,
                "IllegalOperation",
                format!("Cannot analyze the characteristics of a shard key {key} for {ns}: no index has it as a prefix"),
            ));
        };
        let metrics = characteristics(state, &shards, (db, coll), &pattern, &index, sample).await?;
        reply.insert("keyCharacteristics", metrics);
    }
    if req.body.get_bool("readWriteDistribution").unwrap_or(true) {
        let (reads, writes) = crate::query_analysis::distribution::read_write_distribution(
            state,
            (db, coll),
            &pattern,
        )
        .await?;
        reply.insert("readDistribution", reads);
        reply.insert("writeDistribution", writes);
    }
    Ok(reply)
}

/// How many documents to look at: a rate, a count, or all.
#[derive(Clone, Copy)]
enum Sample {
    All,
    Rate(f64),
    Size(i64),
}

fn sampling(req: &Request<'_>) -> Result<Sample> {
    let rate = req.body.get("sampleRate").ok().flatten().and_then(|v| {
        v.as_f64()
            .or(v.as_i32().map(f64::from))
            .or(v.as_i64().map(|n| n as f64))
    });
    let size = crate::session::number_field(req.body, "sampleSize");
    match (rate, size) {
        (Some(_), Some(_)) => Err(RouterError::command(
            72,
            "InvalidOptions",
            "Cannot specify both 'sampleRate' and 'sampleSize'",
        )),
        (Some(r), None) if r > 0.0 && r <= 1.0 => Ok(Sample::Rate(r)),
        (Some(r), None) => Err(RouterError::bad_value(format!(
            "'sampleRate' must be greater than 0 and at most 1, got {r}"
        ))),
        (None, Some(n)) if n > 0 => Ok(Sample::Size(n)),
        (None, Some(n)) => Err(RouterError::bad_value(format!(
            "'sampleSize' must be greater than 0, got {n}"
        ))),
        (None, None) => Ok(Sample::All),
    }
}

/// The shards holding the collection, the database primary first.
async fn holders(state: &RouterState, ns: &str, db: &str) -> Result<Vec<ShardType>> {
    let database = match state.placement.cached(db) {
        Some(d) => Some(d),
        None => state.catalog.database(db).await?,
    };
    let Some(database) = database else {
        return Err(not_found(ns));
    };
    let primary = state.placement.shard(&database.primary)?;
    let mut shards = vec![primary.clone()];
    if let Some(routing) = state.routing.get(ns) {
        for id in routing.chunks.shards() {
            if id != primary.id {
                shards.push(state.placement.shard(id)?);
            }
        }
        for o in &routing.orphans {
            if !shards.iter().any(|s| s.id == o.shard) {
                shards.push(state.placement.shard(&o.shard)?);
            }
        }
    }
    Ok(shards)
}

fn not_found(ns: &str) -> RouterError {
    RouterError::command(26, "NamespaceNotFound", format!("{ns} does not exist"))
}

/// The first index (on the primary) whose key starts with the candidate key.
async fn supporting_index(
    state: &RouterState,
    shards: &[ShardType],
    db: &str,
    coll: &str,
    pattern: &ShardKeyPattern,
) -> Result<Option<Document>> {
    let reply = match run_on_shard(state, &shards[0], doc! {"listIndexes": coll, "$db": db}).await {
        Ok(r) => r,
        Err(e) if e.code().0 == 26 => {
            return Err(not_found(&format!("{db}.{coll}")));
        }
        Err(e) => return Err(e),
    };
    let indexes = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .cloned()
        .unwrap_or_default();
    Ok(indexes
        .into_iter()
        .filter_map(|i| match i {
            Bson::Document(d) => Some(d),
            _ => None,
        })
        .find(|i| {
            let simple = i
                .get_document("collation")
                .map_or(true, |c| c.get_str("locale").ok() == Some("simple"));
            simple
                && i.get_document("key")
                    .is_ok_and(|k| pattern.is_prefix_of_index(k))
        }))
}

/// Per shard: documents, bytes, orphans, and each key value's count.
struct ShardCounts {
    docs: i64,
    bytes: i64,
    orphans: i64,
    groups: Vec<(Document, i64)>,
}

async fn characteristics(
    state: &RouterState,
    shards: &[ShardType],
    (db, coll): (&str, &str),
    pattern: &ShardKeyPattern,
    index: &Document,
    sample: Sample,
) -> Result<Document> {
    let ns = format!("{db}.{coll}");
    let routing = state.routing.get(&ns);
    let mut per_shard = Vec::new();
    let mut total = 0;
    for shard in shards {
        let (docs, bytes) = sizes(state, shard, db, coll).await?;
        total += docs;
        per_shard.push((shard, docs, bytes));
    }
    if total == 0 {
        return Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("Cannot analyze a shard key for an empty collection: {ns}"),
        ));
    }
    let mut counts = Vec::new();
    for (shard, docs, bytes) in per_shard {
        let take = match sample {
            Sample::All => None,
            Sample::Rate(r) => Some(((docs as f64) * r).ceil() as i64),
            Sample::Size(n) => Some(((n as f64) * (docs as f64) / (total as f64)).ceil() as i64),
        };
        let (orphans, groups) =
            shard_counts(state, shard, (db, coll), pattern, (docs, take)).await?;
        counts.push(ShardCounts {
            docs,
            bytes,
            orphans,
            groups,
        });
    }
    let docs: i64 = counts.iter().map(|c| c.docs).sum();
    let bytes: i64 = counts.iter().map(|c| c.bytes).sum();
    let merged = merge_groups(&counts);
    let sampled: i64 = merged.iter().map(|(_, n)| n).sum();
    // The `_id` index is unique though `listIndexes` does not say so.
    let unique = (index.get_bool("unique").unwrap_or(false)
        || index.get_str("name").ok() == Some("_id_"))
        && index
            .get_document("key")
            .is_ok_and(|k| k.len() == pattern.fields().count());
    let mut out = doc! {"numDocsTotal": docs};
    if routing.is_some() {
        out.insert(
            "numOrphanDocs",
            counts.iter().map(|c| c.orphans).sum::<i64>(),
        );
    }
    out.insert("avgDocSizeBytes", if docs > 0 { bytes / docs } else { 0 });
    out.insert("numDocsSampled", sampled);
    out.insert("isUnique", unique);
    out.insert("numDistinctValues", merged.len() as i64);
    let most: Vec<Bson> = merged
        .into_iter()
        .take(MOST_COMMON)
        .map(|(value, frequency)| Bson::Document(doc! {"value": value, "frequency": frequency}))
        .collect();
    out.insert("mostCommonValues", most);
    out.insert(
        "monotonicity",
        monotonicity(state, &shards[0], (db, coll), pattern).await?,
    );
    Ok(out)
}

/// Every shard's groups added up by key value, the most frequent first.
fn merge_groups(counts: &[ShardCounts]) -> Vec<(Document, i64)> {
    let mut merged: HashMap<String, (Document, i64)> = HashMap::new();
    for (value, n) in counts.iter().flat_map(|c| c.groups.iter()) {
        let entry = merged
            .entry(format!("{value:?}"))
            .or_insert_with(|| (value.clone(), 0));
        entry.1 += n;
    }
    let mut out: Vec<(Document, i64)> = merged.into_values().collect();
    out.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)))
    });
    out
}

/// The orphans on `shard` (of its `docs`) and the key values' counts among
/// the documents it owns (`take` of them at random, when sampling).
async fn shard_counts(
    state: &RouterState,
    shard: &ShardType,
    (db, coll): (&str, &str),
    pattern: &ShardKeyPattern,
    (docs, take): (i64, Option<i64>),
) -> Result<(i64, Vec<(Document, i64)>)> {
    let exclusion = match state.routing.get(&format!("{db}.{coll}")) {
        Some(r) => Some(crate::read::orphans::Exclusion::for_shard(state, &r, shard, true).await),
        None => None,
    };
    let owned = match &exclusion {
        Some(e) if e.router().is_none() => e.apply(&Document::new()),
        _ => Document::new(),
    };
    let orphans = match exclusion.as_ref().and_then(|e| e.router()) {
        Some(hashed) => hashed_orphans(state, shard, (db, coll), &hashed).await?,
        None if owned.is_empty() => 0,
        None => docs - count(state, shard, (db, coll), &owned).await?,
    };
    let groups = frequencies(state, shard, (db, coll), pattern, &owned, take).await?;
    Ok((orphans, groups))
}

/// The shard's document count and total BSON size.
async fn sizes(state: &RouterState, shard: &ShardType, db: &str, coll: &str) -> Result<(i64, i64)> {
    let cmd = doc! {
        "aggregate": coll,
        "pipeline": [{"$group": {"_id": Bson::Null, "n": {"$sum": 1}, "b": {"$sum": {"$bsonSize": "$$ROOT"}}}}],
        "cursor": {}, "$db": db,
    };
    let docs = match open_cursor(state, shard, &cmd).await {
        Ok(c) => c.all().await?,
        Err(e) if e.code().0 == 26 => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let first = docs.first();
    let num = |f: &str| {
        first
            .and_then(|d| crate::session::number_field(d, f))
            .unwrap_or(0)
    };
    Ok((num("n"), num("b")))
}

async fn count(
    state: &RouterState,
    shard: &ShardType,
    (db, coll): (&str, &str),
    filter: &Document,
) -> Result<i64> {
    let reply = run_on_shard(
        state,
        shard,
        doc! {"count": coll, "query": filter.clone(), "$db": db},
    )
    .await?;
    Ok(crate::session::int_of(reply.get("n")))
}

/// Documents on `shard` in its hashed-key orphan ranges.
async fn hashed_orphans(
    state: &RouterState,
    shard: &ShardType,
    (db, coll): (&str, &str),
    orphans: &crate::read::orphans::HashedOrphans,
) -> Result<i64> {
    let cmd = doc! {"find": coll, "$db": db};
    let docs = open_cursor(state, shard, &cmd).await?.all().await?;
    Ok(docs.iter().filter(|d| !orphans.owns(d)).count() as i64)
}

/// Each key value's count among the shard's owned documents (`take` of
/// them at random, when sampling).
async fn frequencies(
    state: &RouterState,
    shard: &ShardType,
    (db, coll): (&str, &str),
    pattern: &ShardKeyPattern,
    owned: &Document,
    take: Option<i64>,
) -> Result<Vec<(Document, i64)>> {
    let mut pipeline = Vec::new();
    if !owned.is_empty() {
        pipeline.push(doc! {"$match": owned.clone()});
    }
    if let Some(n) = take {
        pipeline.push(doc! {"$sample": {"size": n.max(1)}});
    }
    let mut group_id = Document::new();
    for (i, (field, _)) in pattern.fields().enumerate() {
        group_id.insert(format!("k{i}"), format!("${field}"));
    }
    pipeline.push(doc! {"$group": {"_id": group_id, "n": {"$sum": 1}}});
    let cmd = doc! {"aggregate": coll, "pipeline": pipeline, "cursor": {}, "allowDiskUse": true, "$db": db};
    let docs = match open_cursor(state, shard, &cmd).await {
        Ok(c) => c.all().await?,
        Err(e) if e.code().0 == 26 => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let names: Vec<&str> = pattern.fields().map(|(f, _)| f).collect();
    Ok(docs
        .iter()
        .map(|d| {
            let id = d.get_document("_id").ok();
            let mut value = Document::new();
            for (i, name) in names.iter().enumerate() {
                let v = id
                    .and_then(|id| id.get(format!("k{i}")).ok().flatten())
                    .and_then(|v| Bson::try_from(v).ok())
                    .unwrap_or(Bson::Null);
                value.insert(*name, v);
            }
            (value, crate::session::number_field(d, "n").unwrap_or(0))
        })
        .collect())
}

/// The key's order against the insertion order on `shard` (the primary,
/// whose documents most likely arrived from clients, not migrations): the
/// documents read in natural (insertion) order, then ranked by the key. A
/// mongod correlates record ids, which follow insertion order; SecantusDB's
/// `$recordId` is only a result position, so natural order serves both.
async fn monotonicity(
    state: &RouterState,
    shard: &ShardType,
    (db, coll): (&str, &str),
    pattern: &ShardKeyPattern,
) -> Result<Document> {
    let mut fields = pattern.fields();
    if let (Some((_, KeyKind::Hashed)), None) = (fields.next(), fields.next()) {
        return Ok(doc! {"recordIdCorrelationCoefficient": 0.0, "type": "not monotonic"});
    }
    if pattern.hashed_field().is_some() {
        return Ok(doc! {"type": "unknown"});
    }
    let projection: Document = pattern
        .fields()
        .map(|(f, _)| (f.to_owned(), Bson::Int32(1)))
        .collect();
    let find = doc! {
        "find": coll, "sort": {"$natural": 1}, "projection": projection,
        "limit": MONOTONICITY_SAMPLE, "$db": db,
    };
    let docs = match open_cursor(state, shard, &find).await {
        Ok(c) => c.all().await?,
        Err(_) => return Ok(doc! {"type": "unknown"}),
    };
    let mut keyed: Vec<(Vec<u8>, f64)> = Vec::with_capacity(docs.len());
    for (position, d) in docs.iter().enumerate() {
        let Ok(key) = pattern.extract_key(d) else {
            return Ok(doc! {"type": "unknown"});
        };
        keyed.push((key.into_vec(), position as f64));
    }
    if keyed.len() < 2 {
        return Ok(doc! {"type": "unknown"});
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let order: Vec<f64> = keyed.into_iter().map(|(_, p)| p).collect();
    let r = correlation(&order);
    let kind = if r.abs() >= MONOTONIC {
        "monotonic"
    } else {
        "not monotonic"
    };
    Ok(doc! {"recordIdCorrelationCoefficient": (r * 1e10).round() / 1e10, "type": kind})
}

/// Pearson's correlation of `ys` with their positions.
fn correlation(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = ys.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let (dx, dy) = (i as f64 - mean_x, y - mean_y);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    sxy / (sxx.sqrt() * syy.sqrt())
}

#[cfg(test)]
mod tests {
    use super::correlation;

    #[test]
    fn correlation_of_orders() {
        assert!((correlation(&[1.0, 2.0, 3.0, 4.0]) - 1.0).abs() < 1e-9);
        assert!((correlation(&[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-9);
        assert!(correlation(&[1.0, 4.0, 2.0, 3.0]).abs() < 0.7);
    }
}
