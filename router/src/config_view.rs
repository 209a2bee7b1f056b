//! The `config` database as a view of the config store: `find`,
//! `aggregate`, `count` and `listCollections` over `config.shards`,
//! `config.chunks`, … shaped as on a real cluster (so mongosh's
//! `sh.status()` prints the real picture), and the writes mongosh's helpers
//! make to `config.settings` and `config.collections`.

mod writes;

use bson::{doc, Bson, Document, RawDocument};
use serde::Serialize;

use crate::error::{Result, RouterError};
use crate::session::Request;
use crate::state::RouterState;
use shardgate_query as query;

/// The collections of the view.
const COLLECTIONS: [&str; 12] = [
    "actionlog",
    "changelog",
    "chunks",
    "collections",
    "databases",
    "locks",
    "migrations",
    "mongos",
    "settings",
    "shards",
    "tags",
    "version",
];

/// A reply larger than this would not fit one batch.
const MAX_REPLY_BYTES: usize = 15 * 1024 * 1024;

/// Runs a command on the `config` database.
pub(crate) async fn run(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    match req.name {
        "find" => find(state, req).await,
        "aggregate" => aggregate(state, req).await,
        "count" => count(state, req).await,
        "listCollections" => Ok(list_collections(req.body)),
        "update" => writes::update(state, req).await,
        "insert" => writes::insert(state, req).await,
        "delete" => writes::delete(state, req).await,
        other => Err(RouterError::command(
            20,
            "IllegalOperation",
            format!("'{other}' is not supported on the config database view; use find, aggregate, count or the admin commands"),
        )),
    }
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

fn query_error(e: query::QueryError) -> RouterError {
    let (code, name) = e.code();
    RouterError::command(code, name, e.to_string())
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
        "version" => to_docs(vec![c.version().await?]),
        "mongos" => to_docs(c.routers().await?),
        "locks" => to_docs(c.locks().await?),
        "changelog" => to_docs(c.changelog().await?),
        _ => Ok(Vec::new()),
    }
}

fn cursor_reply(ns: String, batch: Vec<Document>) -> Result<Document> {
    let size: usize = batch
        .iter()
        .map(|d| d.to_vec().map(|v| v.len()).unwrap_or(0))
        .sum();
    if size > MAX_REPLY_BYTES {
        return Err(RouterError::command(
            238,
            "NotImplemented",
            format!("the result of {ns} exceeds one 16 MB batch; narrow it with a filter or limit"),
        ));
    }
    Ok(doc! {"cursor": {"id": 0i64, "ns": ns, "firstBatch": batch}})
}

async fn find(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let coll = collection_arg(req)?;
    let docs = documents(state, coll).await?;
    let filter = doc_arg(req.body, "filter")?.unwrap_or_default();
    let sort = doc_arg(req.body, "sort")?;
    let projection = doc_arg(req.body, "projection")?;
    let skip = int_arg(req.body, "skip").max(0) as u64;
    let limit = int_arg(req.body, "limit");
    let out = query::find(
        docs,
        &filter,
        sort.as_ref(),
        projection.as_ref(),
        skip,
        limit,
    )
    .map_err(query_error)?;
    cursor_reply(format!("config.{coll}"), out)
}

async fn aggregate(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let coll = collection_arg(req)?;
    let pipeline: Vec<Document> = req
        .body
        .get_array("pipeline")
        .map_err(|_| RouterError::bad_value("aggregate needs a pipeline array"))?
        .into_iter()
        .map(|s| {
            s.ok()
                .and_then(|s| s.as_document())
                .and_then(|d| Document::try_from(d).ok())
                .ok_or_else(|| RouterError::bad_value("each pipeline stage must be a document"))
        })
        .collect::<Result<_>>()?;
    let docs = documents(state, coll).await?;
    let out = query::aggregate(docs, &pipeline).map_err(query_error)?;
    cursor_reply(format!("config.{coll}"), out)
}

async fn count(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let coll = collection_arg(req)?;
    let docs = documents(state, coll).await?;
    let filter = doc_arg(req.body, "query")?.unwrap_or_default();
    let skip = int_arg(req.body, "skip").max(0) as u64;
    let limit = int_arg(req.body, "limit");
    let n = query::find(docs, &filter, None, None, skip, limit)
        .map_err(query_error)?
        .len();
    Ok(doc! {"n": n as i64})
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
