//! shardgate's document engine over [`bson::Document`] values: what the
//! router merges shard results with. Pure; no I/O.
//!
//! The router uses it to answer reads of the virtual `config` database
//! (`config.shards`, `config.chunks`, `config.collections`, …) that
//! `sh.status()` issues, and to post-process documents gathered from shards.
//! It implements MongoDB semantics for the subset it supports and returns a
//! [`QueryError`] (never a wrong answer) for anything else.
//!
//! # Supported
//! - [`compare_bson`]: MongoDB's BSON comparison order, numbers compared by
//!   exact value across int32, int64, double and Decimal128.
//! - [`Filter`]: implicit equality, `$eq $ne $gt $gte $lt $lte $in $nin
//!   $all $exists $type $size $mod $regex/$options $elemMatch $not $and $or
//!   $nor $comment $alwaysTrue $alwaysFalse`, with MongoDB's array traversal
//!   and type bracketing.
//! - [`sort_documents`], [`project`] (inclusion, exclusion, `_id` rules,
//!   dotted paths, aggregation expressions) and [`find`].
//! - [`aggregate`]: `$match $project $addFields $set $unset $group $sort
//!   $skip $limit $count $unwind $replaceRoot $replaceWith`.
//! - Expressions: field paths, `$$ROOT`, `$$CURRENT`, `$$REMOVE`, literals,
//!   object and array literals, `$literal $ifNull $cond $eq $ne $gt $gte $lt
//!   $lte $cmp $and $or $not`.
//! - Accumulators: `$sum $avg $min $max $first $last $push $addToSet $count`.
//!
//! # Layout
//! - `compare`: BSON comparison order; `number`: numeric values across
//!   types; `path`: dotted paths and array traversal.
//! - `filter`: match expressions (`args`, `leaf`, `eval`); `regex`:
//!   PCRE-style patterns over the `regex` crate.
//! - `expr`: aggregation expressions (`names`: MongoDB's operator names).
//! - `projection`: find projections, `$project`, `$addFields`, `$unset`.
//! - `sort`: sort specifications; `aggregate`: the pipeline stages
//!   (`group`, `summation`, `unwind`).
//! - `tests`: the engine's unit tests, by area.
//!
//! # Not supported ([`QueryError::Unsupported`])
//! The engine is the router's: what it lacks is never a client's answer.
//! Every caller then runs the work on a shard, whose answer is the
//! server's own. Unsupported are: other real MongoDB stages, expressions, accumulators and query operators,
//! `$sum`/`$avg` over Decimal128 values, find-only projection operators
//! (`$slice`, `$elemMatch`, `$meta`, positional `.$`), collations, and
//! regular-expression features the `regex` crate cannot express the way PCRE
//! does (backreferences, look-around, `\v`, …).

use bson::Document;

/// Builds a [`QueryError::Location`] for a numbered MongoDB assertion whose
/// code name is `Location<code>`.
macro_rules! location {
    ($code:literal, $($arg:tt)+) => {
        $crate::QueryError::Location {
            code: $code,
            code_name: concat!("Location", $code),
            message: format!($($arg)+),
        }
    };
}

mod aggregate;
mod compare;
mod expr;
mod filter;
mod number;
mod path;
mod projection;
mod regex;
mod sort;
#[cfg(test)]
mod tests;

pub use aggregate::{aggregate, check_pipeline};
pub use compare::{canonical_type, compare_bson};
pub use filter::Filter;
pub use path::get_path;
pub use sort::{sort_documents, sort_key};

/// The deepest nesting of filters, expressions, projections and pipelines
/// (and of arrays traversed while applying them) that the engine accepts.
pub const MAX_DEPTH: usize = 100;

/// Why a query could not be answered. Each variant maps to the error code and
/// code name MongoDB reports for the same input (see [`QueryError::code`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// An invalid argument (MongoDB code 2, `BadValue`).
    #[error("{0}")]
    BadValue(String),
    /// A malformed specification (MongoDB code 9, `FailedToParse`).
    #[error("{0}")]
    FailedToParse(String),
    /// A value of the wrong type (MongoDB code 14, `TypeMismatch`).
    #[error("{0}")]
    TypeMismatch(String),
    /// An unknown aggregation expression (MongoDB code 168,
    /// `InvalidPipelineOperator`).
    #[error("{0}")]
    InvalidPipelineOperator(String),
    /// A real MongoDB feature this engine does not implement; the message
    /// names the feature. Callers run the work on a shard instead
    /// ([`QueryError::is_unsupported`]); should one pass it on, it is an
    /// InternalError (1), the router's, never a refusal mongos would give.
    #[error("{0}")]
    Unsupported(String),
    /// An error MongoDB reports through a numbered assertion; its code name
    /// is `Location<code>`.
    #[error("{message}")]
    Location {
        /// The MongoDB error code.
        code: i32,
        /// The code name, `Location<code>`.
        code_name: &'static str,
        /// The message, as MongoDB words it.
        message: String,
    },
}

impl QueryError {
    /// The MongoDB error code and code name to reply with.
    pub fn code(&self) -> (i32, &'static str) {
        match self {
            QueryError::BadValue(_) => (2, "BadValue"),
            QueryError::FailedToParse(_) => (9, "FailedToParse"),
            QueryError::TypeMismatch(_) => (14, "TypeMismatch"),
            QueryError::InvalidPipelineOperator(_) => (168, "InvalidPipelineOperator"),
            QueryError::Unsupported(_) => (1, "InternalError"),
            QueryError::Location {
                code, code_name, ..
            } => (*code, code_name),
        }
    }

    /// Whether the engine lacks the feature (a shard can run it).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, QueryError::Unsupported(_))
    }

    pub(crate) fn not_implemented(what: impl std::fmt::Display) -> QueryError {
        QueryError::Unsupported(format!(
            "{what} is not supported by shardgate's query engine"
        ))
    }
}

/// Returns an error when `depth` exceeds [`MAX_DEPTH`].
pub(crate) fn check_depth(depth: usize) -> Result<(), QueryError> {
    if depth > MAX_DEPTH {
        return Err(QueryError::BadValue(format!(
            "exceeded maximum query tree depth of {MAX_DEPTH}"
        )));
    }
    Ok(())
}

/// Applies a find-style projection to one document: inclusion (`{a: 1}`) or
/// exclusion (`{a: 0}`) of dotted paths, `_id` included unless `_id: 0`, and
/// aggregation expressions as computed fields. An empty projection returns
/// the document unchanged. Mixing inclusion and exclusion fails with 31254 /
/// 31253 as MongoDB does; `$slice`, `$elemMatch`, `$meta` and positional
/// (`a.$`) projections fail with `Unsupported`.
pub fn project(doc: &Document, projection: &Document) -> Result<Document, QueryError> {
    projection::Projection::parse_find(projection)?.apply(doc)
}

/// Runs a find over `docs`: filter, then sort, then skip, then limit, then
/// projection, as a MongoDB `find` command does. `limit` 0 means no limit; a
/// negative limit is taken by its absolute value.
pub fn find(
    docs: Vec<Document>,
    filter: &Document,
    sort: Option<&Document>,
    projection: Option<&Document>,
    skip: u64,
    limit: i64,
) -> Result<Vec<Document>, QueryError> {
    let filter = Filter::parse(filter)?;
    let sort = match sort {
        Some(spec) if !spec.is_empty() => Some(sort::SortSpec::parse(spec)?),
        _ => None,
    };
    let projection = match projection {
        Some(spec) => Some(projection::Projection::parse_find(spec)?),
        None => None,
    };
    let mut out: Vec<Document> = docs.into_iter().filter(|d| filter.matches(d)).collect();
    if let Some(sort) = &sort {
        sort.sort(&mut out)?;
    }
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    let limit = usize::try_from(limit.unsigned_abs()).unwrap_or(usize::MAX);
    let take = if limit == 0 { usize::MAX } else { limit };
    let selected = out.into_iter().skip(skip).take(take);
    match projection {
        Some(p) => selected.map(|d| p.apply(&d)).collect(),
        None => Ok(selected.collect()),
    }
}
