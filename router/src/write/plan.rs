//! Planning a write batch on a sharded collection (pure: no I/O).
//!
//! Each statement of an `insert`, `update` or `delete` is routed on its own
//! ([`route_statement`]), under mongos's rules:
//! - an insert goes to the owner of its document's key (missing key fields
//!   are null);
//! - updates, deletes and `findAndModify` are targeted by their filter;
//! - an upsert needs the full shard key by equality (ShardKeyNotFound, 61)
//!   or an exact `_id` (then it runs as `write::key_update` finds, updates
//!   or inserts it where its key belongs, as mongos ≥ 7.0 does);
//!   a single-document update or delete without it or an exact `_id` is a
//!   write without the shard key ([`Step::Alone`], run in two phases
//!   by `write::without_key`, as mongos ≥ 7.0 does);
//! - a single-document update that may change a document's shard key (a
//!   replacement whose filter does not pin the key among them) runs on its
//!   own as a key change ([`Step::Alone`], `write::key_update`); a
//!   multi-document one or an upsert is refused (ImmutableField, 66)
//!   unless it provably sets the key to the value the filter pins.
//!
//! [`plan`] then splits the routed statements into per-shard batches: for
//! an ordered batch, consecutive statements bound for the same one shard form
//! a run and runs go one after another (a statement for several shards is a
//! run of its own), so the first error stops everything after it, as on
//! mongos; an unordered batch becomes one step of per-shard batches sent at
//! once. Every batch stays within [`MAX_BATCH_COUNT`] statements and
//! [`MAX_BATCH_BYTES`].

use std::collections::BTreeMap;

use bson::{doc, Bson, Document, RawBsonRef, RawDocument};
use shardgate_config_store::chunk_map::ChunkMap;
use shardgate_config_store::shard_key::{KeyBytes, ShardKeyPattern};

use crate::targeting::{self, Targets};

mod key_change;
use key_change::check_key_unchanged;

/// Most statements in one batch sent to a shard (`maxWriteBatchSize`).
pub const MAX_BATCH_COUNT: usize = 100_000;
/// Most statement bytes in one batch sent to a shard: the 48 MB message
/// limit less room for the command body.
pub const MAX_BATCH_BYTES: usize = 48_000_000 - 1_000_000;

/// The three write commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `insert`: statements are documents.
    Insert,
    /// `update`: statements are `{q, u, multi, upsert, …}`.
    Update,
    /// `delete`: statements are `{q, limit, …}`.
    Delete,
}

impl WriteKind {
    /// The kind of a command name.
    pub fn of(command: &str) -> Option<WriteKind> {
        match command {
            "insert" => Some(WriteKind::Insert),
            "update" => Some(WriteKind::Update),
            "delete" => Some(WriteKind::Delete),
            _ => None,
        }
    }

    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            WriteKind::Insert => "insert",
            WriteKind::Update => "update",
            WriteKind::Delete => "delete",
        }
    }

    /// The command field holding the statements.
    pub fn field(self) -> &'static str {
        match self {
            WriteKind::Insert => "documents",
            WriteKind::Update => "updates",
            WriteKind::Delete => "deletes",
        }
    }
}

/// Why a statement cannot be sent: becomes a `writeErrors` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct StmtError {
    /// MongoDB error code.
    pub code: i32,
    /// Its name.
    pub code_name: &'static str,
    /// What went wrong.
    pub errmsg: String,
}

impl StmtError {
    fn new(code: i32, code_name: &'static str, errmsg: impl Into<String>) -> StmtError {
        StmtError {
            code,
            code_name,
            errmsg: errmsg.into(),
        }
    }

    /// The `writeErrors` entry for the statement at `index`.
    pub fn to_write_error(&self, index: usize) -> Document {
        doc! {"index": index as i32, "code": self.code, "codeName": self.code_name, "errmsg": &self.errmsg}
    }
}

/// Where one statement goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// The shards, in name order (one for a keyed statement).
    pub shards: Vec<String>,
    /// The exact shard key, when the statement is targeted by it.
    pub key: Option<KeyBytes>,
    /// A single-document update or delete whose filter pins neither the
    /// shard key nor `_id`: it runs in two phases on `shards`.
    pub without_key: bool,
    /// A single-document update that may change the document's shard
    /// key: it runs on its own, moving the document if its owner changes.
    pub key_change: bool,
}

impl Routed {
    fn one(shard: &str, key: KeyBytes) -> Routed {
        Routed {
            shards: vec![shard.to_owned()],
            key: Some(key),
            without_key: false,
            key_change: false,
        }
    }
}

/// Routes one statement of a `kind` command.
pub fn route_statement(
    kind: WriteKind,
    pattern: &ShardKeyPattern,
    chunks: &ChunkMap,
    stmt: &RawDocument,
) -> Result<Routed, StmtError> {
    match kind {
        WriteKind::Insert => {
            let key = pattern
                .extract_key(stmt)
                .map_err(|e| StmtError::new(e.code().0, e.code().1, e.to_string()))?;
            Ok(Routed::one(&chunks.chunk_for(&key).shard, key))
        }
        WriteKind::Update => {
            let q = sub_document(stmt, "q")?;
            let u = match stmt.get("u") {
                Ok(Some(v)) => Bson::try_from(v).map_err(bad_value)?,
                _ => {
                    return Err(StmtError::new(
                        9,
                        "FailedToParse",
                        "update statement needs 'u'",
                    ))
                }
            };
            let multi = flag(stmt, "multi");
            let upsert = flag(stmt, "upsert");
            let simple = simple_collation(stmt);
            route_update(pattern, chunks, &q, &u, multi, upsert, simple)
        }
        WriteKind::Delete => {
            let q = sub_document(stmt, "q")?;
            let multi = match stmt.get("limit") {
                Ok(Some(v)) => number(v) == Some(0),
                _ => {
                    return Err(StmtError::new(
                        9,
                        "FailedToParse",
                        "delete statement needs 'limit'",
                    ))
                }
            };
            route_by_query(pattern, chunks, &q, simple_collation(stmt), multi)
        }
    }
}

/// Routes a `findAndModify` (`update` is `None` for `remove: true`).
pub fn route_find_and_modify(
    pattern: &ShardKeyPattern,
    chunks: &ChunkMap,
    query: &Document,
    update: Option<&Bson>,
    upsert: bool,
    simple: bool,
) -> Result<Routed, StmtError> {
    let key = simple
        .then(|| targeting::exact_key(pattern, query))
        .flatten();
    if let Some(u) = update {
        if let Err(e) = check_key_unchanged(pattern, query, u, key.as_ref()) {
            let refused = !simple || upsert && !is_exact_id(query);
            return key_change(pattern, chunks, query, refused, e);
        }
    }
    match key {
        Some(key) => Ok(Routed::one(&chunks.chunk_for(&key).shard, key)),
        None if !upsert && simple && is_exact_id(query) => Ok(Routed {
            shards: sorted(targeting::target_shards(pattern, chunks, query)),
            key: None,
            without_key: false,
            key_change: false,
        }),
        None if !upsert => Ok(Routed {
            shards: sorted(targeting::target_shards(pattern, chunks, query)),
            key: None,
            without_key: true,
            key_change: false,
        }),
        None if simple && is_exact_id(query) => {
            key_change(pattern, chunks, query, false, StmtError::new(61, "ShardKeyNotFound", ""))
        }
        None => Err(StmtError::new(
            61,
            "ShardKeyNotFound",
            format!(
                "Query for sharded findAndModify must contain the shard key. Query: {query}, shard key pattern: {}",
                pattern.to_document()
            ),
        )),
    }
}

/// A single-document update that may change the document's shard key:
/// run on its own (the document moves if its owner changes), on the shards
/// its filter reaches. A multi-document update, an upsert or a non-simple
/// collation keeps the refusal `e`.
fn key_change(
    pattern: &ShardKeyPattern,
    chunks: &ChunkMap,
    q: &Document,
    refused: bool,
    e: StmtError,
) -> Result<Routed, StmtError> {
    if refused {
        return Err(e);
    }
    Ok(Routed {
        shards: sorted(targeting::target_shards(pattern, chunks, q)),
        key: None,
        without_key: false,
        key_change: true,
    })
}

fn route_update(
    pattern: &ShardKeyPattern,
    chunks: &ChunkMap,
    q: &Document,
    u: &Bson,
    multi: bool,
    upsert: bool,
    simple: bool,
) -> Result<Routed, StmtError> {
    let query_key = simple.then(|| targeting::exact_key(pattern, q)).flatten();
    if let Err(e) = check_key_unchanged(pattern, q, u, query_key.as_ref()) {
        let refused = multi || !simple || upsert && !is_exact_id(q);
        return key_change(pattern, chunks, q, refused, e);
    }
    // A replacement whose filter does not pin the key may give the
    // document another key: it runs as a possible key change (found by
    // its filter, moved if its owner changes).
    let replacement = matches!(u, Bson::Document(r) if !is_operator_update(r));
    if replacement && query_key.is_none() && !multi && !upsert && simple {
        let e = StmtError::new(
            66,
            "ImmutableField",
            "a replacement may change the shard key",
        );
        return key_change(pattern, chunks, q, false, e);
    }
    let key = query_key;
    if let Some(key) = key {
        return Ok(Routed::one(&chunks.chunk_for(&key).shard, key));
    }
    if upsert && !multi && simple && is_exact_id(q) {
        // As mongos ≥ 7.0: found without the key, else inserted where its
        // key belongs (`write::key_update`).
        return key_change(
            pattern,
            chunks,
            q,
            false,
            StmtError::new(61, "ShardKeyNotFound", ""),
        );
    }
    if upsert {
        return Err(StmtError::new(
            61,
            "ShardKeyNotFound",
            format!(
                "An upsert on a sharded collection must contain the shard key and have the simple collation. Update request: {{ q: {q}, u: {u}, multi: {multi}, upsert: true }}, shard key pattern: {}",
                pattern.to_document()
            ),
        ));
    }
    route_by_query(pattern, chunks, q, simple, multi)
}

/// A statement targeted by its filter: a multi-document one goes to every
/// shard the filter can reach; a single-document one needs the full key or
/// an exact `_id`.
fn route_by_query(
    pattern: &ShardKeyPattern,
    chunks: &ChunkMap,
    q: &Document,
    simple: bool,
    multi: bool,
) -> Result<Routed, StmtError> {
    if simple {
        if let Some(key) = targeting::exact_key(pattern, q) {
            return Ok(Routed::one(&chunks.chunk_for(&key).shard, key));
        }
    }
    let without_key = !(multi || simple && is_exact_id(q));
    let targets = if simple {
        targeting::target(pattern, q)
    } else {
        Targets::All
    };
    let mut shards = sorted(targeting::shards_for(chunks, &targets));
    if shards.is_empty() {
        // Nothing can match; one shard still answers with the right shape.
        shards = chunks
            .shards()
            .into_iter()
            .take(1)
            .map(str::to_owned)
            .collect();
    }
    Ok(Routed {
        shards,
        key: None,
        without_key,
        key_change: false,
    })
}

fn sorted(set: std::collections::BTreeSet<String>) -> Vec<String> {
    set.into_iter().collect()
}

/// Whether an update document is operator style (`{$set: …}`).
pub fn is_operator_update(u: &Document) -> bool {
    u.keys().next().is_some_and(|k| k.starts_with('$'))
}

/// The value of an exact `_id` equality in `q`, as mongos's
/// `isExactIdQuery` accepts it: a plain value or `{$eq: value}` that is not
/// an array, a regex or an operator document.
fn exact_id(q: &Document) -> Option<&Bson> {
    let v = q.get("_id")?;
    let v = match v {
        Bson::Document(d) if d.len() == 1 && d.contains_key("$eq") => d.get("$eq")?,
        other => other,
    };
    match v {
        Bson::Array(_) | Bson::RegularExpression(_) | Bson::Undefined => None,
        Bson::Document(d) if d.keys().any(|k| k.starts_with('$')) => None,
        v => Some(v),
    }
}

/// Whether `q` is an exact `_id` match.
pub fn is_exact_id(q: &Document) -> bool {
    exact_id(q).is_some()
}

pub(crate) use crate::session::simple_collation;

fn sub_document(stmt: &RawDocument, field: &str) -> Result<Document, StmtError> {
    match stmt.get(field) {
        Ok(Some(RawBsonRef::Document(d))) => Document::try_from(d).map_err(bad_value),
        _ => Err(StmtError::new(
            9,
            "FailedToParse",
            format!("write statement needs a document '{field}'"),
        )),
    }
}

fn flag(stmt: &RawDocument, field: &str) -> bool {
    match stmt.get(field) {
        Ok(Some(RawBsonRef::Boolean(b))) => b,
        Ok(Some(v)) => number(v).is_some_and(|n| n != 0),
        _ => false,
    }
}

fn number(v: RawBsonRef<'_>) -> Option<i64> {
    match v {
        RawBsonRef::Int32(i) => Some(i64::from(i)),
        RawBsonRef::Int64(i) => Some(i),
        RawBsonRef::Double(d) => Some(d as i64),
        _ => None,
    }
}

fn bad_value(e: impl std::fmt::Display) -> StmtError {
    StmtError::new(2, "BadValue", e.to_string())
}

/// Statements for one shard, by their index in the client's batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The shard.
    pub shard: String,
    /// Client indexes, ascending.
    pub indexes: Vec<usize>,
    /// Their total size in bytes.
    pub bytes: usize,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send these batches at once (to different shards, or in turn to one).
    Send(Vec<Batch>),
    /// Ordered batches only: the statement at this index could not be
    /// routed; report it and stop.
    Fail(usize),
    /// The statement at this index runs on its own: a write without the
    /// shard key (two phases) or one that may change the shard key.
    Alone(usize),
}

/// Splits routed statements into steps. `sizes` are the statements' byte
/// sizes. Statements that failed to route are a `Fail` step when ordered,
/// and left out (the caller reports them) when unordered.
pub fn plan(routes: &[Result<Routed, StmtError>], sizes: &[usize], ordered: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if !ordered {
        let mut by_shard: BTreeMap<&str, Vec<Batch>> = BTreeMap::new();
        let mut without_key = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let Ok(route) = route else { continue };
            if route.without_key || route.key_change {
                without_key.push(Step::Alone(i));
                continue;
            }
            for shard in &route.shards {
                let batches = by_shard.entry(shard).or_default();
                push_limited(batches, shard, i, sizes);
            }
        }
        let batches: Vec<Batch> = by_shard.into_values().flatten().collect();
        if !batches.is_empty() {
            steps.push(Step::Send(batches));
        }
        steps.extend(without_key);
        return steps;
    }
    let mut run: Vec<Batch> = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let route = match route {
            Ok(r) => r,
            Err(_) => {
                if !run.is_empty() {
                    steps.push(Step::Send(std::mem::take(&mut run)));
                }
                steps.push(Step::Fail(i));
                return steps;
            }
        };
        if route.without_key || route.key_change {
            if !run.is_empty() {
                steps.push(Step::Send(std::mem::take(&mut run)));
            }
            steps.push(Step::Alone(i));
            continue;
        }
        if let [shard] = route.shards.as_slice() {
            let continues = run.last().is_some_and(|b| b.shard == *shard);
            if !continues && !run.is_empty() {
                steps.push(Step::Send(std::mem::take(&mut run)));
            }
            if push_limited(&mut run, shard, i, sizes) && run.len() > 1 {
                // The last batch overflowed into a new one: the full one goes
                // first, alone (the order within a shard is kept by steps).
                let next = run.pop().expect("two batches");
                steps.push(Step::Send(std::mem::take(&mut run)));
                run.push(next);
            }
        } else {
            if !run.is_empty() {
                steps.push(Step::Send(std::mem::take(&mut run)));
            }
            steps.push(Step::Send(
                route
                    .shards
                    .iter()
                    .map(|s| Batch {
                        shard: s.clone(),
                        indexes: vec![i],
                        bytes: sizes[i],
                    })
                    .collect(),
            ));
        }
    }
    if !run.is_empty() {
        steps.push(Step::Send(run));
    }
    steps
}

/// Appends statement `i` to the last batch in `batches` (all for `shard`),
/// or to a new one when the last is full. True when a new batch began.
fn push_limited(batches: &mut Vec<Batch>, shard: &str, i: usize, sizes: &[usize]) -> bool {
    if let Some(last) = batches.last_mut() {
        if last.indexes.len() < MAX_BATCH_COUNT && last.bytes + sizes[i] <= MAX_BATCH_BYTES {
            last.indexes.push(i);
            last.bytes += sizes[i];
            return false;
        }
    }
    batches.push(Batch {
        shard: shard.to_owned(),
        indexes: vec![i],
        bytes: sizes[i],
    });
    true
}

#[cfg(test)]
mod tests;
