//! Evaluation of match expressions.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::{CmpOp, Node, Pred};
use crate::compare::{canonical_rank, compare_bson};
use crate::number::{as_num, truncate, Num};
use crate::path::any_value;

/// What a node is evaluated against: a document, or (inside a value
/// `$elemMatch`) one array element.
#[derive(Clone, Copy)]
enum Target<'a> {
    Doc(&'a Document),
    Value(&'a Bson),
}

impl Node {
    /// Whether `doc` matches.
    pub(crate) fn matches_doc(&self, doc: &Document) -> bool {
        self.eval(Target::Doc(doc))
    }

    fn eval(&self, target: Target<'_>) -> bool {
        match self {
            Node::And(nodes) => nodes.iter().all(|n| n.eval(target)),
            Node::Or(nodes) => nodes.iter().any(|n| n.eval(target)),
            Node::Nor(nodes) => !nodes.iter().any(|n| n.eval(target)),
            Node::Not(node) => !node.eval(target),
            Node::Const(b) => *b,
            Node::Leaf { path, pred } => match (path, target) {
                (Some(path), Target::Doc(doc)) => {
                    any_value(doc, path, pred.expands_leaf_arrays(), &mut |v| pred.test(v))
                }
                (None, Target::Value(v)) => pred.test(Some(v)),
                // A path-less leaf only appears under a value $elemMatch, and
                // a path leaf only under a document; other pairs cannot occur.
                _ => false,
            },
        }
    }
}

impl Pred {
    /// Whether an array at the end of the path is also tested element by
    /// element (all but `$size` and `$elemMatch`).
    fn expands_leaf_arrays(&self) -> bool {
        !matches!(
            self,
            Pred::Size(_) | Pred::ElemMatchObject(_) | Pred::ElemMatchValue(_)
        )
    }

    /// Whether one value (`None` = missing) satisfies the predicate.
    fn test(&self, v: Option<&Bson>) -> bool {
        match self {
            Pred::Cmp(op, rhs) => compare_matches(*op, v, rhs),
            Pred::In(values, regexes) => {
                values.iter().any(|rhs| compare_matches(CmpOp::Eq, v, rhs))
                    || v.is_some_and(|v| regexes.iter().any(|r| regex_matches(r, v)))
            }
            Pred::Exists => v.is_some(),
            Pred::Regex(r) => v.is_some_and(|v| regex_matches(r, v)),
            Pred::Type(codes) => v.is_some_and(|v| codes.contains(&type_code(v))),
            Pred::Size(n) => matches!(v, Some(Bson::Array(a)) if i64::try_from(a.len()) == Ok(*n)),
            Pred::Mod(d, r) => v.is_some_and(|v| mod_matches(v, *d, *r)),
            Pred::ElemMatchObject(node) => match v {
                Some(Bson::Array(items)) => items.iter().any(|item| match item {
                    Bson::Document(d) => node.eval(Target::Doc(d)),
                    Bson::Array(inner) => node.eval(Target::Doc(&array_as_document(inner))),
                    _ => false,
                }),
                _ => false,
            },
            Pred::ElemMatchValue(node) => match v {
                Some(Bson::Array(items)) => items.iter().any(|item| node.eval(Target::Value(item))),
                _ => false,
            },
        }
    }
}

fn array_as_document(items: &[Bson]) -> Document {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| (i.to_string(), v.clone()))
        .collect()
}

fn regex_matches(r: &crate::regex::MongoRegex, v: &Bson) -> bool {
    match v {
        Bson::String(s) | Bson::Symbol(s) => r.is_match(s),
        Bson::RegularExpression(x) => r.same_as(x),
        _ => false,
    }
}

/// `ComparisonMatchExpression::matchesSingleElement`: type-bracketed, with
/// MongoDB's exceptions for null/missing, MinKey/MaxKey and NaN.
fn compare_matches(op: CmpOp, v: Option<&Bson>, rhs: &Bson) -> bool {
    let (lr, rr) = (canonical_rank(v), canonical_rank(Some(rhs)));
    if lr != rr {
        // `null` matches missing values for $eq, $lte and $gte.
        if matches!(rhs, Bson::Null) && v.is_none() {
            return matches!(op, CmpOp::Eq | CmpOp::Lte | CmpOp::Gte);
        }
        return match rhs {
            Bson::MaxKey => matches!(op, CmpOp::Lt | CmpOp::Lte),
            Bson::MinKey => matches!(op, CmpOp::Gt | CmpOp::Gte),
            _ => false,
        };
    }
    let Some(v) = v else { return false };
    if let (Some(a), Some(b)) = (as_num(v), as_num(rhs)) {
        let (na, nb) = (is_nan(&a), is_nan(&b));
        if na || nb {
            return na && nb && matches!(op, CmpOp::Eq | CmpOp::Lte | CmpOp::Gte);
        }
    }
    let ord = compare_bson(v, rhs);
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Lte => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Gte => ord != Ordering::Less,
    }
}

fn is_nan(n: &Num) -> bool {
    match n {
        Num::Double(d) => d.is_nan(),
        Num::Dec(d) => matches!(d, crate::number::Dec::NaN),
        Num::Int(_) => false,
    }
}

/// The numeric BSON type code `$type` compares with.
pub(crate) fn type_code(v: &Bson) -> i32 {
    match v {
        Bson::Double(_) => 1,
        Bson::String(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::Undefined => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Null => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) => 13,
        Bson::Symbol(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::Int32(_) => 16,
        Bson::Timestamp(_) => 17,
        Bson::Int64(_) => 18,
        Bson::Decimal128(_) => 19,
        Bson::MinKey => -1,
        Bson::MaxKey => 127,
    }
}

fn mod_matches(v: &Bson, divisor: i64, remainder: i64) -> bool {
    let Some(n) = as_num(v) else { return false };
    match truncate(&n) {
        Some(x) => x.wrapping_rem(divisor) == remainder,
        None => false,
    }
}
