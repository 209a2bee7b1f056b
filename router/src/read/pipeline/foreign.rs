//! Stages that read other collections, run by the router when one of them
//! is sharded (a shard holds only its slice of it): `$lookup` and
//! `$graphLookup` query the foreign collection through the router for each
//! input document, `$unionWith` appends the router's own run of its
//! pipeline, `$facet` runs each of its pipelines over the input with the
//! router's merge. `$merge` and `$out` are in `output`.

use std::collections::{HashSet, VecDeque};

use bson::{doc, Bson, Document, RawDocumentBuf};
use futures::future::BoxFuture;
use futures::StreamExt;

use super::split::stage_name;
use super::{drain, merge, open, output, shard, Ctx};
use crate::cursors::DocStream;
use crate::error::{Result, RouterError};

/// Lookups run at once per batch.
const CONCURRENT_LOOKUPS: usize = 16;

/// `(db, coll)` of a `from`/`coll` argument: a name in the context's
/// database or `{db, coll}`.
fn namespace(ctx: &Ctx, v: Option<&Bson>) -> Option<(String, String)> {
    match v? {
        Bson::String(coll) => Some((ctx.db.clone(), coll.clone())),
        Bson::Document(d) => Some((
            d.get_str("db").unwrap_or(&ctx.db).to_owned(),
            d.get_str("coll").ok()?.to_owned(),
        )),
        _ => None,
    }
}

fn sub_pipeline(spec: &Document) -> Vec<Document> {
    spec.get_array("pipeline")
        .map(|a| a.iter().filter_map(|s| s.as_document().cloned()).collect())
        .unwrap_or_default()
}

/// The context an inner pipeline on `db` runs in.
fn in_db(ctx: &Ctx, db: &str) -> Ctx {
    let mut inner = ctx.clone();
    inner.db = db.to_owned();
    inner
}

/// Whether the router must run `stage` itself.
pub(super) fn is_router_stage(ctx: &Ctx, stage: &Document) -> bool {
    let name = stage_name(stage);
    let Ok(spec) = stage.get_document(name) else {
        return match name {
            "$unionWith" => {
                namespace(ctx, stage.get(name)).is_some_and(|(db, coll)| ctx.is_sharded(&db, &coll))
            }
            "$out" => output::out_needs_router(ctx, stage.get(name)),
            "$merge" => output::merge_needs_router(ctx, &doc! {"into": stage.get(name).cloned()}),
            _ => false,
        };
    };
    let inner_refs = |db: &str| {
        let inner = in_db(ctx, db);
        sub_pipeline(spec)
            .iter()
            .any(|s| is_router_stage(&inner, s))
    };
    match name {
        "$lookup" | "$graphLookup" | "$unionWith" => {
            let key = if name == "$unionWith" { "coll" } else { "from" };
            match namespace(ctx, spec.get(key)) {
                Some((db, coll)) => ctx.is_sharded(&db, &coll) || inner_refs(&db),
                None => inner_refs(&ctx.db),
            }
        }
        "$facet" => spec.values().any(|p| {
            p.as_array().is_some_and(|stages| {
                stages
                    .iter()
                    .filter_map(Bson::as_document)
                    .any(|s| is_router_stage(ctx, s))
            })
        }),
        "$merge" => output::merge_needs_router(ctx, spec),
        "$out" => output::out_needs_router(ctx, stage.get(name)),
        _ => false,
    }
}

/// Runs one router stage over `input`.
pub(super) async fn apply(
    ctx: &Ctx,
    input: Box<dyn DocStream>,
    stage: &Document,
) -> Result<Box<dyn DocStream>> {
    let name = stage_name(stage);
    let arg = stage.get(name).cloned().unwrap_or(Bson::Null);
    match name {
        "$unionWith" => {
            let (coll, pipeline) = match &arg {
                Bson::Document(spec) => (spec.get("coll").cloned(), sub_pipeline(spec)),
                other => (Some(other.clone()), Vec::new()),
            };
            let (db, coll) = match namespace(ctx, coll.as_ref()) {
                Some((db, coll)) => (db, Some(coll)),
                None => (ctx.db.clone(), None),
            };
            Ok(Box::new(Concat {
                first: Some(input),
                rest: None,
                pending: Some((in_db(ctx, &db), coll, pipeline)),
            }))
        }
        "$lookup" | "$graphLookup" => {
            let spec = arg.as_document().cloned().unwrap_or_default();
            Ok(Box::new(PerDocument {
                ctx: ctx.clone(),
                input,
                graph: name == "$graphLookup",
                spec,
            }))
        }
        "$facet" => facet(ctx, input, arg.as_document().cloned().unwrap_or_default()).await,
        _ => output::apply(ctx, input, stage).await,
    }
}

/// `$unionWith`: the input, then the inner pipeline's documents.
struct Concat {
    first: Option<Box<dyn DocStream>>,
    rest: Option<Box<dyn DocStream>>,
    pending: Option<(Ctx, Option<String>, Vec<Document>)>,
}

impl DocStream for Concat {
    fn next_batch(&mut self, max_docs: usize) -> BoxFuture<'_, Result<Vec<RawDocumentBuf>>> {
        Box::pin(async move {
            if let Some(first) = self.first.as_mut() {
                if !first.is_exhausted() {
                    let batch = first.next_batch(max_docs).await?;
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                }
                first.close().await;
                self.first = None;
            }
            if let Some((ctx, coll, pipeline)) = self.pending.take() {
                self.rest = Some(open(&ctx, coll, pipeline).await?);
            }
            match self.rest.as_mut() {
                Some(rest) => rest.next_batch(max_docs).await,
                None => Ok(Vec::new()),
            }
        })
    }
    fn is_exhausted(&self) -> bool {
        self.first.is_none()
            && self.pending.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_exhausted())
    }
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for s in [self.first.as_mut(), self.rest.as_mut()]
                .into_iter()
                .flatten()
            {
                s.close().await;
            }
            self.first = None;
            self.pending = None;
        })
    }
}

/// `$lookup` or `$graphLookup` through the router, document by document.
struct PerDocument {
    ctx: Ctx,
    input: Box<dyn DocStream>,
    graph: bool,
    spec: Document,
}

impl DocStream for PerDocument {
    fn next_batch(&mut self, max_docs: usize) -> BoxFuture<'_, Result<Vec<RawDocumentBuf>>> {
        Box::pin(async move {
            let batch = self.input.next_batch(max_docs.min(1000)).await?;
            let (ctx, spec, graph) = (&self.ctx, &self.spec, self.graph);
            let joined: Vec<Result<RawDocumentBuf>> = futures::stream::iter(batch)
                .map(|raw| async move {
                    let mut doc = Document::try_from(raw.as_ref())
                        .map_err(|e| RouterError::bad_value(e.to_string()))?;
                    let found = match graph {
                        false => lookup_one(ctx, spec, &doc).await?,
                        true => graph_one(ctx, spec, &doc).await?,
                    };
                    let field = spec.get_str("as").unwrap_or("as");
                    set_path(&mut doc, field, Bson::Array(found));
                    RawDocumentBuf::try_from(&doc)
                        .map_err(|e| RouterError::bad_value(e.to_string()))
                })
                .buffered(CONCURRENT_LOOKUPS)
                .collect()
                .await;
            joined.into_iter().collect()
        })
    }
    fn is_exhausted(&self) -> bool {
        self.input.is_exhausted()
    }
    fn close(&mut self) -> BoxFuture<'_, ()> {
        self.input.close()
    }
}

/// Sets a dotted path, creating (or replacing with) documents on the way.
fn set_path(doc: &mut Document, path: &str, value: Bson) {
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
        }
        Some((head, rest)) => {
            if !matches!(doc.get(head), Some(Bson::Document(_))) {
                doc.insert(head, Document::new());
            }
            if let Some(Bson::Document(inner)) = doc.get_mut(head) {
                set_path(inner, rest, value);
            }
        }
    }
}

/// The values a path yields for an equality match: an array's elements,
/// or the value (null when missing).
fn match_values(doc: &Document, path: &str) -> Vec<Bson> {
    match shardgate_query::get_path(doc, path) {
        Some(Bson::Array(a)) => a.clone(),
        Some(v) => vec![v.clone()],
        None => vec![Bson::Null],
    }
}

/// The values a path holds (an array's elements); none when missing.
fn path_values(doc: &Document, path: &str) -> Vec<Bson> {
    match shardgate_query::get_path(doc, path) {
        Some(Bson::Array(a)) => a.clone(),
        Some(v) => vec![v.clone()],
        None => Vec::new(),
    }
}

/// `{field: {$in: values}}`, or `$or` of `$eq` when a value is a regular
/// expression (which `$in` would match as a pattern).
fn in_filter(field: &str, values: Vec<Bson>) -> Document {
    if values
        .iter()
        .any(|v| matches!(v, Bson::RegularExpression(_)))
    {
        let eqs: Vec<Bson> = values
            .into_iter()
            .map(|v| Bson::Document(doc! {field: {"$eq": v}}))
            .collect();
        return doc! {"$or": eqs};
    }
    doc! {field: {"$in": values}}
}

/// Evaluates `exprs` (`{name: expression}`) against `doc`: on the
/// router's engine, or the merging shard when the engine lacks an operator.
async fn evaluate(ctx: &Ctx, doc: &Document, exprs: &Document) -> Result<Document> {
    let stage = doc! {"$replaceWith": exprs.clone()};
    // The engine compares strings by bytes: under a collation, the shard.
    if !ctx.collated() {
        let engine = shardgate_query::aggregate(vec![doc.clone()], std::slice::from_ref(&stage));
        if let Ok(mut out) = engine {
            return Ok(out.pop().unwrap_or_default());
        }
    }
    let raw = RawDocumentBuf::try_from(doc).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let mut pipeline = shard::inline(vec![raw]);
    pipeline.push(stage);
    let found = drain(open(ctx, None, pipeline).await?).await?;
    Ok(found
        .first()
        .and_then(|d| Document::try_from(d.as_ref()).ok())
        .unwrap_or_default())
}

/// One document's `$lookup` results.
async fn lookup_one(ctx: &Ctx, spec: &Document, doc: &Document) -> Result<Vec<Bson>> {
    let (db, coll) = match namespace(ctx, spec.get("from")) {
        Some((db, coll)) => (db, Some(coll)),
        None => (ctx.db.clone(), None),
    };
    let mut pipeline = Vec::new();
    if let (Ok(local), Ok(foreign)) = (spec.get_str("localField"), spec.get_str("foreignField")) {
        pipeline.push(doc! {"$match": in_filter(foreign, match_values(doc, local))});
    }
    pipeline.extend(sub_pipeline(spec));
    let mut inner = in_db(ctx, &db);
    if let Ok(vars) = spec.get_document("let") {
        let values = evaluate(ctx, doc, vars).await?;
        let mut lets = ctx.options.get_document("let").cloned().unwrap_or_default();
        for name in vars.keys() {
            let v = match values.get(name) {
                Some(v) => Bson::Document(doc! {"$literal": v.clone()}),
                None => Bson::String("$$REMOVE".to_owned()),
            };
            lets.insert(name.clone(), v);
        }
        inner.options.insert("let", lets);
    }
    let found = drain(open(&inner, coll, pipeline).await?).await?;
    Ok(found
        .into_iter()
        .filter_map(|d| Document::try_from(d).ok().map(Bson::Document))
        .collect())
}

/// A value's identity for "seen" sets.
fn identity(v: &Bson) -> Vec<u8> {
    doc! {"v": v.clone()}.to_vec().unwrap_or_default()
}

/// One document's `$graphLookup` results: a breadth-first search through
/// the router, one query per depth.
async fn graph_one(ctx: &Ctx, spec: &Document, doc: &Document) -> Result<Vec<Bson>> {
    let (db, coll) = namespace(ctx, spec.get("from")).ok_or_else(|| {
        RouterError::command(
            40328,
            "Location40328",
            "missing 'from' option to $graphLookup stage specification",
        )
    })?;
    let (from_field, to_field) = (
        spec.get_str("connectFromField").unwrap_or_default(),
        spec.get_str("connectToField").unwrap_or_default(),
    );
    let max_depth = spec
        .get("maxDepth")
        .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)));
    let start = spec.get("startWith").cloned().unwrap_or(Bson::Null);
    let start = evaluate(ctx, doc, &doc! {"s": start}).await?;
    let mut frontier = path_values(&start, "s");
    let (mut seen_ids, mut queried) = (HashSet::new(), HashSet::new());
    let inner = in_db(ctx, &db);
    let mut out = Vec::new();
    let mut depth: i64 = 0;
    while !frontier.is_empty() && max_depth.is_none_or(|m| depth <= m) {
        frontier.retain(|v| queried.insert(identity(v)));
        if frontier.is_empty() {
            break;
        }
        let mut filter = in_filter(to_field, std::mem::take(&mut frontier));
        if let Ok(restrict) = spec.get_document("restrictSearchWithMatch") {
            filter = doc! {"$and": [filter, restrict.clone()]};
        }
        let found =
            drain(open(&inner, Some(coll.clone()), vec![doc! {"$match": filter}]).await?).await?;
        for raw in found {
            let Ok(mut d) = Document::try_from(raw) else {
                continue;
            };
            if !seen_ids.insert(identity(d.get("_id").unwrap_or(&Bson::Null))) {
                continue;
            }
            frontier.extend(path_values(&d, from_field));
            if let Ok(field) = spec.get_str("depthField") {
                d.insert(field, depth);
            }
            out.push(Bson::Document(d));
        }
        depth += 1;
    }
    Ok(out)
}

/// `$facet`: each pipeline run by the router's merge over the whole input,
/// which the router holds (up to the merge budget).
async fn facet(
    ctx: &Ctx,
    mut input: Box<dyn DocStream>,
    spec: Document,
) -> Result<Box<dyn DocStream>> {
    let mut docs = VecDeque::new();
    let mut bytes = 0usize;
    while !input.is_exhausted() {
        let batch = input.next_batch(usize::MAX).await?;
        bytes += batch.iter().map(|d| d.as_bytes().len()).sum::<usize>();
        if bytes > ctx.budget() {
            input.close().await;
            return Err(RouterError::command(
                146,
                "ExceededMemoryLimit",
                format!("$facet input exceeded the router's merge budget of {} MB (limits.max_merge_mb)", ctx.state.config.limits.max_merge_mb),
            ));
        }
        docs.extend(batch);
    }
    input.close().await;
    let mut out = Document::new();
    for (name, pipeline) in &spec {
        let stages: Vec<Document> = pipeline
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_document().cloned()).collect())
            .unwrap_or_default();
        let stream = merge::run(ctx, Box::new(docs.clone()), &stages).await?;
        let results = drain(stream).await?;
        let results: Vec<Bson> = results
            .into_iter()
            .filter_map(|d| Document::try_from(d).ok().map(Bson::Document))
            .collect();
        out.insert(name.clone(), results);
    }
    let raw = RawDocumentBuf::try_from(&out).map_err(|e| RouterError::bad_value(e.to_string()))?;
    Ok(Box::new(VecDeque::from([raw])))
}
