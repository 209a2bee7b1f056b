//! Cluster administration through the router: addShard, listShards,
//! enableSharding, database placement that survives a router restart.

mod support;

use bson::{doc, Document};
use shardgate_router::RouterConfig;
use support::{ok_of, RouterHandle, TestCluster};

async fn code_of(db: &mongodb::Database, cmd: Document) -> i32 {
    match db.run_command(cmd).await {
        Ok(r) => panic!("expected an error, got {r}"),
        Err(e) => match *e.kind {
            mongodb::error::ErrorKind::Command(c) => c.code,
            other => panic!("not a command error: {other:?}"),
        },
    }
}

/// Names of the user databases present on a shard.
async fn databases_on(shard: &shardgate::shard_process::ShardProcess) -> Vec<String> {
    let mut names = support::direct_client(shard)
        .await
        .list_database_names()
        .await
        .unwrap();
    names.retain(|n| !matches!(n.as_str(), "admin" | "config" | "local"));
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_shard_checks_what_it_adds() {
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 2, false).await;
    let router = RouterHandle::start(&dir.path().join("config"), RouterConfig::default()).await;
    let client = support::client(&router.uri()).await;
    let admin = client.database("admin");

    // No shard yet: a write has nowhere to go.
    let app = client.database("app");
    let err = app
        .collection::<Document>("c")
        .insert_one(doc! {"x": 1})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ShardNotFound") || err.to_string().contains("no shards"),
        "{err}"
    );

    assert_eq!(code_of(&admin, doc! {"addShard": "not a host"}).await, 9);
    let dead = format!(
        "127.0.0.1:{}",
        shardgate::shard_process::free_port().unwrap()
    );
    assert_eq!(code_of(&admin, doc! {"addShard": &dead}).await, 96);
    assert_eq!(
        code_of(&app, doc! {"addShard": shards[0].address()}).await,
        13
    );
    // The router itself is a mongos, not a shard.
    assert_eq!(
        code_of(&admin, doc! {"addShard": router.addr.to_string()}).await,
        96
    );
    // A replica-set seed list must name the set the host belongs to.
    let wrong_set = format!("otherSet/{}", shards[0].address());
    assert_eq!(code_of(&admin, doc! {"addShard": wrong_set}).await, 96);

    let r = admin
        .run_command(doc! {"addShard": shards[0].address(), "name": "alpha"})
        .await
        .unwrap();
    assert_eq!(r.get_str("shardAdded").unwrap(), "alpha");
    // Adding the same shard again is idempotent; the same host under another name is not.
    let r = admin
        .run_command(doc! {"addShard": shards[0].address(), "name": "alpha"})
        .await
        .unwrap();
    assert_eq!(r.get_str("shardAdded").unwrap(), "alpha");
    assert_eq!(
        code_of(
            &admin,
            doc! {"addShard": shards[0].address(), "name": "beta"}
        )
        .await,
        96
    );
    // A seed list with the right set name is named after the set.
    let rs = format!("secantus/{}", shards[1].address());
    let r = admin.run_command(doc! {"addShard": &rs}).await.unwrap();
    assert_eq!(r.get_str("shardAdded").unwrap(), "secantus");

    let list = admin.run_command(doc! {"listShards": 1}).await.unwrap();
    let listed: Vec<(String, String)> = list
        .get_array("shards")
        .unwrap()
        .iter()
        .map(|s| {
            let s = s.as_document().unwrap();
            (
                s.get_str("_id").unwrap().to_owned(),
                s.get_str("host").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("alpha".to_owned(), shards[0].address()),
            ("secantus".to_owned(), rs)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_placed_and_the_placement_survives_a_restart() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    let admin = client.database("admin");

    // enableSharding with primaryShard puts the database where asked.
    let r = admin
        .run_command(doc! {"enableSharding": "pinned", "primaryShard": "shard0002"})
        .await
        .unwrap();
    assert_eq!(r.get_str("primaryShard").unwrap(), "shard0002");
    assert_eq!(
        code_of(&admin, doc! {"enableSharding": "x", "primaryShard": "nope"}).await,
        70
    );
    assert_eq!(
        code_of(
            &admin,
            doc! {"enableSharding": "pinned", "primaryShard": "shard0000"}
        )
        .await,
        48
    );
    client
        .database("pinned")
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    assert_eq!(databases_on(&cluster.shards[2]).await, vec!["pinned"]);

    // New databases go to the shard with the least data: three databases,
    // three different shards.
    for name in ["a", "b"] {
        let docs: Vec<Document> = (0..500)
            .map(|i| doc! {"_id": i, "pad": "y".repeat(200)})
            .collect();
        client
            .database(name)
            .collection::<Document>("c")
            .insert_many(docs)
            .await
            .unwrap();
    }
    let mut all: Vec<String> = Vec::new();
    for s in &cluster.shards {
        let dbs = databases_on(s).await;
        assert_eq!(dbs.len(), 1, "one database per shard: {dbs:?}");
        all.extend(dbs);
    }
    all.sort();
    assert_eq!(all, vec!["a", "b", "pinned"]);
    let mut home_of_a = None;
    for (i, s) in cluster.shards.iter().enumerate() {
        if databases_on(s).await == vec!["a".to_owned()] {
            home_of_a = Some(i);
        }
    }

    // Restart the router over the same store: shards and placement persist.
    cluster.restart_router(RouterConfig::default()).await;
    let client = cluster.client().await;
    let list = client
        .database("admin")
        .run_command(doc! {"listShards": 1})
        .await
        .unwrap();
    assert_eq!(list.get_array("shards").unwrap().len(), 3);
    client
        .database("a")
        .collection::<Document>("more")
        .insert_one(doc! {"z": 1})
        .await
        .unwrap();
    let shard = &cluster.shards[home_of_a.unwrap()];
    let on_home = support::direct_client(shard)
        .await
        .database("a")
        .collection::<Document>("more");
    assert_eq!(
        on_home.count_documents(doc! {}).await.unwrap(),
        1,
        "a is still on its first shard"
    );

    // listDatabases merges every shard's databases.
    let dbs = client.list_database_names().await.unwrap();
    for name in ["a", "b", "pinned"] {
        assert!(dbs.contains(&name.to_owned()), "{dbs:?}");
    }

    // renameCollection on admin routes by the namespace it names.
    let r = client
        .database("admin")
        .run_command(doc! {"renameCollection": "a.more", "to": "a.renamed"})
        .await
        .unwrap();
    assert_eq!(ok_of(&r), 1.0);
    let names = client.database("a").list_collection_names().await.unwrap();
    assert!(names.contains(&"renamed".to_owned()), "{names:?}");
    assert_eq!(
        code_of(&client.database("admin"), doc! {"frobnicate": 1}).await,
        59
    );

    // dropDatabase drops on the primary and forgets the placement.
    client.database("b").drop().await.unwrap();
    let dbs = client.list_database_names().await.unwrap();
    assert!(!dbs.contains(&"b".to_owned()), "{dbs:?}");
}
