//! `mapReduce`, run by the router: the documents `query`, `sort` and
//! `limit` select are read through the router's own read path (sharded or
//! not, orphans left out), mapped, grouped by key and reduced in the
//! router's JavaScript ([`crate::js`]), then answered inline or written
//! through `$out` (`replace`) or `$merge` (`merge`, `reduce`), as mongos's
//! translation into an aggregation would. The shards need no JavaScript.
//!
//! As on a mongod: `reduce` is not called for a key with one value;
//! `finalize` runs on every group; results are `{_id: key, value}` in key
//! order; inline results over 16 MB fail (31301); the reply is
//! `{results}` or `{result}` (no `counts` or `timeMillis` since 4.4).

use std::collections::BTreeMap;
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use shardgate_config_store::shard_key::encode_sort_value;

use super::pipeline::{self, Ctx};
use crate::error::{Result, RouterError};
use crate::js::Js;
use crate::session::{Reply, Request, Session};
use crate::state::RouterState;

/// Fields a `mapReduce` command may carry besides the generic ones.
const FIELDS: &[&str] = &[
    "mapReduce",
    "mapreduce",
    "map",
    "reduce",
    "out",
    "query",
    "sort",
    "collation",
    "limit",
    "finalize",
    "scope",
    "verbose",
    "bypassDocumentValidation",
    "jsMode",
];
/// Generic command fields (sessions, concerns, routing, API version).
const GENERIC: &[&str] = &[
    "$db",
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "readConcern",
    "writeConcern",
    "comment",
    "maxTimeMS",
    "$clusterTime",
    "$readPreference",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "$audit",
    "$client",
    "mayBypassWriteBlocking",
];
/// The inline results' limit.
const MAX_INLINE_BYTES: usize = 16 * 1024 * 1024;
/// Documents per batch handed to the interpreter.
const BATCH: usize = 500;
/// The emitted values a job may hold, in units of `limits.max_merge_mb`
/// (mongod spills them to disk; the router fails the job instead of
/// running out of memory).
const EMIT_BUDGET_FACTOR: usize = 4;

/// Where the results go.
enum Out {
    Inline,
    /// `(mode, db, collection, whether out named its db)`.
    Collection(&'static str, String, String, bool),
}

/// The parsed command.
struct Job {
    coll: String,
    map: String,
    reduce: String,
    finalize: Option<String>,
    scope: Document,
    input: Vec<Document>,
    out: Out,
}

/// `mapReduce`.
pub(crate) async fn map_reduce(
    state: &Arc<RouterState>,
    _session: &Session,
    req: &Request<'_>,
) -> Result<Reply> {
    if matches!(req.body.get("autocommit"), Ok(Some(_))) {
        return Err(RouterError::command(
            263,
            "OperationNotSupportedInTransaction",
            "Cannot run 'mapReduce' in a multi-document transaction.",
        ));
    }
    let body = Document::try_from(req.body).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let job = parse(&body, req.db)?;
    let ctx = Ctx::new(state, req.db, req.body);
    let input = pipeline::open(&ctx, Some(job.coll.clone()), job.input.clone()).await?;
    // With `out: {reduce}`, finalize runs once the held values are in.
    let reducing_into = matches!(job.out, Out::Collection("reduce", ..));
    let functions = [
        Some(("__map", job.map.clone())),
        Some(("__reduce", job.reduce.clone())),
        job.finalize
            .clone()
            .filter(|_| !reducing_into)
            .map(|f| ("__finalize", f)),
    ];
    let budget =
        (state.config.limits.max_merge_mb as usize).saturating_mul(EMIT_BUDGET_FACTOR << 20);
    let results = run(
        input,
        functions.into_iter().flatten().collect(),
        (job.scope.clone(), budget),
    )
    .await?;
    match &job.out {
        Out::Inline => {
            let bytes: usize = results.iter().map(|d| d.as_bytes().len()).sum();
            if bytes > MAX_INLINE_BYTES {
                return Err(RouterError::command(
                    31301,
                    "Location31301",
                    "MapReduce inline results are greater than the allowed 16MB limit",
                ));
            }
            let docs: Vec<Document> = results
                .iter()
                .filter_map(|d| Document::try_from(d.as_ref()).ok())
                .collect();
            reply(doc! {"results": docs})
        }
        Out::Collection(mode, db, coll, named_db) => {
            let results = match *mode {
                "reduce" => reduce_into(&ctx, &job, db, coll, results).await?,
                _ => results,
            };
            let stage = match *mode {
                "replace" => doc! {"$out": {"db": db, "coll": coll}},
                _ => doc! {"$merge": {
                    "into": {"db": db, "coll": coll}, "on": "_id",
                    "whenMatched": "replace", "whenNotMatched": "insert",
                }},
            };
            let out_ctx = Ctx::plain(state, req.db);
            let input: Box<dyn crate::cursors::DocStream> = Box::new(
                results
                    .into_iter()
                    .collect::<std::collections::VecDeque<_>>(),
            );
            let mut done = pipeline::output::apply(&out_ctx, input, &stage).await?;
            done.close().await;
            let result = match named_db {
                true => Bson::Document(doc! {"db": db, "collection": coll}),
                false => Bson::String(coll.clone()),
            };
            reply(doc! {"result": result})
        }
    }
}

fn reply(mut d: Document) -> Result<Reply> {
    d.insert("ok", 1.0);
    d.to_vec()
        .map(Reply::Body)
        .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))
}

fn missing(field: &str) -> RouterError {
    RouterError::command(
        40414,
        "Location40414",
        format!("BSON field 'MapReduce.{field}' is missing but a required field"),
    )
}

/// A function argument: a string or JavaScript code.
fn function(body: &Document, field: &str) -> Result<Option<String>> {
    match body.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(Bson::JavaScriptCode(s)) => Ok(Some(s.clone())),
        Some(Bson::JavaScriptCodeWithScope(c)) => Ok(Some(c.code.clone())),
        Some(_) => Err(RouterError::command(
            14,
            "TypeMismatch",
            format!("BSON field 'MapReduce.{field}' is the wrong type, expected types '[string, javascript]'"),
        )),
    }
}

fn parse(body: &Document, db: &str) -> Result<Job> {
    if let Some(unknown) = body
        .keys()
        .find(|k| !FIELDS.contains(&k.as_str()) && !GENERIC.contains(&k.as_str()))
    {
        return Err(RouterError::command(
            40415,
            "Location40415",
            format!("BSON field 'MapReduce.{unknown}' is an unknown field."),
        ));
    }
    let coll = body
        .get_str("mapReduce")
        .or_else(|_| body.get_str("mapreduce"))
        .map_err(|_| RouterError::bad_value("mapReduce takes a collection name"))?
        .to_owned();
    let map = function(body, "map")?.ok_or_else(|| missing("map"))?;
    let reduce = function(body, "reduce")?.ok_or_else(|| missing("reduce"))?;
    let out = parse_out(body.get("out").ok_or_else(|| missing("out"))?, db)?;
    let mut input = Vec::new();
    if let Ok(q) = body.get_document("query") {
        input.push(doc! {"$match": q.clone()});
    }
    if let Ok(s) = body.get_document("sort") {
        if !s.is_empty() {
            input.push(doc! {"$sort": s.clone()});
        }
    }
    let limit = match body.get("limit") {
        Some(Bson::Int32(l)) => i64::from(*l),
        Some(Bson::Int64(l)) => *l,
        Some(Bson::Double(l)) => *l as i64,
        _ => 0,
    };
    if limit < 0 {
        return Err(RouterError::bad_value("limit must be non-negative"));
    }
    if limit > 0 {
        input.push(doc! {"$limit": limit});
    }
    Ok(Job {
        coll,
        map,
        reduce,
        finalize: function(body, "finalize")?,
        scope: body.get_document("scope").cloned().unwrap_or_default(),
        input,
        out,
    })
}

fn parse_out(out: &Bson, db: &str) -> Result<Out> {
    let bad = |m: &str| Err(RouterError::bad_value(m.to_owned()));
    match out {
        Bson::String(coll) => Ok(Out::Collection(
            "replace",
            db.to_owned(),
            coll.clone(),
            false,
        )),
        Bson::Document(d) if d.contains_key("inline") => {
            if d.len() != 1 {
                return bad("If 'inline' is specified, no other options may be specified");
            }
            Ok(Out::Inline)
        }
        Bson::Document(d) => {
            let mode = ["replace", "merge", "reduce"]
                .into_iter()
                .find(|m| d.contains_key(*m));
            let Some(mode) = mode else {
                return bad("'out' requires 'replace', 'merge', 'reduce' or 'inline'");
            };
            let Ok(coll) = d.get_str(mode) else {
                return bad("'out' must name a collection");
            };
            if d.get_bool("sharded").unwrap_or(false) && mode == "replace" {
                return Err(RouterError::command(
                    72,
                    "InvalidOptions",
                    "Can't output mapReduce results to an existing sharded collection using \"replace\"",
                ));
            }
            let named = d.get_str("db").ok();
            Ok(Out::Collection(
                mode,
                named.unwrap_or(db).to_owned(),
                coll.to_owned(),
                named.is_some(),
            ))
        }
        _ => bad("'out' must be a string or an object"),
    }
}

/// Maps every document of `input`, groups, reduces and finalizes, on a
/// blocking thread fed batch by batch. Returns `{_id, value}` documents in
/// key order.
async fn run(
    mut input: Box<dyn crate::cursors::DocStream>,
    functions: Vec<(&'static str, String)>,
    (scope, budget): (Document, usize),
) -> Result<Vec<RawDocumentBuf>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<RawDocumentBuf>>(2);
    let job = tokio::task::spawn_blocking(move || {
        let functions: Vec<(&str, &str)> =
            functions.iter().map(|(n, s)| (*n, s.as_str())).collect();
        let finalize = functions.iter().any(|(n, _)| *n == "__finalize");
        let mut js = Js::new(&functions, &scope)?;
        let mut groups = Groups::default();
        let mut held = 0usize;
        while let Some(batch) = rx.blocking_recv() {
            let docs = batch
                .iter()
                .filter_map(|d| Document::try_from(d.as_ref()).ok())
                .map(Bson::Document)
                .collect();
            for pair in as_array(js.call("__mapDocuments", &Bson::Array(docs))?) {
                let mut pair = as_array(pair).into_iter();
                let (Some(k), Some(v)) = (pair.next(), pair.next()) else {
                    continue;
                };
                held += doc! {"k": &k, "v": &v}.to_vec().map_or(0, |b| b.len());
                if held > budget {
                    return Err(RouterError::command(
                        146,
                        "ExceededMemoryLimit",
                        format!(
                            "mapReduce's emitted values exceed the router's {} MB (4 × limits.max_merge_mb)",
                            budget >> 20
                        ),
                    ));
                }
                groups.add(k, v);
            }
        }
        groups.finish(&mut js, finalize)
    });
    let fed = async {
        loop {
            let batch = input.next_batch(BATCH).await?;
            if batch.is_empty() {
                return Ok::<_, RouterError>(());
            }
            if tx.send(batch).await.is_err() {
                return Ok(()); // the interpreter failed: its error tells why
            }
        }
    };
    let fed = fed.await;
    drop(tx);
    input.close().await;
    let results = job
        .await
        .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?;
    fed?;
    results
}

fn as_array(b: Bson) -> Vec<Bson> {
    match b {
        Bson::Array(a) => a,
        _ => Vec::new(),
    }
}

/// Emitted values by key, keys compared as BSON compares them.
#[derive(Default)]
struct Groups(BTreeMap<Vec<u8>, (Bson, Vec<Bson>)>);

impl Groups {
    fn add(&mut self, key: Bson, value: Bson) {
        let mut bytes = Vec::new();
        encode_sort_value(&key, false, &mut bytes);
        self.0
            .entry(bytes)
            .or_insert_with(|| (key, Vec::new()))
            .1
            .push(value);
    }

    /// One value per key: reduced where it has several, then finalized.
    fn finish(self, js: &mut Js, finalize: bool) -> Result<Vec<RawDocumentBuf>> {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let mut to_reduce = Vec::new();
        for (key, mut vs) in self.0.into_values() {
            if vs.len() == 1 {
                values.push(Some(vs.remove(0)));
            } else {
                to_reduce.push(Bson::Array(vec![key.clone(), Bson::Array(vs)]));
                values.push(None);
            }
            keys.push(key);
        }
        let mut reduced = Vec::new();
        for chunk in to_reduce.chunks(BATCH) {
            reduced.extend(as_array(
                js.call("__reduceGroups", &Bson::Array(chunk.to_vec()))?,
            ));
        }
        let mut reduced = reduced.into_iter();
        let mut values: Vec<Bson> = values
            .into_iter()
            .map(|v| v.or_else(|| reduced.next()).unwrap_or(Bson::Null))
            .collect();
        if finalize {
            let pairs: Vec<Bson> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| Bson::Array(vec![k.clone(), v.clone()]))
                .collect();
            let mut finalized = Vec::new();
            for chunk in pairs.chunks(BATCH) {
                finalized.extend(as_array(
                    js.call("__finalizeGroups", &Bson::Array(chunk.to_vec()))?,
                ));
            }
            values = finalized;
        }
        keys.into_iter()
            .zip(values)
            .map(|(k, v)| {
                RawDocumentBuf::try_from(&doc! {"_id": k, "value": v})
                    .map_err(|e| RouterError::bad_value(e.to_string()))
            })
            .collect()
    }
}

/// `out: {reduce}`: each result whose key the target already holds is
/// reduced with the held value (held first), then finalized.
async fn reduce_into(
    ctx: &Ctx,
    job: &Job,
    db: &str,
    coll: &str,
    results: Vec<RawDocumentBuf>,
) -> Result<Vec<RawDocumentBuf>> {
    let ids: Vec<Bson> = results
        .iter()
        .filter_map(|d| {
            d.get("_id")
                .ok()
                .flatten()
                .and_then(|v| Bson::try_from(v).ok())
        })
        .collect();
    let target_ctx = Ctx::plain(&ctx.state, db);
    let held = pipeline::open(
        &target_ctx,
        Some(coll.to_owned()),
        vec![doc! {"$match": {"_id": {"$in": ids}}}],
    )
    .await?;
    let held = pipeline::drain(held).await?;
    let held: Vec<RawDocumentBuf> = held;
    let mut by_key = Groups::default();
    for d in held.iter().chain(&results) {
        let doc = Document::try_from(d.as_ref() as &RawDocument)
            .map_err(|e| RouterError::bad_value(e.to_string()))?;
        by_key.add(
            doc.get("_id").cloned().unwrap_or(Bson::Null),
            doc.get("value").cloned().unwrap_or(Bson::Null),
        );
    }
    let mut functions = vec![
        ("__map", "function() {}"),
        ("__reduce", job.reduce.as_str()),
    ];
    if let Some(f) = &job.finalize {
        functions.push(("__finalize", f.as_str()));
    }
    let finalize = job.finalize.is_some();
    let scope = job.scope.clone();
    let functions: Vec<(&'static str, String)> = functions
        .into_iter()
        .map(|(n, s)| (n, s.to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let functions: Vec<(&str, &str)> =
            functions.iter().map(|(n, s)| (*n, s.as_str())).collect();
        let mut js = Js::new(&functions, &scope)?;
        by_key.finish(&mut js, finalize)
    })
    .await
    .map_err(|e| RouterError::command(1, "InternalError", e.to_string()))?
}
