//! Where a pipeline on a sharded collection is cut, as mongos's
//! `sharded_agg_helpers` cuts it: the shards run every stage up to the first
//! one that needs all the data, plus that stage's shard half; the merge
//! runs the rest over the shards' merged output. Pure.

use bson::{doc, Bson, Document};

use super::group;

/// A pipeline cut in two.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Split {
    /// What every targeted shard runs.
    pub shards: Vec<Document>,
    /// The order the shards' outputs are merged in (each shard sorted its
    /// own); `None`: concatenated.
    pub sort: Option<Document>,
    /// Documents the merge skips, then how many it keeps (`None`: all),
    /// before `merge` runs.
    pub skip: u64,
    pub limit: Option<u64>,
    /// The stages run over the merged stream.
    pub merge: Vec<Document>,
}

/// The name of a stage (`$match`, …).
pub(crate) fn stage_name(stage: &Document) -> &str {
    stage.keys().next().map_or("", String::as_str)
}

/// Stages a shard can run on its own documents without changing the result.
fn per_document(stage: &Document) -> bool {
    matches!(
        stage_name(stage),
        "$match"
            | "$project"
            | "$addFields"
            | "$set"
            | "$unset"
            | "$unwind"
            | "$replaceRoot"
            | "$replaceWith"
            | "$redact"
    )
}

fn count_of(v: Option<&Bson>) -> Option<u64> {
    match v? {
        Bson::Int32(n) if *n >= 0 => Some(*n as u64),
        Bson::Int64(n) if *n >= 0 => Some(*n as u64),
        Bson::Double(n) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
        _ => None,
    }
}

/// Cuts `pipeline`. `ordered_merge`: whether the router may merge the
/// shards' sorted outputs itself (a simple collation; under another the
/// sort moves to the merge).
pub(crate) fn split(pipeline: &[Document], ordered_merge: bool) -> Split {
    let cut = pipeline
        .iter()
        .position(|s| !per_document(s))
        .unwrap_or(pipeline.len());
    let mut out = Split {
        shards: pipeline[..cut].to_vec(),
        sort: None,
        skip: 0,
        limit: None,
        merge: Vec::new(),
    };
    let rest = &pipeline[cut..];
    let Some(first) = rest.first() else {
        return out;
    };
    let consumed = match stage_name(first) {
        "$geoNear" if cut == 0 => geo_near_half(&mut out, rest),
        "$sort" if ordered_merge => sort_half(&mut out, rest),
        "$limit" => match count_of(first.get("$limit")) {
            Some(n) => {
                out.shards.push(first.clone());
                out.limit = Some(n);
                1
            }
            None => 0,
        },
        "$skip" => skip_half(&mut out, rest),
        _ => blocking_half(&mut out, first),
    };
    out.merge.extend(rest[consumed..].iter().cloned());
    out
}

/// `$sort` (with the `$skip`/`$limit` right after it): the shards sort and
/// keep at most `skip + limit`; the merge skips and limits.
fn sort_half(out: &mut Split, rest: &[Document]) -> usize {
    let Ok(spec) = rest[0].get_document("$sort") else {
        return 0;
    };
    if crate::cursors::merge::SortSpec::parse(spec).is_none() {
        return 0; // `$meta` sorts: the merge part sorts
    }
    out.shards.push(rest[0].clone());
    out.sort = Some(spec.clone());
    1 + skip_limit_after(out, &rest[1..])
}

/// `$geoNear` (first, as it must be): every shard runs it, and the merge
/// keeps the shards' order by distance, as mongos merges by the distance
/// sort key; a `$skip`/`$limit` right after it goes as after a `$sort`.
fn geo_near_half(out: &mut Split, rest: &[Document]) -> usize {
    let Ok(field) = rest[0]
        .get_document("$geoNear")
        .and_then(|spec| spec.get_str("distanceField"))
    else {
        return 0; // malformed: the merging shard gives MongoDB's error
    };
    out.shards.push(rest[0].clone());
    out.sort = Some(doc! {field: 1});
    1 + skip_limit_after(out, &rest[1..])
}

/// The `$skip` and `$limit` leading `rest`, after a sort the shards ran:
/// the shards keep at most `skip + limit`; the merge skips and limits.
/// Returns how many stages it consumed.
fn skip_limit_after(out: &mut Split, rest: &[Document]) -> usize {
    let mut i = 0;
    if let Some(n) = rest.get(i).filter(|s| stage_name(s) == "$skip") {
        match count_of(n.get("$skip")) {
            Some(n) => out.skip = n,
            None => return i,
        }
        i += 1;
    }
    if let Some(n) = rest.get(i).filter(|s| stage_name(s) == "$limit") {
        match count_of(n.get("$limit")) {
            Some(n) => {
                out.limit = Some(n);
                let keep = n.saturating_add(out.skip);
                out.shards.push(doc! {"$limit": keep as i64});
            }
            None => return i,
        }
        i += 1;
    }
    i
}

/// `$skip` (and a `$limit` after it): the shards keep `skip + limit`.
fn skip_half(out: &mut Split, rest: &[Document]) -> usize {
    let Some(skip) = count_of(rest[0].get("$skip")) else {
        return 0;
    };
    let limit = rest
        .get(1)
        .filter(|s| stage_name(s) == "$limit")
        .and_then(|s| count_of(s.get("$limit")));
    out.skip = skip;
    match limit {
        Some(n) => {
            out.limit = Some(n);
            out.shards
                .push(doc! {"$limit": n.saturating_add(skip) as i64});
            2
        }
        None => 1,
    }
}

/// A stage that needs all the data: its shard half when it has one
/// (`$group` and its sugars with mergeable accumulators); the merge stages
/// go to `out.merge`. Returns how many stages of `rest` it consumed.
fn blocking_half(out: &mut Split, stage: &Document) -> usize {
    let halves = match stage_name(stage) {
        "$group" => stage.get_document("$group").ok().and_then(group::split),
        "$count" => match stage.get_str("$count") {
            Ok(name) if valid_count_name(name) => Some(group::count(name)),
            _ => None,
        },
        "$sortByCount" => stage.get("$sortByCount").and_then(group::sort_by_count),
        "$bucket" => stage.get_document("$bucket").ok().and_then(group::bucket),
        _ => None,
    };
    match halves {
        Some((shard, merge)) => {
            out.shards.push(shard);
            out.merge.extend(merge);
            1
        }
        None => 0,
    }
}

/// `$count`'s field name rules; an invalid name leaves the stage whole so
/// the merging shard gives MongoDB's own error.
fn valid_count_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('$') && !name.contains('.') && name != "_id"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(s: &[Document]) -> Vec<Document> {
        s.to_vec()
    }

    #[test]
    fn per_document_stages_run_on_shards() {
        let p = stages(&[doc! {"$match": {"a": 1}}, doc! {"$project": {"a": 1}}]);
        let s = split(&p, true);
        assert_eq!(s.shards, p);
        assert!(s.merge.is_empty() && s.sort.is_none());
    }

    #[test]
    fn sort_skip_limit_are_pushed_down() {
        let p = stages(&[
            doc! {"$match": {"a": 1}},
            doc! {"$sort": {"b": -1}},
            doc! {"$skip": 5},
            doc! {"$limit": 10},
            doc! {"$project": {"b": 1}},
        ]);
        let s = split(&p, true);
        assert_eq!(
            s.shards,
            vec![
                doc! {"$match": {"a": 1}},
                doc! {"$sort": {"b": -1}},
                doc! {"$limit": 15i64}
            ]
        );
        assert_eq!((s.skip, s.limit), (5, Some(10)));
        assert_eq!(s.sort, Some(doc! {"b": -1}));
        assert_eq!(s.merge, vec![doc! {"$project": {"b": 1}}]);
    }

    #[test]
    fn geo_near_runs_on_shards_merged_by_distance() {
        let near = doc! {"$geoNear": {"near": [0, 0], "distanceField": "d.x"}};
        let p = stages(&[
            near.clone(),
            doc! {"$limit": 3},
            doc! {"$project": {"d": 1}},
        ]);
        let s = split(&p, false);
        assert_eq!(s.shards, vec![near, doc! {"$limit": 3i64}]);
        assert_eq!(s.sort, Some(doc! {"d.x": 1}));
        assert_eq!((s.skip, s.limit), (0, Some(3)));
        assert_eq!(s.merge, vec![doc! {"$project": {"d": 1}}]);
        // Not first: left whole for the server's error.
        let late = stages(&[doc! {"$match": {}}, p[0].clone()]);
        assert_eq!(split(&late, true).merge, late[1..].to_vec());
    }

    #[test]
    fn a_collated_sort_moves_to_the_merge() {
        let p = stages(&[doc! {"$sort": {"b": 1}}, doc! {"$limit": 2}]);
        let s = split(&p, false);
        assert!(s.shards.is_empty());
        assert_eq!(s.merge, p);
    }

    #[test]
    fn count_becomes_partial_sums() {
        let s = split(&[doc! {"$count": "n"}], true);
        assert_eq!(
            s.shards,
            vec![doc! {"$group": {"_id": Bson::Null, "n": {"$sum": 1}}}]
        );
        assert_eq!(s.merge.len(), 2);
    }

    #[test]
    fn unmergeable_stages_go_whole_to_the_merge() {
        let p = stages(&[
            doc! {"$match": {"a": 1}},
            doc! {"$facet": {"x": [{"$limit": 1}]}},
        ]);
        let s = split(&p, true);
        assert_eq!(s.shards, p[..1].to_vec());
        assert_eq!(s.merge, p[1..].to_vec());
    }
}
