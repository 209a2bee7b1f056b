//! A `findAndModify`'s `fields` applied to a document the router holds (a
//! document whose key change moved it to another shard): by the router's
//! engine, else, for what only `find` projects (`$slice`, `$elemMatch`,
//! positional `.$`, `$meta`), by a shard's `find` over a temporary
//! collection holding the document, so the answer is the server's own and
//! never the engine's `Unsupported`.

use bson::{doc, Document};

use crate::error::{Result, RouterError};
use crate::shards::run_on_shard;
use crate::state::RouterState;

/// The database a shard holds the temporary collection in.
const SHARD_DB: &str = "admin";

/// `doc` projected by `fields`; `query` (and `collation`) is matched
/// again on the shard so a positional projection finds its element.
pub(super) async fn project(
    state: &RouterState,
    doc: Document,
    fields: &Document,
    (query, collation): (&Document, Option<&Document>),
) -> Result<Document> {
    match shardgate_query::project(&doc, fields) {
        Ok(projected) => return Ok(projected),
        Err(e) if !e.is_unsupported() => {
            return Err(RouterError::command(e.code().0, e.code().1, e.to_string()))
        }
        Err(_) => {}
    }
    crate::transactions::outside(on_shard(state, doc, fields, (query, collation))).await
}

async fn on_shard(
    state: &RouterState,
    doc: Document,
    fields: &Document,
    (query, collation): (&Document, Option<&Document>),
) -> Result<Document> {
    let shard = state
        .placement
        .shards()
        .into_iter()
        .min_by(|a, b| a.id.cmp(&b.id))
        .ok_or_else(|| RouterError::command(70, "ShardNotFound", "no shard to project on"))?;
    let coll = format!(
        "tmp.shardgate.project.{}",
        bson::oid::ObjectId::new().to_hex()
    );
    let insert = doc! {"insert": &coll, "documents": [doc], "$db": SHARD_DB};
    let found = match run_on_shard(state, &shard, insert).await {
        Ok(_) => {
            // The collection holds the one document: the query first (a
            // positional projection needs its match), then none (the
            // update may have taken the document out of the query).
            let mut found = None;
            for filter in [query.clone(), Document::new()] {
                let mut find = doc! {"find": &coll, "filter": filter, "projection": fields.clone(), "limit": 1, "$db": SHARD_DB};
                if let Some(c) = collation {
                    find.insert("collation", c.clone());
                }
                let reply = run_on_shard(state, &shard, find).await;
                let first = reply.map(|r| {
                    r.get_document("cursor")
                        .and_then(|c| c.get_array("firstBatch"))
                        .ok()
                        .and_then(|b| b.first())
                        .and_then(|d| d.as_document().cloned())
                });
                match first {
                    Ok(None) => continue,
                    other => {
                        found = Some(other);
                        break;
                    }
                }
            }
            found.unwrap_or(Ok(None))
        }
        Err(e) => Err(e),
    };
    let drop = doc! {"drop": &coll, "$db": SHARD_DB};
    let _ = run_on_shard(state, &shard, drop).await;
    Ok(found?.unwrap_or_default())
}
