//! Parsing of field operators (`{$gt: 1, $lt: 5}`, `$in`, `$regex`, …).

use bson::{Bson, Document};

use super::args::{parse_mod, parse_size, parse_types, truthy};
use super::{and_of, is_operator_document, parse_document, CmpOp, Node, Pred};
use crate::regex::MongoRegex;
use crate::{check_depth, QueryError};

/// Operators MongoDB knows that this engine does not implement.
const UNSUPPORTED_OPERATORS: &[&str] = &[
    "bitsAllSet",
    "bitsAllClear",
    "bitsAnySet",
    "bitsAnyClear",
    "geoWithin",
    "geoIntersects",
    "near",
    "nearSphere",
    "within",
    "geometry",
    "maxDistance",
    "minDistance",
    "box",
    "center",
    "centerSphere",
    "polygon",
    "uniqueDocs",
];

fn leaf(path: Option<&[String]>, pred: Pred) -> Node {
    Node::Leaf {
        path: path.map(<[String]>::to_vec),
        pred,
    }
}

/// The predicate for implicit or `$eq` equality with `value`.
pub(super) fn equality(value: &Bson) -> Result<Pred, QueryError> {
    if matches!(value, Bson::Undefined) {
        return Err(QueryError::BadValue(
            "cannot compare to undefined".to_owned(),
        ));
    }
    Ok(Pred::Cmp(CmpOp::Eq, value.clone()))
}

/// Parses an operator document applied to `path` (or to the element being
/// tested, inside a value `$elemMatch`): each operator is a separate
/// condition, all of which must hold.
pub(super) fn parse_operators(
    path: Option<&[String]>,
    ops: &Document,
    depth: usize,
) -> Result<Node, QueryError> {
    check_depth(depth)?;
    let mut nodes = Vec::with_capacity(ops.len());
    let regex = parse_regex_pair(ops)?;
    if let Some(r) = regex {
        nodes.push(leaf(path, Pred::Regex(Box::new(r))));
    }
    for (key, value) in ops {
        let Some(op) = key.strip_prefix('$') else {
            return Err(QueryError::BadValue(format!("unknown operator: {key}")));
        };
        if op == "regex" || op == "options" {
            continue;
        }
        nodes.push(parse_operator(path, op, value, depth)?);
    }
    Ok(and_of(nodes))
}

/// `$regex` with optional `$options` (or a BSON regex value).
fn parse_regex_pair(ops: &Document) -> Result<Option<MongoRegex>, QueryError> {
    let options = match ops.get("$options") {
        None => None,
        Some(Bson::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(QueryError::BadValue(
                "$options has to be a string".to_owned(),
            ))
        }
    };
    match ops.get("$regex") {
        None if options.is_some() => {
            Err(QueryError::BadValue("$options needs a $regex".to_owned()))
        }
        None => Ok(None),
        Some(Bson::String(p)) | Some(Bson::Symbol(p)) => {
            Ok(Some(MongoRegex::new(p, options.unwrap_or(""))?))
        }
        Some(Bson::RegularExpression(r)) => {
            if options.is_some() && !r.options.as_str().is_empty() {
                return Err(location!(51075, "options set in both $regex and $options"));
            }
            let opts = options.unwrap_or(r.options.as_str());
            Ok(Some(MongoRegex::new(r.pattern.as_str(), opts)?))
        }
        Some(_) => Err(QueryError::BadValue("$regex has to be a string".to_owned())),
    }
}

fn parse_operator(
    path: Option<&[String]>,
    op: &str,
    value: &Bson,
    depth: usize,
) -> Result<Node, QueryError> {
    let cmp = |o: CmpOp| -> Result<Node, QueryError> {
        if matches!(value, Bson::Undefined) {
            return Err(QueryError::BadValue(
                "cannot compare to undefined".to_owned(),
            ));
        }
        Ok(leaf(path, Pred::Cmp(o, value.clone())))
    };
    match op {
        "eq" => Ok(leaf(path, equality(value)?)),
        "ne" => {
            if matches!(value, Bson::RegularExpression(_)) {
                return Err(QueryError::BadValue(
                    "Can't have regex as arg to $ne.".to_owned(),
                ));
            }
            Ok(Node::Not(Box::new(leaf(path, equality(value)?))))
        }
        "lt" => cmp(CmpOp::Lt),
        "lte" => cmp(CmpOp::Lte),
        "gt" => cmp(CmpOp::Gt),
        "gte" => cmp(CmpOp::Gte),
        "in" => Ok(leaf(path, parse_in(value, "$in")?)),
        "nin" => Ok(Node::Not(Box::new(leaf(path, parse_in(value, "$nin")?)))),
        "exists" => {
            let node = leaf(path, Pred::Exists);
            Ok(if truthy(value) {
                node
            } else {
                Node::Not(Box::new(node))
            })
        }
        "not" => parse_not(path, value, depth),
        "all" => parse_all(path, value),
        "size" => Ok(leaf(path, Pred::Size(parse_size(value)?))),
        "type" => Ok(leaf(path, Pred::Type(parse_types(value)?))),
        "mod" => {
            let (d, r) = parse_mod(value)?;
            Ok(leaf(path, Pred::Mod(d, r)))
        }
        "elemMatch" => parse_elem_match(path, value, depth),
        _ if UNSUPPORTED_OPERATORS.contains(&op) => Err(QueryError::not_implemented(format!(
            "the ${op} query operator"
        ))),
        _ => Err(QueryError::BadValue(format!("unknown operator: ${op}"))),
    }
}

fn parse_in(value: &Bson, name: &str) -> Result<Pred, QueryError> {
    let Bson::Array(items) = value else {
        return Err(QueryError::BadValue(format!("{name} needs an array")));
    };
    let mut values = Vec::new();
    let mut regexes = Vec::new();
    for item in items {
        match item {
            Bson::RegularExpression(r) => {
                regexes.push(MongoRegex::new(r.pattern.as_str(), r.options.as_str())?)
            }
            Bson::Document(d) if is_operator_document(d) => {
                return Err(QueryError::BadValue("cannot nest $ under $in".to_owned()))
            }
            Bson::Undefined => {
                return Err(QueryError::BadValue(
                    "InMatchExpression equality cannot be undefined".to_owned(),
                ))
            }
            other => values.push(other.clone()),
        }
    }
    Ok(Pred::In(values, regexes))
}

fn parse_not(path: Option<&[String]>, value: &Bson, depth: usize) -> Result<Node, QueryError> {
    let inner = match value {
        Bson::RegularExpression(r) => leaf(
            path,
            Pred::Regex(Box::new(MongoRegex::new(
                r.pattern.as_str(),
                r.options.as_str(),
            )?)),
        ),
        Bson::Document(d) if d.is_empty() => {
            return Err(QueryError::BadValue("$not cannot be empty".to_owned()))
        }
        Bson::Document(d) => parse_operators(path, d, depth + 1)?,
        _ => {
            return Err(QueryError::BadValue(
                "$not needs a regex or a document".to_owned(),
            ))
        }
    };
    Ok(Node::Not(Box::new(inner)))
}

fn parse_all(path: Option<&[String]>, value: &Bson) -> Result<Node, QueryError> {
    let Bson::Array(items) = value else {
        return Err(QueryError::BadValue("$all needs an array".to_owned()));
    };
    if items.is_empty() {
        return Ok(Node::Const(false));
    }
    let mut nodes = Vec::with_capacity(items.len());
    for item in items {
        let pred = match item {
            Bson::RegularExpression(r) => Pred::Regex(Box::new(MongoRegex::new(
                r.pattern.as_str(),
                r.options.as_str(),
            )?)),
            Bson::Document(d) if is_operator_document(d) => {
                return Err(QueryError::not_implemented(
                    "$all with $elemMatch or operators",
                ))
            }
            other => equality(other)?,
        };
        nodes.push(leaf(path, pred));
    }
    Ok(Node::And(nodes))
}

fn parse_elem_match(
    path: Option<&[String]>,
    value: &Bson,
    depth: usize,
) -> Result<Node, QueryError> {
    let Bson::Document(spec) = value else {
        return Err(QueryError::BadValue(
            "$elemMatch needs an Object".to_owned(),
        ));
    };
    let first_is_value_operator = spec.keys().next().is_some_and(|k| {
        k.starts_with('$')
            && !matches!(
                k.as_str(),
                "$and"
                    | "$or"
                    | "$nor"
                    | "$where"
                    | "$expr"
                    | "$text"
                    | "$comment"
                    | "$alwaysTrue"
                    | "$alwaysFalse"
                    | "$jsonSchema"
                    | "$sampleRate"
            )
    });
    let pred = if first_is_value_operator {
        Pred::ElemMatchValue(Box::new(parse_operators(None, spec, depth + 1)?))
    } else {
        Pred::ElemMatchObject(Box::new(parse_document(spec, depth + 1)?))
    };
    Ok(leaf(path, pred))
}
