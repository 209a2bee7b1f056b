//! `checkMetadataConsistency`: what mongos reports when a sharded
//! collection's shards disagree. shardgate checks indexes: every shard
//! owning a chunk (and the primary) must have the same index names and
//! keys; each difference is an `InconsistentIndex` entry.

use std::collections::{BTreeMap, BTreeSet};

use bson::{doc, Bson, Document};

use crate::catalog_cache::routing::CollectionRouting;
use crate::error::Result;
use crate::session::{Namespace, Reply, Request};
use crate::shards::run_on_shard;
use crate::state::RouterState;

use super::{body, targets};

/// `checkMetadataConsistency`: on `admin` with `1`, every sharded
/// collection; on a database with `1`, its sharded collections; with a
/// collection name, that one. The inconsistencies come back as a cursor.
pub(crate) async fn check(state: &RouterState, req: &Request<'_>) -> Result<Reply> {
    let named = req.collection.map(|c| format!("{}.{c}", req.db));
    let mut found = Vec::new();
    for routing in state.routing.all() {
        let ns = routing.collection.ns.as_str();
        let in_scope = match &named {
            Some(n) => n == ns,
            None => req.db == "admin" || Namespace::parse(ns).db == req.db,
        };
        if in_scope {
            found.extend(index_inconsistencies(state, &routing).await?);
        }
    }
    let cursor_ns = format!("{}.$cmd.checkMetadataConsistency", req.db);
    body(doc! {"cursor": {"id": 0i64, "ns": cursor_ns, "firstBatch": found}, "ok": 1.0})
}

/// The collection's indexes as each shard holds them: name → shard → spec.
async fn indexes_by_shard(
    state: &RouterState,
    routing: &CollectionRouting,
) -> Result<(Vec<String>, BTreeMap<String, BTreeMap<String, Document>>)> {
    let Namespace { db, coll } = Namespace::parse(&routing.collection.ns);
    let mut by_name: BTreeMap<String, BTreeMap<String, Document>> = BTreeMap::new();
    let mut shards = Vec::new();
    for shard in targets(state, routing, db)? {
        let reply = match run_on_shard(state, &shard, doc! {"listIndexes": coll, "$db": db}).await {
            Ok(r) => r,
            // A primary without the collection has no indexes of it.
            Err(e) if e.code().0 == 26 => continue,
            Err(e) => return Err(e),
        };
        shards.push(shard.id.clone());
        let batch = reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .cloned()
            .unwrap_or_default();
        for spec in batch.into_iter().filter_map(|b| match b {
            Bson::Document(d) => Some(d),
            _ => None,
        }) {
            let name = spec.get_str("name").unwrap_or_default().to_owned();
            let mut spec = spec.clone();
            spec.remove("v");
            spec.remove("ns");
            by_name
                .entry(name)
                .or_default()
                .insert(shard.id.clone(), spec);
        }
    }
    Ok((shards, by_name))
}

/// One `InconsistentIndex` entry per index that some shard lacks or holds
/// with other properties.
async fn index_inconsistencies(
    state: &RouterState,
    routing: &CollectionRouting,
) -> Result<Vec<Bson>> {
    let (shards, by_name) = indexes_by_shard(state, routing).await?;
    let mut out = Vec::new();
    for (name, specs) in by_name {
        let missing: Vec<&String> = shards.iter().filter(|s| !specs.contains_key(*s)).collect();
        let properties: BTreeSet<&String> = specs.values().flat_map(|s| s.keys()).collect();
        let mut inconsistent = Vec::new();
        for k in properties {
            let values: Vec<Option<&Bson>> = specs.values().map(|s| s.get(k)).collect();
            if values.iter().any(|v| *v != values[0]) {
                for v in values.into_iter().flatten() {
                    inconsistent.push(Bson::Document(doc! {"k": k, "v": v.clone()}));
                }
            }
        }
        if missing.is_empty() && inconsistent.is_empty() {
            continue;
        }
        out.push(Bson::Document(doc! {
            "type": "InconsistentIndex",
            "description": "Found an index of a sharded collection that is inconsistent between different shards",
            "details": {
                "namespace": &routing.collection.ns,
                "info": {
                    "missingFromShards": missing,
                    "inconsistentProperties": inconsistent,
                    "indexName": name,
                },
            },
        }));
    }
    Ok(out)
}
