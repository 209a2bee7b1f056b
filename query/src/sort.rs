//! Sorting documents by a sort specification (`{a: 1, "b.c": -1}`).

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::compare::compare_bson;
use super::number::as_num;
use super::path::{array_index, parse_field_path};
use super::QueryError;

static NULL: Bson = Bson::Null;
static UNDEFINED: Bson = Bson::Undefined;

/// A parsed sort specification.
#[derive(Debug, Clone)]
pub(crate) struct SortSpec {
    keys: Vec<(Vec<String>, bool)>,
}

impl SortSpec {
    /// Parses `{path: 1 | -1, …}` with MongoDB's errors (15974, 15975);
    /// `{$meta: …}` fails with `Unsupported`. An empty specification is
    /// accepted and sorts nothing.
    pub(crate) fn parse(spec: &Document) -> Result<SortSpec, QueryError> {
        let mut keys = Vec::with_capacity(spec.len());
        for (name, value) in spec {
            let descending = match value {
                Bson::Document(d) if d.contains_key("$meta") => {
                    return Err(QueryError::not_implemented("sorting by $meta"))
                }
                other => match as_num(other).and_then(|n| super::number::truncate(&n)) {
                    Some(1) => false,
                    Some(-1) => true,
                    Some(_) => {
                        return Err(location!(
                            15975,
                            "$sort key ordering must be 1 (for ascending) or -1 (for descending)"
                        ))
                    }
                    None if as_num(other).is_some() => {
                        return Err(location!(
                            15975,
                            "$sort key ordering must be 1 (for ascending) or -1 (for descending)"
                        ))
                    }
                    None => {
                        return Err(location!(
                            15974,
                            "Illegal key in $sort specification: {name}: {other}"
                        ))
                    }
                },
            };
            keys.push((parse_field_path(name)?, descending));
        }
        Ok(SortSpec { keys })
    }

    /// Whether the specification has no keys.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Sorts `docs` stably.
    pub(crate) fn sort(&self, docs: &mut [Document]) -> Result<(), QueryError> {
        if self.keys.is_empty() || docs.len() < 2 {
            return Ok(());
        }
        let keys = docs
            .iter()
            .map(|d| self.sort_key(d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.sort_by(|&a, &b| compare_keys(&keys[a], &keys[b], &self.keys));
        let mut taken: Vec<Option<Document>> =
            docs.iter_mut().map(|d| Some(std::mem::take(d))).collect();
        for (slot, &from) in docs.iter_mut().zip(&order) {
            if let Some(d) = taken.get_mut(from).and_then(Option::take) {
                *slot = d;
            }
        }
        Ok(())
    }

    /// One sort key value per sort field: the smallest (ascending) or largest
    /// (descending) value the field yields.
    fn sort_key(&self, doc: &Document) -> Result<Vec<Bson>, QueryError> {
        let mut array_paths: Vec<Vec<String>> = Vec::new();
        let mut out = Vec::with_capacity(self.keys.len());
        for (path, descending) in &self.keys {
            let mut values: Vec<&Bson> = Vec::new();
            let mut arrays: Vec<usize> = Vec::new();
            key_values(
                path.first().and_then(|f| doc.get(f)),
                path,
                1,
                &mut values,
                &mut arrays,
            );
            for depth in arrays {
                let prefix = path[..depth].to_vec();
                let parallel = array_paths
                    .iter()
                    .any(|p| !is_prefix(p, &prefix) && !is_prefix(&prefix, p));
                if parallel {
                    return Err(QueryError::BadValue(
                        "cannot sort with keys that are parallel arrays".to_owned(),
                    ));
                }
                if !array_paths.contains(&prefix) {
                    array_paths.push(prefix);
                }
            }
            let pick = values.into_iter().reduce(|best, v| {
                let ord = compare_bson(v, best);
                let better = if *descending {
                    ord == Ordering::Greater
                } else {
                    ord == Ordering::Less
                };
                if better {
                    v
                } else {
                    best
                }
            });
            out.push(pick.unwrap_or(&NULL).clone());
        }
        Ok(out)
    }
}

fn is_prefix(a: &[String], b: &[String]) -> bool {
    a.len() <= b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn compare_keys(a: &[Bson], b: &[Bson], spec: &[(Vec<String>, bool)]) -> Ordering {
    for ((x, y), (_, descending)) in a.iter().zip(b).zip(spec) {
        let ord = compare_bson(x, y);
        let ord = if *descending { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Collects the values a sort key is chosen from, as MongoDB's sort-key
/// generator does: missing values count as null, an empty array at the end
/// of the path as undefined (below null), a non-empty one by its elements.
/// `arrays` receives the path depth of every array traversed.
fn key_values<'a>(
    v: Option<&'a Bson>,
    path: &[String],
    depth: usize,
    out: &mut Vec<&'a Bson>,
    arrays: &mut Vec<usize>,
) {
    let Some(v) = v else {
        out.push(&NULL);
        return;
    };
    let Some(next) = path.get(depth) else {
        match v {
            Bson::Array(items) if items.is_empty() => out.push(&UNDEFINED),
            Bson::Array(items) => {
                arrays.push(depth);
                out.extend(items.iter());
            }
            other => out.push(other),
        }
        return;
    };
    match v {
        Bson::Document(d) => key_values(d.get(next), path, depth + 1, out, arrays),
        Bson::Array(items) => {
            arrays.push(depth);
            if let Some(item) = array_index(next).and_then(|i| items.get(i)) {
                key_values(Some(item), path, depth + 1, out, arrays);
            } else if items.is_empty() {
                out.push(&NULL);
            } else {
                for item in items {
                    match item {
                        Bson::Document(d) => key_values(d.get(next), path, depth + 1, out, arrays),
                        _ => out.push(&NULL),
                    }
                }
            }
        }
        _ => out.push(&NULL),
    }
}

/// Sorts `docs` in place by a sort specification such as `{a: 1, "b.c":
/// -1}`, stably, as MongoDB does: a missing field sorts as null; an array
/// sorts by its smallest element ascending and its largest descending; an
/// empty array sorts before null. Fails on an invalid specification (15974,
/// 15975), on `$meta` sorts (`Unsupported`) and on parallel arrays.
pub fn sort_documents(docs: &mut [Document], sort: &Document) -> Result<(), QueryError> {
    SortSpec::parse(sort)?.sort(docs)
}

/// The values `doc` sorts by under `sort`, one per sort field, as MongoDB's
/// `$sortKey` holds them (compare them field by field, a descending field
/// reversed). Fails like [`sort_documents`].
pub fn sort_key(doc: &Document, sort: &Document) -> Result<Vec<Bson>, QueryError> {
    SortSpec::parse(sort)?.sort_key(doc)
}
