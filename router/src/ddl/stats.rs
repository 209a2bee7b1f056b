//! Statistics over shards, in mongos's shape: `collStats` sums the owning
//! shards' figures with a `shards` breakdown; `dbStats` sums every shard's
//! with `raw`; `validate` is valid only if every shard is; `$collStats` and
//! `$indexStats` give each shard's documents with a `shard` field.

use bson::{doc, Bson, Document};
use shardgate_config_store::ShardType;

use crate::catalog_cache::routing::CollectionRouting;
use crate::error::{Result, RouterError};
use crate::session::{Reply, Request};
use crate::shards::run_on_shard;
use crate::state::RouterState;

use super::{body, on_shards, passthrough, raw_reply, ShardReply};

/// The shards owning a chunk of the collection.
fn owners(state: &RouterState, routing: &CollectionRouting) -> Result<Vec<ShardType>> {
    routing
        .chunks
        .shards()
        .into_iter()
        .map(|id| state.placement.shard(id))
        .collect()
}

/// The first failing shard's error, naming the shard.
fn first_error(replies: &[ShardReply]) -> Result<()> {
    match replies.iter().find(|r| !r.ok()) {
        None => Ok(()),
        Some(r) => Err(RouterError::command(
            r.reply.get_i32("code").unwrap_or(1),
            r.reply
                .get_str("codeName")
                .unwrap_or("UnknownError")
                .to_owned(),
            format!(
                "shard {} ({}): {}",
                r.shard.id,
                r.shard.host,
                r.reply.get_str("errmsg").unwrap_or("unknown error")
            ),
        )),
    }
}

use crate::session::int_of as number;

fn clean(mut d: Document) -> Document {
    for f in ["$clusterTime", "operationTime", "ok"] {
        d.remove(f);
    }
    d
}

/// `collStats` of a sharded collection.
pub(crate) async fn coll_stats(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    ns: &str,
) -> Result<Reply> {
    let replies = on_shards(state, owners(state, routing)?, &passthrough(req)?).await?;
    first_error(&replies)?;
    let mut out = doc! {"sharded": !routing.collection.unsplittable};
    let mut sums: Vec<(&str, i64)> = [
        "count",
        "size",
        "storageSize",
        "totalIndexSize",
        "totalSize",
    ]
    .into_iter()
    .map(|f| (f, 0))
    .collect();
    let mut index_sizes = Document::new();
    let (mut unscaled, mut max_size, mut nindexes) = (0i64, 0i64, 0i64);
    let mut shards = Document::new();
    for r in &replies {
        let res = &r.reply;
        for (f, sum) in sums.iter_mut() {
            *sum += number(res.get(*f));
        }
        unscaled += number(res.get("avgObjSize")) * number(res.get("count"));
        max_size = max_size.max(number(res.get("maxSize")));
        let n = number(res.get("nindexes"));
        if nindexes != 0 && n != nindexes && !out.contains_key("warning") {
            out.insert(
                "warning",
                "indexes don't all match - ok if ensureIndex is running",
            );
        }
        nindexes = nindexes.max(n);
        if let Ok(sizes) = res.get_document("indexSizes") {
            for (name, size) in sizes {
                let total = number(index_sizes.get(name)) + number(Some(size));
                index_sizes.insert(name, super::long(total));
            }
        }
        for f in [
            "capped",
            "max",
            "scaleFactor",
            "userFlags",
            "indexDetails",
            "wiredTiger",
        ] {
            if let (false, Some(v)) = (out.contains_key(f), res.get(f)) {
                out.insert(f, v.clone());
            }
        }
        shards.insert(&r.shard.id, clean(res.clone()));
    }
    out.insert("ns", ns);
    let count = sums[0].1;
    for (f, sum) in sums {
        out.insert(f, super::long(sum));
    }
    out.insert("indexSizes", index_sizes);
    let avg = if count > 0 {
        unscaled as f64 / count as f64
    } else {
        0.0
    };
    out.insert("avgObjSize", avg);
    out.insert("maxSize", super::long(max_size));
    out.insert("nindexes", super::long(nindexes));
    out.insert("nchunks", routing.chunks.len() as i64);
    out.insert("shards", shards);
    out.insert("ok", 1.0);
    body(out)
}

/// `validate` on every owning shard: valid only if each is.
pub(crate) async fn validate(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
) -> Result<Reply> {
    let replies = on_shards(state, owners(state, routing)?, &passthrough(req)?).await?;
    let mut out = raw_reply(&replies);
    if out.get_f64("ok").ok() != Some(1.0) {
        return body(out);
    }
    let valid = replies
        .iter()
        .all(|r| r.reply.get_bool("valid").unwrap_or(false));
    let listed = |field: &str| -> Vec<Bson> {
        replies
            .iter()
            .flat_map(|r| {
                let shard = r.shard.id.clone();
                r.reply
                    .get_array(field)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |e| Bson::String(format!("{shard}: {}", e.as_str().unwrap_or(""))))
            })
            .collect()
    };
    let ns = format!("{}.{}", req.db, req.collection.unwrap_or_default());
    let mut head = doc! {
        "ns": ns,
        "valid": valid,
        "warnings": listed("warnings"),
        "errors": listed("errors"),
    };
    head.extend(std::mem::take(&mut out));
    body(head)
}

/// `dbStats` summed over every shard, with each shard's in `raw`.
pub(crate) async fn db_stats(state: &RouterState, req: &Request<'_>) -> Result<Reply> {
    let replies = on_shards(state, state.placement.shards(), &passthrough(req)?).await?;
    first_error(&replies)?;
    const SUMMED: [&str; 10] = [
        "collections",
        "views",
        "objects",
        "dataSize",
        "storageSize",
        "indexes",
        "indexSize",
        "totalSize",
        "numExtents",
        "fileSize",
    ];
    let mut sums = [0i64; SUMMED.len()];
    let mut raw = Document::new();
    let mut scale = None;
    for r in &replies {
        for (i, f) in SUMMED.iter().enumerate() {
            sums[i] += number(r.reply.get(*f));
        }
        scale = scale.or_else(|| r.reply.get("scaleFactor").cloned());
        raw.insert(r.name(), clean(r.reply.clone()));
    }
    let mut out = doc! {"raw": raw, "db": req.db};
    for (f, sum) in SUMMED.iter().zip(sums) {
        if replies.iter().any(|r| r.reply.contains_key(*f)) {
            out.insert(*f, super::long(sum));
        }
    }
    let (objects, data) = (sums[2], sums[3]);
    out.insert(
        "avgObjSize",
        if objects > 0 {
            data as f64 / objects as f64
        } else {
            0.0
        },
    );
    out.insert("scaleFactor", scale.unwrap_or(Bson::Int32(1)));
    out.insert("ok", 1.0);
    body(out)
}

/// An aggregation of a sharded collection that starts with `$collStats`
/// or `$indexStats`: the stage runs on each owning shard, its documents
/// get a `shard` field, and the rest of the pipeline runs over them on
/// the primary shard (fed with `$documents`). `None` for other pipelines.
pub(crate) async fn stage_per_shard(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    ns: &str,
) -> Result<Option<Reply>> {
    let Ok(pipeline) = req.body.get_array("pipeline") else {
        return Ok(None);
    };
    let stages: Vec<Document> = pipeline
        .into_iter()
        .filter_map(|s| {
            s.ok()?
                .as_document()
                .and_then(|d| Document::try_from(d).ok())
        })
        .collect();
    let Some(first) = stages.first() else {
        return Ok(None);
    };
    if !first.contains_key("$collStats") && !first.contains_key("$indexStats") {
        return Ok(None);
    }
    let coll = req.collection.unwrap_or_default();
    let mut docs = Vec::new();
    for shard in owners(state, routing)? {
        let command = doc! {
            "aggregate": coll, "pipeline": [first.clone()],
            "cursor": {"batchSize": 100_000}, "$db": req.db,
        };
        let reply = run_on_shard(state, &shard, command).await?;
        let batch = reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .cloned()
            .unwrap_or_default();
        for d in batch {
            if let Bson::Document(mut d) = d {
                d.insert("shard", shard.id.as_str());
                docs.push(Bson::Document(d));
            }
        }
    }
    if stages.len() == 1 {
        return body(doc! {"cursor": {"id": 0i64, "ns": ns, "firstBatch": docs}, "ok": 1.0})
            .map(Some);
    }
    // The rest of the pipeline, on the primary shard.
    let primary = match state.placement.cached(req.db) {
        Some(d) => state.placement.shard(&d.primary)?,
        None => owners(state, routing)?.remove(0),
    };
    super::rest_on_shard(state, &primary, req, req.db, docs, &stages[1..])
        .await
        .map(Some)
}
