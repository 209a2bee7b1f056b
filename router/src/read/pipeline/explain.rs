//! `explain` of an aggregation on a sharded collection, shaped as mongos's:
//! `splitPipeline` (`shardsPart`, `mergerPart`), `mergeType` and each
//! targeted shard's own explain of its part under `shards`.

use std::sync::Arc;

use bson::{doc, Document};

use super::split::split;
use super::{leading_filter, merge};
use crate::catalog_cache::routing::CollectionRouting;
use crate::error::Result;
use crate::read::{rewrite, run_raw, target};
use crate::session::Reply;
use crate::state::RouterState;

/// The explain reply.
pub(super) async fn explain(
    state: &Arc<RouterState>,
    body: &bson::RawDocument,
    routing: &CollectionRouting,
    pipeline: &[Document],
) -> Result<Reply> {
    let shards = target(state, routing, &leading_filter(pipeline), body)?;
    let cut = split(pipeline, crate::session::simple_collation(body));
    let mut per_shard = Document::new();
    for s in &shards {
        let cmd = rewrite(body, &[], doc! {"pipeline": cut.shards.clone()})?;
        let reply = run_raw(state, s, &cmd).await?;
        let mut explained = Document::try_from(reply.as_ref()).unwrap_or_default();
        for field in ["ok", "$clusterTime", "operationTime"] {
            explained.remove(field);
        }
        explained.insert("host", s.host.clone());
        per_shard.insert(s.id.clone(), explained);
    }
    let mut merger: Vec<Document> = Vec::new();
    if let Some(sort) = &cut.sort {
        merger.push(doc! {"$mergeCursors": {"sort": sort.clone()}});
    } else {
        merger.push(doc! {"$mergeCursors": {}});
    }
    if cut.skip > 0 {
        merger.push(doc! {"$skip": cut.skip as i64});
    }
    if let Some(n) = cut.limit {
        merger.push(doc! {"$limit": n as i64});
    }
    merger.extend(cut.merge.iter().cloned());
    let reply = doc! {
        "mergeType": merge::merge_type(&cut.merge),
        "splitPipeline": {"shardsPart": cut.shards, "mergerPart": merger},
        "shards": per_shard,
        "ok": 1.0,
    };
    Ok(Reply::Body(reply.to_vec().unwrap_or_default()))
}
