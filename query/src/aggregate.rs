//! Aggregation pipelines over in-memory documents.

mod group;
mod summation;
mod unwind;

use bson::{Bson, Document};

use super::expr::Expr;
use super::filter::Filter;
use super::number::{as_num, compare_nums, truncate, Num};
use super::path::parse_field_path;
use super::projection::Projection;
use super::sort::SortSpec;
use super::QueryError;

/// Stages MongoDB knows that this engine does not implement.
const UNSUPPORTED_STAGES: &[&str] = &[
    "$bucket",
    "$bucketAuto",
    "$changeStream",
    "$changeStreamSplitLargeEvent",
    "$collStats",
    "$currentOp",
    "$densify",
    "$documents",
    "$facet",
    "$fill",
    "$geoNear",
    "$graphLookup",
    "$indexStats",
    "$listClusterCatalog",
    "$listLocalSessions",
    "$listSampledQueries",
    "$listSearchIndexes",
    "$listSessions",
    "$lookup",
    "$merge",
    "$out",
    "$planCacheStats",
    "$querySettings",
    "$rankFusion",
    "$redact",
    "$sample",
    "$score",
    "$scoreFusion",
    "$search",
    "$searchMeta",
    "$setWindowFields",
    "$shardedDataDistribution",
    "$sortByCount",
    "$unionWith",
    "$vectorSearch",
];

/// One parsed pipeline stage.
#[derive(Debug, Clone)]
enum Stage {
    Match(Filter),
    Project(Projection),
    Sort(SortSpec),
    Skip(u64),
    Limit(u64),
    Count(String),
    Group(group::GroupSpec),
    Unwind(unwind::UnwindSpec),
    ReplaceRoot(Expr),
}

/// Runs an aggregation pipeline over `docs`. The whole pipeline is parsed
/// before any stage runs. Supported stages: `$match`, `$project`,
/// `$addFields`, `$set`, `$unset`, `$group`, `$sort`, `$skip`, `$limit`,
/// `$count`, `$unwind`, `$replaceRoot` and `$replaceWith`. An unknown stage
/// fails with 40324 (`Unrecognized pipeline stage name: '$x'`); a real
/// MongoDB stage this engine lacks fails with `Unsupported`.
pub fn aggregate(docs: Vec<Document>, pipeline: &[Document]) -> Result<Vec<Document>, QueryError> {
    let stages = pipeline
        .iter()
        .map(parse_stage)
        .collect::<Result<Vec<_>, _>>()?;
    let mut docs = docs;
    for stage in &stages {
        docs = run_stage(stage, docs)?;
    }
    Ok(docs)
}

/// Whether this engine can run `pipeline`: it parses every stage as
/// [`aggregate`] would, and fails with the same error. (A few values are
/// only refused while running, such as a Decimal128 `$sum`.)
pub fn check_pipeline(pipeline: &[Document]) -> Result<(), QueryError> {
    pipeline.iter().try_for_each(|s| parse_stage(s).map(|_| ()))
}

fn run_stage(stage: &Stage, docs: Vec<Document>) -> Result<Vec<Document>, QueryError> {
    Ok(match stage {
        Stage::Match(f) => docs.into_iter().filter(|d| f.matches(d)).collect(),
        Stage::Project(p) => docs.iter().map(|d| p.apply(d)).collect::<Result<_, _>>()?,
        Stage::Sort(s) => {
            let mut docs = docs;
            s.sort(&mut docs)?;
            docs
        }
        Stage::Skip(n) => docs
            .into_iter()
            .skip(usize::try_from(*n).unwrap_or(usize::MAX))
            .collect(),
        Stage::Limit(n) => docs
            .into_iter()
            .take(usize::try_from(*n).unwrap_or(usize::MAX))
            .collect(),
        Stage::Count(name) => {
            if docs.is_empty() {
                Vec::new()
            } else {
                let n = docs.len();
                let v = match i32::try_from(n) {
                    Ok(i) => Bson::Int32(i),
                    Err(_) => Bson::Int64(i64::try_from(n).unwrap_or(i64::MAX)),
                };
                let mut out = Document::new();
                out.insert(name.clone(), v);
                vec![out]
            }
        }
        Stage::Group(g) => g.run(docs)?,
        Stage::Unwind(u) => u.run(docs),
        Stage::ReplaceRoot(e) => docs
            .iter()
            .map(|d| replace_root(e, d))
            .collect::<Result<_, _>>()?,
    })
}

fn replace_root(e: &Expr, doc: &Document) -> Result<Document, QueryError> {
    match e.eval(doc) {
        Some(Bson::Document(d)) => Ok(d),
        other => {
            let (value, ty) = match &other {
                None => ("MISSING".to_owned(), "missing"),
                Some(v) => (v.to_string(), type_name(v)),
            };
            Err(location!(
                40228,
                "'newRoot' expression must evaluate to an object, but resulting value was: \
                 {value}. Type of resulting value: '{ty}'. Input document: {doc}"
            ))
        }
    }
}

fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Boolean(_) => "bool",
        Bson::Null => "null",
        Bson::Int32(_) => "int",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::ObjectId(_) => "objectId",
        Bson::DateTime(_) => "date",
        _ => "other",
    }
}

fn parse_stage(spec: &Document) -> Result<Stage, QueryError> {
    let (name, value) = match spec.iter().next() {
        Some(pair) if spec.len() == 1 => pair,
        _ => {
            return Err(location!(
                40323,
                "A pipeline stage specification object must contain exactly one field."
            ))
        }
    };
    let object = |code_msg: fn(&Bson) -> QueryError| match value {
        Bson::Document(d) => Ok(d),
        other => Err(code_msg(other)),
    };
    Ok(match name.as_str() {
        "$match" => Stage::Match(Filter::parse(object(|_| {
            location!(15959, "the match filter must be an expression in an object")
        })?)?),
        "$project" => Stage::Project(Projection::parse_project(object(|_| {
            location!(15969, "$project specification must be an object")
        })?)?),
        "$addFields" | "$set" => match value {
            Bson::Document(d) => Stage::Project(Projection::parse_add_fields(d)?),
            other => {
                return Err(location!(
                    40272,
                    "{name} specification stage must be an object, got {}",
                    type_name(other)
                ))
            }
        },
        "$unset" => Stage::Project(parse_unset(value)?),
        "$group" => Stage::Group(group::GroupSpec::parse(object(|_| {
            location!(15947, "a group's fields must be specified in an object")
        })?)?),
        "$sort" => {
            let spec =
                object(|_| location!(15973, "the $sort key specification must be an object"))?;
            let sort = SortSpec::parse(spec)?;
            if sort.is_empty() {
                return Err(location!(
                    15976,
                    "$sort stage must have at least one sort key"
                ));
            }
            Stage::Sort(sort)
        }
        "$skip" => Stage::Skip(parse_non_negative(value, "$skip", 5107200)?),
        "$limit" => {
            let n = parse_non_negative(value, "$limit", 5107201)?;
            if n == 0 {
                return Err(location!(15958, "the limit must be positive"));
            }
            Stage::Limit(n)
        }
        "$count" => Stage::Count(parse_count(value)?),
        "$unwind" => Stage::Unwind(unwind::UnwindSpec::parse(value)?),
        "$replaceRoot" => Stage::ReplaceRoot(parse_replace_root(value)?),
        "$replaceWith" => Stage::ReplaceRoot(Expr::parse(value, 1)?),
        other if UNSUPPORTED_STAGES.contains(&other) => {
            return Err(QueryError::not_implemented(format!("the {other} stage")))
        }
        other => {
            return Err(location!(
                40324,
                "Unrecognized pipeline stage name: '{other}'"
            ));
        }
    })
}

fn parse_unset(value: &Bson) -> Result<Projection, QueryError> {
    let paths: Vec<String> = match value {
        Bson::String(s) => vec![s.clone()],
        Bson::Array(items) if items.is_empty() => {
            return Err(location!(
                31119,
                "$unset specification must be a string or an array with at least one field"
            ))
        }
        Bson::Array(items) => items
            .iter()
            .map(|i| match i {
                Bson::String(s) => Ok(s.clone()),
                _ => Err(location!(
                    31120,
                    "$unset specification must be a string or an array containing only string \
                     values"
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(location!(
                31002,
                "$unset specification must be a string or an array"
            ))
        }
    };
    for p in &paths {
        parse_field_path(p)?;
    }
    Projection::exclusion_of(&paths)
}

/// A whole, non-negative number (`$skip`, `$limit`).
fn parse_non_negative(value: &Bson, stage: &str, code: i32) -> Result<u64, QueryError> {
    let err = |why: &str| QueryError::Location {
        code,
        code_name: if code == 5107200 {
            "Location5107200"
        } else {
            "Location5107201"
        },
        message: format!("invalid argument to {stage} stage: {why}: {stage}: {value}"),
    };
    let n = as_num(value).ok_or_else(|| err("Expected a number"))?;
    let t = truncate(&n).ok_or_else(|| err("Cannot represent as a 64-bit integer"))?;
    if compare_nums(&n, &Num::Int(t)) != std::cmp::Ordering::Equal {
        return Err(err("Expected an integer"));
    }
    u64::try_from(t).map_err(|_| err("Expected a non-negative number in"))
}

fn parse_count(value: &Bson) -> Result<String, QueryError> {
    let Bson::String(name) = value else {
        return Err(location!(
            40156,
            "the count field must be a non-empty string"
        ));
    };
    if name.is_empty() {
        return Err(location!(
            40157,
            "the count field must be a non-empty string"
        ));
    }
    if name.starts_with('$') {
        return Err(location!(
            40158,
            "the count field cannot be a $-prefixed path"
        ));
    }
    if name.contains('\0') {
        return Err(location!(
            40159,
            "the count field cannot contain a null byte"
        ));
    }
    if name.contains('.') {
        return Err(location!(40160, "the count field cannot contain '.'"));
    }
    Ok(name.clone())
}

fn parse_replace_root(value: &Bson) -> Result<Expr, QueryError> {
    let Bson::Document(d) = value else {
        return Err(location!(
            40229,
            "expected an object as specification for $replaceRoot stage"
        ));
    };
    let mut new_root = None;
    for (key, v) in d {
        if key == "newRoot" {
            new_root = Some(Expr::parse(v, 1)?);
        } else {
            return Err(location!(
                40415,
                "BSON field '$replaceRoot.{key}' is an unknown field."
            ));
        }
    }
    new_root.ok_or_else(|| location!(40231, "no newRoot specified for the $replaceRoot stage"))
}
