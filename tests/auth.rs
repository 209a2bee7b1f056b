//! Authentication and roles at the router (`auth = true`): the localhost
//! exception creates the first user; SCRAM-SHA-256 and SCRAM-SHA-1 through
//! the Rust driver and pymongo (whose default handshake authenticates
//! speculatively); a `read` user can find but gets 13 on insert; a wrong
//! password fails; users survive a router restart; no key is ever shown.

mod support;

use bson::{doc, Document};
use shardgate_router::RouterConfig;
use support::{admin, error_code, RawConn, TestCluster};

fn config() -> RouterConfig {
    RouterConfig {
        auth: true,
        balancer: false,
        ..Default::default()
    }
}

async fn login(
    cluster: &TestCluster,
    user: &str,
    pwd: &str,
    source: &str,
    mech: &str,
) -> mongodb::Client {
    let uri = format!(
        "mongodb://{user}:{pwd}@{}/?authSource={source}&authMechanism={mech}",
        cluster.router.addr
    );
    support::client(&uri).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_and_scram_at_the_router() {
    let mut cluster = TestCluster::start_bare(2, config()).await;
    let anonymous = cluster.client().await;
    // Without a user, a local client may create the first one, and only that.
    assert_eq!(
        error_code(
            &anonymous
                .database("app")
                .collection::<Document>("c")
                .insert_one(doc! {"x": 1})
                .await
                .unwrap_err()
        ),
        13
    );
    admin(
        &anonymous,
        doc! {"createUser": "boss", "pwd": "b0ss-pass", "roles": [{"role": "root", "db": "admin"}]},
    )
    .await;
    // Now the exception is gone.
    let e = anonymous
        .database("admin")
        .run_command(doc! {"createUser": "sneaky", "pwd": "x", "roles": ["root"]})
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 13);

    let root = login(&cluster, "boss", "b0ss-pass", "admin", "SCRAM-SHA-256").await;
    for s in &cluster.shards {
        admin(&root, doc! {"addShard": s.address()}).await;
    }
    root.database("app")
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 1, "v": "hello"})
        .await
        .unwrap();
    root.database("app")
        .run_command(doc! {"createUser": "reader", "pwd": "r3ad", "roles": ["read"]})
        .await
        .unwrap();
    root.database("app")
        .run_command(doc! {"createUser": "writer", "pwd": "wr1te", "roles": [{"role": "readWrite", "db": "app"}], "mechanisms": ["SCRAM-SHA-1"]})
        .await
        .unwrap();
    let e = root
        .database("app")
        .run_command(doc! {"createUser": "x", "pwd": "y", "roles": ["noSuchRole"]})
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 31);

    // read: find yes, insert no.
    let reader = login(&cluster, "reader", "r3ad", "app", "SCRAM-SHA-256").await;
    let coll = reader.database("app").collection::<Document>("c");
    assert_eq!(
        coll.find_one(doc! {"_id": 1})
            .await
            .unwrap()
            .unwrap()
            .get_str("v")
            .unwrap(),
        "hello"
    );
    assert_eq!(
        error_code(&coll.insert_one(doc! {"_id": 2}).await.unwrap_err()),
        13
    );
    let e = reader
        .database("admin")
        .run_command(doc! {"listShards": 1})
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 13);

    // readWrite over SCRAM-SHA-1.
    let writer = login(&cluster, "writer", "wr1te", "app", "SCRAM-SHA-1").await;
    writer
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 3})
        .await
        .unwrap();
    let e = writer
        .database("other")
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 3})
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 13, "readWrite is on app only");
    // mapReduce writes where its `out` says: into app, not into other.
    let mr = |out: Document| {
        doc! {
            "mapReduce": "c", "map": "function() { emit(this._id, 1); }",
            "reduce": "function(k, vs) { return Array.sum(vs); }", "out": out,
        }
    };
    let app = writer.database("app");
    app.run_command(mr(doc! {"replace": "mr_out"}))
        .await
        .unwrap();
    let e = app
        .run_command(mr(doc! {"replace": "mr_out", "db": "other"}))
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), 13, "no write on other");

    // A wrong password fails.
    let wrong = login(&cluster, "reader", "nope", "app", "SCRAM-SHA-256").await;
    let e = wrong
        .database("app")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Authentication failed"), "{e}");

    // pymongo's default handshake: speculative SCRAM-SHA-256.
    let out = support::pymongo(
        &format!(
            "mongodb://reader:r3ad@{}/?authSource=app",
            cluster.router.addr
        ),
        r#"
import os
from pymongo import MongoClient
c = MongoClient(os.environ["URI"], serverSelectionTimeoutMS=5000)
print(c.app.c.find_one({"_id": 1})["v"])
try:
    c.app.c.insert_one({"_id": 9})
except Exception as e:
    print("insert", e.code)
"#,
    );
    assert_eq!(out.trim(), "hello\ninsert 13");

    // The router answers a speculative first step inside hello.
    let mut raw = RawConn::connect(cluster.router.addr).await;
    let hello = raw
        .command(doc! {
            "hello": 1, "$db": "admin",
            "saslSupportedMechs": "app.reader",
            "speculativeAuthenticate": {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "db": "app",
                "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: b"n,,n=reader,r=abcdefghijkl".to_vec() }},
        })
        .await;
    let spec = hello.get_document("speculativeAuthenticate").unwrap();
    assert!(!spec.get_bool("done").unwrap());
    let mechs = hello.get_array("saslSupportedMechs").unwrap();
    assert_eq!(mechs.len(), 2);

    // usersInfo shows users and roles, never keys.
    let info = root
        .database("app")
        .run_command(doc! {"usersInfo": 1})
        .await
        .unwrap();
    let users = info.get_array("users").unwrap();
    assert_eq!(users.len(), 2);
    assert!(!info.to_string().contains("storedKey") && !info.to_string().contains("credentials"));
    // revoke, grant, drop.
    root.database("app")
        .run_command(doc! {"grantRolesToUser": "reader", "roles": ["readWrite"]})
        .await
        .unwrap();

    // Users survive a router restart.
    cluster.restart_router(config()).await;
    let reader = login(&cluster, "reader", "r3ad", "app", "SCRAM-SHA-256").await;
    reader
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 4})
        .await
        .unwrap();
    let root = login(&cluster, "boss", "b0ss-pass", "admin", "SCRAM-SHA-256").await;
    root.database("app")
        .run_command(doc! {"dropUser": "reader"})
        .await
        .unwrap();
    let gone = login(&cluster, "reader", "r3ad", "app", "SCRAM-SHA-256").await;
    assert!(gone
        .database("app")
        .run_command(doc! {"ping": 1})
        .await
        .is_err());
    // config.shards has no secret.
    let shards = support::config_docs(&root, "shards", doc! {}, doc! {}).await;
    assert!(!format!("{shards:?}").contains("b0ss"));
}
