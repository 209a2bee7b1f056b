//! `analyzeShardKey`'s `readDistribution` and `writeDistribution`: the
//! sampled queries of the collection (its current UUID) classified against
//! the candidate key, as mongod classifies them.
//!
//! The key's value space is cut into [`NUM_RANGES`] ranges of about equal
//! document counts: [`SAMPLES_PER_RANGE`] documents per range are sampled,
//! their keys sorted, and every tenth becomes a split point (duplicates
//! collapse, so a key with few values has fewer ranges). Each range stands
//! for a shard. A query is then
//! - *single-shard* when its filter pins the whole key by equality (under
//!   the simple collation, or on values a collation does not affect);
//! - *scatter-gather* when it does not constrain the key at all;
//! - *multi-shard* otherwise, even if its ranges fall in one range, as
//!   mongod counts it;
//!
//! and adds 1 to every range it reaches (`numReadsByRange`,
//! `numWritesByRange`). A write that is not single-shard is a write without
//! the shard key, single or multi by its `multi` flag (a `findAndModify` is
//! single); a replacement selected by `_id` alone is routed by the key of
//! its replacement document. A shard key update is a sampled update whose
//! diff touches a key field. Percentages are rounded up at 10 decimals.

use std::collections::BTreeSet;
use std::sync::Arc;

use bson::{doc, oid::ObjectId, Bson, Document, RawDocumentBuf};
use shardgate_config_store::chunk_map::{ChunkMap, ChunkVersion, RoutingChunk};
use shardgate_config_store::shard_key::{KeyBytes, ShardKeyPattern};

use super::configure::{collection_uuid, read_samples};
use super::{DIFFS, SAMPLES};
use crate::error::{Result, RouterError};
use crate::read::pipeline::{self, Ctx};
use crate::state::RouterState;
use crate::targeting::{exact_key, target, Targets};

/// Ranges the candidate key's values are cut into
/// (`analyzeShardKeyNumRanges`).
pub(crate) const NUM_RANGES: usize = 100;
/// Documents sampled per range (`analyzeShardKeyNumSamplesPerRange`).
pub(crate) const SAMPLES_PER_RANGE: usize = 10;

/// Where one query goes.
#[derive(Debug, PartialEq)]
enum Class {
    Single(usize),
    Multi(Vec<usize>),
    Scatter,
}

/// The candidate key's ranges, each as its own "shard" (`r00007`).
struct Ranges {
    pattern: ShardKeyPattern,
    chunks: ChunkMap,
}

fn internal(e: impl std::fmt::Display) -> RouterError {
    RouterError::command(1, "InternalError", e.to_string())
}

impl Ranges {
    /// Ranges cut at `splits` (sorted, distinct, inside the key space).
    fn new(pattern: ShardKeyPattern, splits: Vec<KeyBytes>) -> Result<Ranges> {
        let mut bounds = vec![pattern.min_bytes()];
        bounds.extend(splits);
        bounds.push(pattern.max_bytes());
        let epoch = ObjectId::new();
        let chunks = bounds
            .windows(2)
            .enumerate()
            .map(|(i, pair)| RoutingChunk {
                min: pair[0].clone(),
                max: pair[1].clone(),
                shard: format!("r{i:05}"),
                version: ChunkVersion {
                    epoch,
                    major: 1,
                    minor: i as u32,
                },
            })
            .collect();
        let chunks = ChunkMap::for_pattern(&pattern, chunks).map_err(internal)?;
        Ok(Ranges { pattern, chunks })
    }

    fn len(&self) -> usize {
        self.chunks.len()
    }

    fn index(&self, key: &KeyBytes) -> usize {
        let shard = &self.chunks.chunk_for(key).shard;
        shard[1..].parse().unwrap_or(0)
    }

    /// Where a query with `filter` under `collation` goes.
    fn classify(&self, filter: &Document, collation: Option<&Document>) -> Class {
        let collated =
            collation.is_some_and(|c| !c.is_empty() && c.get_str("locale").ok() != Some("simple"));
        if collated && has_collatable(&Bson::Document(filter.clone())) {
            return Class::Scatter;
        }
        if let Some(key) = exact_key(&self.pattern, filter) {
            return Class::Single(self.index(&key));
        }
        let ranges = match target(&self.pattern, filter) {
            Targets::All => return Class::Scatter,
            Targets::Ranges(r) => r,
        };
        if ranges.is_empty() {
            return Class::Multi(vec![0]);
        }
        let ids = crate::targeting::shards_for(&self.chunks, &Targets::Ranges(ranges));
        let mut out: Vec<usize> = ids.iter().filter_map(|s| s[1..].parse().ok()).collect();
        out.sort_unstable();
        Class::Multi(out)
    }
}

/// Whether a filter compares a string anywhere (what a non-simple
/// collation compares differently from the key's byte order).
fn has_collatable(v: &Bson) -> bool {
    match v {
        Bson::String(_) | Bson::Symbol(_) => true,
        Bson::Array(a) => a.iter().any(has_collatable),
        Bson::Document(d) => d.values().any(has_collatable),
        _ => false,
    }
}

/// Counts of one kind of query.
#[derive(Default)]
struct Tally {
    single: i64,
    multi: i64,
    scatter: i64,
    by_range: Vec<i64>,
}

impl Tally {
    fn add(&mut self, class: &Class) {
        match class {
            Class::Single(i) => {
                self.single += 1;
                self.by_range[*i] += 1;
            }
            Class::Multi(ids) => {
                self.multi += 1;
                for i in ids {
                    self.by_range[*i] += 1;
                }
            }
            Class::Scatter => {
                self.scatter += 1;
                self.by_range.iter_mut().for_each(|n| *n += 1);
            }
        }
    }

    fn total(&self) -> i64 {
        self.single + self.multi + self.scatter
    }
}

/// `part` of `total` in percent, rounded up at 10 decimals.
fn percent(part: i64, total: i64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let p = part as f64 / total as f64 * 100.0;
    let scaled = (p * 1e10).ceil() / 1e10;
    scaled.min(100.0)
}

/// The split points: every [`SAMPLES_PER_RANGE`]-th of a sample of the
/// collection's keys.
async fn split_points(
    state: &Arc<RouterState>,
    (db, coll): (&str, &str),
    pattern: &ShardKeyPattern,
) -> Result<Vec<KeyBytes>> {
    let mut project = doc! {"_id": 0};
    for (field, _) in pattern.fields() {
        project.insert(field, 1);
    }
    let stages = vec![
        doc! {"$sample": {"size": (NUM_RANGES * SAMPLES_PER_RANGE) as i64}},
        doc! {"$project": project},
    ];
    let options = RawDocumentBuf::new();
    let ctx = Ctx::new(state, db, &options);
    let stream = pipeline::open(&ctx, Some(coll.to_owned()), stages).await?;
    let docs = pipeline::drain(stream).await?;
    let mut keys: Vec<KeyBytes> = docs
        .iter()
        .filter_map(|d| pattern.extract_key(d).ok())
        .collect();
    keys.sort();
    let min = pattern.min_bytes();
    let splits: BTreeSet<KeyBytes> = keys
        .iter()
        .skip(SAMPLES_PER_RANGE)
        .step_by(SAMPLES_PER_RANGE)
        .filter(|k| **k > min)
        .cloned()
        .collect();
    Ok(splits.into_iter().collect())
}

/// `readDistribution` and `writeDistribution` of `ns` against `pattern`.
pub(crate) async fn read_write_distribution(
    state: &Arc<RouterState>,
    (db, coll): (&str, &str),
    pattern: &ShardKeyPattern,
) -> Result<(Document, Document)> {
    let ns = format!("{db}.{coll}");
    let uuid = collection_uuid(state, &ns).await?;
    super::flush(state).await;
    let samples = read_samples(state, SAMPLES, doc! {"collectionUuid": uuid}).await?;
    if samples.is_empty() {
        return Ok((reads(&Tally::default(), [0; 4]), empty_writes()));
    }
    let diffs = read_samples(state, DIFFS, doc! {"collectionUuid": uuid}).await?;
    let splits = split_points(state, (db, coll), pattern).await?;
    let ranges = Ranges::new(pattern.clone(), splits)?;
    let mut r = Tally {
        by_range: vec![0; ranges.len()],
        ..Default::default()
    };
    let mut w = Tally {
        by_range: vec![0; ranges.len()],
        ..Default::default()
    };
    let (mut read_counts, mut write_counts) = ([0i64; 4], [0i64; 3]);
    let (mut single_without, mut multi_without) = (0i64, 0i64);
    for s in &samples {
        let cmd = s.get_document("cmd").cloned().unwrap_or_default();
        let name = s.get_str("cmdName").unwrap_or_default();
        if let Some(i) = ["find", "aggregate", "count", "distinct"]
            .iter()
            .position(|n| *n == name)
        {
            read_counts[i] += 1;
            let filter = cmd.get_document("filter").cloned().unwrap_or_default();
            r.add(&ranges.classify(&filter, cmd.get_document("collation").ok()));
            continue;
        }
        let Some((i, class, multi)) = classify_write(&ranges, name, &cmd) else {
            continue;
        };
        write_counts[i] += 1;
        if !matches!(class, Class::Single(_)) {
            if multi {
                multi_without += 1;
            } else {
                single_without += 1;
            }
        }
        w.add(&class);
    }
    let key_updates = diffs
        .iter()
        .filter(|d| touches_key(d.get_document("diff").ok(), pattern))
        .count() as i64;
    let key_updates = key_updates.min(w.total());
    let mut writes = writes(&w, write_counts);
    if w.total() > 0 {
        writes.insert(
            "percentageOfShardKeyUpdates",
            percent(key_updates, w.total()),
        );
        writes.insert(
            "percentageOfSingleWritesWithoutShardKey",
            percent(single_without, w.total()),
        );
        writes.insert(
            "percentageOfMultiWritesWithoutShardKey",
            percent(multi_without, w.total()),
        );
    }
    Ok((reads(&r, read_counts), writes))
}

/// A write sample's kind (index into update/delete/findAndModify), where it
/// goes and whether it is `multi`.
fn classify_write(ranges: &Ranges, name: &str, cmd: &Document) -> Option<(usize, Class, bool)> {
    let first = |list: &str| -> Option<Document> {
        cmd.get_array(list).ok()?.first()?.as_document().cloned()
    };
    match name {
        "update" => {
            let stmt = first("updates")?;
            let q = stmt.get_document("q").cloned().unwrap_or_default();
            let mut class = ranges.classify(&q, stmt.get_document("collation").ok());
            let upsert = stmt.get_bool("upsert").unwrap_or(false);
            if let (false, false, Ok(u)) = (
                matches!(class, Class::Single(_)),
                upsert,
                stmt.get_document("u"),
            ) {
                let replacement = u.keys().next().is_some_and(|k| !k.starts_with('$'));
                if replacement && is_exact_id(&q) {
                    if let Ok(raw) = RawDocumentBuf::try_from(u) {
                        if let Ok(key) = ranges.pattern.extract_key(&raw) {
                            class = Class::Single(ranges.index(&key));
                        }
                    }
                }
            }
            Some((0, class, stmt.get_bool("multi").unwrap_or(false)))
        }
        "delete" => {
            let stmt = first("deletes")?;
            let q = stmt.get_document("q").cloned().unwrap_or_default();
            let class = ranges.classify(&q, stmt.get_document("collation").ok());
            let limit = crate::query_analysis::number(stmt.get("limit")).unwrap_or(0.0);
            Some((1, class, limit == 0.0))
        }
        "findAndModify" => {
            let q = cmd.get_document("query").cloned().unwrap_or_default();
            Some((
                2,
                ranges.classify(&q, cmd.get_document("collation").ok()),
                false,
            ))
        }
        _ => None,
    }
}

/// `{_id: v}` with `v` a plain value (not an operator document).
fn is_exact_id(q: &Document) -> bool {
    q.len() == 1
        && match q.get("_id") {
            Some(Bson::Document(d)) => !d.keys().any(|k| k.starts_with('$')),
            Some(Bson::RegularExpression(_) | Bson::Array(_)) | None => false,
            Some(_) => true,
        }
}

/// Whether a diff changes a field of the key: the field itself, or a
/// parent of a dotted field replaced whole.
fn touches_key(diff: Option<&Document>, pattern: &ShardKeyPattern) -> bool {
    let Some(diff) = diff else { return false };
    pattern.fields().any(|(field, _)| {
        let mut at = diff;
        let parts: Vec<&str> = field.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            match at.get(*part) {
                None => return false,
                Some(Bson::Document(d)) if i + 1 < parts.len() => at = d,
                Some(_) => return true,
            }
        }
        true
    })
}

fn reads(t: &Tally, counts: [i64; 4]) -> Document {
    let total: i64 = counts.iter().sum();
    let mut d = doc! {"sampleSize": {
        "total": total, "find": counts[0], "aggregate": counts[1],
        "count": counts[2], "distinct": counts[3],
    }};
    if total > 0 {
        d.insert("percentageOfSingleShardReads", percent(t.single, total));
        d.insert("percentageOfMultiShardReads", percent(t.multi, total));
        d.insert("percentageOfScatterGatherReads", percent(t.scatter, total));
        d.insert("numReadsByRange", t.by_range.clone());
    }
    d
}

fn empty_writes() -> Document {
    writes(&Tally::default(), [0; 3])
}

fn writes(t: &Tally, counts: [i64; 3]) -> Document {
    let total: i64 = counts.iter().sum();
    let mut d = doc! {"sampleSize": {
        "total": total, "update": counts[0], "delete": counts[1], "findAndModify": counts[2],
    }};
    if total > 0 {
        d.insert("percentageOfSingleShardWrites", percent(t.single, total));
        d.insert("percentageOfMultiShardWrites", percent(t.multi, total));
        d.insert("percentageOfScatterGatherWrites", percent(t.scatter, total));
        d.insert("numWritesByRange", t.by_range.clone());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(key: Document, splits: &[Document]) -> Ranges {
        let pattern = ShardKeyPattern::parse(&key).unwrap();
        let splits = splits
            .iter()
            .map(|s| pattern.encode_bound(s).unwrap())
            .collect();
        Ranges::new(pattern, splits).unwrap()
    }

    #[test]
    fn queries_are_single_multi_or_scatter() {
        let r = ranges(doc! {"a": 1}, &[doc! {"a": 10}, doc! {"a": 20}]);
        assert_eq!(r.len(), 3);
        assert_eq!(r.classify(&doc! {"a": 15}, None), Class::Single(1));
        assert_eq!(r.classify(&doc! {"a": 5, "b": 1}, None), Class::Single(0));
        // A range is multi-shard even inside one range.
        assert_eq!(
            r.classify(&doc! {"a": {"$gt": 11, "$lt": 12}}, None),
            Class::Multi(vec![1])
        );
        assert_eq!(
            r.classify(&doc! {"a": {"$in": [1, 25]}}, None),
            Class::Multi(vec![0, 2])
        );
        assert_eq!(r.classify(&doc! {"b": 1}, None), Class::Scatter);
        assert_eq!(r.classify(&doc! {}, None), Class::Scatter);
        // A collation only matters where strings are compared.
        let fr = doc! {"locale": "fr"};
        assert_eq!(r.classify(&doc! {"a": 15}, Some(&fr)), Class::Single(1));
        assert_eq!(r.classify(&doc! {"a": "x"}, Some(&fr)), Class::Scatter);
        assert_eq!(
            r.classify(&doc! {"a": "x"}, Some(&doc! {"locale": "simple"})),
            Class::Single(2)
        );
    }

    #[test]
    fn writes_without_the_key_and_replacements_by_id() {
        let r = ranges(doc! {"a": 1}, &[doc! {"a": 10}]);
        let update = |q: Document, u: Document, multi: bool| {
            doc! {"update": "c", "updates": [{"q": q, "u": u, "multi": multi}]}
        };
        let (_, c, multi) = classify_write(
            &r,
            "update",
            &update(doc! {"_id": 1}, doc! {"a": 12, "x": 1}, false),
        )
        .unwrap();
        assert_eq!((c, multi), (Class::Single(1), false));
        let (_, c, _) = classify_write(
            &r,
            "update",
            &update(doc! {"_id": 1}, doc! {"$set": {"a": 12}}, false),
        )
        .unwrap();
        assert_eq!(c, Class::Scatter);
        let (_, _, multi) = classify_write(
            &r,
            "update",
            &update(doc! {"x": 1}, doc! {"$set": {"y": 1}}, true),
        )
        .unwrap();
        assert!(multi);
        let del = doc! {"delete": "c", "deletes": [{"q": {"a": 3}, "limit": 0}]};
        let (i, c, multi) = classify_write(&r, "delete", &del).unwrap();
        assert_eq!((i, c, multi), (1, Class::Single(0), true));
    }

    #[test]
    fn key_updates_are_read_from_diffs() {
        let p = ShardKeyPattern::parse(&doc! {"a.b": 1}).unwrap();
        assert!(touches_key(Some(&doc! {"a": {"b": "u"}}), &p));
        assert!(touches_key(Some(&doc! {"a": "u"}), &p));
        assert!(!touches_key(Some(&doc! {"a": {"c": "u"}}), &p));
        assert!(!touches_key(Some(&doc! {"x": "u"}), &p));
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(percent(1, 3), 33.3333333334);
        assert_eq!(percent(3, 3), 100.0);
        assert_eq!(percent(0, 3), 0.0);
    }
}
