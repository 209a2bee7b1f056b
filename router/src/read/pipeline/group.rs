//! The two halves of a `$group` (and of `$count`, `$sortByCount`,
//! `$bucket`, which are groups): partial accumulators on every shard, and
//! the stages that merge the partials. An accumulator without a merge that
//! gives exactly a single server's answer (`$stdDevPop`, `$topN`, …) keeps
//! the whole group in the merge part. Pure.

use bson::{doc, Bson, Document};

/// The shard stage and the merge stages.
pub(crate) type Halves = (Document, Vec<Document>);

/// One accumulator's partial, its merge, and what is done after the merge.
struct Parts {
    partial: Vec<(String, Document)>,
    merged: Vec<(String, Document)>,
    set: Option<Bson>,
    unset: Vec<String>,
}

/// How the accumulator `field: {op: arg}` is split (`None`: it cannot be).
fn accumulator(field: &str, op: &str, arg: &Bson, index: usize) -> Option<Parts> {
    let me = format!("${field}");
    let same = |op: &str| Parts {
        partial: vec![(field.to_owned(), doc! {op: arg.clone()})],
        merged: vec![(field.to_owned(), doc! {op: me.clone()})],
        set: None,
        unset: Vec::new(),
    };
    Some(match op {
        "$sum" | "$min" | "$max" | "$first" | "$last" | "$mergeObjects" => same(op),
        "$count" => Parts {
            partial: vec![(field.to_owned(), doc! {"$sum": 1})],
            merged: vec![(field.to_owned(), doc! {"$sum": me})],
            set: None,
            unset: Vec::new(),
        },
        "$avg" => {
            let n = format!("__shardgate_n{index}");
            let set = doc! {"$cond": [
                {"$eq": [format!("${n}"), 0]},
                Bson::Null,
                {"$divide": [me.clone(), format!("${n}")]},
            ]};
            Parts {
                partial: vec![
                    (field.to_owned(), doc! {"$sum": arg.clone()}),
                    (
                        n.clone(),
                        doc! {"$sum": {"$cond": [{"$isNumber": arg.clone()}, 1, 0]}},
                    ),
                ],
                merged: vec![
                    (field.to_owned(), doc! {"$sum": me}),
                    (n.clone(), doc! {"$sum": format!("${n}")}),
                ],
                set: Some(Bson::Document(set)),
                unset: vec![n],
            }
        }
        "$push" | "$addToSet" => {
            let combine = if op == "$push" {
                "$concatArrays"
            } else {
                "$setUnion"
            };
            let set = doc! {"$reduce": {
                "input": me.clone(),
                "initialValue": [],
                "in": {combine: ["$$value", "$$this"]},
            }};
            Parts {
                partial: vec![(field.to_owned(), doc! {op: arg.clone()})],
                merged: vec![(field.to_owned(), doc! {"$push": me})],
                set: Some(Bson::Document(set)),
                unset: Vec::new(),
            }
        }
        _ => return None,
    })
}

/// Splits accumulator fields (`_id` excluded): the partial fields, the
/// merge fields, and the stages after the merging `$group`.
fn accumulators(spec: &Document) -> Option<(Document, Document, Vec<Document>)> {
    let (mut partial, mut merged) = (Document::new(), Document::new());
    let (mut set, mut unset) = (Document::new(), Vec::new());
    for (index, (field, acc)) in spec.iter().enumerate() {
        if field == "_id" {
            continue;
        }
        let acc = acc.as_document().filter(|a| a.len() == 1)?;
        let (op, arg) = acc.iter().next()?;
        let parts = accumulator(field, op, arg, index)?;
        for (k, v) in parts.partial {
            partial.insert(k, v);
        }
        for (k, v) in parts.merged {
            merged.insert(k, v);
        }
        if let Some(v) = parts.set {
            set.insert(field.clone(), v);
        }
        unset.extend(parts.unset);
    }
    let mut after = Vec::new();
    if !set.is_empty() {
        after.push(doc! {"$set": set});
    }
    if !unset.is_empty() {
        after.push(doc! {"$unset": unset});
    }
    Some((partial, merged, after))
}

/// `$group`: partial groups on the shards, regrouped by `_id`.
pub(crate) fn split(spec: &Document) -> Option<Halves> {
    let id = spec.get("_id")?.clone();
    let (partial, merged, after) = accumulators(spec)?;
    let mut shard = doc! {"_id": id};
    shard.extend(partial);
    let mut merge = doc! {"_id": "$_id"};
    merge.extend(merged);
    let mut stages = vec![doc! {"$group": merge}];
    stages.extend(after);
    Some((doc! {"$group": shard}, stages))
}

/// `$count: name`: per-shard counts, summed.
pub(crate) fn count(name: &str) -> Halves {
    (
        doc! {"$group": {"_id": Bson::Null, name: {"$sum": 1}}},
        vec![
            doc! {"$group": {"_id": Bson::Null, name: {"$sum": format!("${name}")}}},
            doc! {"$project": {"_id": 0, name: 1}},
        ],
    )
}

/// `$sortByCount: expr`: per-shard counts by value, summed, then sorted.
/// A malformed argument stays whole for the merging shard to refuse.
pub(crate) fn sort_by_count(expr: &Bson) -> Option<Halves> {
    let valid = match expr {
        Bson::String(s) => s.starts_with('$'),
        Bson::Document(d) => d.keys().next().is_some_and(|k| k.starts_with('$')),
        _ => false,
    };
    if !valid {
        return None;
    }
    Some((
        doc! {"$group": {"_id": expr.clone(), "count": {"$sum": 1}}},
        vec![
            doc! {"$group": {"_id": "$_id", "count": {"$sum": "$count"}}},
            doc! {"$sort": {"count": -1}},
        ],
    ))
}

/// `$bucket`: each shard buckets with partial outputs; the merge regroups
/// by bucket and sorts by it, as `$bucket` itself does.
pub(crate) fn bucket(spec: &Document) -> Option<Halves> {
    let output = match spec.get("output") {
        None => doc! {"count": {"$sum": 1}},
        Some(Bson::Document(d)) => d.clone(),
        Some(_) => return None,
    };
    let (partial, merged, after) = accumulators(&output)?;
    let mut shard = spec.clone();
    shard.insert("output", partial);
    let mut merge = doc! {"_id": "$_id"};
    merge.extend(merged);
    let mut stages = vec![doc! {"$group": merge}];
    stages.extend(after);
    stages.push(doc! {"$sort": {"_id": 1}});
    Some((doc! {"$bucket": shard}, stages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_is_a_sum_and_a_count() {
        let (shard, merge) = split(&doc! {"_id": "$k", "a": {"$avg": "$x"}}).unwrap();
        let partial = shard.get_document("$group").unwrap();
        assert_eq!(partial.get_document("a").unwrap(), &doc! {"$sum": "$x"});
        assert!(partial.contains_key("__shardgate_n1"));
        assert_eq!(merge.len(), 3, "group, set, unset: {merge:?}");
    }

    #[test]
    fn an_unmergeable_accumulator_keeps_the_group_whole() {
        assert!(split(&doc! {"_id": null, "s": {"$stdDevPop": "$x"}}).is_none());
        assert!(split(&doc! {"_id": null, "s": {"$sum": "$x", "$max": 1}}).is_none());
    }
}
