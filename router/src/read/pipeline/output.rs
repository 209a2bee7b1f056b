//! `$merge` and `$out` when the merging shard cannot write the target
//! itself: `$merge` into a sharded collection goes through the router's
//! write path (one update or insert per document, as `whenMatched` /
//! `whenNotMatched` say); a target in another database is written by that
//! database's primary, fed through a temporary collection there. `$out`
//! to a sharded collection is refused, as mongos refuses it.

use bson::{doc, Bson, Document, RawDocumentBuf};

use super::shard::TempCollection;
use super::{drain, primary_of, Ctx};
use crate::cursors::DocStream;
use crate::error::{Result, RouterError};
use crate::session::{Reply, Request};
use crate::write::plan::WriteKind;

/// `(db, coll)` named by `$out`'s or `$merge`'s argument (`into`).
fn target(ctx: &Ctx, v: Option<&Bson>) -> Option<(String, String)> {
    match v? {
        Bson::String(coll) => Some((ctx.db.clone(), coll.clone())),
        Bson::Document(d) => Some((
            d.get_str("db").unwrap_or(&ctx.db).to_owned(),
            d.get_str("coll").ok()?.to_owned(),
        )),
        _ => None,
    }
}

/// The `into` of a `$merge` argument (a name, or a document with `into`).
fn merge_into(ctx: &Ctx, arg: Option<&Bson>) -> Option<(String, String)> {
    match arg? {
        Bson::Document(spec) => target(ctx, spec.get("into")),
        other => target(ctx, Some(other)),
    }
}

fn needs_router(ctx: &Ctx, t: Option<(String, String)>) -> bool {
    t.is_some_and(|(db, coll)| db != ctx.db || ctx.is_sharded(&db, &coll))
}

/// Whether `$out` must be run by the router.
pub(super) fn out_needs_router(ctx: &Ctx, arg: Option<&Bson>) -> bool {
    needs_router(ctx, target(ctx, arg))
}

/// Whether `$merge` must be run by the router.
pub(super) fn merge_needs_router(ctx: &Ctx, spec: &Document) -> bool {
    needs_router(ctx, target(ctx, spec.get("into")))
}

/// Runs a `$merge` or `$out` over `input`; the output is empty.
pub(crate) async fn apply(
    ctx: &Ctx,
    input: Box<dyn DocStream>,
    stage: &Document,
) -> Result<Box<dyn DocStream>> {
    let name = super::split::stage_name(stage);
    let arg = stage.get(name);
    let (db, coll) = match name {
        "$out" => target(ctx, arg),
        _ => merge_into(ctx, arg),
    }
    .ok_or_else(|| RouterError::bad_value(format!("bad {name} specification")))?;
    if ctx.is_sharded(&db, &coll) {
        if name == "$out" {
            return Err(RouterError::command(
                28769,
                "Location28769",
                format!("{db}.{coll} cannot be sharded"),
            ));
        }
        let spec = match arg {
            Some(Bson::Document(d)) => d.clone(),
            _ => Document::new(),
        };
        merge_sharded(ctx, input, &db, &coll, &spec).await?;
    } else {
        on_target_primary(ctx, input, &db, stage).await?;
    }
    Ok(Box::new(std::collections::VecDeque::new()))
}

/// Writes `input` into a temporary collection on the target database's
/// primary and runs the stage there.
async fn on_target_primary(
    ctx: &Ctx,
    input: Box<dyn DocStream>,
    db: &str,
    stage: &Document,
) -> Result<()> {
    let mut there = ctx.clone();
    there.db = db.to_owned();
    let shard = primary_of(&ctx.state, db).await?;
    let temp = TempCollection::fill(&there, shard.clone(), Vec::new(), input).await?;
    let mut pipeline = temp.read_back();
    pipeline.push(stage.clone());
    let cmd = there.command(Bson::String(temp.coll.clone()), pipeline);
    let result = match super::shard::open_cursor(&there, shard, &cmd).await {
        Ok(stream) => drain(stream).await.map(|_| ()),
        Err(e) => Err(e),
    };
    temp.drop_it().await;
    result
}

/// How each incoming document is written.
struct Mode {
    on: Vec<String>,
    matched: Bson,
    insert: bool,
    fail_unmatched: bool,
}

impl Mode {
    fn parse(ctx: &Ctx, db: &str, coll: &str, spec: &Document) -> Result<Mode> {
        let on = match spec.get("on") {
            Some(Bson::String(f)) => vec![f.clone()],
            Some(Bson::Array(a)) => a
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect(),
            _ => {
                let routing = ctx.state.routing.get(&format!("{db}.{coll}"));
                let mut fields: Vec<String> = routing
                    .map(|r| r.pattern.fields().map(|(f, _)| f.to_owned()).collect())
                    .unwrap_or_default();
                if !fields.iter().any(|f| f == "_id") {
                    fields.push("_id".to_owned());
                }
                fields
            }
        };
        let not_matched = spec.get_str("whenNotMatched").unwrap_or("insert");
        Ok(Mode {
            on,
            matched: spec
                .get("whenMatched")
                .cloned()
                .unwrap_or(Bson::String("merge".into())),
            insert: not_matched == "insert",
            fail_unmatched: not_matched == "fail",
        })
    }

    /// The update statement for `d` (`None`: nothing to write), or the
    /// document to insert.
    fn statement(&self, d: &Document) -> Result<Write> {
        let mut q = Document::new();
        for f in &self.on {
            match shardgate_query::get_path(d, f) {
                Some(v) if !matches!(v, Bson::Null | Bson::Undefined) => {
                    q.insert(f.clone(), v.clone());
                }
                _ => {
                    return Err(RouterError::command(
                        51132,
                        "Location51132",
                        format!("$merge write error: 'on' field '{f}' cannot be missing, null, undefined or an array"),
                    ))
                }
            }
        }
        let upsert = self.insert;
        let u = match &self.matched {
            Bson::String(m) if m == "replace" => Bson::Document(d.clone()),
            Bson::String(m) if m == "merge" => Bson::Document(doc! {"$set": d.clone()}),
            Bson::String(m) if m == "keepExisting" => {
                if !upsert {
                    return Ok(Write::Nothing);
                }
                Bson::Document(doc! {"$setOnInsert": d.clone()})
            }
            Bson::String(m) if m == "fail" => return Ok(Write::Insert(d.clone())),
            Bson::Array(pipeline) => {
                let stmt =
                    doc! {"q": q, "u": pipeline.clone(), "c": {"new": d.clone()}, "upsert": false};
                return Ok(Write::PipelineThenInsert(stmt, d.clone(), upsert));
            }
            other => {
                return Err(RouterError::bad_value(format!(
                    "$merge: unsupported whenMatched mode {other}"
                )))
            }
        };
        Ok(Write::Update(doc! {"q": q, "u": u, "upsert": upsert}))
    }
}

enum Write {
    Nothing,
    Insert(Document),
    Update(Document),
    PipelineThenInsert(Document, Document, bool),
}

/// `$merge` into a sharded collection, document by document through the
/// router's write path.
async fn merge_sharded(
    ctx: &Ctx,
    mut input: Box<dyn DocStream>,
    db: &str,
    coll: &str,
    spec: &Document,
) -> Result<()> {
    let mode = Mode::parse(ctx, db, coll, spec)?;
    while !input.is_exhausted() {
        let batch = match input.next_batch(1000).await {
            Ok(b) => b,
            Err(e) => {
                input.close().await;
                return Err(e);
            }
        };
        for raw in batch {
            let d = Document::try_from(raw).map_err(|e| RouterError::bad_value(e.to_string()))?;
            let written = write_one(ctx, db, coll, &mode, &d).await;
            if let Err(e) = written {
                input.close().await;
                return Err(e);
            }
        }
    }
    input.close().await;
    Ok(())
}

async fn write_one(ctx: &Ctx, db: &str, coll: &str, mode: &Mode, d: &Document) -> Result<()> {
    match mode.statement(d)? {
        Write::Nothing => Ok(()),
        Write::Insert(doc) => run_write(ctx, db, coll, WriteKind::Insert, doc)
            .await
            .map(|_| ()),
        Write::Update(stmt) => {
            let n = run_write(ctx, db, coll, WriteKind::Update, stmt).await?;
            if n == 0 && mode.fail_unmatched {
                return Err(no_match());
            }
            Ok(())
        }
        Write::PipelineThenInsert(stmt, doc, insert) => {
            let n = run_write(ctx, db, coll, WriteKind::Update, stmt).await?;
            match n {
                0 if insert => run_write(ctx, db, coll, WriteKind::Insert, doc)
                    .await
                    .map(|_| ()),
                0 if mode.fail_unmatched => Err(no_match()),
                _ => Ok(()),
            }
        }
    }
}

fn no_match() -> RouterError {
    RouterError::command(
        13113,
        "MergeStageNoMatchingDocument",
        "$merge could not find a matching document in the target collection for at least one document in the source collection",
    )
}

/// One insert or update through the router's write path; the number of
/// documents it matched (or inserted). A write error fails the `$merge`
/// with that error, as a server's `$merge` does.
async fn run_write(
    ctx: &Ctx,
    db: &str,
    coll: &str,
    kind: WriteKind,
    stmt: Document,
) -> Result<i64> {
    let mut body = doc! {kind.name(): coll, kind.field(): [stmt], "ordered": true, "$db": db};
    if let Ok(wc) = ctx.options.get_document("writeConcern") {
        body.insert("writeConcern", wc.clone());
    }
    if let Some(b) = ctx.options.get("bypassDocumentValidation") {
        body.insert("bypassDocumentValidation", b.clone());
    }
    let body =
        RawDocumentBuf::try_from(&body).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let msg = shardgate_wire::OpMsg::from_body(body.as_bytes().to_vec());
    let req = Request {
        name: kind.name(),
        db,
        collection: Some(coll),
        body: &body,
        msg: &msg,
    };
    let ns = format!("{db}.{coll}");
    let reply = crate::write::exec::write(&ctx.state, &req, &ns, kind).await?;
    let reply = match &reply {
        Reply::Body(b) => RawDocumentBuf::from_bytes(b.clone())
            .map_err(|e| RouterError::bad_value(e.to_string()))?,
        Reply::Msg(m) => m.body().to_owned(),
    };
    if let Ok(errors) = reply.get_array("writeErrors") {
        if let Some(Ok(first)) = errors.into_iter().next() {
            let e = first
                .as_document()
                .and_then(|d| Document::try_from(d).ok())
                .unwrap_or_default();
            let code = e.get_i32("code").unwrap_or(1);
            let msg = e.get_str("errmsg").unwrap_or("write error").to_owned();
            return Err(RouterError::command(
                code,
                crate::labels::code_name(code),
                msg,
            ));
        }
    }
    let n = crate::session::number_field(&reply, "n").unwrap_or(0);
    Ok(n)
}
