//! Generated aggregation pipelines on a collection spread unevenly over 3
//! shards (with a chunk moving between shards throughout), compared with
//! one unsharded server holding the same documents: `$match`, `$group`
//! with every splittable accumulator and some that are not, `$sort`/
//! `$skip`/`$limit`, `$project`/`$addFields` with generated expressions,
//! `$unwind`, `$lookup` from a sharded and from an unsharded collection
//! (and from a sharded one into an unsharded one), `$graphLookup`,
//! `$unionWith`, `$facet`, `$bucket`, `$bucketAuto`, `$sortByCount`,
//! `$count`, `$setWindowFields`, `$out` and `$merge`. Results must be
//! identical: in order when the pipeline ends with a total sort, as a
//! multiset otherwise; arrays built by accumulators (whose order a server
//! does not define) are compared sorted, doubles to 12 digits.

mod support;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Database;
use support::{admin, direct_client, error_code, TestCluster};

struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

fn main_docs() -> Vec<Document> {
    (0..600i64)
        .map(|i| {
            let mut d = doc! {
                "_id": i,
                "k": (i * 37) % 1000,
                "g": (["a", "b", "c", "d"][(i % 4) as usize]),
                "x": (i as f64) * 1.25,
                "arr": [i % 3, i % 5],
                "fk": i % 50,
                "s": format!("s{}", i % 7),
                "o": {"p": i % 6},
            };
            if i % 23 != 0 {
                d.insert("v", i % 17);
            }
            d
        })
        .collect()
}

fn foreign_docs() -> Vec<Document> {
    (0..120i64)
        .map(|i| doc! {"_id": i, "fk": i % 60, "next": (i * 7) % 60, "w": i})
        .collect()
}

fn unsharded_docs() -> Vec<Document> {
    (0..40i64)
        .map(|i| doc! {"_id": i, "fk": i, "label": format!("l{}", i % 9)})
        .collect()
}

/// A generated expression over the main collection's fields.
fn expression(g: &mut Gen) -> Bson {
    let exprs = [
        Bson::from(doc! {"$add": ["$v", 1]}),
        Bson::from(doc! {"$multiply": ["$x", 2]}),
        Bson::from(doc! {"$concat": ["$g", "-", "$s"]}),
        Bson::from(doc! {"$cond": [{"$gt": ["$v", 8]}, "hi", "lo"]}),
        Bson::from(doc! {"$size": "$arr"}),
        Bson::from(doc! {"$toString": "$fk"}),
        Bson::from(doc! {"$mod": ["$k", 7]}),
        Bson::from(doc! {"$ifNull": ["$v", -1]}),
        Bson::from(doc! {"$divide": ["$x", 5]}),
        Bson::from(doc! {"$arrayElemAt": ["$arr", 1]}),
        Bson::from(doc! {"$toUpper": "$g"}),
        Bson::from(doc! {"$subtract": ["$k", "$fk"]}),
        Bson::from("$o.p"),
    ];
    g.pick(&exprs)
}

fn accumulators(g: &mut Gen, sorted_by_id: bool) -> Document {
    let mut all = vec![
        ("sum", doc! {"$sum": "$v"}),
        ("n", doc! {"$sum": 1}),
        ("avg", doc! {"$avg": "$x"}),
        ("mn", doc! {"$min": "$x"}),
        ("mx", doc! {"$max": "$k"}),
        ("push", doc! {"$push": "$fk"}),
        ("set", doc! {"$addToSet": "$s"}),
        ("cnt", doc! {"$count": {}}),
        ("sd", doc! {"$stdDevPop": "$v"}),
        ("top", doc! {"$top": {"sortBy": {"k": 1}, "output": "$_id"}}),
        ("mxn", doc! {"$maxN": {"n": 2, "input": "$k"}}),
        ("avgv", doc! {"$avg": "$v"}),
    ];
    if sorted_by_id {
        all.push(("first", doc! {"$first": "$_id"}));
        all.push(("last", doc! {"$last": "$k"}));
        all.push(("mo", doc! {"$mergeObjects": "$o"}));
    }
    let mut out = Document::new();
    for _ in 0..(1 + g.below(3)) {
        let (name, acc) = g.pick(&all);
        out.insert(name, acc);
    }
    out
}

fn group_key(g: &mut Gen) -> Bson {
    g.pick(&[
        Bson::from("$g"),
        Bson::Null,
        Bson::from(doc! {"$mod": ["$k", 3]}),
        Bson::from(doc! {"g": "$g", "s": "$s"}),
        Bson::from("$v"),
    ])
}

fn group(g: &mut Gen, sorted_by_id: bool) -> Document {
    let mut spec = doc! {"_id": group_key(g)};
    spec.extend(accumulators(g, sorted_by_id));
    doc! {"$group": spec}
}

/// The middle of a pipeline: the stage that needs all the data.
fn blocking(g: &mut Gen, i: usize) -> Vec<Document> {
    match g.below(20) {
        0 | 1 => vec![group(g, false)],
        2 => vec![doc! {"$sort": {"_id": 1}}, group(g, true)],
        3 | 4 => {
            let mut s = vec![doc! {"$sort": {"x": -1, "_id": 1}}];
            if g.below(2) == 0 {
                s.push(doc! {"$skip": g.below(30)});
            }
            s.push(doc! {"$limit": 1 + g.below(40)});
            s
        }
        5 => vec![doc! {"$count": "n"}],
        6 => vec![doc! {"$sortByCount": "$s"}],
        7 => vec![
            doc! {"$bucket": {"groupBy": "$v", "boundaries": [0, 5, 10, 20], "default": "other", "output": {"n": {"$sum": 1}, "avg": {"$avg": "$x"}, "ids": {"$push": "$_id"}}}},
        ],
        8 => vec![doc! {"$bucketAuto": {"groupBy": "$k", "buckets": 4}}],
        9 => vec![doc! {"$facet": {
            "byG": [{"$group": {"_id": "$g", "n": {"$sum": 1}}}],
            "top": [{"$sort": {"k": -1, "_id": 1}}, {"$limit": 3}, {"$project": {"k": 1}}],
        }}],
        10 => vec![
            doc! {"$sort": {"_id": 1}},
            doc! {"$limit": 30},
            doc! {"$lookup": {"from": "f", "localField": "fk", "foreignField": "fk", "as": "j"}},
        ],
        11 => vec![
            doc! {"$match": {"_id": {"$lt": 80}}},
            doc! {"$lookup": {"from": "u", "localField": "fk", "foreignField": "fk", "as": "j"}},
        ],
        12 => vec![
            doc! {"$match": {"_id": {"$gte": 500}}},
            doc! {"$lookup": {"from": "f", "let": {"x": "$fk"}, "pipeline": [
                {"$match": {"$expr": {"$eq": ["$fk", "$$x"]}}},
                {"$project": {"_id": 0, "w": 1}},
            ], "as": "j"}},
        ],
        13 => vec![
            doc! {"$match": {"_id": {"$lt": 25}}},
            doc! {"$graphLookup": {"from": "f", "startWith": "$fk", "connectFromField": "next", "connectToField": "fk", "as": "path", "maxDepth": 2, "depthField": "d"}},
        ],
        14 => vec![
            doc! {"$unionWith": {"coll": "f", "pipeline": [{"$project": {"_id": 0, "fk": 1, "w": 1}}]}},
        ],
        15 => vec![doc! {"$unionWith": "u"}],
        16 => vec![
            doc! {"$setWindowFields": {"partitionBy": "$g", "sortBy": {"_id": 1}, "output": {"cum": {"$sum": "$k", "window": {"documents": ["unbounded", "current"]}}}}},
        ],
        17 => vec![
            doc! {"$group": {"_id": "$g", "total": {"$sum": "$k"}}},
            doc! {"$out": format!("out{i}")},
        ],
        18 => vec![
            doc! {"$project": {"_id": 1, "k": 1, "g": 1}},
            doc! {"$merge": {"into": "m", "whenMatched": "replace", "whenNotMatched": "insert"}},
        ],
        _ => vec![doc! {"$project": {"k": 1, "e": expression(g)}}],
    }
}

/// One generated pipeline on the main collection.
fn pipeline(g: &mut Gen, i: usize) -> Vec<Document> {
    let mut p = Vec::new();
    match g.below(4) {
        0 => p.push(doc! {"$match": {"k": {"$gte": g.below(1000)}}}),
        1 => p.push(doc! {"$match": {"g": g.pick(&["a", "b", "c"])}}),
        2 => p.push(doc! {"$match": {"v": {"$lt": g.below(17)}}}),
        _ => {}
    }
    if g.below(3) == 0 {
        p.push(doc! {"$addFields": {"e": expression(g)}});
    }
    if g.below(6) == 0 {
        p.push(doc! {"$unwind": "$arr"});
    }
    let unwound = p.iter().any(|s| s.contains_key("$unwind"));
    let middle = blocking(g, i);
    let last = middle.last().cloned().unwrap_or_default();
    let writes = last.contains_key("$out") || last.contains_key("$merge");
    // A `$limit` keeps a defined set of documents only after a sort on a
    // unique key: `_id`, unless documents were unwound or unioned.
    let unique_ids = !unwound && !last.contains_key("$unionWith") && !last.contains_key("$count");
    p.extend(middle);
    if !writes {
        match g.below(4) {
            0 => p.push(doc! {"$project": {"_id": 0, "e2": expression(g), "k": 1}}),
            1 => p.push(doc! {"$sort": {"_id": 1}}),
            2 if unique_ids => {
                p.push(doc! {"$sort": {"_id": -1}});
                p.push(doc! {"$limit": 5 + g.below(20)});
            }
            _ => {}
        }
    }
    p
}

/// A value with accumulator arrays sorted and doubles rounded.
fn canonical(v: &Bson) -> Bson {
    match v {
        // `$graphLookup`'s depth is a NumberLong on mongod; SecantusDB, the
        // reference here, gives an int.
        Bson::Document(d) => Bson::Document(
            d.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("d", Bson::Int32(n)) => (k.clone(), Bson::Int64(i64::from(*n))),
                    _ => (k.clone(), canonical(v)),
                })
                .collect(),
        ),
        Bson::Array(a) => {
            let mut items: Vec<Bson> = a.iter().map(canonical).collect();
            items.sort_by_key(|x| format!("{x:?}"));
            Bson::Array(items)
        }
        Bson::Double(f) => Bson::String(format!("double {f:.12e}")),
        other => other.clone(),
    }
}

async fn run(db: &Database, coll: &str, p: &[Document]) -> Result<Vec<Document>, i32> {
    let cursor = db
        .collection::<Document>(coll)
        .aggregate(p.to_vec())
        .await
        .map_err(|e| error_code(&e))?;
    cursor.try_collect().await.map_err(|e| error_code(&e))
}

/// What a pipeline answered, comparable across the two deployments.
async fn answer(db: &Database, coll: &str, p: &[Document], i: usize) -> Bson {
    let docs = match run(db, coll, p).await {
        Ok(d) => d,
        Err(code) => return Bson::from(doc! {"error": code}),
    };
    let last = p.last().cloned().unwrap_or_default();
    let target = last
        .get_str("$out")
        .ok()
        .map(str::to_owned)
        .or_else(|| last.get_document("$merge").ok().map(|_| "m".to_owned()));
    let docs = match target {
        Some(t) => {
            let _ = i;
            db.collection::<Document>(&t)
                .find(doc! {})
                .sort(doc! {"_id": 1})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap()
        }
        None => docs,
    };
    let ids: std::collections::HashSet<String> =
        docs.iter().map(|d| format!("{:?}", d.get("_id"))).collect();
    let ordered = last
        .get_document("$sort")
        .is_ok_and(|s| s.contains_key("_id"))
        && ids.len() == docs.len()
        && docs.iter().all(|d| d.contains_key("_id"));
    let mut out: Vec<Bson> = docs
        .iter()
        .map(|d| canonical(&Bson::Document(d.clone())))
        .collect();
    if !ordered {
        out.sort_by_key(|x| format!("{x:?}"));
    }
    Bson::Array(out)
}

/// The pipeline and where the two answers first differ.
fn difference(i: usize, coll: &str, p: &[Document], got: &Bson, want: &Bson) -> String {
    let show = |b: Option<&Bson>| format!("{b:?}").chars().take(700).collect::<String>();
    let pipeline = Bson::from(p.iter().cloned().map(Bson::Document).collect::<Vec<_>>());
    let (a, b) = match (got, want) {
        (Bson::Array(a), Bson::Array(b)) => (a.clone(), b.clone()),
        _ => (vec![got.clone()], vec![want.clone()]),
    };
    let at = (0..a.len().max(b.len()))
        .find(|j| a.get(*j) != b.get(*j))
        .unwrap_or(0);
    format!(
        "#{i} on {coll}: {pipeline}\n  {} vs {} documents; first difference at {at}\n  router:    {}\n  reference: {}",
        a.len(),
        b.len(),
        show(a.get(at)),
        show(b.get(at))
    )
}

async fn load(db: &Database) {
    db.collection::<Document>("c")
        .insert_many(main_docs())
        .await
        .unwrap();
    db.collection::<Document>("f")
        .insert_many(foreign_docs())
        .await
        .unwrap();
    db.collection::<Document>("u")
        .insert_many(unsharded_docs())
        .await
        .unwrap();
}

async fn shard_layout(client: &mongodb::Client) {
    admin(
        client,
        doc! {"enableSharding": "agg", "primaryShard": "shard0000"},
    )
    .await;
    admin(client, doc! {"shardCollection": "agg.c", "key": {"k": 1}}).await;
    admin(client, doc! {"shardCollection": "agg.f", "key": {"fk": 1}}).await;
    admin(client, doc! {"shardCollection": "agg.m", "key": {"_id": 1}}).await;
    for (middle, to) in [(300, "shard0001"), (600, "shard0002"), (800, "shard0001")] {
        admin(client, doc! {"split": "agg.c", "middle": {"k": middle}}).await;
        admin(
            client,
            doc! {"moveChunk": "agg.c", "find": {"k": middle}, "to": to, "_waitForDelete": true},
        )
        .await;
    }
    admin(client, doc! {"split": "agg.f", "middle": {"fk": 30}}).await;
    admin(
        client,
        doc! {"moveChunk": "agg.f", "find": {"fk": 30}, "to": "shard0002", "_waitForDelete": true},
    )
    .await;
    admin(client, doc! {"split": "agg.m", "middle": {"_id": 200}}).await;
    admin(client, doc! {"moveChunk": "agg.m", "find": {"_id": 200}, "to": "shard0001", "_waitForDelete": true}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_pipelines_match_an_unsharded_server() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    shard_layout(&client).await;
    let router = client.database("agg");
    load(&router).await;
    let dir = tempfile::tempdir().unwrap();
    let reference_server = support::start_shards(dir.path(), 1, false).await;
    let reference = direct_client(&reference_server[0]).await.database("agg");
    load(&reference).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let mut moves = 0;
            let shards = ["shard0000", "shard0002", "shard0001"];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // The source's copies stay (as orphans) for the cleanup delay:
                // a range deleted at once can be missed by a read that
                // targeted the old owner just before the commit.
                let cmd = doc! {"moveChunk": "agg.c", "find": {"k": 700}, "to": shards[moves % 3]};
                if client.database("admin").run_command(cmd).await.is_ok() {
                    moves += 1;
                }
            }
            moves
        }
    });
    let seed: u64 = std::env::var("SHARDGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0a99_2026);
    let mut g = Gen(seed);
    let mut failures = Vec::new();
    let total = 320;
    for i in 0..total {
        // Most pipelines read the sharded collection; some read the
        // unsharded one and join or union the sharded ones into it.
        let (coll, p) = if i % 8 == 7 {
            let p = match g.below(3) {
                0 => vec![
                    doc! {"$lookup": {"from": "c", "localField": "fk", "foreignField": "fk", "as": "j"}},
                    doc! {"$project": {"n": {"$size": "$j"}}},
                ],
                1 => vec![
                    doc! {"$unionWith": {"coll": "c", "pipeline": [{"$match": {"k": {"$lt": 200}}}]}},
                    doc! {"$count": "n"},
                ],
                _ => vec![
                    doc! {"$lookup": {"from": "f", "localField": "fk", "foreignField": "next", "as": "j"}},
                ],
            };
            ("u", p)
        } else {
            ("c", pipeline(&mut g, i))
        };
        let got = answer(&router, coll, &p, i).await;
        let want = answer(&reference, coll, &p, i).await;
        if got != want {
            failures.push(difference(i, coll, &p, &got, &want));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let moves = mover.await.unwrap();
    assert!(
        failures.is_empty(),
        "seed {seed:#x}: {} of {total} pipelines differ:\n{}",
        failures.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(moves >= 3, "{moves} migrations during the run");
}
