//! `shardCollection` and dropping sharded collections.

use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument, Timestamp};
use shardgate_config_store::catalog::{new_chunk, CollectionVersion};
use shardgate_config_store::model::{ChunkType, CollectionType, TagType};
use shardgate_config_store::shard_key::{KeyKind, ShardKeyError, ShardKeyPattern};
use shardgate_config_store::ShardType;

use super::admin::admin_only;
use super::{Reply, Request, Session};
use crate::error::{Result, RouterError};
use crate::session::Namespace;
use crate::shards::{run_on_shard, to_shard};
use crate::state::RouterState;

/// Splits `db.coll` (InvalidNamespace when it is not one).
pub(crate) fn split_ns(ns: &str) -> Result<(&str, &str)> {
    match ns.split_once('.') {
        Some((db, coll))
            if !coll.is_empty()
                && crate::catalog_cache::placement::validate_db_name(db).is_ok() =>
        {
            Ok((db, coll))
        }
        _ => Err(RouterError::command(
            73,
            "InvalidNamespace",
            format!("Invalid namespace specified '{ns}'"),
        )),
    }
}

/// The command's first value as a string (a namespace, shard or zone
/// name); BadValue naming `what` otherwise.
pub(crate) fn name_arg<'a>(req: &Request<'a>, what: &str) -> Result<&'a str> {
    req.body
        .get_str(req.name)
        .map_err(|_| RouterError::bad_value(format!("{} takes {what}", req.name)))
}

/// A shard-key error with its MongoDB code.
pub(crate) fn key_error(e: ShardKeyError) -> RouterError {
    let (code, name) = e.code();
    RouterError::command(code, name, e.to_string())
}

/// A raw sub-document as an owned document (BadValue when not a document).
pub(crate) fn document_arg(body: &RawDocument, field: &str) -> Result<Document> {
    let raw = body
        .get_document(field)
        .map_err(|_| RouterError::bad_value(format!("'{field}' must be a document")))?;
    Document::try_from(raw).map_err(|e| RouterError::bad_value(format!("'{field}': {e}")))
}

/// The current time as a BSON timestamp.
pub(crate) fn now_ts() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    Timestamp {
        time: secs,
        increment: 1,
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
    if unique && pattern.hashed_field().is_some() {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            "hashed shard keys cannot be declared unique",
        ));
    }
    let num_initial = match req.body.get("numInitialChunks") {
        Ok(Some(v)) => Some(
            v.as_i32()
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
                })?,
        ),
        _ => None,
    };
    if num_initial.is_some() && !hashed_prefix(&pattern) {
        return Err(RouterError::command(
            72,
            "InvalidOptions",
            "numInitialChunks is only supported when the shard key starts with a hashed field",
        ));
    }
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
    if let Some(existing) = state.catalog.collection(ns).await? {
        return already_sharded(&existing, &pattern, unique);
    }
    let primary = state.placement.shard(&database.primary)?;
    let count = run_on_shard(state, &primary, doc! {"count": coll_name, "$db": db}).await?;
    let non_empty = number(count.get("n")) > 0;
    if !has_supporting_index(state, &primary, db, coll_name, &pattern, unique).await? {
        if non_empty {
            return Err(RouterError::command(
                72,
                "InvalidOptions",
                format!("Please create an index that starts with the proposed shard key {key} before sharding the non-empty collection {ns}"),
            ));
        }
        create_shard_key_index(state, &primary, db, coll_name, &pattern, unique).await?;
    }
    let zones = state.catalog.zone_ranges(ns).await?;
    let shards = state.placement.shards();
    let collection = CollectionType {
        ns: ns.to_owned(),
        epoch: bson::oid::ObjectId::new(),
        last_modified: bson::DateTime::now(),
        timestamp: now_ts(),
        uuid: bson::Uuid::new(),
        key: pattern.to_document(),
        unique,
        no_balance: false,
        max_chunk_size_bytes: None,
    };
    // An empty collection is pre-split by zones or by hash; anything else
    // starts as one chunk on the primary.
    let chunks = if !non_empty && !zones.is_empty() {
        zone_chunks(&collection, &pattern, &zones, &shards, &primary.id)?
    } else if !non_empty && hashed_prefix(&pattern) {
        let n = num_initial.unwrap_or(2 * shards.len().max(1) as i64);
        hashed_chunks(&collection, &pattern, n, &shards)
    } else {
        vec![new_chunk(
            &collection,
            pattern.global_min(),
            pattern.global_max(),
            &primary.id,
            CollectionVersion { major: 1, minor: 0 },
            now_ts(),
        )]
    };
    for shard in owners(&chunks, &shards) {
        if shard.id != primary.id {
            create_shard_key_index(state, &shard, db, coll_name, &pattern, unique).await?;
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
    super::cluster::log_change(
        state,
        "shardCollection.end",
        ns,
        doc! {"version": "1|0", "numChunks": chunks.len() as i64, "primary": &primary.id},
    )
    .await;
    Ok(doc! {"collectionsharded": ns, "collectionUUID": collection.uuid})
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

fn number(v: Option<&Bson>) -> i64 {
    match v {
        Some(Bson::Int32(n)) => *n as i64,
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

/// Whether the key starts with a hashed field (chunks can be pre-split by hash).
fn hashed_prefix(pattern: &ShardKeyPattern) -> bool {
    pattern
        .fields()
        .next()
        .is_some_and(|(_, kind)| kind == KeyKind::Hashed)
}

async fn has_supporting_index(
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
        key_ok && (!unique || is_id || ix.get_bool("unique").unwrap_or(false))
    }))
}

/// Creates the shard-key index; a shard that cannot build a hashed index
/// gets an ascending one on the field, which still serves equality.
async fn create_shard_key_index(
    state: &RouterState,
    shard: &ShardType,
    db: &str,
    coll: &str,
    pattern: &ShardKeyPattern,
    unique: bool,
) -> Result<()> {
    let key = pattern.to_document();
    let mut spec = doc! {"key": key.clone(), "name": index_name(&key)};
    if unique {
        spec.insert("unique", true);
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
            let spec = doc! {"key": asc.clone(), "name": index_name(&asc)};
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

/// Routes a command on a sharded collection (and `getMore`/`killCursors`
/// on router cursors). Reads scatter to the shards that own the data and
/// merge; inserts split by chunk owner; other commands go whole to the one
/// shard holding every chunk, and are refused (NotImplemented) across
/// shards rather than answered wrongly. `None`: not the router's business.
pub(crate) async fn route_sharded(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Option<Reply>> {
    use crate::read::{aggregate, find, get_more};
    use crate::write::plan::WriteKind;
    match req.name {
        "getMore" => {
            if let Some(reply) = get_more::get_more(state, session, req).await? {
                return Ok(Some(reply));
            }
        }
        "killCursors" => {
            if let Some(reply) = get_more::kill_cursors(state, req).await? {
                return Ok(Some(reply));
            }
        }
        _ => {}
    }
    let explained = match req.name {
        "explain" => req.body.get_document("explain").ok(),
        _ => None,
    };
    let coll = match explained {
        Some(inner) => inner
            .iter()
            .next()
            .and_then(|e| e.ok())
            .and_then(|(_, v)| v.as_str()),
        None => req.collection,
    };
    let Some(coll) = coll else { return Ok(None) };
    let ns = format!("{}.{coll}", req.db);
    let Some(routing) = state.routing.get(&ns) else {
        return Ok(None);
    };
    let reply = match req.name {
        "drop" => {
            drop_sharded(state, &ns, req).await?;
            Reply::Body(doc! {"ns": &ns, "ok": 1.0}.to_vec().unwrap_or_default())
        }
        "find" => find::find(state, session, req, &routing, &ns).await?,
        "count" => aggregate::count(state, req, &routing).await?,
        "distinct" => aggregate::distinct(state, req, &routing).await?,
        "aggregate" => aggregate::aggregate(state, session, req, &routing, &ns).await?,
        "insert" | "update" | "delete" => {
            let kind = WriteKind::of(req.name).expect("a write command");
            crate::write::exec::write(state, req, &ns, kind).await?
        }
        "findAndModify" | "findandmodify" => crate::write::exec::find_and_modify(state, req, &ns).await?,
        "explain" => {
            let inner = explained.and_then(|d| Document::try_from(d).ok()).unwrap_or_default();
            let filter = inner
                .get_document("filter")
                .or_else(|_| inner.get_document("query"))
                .cloned()
                .unwrap_or_default();
            aggregate::explain_to_shards(state, req, &routing, &filter).await?
        }
        "getMore" => {
            return Err(RouterError::command(43, "CursorNotFound", format!("cursor not found on {ns}")))
        }
        "killCursors" => get_more::kill_unknown_cursors(req),
        _ => match routing.single_shard() {
            Some(id) => {
                let shard = state.placement.shard(&id)?;
                Reply::Msg(to_shard(state, &shard, req.msg).await?)
            }
            None => {
                return Err(RouterError::command(
                    238,
                    "NotImplemented",
                    format!(
                        "'{}' on {ns}, whose chunks span {} shards, needs the sharded write path, which this shardgate version does not have yet",
                        req.name,
                        routing.chunks.shards().len()
                    ),
                ))
            }
        },
    };
    Ok(Some(reply))
}

/// Drops a sharded collection on every shard that owns a chunk (and the
/// primary), then forgets its metadata.
pub(crate) async fn drop_sharded(
    state: &Arc<RouterState>,
    ns: &str,
    req: &Request<'_>,
) -> Result<()> {
    let Some(routing) = state.routing.get(ns) else {
        return Ok(());
    };
    let mut targets: Vec<String> = routing
        .chunks
        .shards()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(db) = state.placement.cached(req.db) {
        if !targets.contains(&db.primary) {
            targets.push(db.primary);
        }
    }
    let coll = Namespace::parse(ns).coll;
    for id in targets {
        let shard = state.placement.shard(&id)?;
        match run_on_shard(state, &shard, doc! {"drop": coll, "$db": req.db}).await {
            Ok(_) => {}
            Err(e) if e.code().0 == 26 => {}
            Err(e) => return Err(e),
        }
    }
    state.catalog.drop_collection(ns).await?;
    state.routing.refresh(&state.catalog, ns).await?;
    super::cluster::log_change(state, "dropCollection", ns, Document::new()).await;
    Ok(())
}
