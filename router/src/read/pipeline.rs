//! `aggregate` through the router: a pipeline on a sharded collection, and
//! a pipeline on an unsharded collection that reads or writes a sharded
//! one.
//!
//! The pipeline is cut (`split`, with `group` for `$group` and its sugars):
//! every targeted shard runs the shards part; the router merges their
//! outputs (k-way by the sort when the shards sorted, with the merge's
//! `$skip`/`$limit`), then runs the merge part (`merge`): on its own query
//! engine when it has every stage and the data fits
//! `limits.max_merge_mb`, otherwise on the database's primary shard fed
//! with `$documents` or a temporary collection. Stages that read or write
//! other sharded collections (`$lookup`, `$graphLookup`, `$unionWith`,
//! `$facet` around them, `$merge`, `$out`) are run by the router itself
//! (`foreign`, `output`), so no stage ever sees one shard's slice of a
//! sharded collection.
//!
//! - `split`, `group`: where the pipeline is cut (pure).
//! - `merge`: running the merge part; `shard`: the merging shard.
//! - `foreign`: stages the router runs; `output`: `$merge`/`$out`.
//! - `explain`: `explain` of a split pipeline.
//! - `held`: stages over documents the router makes itself (the `config`
//!   view, `$shardedDataDistribution`).

mod explain;
mod foreign;
mod group;
pub(crate) mod held;
mod merge;
pub(crate) mod output;
mod shard;
pub(crate) mod split;

use std::sync::Arc;
use std::time::Instant;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use futures::future::BoxFuture;

use super::orphans::{exclusions, HashedOrphans, StreamFilter};
use super::{cursor_reply, rewrite, target};
use crate::catalog_cache::routing::CollectionRouting;
use crate::cursors::merge::SortSpec;
use crate::cursors::{BatchFilter, CursorKind, DocStream, MergeCursor, RouterCursor, ShardStream};
use crate::error::{Result, RouterError};
use crate::session::{Namespace, Reply, Request, Session};
use crate::state::RouterState;
use shardgate_config_store::ShardType;
use shardgate_query as query;

/// Options of the client's `aggregate` that every command the router
/// sends for it carries.
const PASSED_OPTIONS: [&str; 6] = [
    "collation",
    "let",
    "allowDiskUse",
    "writeConcern",
    "bypassDocumentValidation",
    "comment",
];

/// What running one aggregation needs; owned, so streams can keep it.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub state: Arc<RouterState>,
    /// The database the pipeline runs in.
    pub db: String,
    /// The client's options passed on ([`PASSED_OPTIONS`]).
    pub options: Document,
}

impl Ctx {
    /// Whether the command has a collation other than the simple one.
    pub(crate) fn collated(&self) -> bool {
        self.options
            .get_document("collation")
            .is_ok_and(|c| c.get_str("locale").ok() != Some("simple"))
    }

    /// The context of a command with no options.
    pub(crate) fn plain(state: &Arc<RouterState>, db: &str) -> Ctx {
        Ctx {
            state: state.clone(),
            db: db.to_owned(),
            options: Document::new(),
        }
    }

    pub(crate) fn new(state: &Arc<RouterState>, db: &str, body: &RawDocument) -> Ctx {
        let mut options = Document::new();
        for name in PASSED_OPTIONS {
            if let Ok(Some(v)) = body.get(name) {
                if let Ok(v) = Bson::try_from(v) {
                    options.insert(name, v);
                }
            }
        }
        Ctx {
            state: state.clone(),
            db: db.to_owned(),
            options,
        }
    }

    /// Whether `coll` of this database is sharded.
    fn is_sharded(&self, db: &str, coll: &str) -> bool {
        self.state.routing.get(&format!("{db}.{coll}")).is_some()
    }

    /// An `aggregate` command in this context: `target` (a collection
    /// name or 1), the pipeline, the options.
    fn command(&self, target: Bson, pipeline: Vec<Document>) -> Document {
        let mut cmd =
            doc! {"aggregate": target, "pipeline": pipeline, "cursor": {"batchSize": 1000}};
        cmd.extend(self.options.clone());
        cmd.insert("$db", self.db.clone());
        cmd
    }

    /// The merge-state budget in bytes.
    fn budget(&self) -> usize {
        (self.state.config.limits.max_merge_mb as usize).saturating_mul(1024 * 1024)
    }
}

fn query_error(e: query::QueryError) -> RouterError {
    let (code, name) = e.code();
    RouterError::command(code, name, e.to_string())
}

/// The client's pipeline, each stage a document.
pub(crate) fn pipeline_of(body: &RawDocument) -> Result<Vec<Document>> {
    body.get_array("pipeline")
        .map_err(|_| RouterError::command(14, "TypeMismatch", "'pipeline' must be an array"))?
        .into_iter()
        .map(|s| {
            s.ok()
                .and_then(|s| s.as_document())
                .and_then(|d| Document::try_from(d).ok())
                .ok_or_else(|| {
                    RouterError::command(
                        14,
                        "TypeMismatch",
                        "each pipeline stage must be a document",
                    )
                })
        })
        .collect()
}

/// `aggregate` on a sharded collection.
pub(crate) async fn aggregate(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
    routing: &CollectionRouting,
    ns: &str,
) -> Result<Reply> {
    state.cursors.check_limit(
        session.connection_id,
        state.config.limits.max_cursors_per_connection,
    )?;
    let pipeline = pipeline_of(req.body)?;
    if req.body.get_bool("explain").unwrap_or(false) {
        return explain::explain(state, req.body, routing, &pipeline).await;
    }
    let ctx = Ctx::new(state, req.db, req.body);
    let stream = open_sharded(&ctx, req.body, routing, &pipeline).await?;
    respond(state, session, ns, stream, first_batch_size(req.body)).await
}

/// `aggregate` on an unsharded collection (or `aggregate: 1`) whose
/// pipeline reads or writes a sharded collection; `None` when it touches
/// none (the primary shard runs it whole).
pub(crate) async fn aggregate_unsharded(
    state: &Arc<RouterState>,
    session: &Session,
    req: &Request<'_>,
) -> Result<Option<Reply>> {
    if req.name != "aggregate" || req.body.get_bool("explain").unwrap_or(false) {
        return Ok(None);
    }
    let Ok(pipeline) = pipeline_of(req.body) else {
        return Ok(None);
    };
    let ctx = Ctx::new(state, req.db, req.body);
    if !pipeline.iter().any(|s| foreign::is_router_stage(&ctx, s)) {
        return Ok(None);
    }
    let target = match req.collection {
        Some(coll) => Bson::String(coll.to_owned()),
        None => Bson::Int32(1),
    };
    let ns = match req.collection {
        Some(coll) => format!("{}.{coll}", req.db),
        None => format!("{}.$cmd.aggregate", req.db),
    };
    let stream = open_unsharded(&ctx, target, pipeline).await?;
    respond(state, session, &ns, stream, first_batch_size(req.body))
        .await
        .map(Some)
}

/// Opens `pipeline` on `coll` of the context's database, whether sharded
/// or not (`$lookup`'s and `$unionWith`'s inner pipelines).
pub(crate) fn open(
    ctx: &Ctx,
    coll: Option<String>,
    pipeline: Vec<Document>,
) -> BoxFuture<'_, Result<Box<dyn DocStream>>> {
    Box::pin(async move {
        let routing = coll
            .as_deref()
            .and_then(|c| ctx.state.routing.get(&format!("{}.{c}", ctx.db)));
        match (routing, coll) {
            (Some(routing), Some(coll)) => {
                let body = ctx.command(Bson::String(coll), Vec::new());
                let body = RawDocumentBuf::try_from(&body)
                    .map_err(|e| RouterError::bad_value(e.to_string()))?;
                open_sharded(ctx, &body, &routing, &pipeline).await
            }
            (_, Some(coll)) => open_unsharded(ctx, Bson::String(coll), pipeline).await,
            (_, None) => open_unsharded(ctx, Bson::Int32(1), pipeline).await,
        }
    })
}

/// The stages up to the first the router must run go whole to the
/// database's primary; the router runs the rest over their output.
async fn open_unsharded(
    ctx: &Ctx,
    target: Bson,
    pipeline: Vec<Document>,
) -> Result<Box<dyn DocStream>> {
    let cut = pipeline
        .iter()
        .position(|s| foreign::is_router_stage(ctx, s))
        .unwrap_or(pipeline.len());
    let primary = shard::merging_shard(ctx).await?;
    let cmd = ctx.command(target, pipeline[..cut].to_vec());
    let input = shard::open_cursor(ctx, primary, &cmd).await?;
    merge::run(ctx, input, &pipeline[cut..]).await
}

/// The leading `$match` stages as one filter, for targeting.
fn leading_filter(pipeline: &[Document]) -> Document {
    let matches: Vec<Bson> = pipeline
        .iter()
        .map_while(|s| s.get_document("$match").ok())
        .map(|m| Bson::Document(m.clone()))
        .collect();
    match matches.len() {
        0 => Document::new(),
        1 => matches[0].as_document().cloned().unwrap_or_default(),
        _ => doc! {"$and": matches},
    }
}

/// Runs `pipeline` on a sharded collection: the shards part on every
/// targeted shard, their outputs merged, then the merge part.
fn open_sharded<'a>(
    ctx: &'a Ctx,
    body: &'a RawDocument,
    routing: &'a CollectionRouting,
    pipeline: &'a [Document],
) -> BoxFuture<'a, Result<Box<dyn DocStream>>> {
    Box::pin(async move {
        let state = &ctx.state;
        let shards = target(state, routing, &leading_filter(pipeline), body)?;
        let simple = crate::session::simple_collation(body);
        let excluded = exclusions(state, routing, &shards, simple).await;
        let filtered = excluded.iter().any(|e| e.router().is_some());
        let cut = split::split(pipeline, simple && !filtered);
        let opens = shards.into_iter().zip(excluded).map(|(shard, exclusion)| {
            let (stages, filter) = match exclusion.router() {
                Some(orphans) => {
                    let (stages, filter) = filter_pipeline(ctx, orphans, &cut.shards, body);
                    (stages, Some(filter))
                }
                None => (
                    with_filter(&cut.shards, exclusion.apply(&Document::new())),
                    None,
                ),
            };
            let filter = with_sort_keys(filter, cut.sort.as_ref());
            async move {
                let add = doc! {"pipeline": stages, "cursor": {"batchSize": 1000}};
                let cmd = rewrite(body, &["explain"], add)?;
                ShardStream::open(state.shards.clone(), shard, &cmd, filter, Some(1000)).await
            }
        });
        let opened = futures::future::join_all(opens).await;
        let spec = cut.sort.as_ref().and_then(SortSpec::parse);
        let (mut cursor, _) = MergeCursor::from_opened(opened, spec, false).await?;
        cursor.skip = cut.skip;
        cursor.remaining = cut.limit;
        merge::run(ctx, Box::new(cursor), &cut.merge).await
    })
}

/// `stages` that see only the documents `filter` matches: a `$match`
/// first, or, ahead of a `$geoNear` (which must stay first), in its
/// `query`.
fn with_filter(stages: &[Document], filter: Document) -> Vec<Document> {
    let mut out = stages.to_vec();
    let geo = out
        .first_mut()
        .and_then(|s| s.get_document_mut("$geoNear").ok());
    match geo {
        _ if filter.is_empty() => {}
        Some(spec) => {
            let query = match spec.get_document("query") {
                Ok(q) if !q.is_empty() => doc! {"$and": [q.clone(), filter]},
                _ => filter,
            };
            spec.insert("query", query);
        }
        None => out.insert(0, doc! {"$match": filter}),
    }
    out
}

/// The pipeline for a shard holding hashed orphans: its leading `$match`
/// stages only, so the documents arrive whole; the router drops the orphans
/// and runs the rest of the shards part over the survivors on that shard.
fn filter_pipeline(
    ctx: &Ctx,
    orphans: Arc<HashedOrphans>,
    shard_part: &[Document],
    body: &RawDocument,
) -> (Vec<Document>, Arc<dyn BatchFilter>) {
    let matches = shard_part
        .iter()
        .enumerate()
        .take_while(|(i, s)| s.contains_key("$match") || (*i == 0 && s.contains_key("$geoNear")))
        .count();
    let mut options = Document::new();
    for name in ["collation", "let"] {
        if let Ok(Some(v)) = body.get(name) {
            if let Ok(v) = Bson::try_from(v) {
                options.insert(name, v);
            }
        }
    }
    let filter = StreamFilter {
        orphans,
        reshape: Default::default(),
        rest: shard_part[matches..].to_vec(),
        db: Namespace::parse(&format!("{}.x", ctx.db)).db.to_owned(),
        options,
        client: ctx.state.shards.clone(),
    };
    (shard_part[..matches].to_vec(), Arc::new(filter))
}

/// Adds the `$sortKey` the k-way merge compares to each document of a
/// sorted shard stream (computed by the router: shards are not asked for
/// `{$meta: "sortKey"}`, which not every server has in `aggregate`).
fn with_sort_keys(
    inner: Option<Arc<dyn BatchFilter>>,
    sort: Option<&Document>,
) -> Option<Arc<dyn BatchFilter>> {
    match sort {
        None => inner,
        Some(sort) => Some(Arc::new(shard::SortKeys {
            sort: sort.clone(),
            inner,
        })),
    }
}

/// Whether the router must run `stage` itself (it reads or writes a
/// sharded collection).
pub(crate) fn is_router_stage(ctx: &Ctx, stage: &Document) -> bool {
    foreign::is_router_stage(ctx, stage)
}

/// An `aggregate`'s first batch size (`cursor.batchSize`, 101 by default).
pub(crate) fn first_batch_size(body: &RawDocument) -> usize {
    body.get_document("cursor")
        .ok()
        .and_then(|c| c.get("batchSize").ok().flatten())
        .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
        .unwrap_or(101)
        .max(0) as usize
}

/// The first batch of `stream`; the rest stays behind a router cursor.
pub(crate) async fn respond(
    state: &RouterState,
    session: &Session,
    ns: &str,
    mut stream: Box<dyn DocStream>,
    first: usize,
) -> Result<Reply> {
    let batch = match stream.next_batch(first).await {
        Ok(batch) => batch,
        Err(e) => {
            stream.close().await;
            return Err(e);
        }
    };
    let id = if stream.is_exhausted() {
        stream.close().await;
        0
    } else {
        state.cursors.insert(
            None,
            RouterCursor {
                kind: CursorKind::Stream(stream),
                ns: ns.to_owned(),
                connection: session.connection_id,
                last_used: Instant::now(),
            },
        )
    };
    Ok(Reply::Body(cursor_reply(
        id,
        ns,
        "firstBatch",
        &batch,
        Document::new(),
    )))
}

/// The documents of a stream, all of them (an inner pipeline's results).
pub(crate) async fn drain(mut stream: Box<dyn DocStream>) -> Result<Vec<RawDocumentBuf>> {
    let mut out = Vec::new();
    while !stream.is_exhausted() {
        let batch = match stream.next_batch(usize::MAX).await {
            Ok(b) => b,
            Err(e) => {
                stream.close().await;
                return Err(e);
            }
        };
        if batch.is_empty() && !stream.is_exhausted() {
            continue;
        }
        out.extend(batch);
    }
    stream.close().await;
    Ok(out)
}

/// The shard a database's unsharded collections live on.
pub(crate) async fn primary_of(state: &Arc<RouterState>, db: &str) -> Result<ShardType> {
    let entry = state
        .placement
        .get_or_create(&state.catalog, db, || {
            crate::shards::least_loaded_shard(state)
        })
        .await?;
    state.placement.shard(&entry.primary)
}
