//! Property test: every document a filter matches (by the router's query
//! engine) has its key in a targeted range and its owning shard targeted.

use std::cell::Cell;
use std::collections::BTreeSet;

use bson::{doc, Bson, Document, RawDocumentBuf, Regex};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use shardgate_config_store::chunk_map::ChunkMap;
use shardgate_config_store::shard_key::{hash_value, KeyKind, ShardKeyPattern};

use super::tests::table;
use super::{exact_key, shards_for, target, KeyRange, Targets};
use shardgate_query::Filter;

const PATTERNS: &[&[(&str, i32)]] = &[
    &[("a", 1)],
    &[("a", -1)],
    &[("a", 0)],
    &[("a", 1), ("b", 1)],
    &[("a", 1), ("b", -1)],
    &[("a", -1), ("b", 1)],
    &[("a", 0), ("b", 1)],
    &[("a", 1), ("b", 0)],
    &[("a.x", 1), ("b", 1)],
    &[("a.x", -1)],
];

/// `0` stands for `"hashed"`.
fn pattern_doc(fields: &[(&str, i32)]) -> Document {
    fields
        .iter()
        .map(|(name, dir)| {
            let v = match dir {
                0 => Bson::String("hashed".into()),
                d => Bson::Int32(*d),
            };
            ((*name).to_owned(), v)
        })
        .collect()
}

/// A small deterministic generator (SplitMix64): proptest draws the seed,
/// plain code builds the case (proptest's own strategies are too slow for
/// thousands of nested filters in a debug build).
struct Gen {
    state: u64,
    /// Values used in the filter, reused for documents to make matches
    /// common.
    pool: Vec<Bson>,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Gen {
            state: seed,
            pool: Vec::new(),
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    fn value(&mut self) -> Bson {
        let v = match self.below(16) {
            0..=6 => Bson::Int32(self.below(7) as i32 - 3),
            7 => Bson::Int64(self.below(7) as i64 - 3),
            8 => Bson::Double(self.pick(&[0.5, -1.5, 2.0, 2.5, f64::NAN, f64::INFINITY])),
            9 => match self.below(3) {
                0 => Bson::Double(f64::NEG_INFINITY),
                _ => Bson::Decimal128(self.pick(&["2.5", "-1", "NaN"]).parse().unwrap()),
            },
            10 | 11 => Bson::String(self.pick(&["", "a", "b", "m"]).to_owned()),
            12 => Bson::Null,
            13 => Bson::Boolean(self.below(2) == 1),
            14 => self.pick(&[Bson::MinKey, Bson::MaxKey]),
            _ => Bson::Int32(self.below(3) as i32),
        };
        self.pool.push(v.clone());
        v
    }

    /// A value, or a sub-document holding one at `x`.
    fn nested_value(&mut self) -> Bson {
        match self.below(5) {
            0 => Bson::Document(doc! {"x": self.value()}),
            1 => Bson::Document(doc! {"y": 1, "x": self.value()}),
            _ => self.value(),
        }
    }

    fn cmp_op(&mut self) -> &'static str {
        self.pick(&["$gt", "$gte", "$lt", "$lte"])
    }

    fn predicate(&mut self) -> Bson {
        let ops = match self.below(15) {
            0..=2 => return self.nested_value(),
            3 => doc! {"$eq": self.value()},
            4 | 5 => {
                let n = self.below(4);
                let list: Vec<Bson> = (0..n).map(|_| self.nested_value()).collect();
                doc! {"$in": list}
            }
            6..=8 => doc! {self.cmp_op(): self.value()},
            9 | 10 => doc! {self.cmp_op(): self.value(), self.cmp_op(): self.value()},
            11 => doc! {"$ne": self.value()},
            12 => doc! {"$nin": [self.value()]},
            13 => doc! {"$exists": self.below(2) == 1},
            _ => {
                return Bson::RegularExpression(Regex {
                    pattern: "^a".to_owned().try_into().unwrap(),
                    options: String::new().try_into().unwrap(),
                })
            }
        };
        Bson::Document(ops)
    }

    /// One or two field predicates, plus (`depth` > 0) maybe a `$and`,
    /// `$or` or `$nor` of 1 to 3 such filters one level shallower.
    fn filter(&mut self, depth: usize) -> Document {
        let mut doc = Document::new();
        for _ in 0..=self.below(2) {
            let field = self.pick(&["a", "b", "c", "a.x"]);
            doc.insert(field, self.predicate());
        }
        if depth > 0 && self.below(5) < 3 {
            let op = self.pick(&["$and", "$or", "$or", "$nor"]);
            let clauses: Vec<Bson> = (0..=self.below(3))
                .map(|_| Bson::Document(self.filter(depth - 1)))
                .collect();
            doc.insert(op, clauses);
        }
        doc
    }

    /// A document value: half the time one the filter uses.
    fn doc_value(&mut self) -> Bson {
        if !self.pool.is_empty() && self.below(2) == 0 {
            let v = self.pick(&self.pool.clone());
            return match self.below(4) {
                0 => Bson::Document(doc! {"x": v}),
                _ => v,
            };
        }
        self.nested_value()
    }

    fn document(&mut self) -> Document {
        let mut d = Document::new();
        for (name, odds) in [("a", 8), ("b", 8), ("c", 5)] {
            if self.below(10) < odds {
                let v = match name {
                    "a" => self.doc_value(),
                    _ => match self.doc_value() {
                        Bson::Document(_) => self.value(),
                        v => v,
                    },
                };
                d.insert(name, v);
            }
        }
        d
    }

    /// A chunk bound value for a field of `kind`.
    fn bound_value(&mut self, kind: KeyKind) -> Bson {
        match kind {
            KeyKind::Hashed if self.below(2) == 0 => Bson::Int64(self.next() as i64),
            KeyKind::Hashed => Bson::Int64(hash_value(&self.value())),
            _ => self.value(),
        }
    }

    /// A routing table of up to 8 chunks on up to 4 shards.
    fn routing_table(&mut self, p: &ShardKeyPattern) -> ChunkMap {
        let mut keyed: Vec<(Vec<u8>, Document)> = (0..self.below(8))
            .map(|_| {
                p.fields()
                    .map(|(name, kind)| (name.to_owned(), self.bound_value(kind)))
                    .collect::<Document>()
            })
            .map(|d| (p.encode_bound(&d).unwrap().into_vec(), d))
            .filter(|(k, _)| {
                k.as_slice() != p.min_bytes().as_slice() && k.as_slice() != p.max_bytes().as_slice()
            })
            .collect();
        keyed.sort_by(|x, y| x.0.cmp(&y.0));
        keyed.dedup_by(|x, y| x.0 == y.0);
        let splits: Vec<Document> = keyed.into_iter().map(|(_, d)| d).collect();
        let shards: Vec<&str> = (0..=splits.len())
            .map(|_| self.pick(&["s0", "s1", "s2", "s3"]))
            .collect();
        table(p, &splits, &shards)
    }
}

/// Ranges are sorted, non-empty, and neither overlap nor touch.
fn well_formed(ranges: &[KeyRange]) -> bool {
    ranges
        .iter()
        .all(|r| r.min < r.max || (r.min == r.max && r.max_inclusive))
        && ranges.windows(2).all(|w| w[0].max < w[1].min)
}

/// The shards of chunks overlapping the ranges, chunk by chunk (the last
/// chunk also owns the global maximum key).
fn brute_force_shards(map: &ChunkMap, targets: &Targets) -> BTreeSet<String> {
    let last_min = map.iter().last().map(|c| c.min.clone());
    map.iter()
        .filter(|c| match targets {
            Targets::All => true,
            Targets::Ranges(ranges) => ranges.iter().any(|r| {
                (c.max > r.min || Some(&c.min) == last_min.as_ref())
                    && if r.max_inclusive {
                        c.min <= r.max
                    } else {
                        c.min < r.max
                    }
            }),
        })
        .map(|c| c.shard.clone())
        .collect()
}

#[test]
fn matching_documents_are_always_targeted() {
    let patterns: Vec<ShardKeyPattern> = PATTERNS
        .iter()
        .map(|fields| ShardKeyPattern::parse(&pattern_doc(fields)).unwrap())
        .collect();
    let mut runner = TestRunner::new(Config {
        cases: 4000,
        failure_persistence: None,
        ..Config::default()
    });
    let (matched, narrowed) = (Cell::new(0usize), Cell::new(0usize));
    runner
        .run(&any::<u64>(), |seed| {
            let mut g = Gen::new(seed);
            let p = g.pick(&patterns);
            let map = g.routing_table(&p);
            let filter = g.filter(2);
            let Ok(engine) = Filter::parse(&filter) else {
                return Ok(());
            };
            let targets = target(&p, &filter);
            let shards = shards_for(&map, &targets);
            if let Targets::Ranges(ranges) = &targets {
                prop_assert!(well_formed(ranges), "{ranges:?}");
                narrowed.set(narrowed.get() + 1);
            }
            prop_assert_eq!(&shards, &brute_force_shards(&map, &targets));
            let exact = exact_key(&p, &filter);
            for _ in 0..32 {
                let d = g.document();
                if !engine.matches(&d) {
                    continue;
                }
                matched.set(matched.get() + 1);
                let key = p
                    .extract_key(&RawDocumentBuf::try_from(&d).unwrap())
                    .unwrap();
                prop_assert!(targets.contains(&key), "{filter} matches {d}: {targets:?}");
                prop_assert!(shards.contains(&map.chunk_for(&key).shard));
                if let Some(exact) = &exact {
                    prop_assert_eq!(exact, &key, "{} matches {}", filter, d);
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(matched.get() > 5_000, "only {} matches", matched.get());
    assert!(narrowed.get() > 700, "only {} narrowed", narrowed.get());
}
