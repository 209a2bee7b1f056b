//! Cluster-wide settings and router-process commands as mongos answers
//! them: `getClusterParameter`/`setClusterParameter` (with
//! `defaultMaxTimeMS` bounding reads that set no `maxTimeMS`),
//! `setFeatureCompatibilityVersion`, `logRotate` and `dropConnections`.

mod support;

use bson::{doc, Bson, Document, Timestamp};
use support::{admin, admin_error, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_parameters_are_kept_and_default_max_time_bounds_reads() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;

    let all = admin(&client, doc! {"getClusterParameter": "*"}).await;
    let params = all.get_array("clusterParameters").unwrap();
    let by_name = |name: &str| -> Document {
        params
            .iter()
            .map(|p| p.as_document().unwrap())
            .find(|p| p.get_str("_id").unwrap() == name)
            .unwrap_or_else(|| panic!("{name} in {all}"))
            .clone()
    };
    assert_eq!(
        by_name("defaultMaxTimeMS"),
        doc! {"_id": "defaultMaxTimeMS", "clusterParameterTime": Timestamp { time: 0, increment: 0 }, "readOperations": 0i64}
    );
    assert_eq!(
        by_name("changeStreamOptions")
            .get_document("preAndPostImages")
            .unwrap(),
        &doc! {"expireAfterSeconds": "off"}
    );
    assert!(by_name("shardedClusterCardinalityForDirectConns")
        .get_bool("hasTwoOrMoreShards")
        .unwrap());

    // Errors as mongos gives them.
    for (cmd, code) in [
        (doc! {"getClusterParameter": "nope"}, 4),
        (doc! {"getClusterParameter": []}, 2),
        (doc! {"setClusterParameter": {}}, 4),
        (doc! {"setClusterParameter": {"nope": {"a": 1}}}, 4),
        (
            doc! {"setClusterParameter": {"defaultMaxTimeMS": {"readOperations": 1}, "pauseMigrationsDuringMultiUpdates": {"enabled": true}}},
            72,
        ),
        (
            doc! {"setClusterParameter": {"defaultMaxTimeMS": {"readOperations": -1}}},
            2,
        ),
        (
            doc! {"setClusterParameter": {"defaultMaxTimeMS": {"readOperations": "x"}}},
            14,
        ),
        (
            doc! {"setClusterParameter": {"defaultMaxTimeMS": {"other": 1}}},
            40415,
        ),
        (doc! {"setClusterParameter": {"defaultMaxTimeMS": 5}}, 2),
        (
            doc! {"setClusterParameter": {"changeStreamOptions": {"preAndPostImages": {"expireAfterSeconds": 0}}}},
            2,
        ),
    ] {
        assert_eq!(admin_error(&client, cmd.clone()).await, code, "{cmd}");
    }

    // A slow read (a group over 20,000 documents on a Python shard).
    let db = client.database("cp");
    let docs: Vec<Document> = (0..20_000i64)
        .map(|i| doc! {"_id": i, "k": i % 3, "s": format!("{i:09}")})
        .collect();
    db.collection::<Document>("c")
        .insert_many(docs)
        .await
        .unwrap();
    let group = || doc! {"aggregate": "c", "pipeline": [{"$group": {"_id": "$k", "n": {"$sum": 1}}}], "cursor": {}};
    db.run_command(group()).await.unwrap();

    // A second router on the same store learns the setting from the store.
    let second = cluster.second_router().await;
    let other = support::client(&second.uri()).await;
    other.database("cp").run_command(group()).await.unwrap();

    let set = doc! {"setClusterParameter": {"defaultMaxTimeMS": {"readOperations": 1}}};
    admin(&client, set).await;
    let got = admin(&client, doc! {"getClusterParameter": ["defaultMaxTimeMS"]}).await;
    let p = got.get_array("clusterParameters").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(p.get_i64("readOperations").unwrap(), 1);
    assert!(p.get_timestamp("clusterParameterTime").unwrap().time > 0);
    let e = db.run_command(group()).await.unwrap_err();
    assert_eq!(support::error_code(&e), 50, "MaxTimeMSExpired: {e}");
    let mut seen = None;
    for _ in 0..50 {
        match other.database("cp").run_command(group()).await {
            Err(e) => {
                seen = Some(support::error_code(&e));
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert_eq!(seen, Some(50), "the second router applies defaultMaxTimeMS");
    // A read that sets its own maxTimeMS keeps it.
    let mut own = group();
    own.insert("maxTimeMS", 60_000);
    db.run_command(own).await.unwrap();
    // Writes are not bounded.
    db.collection::<Document>("c")
        .insert_one(doc! {"_id": -1})
        .await
        .unwrap();

    admin(
        &client,
        doc! {"setClusterParameter": {"defaultMaxTimeMS": {"readOperations": 0}}},
    )
    .await;
    db.run_command(group()).await.unwrap();
    admin(
        &client,
        doc! {"setClusterParameter": {"pauseMigrationsDuringMultiUpdates": {"enabled": true}}},
    )
    .await;
    let got = admin(
        &client,
        doc! {"getClusterParameter": "pauseMigrationsDuringMultiUpdates"},
    )
    .await;
    let p = got.get_array("clusterParameters").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert!(p.get_bool("enabled").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_compatibility_version_log_rotate_and_drop_connections() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;

    let fcv = |v: &str, confirm: bool| {
        let mut d = doc! {"setFeatureCompatibilityVersion": v};
        if confirm {
            d.insert("confirm", true);
        }
        d
    };
    assert_eq!(admin_error(&client, fcv("8.0", false)).await, 7369100);
    assert_eq!(admin_error(&client, fcv("9.9", true)).await, 4926900);
    assert_eq!(
        admin_error(&client, doc! {"setFeatureCompatibilityVersion": 8}).await,
        14
    );
    admin(&client, fcv("8.0", true)).await;
    admin(&client, fcv("7.0", true)).await;
    assert_eq!(admin_error(&client, fcv("7.3", true)).await, 5147403);
    admin(&client, fcv("8.0", true)).await;
    assert_eq!(admin_error(&client, fcv("7.3", true)).await, 5147403);

    admin(&client, doc! {"logRotate": 1}).await;
    admin(&client, doc! {"logRotate": "server"}).await;
    assert_eq!(admin_error(&client, doc! {"logRotate": "audit"}).await, 4);

    // Reads work before and after the router's connections to a shard
    // are dropped.
    let coll = client.database("dc").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let shard = cluster.shards[0].address();
    let pooled = |stats: Document| {
        let h = stats.get_document("hosts").unwrap();
        let h = h.get_document(&shard).unwrap();
        (
            h.get_i64("available").unwrap(),
            h.get_i64("created").unwrap(),
        )
    };
    let (idle, created) = pooled(admin(&client, doc! {"connPoolStats": 1}).await);
    assert!(idle > 0, "the pool keeps idle connections");
    admin(
        &client,
        doc! {"dropConnections": 1, "hostAndPort": [&shard]},
    )
    .await;
    let (idle_after, _) = pooled(admin(&client, doc! {"connPoolStats": 1}).await);
    assert_eq!(idle_after, 0, "the idle connections are closed");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    let (_, created_after) = pooled(admin(&client, doc! {"connPoolStats": 1}).await);
    assert!(created_after > created, "a new connection was opened");
    admin(&client, doc! {"dropConnections": 1, "hostAndPort": []}).await;
    for (cmd, code) in [
        (doc! {"dropConnections": 1}, 40414),
        (doc! {"dropConnections": 1, "hostAndPort": "x:1"}, 14),
        (
            doc! {"dropConnections": 1, "hostAndPort": [Bson::Int32(1)]},
            14,
        ),
        (doc! {"dropConnections": 1, "hostAndPort": ["nohost"]}, 9),
        (
            doc! {"dropConnections": 1, "hostAndPort": [], "x": 1},
            40415,
        ),
    ] {
        assert_eq!(admin_error(&client, cmd.clone()).await, code, "{cmd}");
    }
}
