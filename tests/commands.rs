//! The command registry as a client sees it: privileges checked per
//! command (a `read` user may `find` but not `convertToCapped`, `compact`
//! or `createRole`; an unknown command needs `root`; `$out`/`$merge` into
//! another database need a write there), `killCursors` of ids
//! the router does not hold on a sharded collection, `listCommands`, and a
//! shard's `RetryableWriteError` reaching the driver through a scattered
//! retryable insert; custom roles granting exactly their privileges.

mod support;

use bson::{doc, Document};
use shardgate_router::RouterConfig;
use support::{admin, error_code, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileges_come_from_the_registry() {
    let config = RouterConfig {
        auth: true,
        balancer: false,
        ..Default::default()
    };
    let cluster = TestCluster::start_bare(1, config).await;
    let anonymous = cluster.client().await;
    admin(
        &anonymous,
        doc! {"createUser": "boss", "pwd": "pw-boss", "roles": [{"role": "root", "db": "admin"}]},
    )
    .await;
    let login = |user: &str, pwd: &str| {
        format!(
            "mongodb://{user}:{pwd}@{}/?authSource=admin",
            cluster.router.addr
        )
    };
    let root = support::client(&login("boss", "pw-boss")).await;
    admin(&root, doc! {"addShard": cluster.shards[0].address()}).await;
    admin(
        &root,
        doc! {"createUser": "reader", "pwd": "pw-reader", "roles": [{"role": "read", "db": "app"}]},
    )
    .await;
    admin(
        &root,
        doc! {"createUser": "monitor", "pwd": "pw-mon", "roles": [{"role": "clusterMonitor", "db": "admin"}]},
    )
    .await;
    let app = root.database("app");
    app.collection::<Document>("c")
        .insert_one(doc! {"_id": 1, "v": "x"})
        .await
        .unwrap();

    let reader = support::client(&login("reader", "pw-reader")).await;
    let status = admin(&reader, doc! {"connectionStatus": 1}).await;
    let info = status.get_document("authInfo").unwrap();
    assert_eq!(
        info.get_array("authenticatedUsers").unwrap(),
        &vec![bson::Bson::Document(doc! {"user": "reader", "db": "admin"})]
    );
    assert_eq!(
        info.get_array("authenticatedUserRoles").unwrap(),
        &vec![bson::Bson::Document(doc! {"role": "read", "db": "app"})]
    );
    let rapp = reader.database("app");
    let found = rapp
        .collection::<Document>("c")
        .find_one(doc! {"_id": 1})
        .await
        .unwrap();
    assert_eq!(found, Some(doc! {"_id": 1, "v": "x"}), "read may find");
    rapp.run_command(doc! {"listIndexes": "c"}).await.unwrap();
    for cmd in [
        doc! {"convertToCapped": "c", "size": 4096},
        doc! {"compact": "c"},
        doc! {"createRole": "r", "privileges": [], "roles": []},
        doc! {"collMod": "c"},
        doc! {"createIndexes": "c", "indexes": [{"key": {"v": 1}, "name": "v_1"}]},
        doc! {"dropIndexes": "c", "index": "_id_"},
        doc! {"validate": "c"},
        doc! {"someCommandNobodyKnows": 1},
    ] {
        let e = rapp.run_command(cmd.clone()).await.unwrap_err();
        assert_eq!(error_code(&e), 13, "a read user runs {cmd}");
    }
    for cmd in [
        doc! {"killOp": 1, "op": "shard0000:1"},
        doc! {"checkMetadataConsistency": 1},
        doc! {"currentOp": 1},
        doc! {"hostInfo": 1},
    ] {
        let e = reader
            .database("admin")
            .run_command(cmd.clone())
            .await
            .unwrap_err();
        assert_eq!(error_code(&e), 13, "a read user runs {cmd}");
    }
    // readWrite on app may $out within app, not into another database.
    admin(
        &root,
        doc! {"createUser": "writer", "pwd": "pw-writer", "roles": [{"role": "readWrite", "db": "app"}]},
    )
    .await;
    let writer = support::client(&login("writer", "pw-writer")).await;
    let wapp = writer.database("app");
    let out =
        |target: bson::Bson| doc! {"aggregate": "c", "pipeline": [{"$out": target}], "cursor": {}};
    wapp.run_command(out(bson::Bson::from("copy")))
        .await
        .unwrap();
    for cmd in [
        out(bson::Bson::Document(doc! {"db": "other", "coll": "copy"})),
        doc! {"aggregate": "c", "pipeline": [{"$merge": {"into": {"db": "other", "coll": "copy"}}}], "cursor": {}},
    ] {
        let e = wapp.run_command(cmd.clone()).await.unwrap_err();
        assert_eq!(error_code(&e), 13, "a readWrite@app user runs {cmd}");
    }
    let others = root
        .database("other")
        .list_collection_names()
        .await
        .unwrap();
    assert!(!others.contains(&"copy".to_owned()), "{others:?}");
    // The collection is untouched: not capped.
    let stats = app.run_command(doc! {"collStats": "c"}).await.unwrap();
    assert_ne!(stats.get_bool("capped").ok(), Some(true));

    // clusterMonitor watches the cluster but does not change it.
    let monitor = support::client(&login("monitor", "pw-mon")).await;
    admin(&monitor, doc! {"serverStatus": 1}).await;
    admin(&monitor, doc! {"listShards": 1}).await;
    let e = monitor
        .database("admin")
        .run_command(doc! {"enableSharding": "other"})
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 13, "clusterMonitor may not enableSharding");

    // listCommands names what the registry holds.
    let listed = admin(&reader, doc! {"listCommands": 1}).await;
    let commands = listed.get_document("commands").unwrap();
    for name in ["find", "aggregate", "moveChunk", "isMaster", "listCommands"] {
        assert!(commands.contains_key(name), "listCommands lists {name}");
    }
    assert!(!commands.contains_key("someCommandNobodyKnows"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cursors_of_unknown_ids_on_a_sharded_collection() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "k", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "k.c", "key": {"x": 1}}).await;
    admin(&client, doc! {"split": "k.c", "middle": {"x": 50}}).await;
    admin(
        &client,
        doc! {"moveChunk": "k.c", "find": {"x": 60}, "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    let db = client.database("k");
    db.collection::<Document>("c")
        .insert_many((0..100).map(|x| doc! {"x": x}))
        .await
        .unwrap();
    let reply = db
        .run_command(doc! {"killCursors": "c", "cursors": [123_456_789i64, 42i64]})
        .await
        .unwrap();
    assert_eq!(
        reply.get_array("cursorsNotFound").unwrap(),
        &vec![bson::Bson::Int64(123_456_789), bson::Bson::Int64(42)]
    );
    assert!(reply.get_array("cursorsKilled").unwrap().is_empty());
    // A real scatter cursor is still killed and reported as such.
    let opened = db
        .run_command(doc! {"find": "c", "filter": {}, "batchSize": 2})
        .await
        .unwrap();
    let id = opened
        .get_document("cursor")
        .unwrap()
        .get_i64("id")
        .unwrap();
    assert_ne!(id, 0);
    let reply = db
        .run_command(doc! {"killCursors": "c", "cursors": [id, 7i64]})
        .await
        .unwrap();
    assert_eq!(
        reply.get_array("cursorsKilled").unwrap(),
        &vec![bson::Bson::Int64(id)]
    );
    assert_eq!(
        reply.get_array("cursorsNotFound").unwrap(),
        &vec![bson::Bson::Int64(7)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_retryable_write_error_reaches_the_driver_with_its_label() {
    let config = RouterConfig {
        balancer: false,
        enable_test_commands: true,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(2, config, true).await;
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "r", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "r.c", "key": {"x": 1}}).await;
    admin(&client, doc! {"split": "r.c", "middle": {"x": 50}}).await;
    admin(
        &client,
        doc! {"moveChunk": "r.c", "find": {"x": 60}, "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    let shard1 = support::direct_client(&cluster.shards[1]).await;
    let fail = |mode: bson::Bson| {
        doc! {"configureFailPoint": "failCommand", "mode": mode, "data": {
            "failCommands": ["insert"], "errorCode": 262, "errorLabels": ["RetryableWriteError"],
        }}
    };
    // Always failing: pymongo retries once, then gives up with the label.
    admin(&shard1, fail(bson::Bson::String("alwaysOn".into()))).await;
    let out = support::pymongo(
        &cluster.router.uri(),
        r#"
import os, pymongo
c = pymongo.MongoClient(os.environ["URI"])
try:
    c.r.c.insert_many([{"x": x} for x in range(0, 100, 10)])
    print("no error")
except pymongo.errors.PyMongoError as e:
    print(type(e).__name__, getattr(e, "code", None), e.has_error_label("RetryableWriteError"))
"#,
    );
    assert_eq!(
        out.trim(),
        "OperationFailure 262 True",
        "pymongo saw: {out}"
    );
    // Failing once: the driver's retry succeeds, and every document is
    // there exactly once.
    admin(&shard1, fail(doc! {"times": 1}.into())).await;
    let out = support::pymongo(
        &cluster.router.uri(),
        r#"
import os, pymongo
c = pymongo.MongoClient(os.environ["URI"])
c.r.c.delete_many({})
c.r.c.insert_many([{"_id": x, "x": x} for x in range(0, 100, 10)])
print(c.r.c.count_documents({}), sorted(d["x"] for d in c.r.c.find()) == list(range(0, 100, 10)))
"#,
    );
    assert_eq!(out.trim(), "10 True", "pymongo saw: {out}");
    admin(&shard1, fail(bson::Bson::String("off".into()))).await;
}

/// Custom roles live in the router's store (no shard ever sees them): a
/// role granting `createIndex` on one collection allows exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_role_grants_exactly_its_privileges() {
    let config = RouterConfig {
        auth: true,
        balancer: false,
        ..Default::default()
    };
    let cluster = TestCluster::start_bare(1, config).await;
    let anonymous = cluster.client().await;
    admin(
        &anonymous,
        doc! {"createUser": "boss", "pwd": "pw-boss", "roles": [{"role": "root", "db": "admin"}]},
    )
    .await;
    let login = |user: &str, pwd: &str| {
        format!(
            "mongodb://{user}:{pwd}@{}/?authSource=admin",
            cluster.router.addr
        )
    };
    let root = support::client(&login("boss", "pw-boss")).await;
    admin(&root, doc! {"addShard": cluster.shards[0].address()}).await;
    let app = root.database("app");
    app.run_command(doc! {
        "createRole": "indexer",
        "privileges": [{"resource": {"db": "app", "collection": "c"}, "actions": ["createIndex"]}],
        "roles": [],
    })
    .await
    .unwrap();
    // A role that does not exist cannot be granted.
    let e = support::admin_error(
        &root,
        doc! {"createUser": "x", "pwd": "pw", "roles": [{"role": "nope", "db": "app"}]},
    )
    .await;
    assert_eq!(e, 31, "RoleNotFound");
    admin(
        &root,
        doc! {"createUser": "ix", "pwd": "pw-ix", "roles": [{"role": "indexer", "db": "app"}]},
    )
    .await;
    for coll in ["c", "d"] {
        app.collection::<Document>(coll)
            .insert_one(doc! {"_id": 1})
            .await
            .unwrap();
    }
    let info = app
        .run_command(doc! {"rolesInfo": "indexer", "showPrivileges": true})
        .await
        .unwrap();
    let roles = info.get_array("roles").unwrap();
    assert_eq!(roles.len(), 1, "{info}");
    let role = roles[0].as_document().unwrap();
    assert_eq!(role.get_str("role").unwrap(), "indexer");
    assert_eq!(role.get_array("privileges").unwrap().len(), 1);
    // The shard's own user store never saw the role.
    let shard = support::direct_client(&cluster.shards[0]).await;
    let on_shard = shard
        .database("app")
        .run_command(doc! {"rolesInfo": "indexer"})
        .await
        .map(|r| r.get_array("roles").map(|a| a.len()).unwrap_or(0))
        .unwrap_or(0);
    assert_eq!(on_shard, 0);

    let ix = support::client(&login("ix", "pw-ix")).await.database("app");
    let index =
        |coll: &str| doc! {"createIndexes": coll, "indexes": [{"key": {"v": 1}, "name": "v_1"}]};
    ix.run_command(index("c")).await.unwrap();
    for cmd in [
        index("d"),
        doc! {"insert": "c", "documents": [{"_id": 2}]},
        doc! {"find": "c"},
        doc! {"dropIndexes": "c", "index": "v_1"},
    ] {
        let e = ix.run_command(cmd.clone()).await.unwrap_err();
        assert_eq!(error_code(&e), 13, "the indexer runs {cmd}");
    }
    // Granting `find` adds exactly that.
    app.run_command(doc! {
        "grantPrivilegesToRole": "indexer",
        "privileges": [{"resource": {"db": "app", "collection": "c"}, "actions": ["find"]}],
    })
    .await
    .unwrap();
    ix.run_command(doc! {"find": "c"}).await.unwrap();
    let e = ix.run_command(doc! {"find": "d"}).await.unwrap_err();
    assert_eq!(error_code(&e), 13);
    app.run_command(doc! {"dropRole": "indexer"}).await.unwrap();
    let e = ix.run_command(index("c")).await.unwrap_err();
    assert_eq!(error_code(&e), 13, "the role is gone");
}

/// The cluster's default concerns: kept in the store (a restarted router
/// still has them) and added to writes that carry no write concern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_read_and_write_concerns_apply_to_commands_without_their_own() {
    let mut cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let implicit = admin(&client, doc! {"getDefaultRWConcern": 1}).await;
    assert_eq!(
        implicit.get_str("defaultWriteConcernSource").unwrap(),
        "implicit"
    );
    assert_eq!(
        implicit.get_document("defaultReadConcern").unwrap(),
        &doc! {"level": "local"}
    );
    let e = support::admin_error(
        &client,
        doc! {"setDefaultRWConcern": 1, "defaultReadConcern": {"level": "snapshot"}},
    )
    .await;
    assert_eq!(e, 2);
    // A write concern no one-node replica set can satisfy makes the
    // default visible: writes without their own report it.
    let set = admin(
        &client,
        doc! {"setDefaultRWConcern": 1, "defaultWriteConcern": {"w": 5, "wtimeout": 100}},
    )
    .await;
    assert_eq!(set.get_str("defaultWriteConcernSource").unwrap(), "global");
    cluster
        .restart_router(RouterConfig {
            balancer: false,
            ..Default::default()
        })
        .await;
    let client = cluster.client().await;
    let got = admin(&client, doc! {"getDefaultRWConcern": 1}).await;
    assert_eq!(
        got.get_document("defaultWriteConcern").unwrap(),
        &doc! {"w": 5, "wtimeout": 100}
    );
    let db = client.database("rw");
    let defaulted = db
        .run_command(doc! {"insert": "c", "documents": [{"_id": 1}]})
        .await;
    let own = db
        .run_command(doc! {"insert": "c", "documents": [{"_id": 2}], "writeConcern": {"w": 1}})
        .await
        .unwrap();
    assert!(!own.contains_key("writeConcernError"), "{own}");
    match defaulted {
        Ok(reply) => assert!(reply.contains_key("writeConcernError"), "{reply}"),
        Err(e) => assert_eq!(error_code(&e), 100, "{e}"),
    }
    // Unset: writes are plain again.
    admin(
        &client,
        doc! {"setDefaultRWConcern": 1, "defaultWriteConcern": {}},
    )
    .await;
    let plain = db
        .run_command(doc! {"insert": "c", "documents": [{"_id": 3}]})
        .await
        .unwrap();
    assert!(!plain.contains_key("writeConcernError"), "{plain}");
}

/// Session and parameter commands mongos answers itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_parameters_are_answered_by_the_router() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    let started = admin(&client, doc! {"startSession": 1}).await;
    let id = started
        .get_document("id")
        .unwrap()
        .get("id")
        .unwrap()
        .clone();
    assert!(
        matches!(id, bson::Bson::Binary(ref b) if b.subtype == bson::spec::BinarySubtype::Uuid)
    );
    assert_eq!(started.get_i32("timeoutMinutes").unwrap(), 30);
    admin(&client, doc! {"refreshSessions": [{"id": id.clone()}]}).await;
    admin(&client, doc! {"endSessions": [{"id": id}]}).await;
    // Parameters are fixed at start-up: the current value is accepted.
    let current = admin(&client, doc! {"getParameter": 1, "enableTestCommands": 1}).await;
    let value = current.get("enableTestCommands").unwrap().clone();
    let was = admin(
        &client,
        doc! {"setParameter": 1, "enableTestCommands": value.clone()},
    )
    .await;
    assert_eq!(was.get("was"), Some(&value));
    for cmd in [
        doc! {"setParameter": 1, "enableTestCommands": !value.as_bool().unwrap()},
        doc! {"setParameter": 1, "noSuchParameter": 1},
        doc! {"setParameter": 1},
    ] {
        let e = support::admin_error(&client, cmd.clone()).await;
        assert_eq!(e, 72, "{cmd}");
    }
}
