//! Match expressions (`find` filters and `$match`).

mod args;
mod eval;
mod leaf;

use bson::{Bson, Document};

use super::regex::MongoRegex;
use super::{check_depth, QueryError};

/// A parsed query filter, such as `{state: {$eq: 2}, "details.note":
/// "success"}`, evaluated with MongoDB's semantics: a condition on a field
/// holding an array holds when it holds for the array or any of its elements;
/// `null` matches missing fields; comparisons are type-bracketed (`$gt: 5`
/// never matches a string).
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
}

/// A node of the match-expression tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Nor(Vec<Node>),
    Not(Box<Node>),
    Const(bool),
    /// A predicate on the values at a path; with no path (inside a value
    /// `$elemMatch`) it applies to the element being tested.
    Leaf {
        path: Option<Vec<String>>,
        pred: Pred,
    },
}

/// A predicate on one value (`None` = missing).
#[derive(Debug, Clone)]
pub(crate) enum Pred {
    Cmp(CmpOp, Bson),
    In(Vec<Bson>, Vec<MongoRegex>),
    Exists,
    Regex(Box<MongoRegex>),
    Type(Vec<i32>),
    Size(i64),
    Mod(i64, i64),
    ElemMatchObject(Box<Node>),
    ElemMatchValue(Box<Node>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Filter {
    /// Parses a filter document. Unknown operators fail with `BadValue`
    /// (`unknown top level operator: $foo`, `unknown operator: $foo`); real
    /// MongoDB operators this engine lacks (`$expr`, `$where`, `$text`,
    /// geospatial and bitwise operators, …) fail with `Unsupported`.
    pub fn parse(filter: &Document) -> Result<Filter, QueryError> {
        Ok(Filter {
            root: parse_document(filter, 0)?,
        })
    }

    /// Whether `doc` matches the filter.
    pub fn matches(&self, doc: &Document) -> bool {
        self.root.matches_doc(doc)
    }
}

/// Builds an AND of `nodes`, collapsing the single-node case.
fn and_of(mut nodes: Vec<Node>) -> Node {
    if nodes.len() == 1 {
        if let Some(n) = nodes.pop() {
            return n;
        }
    }
    Node::And(nodes)
}

/// Parses a whole filter document (top level, or a `$and`/`$or`/`$nor`
/// entry, or an object `$elemMatch`).
pub(crate) fn parse_document(doc: &Document, depth: usize) -> Result<Node, QueryError> {
    check_depth(depth)?;
    let mut nodes = Vec::with_capacity(doc.len());
    for (key, value) in doc {
        if let Some(op) = key.strip_prefix('$') {
            if let Some(node) = parse_top_level(op, value, depth)? {
                nodes.push(node);
            }
        } else {
            nodes.push(parse_field(key, value, depth)?);
        }
    }
    Ok(and_of(nodes))
}

fn parse_top_level(op: &str, value: &Bson, depth: usize) -> Result<Option<Node>, QueryError> {
    let node = match op {
        "and" => Node::And(parse_logical_list(op, value, depth)?),
        "or" => Node::Or(parse_logical_list(op, value, depth)?),
        "nor" => Node::Nor(parse_logical_list(op, value, depth)?),
        "comment" => return Ok(None),
        "alwaysTrue" | "alwaysFalse" => {
            use super::number::{as_num, Num};
            if !matches!(as_num(value), Some(Num::Int(1))) {
                return Err(QueryError::FailedToParse(format!(
                    "${op} must be an integer value of 1"
                )));
            }
            Node::Const(op == "alwaysTrue")
        }
        "expr" | "where" | "text" | "jsonSchema" | "sampleRate" | "atlasSearch" => {
            return Err(QueryError::not_implemented(format!(
                "the ${op} query operator"
            )))
        }
        _ => {
            return Err(QueryError::BadValue(format!(
                "unknown top level operator: ${op}. If you have a field name that starts with a \
                 '$' symbol, consider using $getField or $setField."
            )))
        }
    };
    Ok(Some(node))
}

fn parse_logical_list(op: &str, value: &Bson, depth: usize) -> Result<Vec<Node>, QueryError> {
    let Bson::Array(items) = value else {
        return Err(QueryError::BadValue(format!("${op} must be an array")));
    };
    if items.is_empty() {
        return Err(QueryError::BadValue(
            "$and/$or/$nor must be a nonempty array".to_owned(),
        ));
    }
    items
        .iter()
        .map(|item| match item {
            Bson::Document(d) => parse_document(d, depth + 1),
            _ => Err(QueryError::BadValue(
                "$or/$and/$nor entries need to be full objects".to_owned(),
            )),
        })
        .collect()
}

/// Parses `{path: value}`: an operator document, a regex, or implicit
/// equality.
fn parse_field(path: &str, value: &Bson, depth: usize) -> Result<Node, QueryError> {
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    match value {
        Bson::Document(ops) if is_operator_document(ops) => {
            leaf::parse_operators(Some(&parts), ops, depth + 1)
        }
        Bson::RegularExpression(r) => Ok(Node::Leaf {
            path: Some(parts),
            pred: Pred::Regex(Box::new(MongoRegex::new(
                r.pattern.as_str(),
                r.options.as_str(),
            )?)),
        }),
        other => Ok(Node::Leaf {
            path: Some(parts),
            pred: leaf::equality(other)?,
        }),
    }
}

/// Whether an object in a filter is an operator document (its first field
/// starts with `$`) rather than a literal to compare with.
pub(crate) fn is_operator_document(doc: &Document) -> bool {
    doc.keys().next().is_some_and(|k| k.starts_with('$'))
}
