//! DDL and statistics on a collection whose chunks span shards, checked
//! against one unsharded server given the same commands, and on every
//! shard directly: index commands, `collMod`, a shard refusing an index
//! (the error names it, `checkMetadataConsistency` reports it until the
//! command is run again), migrations carrying indexes and collection
//! options, and `collStats`/`dbStats`/`validate`/`$collStats` summed or
//! listed per shard.

mod support;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Database;
use support::{admin, TestCluster};

/// Index name → spec without `v`/`ns`, as a user compares them.
async fn indexes(db: &Database, coll: &str) -> Vec<Document> {
    let reply = db
        .run_command(doc! {"listIndexes": coll})
        .await
        .unwrap_or_else(|e| panic!("listIndexes {coll}: {e}"));
    let mut specs: Vec<Document> = reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|s| {
            let mut s = s.as_document().unwrap().clone();
            s.remove("v");
            s.remove("ns");
            s
        })
        .collect();
    specs.sort_by_key(|s| s.get_str("name").unwrap().to_owned());
    specs
}

/// The documents of `coll`, by `_id`.
async fn documents(db: &Database, coll: &str) -> Vec<Document> {
    db.collection::<Document>(coll)
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// `ddl.c` sharded on `{k: 1}` with chunks `[MinKey, 100)` and `[200,
/// MaxKey)` on shard0000 and `[100, 200)` on shard0001; shard0002 holds
/// none yet. 300 documents.
async fn sharded(cluster: &TestCluster) -> mongodb::Client {
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "ddl", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "ddl.c", "key": {"k": 1}}).await;
    for middle in [100, 200] {
        admin(&client, doc! {"split": "ddl.c", "middle": {"k": middle}}).await;
    }
    admin(
        &client,
        doc! {"moveChunk": "ddl.c", "find": {"k": 150}, "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    client
}

/// 300 documents; `t` is far in the future, so a TTL index never removes
/// one during the test.
fn docs() -> Vec<Document> {
    (0..300i64)
        .map(|i| doc! {"_id": i, "k": i, "v": i % 7, "u": i, "d": i + 1000, "t": bson::DateTime::from_millis(4_000_000_000_000)})
        .collect()
}

/// Runs `cmd` through the router and on the baseline; both must succeed.
async fn both(router: &Database, direct: &Database, cmd: Document) {
    router
        .run_command(cmd.clone())
        .await
        .unwrap_or_else(|e| panic!("router: {cmd}: {e}"));
    direct
        .run_command(cmd.clone())
        .await
        .unwrap_or_else(|e| panic!("baseline: {cmd}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_on_three_shards_matches_an_unsharded_server_and_moves_with_chunks() {
    let cluster = TestCluster::start(3).await;
    let baseline = support::start_shards(&cluster.dir().join("baseline"), 1, false).await;
    let client = sharded(&cluster).await;
    let router = client.database("ddl");
    let direct = support::direct_client(&baseline[0]).await.database("ddl");
    router.collection("c").insert_many(docs()).await.unwrap();
    direct.collection("c").insert_many(docs()).await.unwrap();
    // The shard-key index shardCollection built.
    direct
        .run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"k": 1}, "name": "k_1"}]})
        .await
        .unwrap();
    let shard_dbs: Vec<Database> = futures::future::join_all(
        cluster
            .shards
            .iter()
            .map(|s| async { support::direct_client(s).await.database("ddl") }),
    )
    .await;

    let steps = [
        doc! {"createIndexes": "c", "indexes": [{"key": {"v": 1}, "name": "v_1"}]},
        doc! {"createIndexes": "c", "indexes": [
            {"key": {"k": 1, "u": 1}, "name": "k_u", "unique": true},
            {"key": {"t": 1}, "name": "ttl", "expireAfterSeconds": 3600},
        ]},
        doc! {"collMod": "c", "index": {"name": "ttl", "expireAfterSeconds": 60}},
        doc! {"collMod": "c", "index": {"name": "v_1", "hidden": true}},
        doc! {"dropIndexes": "c", "index": "v_1"},
        doc! {"createIndexes": "c", "indexes": [{"key": {"d": -1}, "name": "d_-1"}]},
    ];
    // After each step a chunk moves; the third step sends one to shard0002,
    // which had no chunk (and no collection) until then.
    let moves = [
        (250, "shard0001"),
        (50, "shard0001"),
        (150, "shard0002"),
        (250, "shard0000"),
        (150, "shard0000"),
        (50, "shard0002"),
    ];
    for (step, (key, to)) in steps.into_iter().zip(moves) {
        both(&router, &direct, step.clone()).await;
        admin(
            &client,
            doc! {"moveChunk": "ddl.c", "find": {"k": key}, "to": to, "_waitForDelete": true},
        )
        .await;
        let expected = indexes(&direct, "c").await;
        assert_eq!(indexes(&router, "c").await, expected, "after {step}");
        // Every shard owning a chunk holds the same indexes.
        let chunks = support::config_docs(&client, "chunks", doc! {}, doc! {"min": 1}).await;
        for (i, shard_db) in shard_dbs.iter().enumerate() {
            let id = format!("shard000{i}");
            if chunks.iter().any(|c| c.get_str("shard").unwrap() == id) {
                assert_eq!(indexes(shard_db, "c").await, expected, "{id} after {step}");
            }
        }
        let (a, b) = (documents(&router, "c").await, documents(&direct, "c").await);
        assert!(
            a == b,
            "documents differ after {step}: {} vs {}",
            a.len(),
            b.len()
        );
    }
    let report = admin(&client, doc! {"checkMetadataConsistency": 1}).await;
    let found = report
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    assert!(found.is_empty(), "{report}");

    // `create` of the existing collection answers as the unsharded server
    // does (mongos sends it to the primary shard); a command nobody knows
    // is CommandNotFound.
    for cmd in [
        doc! {"create": "c"},
        doc! {"create": "c", "capped": true, "size": 4096},
        doc! {"noSuchCommand": "c"},
    ] {
        let code = |r: mongodb::error::Result<Document>| r.err().map(|e| support::error_code(&e));
        let (r, d) = (
            code(router.run_command(cmd.clone()).await),
            code(direct.run_command(cmd.clone()).await),
        );
        assert_eq!(r, d, "{cmd}");
        if cmd.contains_key("capped") {
            assert_eq!(r, Some(48), "NamespaceExists");
        }
        if cmd.contains_key("noSuchCommand") {
            assert_eq!(r, Some(59));
        }
    }

    // Rename: every shard's copy and the metadata follow; then drop and
    // re-create under the new name.
    let rename = doc! {"renameCollection": "ddl.c", "to": "ddl.c2"};
    admin(&client, rename.clone()).await;
    direct
        .client()
        .database("admin")
        .run_command(rename)
        .await
        .unwrap();
    let collections = support::config_docs(
        &client,
        "collections",
        doc! {"_id": {"$regex": "^ddl\\."}},
        doc! {"_id": 1},
    )
    .await;
    let names: Vec<&str> = collections
        .iter()
        .map(|c| c.get_str("_id").unwrap())
        .collect();
    assert_eq!(names, ["ddl.c2"]);
    assert_eq!(indexes(&router, "c2").await, indexes(&direct, "c2").await);
    let (a, b) = (
        documents(&router, "c2").await,
        documents(&direct, "c2").await,
    );
    assert!(
        a == b && a.len() == 300,
        "documents differ after the rename: {} vs {}",
        a.len(),
        b.len()
    );
    assert!(documents(&router, "c").await.is_empty());
    for (i, shard_db) in shard_dbs.iter().enumerate() {
        let names = shard_db.list_collection_names().await.unwrap();
        assert!(
            !names.contains(&"c".to_owned()),
            "shard000{i} still has c: {names:?}"
        );
    }
    // A sharded collection stays in its database.
    let e = support::admin_error(
        &client,
        doc! {"renameCollection": "ddl.c2", "to": "other.c2"},
    )
    .await;
    assert_eq!(e, 20);
    both(&router, &direct, doc! {"drop": "c2"}).await;
    assert!(documents(&router, "c2").await.is_empty());
    router.collection("c2").insert_many(docs()).await.unwrap();
    direct.collection("c2").insert_many(docs()).await.unwrap();
    assert_eq!(
        documents(&router, "c2").await,
        documents(&direct, "c2").await
    );
    assert_eq!(indexes(&router, "c2").await, indexes(&direct, "c2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_refusing_an_index_is_named_and_reported_until_repaired() {
    let cluster = TestCluster::start(3).await;
    let client = sharded(&cluster).await;
    let router = client.database("ddl");
    router.collection("c").insert_many(docs()).await.unwrap();
    // Duplicate `d` values on shard0001 only (k in [100, 110)).
    router
        .collection::<Document>("c")
        .update_many(
            doc! {"k": {"$gte": 100, "$lt": 110}},
            doc! {"$set": {"d": 7}},
        )
        .await
        .unwrap();
    let unique =
        doc! {"createIndexes": "c", "indexes": [{"key": {"d": 1}, "name": "d_1", "unique": true}]};
    let e = router.run_command(unique.clone()).await.unwrap_err();
    assert_eq!(support::error_code(&e), 11000, "{e}");
    let message = e.to_string();
    assert!(message.contains("shard0001"), "{message}");
    assert!(!message.contains("shard0000 ("), "{message}");
    let inconsistent = |report: Document| -> Vec<Document> {
        report
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()
            .iter()
            .map(|d| d.as_document().unwrap().clone())
            .collect()
    };
    // Collection, database and cluster level all report it.
    for (db, cmd) in [
        ("ddl", doc! {"checkMetadataConsistency": "c"}),
        ("ddl", doc! {"checkMetadataConsistency": 1}),
        ("admin", doc! {"checkMetadataConsistency": 1}),
    ] {
        let found = inconsistent(client.database(db).run_command(cmd.clone()).await.unwrap());
        assert_eq!(found.len(), 1, "{cmd}: {found:?}");
        assert_eq!(found[0].get_str("type").unwrap(), "InconsistentIndex");
        let info = found[0]
            .get_document("details")
            .unwrap()
            .get_document("info")
            .unwrap();
        assert_eq!(info.get_str("indexName").unwrap(), "d_1");
        assert_eq!(
            info.get_array("missingFromShards").unwrap(),
            &vec![Bson::String("shard0001".into())]
        );
    }
    // Fix the data, run the command again: consistent.
    router
        .collection::<Document>("c")
        .update_many(
            doc! {"k": {"$gte": 100, "$lt": 110}},
            vec![doc! {"$set": {"d": {"$add": ["$k", 1000]}}}],
        )
        .await
        .unwrap();
    let reply = router.run_command(unique).await.unwrap();
    assert_eq!(reply.get_document("raw").unwrap().len(), 2, "{reply}");
    let found = inconsistent(admin(&client, doc! {"checkMetadataConsistency": 1}).await);
    assert!(found.is_empty(), "{found:?}");
    // A capped conversion or clone of a sharded collection is refused as on
    // mongos, and reIndex is not a mongos command.
    for (cmd, code) in [
        (doc! {"convertToCapped": "c", "size": 100_000}, 20),
        (
            doc! {"cloneCollectionAsCapped": "c", "toCollection": "cc", "size": 100_000},
            20,
        ),
        (doc! {"reIndex": "c"}, 59),
    ] {
        let e = router.run_command(cmd.clone()).await.unwrap_err();
        assert_eq!(support::error_code(&e), code, "{cmd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_sum_or_list_every_shard() {
    let cluster = TestCluster::start(3).await;
    let client = sharded(&cluster).await;
    let router = client.database("ddl");
    router.collection("c").insert_many(docs()).await.unwrap();
    router
        .collection("small")
        .insert_one(doc! {"x": 1})
        .await
        .unwrap();
    let stats = router.run_command(doc! {"collStats": "c"}).await.unwrap();
    assert!(stats.get_bool("sharded").unwrap());
    assert_eq!(support_number(stats.get("count")), 300, "{stats}");
    assert_eq!(support_number(stats.get("nchunks")), 3);
    let shards = stats.get_document("shards").unwrap();
    let mut ids: Vec<&String> = shards.keys().collect();
    ids.sort();
    assert_eq!(ids, ["shard0000", "shard0001"]);
    let per_shard: i64 = shards
        .values()
        .map(|s| {
            s.as_document()
                .unwrap()
                .get_i32("count")
                .map(i64::from)
                .unwrap()
        })
        .sum();
    assert_eq!(per_shard, 300);
    assert_eq!(
        support_number(stats.get("size")),
        shards
            .values()
            .map(|s| support_number(s.as_document().unwrap().get("size")))
            .sum::<i64>()
    );

    let db_stats = router.run_command(doc! {"dbStats": 1}).await.unwrap();
    assert_eq!(support_number(db_stats.get("objects")), 301, "{db_stats}");
    assert_eq!(db_stats.get_document("raw").unwrap().len(), 3);

    let validate = router.run_command(doc! {"validate": "c"}).await.unwrap();
    assert!(validate.get_bool("valid").unwrap(), "{validate}");
    assert_eq!(validate.get_document("raw").unwrap().len(), 2);

    let per_shard: Vec<Document> = router
        .collection::<Document>("c")
        .aggregate(vec![doc! {"$collStats": {"count": {}}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut listed: Vec<(String, i64)> = per_shard
        .iter()
        .map(|d| {
            (
                d.get_str("shard").unwrap().to_owned(),
                support_number(d.get("count")),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("shard0000".to_owned(), 200), ("shard0001".to_owned(), 100)]
    );
    // Later stages run over the shards' documents.
    let total: Vec<Document> = router
        .collection::<Document>("c")
        .aggregate(vec![
            doc! {"$collStats": {"count": {}}},
            doc! {"$group": {"_id": null, "n": {"$sum": "$count"}, "shards": {"$sum": 1}}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(total.len(), 1);
    assert_eq!(support_number(total[0].get("n")), 300);
    assert_eq!(support_number(total[0].get("shards")), 2);
    let index_stats: Vec<Document> = router
        .collection::<Document>("c")
        .aggregate(vec![doc! {"$indexStats": {}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut named: Vec<(String, String)> = index_stats
        .iter()
        .map(|d| {
            (
                d.get_str("shard").unwrap().to_owned(),
                d.get_str("name").unwrap().to_owned(),
            )
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("shard0000".to_owned(), "_id_".to_owned()),
            ("shard0000".to_owned(), "k_1".to_owned()),
            ("shard0001".to_owned(), "_id_".to_owned()),
            ("shard0001".to_owned(), "k_1".to_owned()),
        ]
    );
}

fn support_number(v: Option<&Bson>) -> i64 {
    match v {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(f)) => *f as i64,
        other => panic!("not a number: {other:?}"),
    }
}

/// mongosh's own helpers on the sharded collection, as an operator runs
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongosh_helpers_answer_for_the_whole_collection() {
    let cluster = TestCluster::start(3).await;
    let client = sharded(&cluster).await;
    client
        .database("ddl")
        .collection("c")
        .insert_many(docs())
        .await
        .unwrap();
    let script = r#"
const d = db.getSiblingDB("ddl");
const c = d.c;
const out = {};
const step = (name, f) => { try { out[name] = f(); } catch (e) { out[name] = "ERROR " + e.message; } };
step("createIndex", () => c.createIndex({n: 1}));
step("indexes", () => c.getIndexes().map(i => i.name).sort());
step("dropIndex", () => c.dropIndex("n_1").ok);
step("afterDrop", () => c.getIndexes().map(i => i.name).sort());
step("stats", () => { const s = c.stats(); return {sharded: s.sharded, count: s.count, shards: Object.keys(s.shards || {}).sort(), nchunks: s.nchunks}; });
step("distribution", () => { const r = c.getShardDistribution(); return JSON.parse(JSON.stringify(r.value || r)); });
step("validate", () => { const v = c.validate(); return {valid: v.valid, raw: Object.keys(v.raw || {}).length}; });
step("dbStats", () => { const s = d.stats(); return {objects: s.objects, raw: Object.keys(s.raw || {}).length}; });
step("currentOp", () => { const ops = db.currentOp().inprog; return {router: ops.filter(o => !o.shard && typeof o.opid === "number").length > 0, shards: [...new Set(ops.filter(o => o.shard).map(o => o.shard))].sort(), opid: typeof ops.find(o => o.shard).opid}; });
step("hostInfo", () => { const h = db.hostInfo(); return {cores: h.system.numCores > 0, os: h.os.type}; });
step("listCommands", () => { const l = db.listCommands(); return typeof l; });
step("balancerStatus", () => sh.balancerCollectionStatus("ddl.c").balancerCompliant);
step("dataDistribution", () => sh.getShardedDataDistribution().toArray().map(x => ({ns: x.ns, shards: x.shards.map(s => s.shardName + ":" + s.numOwnedDocuments + ":" + s.numOrphanedDocs).sort()})));
step("consistency", () => sh.checkMetadataConsistency().toArray().length);
print(JSON.stringify(out));
"#;
    let out = support::mongosh(&cluster.router.uri(), script);
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no result line in: {out}"));
    let r: serde_json::Value = serde_json::from_str(line).unwrap();
    println!("{r:#}");
    assert_eq!(r["createIndex"], "n_1", "{r:#}");
    assert_eq!(r["indexes"], serde_json::json!(["_id_", "k_1", "n_1"]));
    assert_eq!(r["dropIndex"], 1);
    assert_eq!(r["afterDrop"], serde_json::json!(["_id_", "k_1"]));
    assert_eq!(
        r["stats"],
        serde_json::json!({"sharded": true, "count": 300, "shards": ["shard0000", "shard0001"]})
    );
    assert_eq!(r["validate"], serde_json::json!({"valid": true, "raw": 2}));
    assert_eq!(r["dbStats"], serde_json::json!({"objects": 300, "raw": 3}));
    assert_eq!(r["currentOp"]["opid"], "string", "{r:#}");
    assert_eq!(r["currentOp"]["router"], true, "{r:#}");
    assert_eq!(
        r["currentOp"]["shards"],
        serde_json::json!(["shard0000", "shard0001", "shard0002"])
    );
    assert_eq!(
        r["hostInfo"],
        serde_json::json!({"cores": true, "os": "Linux"})
    );
    assert_eq!(r["listCommands"], "object");
    assert_eq!(r["balancerStatus"], true);
    assert_eq!(
        r["dataDistribution"],
        serde_json::json!([{"ns": "ddl.c", "shards": ["shard0000:200:0", "shard0001:100:0"]}])
    );
    assert_eq!(r["consistency"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_op_names_each_shard_and_kill_op_reaches_it() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    let reply = admin(&client, doc! {"currentOp": 1, "$all": true}).await;
    let ops = reply.get_array("inprog").unwrap();
    assert!(!ops.is_empty(), "{reply}");
    let mut shards = std::collections::BTreeSet::new();
    for op in ops {
        let op = op.as_document().unwrap();
        let Ok(shard) = op.get_str("shard") else {
            // The router's own operation: a plain opid.
            assert!(
                op.get_i32("opid").is_ok() || !op.get_bool("active").unwrap(),
                "{op}"
            );
            continue;
        };
        let opid = op.get_str("opid").unwrap();
        assert!(opid.starts_with(&format!("{shard}:")), "{op}");
        shards.insert(shard.to_owned());
    }
    assert_eq!(shards.len(), 3, "{reply}");
    // An id no operation has: the shard answers (as mongod does) that it
    // attempts the kill.
    let killed = admin(&client, doc! {"killOp": 1, "op": "shard0001:987654"}).await;
    assert_eq!(killed.get_str("shard").unwrap(), "shard0001");
    let e = support::admin_error(&client, doc! {"killOp": 1, "op": "nosuchshard:1"}).await;
    assert_eq!(e, 70, "ShardNotFound");
    let e = support::admin_error(&client, doc! {"killOp": 1, "op": [5]}).await;
    assert_eq!(e, 14, "TypeMismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refining_the_shard_key_extends_every_bound_without_moving_data() {
    let cluster = TestCluster::start(3).await;
    let client = sharded(&cluster).await;
    let router = client.database("ddl");
    router.collection("c").insert_many(docs()).await.unwrap();
    let before = documents(&router, "c").await;
    let refine = doc! {"refineCollectionShardKey": "ddl.c", "key": {"k": 1, "v": 1}};
    // An index for the new key must exist first.
    assert_eq!(support::admin_error(&client, refine.clone()).await, 72);
    router
        .run_command(
            doc! {"createIndexes": "c", "indexes": [{"key": {"k": 1, "v": 1}, "name": "k_v"}]},
        )
        .await
        .unwrap();
    // The new key must extend the old one.
    for key in [doc! {"v": 1, "k": 1}, doc! {"k": 1}] {
        let e = support::admin_error(
            &client,
            doc! {"refineCollectionShardKey": "ddl.c", "key": key.clone()},
        )
        .await;
        assert_eq!(e, 72, "{key}");
    }
    admin(&client, refine).await;
    let coll = support::config_docs(&client, "collections", doc! {"_id": "ddl.c"}, doc! {}).await;
    assert_eq!(coll[0].get_document("key").unwrap(), &doc! {"k": 1, "v": 1});
    let chunks =
        support::config_docs(&client, "chunks", doc! {"ns": "ddl.c"}, doc! {"min": 1}).await;
    let bounds: Vec<(Document, Document, String)> = chunks
        .iter()
        .map(|c| {
            (
                c.get_document("min").unwrap().clone(),
                c.get_document("max").unwrap().clone(),
                c.get_str("shard").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        bounds,
        [
            (
                doc! {"k": Bson::MinKey, "v": Bson::MinKey},
                doc! {"k": 100, "v": Bson::MinKey},
                "shard0000".to_owned()
            ),
            (
                doc! {"k": 100, "v": Bson::MinKey},
                doc! {"k": 200, "v": Bson::MinKey},
                "shard0001".to_owned()
            ),
            (
                doc! {"k": 200, "v": Bson::MinKey},
                doc! {"k": Bson::MaxKey, "v": Bson::MaxKey},
                "shard0000".to_owned()
            ),
        ]
    );
    assert!(documents(&router, "c").await == before, "documents changed");
    // The finer key splits inside one k value and moves the piece.
    admin(
        &client,
        doc! {"split": "ddl.c", "middle": {"k": 150, "v": 4}},
    )
    .await;
    admin(
        &client,
        doc! {"moveChunk": "ddl.c", "find": {"k": 150, "v": 5}, "to": "shard0002", "_waitForDelete": true},
    )
    .await;
    assert!(
        documents(&router, "c").await == before,
        "documents changed after the move"
    );
    let one: Vec<Document> = router
        .collection::<Document>("c")
        .find(doc! {"k": 150, "v": 3})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].get_i64("_id").unwrap(), 150);
}
