//! Tests of orphan exclusion: projections, distinct values, the pushed-down
//! filter against the router's own check.
use bson::{doc, Bson, Document, RawDocumentBuf};
use shardgate_config_store::shard_key::{hash_value, ShardKeyPattern};

use super::projection::{is_inclusion, paths_overlap, remove_path};
use super::scan::{by_bytes, values_at};
use super::HashedOrphans;

#[test]
fn inclusion_or_exclusion_as_mongodb_decides() {
    assert!(is_inclusion(&doc! {"a": 1}));
    assert!(is_inclusion(&doc! {"_id": 0, "a": true}));
    assert!(is_inclusion(&doc! {"_id": 1}));
    assert!(is_inclusion(&doc! {"x": "$a"}));
    assert!(is_inclusion(&doc! {"a.$": 1}));
    assert!(is_inclusion(&doc! {"a": {"b": 1}}));
    assert!(is_inclusion(&doc! {"a": {"$slice": 1}, "b": 1}));
    assert!(!is_inclusion(&doc! {"a": 0}));
    assert!(!is_inclusion(&doc! {"_id": 0}));
    assert!(!is_inclusion(&doc! {"a": {"$slice": 1}}));
    assert!(!is_inclusion(&doc! {"$sortKey": {"$meta": "sortKey"}}));
    assert!(!is_inclusion(&doc! {"a": {"b": 0}}));
}

#[test]
fn overlapping_paths() {
    assert!(paths_overlap("user.id", "user"));
    assert!(paths_overlap("user", "user.id"));
    assert!(paths_overlap("_id", "_id"));
    assert!(!paths_overlap("user.id", "user.idx"));
    assert!(!paths_overlap("a", "ab"));
}

#[test]
fn removes_paths_through_arrays() {
    let mut d = doc! {"a": [{"b": 1, "c": 2}, 5, {"b": 3}], "x": {"y": 1, "z": 2}};
    remove_path(&mut d, &["a", "b"]);
    remove_path(&mut d, &["x", "y"]);
    assert_eq!(d, doc! {"a": [{"c": 2}, 5, {}], "x": {"z": 2}});
}

#[test]
fn distinct_values_unwind_arrays() {
    let d = Bson::Document(doc! {"a": [{"b": [1, 2]}, {"b": 3}, 4], "c": [[1], 2]});
    let mut out = Vec::new();
    values_at(&d, &["a", "b"], &mut out);
    assert_eq!(out, vec![Bson::Int32(1), Bson::Int32(2), Bson::Int32(3)]);
    out.clear();
    values_at(&d, &["c"], &mut out);
    assert_eq!(out, vec![Bson::Array(vec![Bson::Int32(1)]), Bson::Int32(2)]);
}

fn orphans(pattern: Document, bounds: Vec<(Document, Document)>) -> HashedOrphans {
    let pattern = ShardKeyPattern::parse(&pattern).unwrap();
    let ranges = bounds
        .iter()
        .map(|(min, max)| {
            (
                pattern.encode_bound(min).unwrap(),
                pattern.encode_bound(max).unwrap(),
            )
        })
        .collect();
    HashedOrphans {
        pattern,
        ranges,
        bounds,
    }
}

/// Whether the pushed-down clause keeps `doc`, evaluated by the
/// router's expression engine: each `{$toHashedIndexKey: "$f"}` is
/// replaced by a field holding the hash of `f` (null when missing), as
/// a shard computes it; the comparisons are the engine's.
fn clause_keeps(clause: &Document, doc: &Document) -> bool {
    fn substitute(v: &Bson, doc: &mut Document, original: &Document) -> Bson {
        match v {
            Bson::Document(d) => {
                if let Ok(path) = d.get_str("$toHashedIndexKey") {
                    let value = shardgate_query::get_path(original, &path[1..])
                        .cloned()
                        .unwrap_or(Bson::Null);
                    let name = format!("hashed_{}", path[1..].replace('.', "_"));
                    doc.insert(&name, hash_value(&value));
                    return Bson::String(format!("${name}"));
                }
                let mut out = Document::new();
                for (k, x) in d {
                    out.insert(k, substitute(x, doc, original));
                }
                Bson::Document(out)
            }
            Bson::Array(items) => {
                Bson::Array(items.iter().map(|x| substitute(x, doc, original)).collect())
            }
            other => other.clone(),
        }
    }
    let ranges = clause.get_array("$nor").unwrap();
    !ranges.iter().any(|r| {
        let mut input = doc.clone();
        let e = r.as_document().unwrap().get("$expr").unwrap();
        let e = substitute(e, &mut input, doc);
        let out = shardgate_query::aggregate(vec![input], &[doc! {"$project": {"in": e}}]).unwrap();
        out[0].get_bool("in").unwrap()
    })
}

#[test]
fn pushed_down_exclusion_keeps_what_the_router_keeps() {
    let min = Bson::MinKey;
    let max = Bson::MaxKey;
    let cases = [
        orphans(
            doc! {"_id": "hashed"},
            vec![
                (
                    doc! {"_id": min.clone()},
                    doc! {"_id": -3_000_000_000_000_000_000i64},
                ),
                (
                    doc! {"_id": 0i64},
                    doc! {"_id": 4_000_000_000_000_000_000i64},
                ),
            ],
        ),
        orphans(
            doc! {"tenant": 1, "u.id": "hashed"},
            vec![
                (
                    doc! {"tenant": "t1", "u.id": min.clone()},
                    doc! {"tenant": "t1", "u.id": 0i64},
                ),
                (
                    doc! {"tenant": "$t3", "u.id": 5i64},
                    doc! {"tenant": max.clone(), "u.id": max.clone()},
                ),
            ],
        ),
    ];
    let docs: Vec<Document> = (0..400)
        .map(|i| match i % 5 {
            0 => doc! {"_id": i, "tenant": "t1", "u": {"id": i}},
            1 => doc! {"_id": format!("s{i}"), "tenant": "t1", "u": {"id": format!("s{i}")}},
            2 => doc! {"_id": i, "tenant": "$t3", "u": {"id": i as f64 + 0.5}},
            3 => doc! {"_id": i, "u": "not a document"},
            _ => doc! {"_id": i, "tenant": "t4"},
        })
        .collect();
    for o in &cases {
        let clause = o.pushdown().unwrap();
        let mut excluded = 0;
        for d in &docs {
            let raw = RawDocumentBuf::try_from(d).unwrap();
            let owns = o.owns(&raw);
            assert_eq!(clause_keeps(&clause, d), owns, "{d} under {clause}");
            excluded += usize::from(!owns);
        }
        assert!(excluded > 20 && excluded < 380, "{excluded} excluded");
    }
    let descending = orphans(
        doc! {"a": -1, "b": "hashed"},
        vec![(doc! {"a": max, "b": min}, doc! {"a": 5, "b": 0i64})],
    );
    assert!(descending.pushdown().is_none());
}

#[test]
fn batches_cut_by_bytes() {
    let docs: Vec<RawDocumentBuf> = (0..10)
        .map(|i| RawDocumentBuf::try_from(&doc! {"i": i}).unwrap())
        .collect();
    let len = docs[0].as_bytes().len();
    let runs = by_bytes(docs, len * 3);
    assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
}
