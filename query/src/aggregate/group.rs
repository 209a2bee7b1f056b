//! The `$group` stage and its accumulators.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bson::{Bson, Document};

use super::summation::{DoubleDouble, SumState};
use crate::compare::compare_bson;
use crate::expr::Expr;
use crate::number::{as_num, Num};
use crate::QueryError;

/// Accumulators MongoDB knows that this engine does not implement.
const UNSUPPORTED: &[&str] = &[
    "$accumulator",
    "$bottom",
    "$bottomN",
    "$concatArrays",
    "$firstN",
    "$lastN",
    "$maxN",
    "$median",
    "$mergeObjects",
    "$minN",
    "$percentile",
    "$setUnion",
    "$stdDevPop",
    "$stdDevSamp",
    "$top",
    "$topN",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccKind {
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    Push,
    AddToSet,
    Count,
}

/// A parsed `$group` specification.
#[derive(Debug, Clone)]
pub(crate) struct GroupSpec {
    id: Expr,
    accumulators: Vec<(String, AccKind, Expr)>,
}

/// A BSON value ordered by [`compare_bson`], to key groups and sets.
#[derive(Debug, Clone)]
struct Key(Bson);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        compare_bson(&self.0, &other.0)
    }
}

#[derive(Debug, Clone)]
enum AccState {
    Sum(SumState),
    Avg(DoubleDouble, u64),
    Min(Option<Bson>),
    Max(Option<Bson>),
    First(Option<Option<Bson>>),
    Last(Option<Bson>),
    Push(Vec<Bson>),
    AddToSet(Vec<Bson>, std::collections::BTreeSet<Key>),
}

impl GroupSpec {
    /// Parses `{_id: <expression>, <field>: {<accumulator>: <expression>}}`.
    pub(crate) fn parse(spec: &Document) -> Result<GroupSpec, QueryError> {
        let mut id = None;
        let mut accumulators = Vec::new();
        for (name, value) in spec {
            if name == "_id" {
                id = Some(Expr::parse(value, 1)?);
                continue;
            }
            accumulators.push(parse_accumulator(name, value)?);
        }
        let id = id.ok_or_else(|| location!(15955, "a group specification must include an _id"))?;
        Ok(GroupSpec { id, accumulators })
    }

    /// Groups `docs`; groups come out in the order their first document came
    /// in.
    pub(crate) fn run(&self, docs: Vec<Document>) -> Result<Vec<Document>, QueryError> {
        let mut index: BTreeMap<Key, usize> = BTreeMap::new();
        let mut groups: Vec<(Bson, Vec<AccState>)> = Vec::new();
        for doc in &docs {
            let key = self.id.eval(doc).unwrap_or(Bson::Null);
            let slot = match index.get(&Key(key.clone())) {
                Some(&i) => i,
                None => {
                    let states = self
                        .accumulators
                        .iter()
                        .map(|(_, k, e)| initial(*k, e))
                        .collect();
                    groups.push((key.clone(), states));
                    index.insert(Key(key), groups.len() - 1);
                    groups.len() - 1
                }
            };
            if let Some((_, states)) = groups.get_mut(slot) {
                for (state, (_, _, expr)) in states.iter_mut().zip(&self.accumulators) {
                    process(state, expr.eval(doc))?;
                }
            }
        }
        Ok(groups
            .into_iter()
            .map(|(key, states)| {
                let mut out = Document::new();
                out.insert("_id", key);
                for ((name, _, _), state) in self.accumulators.iter().zip(states) {
                    out.insert(name.clone(), finish(state));
                }
                out
            })
            .collect())
    }
}

fn parse_accumulator(name: &str, value: &Bson) -> Result<(String, AccKind, Expr), QueryError> {
    if name.starts_with('$') {
        return Err(location!(
            40236,
            "The field name '{name}' cannot be an operator name"
        ));
    }
    if name.contains('.') {
        return Err(location!(
            40235,
            "The field name '{name}' cannot contain '.'"
        ));
    }
    let Bson::Document(acc) = value else {
        return Err(location!(
            40234,
            "The field '{name}' must be an accumulator object"
        ));
    };
    let (op, arg) = match acc.iter().next() {
        Some(pair) if acc.len() == 1 => pair,
        _ => {
            return Err(location!(
                40238,
                "The field '{name}' must specify one accumulator"
            ))
        }
    };
    let kind = match op.as_str() {
        "$sum" => AccKind::Sum,
        "$avg" => AccKind::Avg,
        "$min" => AccKind::Min,
        "$max" => AccKind::Max,
        "$first" => AccKind::First,
        "$last" => AccKind::Last,
        "$push" => AccKind::Push,
        "$addToSet" => AccKind::AddToSet,
        "$count" => AccKind::Count,
        o if UNSUPPORTED.contains(&o) => {
            return Err(QueryError::not_implemented(format!("the {o} accumulator")))
        }
        o => return Err(location!(15952, "unknown group operator '{o}'")),
    };
    if matches!(arg, Bson::Array(_)) {
        return Err(location!(40237, "The {op} accumulator is a unary operator"));
    }
    let expr = if kind == AccKind::Count {
        if !matches!(arg, Bson::Document(d) if d.is_empty()) {
            return Err(location!(
                40272,
                "$count takes no arguments, i.e. $count: {{}}"
            ));
        }
        Expr::Const(Bson::Int32(1))
    } else {
        Expr::parse(arg, 2)?
    };
    Ok((name.to_owned(), kind, expr))
}

fn initial(kind: AccKind, expr: &Expr) -> AccState {
    match kind {
        AccKind::Sum | AccKind::Count => AccState::Sum(SumState::new(expr.as_const())),
        AccKind::Avg => AccState::Avg(DoubleDouble::default(), 0),
        AccKind::Min => AccState::Min(None),
        AccKind::Max => AccState::Max(None),
        AccKind::First => AccState::First(None),
        AccKind::Last => AccState::Last(None),
        AccKind::Push => AccState::Push(Vec::new()),
        AccKind::AddToSet => AccState::AddToSet(Vec::new(), Default::default()),
    }
}

/// Feeds one document's value (`None` = missing) to an accumulator.
fn process(state: &mut AccState, v: Option<Bson>) -> Result<(), QueryError> {
    let nullish = matches!(v, None | Some(Bson::Null) | Some(Bson::Undefined));
    match state {
        AccState::Sum(sum) => sum.add(v.as_ref())?,
        AccState::Avg(total, count) => {
            match v.as_ref().and_then(|x| as_num(x).map(|n| (x, n))) {
                Some((Bson::Int64(_), Num::Int(l))) => total.add_long(l),
                Some((_, Num::Int(i))) => total.add_int(i),
                Some((_, Num::Double(d))) => total.add_double(d),
                Some((_, Num::Dec(_))) => {
                    return Err(QueryError::not_implemented("$avg over Decimal128 values"))
                }
                None => return Ok(()),
            }
            *count += 1;
        }
        AccState::Min(_) | AccState::Max(_) if nullish => {}
        AccState::Min(best) => replace_if(best, v, Ordering::Less),
        AccState::Max(best) => replace_if(best, v, Ordering::Greater),
        AccState::First(first) => {
            if first.is_none() {
                *first = Some(v);
            }
        }
        AccState::Last(last) => *last = v,
        AccState::Push(items) => items.extend(v),
        AccState::AddToSet(items, seen) => {
            if let Some(v) = v {
                if seen.insert(Key(v.clone())) {
                    items.push(v);
                }
            }
        }
    }
    Ok(())
}

fn replace_if(best: &mut Option<Bson>, v: Option<Bson>, wanted: Ordering) {
    let Some(v) = v else { return };
    let better = match best {
        None => true,
        Some(b) => compare_bson(&v, b) == wanted,
    };
    if better {
        *best = Some(v);
    }
}

/// The accumulator's result; a missing result becomes null, as `$group`
/// outputs it.
fn finish(state: AccState) -> Bson {
    match state {
        AccState::Sum(sum) => sum.value(),
        AccState::Avg(_, 0) => Bson::Null,
        AccState::Avg(total, count) => {
            // Counts stay far below 2^53, so the conversion is exact.
            #[allow(clippy::cast_precision_loss)]
            let n = count as f64;
            Bson::Double(total.get_double() / n)
        }
        AccState::Min(v) | AccState::Max(v) | AccState::Last(v) => v.unwrap_or(Bson::Null),
        AccState::First(v) => v.flatten().unwrap_or(Bson::Null),
        AccState::Push(items) | AccState::AddToSet(items, _) => Bson::Array(items),
    }
}
