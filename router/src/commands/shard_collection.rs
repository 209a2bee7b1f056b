//! `shardCollection`: the key checked, the supporting index on the
//! primary (and on every shard that gets a chunk), the initial chunks
//! (one on the primary, or pre-split by zones or by hash) recorded.

use std::sync::Arc;

use bson::{doc, Bson, Document};
use shardgate_config_store::catalog::{new_chunk, CollectionVersion};
use shardgate_config_store::model::{ChunkType, CollectionType, TagType};
use shardgate_config_store::shard_key::{KeyKind, ShardKeyError, ShardKeyPattern};
use shardgate_config_store::ShardType;

use super::admin::admin_only;
use super::sharding::{document_arg, key_error, name_arg, now_ts, split_ns};
use super::Request;
use crate::error::{Result, RouterError};
use crate::shards::run_on_shard;
use crate::state::RouterState;
/// `collation` and `presplitHashedZones` as mongos checks them: the
/// shard key's collation must be simple (the chunk bounds compare binary);
/// pre-splitting by zones needs zones on the namespace (an empty
/// collection is then split at every zone range, on the zone's shards).
async fn check_options(state: &RouterState, req: &Request<'_>, ns: &str) -> Result<()> {
    if let Ok(collation) = req.body.get_document("collation") {
        if collation.get_str("locale").ok() != Some("simple") || collation.iter().count() != 1 {
            return Err(RouterError::bad_value(
                "The collation for shardCollection must be {locale: 'simple'}",
            ));
        }
    }
    if req.body.get_bool("presplitHashedZones").unwrap_or(false)
        && state.catalog.zone_ranges(ns).await?.is_empty()
    {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            format!("presplitHashedZones is set but no zones are defined for {ns}"),
        ));
    }
    Ok(())
}

/// The shard key's index: its key, uniqueness, and the collection's
/// default collation (the index then names the simple one).
pub(crate) struct KeyIndex<'a> {
    pub pattern: &'a ShardKeyPattern,
    pub unique: bool,
    pub default_collation: Option<Document>,
}

/// The options the collection was created with on `primary` (none when
/// it does not exist yet).
pub(crate) async fn collection_options(
    state: &RouterState,
    primary: &ShardType,
    db: &str,
    coll: &str,
) -> Result<Document> {
    let list = doc! {"listCollections": 1, "filter": {"name": coll}, "$db": db};
    let reply = run_on_shard(state, primary, list).await?;
    Ok(reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| b.iter().filter_map(Bson::as_document).next())
        .and_then(|c| c.get_document("options").ok())
        .cloned()
        .unwrap_or_default())
}

/// The UUID `shard` gives the collection (`listCollections`' `info.uuid`).
async fn collection_uuid(
    state: &RouterState,
    shard: &ShardType,
    (db, coll): (&str, &str),
    otherwise: bson::Uuid,
) -> bson::Uuid {
    listed_uuid(state, shard, db, coll)
        .await
        .unwrap_or(otherwise)
}

async fn listed_uuid(
    state: &RouterState,
    shard: &ShardType,
    db: &str,
    coll: &str,
) -> Option<bson::Uuid> {
    let list = doc! {"listCollections": 1, "filter": {"name": coll}, "$db": db};
    let reply = run_on_shard(state, shard, list).await.ok()?;
    let first = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()?
        .iter()
        .find_map(Bson::as_document)?
        .clone();
    match first.get_document("info").ok()?.get("uuid")? {
        Bson::Binary(b) => Some(bson::Uuid::from_bytes(b.bytes.as_slice().try_into().ok()?)),
        _ => None,
    }
}

/// The collection's default collation when not the simple one; as on
/// mongos, sharding such a collection needs `collation: {locale:
/// 'simple'}` for the shard key (BadValue otherwise).
fn default_collation(req: &Request<'_>, options: &Document) -> Result<Option<Document>> {
    let Ok(collation) = options.get_document("collation") else {
        return Ok(None);
    };
    if collation.get_str("locale").ok() == Some("simple") {
        return Ok(None);
    }
    if req.body.get_document("collation").is_err() {
        return Err(RouterError::bad_value(format!(
            "Collection has default collation: {collation}. Must specify collation {{locale: 'simple'}}"
        )));
    }
    Ok(Some(collation.clone()))
}

/// `unique` and `numInitialChunks` checked against the key; the number of
/// initial chunks asked for, if any.
fn initial_chunks_arg(
    req: &Request<'_>,
    pattern: &ShardKeyPattern,
    unique: bool,
) -> Result<Option<i64>> {
    if unique && pattern.hashed_field().is_some() {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            "hashed shard keys cannot be declared unique",
        ));
    }
    let Ok(Some(v)) = req.body.get("numInitialChunks") else {
        return Ok(None);
    };
    let n = v
        .as_i32()
        .map(i64::from)
        .or(v.as_i64())
        .or(v.as_f64().map(|f| f as i64))
        .filter(|n| (1..=8192).contains(n))
        .ok_or_else(|| {
            RouterError::command(
                72,
                "InvalidOptions",
                "numInitialChunks must be between 1 and 8192",
            )
        })?;
    if !hashed_prefix(pattern) {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            "numInitialChunks is only supported when the shard key starts with a hashed field",
        ));
    }
    Ok(Some(n))
}

/// The first chunks of a newly sharded collection: an empty collection is
/// pre-split by zones or by hash; anything else starts as one chunk on the
/// primary.
fn initial_chunks(
    collection: &CollectionType,
    pattern: &ShardKeyPattern,
    non_empty: bool,
    num_initial: Option<i64>,
    zones: &[TagType],
    shards: &[ShardType],
    primary: &str,
) -> Result<Vec<ChunkType>> {
    if !non_empty && !zones.is_empty() {
        zone_chunks(collection, pattern, zones, shards, primary)
    } else if !non_empty && hashed_prefix(pattern) {
        let n = num_initial.unwrap_or(2 * shards.len().max(1) as i64);
        Ok(hashed_chunks(collection, pattern, n, shards))
    } else {
        Ok(vec![new_chunk(
            collection,
            pattern.global_min(),
            pattern.global_max(),
            primary,
            CollectionVersion { major: 1, minor: 0 },
            now_ts(),
        )])
    }
}

/// `shardCollection`: validates the key, checks or builds the supporting
/// index on the primary shard, creates the initial chunks and records them.
pub(crate) async fn shard_collection(
    state: &Arc<RouterState>,
    req: &Request<'_>,
) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let (db, coll_name) = split_ns(ns)?;
    let key = document_arg(req.body, "key")?;
    let pattern = ShardKeyPattern::parse(&key).map_err(key_error)?;
    let unique = req.body.get_bool("unique").unwrap_or(false);
    let num_initial = initial_chunks_arg(req, &pattern, unique)?;
    check_options(state, req, ns).await?;
    let database = match state.placement.cached(db) {
        Some(d) => d,
        None => state.catalog.database(db).await?.ok_or_else(|| {
            RouterError::command(
                26,
                "NamespaceNotFound",
                format!("database {db} not found: create it or run enableSharding first"),
            )
        })?,
    };
    if let Some(done) = existing(state, ns, (&pattern, unique), &database.primary).await? {
        return Ok(done);
    }
    let primary = state.placement.shard(&database.primary)?;
    let options = collection_options(state, &primary, db, coll_name).await?;
    let index = KeyIndex {
        pattern: &pattern,
        unique,
        default_collation: default_collation(req, &options)?,
    };
    let non_empty = prepare_primary(state, &primary, ns, &index).await?;
    let zones = state.catalog.zone_ranges(ns).await?;
    let shards = state.placement.shards();
    let mut collection = CollectionType {
        default_collation: index.default_collation.clone(),
        ..CollectionType::new(ns, pattern.to_document(), unique, now_ts())
    };
    // As mongos: the collection's own UUID (the primary's).
    collection.uuid = collection_uuid(state, &primary, (db, coll_name), collection.uuid).await;
    let chunks = initial_chunks(
        &collection,
        &pattern,
        non_empty,
        num_initial,
        &zones,
        &shards,
        &primary.id,
    )?;
    for shard in owners(&chunks, &shards) {
        if shard.id != primary.id {
            prepare_owner(state, &shard, (db, coll_name), &options, &index).await?;
        }
    }
    if !state
        .catalog
        .create_sharded_collection(&collection, &chunks)
        .await?
    {
        let existing = state.catalog.collection(ns).await?.ok_or_else(|| {
            RouterError::command(
                117,
                "ConflictingOperationInProgress",
                format!("{ns} changed while being sharded; retry"),
            )
        })?;
        return already_sharded(&existing, &pattern, unique);
    }
    state.routing.refresh(&state.catalog, ns).await?;
    record_event(state, req, &collection).await;
    super::cluster::log_change(
        state,
        "shardCollection.end",
        ns,
        doc! {"version": "1|0", "numChunks": chunks.len() as i64, "primary": &primary.id},
    )
    .await;
    Ok(doc! {"collectionsharded": ns, "collectionUUID": collection.uuid})
}

/// A shard getting initial chunks other than the primary: the collection
/// as the primary has it (its default collation…), and the key's index.
async fn prepare_owner(
    state: &RouterState,
    shard: &ShardType,
    (db, coll): (&str, &str),
    options: &Document,
    index: &KeyIndex<'_>,
) -> Result<()> {
    let mut create = doc! {"create": coll};
    create.extend(options.clone());
    create.insert("$db", db);
    match run_on_shard(state, shard, create).await {
        Err(e) if e.code().0 != 48 => return Err(e),
        _ => {}
    }
    create_shard_key_index(state, shard, db, coll, index).await
}

/// The `shardCollection` event of expanded change streams.
async fn record_event(state: &RouterState, req: &Request<'_>, coll: &CollectionType) {
    let desc = doc! {
        "shardKey": &coll.key, "unique": coll.unique,
        "presplitHashedZones": req.body.get_bool("presplitHashedZones").unwrap_or(false),
    };
    let uuid = Bson::Binary(coll.uuid.into());
    crate::change_streams::ddl_events::record(state, &coll.ns, "shardCollection", desc, uuid).await;
}

/// Whether the collection holds documents; its supporting index checked on
/// the primary shard, or built there when the collection is empty.
async fn prepare_primary(
    state: &RouterState,
    primary: &ShardType,
    ns: &str,
    index: &KeyIndex<'_>,
) -> Result<bool> {
    let (db, coll) = split_ns(ns)?;
    let (pattern, unique) = (index.pattern, index.unique);
    let count = run_on_shard(state, primary, doc! {"count": coll, "$db": db}).await?;
    let non_empty = number(count.get("n")) > 0;
    if !has_supporting_index(state, primary, db, coll, pattern, unique).await? {
        if non_empty {
            return Err(RouterError::command(
                72,
                "InvalidOptions",
                format!(
                    "Please create an index that starts with the proposed shard key {} before sharding the non-empty collection {ns}",
                    pattern.to_document()
                ),
            ));
        }
        create_shard_key_index(state, primary, db, coll, index).await?;
    }
    Ok(non_empty)
}

/// The answer when `ns` is tracked already: sharded (the same key is ok),
/// or moved by `moveCollection` ([`shard_tracked`]); `None`: shard it.
///
/// [`shard_tracked`]: crate::ddl::move_collection::shard_tracked
async fn existing(
    state: &Arc<RouterState>,
    ns: &str,
    (pattern, unique): (&ShardKeyPattern, bool),
    primary: &str,
) -> Result<Option<Document>> {
    match state.catalog.collection(ns).await? {
        None => Ok(None),
        Some(c) if !c.unsplittable => already_sharded(&c, pattern, unique).map(Some),
        Some(c) => {
            crate::ddl::move_collection::shard_tracked(state, c, (pattern, unique), primary).await
        }
    }
}

fn already_sharded(
    existing: &CollectionType,
    pattern: &ShardKeyPattern,
    unique: bool,
) -> Result<Document> {
    if existing.key == pattern.to_document() && existing.unique == unique {
        return Ok(doc! {"collectionsharded": &existing.ns, "collectionUUID": existing.uuid});
    }
    Err(RouterError::command(
        23,
        "AlreadyInitialized",
        format!(
            "sharding already enabled for collection {} with options {{ key: {}, unique: {} }}",
            existing.ns, existing.key, existing.unique
        ),
    ))
}

use crate::session::int_of as number;

/// Whether the key starts with a hashed field (chunks can be pre-split by hash).
fn hashed_prefix(pattern: &ShardKeyPattern) -> bool {
    pattern
        .fields()
        .next()
        .is_some_and(|(_, kind)| kind == KeyKind::Hashed)
}

pub(super) async fn has_supporting_index(
    state: &RouterState,
    shard: &ShardType,
    db: &str,
    coll: &str,
    pattern: &ShardKeyPattern,
    unique: bool,
) -> Result<bool> {
    let reply = match run_on_shard(state, shard, doc! {"listIndexes": coll, "$db": db}).await {
        Ok(r) => r,
        Err(e) if e.code().0 == 26 => return Ok(false),
        Err(e) => return Err(e),
    };
    let batch = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Ok(batch.iter().filter_map(Bson::as_document).any(|ix| {
        let key_ok = ix
            .get_document("key")
            .is_ok_and(|k| pattern.is_prefix_of_index(k));
        let is_id = ix.get_str("name").ok() == Some("_id_");
        // Chunk bounds compare binary: the index must too.
        let simple = ix
            .get_document("collation")
            .map_or(true, |c| c.get_str("locale").ok() == Some("simple"));
        key_ok && simple && (!unique || is_id || ix.get_bool("unique").unwrap_or(false))
    }))
}

/// Creates the shard-key index; a shard that cannot build a hashed index
/// gets an ascending one on the field, which still serves equality.
pub(crate) async fn create_shard_key_index(
    state: &RouterState,
    shard: &ShardType,
    db: &str,
    coll: &str,
    index: &KeyIndex<'_>,
) -> Result<()> {
    let (pattern, unique) = (index.pattern, index.unique);
    let key = pattern.to_document();
    if key == doc! {"_id": 1} {
        // Every collection has `_id_`; only make sure the collection exists.
        let created = run_on_shard(state, shard, doc! {"create": coll, "$db": db}).await;
        return match created {
            Err(e) if e.code().0 != 48 => Err(e),
            _ => Ok(()),
        };
    }
    let mut spec = doc! {"key": key.clone(), "name": index_name(&key)};
    if unique {
        spec.insert("unique", true);
    }
    if index.default_collation.is_some() {
        spec.insert("collation", doc! {"locale": "simple"});
    }
    let attempt = run_on_shard(
        state,
        shard,
        doc! {"createIndexes": coll, "indexes": [spec], "$db": db},
    )
    .await;
    match attempt {
        Ok(_) => Ok(()),
        Err(e) if pattern.hashed_field().is_some() => {
            tracing::info!(shard = %shard.id, error = %e, "hashed index refused; using an ascending index");
            let mut asc = Document::new();
            for (field, kind) in pattern.fields() {
                asc.insert(field, if kind == KeyKind::Descending { -1 } else { 1 });
            }
            let mut spec = doc! {"key": asc.clone(), "name": index_name(&asc)};
            if index.default_collation.is_some() {
                spec.insert("collation", doc! {"locale": "simple"});
            }
            let created = run_on_shard(
                state,
                shard,
                doc! {"createIndexes": coll, "indexes": [spec], "$db": db},
            )
            .await;
            match created {
                // An equivalent index (e.g. `_id_` for {_id: 1}) is already there.
                Ok(_) => Ok(()),
                Err(e) if matches!(e.code().0, 68 | 85 | 86) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// mongod's default index name: `a_1_b_-1`, `a_hashed`.
fn index_name(key: &Document) -> String {
    key.iter()
        .map(|(k, v)| match v {
            Bson::String(s) => format!("{k}_{s}"),
            Bson::Int32(n) => format!("{k}_{n}"),
            Bson::Int64(n) => format!("{k}_{n}"),
            Bson::Double(n) => format!("{k}_{n}"),
            other => format!("{k}_{other}"),
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// `n` chunks over the hash space, in contiguous runs per shard.
fn hashed_chunks(
    coll: &CollectionType,
    pattern: &ShardKeyPattern,
    n: i64,
    shards: &[ShardType],
) -> Vec<ChunkType> {
    let mut points: Vec<Document> = Vec::new();
    for i in 1..n {
        let p = (i64::MIN as i128 + (i as i128 * (1i128 << 64)) / n as i128) as i64;
        let mut bound = Document::new();
        for (j, (field, _)) in pattern.fields().enumerate() {
            bound.insert(field, if j == 0 { Bson::Int64(p) } else { Bson::MinKey });
        }
        points.push(bound);
    }
    let mut bounds = vec![pattern.global_min()];
    bounds.extend(points);
    bounds.push(pattern.global_max());
    let now = now_ts();
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let shard = &shards[(i * shards.len()) / n as usize];
            let version = CollectionVersion {
                major: 1,
                minor: i as u32,
            };
            new_chunk(coll, w[0].clone(), w[1].clone(), &shard.id, version, now)
        })
        .collect()
}

/// A chunk per zone range on a shard of that zone; the gaps between them on
/// the primary shard.
fn zone_chunks(
    coll: &CollectionType,
    pattern: &ShardKeyPattern,
    zones: &[TagType],
    shards: &[ShardType],
    primary: &str,
) -> Result<Vec<ChunkType>> {
    let mut ranges = Vec::new();
    for z in zones {
        let lo = pattern
            .encode_bound(&z.min)
            .map_err(|e| incompatible_zone(z, e))?;
        pattern
            .encode_bound(&z.max)
            .map_err(|e| incompatible_zone(z, e))?;
        ranges.push((lo, z));
    }
    ranges.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    let mut cursor = pattern.global_min();
    let mut per_zone: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let now = now_ts();
    let push = |min: Document, max: Document, shard: &str, out: &mut Vec<ChunkType>| {
        let version = CollectionVersion {
            major: 1,
            minor: out.len() as u32,
        };
        out.push(new_chunk(coll, min, max, shard, version, now));
    };
    for (_, z) in ranges {
        if cursor != z.min {
            push(cursor.clone(), z.min.clone(), primary, &mut out);
        }
        let zone_shards: Vec<&ShardType> =
            shards.iter().filter(|s| s.tags.contains(&z.tag)).collect();
        let turn = per_zone.entry(z.tag.as_str()).or_insert(0);
        let shard = zone_shards
            .get(*turn % zone_shards.len().max(1))
            .map_or(primary, |s| s.id.as_str());
        *turn += 1;
        push(z.min.clone(), z.max.clone(), shard, &mut out);
        cursor = z.max.clone();
    }
    if cursor != pattern.global_max() {
        push(cursor, pattern.global_max(), primary, &mut out);
    }
    Ok(out)
}

fn incompatible_zone(z: &TagType, e: ShardKeyError) -> RouterError {
    RouterError::command(
        72,
        "InvalidOptions",
        format!(
            "the proposed shard key is not compatible with zone range [{}, {}) of zone {}: {e}",
            z.min, z.max, z.tag
        ),
    )
}

/// The shards that own at least one of `chunks`.
fn owners(chunks: &[ChunkType], shards: &[ShardType]) -> Vec<ShardType> {
    shards
        .iter()
        .filter(|s| chunks.iter().any(|c| c.shard == s.id))
        .cloned()
        .collect()
}
