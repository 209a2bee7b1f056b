//! What a sampled command stores: the `config.sampledQueries` document of
//! each sampled read or write statement, and for updates the diff of the
//! document they changed.

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};

use super::{expire_at, Analyzer};
use crate::read::pipeline::{self, Ctx};
use crate::session::Request;
use crate::state::RouterState;

/// One sample waiting to be written.
pub(crate) struct Pending {
    /// The database whose primary shard stores it.
    pub db: String,
    /// The `config.sampledQueries` document.
    pub sample: Document,
    /// The `config.sampledQueriesDiff` document, for an update that
    /// changed a document.
    pub diff: Option<Document>,
    /// How an update finds its document, to read it before and after.
    update: Option<Target>,
}

/// The document an update changes: the first matching `filter` in `sort`
/// order, under `collation`.
struct Target {
    filter: Document,
    sort: Option<Document>,
    collation: Option<Document>,
}

impl Pending {
    /// Whether it samples a write.
    pub(crate) fn is_write(&self) -> bool {
        matches!(
            self.sample.get_str("cmdName"),
            Ok("update" | "delete" | "findAndModify")
        )
    }
}

/// The collection a command samples, if it is one that is sampled.
pub(crate) fn collection<'a>(req: &Request<'a>) -> Option<&'a str> {
    match req.name {
        "find" | "count" | "distinct" | "update" | "delete" | "findAndModify" | "findandmodify" => {
            req.body.get_str(req.name).ok()
        }
        "aggregate" if !req.body.get_bool("explain").unwrap_or(false) => {
            req.body.get_str("aggregate").ok()
        }
        _ => None,
    }
}

fn field(body: &RawDocument, name: &str) -> Option<Bson> {
    body.get(name)
        .ok()
        .flatten()
        .and_then(|v| Bson::try_from(v).ok())
}

fn document(body: &RawDocument, name: &str) -> Option<Document> {
    match field(body, name)? {
        Bson::Document(d) => Some(d),
        _ => None,
    }
}

/// The samples of `req`, one per statement `take` lets through.
pub(crate) fn choose(
    analyzer: &Analyzer,
    req: &Request<'_>,
    db: &str,
    mut take: impl FnMut() -> bool,
) -> Vec<Pending> {
    let sample = |cmd_name: &str, (cmd, update): (Document, Option<Target>)| Pending {
        db: db.to_owned(),
        sample: doc! {
            "_id": bson::Uuid::new(),
            "ns": &analyzer.ns,
            "collectionUuid": analyzer.uuid,
            "cmdName": cmd_name,
            "cmd": cmd,
            "expireAt": expire_at(),
        },
        diff: None,
        update,
    };
    match req.name {
        "update" | "delete" => statements(req, take)
            .into_iter()
            .map(|s| sample(req.name, s))
            .collect(),
        "findAndModify" | "findandmodify" if take() => {
            vec![sample("findAndModify", find_and_modify(req))]
        }
        "find" | "aggregate" | "count" | "distinct" if take() => {
            vec![sample(req.name, (read(req), None))]
        }
        _ => Vec::new(),
    }
}

/// Each statement of an `update` or `delete` that `take` lets through (it
/// is asked once per statement, in order) as a command of its own, with
/// how an update finds its document.
fn statements(
    req: &Request<'_>,
    mut take: impl FnMut() -> bool,
) -> Vec<(Document, Option<Target>)> {
    let coll = req.body.get_str(req.name).unwrap_or_default();
    let list = if req.name == "update" {
        "updates"
    } else {
        "deletes"
    };
    let mut out = Vec::new();
    for stmt in req.documents(list) {
        if !take() {
            continue;
        }
        let Ok(stmt) = Document::try_from(stmt) else {
            continue;
        };
        let update = (req.name == "update").then(|| Target {
            filter: stmt.get_document("q").cloned().unwrap_or_default(),
            sort: None,
            collation: stmt.get_document("collation").ok().cloned(),
        });
        let mut cmd = doc! {req.name: coll, list: [stmt]};
        for name in ["ordered", "let", "bypassDocumentValidation"] {
            if let Some(v) = field(req.body, name) {
                cmd.insert(name, v);
            }
        }
        out.push((cmd, update));
    }
    out
}

/// A `findAndModify` as it is stored, and the document an update finds.
fn find_and_modify(req: &Request<'_>) -> (Document, Option<Target>) {
    let coll = req.body.get_str(req.name).unwrap_or_default();
    let mut cmd = doc! {"findAndModify": coll};
    for name in [
        "query",
        "collation",
        "update",
        "remove",
        "upsert",
        "new",
        "sort",
        "arrayFilters",
        "let",
    ] {
        if let Some(v) = field(req.body, name) {
            cmd.insert(name, v);
        }
    }
    let removes = req.body.get_bool("remove").unwrap_or(false);
    let update = (!removes).then(|| Target {
        filter: document(req.body, "query").unwrap_or_default(),
        sort: document(req.body, "sort"),
        collation: document(req.body, "collation"),
    });
    (cmd, update)
}

/// A read as it is stored: `{filter, collation, let}`.
fn read(req: &Request<'_>) -> Document {
    let filter = match req.name {
        "find" => document(req.body, "filter"),
        "aggregate" => Some(initial_filter(req.body)),
        _ => document(req.body, "query"),
    };
    let mut cmd = doc! {
        "filter": filter.unwrap_or_default(),
        "collation": document(req.body, "collation").unwrap_or_default(),
    };
    if let (true, Some(v)) = (
        matches!(req.name, "find" | "aggregate"),
        field(req.body, "let"),
    ) {
        cmd.insert("let", v);
    }
    cmd
}

/// An aggregation's initial query, as mongod's optimizer finds it: the
/// `$match` stages before any other stage (a `$sort` lets a later `$match`
/// move ahead of it), or a leading `$geoNear`'s `query`.
fn initial_filter(body: &RawDocument) -> Document {
    let Ok(stages) = pipeline::pipeline_of(body) else {
        return Document::new();
    };
    let mut filters = Vec::new();
    for stage in &stages {
        if let Ok(m) = stage.get_document("$match") {
            filters.push(Bson::Document(m.clone()));
        } else if stage.contains_key("$sort") {
            continue;
        } else if let (true, Ok(g)) = (filters.is_empty(), stage.get_document("$geoNear")) {
            if let Ok(q) = g.get_document("query") {
                filters.push(Bson::Document(q.clone()));
            }
            break;
        } else {
            break;
        }
    }
    match filters.len() {
        0 => Document::new(),
        1 => filters[0].as_document().cloned().unwrap_or_default(),
        _ => doc! {"$and": filters},
    }
}

/// Whether `req` runs inside a transaction (its updates' documents are not
/// read before and after: the reads would not see the transaction's
/// writes).
fn in_transaction(req: &Request<'_>) -> bool {
    matches!(req.body.get("autocommit"), Ok(Some(_)))
}

/// The document each sampled update will change, read before it runs.
pub(crate) async fn pre_images(
    state: &std::sync::Arc<RouterState>,
    req: &Request<'_>,
    samples: &mut [Pending],
) -> Vec<Option<Document>> {
    let mut out = Vec::with_capacity(samples.len());
    for p in samples.iter() {
        let found = match (&p.update, in_transaction(req)) {
            (Some(t), false) => read_one(state, req, t).await,
            _ => None,
        };
        out.push(found);
    }
    out
}

/// Each sampled update's diff: the fields that changed between the
/// document before and after it ran.
pub(crate) async fn diffs(
    state: &std::sync::Arc<RouterState>,
    req: &Request<'_>,
    samples: &mut [Pending],
    before: Vec<Option<Document>>,
) {
    for (p, before) in samples.iter_mut().zip(before) {
        let Some(before) = before else { continue };
        let Some(id) = before.get("_id").cloned() else {
            continue;
        };
        let by_id = Target {
            filter: doc! {"_id": id},
            sort: None,
            collation: None,
        };
        let after = read_one(state, req, &by_id).await.unwrap_or_default();
        let diff = diff(&before, &after);
        if diff.is_empty() {
            continue;
        }
        p.diff = Some(doc! {
            "_id": p.sample.get("_id").cloned().unwrap_or(Bson::Null),
            "ns": p.sample.get("ns").cloned().unwrap_or(Bson::Null),
            "collectionUuid": p.sample.get("collectionUuid").cloned().unwrap_or(Bson::Null),
            "diff": diff,
            "expireAt": expire_at(),
        });
    }
}

/// The first document `t` selects, read through the router.
async fn read_one(
    state: &std::sync::Arc<RouterState>,
    req: &Request<'_>,
    t: &Target,
) -> Option<Document> {
    let coll = req.body.get_str(req.name).ok()?;
    let mut options = Document::new();
    if let Some(c) = &t.collation {
        options.insert("collation", c.clone());
    }
    let options = RawDocumentBuf::try_from(&options).ok()?;
    let ctx = Ctx::new(state, req.db, &options);
    let mut stages = vec![doc! {"$match": t.filter.clone()}];
    if let Some(sort) = t.sort.as_ref().filter(|s| !s.is_empty()) {
        stages.push(doc! {"$sort": sort.clone()});
    }
    stages.push(doc! {"$limit": 1});
    let stream = pipeline::open(&ctx, Some(coll.to_owned()), stages)
        .await
        .ok()?;
    let docs = pipeline::drain(stream).await.ok()?;
    docs.first()
        .and_then(|d| Document::try_from(d.as_ref()).ok())
}

/// A diff of two versions of a document, as mongod's inline diff reads:
/// every changed field, `"u"` where its value changed or was added, `"d"`
/// where it was removed, nested documents diffed field by field.
pub(crate) fn diff(before: &Document, after: &Document) -> Document {
    let mut out = Document::new();
    for (k, v) in after {
        match (before.get(k), v) {
            (Some(Bson::Document(b)), Bson::Document(a)) => {
                let inner = diff(b, a);
                if !inner.is_empty() {
                    out.insert(k, inner);
                }
            }
            (Some(b), a) if b == a => {}
            (Some(_), _) => {
                out.insert(k, "u");
            }
            (None, _) => {
                out.insert(k, "i");
            }
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.insert(k, "d");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_names_what_changed() {
        let before = doc! {"_id": 1, "a": {"b": 1, "c": 2}, "x": 1, "gone": true};
        let after = doc! {"_id": 1, "a": {"b": 1, "c": 3}, "x": 1, "new": 1};
        assert_eq!(
            diff(&before, &after),
            doc! {"a": {"c": "u"}, "new": "i", "gone": "d"}
        );
        assert!(diff(&before, &before).is_empty());
    }

    #[test]
    fn an_aggregation_s_initial_query() {
        let body = |p: bson::Document| RawDocumentBuf::try_from(&p).unwrap();
        let f = initial_filter(&body(
            doc! {"pipeline": [{"$match": {"a": 1}}, {"$sort": {"b": 1}}, {"$match": {"c": 2}}, {"$group": {"_id": 1}}, {"$match": {"d": 1}}]},
        ));
        assert_eq!(f, doc! {"$and": [{"a": 1}, {"c": 2}]});
        let f = initial_filter(&body(doc! {"pipeline": [{"$group": {"_id": 1}}]}));
        assert!(f.is_empty());
        let f = initial_filter(&body(
            doc! {"pipeline": [{"$geoNear": {"near": [0, 0], "query": {"k": 5}}}]},
        ));
        assert_eq!(f, doc! {"k": 5});
    }
}
