//! Views over sharded collections. A view's definition lives on its
//! database's primary, which would run a read of the view over its own
//! slice of a sharded collection only; so `find`, `aggregate`, `count` and
//! `distinct` on a view whose chain ends at a sharded collection (or whose
//! pipeline reads one) are run by the router as an aggregation of the
//! resolved pipeline, as mongos does on a shard's
//! `CommandOnShardedViewNotSupportedOnMongod`.
//!
//! Definitions are cached per database for [`TTL`] and dropped at once when
//! `create`, `collMod`, `drop`, `renameCollection` or `dropDatabase` of the
//! database passes through this router; a view changed through another
//! router is seen within the TTL. Databases without a sharded collection
//! are never looked at.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document, RawDocumentBuf};

use super::pipeline::{self, Ctx};
use crate::error::{Result, RouterError};
use crate::session::{Reply, Request, Session};
use crate::state::RouterState;

/// How long a database's view definitions are trusted.
const TTL: Duration = Duration::from_secs(5);

/// Commands that may create, change or drop a view.
const VIEW_DDL: [&str; 5] = [
    "create",
    "collMod",
    "drop",
    "renameCollection",
    "dropDatabase",
];

/// One view: the collection (or view) it reads, and its pipeline.
type View = (String, Vec<Document>);

/// A database's views by name, and when they were read.
type Definitions = (Instant, Arc<HashMap<String, View>>);

/// The router's cache of view definitions.
#[derive(Default)]
pub(crate) struct Views {
    dbs: Mutex<HashMap<String, Definitions>>,
}

impl Views {
    /// Forgets `db`'s definitions when `req` may change them.
    pub(crate) fn note_command(&self, req: &Request<'_>) {
        if VIEW_DDL.contains(&req.name) {
            let db = match req.name {
                "renameCollection" => req
                    .body
                    .get_str("renameCollection")
                    .ok()
                    .and_then(|ns| ns.split_once('.'))
                    .map(|(db, _)| db),
                _ => Some(req.db),
            };
            if let (Some(db), Ok(mut dbs)) = (db, self.dbs.lock()) {
                dbs.remove(db);
            }
        }
    }

    fn cached(&self, db: &str) -> Option<Arc<HashMap<String, View>>> {
        let dbs = self.dbs.lock().ok()?;
        let (at, views) = dbs.get(db)?;
        (at.elapsed() < TTL).then(|| views.clone())
    }
}

/// `db`'s view definitions, from the cache or its primary.
async fn definitions(state: &Arc<RouterState>, db: &str) -> Result<Arc<HashMap<String, View>>> {
    if let Some(views) = state.views.cached(db) {
        return Ok(views);
    }
    let primary = pipeline::primary_of(state, db).await?;
    let cmd = doc! {"listCollections": 1, "filter": {"type": "view"}, "$db": db};
    let cmd = RawDocumentBuf::try_from(&cmd).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let cursor = shardgate_shard_client::ShardCursor::open(
        state.shards.clone(),
        crate::shards::target(&primary),
        &cmd,
    )
    .await?;
    let mut views = HashMap::new();
    for raw in cursor.all().await? {
        let Ok(d) = Document::try_from(raw) else {
            continue;
        };
        let (Ok(name), Ok(options)) = (d.get_str("name"), d.get_document("options")) else {
            continue;
        };
        let on = options.get_str("viewOn").unwrap_or_default().to_owned();
        let stages = options
            .get_array("pipeline")
            .map(|a| a.iter().filter_map(|s| s.as_document().cloned()).collect())
            .unwrap_or_default();
        views.insert(name.to_owned(), (on, stages));
    }
    let views = Arc::new(views);
    if let Ok(mut dbs) = state.views.dbs.lock() {
        dbs.insert(db.to_owned(), (Instant::now(), views.clone()));
    }
    Ok(views)
}

/// The base collection and the whole pipeline of view `coll`, when the
/// router must run reads of it.
async fn resolve(state: &Arc<RouterState>, db: &str, coll: &str) -> Result<Option<View>> {
    let prefix = format!("{db}.");
    if !state
        .routing
        .all()
        .iter()
        .any(|r| r.collection.ns.starts_with(&prefix))
    {
        return Ok(None);
    }
    let views = definitions(state, db).await?;
    let (mut base, mut stages) = (coll.to_owned(), Vec::new());
    while let Some((on, pipeline)) = views.get(&base) {
        let mut whole = pipeline.clone();
        whole.extend(stages);
        stages = whole;
        base = on.clone();
        if stages.len() > 10_000 {
            break; // a cycle the server would refuse
        }
    }
    if base == coll {
        return Ok(None);
    }
    let ctx = Ctx::plain(state, db);
    let sharded = state.routing.get(&format!("{db}.{base}")).is_some();
    let reads_sharded = stages.iter().any(|s| pipeline::is_router_stage(&ctx, s));
    Ok((sharded || reads_sharded).then_some((base, stages)))
}

/// Runs `find`, `aggregate`, `count` or `distinct` on a view over a
/// sharded collection; `None` when `req` is anything else.
pub(crate) async fn run(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Option<Reply>> {
    state.views.note_command(req);
    if !matches!(req.name, "find" | "aggregate" | "count" | "distinct") {
        return Ok(None);
    }
    if req.body.get_bool("explain").unwrap_or(false) {
        return Ok(None);
    }
    let Some(coll) = req.collection else {
        return Ok(None);
    };
    let Some((base, stages)) = resolve(state, req.db, coll).await? else {
        return Ok(None);
    };
    let ns = format!("{}.{coll}", req.db);
    let mut pipeline = stages;
    pipeline.extend(command_stages(req)?);
    let ctx = Ctx::new(state, req.db, req.body);
    let stream = pipeline::open(&ctx, Some(base), pipeline).await?;
    match req.name {
        "count" => {
            let docs = pipeline::drain(stream).await?;
            let n = docs
                .first()
                .and_then(|d| crate::session::number_field(d, "n"))
                .unwrap_or(0);
            Ok(Some(body(doc! {"n": n as i32, "ok": 1.0})))
        }
        "distinct" => {
            let docs = pipeline::drain(stream).await?;
            let mut values: Vec<Bson> = docs
                .first()
                .and_then(|d| d.get_array("values").ok())
                .map(|a| {
                    a.into_iter()
                        .filter_map(|v| v.ok().and_then(|v| Bson::try_from(v).ok()))
                        .collect()
                })
                .unwrap_or_default();
            values.sort_by(shardgate_query::compare_bson);
            Ok(Some(body(doc! {"values": values, "ok": 1.0})))
        }
        "find" => {
            let first = super::int_field(req.body, "batchSize")?
                .unwrap_or(101)
                .max(0) as usize;
            pipeline::respond(state, session, &ns, stream, first)
                .await
                .map(Some)
        }
        _ => {
            let first = pipeline::first_batch_size(req.body);
            pipeline::respond(state, session, &ns, stream, first)
                .await
                .map(Some)
        }
    }
}

/// The stages that stand for the command after the view's own.
fn command_stages(req: &Request<'_>) -> Result<Vec<Document>> {
    let field = |name: &str| super::doc_field(req.body, name);
    let mut stages = Vec::new();
    let filter = match req.name {
        "find" => field("filter")?,
        "count" | "distinct" => field("query")?,
        _ => return pipeline::pipeline_of(req.body),
    };
    if let Some(filter) = filter.filter(|f| !f.is_empty()) {
        stages.push(doc! {"$match": filter});
    }
    if req.name == "find" {
        if let Some(sort) = field("sort")?.filter(|s| !s.is_empty()) {
            stages.push(doc! {"$sort": sort});
        }
    }
    if req.name != "distinct" {
        if let Some(n) = super::int_field(req.body, "skip")?.filter(|n| *n > 0) {
            stages.push(doc! {"$skip": n});
        }
        if let Some(n) = super::int_field(req.body, "limit")?.filter(|n| *n != 0) {
            stages.push(doc! {"$limit": n.abs()});
        }
    }
    match req.name {
        "find" => {
            if let Some(p) = field("projection")?.filter(|p| !p.is_empty()) {
                stages.push(doc! {"$project": p});
            }
        }
        "count" => stages.push(doc! {"$count": "n"}),
        _ => {
            let key = format!("${}", req.body.get_str("key").unwrap_or_default());
            stages.extend([
                doc! {"$project": {"_id": 0, "v": key}},
                doc! {"$unwind": {"path": "$v", "preserveNullAndEmptyArrays": true}},
                doc! {"$match": {"v": {"$exists": true}}},
                doc! {"$group": {"_id": Bson::Null, "values": {"$addToSet": "$v"}}},
            ]);
        }
    }
    Ok(stages)
}

fn body(d: Document) -> Reply {
    Reply::Body(d.to_vec().unwrap_or_default())
}
