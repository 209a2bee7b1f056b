//! `dataSize` of a collection, or of a shard-key range of it, summed over
//! the shards that own its chunks as mongos sums them (`size`,
//! `numObjects`, `millis`). A shard without the command (SecantusDB) is
//! asked with an aggregation instead: the documents in the range, its
//! orphans left out, counted and sized with `$bsonSize`.

use std::time::Instant;

use bson::{doc, Bson, Document};
use shardgate_config_store::shard_key::{range_filter, ShardKeyPattern};
use shardgate_config_store::ShardType;

use crate::error::{Result, RouterError};
use crate::session::{int_of, Namespace, Reply, Request};
use crate::shards::run_on_shard;
use crate::state::RouterState;

use super::body;

/// What one shard counted.
#[derive(Default)]
struct Size {
    size: i64,
    objects: i64,
    millis: i64,
}

/// `{dataSize: "db.coll", keyPattern, min, max}`.
pub(crate) async fn data_size(state: &RouterState, req: &Request<'_>) -> Result<Reply> {
    let ns = req
        .body
        .get_str("dataSize")
        .map_err(|_| RouterError::bad_value("'dataSize' must be a namespace string"))?;
    let Namespace { db, coll } = Namespace::parse(ns);
    if db != req.db || coll.is_empty() {
        return Err(RouterError::command(
            73,
            "InvalidNamespace",
            format!(
                "dataSize names '{ns}', not a collection of database '{}'",
                req.db
            ),
        ));
    }
    let range = key_range(req)?;
    let routing = state.routing.get(ns);
    let shards: Vec<ShardType> = match &routing {
        Some(r) => r
            .chunks
            .shards()
            .into_iter()
            .map(|id| state.placement.shard(id))
            .collect::<Result<_>>()?,
        None => match state.placement.cached(db) {
            Some(d) => vec![state.placement.shard(&d.primary)?],
            None => Vec::new(),
        },
    };
    let mut total = Size::default();
    for shard in &shards {
        let orphans = match &routing {
            Some(r) => crate::read::orphan_clause(r, &shard.id),
            None => Document::new(),
        };
        let s = shard_size(state, shard, req, db, coll, range.as_ref(), orphans).await?;
        total.size += s.size;
        total.objects += s.objects;
        total.millis += s.millis;
    }
    body(doc! {
        "size": total.size,
        "numObjects": total.objects,
        "millis": total.millis,
        "ok": 1.0,
    })
}

/// The filter of `keyPattern`, `min` and `max` (`[min, max)`), if given.
fn key_range(req: &Request<'_>) -> Result<Option<Document>> {
    let field = |f: &str| -> Result<Option<Document>> {
        match req.body.get_document(f) {
            Ok(d) => Document::try_from(d)
                .map(Some)
                .map_err(|e| RouterError::bad_value(e.to_string())),
            Err(_) => Ok(None),
        }
    };
    let (Some(pattern), min, max) = (field("keyPattern")?, field("min")?, field("max")?) else {
        return Ok(None);
    };
    let pattern = ShardKeyPattern::parse(&pattern)
        .map_err(|e| RouterError::command(2, "BadValue", format!("keyPattern {pattern}: {e}")))?;
    let fields: Vec<_> = pattern.fields().collect();
    let bound = |b: Option<Document>, edge: Bson| {
        b.filter(|d| !d.is_empty()).unwrap_or_else(|| {
            fields
                .iter()
                .map(|(f, _)| ((*f).to_owned(), edge.clone()))
                .collect()
        })
    };
    let (min, max) = (bound(min, Bson::MinKey), bound(max, Bson::MaxKey));
    Ok(Some(range_filter(&fields, &min, &max)))
}

/// One shard's figures: its own `dataSize` where it has the command, else
/// counted by an aggregation over its owned documents in the range.
async fn shard_size(
    state: &RouterState,
    shard: &ShardType,
    req: &Request<'_>,
    db: &str,
    coll: &str,
    range: Option<&Document>,
    orphans: Document,
) -> Result<Size> {
    let started = Instant::now();
    if orphans.is_empty() {
        let mut cmd = super::passthrough(req)?;
        cmd.insert("$db", db);
        match run_on_shard(state, shard, cmd).await {
            Ok(r) => {
                return Ok(Size {
                    size: int_of(r.get("size")),
                    objects: int_of(r.get("numObjects")),
                    millis: int_of(r.get("millis")),
                })
            }
            Err(e) if e.code().0 == 59 => {}
            Err(e) => return Err(e),
        }
    }
    let clauses: Vec<Bson> = range
        .into_iter()
        .cloned()
        .chain((!orphans.is_empty()).then_some(orphans))
        .map(Bson::Document)
        .collect();
    let filter = match clauses.len() {
        0 => Document::new(),
        _ => doc! {"$and": clauses},
    };
    let cmd = doc! {
        "aggregate": coll,
        "pipeline": [
            {"$match": filter},
            {"$group": {"_id": null, "size": {"$sum": {"$bsonSize": "$$ROOT"}}, "n": {"$sum": 1}}},
        ],
        "cursor": {},
        "$db": db,
    };
    let reply = run_on_shard(state, shard, cmd).await?;
    let first = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| b.first())
        .and_then(Bson::as_document);
    Ok(Size {
        size: first.map_or(0, |d| int_of(d.get("size"))),
        objects: first.map_or(0, |d| int_of(d.get("n"))),
        millis: started.elapsed().as_millis() as i64,
    })
}
