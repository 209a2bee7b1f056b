//! The `config` database as a view of the config store: `find`,
//! `aggregate`, `count`, `distinct` and `listCollections` over `config.shards`,
//! `config.chunks`, … shaped as on a real cluster (so mongosh's
//! `sh.status()` prints the real picture), and the writes mongosh's helpers
//! make to `config.settings` and `config.collections`.

mod writes;

use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument};
use serde::Serialize;

use crate::error::{Result, RouterError};
use crate::read::pipeline::held;
use crate::session::{Reply, Request, Session};
use crate::state::RouterState;

/// The collections of the view.
const COLLECTIONS: [&str; 13] = [
    "actionlog",
    "changelog",
    "chunks",
    "collections",
    "databases",
    "locks",
    "migrations",
    "mongos",
    "queryAnalyzers",
    "settings",
    "shards",
    "tags",
    "version",
];

/// Runs a command on the `config` database.
pub(crate) async fn run(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Reply> {
    let reply = match req.name {
        "find" | "aggregate" => return read(state, session, req).await,
        "count" => count(state, req).await,
        "distinct" => distinct(state, req).await,
        "listCollections" => Ok(list_collections(req.body)),
        "update" => writes::update(state, req).await,
        "insert" => writes::insert(state, req).await,
        "delete" => writes::delete(state, req).await,
        "getMore" => Err(RouterError::command(43, "CursorNotFound", "cursor id not found")),
        "killCursors" => return Ok(crate::read::get_more::kill_unknown_cursors(req)),
        other => Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("'{other}' is not supported on the config database view; use find, aggregate, count, distinct or the admin commands"),
        )),
    };
    reply.and_then(ok)
}

/// A success reply: the fields of `d` plus `ok: 1`.
fn ok(mut d: Document) -> Result<Reply> {
    d.insert("ok", 1.0);
    d.to_vec()
        .map(Reply::Body)
        .map_err(|e| RouterError::command(1, "InternalError", format!("reply encoding: {e}")))
}

fn collection_arg<'a>(req: &Request<'a>) -> Result<&'a str> {
    req.body
        .get_str(req.name)
        .map_err(|_| RouterError::bad_value(format!("{} needs a collection name", req.name)))
}

fn doc_arg(body: &RawDocument, field: &str) -> Result<Option<Document>> {
    match body.get(field) {
        Ok(Some(v)) => match v.as_document() {
            Some(d) => Document::try_from(d)
                .map(Some)
                .map_err(|e| RouterError::bad_value(format!("'{field}': {e}"))),
            None if matches!(v, bson::RawBsonRef::Null) => Ok(None),
            None => Err(RouterError::bad_value(format!(
                "'{field}' must be a document"
            ))),
        },
        _ => Ok(None),
    }
}

fn int_arg(body: &RawDocument, field: &str) -> i64 {
    crate::session::number_field(body, field).unwrap_or(0)
}

fn to_docs<T: Serialize>(items: Vec<T>) -> Result<Vec<Document>> {
    items
        .iter()
        .map(|i| {
            bson::serialize_to_document(i)
                .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))
        })
        .collect()
}

/// The documents of one view collection, read from the store.
pub(crate) async fn documents(state: &RouterState, coll: &str) -> Result<Vec<Document>> {
    let c = &state.catalog;
    match coll {
        "shards" => to_docs(c.shards().await?),
        "databases" => to_docs(c.databases().await?),
        "collections" => to_docs(c.collections().await?),
        "chunks" => {
            let mut all = Vec::new();
            for coll in c.collections().await? {
                all.extend(
                    c.chunks(&coll.ns)
                        .await?
                        .into_iter()
                        .map(|(chunk, _)| chunk),
                );
            }
            to_docs(all)
        }
        "tags" => to_docs(c.all_zone_ranges().await?),
        "settings" => c.settings().await.map_err(Into::into),
        "queryAnalyzers" => c.query_analyzers().await.map_err(Into::into),
        "version" => to_docs(vec![c.version().await?]),
        "mongos" => to_docs(c.routers().await?),
        "locks" => to_docs(c.locks().await?),
        "changelog" => to_docs(c.changelog().await?),
        _ => Ok(Vec::new()),
    }
}

/// The stages of a `find` on the view.
fn find_stages(body: &RawDocument) -> Result<Vec<Document>> {
    let mut stages = Vec::new();
    if let Some(filter) = doc_arg(body, "filter")?.filter(|f| !f.is_empty()) {
        stages.push(doc! {"$match": filter});
    }
    if let Some(sort) = doc_arg(body, "sort")?.filter(|s| !s.is_empty()) {
        stages.push(doc! {"$sort": sort});
    }
    let skip = int_arg(body, "skip");
    if skip < 0 {
        return Err(RouterError::bad_value("skip value must be non-negative"));
    }
    if skip > 0 {
        stages.push(doc! {"$skip": skip});
    }
    let limit = int_arg(body, "limit").unsigned_abs();
    if limit > 0 {
        stages.push(doc! {"$limit": limit as i64});
    }
    if let Some(projection) = doc_arg(body, "projection")?.filter(|p| !p.is_empty()) {
        stages.push(doc! {"$project": projection});
    }
    Ok(stages)
}

/// `find` and `aggregate`: the client's stages over the view's documents,
/// behind a cursor.
async fn read(state: &Arc<RouterState>, session: &Session, req: &Request<'_>) -> Result<Reply> {
    let coll = collection_arg(req)?;
    let (stages, first) = match req.name {
        "find" => (
            find_stages(req.body)?,
            crate::session::number_field(req.body, "batchSize").map_or(101, |n| n.max(0) as usize),
        ),
        _ => (
            crate::read::pipeline::pipeline_of(req.body)?,
            crate::read::pipeline::first_batch_size(req.body),
        ),
    };
    let docs = documents(state, coll).await?;
    let stream = held::run(state, docs, &stages).await?;
    let ns = format!("config.{coll}");
    crate::read::pipeline::respond(state, session, &ns, stream, first).await
}

/// Everything `stages` give over the view's documents.
async fn all(state: &Arc<RouterState>, coll: &str, stages: &[Document]) -> Result<Vec<Document>> {
    let docs = documents(state, coll).await?;
    let stream = held::run(state, docs, stages).await?;
    crate::read::pipeline::drain(stream)
        .await?
        .into_iter()
        .map(|d| Document::try_from(d).map_err(|e| RouterError::bad_value(e.to_string())))
        .collect()
}

async fn count(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    let coll = collection_arg(req)?;
    let mut stages = Vec::new();
    if let Some(query) = doc_arg(req.body, "query")?.filter(|q| !q.is_empty()) {
        stages.push(doc! {"$match": query});
    }
    let skip = int_arg(req.body, "skip").max(0);
    if skip > 0 {
        stages.push(doc! {"$skip": skip});
    }
    let limit = int_arg(req.body, "limit").unsigned_abs();
    if limit > 0 {
        stages.push(doc! {"$limit": limit as i64});
    }
    stages.push(doc! {"$count": "n"});
    let out = all(state, coll, &stages).await?;
    let n = out
        .first()
        .and_then(|d| d.get("n"))
        .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
        .unwrap_or(0);
    Ok(doc! {"n": n})
}

/// `distinct`: each value of the key once, an array's elements one by one.
async fn distinct(state: &Arc<RouterState>, req: &Request<'_>) -> Result<Document> {
    let coll = collection_arg(req)?;
    let key = req
        .body
        .get_str("key")
        .map_err(|_| RouterError::command(14, "TypeMismatch", "'key' must be a string"))?;
    let mut stages = Vec::new();
    if let Some(query) = doc_arg(req.body, "query")?.filter(|q| !q.is_empty()) {
        stages.push(doc! {"$match": query});
    }
    stages.push(doc! {"$project": {"_id": 0, "v": format!("${key}")}});
    let mut values: Vec<Bson> = Vec::new();
    for d in all(state, coll, &stages).await? {
        let found = match d.get("v") {
            Some(Bson::Array(items)) => items.clone(),
            Some(v) => vec![v.clone()],
            None => Vec::new(),
        };
        for v in found {
            if !values.contains(&v) {
                values.push(v);
            }
        }
    }
    Ok(doc! {"values": values})
}

fn list_collections(body: &RawDocument) -> Document {
    let name_only = body.get_bool("nameOnly").unwrap_or(false);
    let wanted = body
        .get_document("filter")
        .ok()
        .and_then(|f| f.get_str("name").ok());
    let batch: Vec<Bson> = COLLECTIONS
        .iter()
        .filter(|n| wanted.is_none_or(|w| w == **n))
        .map(|n| {
            Bson::Document(if name_only {
                doc! {"name": *n, "type": "collection"}
            } else {
                doc! {"name": *n, "type": "collection", "options": {}, "info": {"readOnly": true}}
            })
        })
        .collect();
    doc! {"cursor": {"id": 0i64, "ns": "config.$cmd.listCollections", "firstBatch": batch}}
}
