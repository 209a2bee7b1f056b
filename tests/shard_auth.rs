//! The router's own credentials to shards that require authentication:
//! with the right ones every command works through the router; with wrong
//! ones `addShard` fails with an error that names the user, never the
//! password, and nothing the router shows carries it.

mod support;

use bson::{doc, Document};
use shardgate::shard_process::ShardLauncher;
use shardgate_router::{PoolConfig, RouterConfig, ShardAuth};
use support::{admin, RouterHandle};

fn config(password: &str) -> RouterConfig {
    RouterConfig {
        balancer: false,
        pool: PoolConfig {
            auth: Some(ShardAuth {
                user: "router".into(),
                password: password.into(),
                db: "admin".into(),
                mechanism: "SCRAM-SHA-256".into(),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_authenticates_to_shards_and_never_shows_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut launcher = ShardLauncher::from_env().unwrap();
    // The shard's user is made before it requires authentication.
    let data = dir.path().join("s0");
    let mut open = launcher.start(&data, false).await.unwrap();
    support::direct_client(&open)
        .await
        .database("admin")
        .run_command(doc! {"createUser": "router", "pwd": "sh4rd-secret", "roles": ["root"]})
        .await
        .unwrap();
    let port = open.port();
    open.stop();
    launcher.extra_args = vec!["--auth".into()];
    let shard = launcher.start_on(port, &data, false).await.unwrap();
    let direct = support::direct_client(&shard).await;
    // Unauthenticated, the shard refuses work.
    assert!(direct
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! {"x": 1})
        .await
        .is_err());

    let good = RouterHandle::start(&dir.path().join("config-good"), config("sh4rd-secret")).await;
    let client = support::client(&good.uri()).await;
    admin(&client, doc! {"addShard": shard.address()}).await;
    let coll = client.database("app").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "v": "through an authenticated pool"})
        .await
        .unwrap();
    assert_eq!(
        coll.find_one(doc! {"_id": 1})
            .await
            .unwrap()
            .unwrap()
            .get_str("v")
            .unwrap(),
        "through an authenticated pool"
    );
    let shards = support::config_docs(&client, "shards", doc! {}, doc! {}).await;
    let listed = admin(&client, doc! {"listShards": 1}).await;
    let opts = admin(&client, doc! {"getCmdLineOpts": 1}).await;
    for shown in [format!("{shards:?}"), listed.to_string(), opts.to_string()] {
        assert!(!shown.contains("sh4rd-secret"), "{shown}");
    }

    let bad = RouterHandle::start(&dir.path().join("config-bad"), config("wrong-secret")).await;
    let client = support::client(&bad.uri()).await;
    let e = client
        .database("admin")
        .run_command(doc! {"addShard": shard.address()})
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("authentication as router@admin failed"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret"), "{text}");
}
