//! `mapReduce` through the router, over a collection spread unevenly over 3
//! shards and over an unsharded one holding the same documents: the same
//! results (key order, values as a mongod's JavaScript returns them), with
//! `query`, `sort`, `limit`, `finalize` and `scope`; before and after a
//! chunk moves; written out by `replace`, `merge` and `reduce`; and the
//! errors mongos gives for bad arguments and failing JavaScript; and
//! mongosh's `mapReduce()` helper through the router.
//!
//! The shards run no JavaScript (SecantusDB has none, and answers a
//! `mapReduce` with no results): the router runs it, so the expected
//! values are computed here from the documents.

mod support;

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use support::{admin, error_code, TestCluster};

const GROUPS: [&str; 4] = ["a", "b", "c", "d"];

fn docs() -> Vec<Document> {
    (0..2000i64)
        .map(|i| {
            doc! {
                "_id": i,
                "k": (i * 7) % 2000,
                "g": GROUPS[(i % 4) as usize],
                "v": (i % 10) as i32,
            }
        })
        .collect()
}

/// `mr.c` sharded on `k`, chunks on 3 shards (most on shard0002), and
/// `mr.plain` unsharded; both hold [`docs`].
async fn layout(client: &mongodb::Client) {
    admin(
        client,
        doc! {"enableSharding": "mr", "primaryShard": "shard0000"},
    )
    .await;
    admin(client, doc! {"shardCollection": "mr.c", "key": {"k": 1}}).await;
    for (middle, to) in [(300, "shard0001"), (500, "shard0002")] {
        admin(client, doc! {"split": "mr.c", "middle": {"k": middle}}).await;
        let mv =
            doc! {"moveChunk": "mr.c", "find": {"k": middle}, "to": to, "_waitForDelete": true};
        admin(client, mv).await;
    }
    let db = client.database("mr");
    db.collection::<Document>("c")
        .insert_many(docs())
        .await
        .unwrap();
    db.collection::<Document>("plain")
        .insert_many(docs())
        .await
        .unwrap();
}

async fn run(db: &mongodb::Database, cmd: Document) -> Document {
    db.run_command(cmd).await.unwrap()
}

/// An inline reply's `results`.
fn results(reply: &Document) -> Vec<Document> {
    reply
        .get_array("results")
        .unwrap_or_else(|_| panic!("no results: {reply}"))
        .iter()
        .map(|r| r.as_document().unwrap().clone())
        .collect()
}

/// What the sum of `v` per `g` is over `selected`, as `{_id, value}`.
fn sums(selected: &[&Document], finalize: impl Fn(f64) -> Bson) -> Vec<Document> {
    let mut by: BTreeMap<&str, f64> = BTreeMap::new();
    for d in selected {
        *by.entry(d.get_str("g").unwrap()).or_default() += f64::from(d.get_i32("v").unwrap());
    }
    by.into_iter()
        .map(|(g, s)| doc! {"_id": g, "value": finalize(s)})
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_reduce_over_three_shards_matches_the_documents() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    layout(&client).await;
    let db = client.database("mr");
    let all = docs();
    let every: Vec<&Document> = all.iter().collect();

    let plain = doc! {
        "map": "function() { emit(this.g, this.v); }",
        "reduce": "function(k, vs) { return Array.sum(vs); }",
        "out": {"inline": 1},
    };
    let want = sums(&every, Bson::Double);
    for coll in ["c", "plain"] {
        let mut cmd = doc! {"mapReduce": coll};
        cmd.extend(plain.clone());
        let got = run(&db, cmd).await;
        assert_eq!(results(&got), want, "{coll}");
        assert!(got.get("counts").is_none() && got.get("timeMillis").is_none());
    }

    // mongosh's helper (functions sent as JavaScript code), as a user runs it.
    let script = r#"
        const r = db.getSiblingDB("mr").c.mapReduce(
            function() { emit(this.g, this.v); },
            function(k, vs) { return Array.sum(vs); },
            {out: {inline: 1}});
        print(EJSON.stringify(r.results, {relaxed: false}));
    "#;
    let out = support::mongosh(&cluster.router.uri(), script);
    // The last line (mongosh warns first that mapReduce is deprecated).
    let last = out.trim().lines().last().unwrap_or_default();
    let printed: Vec<Document> = serde_json::from_str::<serde_json::Value>(last)
        .ok()
        .and_then(|v| bson::Bson::try_from(v).ok())
        .and_then(|b| match b {
            Bson::Array(a) => Some(a),
            _ => None,
        })
        .unwrap_or_else(|| panic!("mongosh printed {out}"))
        .into_iter()
        .map(|d| d.as_document().unwrap().clone())
        .collect();
    // mongosh reads a whole double back as a JavaScript number: compare
    // the numbers.
    let numbers = |docs: &[Document]| -> Vec<(String, f64)> {
        docs.iter()
            .map(|d| {
                let v = match d.get("value") {
                    Some(Bson::Double(v)) => *v,
                    Some(Bson::Int32(v)) => f64::from(*v),
                    other => panic!("value {other:?}"),
                };
                (d.get_str("_id").unwrap().to_owned(), v)
            })
            .collect()
    };
    assert_eq!(numbers(&printed), numbers(&want), "mongosh");

    // query, sort, limit, finalize and scope.
    let mut selected: Vec<&Document> = all
        .iter()
        .filter(|d| d.get_i32("v").unwrap() >= 5)
        .collect();
    selected.sort_by_key(|d| d.get_i64("k").unwrap());
    selected.truncate(101);
    let want = sums(&selected, |s| {
        Bson::Document(doc! {"total": s, "scaled": s * 3.0})
    });
    let shaped = |coll: &str| {
        doc! {
            "mapReduce": coll,
            "map": bson::Bson::JavaScriptCode("function() { emit(this.g, this.v); }".into()),
            "reduce": "function(k, vs) { var t = 0; vs.forEach(function(v) { t += v; }); return t; }",
            "finalize": "function(k, v) { return {total: v, scaled: v * factor}; }",
            "scope": {"factor": 3},
            "query": {"v": {"$gte": 5}},
            "sort": {"k": 1},
            "limit": 101,
            "out": {"inline": 1},
        }
    };
    for coll in ["c", "plain"] {
        let got = run(&db, shaped(coll)).await;
        assert_eq!(results(&got), want, "{coll}");
    }

    // A chunk moves: the same answer, nothing counted twice or lost.
    let mv =
        doc! {"moveChunk": "mr.c", "find": {"k": 600}, "to": "shard0001", "_waitForDelete": false};
    admin(&client, mv).await;
    let got = run(&db, shaped("c")).await;
    assert_eq!(results(&got), want);
    let count_map = doc! {
        "mapReduce": "c",
        "map": "function() { emit(this._id % 3, 1); }",
        "reduce": "function(k, vs) { return Array.sum(vs); }",
        "out": {"inline": 1},
    };
    let got = run(&db, count_map).await;
    // `this._id % 3` is a JavaScript number: the keys come back doubles.
    assert_eq!(
        results(&got),
        vec![
            doc! {"_id": 0.0, "value": 667.0},
            doc! {"_id": 1.0, "value": 667.0},
            doc! {"_id": 2.0, "value": 666.0},
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_reduce_writes_out_by_replace_merge_and_reduce() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    layout(&client).await;
    let db = client.database("mr");
    let base = |query: Document, out: Bson| {
        doc! {
            "mapReduce": "c",
            "map": "function() { emit(this.g, this.v); }",
            "reduce": "function(k, vs) { return Array.sum(vs); }",
            "query": query,
            "out": out,
        }
    };
    let read = |coll: &'static str, db: mongodb::Database| async move {
        support::all_by_id(&db.collection::<Document>(coll)).await
    };
    let all = docs();
    let low: Vec<&Document> = all
        .iter()
        .filter(|d| d.get_i64("_id").unwrap() < 1000)
        .collect();
    let high: Vec<&Document> = all
        .iter()
        .filter(|d| d.get_i64("_id").unwrap() >= 1000)
        .collect();
    let every: Vec<&Document> = all.iter().collect();

    // replace (a string names it): the collection holds exactly the results.
    let reply = run(&db, base(doc! {"_id": {"$lt": 1000}}, "out1".into())).await;
    assert_eq!(reply.get_str("result").unwrap(), "out1");
    assert_eq!(read("out1", db.clone()).await, sums(&low, Bson::Double));
    let reply = run(
        &db,
        base(doc! {"_id": {"$gte": 1000}, "g": "a"}, "out1".into()),
    )
    .await;
    assert_eq!(reply.get_str("result").unwrap(), "out1");
    let only_a: Vec<&Document> = high
        .iter()
        .copied()
        .filter(|d| d.get_str("g").unwrap() == "a")
        .collect();
    assert_eq!(read("out1", db.clone()).await, sums(&only_a, Bson::Double));

    // merge: results replace documents with their key, others stay.
    run(&db, base(doc! {"_id": {"$lt": 1000}}, "out2".into())).await;
    let out = Bson::Document(doc! {"merge": "out2"});
    run(&db, base(doc! {"_id": {"$gte": 1000}, "g": "a"}, out)).await;
    let mut want = sums(&low, Bson::Double);
    want[0] = sums(&only_a, Bson::Double).remove(0);
    assert_eq!(read("out2", db.clone()).await, want);

    // reduce: results reduced with the held values.
    run(&db, base(doc! {"_id": {"$lt": 1000}}, "out3".into())).await;
    let out = Bson::Document(doc! {"reduce": "out3"});
    run(&db, base(doc! {"_id": {"$gte": 1000}}, out)).await;
    assert_eq!(read("out3", db.clone()).await, sums(&every, Bson::Double));

    // Into another database: the reply names it.
    let out = Bson::Document(doc! {"replace": "totals", "db": "mr_out"});
    let reply = run(&db, base(doc! {}, out)).await;
    assert_eq!(
        reply.get_document("result").unwrap(),
        &doc! {"db": "mr_out", "collection": "totals"}
    );
    let other = client.database("mr_out");
    assert_eq!(read("totals", other).await, sums(&every, Bson::Double));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_reduce_errors_are_mongos_errors() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    layout(&client).await;
    let db = client.database("mr");
    let code = |cmd: Document| {
        let db = db.clone();
        async move { error_code(&db.run_command(cmd).await.unwrap_err()) }
    };
    let ok_map = "function() { emit(this.g, 1); }";
    let ok_reduce = "function(k, vs) { return Array.sum(vs); }";
    let missing = doc! {"mapReduce": "c", "reduce": ok_reduce, "out": {"inline": 1}};
    assert_eq!(code(missing).await, 40414, "map is required");
    let missing = doc! {"mapReduce": "c", "map": ok_map, "reduce": ok_reduce};
    assert_eq!(code(missing).await, 40414, "out is required");
    let unknown = doc! {"mapReduce": "c", "map": ok_map, "reduce": ok_reduce, "out": {"inline": 1}, "nope": 1};
    assert_eq!(code(unknown).await, 40415);
    let bad_out = doc! {"mapReduce": "c", "map": ok_map, "reduce": ok_reduce, "out": {"inline": 1, "db": "x"}};
    assert_eq!(code(bad_out).await, 2);
    let syntax =
        doc! {"mapReduce": "c", "map": "function( {", "reduce": ok_reduce, "out": {"inline": 1}};
    assert_eq!(code(syntax).await, 139, "JSInterpreterFailure");
    let throws = doc! {"mapReduce": "c", "map": "function() { throw new Error('no'); }", "reduce": ok_reduce, "out": {"inline": 1}};
    assert_eq!(code(throws).await, 139);
    // Not in a transaction, as on mongod.
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    let in_txn = doc! {"mapReduce": "c", "map": ok_map, "reduce": ok_reduce, "out": {"inline": 1}};
    let e = db
        .run_command(in_txn)
        .session(&mut session)
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 263, "OperationNotSupportedInTransaction");
    drop(session);
    // A missing collection maps nothing.
    let none =
        doc! {"mapReduce": "nothing", "map": ok_map, "reduce": ok_reduce, "out": {"inline": 1}};
    let reply = run(&db, none).await;
    assert!(results(&reply).is_empty());
}

/// Emitted values past 4 × `limits.max_merge_mb` fail the job with
/// ExceededMemoryLimit (a mongod would spill them to disk) instead of
/// growing the router without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_reduce_beyond_the_router_budget_fails_cleanly() {
    let config = shardgate_router::RouterConfig {
        limits: shardgate_router::LimitsConfig {
            max_merge_mb: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let cluster = TestCluster::start_with(2, config, false).await;
    let client = cluster.client().await;
    let db = client.database("mrb");
    let docs: Vec<Document> = (0..200i64).map(|i| doc! {"_id": i}).collect();
    db.collection::<Document>("c")
        .insert_many(docs)
        .await
        .unwrap();
    let big = doc! {
        "mapReduce": "c",
        "map": "function() { emit(this._id, 'x'.repeat(100000)); }",
        "reduce": "function(k, vs) { return vs[0]; }",
        "out": {"inline": 1},
    };
    let e = db.run_command(big).await.unwrap_err();
    assert_eq!(error_code(&e), 146, "{e}");
    // The router goes on answering.
    let small = doc! {
        "mapReduce": "c",
        "map": "function() { emit(1, 1); }",
        "reduce": "function(k, vs) { return Array.sum(vs); }",
        "out": {"inline": 1},
    };
    let reply = run(&db, small).await;
    assert_eq!(results(&reply), vec![doc! {"_id": 1.0, "value": 200.0}]);
}
