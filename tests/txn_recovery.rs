//! kill -9 of a router in the middle of a transaction on two shards, with
//! a second router on the same 3-member etcd cluster:
//! - after the commit decision is stored and before any participant
//!   committed: the second router finishes the commit (nothing visible
//!   before, everything after, checked on the shards), and the client's
//!   `commitTransaction` retried through it with the `recoveryToken`
//!   answers ok;
//! - before any decision: nothing becomes visible, and the retried commit
//!   answers NoSuchTransaction with `TransientTransactionError`.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use shardgate_config_store::etcd::cluster::EtcdCluster;
use support::{admin, RawConn, RouterHandle};

const BIN: &str = env!("CARGO_BIN_EXE_shardgate");

fn serve(port: u16, store: &str) -> Child {
    Command::new(BIN)
        .args(["serve", "--enable-test-commands", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config-store")
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn ready(client: &mongodb::Client) {
    for _ in 0..100 {
        if admin_ok(client).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("router did not come up");
}

async fn admin_ok(client: &mongodb::Client) -> bool {
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .is_ok()
}

/// The documents `ids` of `tx.c` as a router or shard shows them.
async fn present(client: &mongodb::Client, ids: &[&str]) -> usize {
    let found: Vec<Document> = client
        .database("tx")
        .collection::<Document>("c")
        .find(doc! {"_id": {"$in": ids}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    found.len()
}

/// One statement of the transaction `txn` of `lsid`, over a raw
/// connection (so the test holds the session's ids, as a driver does).
fn statement(lsid: &Document, txn: i64, first: bool, body: Document) -> Document {
    let mut body = body;
    body.insert("lsid", lsid.clone());
    body.insert("txnNumber", txn);
    body.insert("autocommit", false);
    if first {
        body.insert("startTransaction", true);
    }
    body
}

fn commit(lsid: &Document, txn: i64, token: Option<&Document>) -> Document {
    let mut body = doc! {"commitTransaction": 1, "lsid": lsid.clone(), "txnNumber": txn, "autocommit": false, "$db": "admin"};
    if let Some(t) = token {
        body.insert("recoveryToken", t.clone());
    }
    body
}

/// Inserts one document on each shard in transaction `txn`; returns the
/// recovery token the replies carried.
async fn write_on_both(conn: &mut RawConn, lsid: &Document, txn: i64, ids: [&str; 2]) -> Document {
    let mut token = None;
    for (i, (id, k)) in ids.iter().zip([1, 200]).enumerate() {
        let body = doc! {"insert": "c", "documents": [{"_id": *id, "k": k}], "$db": "tx"};
        let reply = conn.command(statement(lsid, txn, i == 0, body)).await;
        assert_eq!(reply.get_i32("n").ok(), Some(1), "{reply}");
        token = reply.get_document("recoveryToken").ok().cloned();
    }
    token.expect("statements in a transaction carry a recoveryToken")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_mid_commit_leaves_all_or_nothing() {
    let etcd = EtcdCluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 2, false).await;
    let url = etcd.url("shardgate-txn");
    let port = shardgate::shard_process::free_port().unwrap();
    let mut a = serve(port, &url);
    let a_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ca = support::client(&format!("mongodb://{a_addr}/")).await;
    ready(&ca).await;
    let store = shardgate_config_store::open(&url).await.unwrap();
    let b = RouterHandle::start_router_only(
        store,
        shardgate_router::RouterConfig {
            balancer: false,
            ..Default::default()
        },
    )
    .await;
    let cb = support::client(&b.uri()).await;
    for s in &shards {
        admin(&ca, doc! {"addShard": s.address()}).await;
    }
    admin(
        &ca,
        doc! {"enableSharding": "tx", "primaryShard": "shard0000"},
    )
    .await;
    admin(&ca, doc! {"shardCollection": "tx.c", "key": {"k": 1}}).await;
    admin(&ca, doc! {"split": "tx.c", "middle": {"k": 100}}).await;
    admin(
        &ca,
        doc! {"moveChunk": "tx.c", "find": {"k": 100}, "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    ca.database("tx")
        .collection::<Document>("c")
        .insert_many([doc! {"_id": "s0", "k": 0}, doc! {"_id": "s1", "k": 500}])
        .await
        .unwrap();
    let direct: Vec<mongodb::Client> =
        futures::future::join_all(shards.iter().map(support::direct_client)).await;

    // 1. Killed after the decision, before any participant committed.
    admin(
        &ca,
        doc! {"configureFailPoint": "shardgatePauseAfterCommitDecision", "mode": "alwaysOn", "data": {"ms": 60_000}},
    )
    .await;
    let lsid = doc! {"id": bson::Uuid::new()};
    let mut conn = RawConn::connect(a_addr).await;
    let token = write_on_both(&mut conn, &lsid, 1, ["t1", "t2"]).await;
    let committing = tokio::spawn({
        let lsid = lsid.clone();
        async move {
            let mut conn = RawConn::connect(a_addr).await;
            conn.command(commit(&lsid, 1, None)).await
        }
    });
    // The commit is under way on router A (its own operation).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ops = admin(
            &ca,
            doc! {"currentOp": 1, "localOps": true, "command.commitTransaction": {"$exists": true}},
        )
        .await;
        if !ops.get_array("inprog").unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the commit never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill().unwrap();
    a.wait().unwrap();
    committing.abort();
    assert_eq!(
        present(&cb, &["t1", "t2"]).await,
        0,
        "nothing committed yet"
    );
    // Router B finishes the commit once A's registration lapses. Its
    // participants commit one after the other, so a read at the local read
    // concern may fall between them and see one of the two documents, as
    // through mongos (only snapshot reads see a multi-shard commit whole);
    // the commit must then complete, never stay half done.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut half_since: Option<Instant> = None;
    loop {
        match present(&cb, &["t1", "t2"]).await {
            2 => break,
            1 => {
                let since = *half_since.get_or_insert_with(Instant::now);
                assert!(
                    since.elapsed() < Duration::from_secs(5),
                    "half a transaction stays visible"
                );
            }
            _ => assert!(half_since.is_none(), "a committed write went away"),
        }
        assert!(
            Instant::now() < deadline,
            "router B never finished the commit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(present(&direct[0], &["t1"]).await, 1);
    assert_eq!(present(&direct[1], &["t2"]).await, 1);
    let mut conn_b = RawConn::connect(b.addr).await;
    let retried = conn_b.command(commit(&lsid, 1, Some(&token))).await;
    assert_eq!(retried.get_f64("ok").unwrap(), 1.0, "{retried}");

    // 2. Killed before any decision: nothing becomes visible.
    let mut a = serve(port, &url);
    ready(&ca).await;
    let mut conn = RawConn::connect(a_addr).await;
    let token = write_on_both(&mut conn, &lsid, 2, ["t3", "t4"]).await;
    a.kill().unwrap();
    a.wait().unwrap();
    let retried = conn_b.command(commit(&lsid, 2, Some(&token))).await;
    assert_eq!(retried.get_i32("code").unwrap(), 251, "{retried}");
    assert!(
        retried
            .get_array("errorLabels")
            .unwrap()
            .contains(&Bson::from("TransientTransactionError")),
        "{retried}"
    );
    assert_eq!(present(&cb, &["t3", "t4"]).await, 0);
    for d in &direct {
        assert_eq!(present(d, &["t3", "t4"]).await, 0);
    }
}
