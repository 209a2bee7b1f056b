//! A resharding's plan: the old chunks and the new ones (split at
//! quantiles of a sample of the new key's values, contiguous runs per
//! shard), who owns a document under each, the orphan ranges that hide
//! what a shard holds without owning it, and the shards made ready.

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf, Timestamp};
use shardgate_config_store::catalog::{new_chunk, CollectionVersion, RESHARD_MAX_OPS};
use shardgate_config_store::chunk_map::{ChunkMap, ChunkVersion, RoutingChunk};
use shardgate_config_store::model::CollectionType;
use shardgate_config_store::model::{ChunkType, OrphanRange, TagType};
use shardgate_config_store::shard_key::{KeyBytes, ShardKeyPattern};
use shardgate_config_store::ShardType;

use crate::commands::shard_collection::{collection_options, create_shard_key_index, KeyIndex};
use crate::commands::sharding::key_error;
use crate::error::{Result, RouterError};
use crate::session::Namespace;
use crate::shards::run_on_shard;
use crate::state::RouterState;

/// Documents each shard samples for the split points.
const SAMPLE: i64 = 1_000;

/// Chunk bounds and owner, sorted by `min`.
pub(super) type Bounds = Vec<(Document, Document, String)>;

/// The old layout and the new one.
pub(super) struct Layout {
    pub old_pattern: ShardKeyPattern,
    pub old_chunks: Bounds,
    old_map: ChunkMap,
    pub new_pattern: ShardKeyPattern,
    pub new_chunks: Bounds,
    new_map: ChunkMap,
    /// The new key's zone ranges.
    pub new_zones: Vec<TagType>,
    /// Every shard, by id.
    pub shards: Vec<ShardType>,
}

impl Layout {
    /// The shard owning `doc` under the old key.
    pub fn old_owner(&self, doc: &RawDocument) -> Option<&str> {
        let key = self.old_pattern.extract_key(doc).ok()?;
        Some(self.old_map.chunk_for(&key).shard.as_str())
    }

    /// The old key's fields: what decides a document's owner while the
    /// copy runs.
    pub fn old_pins(&self) -> Vec<&str> {
        self.old_pattern.fields().map(|(f, _)| f).collect()
    }

    /// The shard owning `doc` under the new key.
    pub fn new_owner(&self, doc: &RawDocument) -> Result<&str> {
        let key = self.new_pattern.extract_key(doc).map_err(key_error)?;
        Ok(self.new_map.chunk_for(&key).shard.as_str())
    }

    /// The new chunks as the store records them for `coll` (new epoch).
    pub fn chunk_types(&self, coll: &CollectionType, now: Timestamp) -> Vec<ChunkType> {
        self.new_chunks
            .iter()
            .enumerate()
            .map(|(i, (min, max, shard))| {
                let version = CollectionVersion {
                    major: 1,
                    minor: i as u32,
                };
                new_chunk(coll, min.clone(), max.clone(), shard, version, now)
            })
            .collect()
    }
}

/// Plans the resharding of `coll` to `pattern` into `chunks` chunks (0:
/// as many as it has now, at least one per shard).
pub(super) async fn plan(
    state: &RouterState,
    coll: &CollectionType,
    pattern: &ShardKeyPattern,
    (chunks, zone_spec): (i64, &[Bson]),
) -> Result<Layout> {
    let (old_pattern, old_chunks, old_map, shards) = old_layout(state, coll).await?;
    let wanted = if chunks > 0 {
        chunks as usize
    } else {
        old_chunks.len().max(shards.len())
    };
    // The store swaps old and new chunks and orphan ranges in one
    // transaction; keep within it.
    let room = RESHARD_MAX_OPS.saturating_sub(2 + 2 * old_chunks.len() + 3 * shards.len()) / 2;
    let keys = sample(state, coll, pattern, &shards).await?;
    let zones = zones(&coll.ns, pattern, zone_spec, &shards)?;
    let new_chunks = split(pattern, &keys, wanted.min(room).max(1), &shards, &zones)?;
    let new_map = map_of(pattern, &new_chunks)?;
    Ok(Layout {
        old_pattern,
        old_chunks,
        old_map,
        new_pattern: pattern.clone(),
        new_chunks,
        new_map,
        new_zones: zones.into_iter().map(|z| z.range).collect(),
        shards,
    })
}

/// The layout that gathers every document of `coll` on `shard` (one chunk
/// of `{_id: 1}`), for `unshardCollection`.
pub(super) async fn onto(
    state: &RouterState,
    coll: &CollectionType,
    shard: &str,
) -> Result<Layout> {
    let (old_pattern, old_chunks, old_map, shards) = old_layout(state, coll).await?;
    let pattern = ShardKeyPattern::parse(&bson::doc! {"_id": 1}).map_err(key_error)?;
    let new_chunks = vec![(pattern.global_min(), pattern.global_max(), shard.to_owned())];
    let new_map = map_of(&pattern, &new_chunks)?;
    Ok(Layout {
        old_pattern,
        old_chunks,
        old_map,
        new_pattern: pattern,
        new_chunks,
        new_map,
        new_zones: Vec::new(),
        shards,
    })
}

/// The collection's key, chunks (sorted) and chunk map now, and every shard.
async fn old_layout(
    state: &RouterState,
    coll: &CollectionType,
) -> Result<(ShardKeyPattern, Bounds, ChunkMap, Vec<ShardType>)> {
    let old_pattern = ShardKeyPattern::parse(&coll.key).map_err(key_error)?;
    let mut shards = state.placement.shards();
    shards.sort_by(|a, b| a.id.cmp(&b.id));
    let mut old_chunks: Bounds = state
        .catalog
        .chunks(&coll.ns)
        .await?
        .into_iter()
        .map(|(c, _)| (c.min, c.max, c.shard))
        .collect();
    sort_bounds(&old_pattern, &mut old_chunks)?;
    let old_map = map_of(&old_pattern, &old_chunks)?;
    Ok((old_pattern, old_chunks, old_map, shards))
}

fn sort_bounds(pattern: &ShardKeyPattern, bounds: &mut Bounds) -> Result<()> {
    let mut keyed = Vec::with_capacity(bounds.len());
    for b in bounds.drain(..) {
        keyed.push((pattern.encode_bound(&b.0).map_err(key_error)?, b));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    bounds.extend(keyed.into_iter().map(|(_, b)| b));
    Ok(())
}

fn map_of(pattern: &ShardKeyPattern, bounds: &Bounds) -> Result<ChunkMap> {
    let epoch = bson::oid::ObjectId::new();
    let mut chunks = Vec::with_capacity(bounds.len());
    for (i, (min, max, shard)) in bounds.iter().enumerate() {
        chunks.push(RoutingChunk {
            min: pattern.encode_bound(min).map_err(key_error)?,
            max: pattern.encode_bound(max).map_err(key_error)?,
            shard: shard.clone(),
            version: ChunkVersion {
                epoch,
                major: 1,
                minor: i as u32,
            },
        });
    }
    ChunkMap::new(chunks).map_err(|e| RouterError::command(1, "InternalError", e.to_string()))
}

/// The new key of a sample of each shard's documents, sorted, distinct.
async fn sample(
    state: &RouterState,
    coll: &CollectionType,
    pattern: &ShardKeyPattern,
    shards: &[ShardType],
) -> Result<Vec<(KeyBytes, Document)>> {
    let Namespace { db, coll: name } = Namespace::parse(&coll.ns);
    let mut keys = Vec::new();
    for shard in shards {
        let cmd = doc! {"aggregate": name, "pipeline": [{"$sample": {"size": SAMPLE}}], "cursor": {}, "$db": db};
        let docs = match crate::shards::open_cursor(state, shard, &cmd).await {
            Ok(cursor) => cursor.all().await?,
            Err(e) if e.code().0 == 26 => continue,
            Err(e) => return Err(e),
        };
        for d in docs {
            let key = pattern.extract_key(&d).map_err(key_error)?;
            let document = pattern.key_document(&d).map_err(key_error)?;
            keys.push((key, document));
        }
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys.dedup_by(|a, b| a.0 == b.0);
    Ok(keys)
}

/// `wanted` chunks split at quantiles of `keys` and at every zone bound;
/// a chunk inside a zone range goes to that zone's shards in turn, the
/// others in contiguous runs over `shards`.
fn split(
    pattern: &ShardKeyPattern,
    keys: &[(KeyBytes, Document)],
    wanted: usize,
    shards: &[ShardType],
    zones: &[Zone],
) -> Result<Bounds> {
    let global_min = pattern
        .encode_bound(&pattern.global_min())
        .map_err(key_error)?;
    let global_max = pattern
        .encode_bound(&pattern.global_max())
        .map_err(key_error)?;
    let mut points: Vec<(KeyBytes, Document)> = (1..wanted)
        .filter_map(|i| keys.get(i * keys.len() / wanted).cloned())
        .collect();
    for z in zones {
        points.push((z.min.clone(), z.range.min.clone()));
        points.push((z.max.clone(), z.range.max.clone()));
    }
    points.sort_by(|a, b| a.0.cmp(&b.0));
    points.dedup_by(|a, b| a.0 == b.0);
    points.retain(|p| p.0 > global_min && p.0 < global_max);
    let mut bounds = Vec::with_capacity(points.len() + 1);
    let (mut min, mut min_key) = (pattern.global_min(), global_min);
    for (key, doc) in points {
        bounds.push((min, min_key.clone(), doc.clone()));
        (min, min_key) = (doc, key);
    }
    bounds.push((min, min_key, pattern.global_max()));
    let n = bounds.len();
    let mut turns = vec![0usize; zones.len()];
    Ok(bounds
        .into_iter()
        .enumerate()
        .map(|(i, (min, min_key, max))| {
            let zoned = zones
                .iter()
                .position(|z| z.min <= min_key && min_key < z.max);
            let shard = match zoned {
                Some(z) => {
                    turns[z] += 1;
                    zones[z].shards[(turns[z] - 1) % zones[z].shards.len()].clone()
                }
                None => shards[i * shards.len() / n].id.clone(),
            };
            (min, max, shard)
        })
        .collect())
}

/// A zone range of the new key, encoded, with its zone's shards.
pub(super) struct Zone {
    pub range: TagType,
    min: KeyBytes,
    max: KeyBytes,
    shards: Vec<String>,
}

/// The `zones` of a `reshardCollection` (`[{zone, min, max}]`) checked
/// against the new key and the shards' zones: BadValue when malformed,
/// overlapping, or naming a zone no shard has.
pub(super) fn zones(
    ns: &str,
    pattern: &ShardKeyPattern,
    spec: &[Bson],
    shards: &[ShardType],
) -> Result<Vec<Zone>> {
    let mut out: Vec<Zone> = Vec::new();
    for z in spec {
        let bad = || RouterError::bad_value(format!("invalid zone for reshardCollection: {z}"));
        let d = z.as_document().ok_or_else(bad)?;
        let (Ok(tag), Ok(min), Ok(max)) = (
            d.get_str("zone"),
            d.get_document("min"),
            d.get_document("max"),
        ) else {
            return Err(bad());
        };
        let (lo, hi) = (
            pattern.encode_bound(min).map_err(key_error)?,
            pattern.encode_bound(max).map_err(key_error)?,
        );
        if lo >= hi || out.iter().any(|o| lo < o.max && o.min < hi) {
            return Err(RouterError::bad_value(format!(
                "zone range {min} - {max} is empty or overlaps another"
            )));
        }
        let holders: Vec<String> = shards
            .iter()
            .filter(|s| s.tags.iter().any(|t| t == tag))
            .map(|s| s.id.clone())
            .collect();
        if holders.is_empty() {
            return Err(RouterError::bad_value(format!(
                "zone {tag} is not assigned to any shard"
            )));
        }
        let range = TagType {
            id: bson::oid::ObjectId::new(),
            ns: ns.to_owned(),
            min: min.clone(),
            max: max.clone(),
            tag: tag.to_owned(),
        };
        out.push(Zone {
            range,
            min: lo,
            max: hi,
            shards: holders,
        });
    }
    Ok(out)
}

/// For each shard, the ranges of `chunks` it does not own (maximal runs),
/// as orphan ranges of `ns`.
pub(super) fn orphans_of(
    ns: &str,
    _pattern: &ShardKeyPattern,
    chunks: &Bounds,
    shards: &[ShardType],
) -> Vec<OrphanRange> {
    let mut out = Vec::new();
    for shard in shards {
        let mut run: Option<(Document, Document)> = None;
        for (min, max, owner) in chunks {
            if *owner == shard.id {
                out.extend(run.take().map(|(min, max)| orphan(ns, shard, min, max)));
            } else {
                run = Some(match run.take() {
                    Some((start, _)) => (start, max.clone()),
                    None => (min.clone(), max.clone()),
                });
            }
        }
        out.extend(run.map(|(min, max)| orphan(ns, shard, min, max)));
    }
    out
}

fn orphan(ns: &str, shard: &ShardType, min: Document, max: Document) -> OrphanRange {
    OrphanRange {
        ns: ns.to_owned(),
        shard: shard.id.clone(),
        min,
        max,
    }
}

/// Every shard gets the collection (the options and indexes of a shard
/// holding it) and the new key's index.
pub(super) async fn prepare_shards(
    state: &RouterState,
    coll: &CollectionType,
    layout: &Layout,
) -> Result<()> {
    let Namespace { db, coll: name } = Namespace::parse(&coll.ns);
    let holder = layout
        .old_chunks
        .first()
        .and_then(|(_, _, s)| layout.shards.iter().find(|x| x.id == *s))
        .ok_or_else(|| {
            RouterError::command(70, "ShardNotFound", "no shard holds the collection")
        })?;
    let options = collection_options(state, holder, db, name).await?;
    let index = KeyIndex {
        pattern: &layout.new_pattern,
        unique: false,
        default_collation: coll.default_collation.clone(),
    };
    for shard in &layout.shards {
        if shard.id != holder.id {
            let mut create = doc! {"create": name};
            create.extend(options.clone());
            create.insert("$db", db);
            match run_on_shard(state, shard, create).await {
                Err(e) if e.code().0 != 48 => return Err(e),
                _ => {}
            }
            crate::ddl::move_primary::copy_indexes(state, holder, shard, db, name).await?;
        }
        create_shard_key_index(state, shard, db, name, &index).await?;
    }
    Ok(())
}

/// `doc`'s `_id`.
pub(super) fn id_of(doc: &RawDocumentBuf) -> Option<Bson> {
    doc.get("_id")
        .ok()
        .flatten()
        .and_then(|v| Bson::try_from(v).ok())
}
