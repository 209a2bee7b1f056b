//! `split` and `mergeChunks`.

use std::sync::Arc;

use bson::{doc, Bson, Document};
use shardgate_config_store::catalog::CollectionVersion;
use shardgate_config_store::model::{ChunkType, CollectionType, MoveRequest, MoveResult};
use shardgate_config_store::shard_key::{range_filter, KeyKind, ShardKeyPattern};

use super::admin::admin_only;
use super::sharding::{document_arg, key_error, name_arg, now_ts, split_ns};
use super::Request;
use crate::error::{Result, RouterError};
use crate::shards::run_on_shard;
use crate::state::RouterState;

fn cannot_split(message: String) -> RouterError {
    RouterError::command(87, "CannotSplit", message)
}

fn not_sharded(ns: &str) -> RouterError {
    RouterError::command(118, "NamespaceNotSharded", format!("{ns} is not sharded"))
}

/// Reads the collection, its pattern, chunks and version for a chunk change.
async fn load(
    state: &RouterState,
    ns: &str,
) -> Result<(
    CollectionType,
    ShardKeyPattern,
    Vec<(ChunkType, u64)>,
    (CollectionVersion, u64),
)> {
    let coll = state
        .catalog
        .collection(ns)
        .await?
        .filter(|c| !c.unsplittable)
        .ok_or_else(|| not_sharded(ns))?;
    let pattern = ShardKeyPattern::parse(&coll.key).map_err(key_error)?;
    let version = state.catalog.collection_version(ns).await?;
    let chunks = state.catalog.chunks(ns).await?;
    Ok((coll, pattern, chunks, version))
}

/// `split`: at `middle`, or at the median of the chunk holding `find`, or of
/// the chunk with exactly `bounds`.
pub(crate) async fn split(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    split_ns(ns)?;
    for _attempt in 0..5 {
        let (coll, pattern, chunks, version) = load(state, ns).await?;
        let (index, at) = split_target(state, req, &pattern, &chunks).await?;
        if split_chunk(state, &coll, &chunks, version, index, at).await? {
            return Ok(Document::new());
        }
    }
    Err(RouterError::command(
        117,
        "ConflictingOperationInProgress",
        format!("chunks of {ns} kept changing; retry the split"),
    ))
}

/// Splits `ns` at `at` (no-op when `at` is already a chunk bound).
pub(crate) async fn split_at(state: &RouterState, ns: &str, at: &Document) -> Result<()> {
    if let Some(details) = state.catalog.split_at(ns, at, now_ts()).await? {
        state.routing.refresh(&state.catalog, ns).await?;
        super::cluster::log_change(state, "split", ns, details).await;
    }
    Ok(())
}

/// Splits chunk `index` at `at`; false on a conflict (re-read and retry).
async fn split_chunk(
    state: &RouterState,
    coll: &CollectionType,
    chunks: &[(ChunkType, u64)],
    version: (CollectionVersion, u64),
    index: usize,
    at: Document,
) -> Result<bool> {
    let Some(details) = state
        .catalog
        .split_chunk(coll, chunks, version, index, &at, now_ts())
        .await?
    else {
        return Ok(false);
    };
    state.routing.refresh(&state.catalog, &coll.ns).await?;
    super::cluster::log_change(state, "split", &coll.ns, details).await;
    Ok(true)
}

/// The chunk to split and the split point.
async fn split_target(
    state: &RouterState,
    req: &Request<'_>,
    pattern: &ShardKeyPattern,
    chunks: &[(ChunkType, u64)],
) -> Result<(usize, Document)> {
    let containing = |key: &shardgate_config_store::shard_key::KeyBytes| -> Result<usize> {
        chunks
            .iter()
            .position(|(c, _)| {
                let lo = pattern.encode_bound(&c.min).ok();
                let hi = pattern.encode_bound(&c.max).ok();
                lo.is_some_and(|l| l <= *key) && hi.is_some_and(|h| *key < h)
            })
            .ok_or_else(|| RouterError::command(1, "InternalError", "chunks do not cover the key"))
    };
    if req.body.get("middle").ok().flatten().is_some() {
        let middle = document_arg(req.body, "middle")?;
        let key = pattern.encode_bound(&middle).map_err(key_error)?;
        let index = containing(&key)?;
        if chunks[index].0.min == middle {
            return Err(cannot_split(format!(
                "cannot split at {middle}: it is already a chunk boundary"
            )));
        }
        return Ok((index, middle));
    }
    let index = if req.body.get("find").ok().flatten().is_some() {
        let find = document_arg(req.body, "find")?;
        let raw = bson::RawDocumentBuf::try_from(&find)
            .map_err(|e| RouterError::bad_value(e.to_string()))?;
        containing(&pattern.extract_key(&raw).map_err(key_error)?)?
    } else if let Ok(bounds) = req.body.get_array("bounds") {
        let bounds: Vec<Document> = bounds
            .into_iter()
            .filter_map(|b| {
                b.ok()
                    .and_then(|b| b.as_document())
                    .and_then(|d| Document::try_from(d).ok())
            })
            .collect();
        let [min, max] = bounds.as_slice() else {
            return Err(RouterError::bad_value("bounds must be [min, max]"));
        };
        chunks
            .iter()
            .position(|(c, _)| c.min == *min && c.max == *max)
            .ok_or_else(|| cannot_split(format!("no chunk has bounds [{min}, {max})")))?
    } else {
        return Err(RouterError::bad_value(
            "split needs one of 'middle', 'find' or 'bounds'",
        ));
    };
    let point = median(state, req, pattern, &chunks[index].0).await?;
    Ok((index, point))
}

/// The split point of a chunk: the middle of its hash range for a hashed
/// key, else the median shard key of its documents on the owning shard.
async fn median(
    state: &RouterState,
    req: &Request<'_>,
    pattern: &ShardKeyPattern,
    chunk: &ChunkType,
) -> Result<Document> {
    let fields: Vec<(&str, KeyKind)> = pattern.fields().collect();
    if let Some((hfield, KeyKind::Hashed)) = fields.first() {
        let as_i64 = |d: &Document| match d.get(*hfield) {
            Some(Bson::Int64(v)) => *v as i128,
            Some(Bson::MaxKey) => i64::MAX as i128 + 1,
            _ => i64::MIN as i128,
        };
        let mid = ((as_i64(&chunk.min) + as_i64(&chunk.max)) / 2) as i64;
        let mut point = Document::new();
        for (i, (f, _)) in fields.iter().enumerate() {
            point.insert(
                *f,
                if i == 0 {
                    Bson::Int64(mid)
                } else {
                    Bson::MinKey
                },
            );
        }
        return Ok(point);
    }
    if pattern.hashed_field().is_some() {
        return Err(cannot_split(
            "this shard key has a hashed field after its first field: give the split point with 'middle'".into(),
        ));
    }
    let (db, coll) = split_ns(req.body.get_str(req.name).unwrap_or(""))?;
    let shard = state.placement.shard(&chunk.shard)?;
    let filter = range_filter(&fields, &chunk.min, &chunk.max);
    let count = run_on_shard(
        state,
        &shard,
        doc! {"count": coll, "query": filter.clone(), "$db": db},
    )
    .await?;
    let n = count
        .get("n")
        .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
        .unwrap_or(0);
    let mut sort = Document::new();
    let mut projection = doc! {"_id": 0};
    for (f, kind) in &fields {
        sort.insert(*f, if *kind == KeyKind::Descending { -1 } else { 1 });
        projection.insert(*f, 1);
    }
    let reply = run_on_shard(
        state,
        &shard,
        doc! {"find": coll, "filter": filter, "sort": sort, "projection": projection, "skip": n / 2, "limit": 1, "singleBatch": true, "$db": db},
    )
    .await?;
    let doc = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| b.first().and_then(Bson::as_document).cloned())
        .ok_or_else(|| {
            cannot_split(format!(
                "chunk [{}, {}) has too few documents to split",
                chunk.min, chunk.max
            ))
        })?;
    let raw =
        bson::RawDocumentBuf::try_from(&doc).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let point = pattern.key_document(&raw).map_err(key_error)?;
    if n < 2 || point == chunk.min {
        return Err(cannot_split(format!(
            "chunk [{}, {}) has no split point: its documents share one shard-key value",
            chunk.min, chunk.max
        )));
    }
    Ok(point)
}

/// `mergeChunks`: the chunks exactly covering `bounds`, all on one shard,
/// become one chunk.
pub(crate) async fn merge_chunks(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let bounds: Vec<Document> = req
        .body
        .get_array("bounds")
        .map_err(|_| RouterError::bad_value("mergeChunks needs bounds: [min, max]"))?
        .into_iter()
        .filter_map(|b| {
            b.ok()
                .and_then(|b| b.as_document())
                .and_then(|d| Document::try_from(d).ok())
        })
        .collect();
    let [min, max] = bounds.as_slice() else {
        return Err(RouterError::bad_value("bounds must be [min, max]"));
    };
    let details = state.catalog.merge_range(ns, min, max, now_ts()).await?;
    state.routing.refresh(&state.catalog, ns).await?;
    super::cluster::log_change(state, "merge", ns, details).await;
    Ok(Document::new())
}

/// `mergeAllChunksOnShard`: every run of contiguous chunks of the
/// collection on the shard becomes one chunk.
pub(crate) async fn merge_all_on_shard(
    state: &Arc<RouterState>,
    req: &Request<'_>,
) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let shard = req
        .body
        .get_str("shard")
        .map_err(|_| RouterError::bad_value("mergeAllChunksOnShard needs 'shard'"))?;
    state.placement.shard(shard)?;
    merge_everywhere(state, ns, Some(shard)).await
}

/// Merges every run of contiguous chunks of `ns` on `shard` (every shard
/// when `None`), logging each merge.
pub(crate) async fn merge_everywhere(
    state: &RouterState,
    ns: &str,
    shard: Option<&str>,
) -> Result<Document> {
    state.routing.get(ns).ok_or_else(|| not_sharded(ns))?;
    let merges = state
        .catalog
        .merge_all_on_shard(ns, shard, now_ts())
        .await?;
    state.routing.refresh(&state.catalog, ns).await?;
    for details in &merges {
        super::cluster::log_change(state, "merge", ns, details.clone()).await;
    }
    Ok(Document::new())
}

/// `moveChunk` (`find` or `bounds`, `to`, `_waitForDelete`) and `moveRange`
/// (`min`, optional `max`, `toShard`, `waitForDelete`): one migration, run
/// by the balancer service (as mongos hands `_configsvrMoveRange` to the
/// config server); the router waits for its result.
pub(crate) async fn move_range(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    split_ns(ns)?;
    let routing = state
        .routing
        .get(ns)
        .filter(|r| !r.collection.unsplittable)
        .ok_or_else(|| not_sharded(ns))?;
    let pattern = routing.pattern.clone();
    let to = req
        .body
        .get_str(if req.name == "moveRange" {
            "toShard"
        } else {
            "to"
        })
        .map_err(|_| RouterError::bad_value(format!("{} needs the destination shard", req.name)))?;
    let wait_for_delete = req.body.get_bool("_waitForDelete").unwrap_or(false)
        || req.body.get_bool("waitForDelete").unwrap_or(false);
    let (min, max) = if req.name == "moveRange" {
        let min = document_arg(req.body, "min")?;
        let min_key = pattern.encode_bound(&min).map_err(key_error)?;
        let max = match req.body.get_document("max") {
            Ok(_) => document_arg(req.body, "max")?,
            Err(_) => containing_chunk(state, ns, &pattern, &min_key).await?.1,
        };
        // A range inside a chunk: split it out first.
        split_at(state, ns, &min).await?;
        if max != pattern.global_max() {
            split_at(state, ns, &max).await?;
        }
        (min, max)
    } else if let Ok(find) = req.body.get_document("find") {
        let find = Document::try_from(find).map_err(|e| RouterError::bad_value(e.to_string()))?;
        let raw = bson::RawDocumentBuf::try_from(&find)
            .map_err(|e| RouterError::bad_value(e.to_string()))?;
        let key = pattern.extract_key(&raw).map_err(key_error)?;
        containing_chunk(state, ns, &pattern, &key).await?
    } else {
        let bounds = req
            .body
            .get_array("bounds")
            .map_err(|_| RouterError::bad_value("moveChunk needs 'find' or 'bounds'"))?;
        let mut it = bounds
            .into_iter()
            .filter_map(|b| b.ok().and_then(|b| b.as_document()));
        match (it.next(), it.next()) {
            (Some(a), Some(b)) => (
                Document::try_from(a).map_err(|e| RouterError::bad_value(e.to_string()))?,
                Document::try_from(b).map_err(|e| RouterError::bad_value(e.to_string()))?,
            ),
            _ => return Err(RouterError::bad_value("'bounds' must be [min, max]")),
        }
    };
    let millis = move_bounds(state, ns, (min, max), to, wait_for_delete).await?;
    Ok(doc! {"millis": millis})
}

/// Moves the chunk `[min, max)` of `ns` to `to` through the balancer
/// service and waits for it (and, with `wait_for_delete`, for the source's
/// range deletion); returns how long it took, in ms.
pub(crate) async fn move_bounds(
    state: &RouterState,
    ns: &str,
    (min, max): (Document, Document),
    to: &str,
    wait_for_delete: bool,
) -> Result<i64> {
    state.placement.refresh_shards(&state.catalog).await?;
    state.placement.shard(to)?;
    let started = std::time::Instant::now();
    let request = MoveRequest {
        id: bson::oid::ObjectId::new().to_hex(),
        ns: ns.to_owned(),
        min,
        max,
        to: to.to_owned(),
        wait_for_delete,
        requested_by: state.listen.clone(),
        when: bson::DateTime::now(),
        taken_by: None,
    };
    let result = run_move(state, &request).await;
    let _ = state.catalog.forget_move(&request.id).await;
    let result = result?;
    // This router routes by the new owner before it answers.
    state.routing.refresh(&state.catalog, ns).await?;
    if result.code != 0 {
        return Err(RouterError::command(
            result.code,
            result.code_name,
            result.errmsg,
        ));
    }
    Ok(started.elapsed().as_millis() as i64)
}

/// How long a move request may wait for a balancer service to take it.
const UNTAKEN_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);
/// How long a taken move request may run.
const MOVE_LIMIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Leaves `request` for the balancer service (the one beside this router
/// takes it at once; another takes it when this router runs none) and
/// waits for its result.
async fn run_move(state: &RouterState, request: &MoveRequest) -> Result<MoveResult> {
    state.catalog.request_move(request).await?;
    let started = std::time::Instant::now();
    loop {
        if let Some(result) = state.catalog.move_result(&request.id).await? {
            return Ok(result);
        }
        let elapsed = started.elapsed();
        if elapsed > UNTAKEN_LIMIT {
            let pending = state
                .catalog
                .move_requests()
                .await?
                .iter()
                .any(|r| r.id == request.id);
            if pending {
                return Err(RouterError::command(
                    96,
                    "OperationFailed",
                    format!(
                        "no balancer service took the move of {} within {} s: run one (`shardgate serve` with balancer = true, or `shardgate balancer`)",
                        request.ns,
                        UNTAKEN_LIMIT.as_secs()
                    ),
                ));
            }
        }
        if elapsed > MOVE_LIMIT {
            return Err(RouterError::command(
                50,
                "MaxTimeMSExpired",
                format!("the move of {} did not finish within an hour", request.ns),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The bounds of the chunk of `ns` holding `key`.
async fn containing_chunk(
    state: &RouterState,
    ns: &str,
    pattern: &ShardKeyPattern,
    key: &shardgate_config_store::shard_key::KeyBytes,
) -> Result<(Document, Document)> {
    let (_, _, chunks, _) = load(state, ns).await?;
    chunks
        .into_iter()
        .map(|(c, _)| c)
        .find(|c| {
            let lo = pattern.encode_bound(&c.min).ok();
            let hi = pattern.encode_bound(&c.max).ok();
            lo.is_some_and(|l| l <= *key) && hi.is_some_and(|h| *key < h)
        })
        .map(|c| (c.min, c.max))
        .ok_or_else(|| RouterError::command(1, "InternalError", "chunks do not cover the key"))
}

/// `clearJumboFlag: ns` with `find` (a document in the chunk) or `bounds`:
/// the balancer considers the chunk for splits and moves again.
pub(crate) async fn clear_jumbo_flag(
    state: &Arc<RouterState>,
    req: &Request<'_>,
) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    let routing = state.routing.get(ns).ok_or_else(|| not_sharded(ns))?;
    let (min, max) = match req.body.get_array("bounds") {
        Ok(bounds) => {
            let bounds: Vec<Document> = bounds
                .into_iter()
                .filter_map(|b| Document::try_from(b.ok()?.as_document()?).ok())
                .collect();
            let [min, max] = bounds.as_slice() else {
                return Err(RouterError::bad_value("bounds must be [min, max]"));
            };
            (min.clone(), max.clone())
        }
        Err(_) => {
            let find = document_arg(req.body, "find")?;
            let raw = bson::RawDocumentBuf::try_from(&find)
                .map_err(|e| RouterError::bad_value(e.to_string()))?;
            let pattern = &routing.pattern;
            let key = pattern.extract_key(&raw).map_err(key_error)?;
            let bounds = state
                .catalog
                .chunks(ns)
                .await?
                .into_iter()
                .map(|(c, _)| c)
                .find(|c| {
                    let lo = pattern.encode_bound(&c.min).ok();
                    let hi = pattern.encode_bound(&c.max).ok();
                    lo.is_some_and(|lo| lo <= key) && hi.is_some_and(|hi| key < hi)
                })
                .ok_or_else(|| RouterError::bad_value(format!("no chunk of {ns} holds {find}")))?;
            (bounds.min, bounds.max)
        }
    };
    if !state.catalog.set_jumbo(ns, &min, &max, false).await? {
        return Err(RouterError::bad_value(format!(
            "no chunk of {ns} has bounds [{min}, {max})"
        )));
    }
    state.routing.refresh(&state.catalog, ns).await?;
    Ok(Document::new())
}
