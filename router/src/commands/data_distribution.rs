//! Where a sharded collection's data is, as mongos reports it:
//! `$shardedDataDistribution` (`sh.getShardedDataDistribution()`): per
//! collection and shard, owned and orphaned documents and bytes; and
//! `balancerCollectionStatus`: whether the balancer would move anything
//! (a zone violation, a draining shard, or a data imbalance above three
//! chunk sizes, as the balancer's policy decides).

use std::collections::BTreeMap;
use std::sync::Arc;

use bson::{doc, Bson, Document};

use crate::catalog_cache::routing::CollectionRouting;
use crate::error::{Result, RouterError};
use crate::read::orphans::{Exclusion, OwnedIds};
use crate::read::pipeline::held;
use crate::session::{Namespace, Reply, Request, Session};
use crate::shards::run_on_shard;
use crate::state::RouterState;

/// One shard's share of a collection.
struct Share {
    shard: String,
    owned: i64,
    orphaned: i64,
    avg_obj_size: f64,
}

fn number(v: Option<&Bson>) -> f64 {
    match v {
        Some(Bson::Int32(n)) => f64::from(*n),
        Some(Bson::Int64(n)) => *n as f64,
        Some(Bson::Double(f)) => *f,
        _ => 0.0,
    }
}

/// Each owning shard's owned and orphaned documents of the collection.
async fn shares(state: &RouterState, routing: &CollectionRouting) -> Result<Vec<Share>> {
    let ns = routing.collection.ns.as_str();
    let Namespace { db, coll } = Namespace::parse(ns);
    let mut out = Vec::new();
    for id in routing.chunks.shards() {
        let shard = state.placement.shard(id)?;
        let stats = run_on_shard(state, &shard, doc! {"collStats": coll, "$db": db}).await?;
        let total = number(stats.get("count")) as i64;
        let exclusion = Exclusion::for_shard(state, routing, &shard, true).await;
        let owned = match exclusion.router() {
            None => {
                let filter = exclusion.apply(&Document::new());
                let reply = run_on_shard(
                    state,
                    &shard,
                    doc! {"count": coll, "query": filter, "$db": db},
                )
                .await?;
                number(reply.get("n")) as i64
            }
            Some(orphans) => {
                let mut ids =
                    OwnedIds::open(state, &shard, orphans, ns, &Document::new(), None).await?;
                let mut n = 0;
                while let Some(page) = ids.next().await? {
                    n += page.len() as i64;
                }
                ids.close().await;
                n
            }
        };
        out.push(Share {
            shard: id.to_owned(),
            owned,
            orphaned: (total - owned).max(0),
            avg_obj_size: number(stats.get("avgObjSize")),
        });
    }
    Ok(out)
}

/// `aggregate: 1` on `admin` with `[{$shardedDataDistribution: {}}, ...]`:
/// one document per sharded collection, then the later stages (the
/// router's engine, or a shard's: `read::pipeline::held`). `None` for
/// other pipelines.
pub(crate) async fn stage(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Option<Reply>> {
    let Ok(pipeline) = req.body.get_array("pipeline") else {
        return Ok(None);
    };
    let stages: Vec<Document> = pipeline
        .into_iter()
        .filter_map(|s| Document::try_from(s.ok()?.as_document()?).ok())
        .collect();
    if !stages
        .first()
        .is_some_and(|s| s.contains_key("$shardedDataDistribution"))
    {
        return Ok(None);
    }
    let mut docs = Vec::new();
    let mut all = state.routing.all();
    all.sort_by(|a, b| a.collection.ns.cmp(&b.collection.ns));
    for routing in all {
        let shards: Vec<Bson> = shares(state, &routing)
            .await?
            .into_iter()
            .map(|s| {
                Bson::Document(doc! {
                    "shardName": s.shard,
                    "numOrphanedDocs": s.orphaned,
                    "numOwnedDocuments": s.owned,
                    "ownedSizeBytes": (s.owned as f64 * s.avg_obj_size) as i64,
                    "orphanedSizeBytes": (s.orphaned as f64 * s.avg_obj_size) as i64,
                })
            })
            .collect();
        docs.push(doc! {"ns": &routing.collection.ns, "shards": shards});
    }
    let stream = held::run(state, docs, &stages[1..]).await?;
    let first = crate::read::pipeline::first_batch_size(req.body);
    crate::read::pipeline::respond(state, session, "admin.$cmd.aggregate", stream, first)
        .await
        .map(Some)
}

/// `balancerCollectionStatus: "db.coll"`.
pub(crate) async fn balancer_collection_status(
    state: &RouterState,
    req: &Request<'_>,
) -> Result<Document> {
    let ns = req
        .body
        .get_str(req.name)
        .map_err(|_| RouterError::bad_value("balancerCollectionStatus takes a namespace"))?;
    let routing = state.routing.get(ns).ok_or_else(|| {
        RouterError::command(
            118,
            "NamespaceNotSharded",
            format!("Collection {ns} is not sharded."),
        )
    })?;
    let chunk_size = match routing.collection.max_chunk_size_bytes {
        Some(b) => b,
        None => state.catalog.chunk_size_bytes().await?,
    };
    let mut out =
        doc! {"chunkSize": chunk_size as f64 / (1024.0 * 1024.0), "balancerCompliant": true};
    if let Some(violation) = violation(state, &routing, chunk_size).await? {
        out.insert("balancerCompliant", false);
        out.insert("firstComplianceViolation", violation);
    }
    Ok(out)
}

/// The first reason the balancer would move a chunk of the collection.
async fn violation(
    state: &RouterState,
    routing: &CollectionRouting,
    chunk_size: i64,
) -> Result<Option<&'static str>> {
    if routing.collection.defragment_collection == Some(true) {
        return Ok(Some("defragmentingChunks"));
    }
    let shards = state.placement.shards();
    let owners = routing.chunks.shards();
    if shards
        .iter()
        .any(|s| s.draining && owners.contains(s.id.as_str()))
    {
        return Ok(Some("draining"));
    }
    let pattern = &routing.pattern;
    for zone in state.catalog.zone_ranges(&routing.collection.ns).await? {
        let (Ok(min), Ok(max)) = (
            pattern.encode_bound(&zone.min),
            pattern.encode_bound(&zone.max),
        ) else {
            continue;
        };
        let misplaced = routing.chunks.iter().any(|c| {
            c.min < max
                && min < c.max
                && !shards
                    .iter()
                    .any(|s| s.id == c.shard && s.tags.contains(&zone.tag))
        });
        if misplaced {
            return Ok(Some("zoneViolation"));
        }
    }
    // Data per eligible shard (every shard that is not draining).
    let mut data: BTreeMap<String, f64> = shards
        .iter()
        .filter(|s| !s.draining)
        .map(|s| (s.id.clone(), 0.0))
        .collect();
    for s in shares(state, routing).await? {
        *data.entry(s.shard).or_default() += s.owned as f64 * s.avg_obj_size;
    }
    let most = data.values().cloned().fold(0.0, f64::max);
    let least = data.values().cloned().fold(f64::MAX, f64::min);
    if data.len() > 1 && most - least > 3.0 * chunk_size as f64 {
        return Ok(Some("chunksImbalance"));
    }
    Ok(None)
}
