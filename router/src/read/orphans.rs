//! Keeping a shard's orphans out of what it answers when the collection's
//! shard key has a hashed field.
//!
//! During a migration and until its range deletion, a shard holds documents
//! it does not own (its orphan ranges). For a ranged key the exclusion is a
//! filter the shard evaluates ([`super::orphan_clause`]). A hashed field's
//! ranges are ranges of *hash* values, which a shard cannot select by query
//! (SecantusDB has no `$toHashedIndexKey`). So for such a shard the router
//! reads each document's shard-key values — from the document, or from a
//! hidden projected field when the client's projection would drop them —
//! hashes them with the chunk map's own function, drops the documents in
//! the shard's orphan ranges and removes what it added. Counts, `distinct`,
//! aggregation and multi-document writes on that shard are computed from
//! what survives (see `StreamFilter`, [`count_owned`], [`distinct_owned`],
//! [`OwnedIds`]).

use std::sync::Arc;

use bson::{doc, Bson, Document, RawArrayBuf, RawDocument, RawDocumentBuf};
use shardgate_config_store::shard_key::{hash_value, KeyBytes, KeyKind, ShardKeyPattern};
use shardgate_config_store::ShardType;
use shardgate_shard_client::{cursor_reply, ShardCursor, ShardError};

use crate::catalog_cache::routing::CollectionRouting;
use crate::error::{Result, RouterError};
use crate::session::Namespace;
use crate::shards::{open_cursor, run_on_shard_raw};
use crate::state::RouterState;

/// The hidden field a shard fills with the document's shard-key values.
pub(crate) const KEY_FIELD: &str = "__shardgate_shard_key";

/// Documents per page when the router pages through a shard's documents.
const PAGE: i64 = 1000;

/// How a shard's orphans are kept out of one command.
pub(crate) enum Exclusion {
    /// The shard holds none.
    None,
    /// A clause the shard evaluates, joined to the command's filter.
    Filter(Document),
    /// The router drops them itself.
    Router(Arc<HashedOrphans>),
}

impl Exclusion {
    /// The exclusion for `shard`: a range filter for a ranged key; for a
    /// hashed one, a `$toHashedIndexKey` filter where the shard evaluates it
    /// (and string comparisons of a compound key's other fields follow the
    /// simple collation, as chunk bounds do), else the router's filtering.
    pub(crate) async fn for_shard(
        state: &RouterState,
        routing: &CollectionRouting,
        shard: &ShardType,
        simple_collation: bool,
    ) -> Exclusion {
        let Some(orphans) = HashedOrphans::for_shard(routing, &shard.id) else {
            return match super::orphan_clause(routing, &shard.id) {
                clause if clause.is_empty() => Exclusion::None,
                clause => Exclusion::Filter(clause),
            };
        };
        let ranged_strings = orphans
            .pattern
            .fields()
            .any(|(_, kind)| kind != KeyKind::Hashed);
        if simple_collation || !ranged_strings {
            if let Some(clause) = orphans.pushdown() {
                let db = Namespace::parse(&routing.collection.ns).db;
                if evaluates_hashed_key(state, shard, db).await {
                    return Exclusion::Filter(clause);
                }
            }
        }
        Exclusion::Router(orphans)
    }

    /// `filter` as the shard gets it.
    pub(crate) fn apply(&self, filter: &Document) -> Document {
        match self {
            Exclusion::Filter(clause) if filter.is_empty() => clause.clone(),
            Exclusion::Filter(clause) => doc! {"$and": [filter.clone(), clause.clone()]},
            _ => filter.clone(),
        }
    }

    /// The orphans the router must drop itself.
    pub(crate) fn router(&self) -> Option<Arc<HashedOrphans>> {
        match self {
            Exclusion::Router(o) => Some(o.clone()),
            _ => None,
        }
    }
}

/// [`Exclusion::for_shard`] for each shard, in order.
pub(crate) async fn exclusions(
    state: &RouterState,
    routing: &CollectionRouting,
    shards: &[ShardType],
    simple_collation: bool,
) -> Vec<Exclusion> {
    let each = shards
        .iter()
        .map(|s| Exclusion::for_shard(state, routing, s, simple_collation));
    futures::future::join_all(each).await
}

/// Whether `shard` evaluates `$toHashedIndexKey` with the chunk map's hash;
/// asked once per shard pool (an unreachable shard is asked again later).
async fn evaluates_hashed_key(state: &RouterState, shard: &ShardType, db: &str) -> bool {
    let known = state
        .hashed_key_expr
        .lock()
        .ok()
        .and_then(|m| m.get(&shard.id).copied());
    if let Some(known) = known {
        return known;
    }
    let probe = "shardgate";
    let cmd = doc! {
        "aggregate": 1,
        "pipeline": [
            {"$documents": [{"v": probe}]},
            {"$project": {"_id": 0, "h": {"$toHashedIndexKey": "$v"}}},
        ],
        "cursor": {}, "$db": db,
    };
    let answer = match run_on_shard_raw(state, shard, cmd).await {
        Ok(reply) => {
            let docs = cursor_reply(&shard.id, &reply)
                .map(|r| r.docs)
                .unwrap_or_default();
            let want = hash_value(&Bson::String(probe.to_owned()));
            docs.first().and_then(|d| d.get_i64("h").ok()) == Some(want)
        }
        Err(e @ RouterError::Shard(ShardError::Reply { .. })) => {
            tracing::debug!(shard = %shard.id, error = %e, "no $toHashedIndexKey on this shard");
            false
        }
        Err(e) => {
            tracing::debug!(shard = %shard.id, error = %e, "$toHashedIndexKey probe failed");
            return false;
        }
    };
    if let Ok(mut m) = state.hashed_key_expr.lock() {
        m.insert(shard.id.clone(), answer);
    }
    answer
}

/// One shard's orphan ranges of a collection with a hashed shard-key field.
pub(crate) struct HashedOrphans {
    pattern: ShardKeyPattern,
    /// Encoded `[min, max)` of each orphan range on the shard.
    ranges: Vec<(KeyBytes, KeyBytes)>,
    /// The same ranges' bounds as documents.
    bounds: Vec<(Document, Document)>,
}

impl HashedOrphans {
    /// The orphan ranges `shard` holds, when the key has a hashed field and
    /// there are any; `None` means the shard answers for itself.
    pub(crate) fn for_shard(routing: &CollectionRouting, shard: &str) -> Option<Arc<Self>> {
        routing.pattern.hashed_field()?;
        let (ranges, bounds): (Vec<_>, Vec<_>) = routing
            .orphans
            .iter()
            .filter(|o| o.shard == shard)
            .filter_map(|o| {
                let min = routing.pattern.encode_bound(&o.min).ok()?;
                let max = routing.pattern.encode_bound(&o.max).ok()?;
                Some(((min, max), (o.min.clone(), o.max.clone())))
            })
            .unzip();
        if ranges.is_empty() {
            return None;
        }
        Some(Arc::new(HashedOrphans {
            pattern: routing.pattern.clone(),
            ranges,
            bounds,
        }))
    }

    /// The exclusion as a filter clause for a shard that evaluates
    /// `$toHashedIndexKey`: `{$nor: [{$expr: key in [min, max)}, …]}` with
    /// the key as the array `["$a", {$toHashedIndexKey: "$b"}]` (arrays
    /// compare element by element, as the encoded keys do). `None` for a
    /// key with a descending field, which array order cannot express.
    pub(crate) fn pushdown(&self) -> Option<Document> {
        let mut tuple = Vec::new();
        for (name, kind) in self.pattern.fields() {
            let path = Bson::String(format!("${name}"));
            tuple.push(match kind {
                KeyKind::Hashed => Bson::Document(doc! {"$toHashedIndexKey": path}),
                KeyKind::Ascending => path,
                KeyKind::Descending => return None,
            });
        }
        let values = |bound: &Document| -> Bson {
            Bson::Document(doc! {"$literal": bound.values().cloned().collect::<Vec<_>>()})
        };
        let ranges: Vec<Bson> = self
            .bounds
            .iter()
            .map(|(min, max)| {
                Bson::Document(doc! {"$expr": {"$and": [
                    {"$gte": [tuple.clone(), values(min)]},
                    {"$lt": [tuple.clone(), values(max)]},
                ]}})
            })
            .collect();
        Some(doc! {"$nor": ranges})
    }

    /// The expression that makes a shard return the key values:
    /// `["$a", "$b.c"]` (a missing value comes back as null).
    pub(crate) fn key_values(&self) -> Bson {
        Bson::Array(
            self.pattern
                .fields()
                .map(|(name, _)| Bson::String(format!("${name}")))
                .collect(),
        )
    }

    /// Whether the shard owns `doc`: its key (from [`KEY_FIELD`] when
    /// present, else from the document) lies in none of the orphan ranges.
    /// A document whose key cannot be read (no sharded collection holds
    /// one) is kept.
    pub(crate) fn owns(&self, doc: &RawDocument) -> bool {
        let key = match doc.get_array(KEY_FIELD) {
            Ok(values) => self.pattern.key_from_values(values),
            Err(_) => self.pattern.extract_key(doc),
        };
        match key {
            Ok(k) => !self.ranges.iter().any(|(min, max)| *min <= k && k < *max),
            Err(_) => true,
        }
    }

    /// The shard-key field paths.
    fn key_paths(&self) -> Vec<&str> {
        self.pattern.fields().map(|(name, _)| name).collect()
    }

    /// The projection to send the shard instead of the client's, so every
    /// returned document carries its key, and how to undo the change.
    pub(crate) fn reshape_projection(
        &self,
        client: Option<&Document>,
    ) -> (Option<Document>, Reshape) {
        let Some(p) = client.filter(|p| !p.is_empty()) else {
            return (client.cloned(), Reshape::default());
        };
        if is_inclusion(p) {
            let mut out = p.clone();
            out.insert(KEY_FIELD, self.key_values());
            let reshape = Reshape {
                hidden: true,
                removed: Vec::new(),
            };
            return (Some(out), reshape);
        }
        // An exclusion: keep the key fields, exclude them here afterwards.
        let keys = self.key_paths();
        let mut out = Document::new();
        let mut removed = Vec::new();
        for (path, value) in flatten(p) {
            let overlaps = keys.iter().any(|k| paths_overlap(k, &path));
            if overlaps && excludes(&value) {
                removed.push(path);
            } else {
                out.insert(path, value);
            }
        }
        let reshape = Reshape {
            hidden: false,
            removed,
        };
        (Some(out), reshape)
    }

    /// The documents of a batch the shard owns, with [`Reshape`] undone.
    pub(crate) fn admit(
        &self,
        docs: Vec<RawDocumentBuf>,
        reshape: &Reshape,
    ) -> Vec<RawDocumentBuf> {
        docs.into_iter()
            .filter(|d| self.owns(d))
            .map(|d| reshape.undo(d))
            .collect()
    }
}

/// What [`HashedOrphans::reshape_projection`] changed in a projection.
#[derive(Default, Clone)]
pub(crate) struct Reshape {
    /// [`KEY_FIELD`] was added.
    hidden: bool,
    /// Exclusions of these paths were taken out.
    removed: Vec<String>,
}

impl Reshape {
    /// `doc` as the client's projection would have returned it.
    pub(crate) fn undo(&self, doc: RawDocumentBuf) -> RawDocumentBuf {
        let mut doc = if self.hidden {
            without_field(&doc, KEY_FIELD)
        } else {
            doc
        };
        if !self.removed.is_empty() {
            if let Ok(mut d) = Document::try_from(doc.as_ref()) {
                for path in &self.removed {
                    let parts: Vec<&str> = path.split('.').collect();
                    remove_path(&mut d, &parts);
                }
                if let Ok(raw) = RawDocumentBuf::try_from(&d) {
                    doc = raw;
                }
            }
        }
        doc
    }
}

/// A copy of `doc` without its top-level `field`.
pub(crate) fn without_field(doc: &RawDocument, field: &str) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    for (k, v) in doc.iter().flatten() {
        if k.as_str() != field {
            out.append(k, v);
        }
    }
    out
}

/// Whether a find projection includes (rather than excludes), as MongoDB's
/// projection parser decides: any truthy non-`_id` field, computed field or
/// positional `a.$` makes it an inclusion; `$slice`, `$elemMatch` and
/// `$meta` decide nothing; otherwise `_id: 1` alone includes.
fn is_inclusion(p: &Document) -> bool {
    let mut id_included = false;
    for (name, value) in p {
        if name.ends_with(".$") {
            return true;
        }
        let decided = match value {
            Bson::Document(d) => match d.keys().next().map(String::as_str) {
                Some("$slice" | "$elemMatch" | "$meta") => None,
                Some(op) if op.starts_with('$') => Some(true),
                _ => Some(is_inclusion(d)),
            },
            other => Some(!excludes(other)),
        };
        if name == "_id" {
            id_included = decided == Some(true);
            continue;
        }
        if let Some(inclusion) = decided {
            return inclusion;
        }
    }
    id_included
}

/// Whether a projection value excludes (`0`, `false`).
fn excludes(value: &Bson) -> bool {
    match value {
        Bson::Boolean(b) => !b,
        Bson::Int32(n) => *n == 0,
        Bson::Int64(n) => *n == 0,
        Bson::Double(n) => *n == 0.0,
        _ => false,
    }
}

/// A projection with nested sub-projections (`{a: {b: 0}}`) as dotted
/// paths; operator documents stay whole.
fn flatten(p: &Document) -> Vec<(String, Bson)> {
    let mut out = Vec::new();
    for (name, value) in p {
        match value {
            Bson::Document(d) if d.keys().next().is_some_and(|k| !k.starts_with('$')) => {
                for (sub, v) in flatten(d) {
                    out.push((format!("{name}.{sub}"), v));
                }
            }
            _ => out.push((name.clone(), value.clone())),
        }
    }
    out
}

/// Whether one dotted path is the other or lies inside it.
fn paths_overlap(a: &str, b: &str) -> bool {
    let inside = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    inside(a, b) || inside(b, a)
}

/// Removes a dotted path from a document, through arrays of documents as a
/// projection exclusion does.
fn remove_path(doc: &mut Document, parts: &[&str]) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        doc.remove(*first);
        return;
    }
    match doc.get_mut(*first) {
        Some(Bson::Document(sub)) => remove_path(sub, rest),
        Some(Bson::Array(items)) => {
            for item in items {
                if let Bson::Document(sub) = item {
                    remove_path(sub, rest);
                }
            }
        }
        _ => {}
    }
}

/// Options of the client's command that a shard read made for it keeps.
fn copy_options(body: &RawDocument, cmd: &mut Document, names: &[&str]) {
    for name in names {
        if let Ok(Some(v)) = body.get(*name) {
            if let Ok(v) = Bson::try_from(v) {
                cmd.insert(*name, v);
            }
        }
    }
}

/// How many documents matching `filter` the shard owns (`count` on a shard
/// holding hashed orphans): their keys are read and checked here.
pub(crate) async fn count_owned(
    state: &RouterState,
    shard: &ShardType,
    orphans: &HashedOrphans,
    ns: &str,
    filter: &Document,
    body: &RawDocument,
) -> Result<i64> {
    let Namespace { db, coll } = Namespace::parse(ns);
    let mut cmd = doc! {
        "find": coll, "filter": filter.clone(),
        "projection": {"_id": 0, KEY_FIELD: orphans.key_values()},
        "batchSize": PAGE, "$db": db,
    };
    copy_options(
        body,
        &mut cmd,
        &["hint", "collation", "readConcern", "lsid"],
    );
    let mut pager = open_cursor(state, shard, &cmd).await?.batch_size(PAGE);
    let mut n = 0;
    while let Some(page) = pager.next_batch().await? {
        n += page.iter().filter(|d| orphans.owns(d)).count() as i64;
    }
    Ok(n)
}

/// The values of `key` in the documents matching `filter` that the shard
/// owns (`distinct` on a shard holding hashed orphans), arrays unwound as
/// `distinct` does.
pub(crate) async fn distinct_owned(
    state: &RouterState,
    shard: &ShardType,
    orphans: &HashedOrphans,
    ns: &str,
    key: &str,
    filter: &Document,
    body: &RawDocument,
) -> Result<Vec<Bson>> {
    let Namespace { db, coll } = Namespace::parse(ns);
    let mut cmd = doc! {
        "find": coll, "filter": filter.clone(),
        "projection": {"_id": 0, key: 1, KEY_FIELD: orphans.key_values()},
        "batchSize": PAGE, "$db": db,
    };
    copy_options(
        body,
        &mut cmd,
        &["hint", "collation", "readConcern", "lsid"],
    );
    let mut pager = open_cursor(state, shard, &cmd).await?.batch_size(PAGE);
    let parts: Vec<&str> = key.split('.').collect();
    let mut values = Vec::new();
    while let Some(page) = pager.next_batch().await? {
        for d in page.iter().filter(|d| orphans.owns(d)) {
            if let Ok(d) = Document::try_from(d.as_ref()) {
                values_at(&Bson::Document(d), &parts, &mut values);
            }
        }
    }
    Ok(values)
}

/// The values `distinct` takes from `value` at `parts`: through arrays of
/// documents, a final array's elements.
fn values_at(value: &Bson, parts: &[&str], out: &mut Vec<Bson>) {
    let Some((first, rest)) = parts.split_first() else {
        match value {
            Bson::Array(items) => out.extend(items.iter().cloned()),
            other => out.push(other.clone()),
        }
        return;
    };
    match value {
        Bson::Document(d) => {
            if let Some(v) = d.get(*first) {
                values_at(v, rest, out);
            }
        }
        Bson::Array(items) => {
            if let Ok(i) = first.parse::<usize>() {
                if let Some(v) = items.get(i) {
                    values_at(v, rest, out);
                }
            }
            for item in items.iter().filter(|i| matches!(i, Bson::Document(_))) {
                values_at(item, parts, out);
            }
        }
        _ => {}
    }
}

/// The `_id`s of the documents matching a write's filter that the shard
/// owns, page by page in `_id` order (so a document written meanwhile is
/// not seen twice).
pub(crate) struct OwnedIds {
    pager: ShardCursor,
    orphans: Arc<HashedOrphans>,
}

impl OwnedIds {
    /// Opens the scan of `filter` (with the statement's `collation`).
    pub(crate) async fn open(
        state: &RouterState,
        shard: &ShardType,
        orphans: Arc<HashedOrphans>,
        ns: &str,
        filter: &Document,
        collation: Option<&Document>,
    ) -> Result<OwnedIds> {
        let Namespace { db, coll } = Namespace::parse(ns);
        let mut cmd = doc! {
            "find": coll, "filter": filter.clone(), "sort": {"_id": 1},
            "projection": {"_id": 1, KEY_FIELD: orphans.key_values()},
            "batchSize": PAGE, "$db": db,
        };
        if let Some(c) = collation {
            cmd.insert("collation", c.clone());
        }
        let pager = open_cursor(state, shard, &cmd).await?.batch_size(PAGE);
        Ok(OwnedIds { pager, orphans })
    }

    /// The next page of owned `_id`s (possibly empty); `None` at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<Bson>>> {
        let Some(page) = self.pager.next_batch().await? else {
            return Ok(None);
        };
        let ids = page
            .iter()
            .filter(|d| self.orphans.owns(d))
            .filter_map(|d| d.get("_id").ok().flatten())
            .filter_map(|v| Bson::try_from(v).ok())
            .collect();
        Ok(Some(ids))
    }

    /// Stops early, closing the shard cursor.
    pub(crate) async fn close(self) {
        self.pager.kill().await;
    }
}

/// What the router does to one shard stream of a scatter read whose shard
/// holds hashed orphans: drop the orphans, undo the projection change, and
/// run the rest of the shard's part of a pipeline over what survives (on
/// the same shard, fed with `$documents`).
pub(crate) struct StreamFilter {
    /// The shard's orphan ranges.
    pub orphans: Arc<HashedOrphans>,
    /// How the projection was changed.
    pub reshape: Reshape,
    /// Pipeline stages still to run on the survivors (empty for `find`).
    pub rest: Vec<Document>,
    /// The database, for the `$documents` pipeline.
    pub db: String,
    /// `collation` and `let` of the client's `aggregate`.
    pub options: Document,
}

impl StreamFilter {
    /// A batch as the shard would have returned it had it held no orphans.
    pub(crate) async fn apply(
        &self,
        state: &RouterState,
        shard: &ShardType,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<Vec<RawDocumentBuf>> {
        let owned = self.orphans.admit(docs, &self.reshape);
        if self.rest.is_empty() || owned.is_empty() {
            return Ok(owned);
        }
        let mut out = Vec::new();
        for part in by_bytes(owned, 8 * 1024 * 1024) {
            let mut input = RawArrayBuf::new();
            for d in part {
                input.push(d);
            }
            let mut pipeline = RawArrayBuf::new();
            let mut documents = RawDocumentBuf::new();
            documents.append(bson::cstr!("$documents"), input);
            pipeline.push(documents);
            for stage in &self.rest {
                let stage = RawDocumentBuf::try_from(stage)
                    .map_err(|e| RouterError::bad_value(e.to_string()))?;
                pipeline.push(stage);
            }
            let mut cmd = RawDocumentBuf::new();
            cmd.append(bson::cstr!("aggregate"), 1);
            cmd.append(bson::cstr!("pipeline"), pipeline);
            let mut cursor = RawDocumentBuf::new();
            cursor.append(bson::cstr!("batchSize"), PAGE);
            cmd.append(bson::cstr!("cursor"), cursor);
            let options = RawDocumentBuf::try_from(&self.options)
                .map_err(|e| RouterError::bad_value(e.to_string()))?;
            for (k, v) in options.iter().flatten() {
                cmd.append(k, v);
            }
            cmd.append(bson::cstr!("$db"), self.db.as_str());
            let cmd = Document::try_from(cmd.as_ref())
                .map_err(|e| RouterError::bad_value(e.to_string()))?;
            out.extend(open_cursor(state, shard, &cmd).await?.all().await?);
        }
        Ok(out)
    }
}

/// `docs` cut into runs of at most `limit` bytes (at least one each).
fn by_bytes(docs: Vec<RawDocumentBuf>, limit: usize) -> Vec<Vec<RawDocumentBuf>> {
    let mut out: Vec<Vec<RawDocumentBuf>> = Vec::new();
    let mut bytes = 0;
    for d in docs {
        let len = d.as_bytes().len();
        match out.last_mut() {
            Some(run) if bytes + len <= limit => run.push(d),
            _ => {
                bytes = 0;
                out.push(vec![d]);
            }
        }
        bytes += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusion_or_exclusion_as_mongodb_decides() {
        assert!(is_inclusion(&doc! {"a": 1}));
        assert!(is_inclusion(&doc! {"_id": 0, "a": true}));
        assert!(is_inclusion(&doc! {"_id": 1}));
        assert!(is_inclusion(&doc! {"x": "$a"}));
        assert!(is_inclusion(&doc! {"a.$": 1}));
        assert!(is_inclusion(&doc! {"a": {"b": 1}}));
        assert!(is_inclusion(&doc! {"a": {"$slice": 1}, "b": 1}));
        assert!(!is_inclusion(&doc! {"a": 0}));
        assert!(!is_inclusion(&doc! {"_id": 0}));
        assert!(!is_inclusion(&doc! {"a": {"$slice": 1}}));
        assert!(!is_inclusion(&doc! {"$sortKey": {"$meta": "sortKey"}}));
        assert!(!is_inclusion(&doc! {"a": {"b": 0}}));
    }

    #[test]
    fn overlapping_paths() {
        assert!(paths_overlap("user.id", "user"));
        assert!(paths_overlap("user", "user.id"));
        assert!(paths_overlap("_id", "_id"));
        assert!(!paths_overlap("user.id", "user.idx"));
        assert!(!paths_overlap("a", "ab"));
    }

    #[test]
    fn removes_paths_through_arrays() {
        let mut d = doc! {"a": [{"b": 1, "c": 2}, 5, {"b": 3}], "x": {"y": 1, "z": 2}};
        remove_path(&mut d, &["a", "b"]);
        remove_path(&mut d, &["x", "y"]);
        assert_eq!(d, doc! {"a": [{"c": 2}, 5, {}], "x": {"z": 2}});
    }

    #[test]
    fn distinct_values_unwind_arrays() {
        let d = Bson::Document(doc! {"a": [{"b": [1, 2]}, {"b": 3}, 4], "c": [[1], 2]});
        let mut out = Vec::new();
        values_at(&d, &["a", "b"], &mut out);
        assert_eq!(out, vec![Bson::Int32(1), Bson::Int32(2), Bson::Int32(3)]);
        out.clear();
        values_at(&d, &["c"], &mut out);
        assert_eq!(out, vec![Bson::Array(vec![Bson::Int32(1)]), Bson::Int32(2)]);
    }

    fn orphans(pattern: Document, bounds: Vec<(Document, Document)>) -> HashedOrphans {
        let pattern = ShardKeyPattern::parse(&pattern).unwrap();
        let ranges = bounds
            .iter()
            .map(|(min, max)| {
                (
                    pattern.encode_bound(min).unwrap(),
                    pattern.encode_bound(max).unwrap(),
                )
            })
            .collect();
        HashedOrphans {
            pattern,
            ranges,
            bounds,
        }
    }

    /// Whether the pushed-down clause keeps `doc`, evaluated by the
    /// router's expression engine: each `{$toHashedIndexKey: "$f"}` is
    /// replaced by a field holding the hash of `f` (null when missing), as
    /// a shard computes it; the comparisons are the engine's.
    fn clause_keeps(clause: &Document, doc: &Document) -> bool {
        fn substitute(v: &Bson, doc: &mut Document, original: &Document) -> Bson {
            match v {
                Bson::Document(d) => {
                    if let Ok(path) = d.get_str("$toHashedIndexKey") {
                        let value = shardgate_query::get_path(original, &path[1..])
                            .cloned()
                            .unwrap_or(Bson::Null);
                        let name = format!("hashed_{}", path[1..].replace('.', "_"));
                        doc.insert(&name, hash_value(&value));
                        return Bson::String(format!("${name}"));
                    }
                    let mut out = Document::new();
                    for (k, x) in d {
                        out.insert(k, substitute(x, doc, original));
                    }
                    Bson::Document(out)
                }
                Bson::Array(items) => {
                    Bson::Array(items.iter().map(|x| substitute(x, doc, original)).collect())
                }
                other => other.clone(),
            }
        }
        let ranges = clause.get_array("$nor").unwrap();
        !ranges.iter().any(|r| {
            let mut input = doc.clone();
            let e = r.as_document().unwrap().get("$expr").unwrap();
            let e = substitute(e, &mut input, doc);
            let out =
                shardgate_query::aggregate(vec![input], &[doc! {"$project": {"in": e}}]).unwrap();
            out[0].get_bool("in").unwrap()
        })
    }

    #[test]
    fn pushed_down_exclusion_keeps_what_the_router_keeps() {
        let min = Bson::MinKey;
        let max = Bson::MaxKey;
        let cases = [
            orphans(
                doc! {"_id": "hashed"},
                vec![
                    (
                        doc! {"_id": min.clone()},
                        doc! {"_id": -3_000_000_000_000_000_000i64},
                    ),
                    (
                        doc! {"_id": 0i64},
                        doc! {"_id": 4_000_000_000_000_000_000i64},
                    ),
                ],
            ),
            orphans(
                doc! {"tenant": 1, "u.id": "hashed"},
                vec![
                    (
                        doc! {"tenant": "t1", "u.id": min.clone()},
                        doc! {"tenant": "t1", "u.id": 0i64},
                    ),
                    (
                        doc! {"tenant": "$t3", "u.id": 5i64},
                        doc! {"tenant": max.clone(), "u.id": max.clone()},
                    ),
                ],
            ),
        ];
        let docs: Vec<Document> = (0..400)
            .map(|i| match i % 5 {
                0 => doc! {"_id": i, "tenant": "t1", "u": {"id": i}},
                1 => doc! {"_id": format!("s{i}"), "tenant": "t1", "u": {"id": format!("s{i}")}},
                2 => doc! {"_id": i, "tenant": "$t3", "u": {"id": i as f64 + 0.5}},
                3 => doc! {"_id": i, "u": "not a document"},
                _ => doc! {"_id": i, "tenant": "t4"},
            })
            .collect();
        for o in &cases {
            let clause = o.pushdown().unwrap();
            let mut excluded = 0;
            for d in &docs {
                let raw = RawDocumentBuf::try_from(d).unwrap();
                let owns = o.owns(&raw);
                assert_eq!(clause_keeps(&clause, d), owns, "{d} under {clause}");
                excluded += usize::from(!owns);
            }
            assert!(excluded > 20 && excluded < 380, "{excluded} excluded");
        }
        let descending = orphans(
            doc! {"a": -1, "b": "hashed"},
            vec![(doc! {"a": max, "b": min}, doc! {"a": 5, "b": 0i64})],
        );
        assert!(descending.pushdown().is_none());
    }

    #[test]
    fn batches_cut_by_bytes() {
        let docs: Vec<RawDocumentBuf> = (0..10)
            .map(|i| RawDocumentBuf::try_from(&doc! {"i": i}).unwrap())
            .collect();
        let len = docs[0].as_bytes().len();
        let runs = by_bytes(docs, len * 3);
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
    }
}
