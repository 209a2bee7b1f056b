//! `count`, `distinct` and `explain` (of `find`, `count`, `distinct`) on a
//! sharded collection; `aggregate` is `read::pipeline`.

use bson::{doc, Bson, Document};

use super::orphans::{count_owned, distinct_owned, exclusions};
use super::{doc_field, int_field, rewrite, run_raw, target};
use crate::catalog_cache::routing::CollectionRouting;
use crate::error::Result;
use crate::session::{Reply, Request};
use crate::state::RouterState;
use shardgate_query as query;

/// `count`: summed over the target shards, then skip and limit applied.
pub(crate) async fn count(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
) -> Result<Reply> {
    let filter = doc_field(req.body, "query")?.unwrap_or_default();
    let skip = int_field(req.body, "skip")?.unwrap_or(0).max(0);
    let limit = int_field(req.body, "limit")?.unwrap_or(0).abs();
    let shards = target(state, routing, &filter, req.body)?;
    let ns = routing.collection.ns.as_str();
    let simple = crate::session::simple_collation(req.body);
    let excluded = exclusions(state, routing, &shards, simple).await;
    let calls = shards.iter().zip(excluded).map(|(s, exclusion)| {
        let mut add = doc! {"query": exclusion.apply(&filter)};
        if limit > 0 {
            add.insert("limit", limit + skip);
        }
        let filter = &filter;
        async move {
            if let Some(orphans) = exclusion.router() {
                return count_owned(state, s, &orphans, ns, filter, req.body).await;
            }
            let cmd = rewrite(req.body, &["skip", "limit"], add)?;
            let reply = run_raw(state, s, &cmd).await?;
            Ok(crate::session::number_field(&reply, "n").unwrap_or(0))
        }
    });
    let mut total: i64 = 0;
    for n in futures::future::join_all(calls).await {
        total += n?;
    }
    let mut n = (total - skip).max(0);
    if limit > 0 {
        n = n.min(limit);
    }
    Ok(Reply::Body(
        doc! {"n": n as i32, "ok": 1.0}.to_vec().unwrap_or_default(),
    ))
}

/// `distinct`: the union of the shards' values, deduplicated and in BSON order.
pub(crate) async fn distinct(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
) -> Result<Reply> {
    let filter = doc_field(req.body, "query")?.unwrap_or_default();
    let shards = target(state, routing, &filter, req.body)?;
    let ns = routing.collection.ns.as_str();
    let key = req.body.get_str("key").unwrap_or_default();
    let simple = crate::session::simple_collation(req.body);
    let excluded = exclusions(state, routing, &shards, simple).await;
    let calls = shards.iter().zip(excluded).map(|(s, exclusion)| {
        let add = doc! {"query": exclusion.apply(&filter)};
        let filter = &filter;
        async move {
            if let Some(orphans) = exclusion.router() {
                return distinct_owned(state, s, &orphans, ns, key, filter, req.body).await;
            }
            let cmd = rewrite(req.body, &[], add)?;
            let reply = run_raw(state, s, &cmd).await?;
            Ok(reply
                .get_array("values")
                .map(|arr| {
                    arr.into_iter()
                        .filter_map(|v| v.ok().and_then(|v| Bson::try_from(v).ok()))
                        .collect()
                })
                .unwrap_or_default())
        }
    });
    let mut values: Vec<Bson> = Vec::new();
    for shard_values in futures::future::join_all(calls).await {
        values.extend(shard_values?);
    }
    // As mongos: one of each value equal under the collation (the first
    // seen), in the collation's order.
    let collator = crate::collation::Collator::of_command(req.body);
    let mut keyed: Vec<(Bson, Bson)> = values
        .into_iter()
        .map(|v| {
            (
                collator.as_ref().map_or_else(|| v.clone(), |c| c.key(&v)),
                v,
            )
        })
        .collect();
    keyed.sort_by(|a, b| query::compare_bson(&a.0, &b.0));
    keyed.dedup_by(|a, b| query::compare_bson(&a.0, &b.0) == std::cmp::Ordering::Equal);
    let values: Vec<Bson> = keyed.into_iter().map(|(_, v)| v).collect();
    Ok(Reply::Body(
        doc! {"values": values, "ok": 1.0}
            .to_vec()
            .unwrap_or_default(),
    ))
}

/// `explain` of a command on a sharded collection: each target shard's
/// explain, as mongos nests them under `shards`.
pub(crate) async fn explain_to_shards(
    state: &RouterState,
    req: &Request<'_>,
    routing: &CollectionRouting,
    filter: &Document,
) -> Result<Reply> {
    let shards = target(state, routing, filter, req.body)?;
    let mut per_shard = Vec::new();
    for s in &shards {
        let cmd = rewrite(req.body, &[], Document::new())?;
        let reply = run_raw(state, s, &cmd).await?;
        let explained = Document::try_from(reply.as_ref()).unwrap_or_default();
        per_shard
            .push(doc! {"shardName": &s.id, "connectionString": &s.host, "explain": explained});
    }
    let stage = if shards.len() == 1 {
        "SINGLE_SHARD"
    } else {
        "SHARD_MERGE"
    };
    let reply = doc! {
        "queryPlanner": {"mongosPlannerVersion": 1, "winningPlan": {"stage": stage, "shards": per_shard}},
        "ok": 1.0,
    };
    Ok(Reply::Body(reply.to_vec().unwrap_or_default()))
}
