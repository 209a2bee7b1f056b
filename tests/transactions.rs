//! Transactions through the router as drivers run them: pymongo's
//! `with_transaction` and the Rust driver's sessions, on a collection
//! whose chunks are on two shards and on an unsharded one. Commits are
//! all-or-nothing (checked on the shards directly), aborts leave nothing,
//! a transaction reads its own writes across shards, a write conflict is
//! labelled `TransientTransactionError` and retried to success, and a
//! causally consistent session reads through a second router what it
//! wrote through the first.

mod support;

use bson::{doc, Document};
use futures::TryStreamExt;
use support::{admin, direct_client, TestCluster};

/// `tx.c` sharded on `{k: 1}`: `[MinKey, 100)` on shard0000, `[100,
/// MaxKey)` on shard0001.
async fn two_shards(cluster: &TestCluster) -> mongodb::Client {
    let client = cluster.client().await;
    admin(
        &client,
        doc! {"enableSharding": "tx", "primaryShard": "shard0000"},
    )
    .await;
    admin(&client, doc! {"shardCollection": "tx.c", "key": {"k": 1}}).await;
    admin(&client, doc! {"split": "tx.c", "middle": {"k": 100}}).await;
    admin(
        &client,
        doc! {"moveChunk": "tx.c", "find": {"k": 100}, "to": "shard0001", "_waitForDelete": true},
    )
    .await;
    // Collections exist on both shards before any transaction (a
    // transaction cannot create one on a shard that lacks it).
    let c = client.database("tx").collection::<Document>("c");
    c.insert_many([
        doc! {"_id": "seed0", "k": 0},
        doc! {"_id": "seed1", "k": 500},
    ])
    .await
    .unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymongo_with_transaction_commits_on_both_shards_or_on_none() {
    let cluster = TestCluster::start(2).await;
    two_shards(&cluster).await;
    let script = format!(
        r#"
import os, pymongo, threading
from pymongo.errors import OperationFailure
c = pymongo.MongoClient(os.environ["URI"])
d0 = pymongo.MongoClient("mongodb://{s0}/?directConnection=true").tx.c
d1 = pymongo.MongoClient("mongodb://{s1}/?directConnection=true").tx.c
coll = c.tx.c

def cb(s):
    coll.insert_one({{"_id": 1, "k": 1}}, session=s)
    coll.insert_one({{"_id": 2, "k": 200}}, session=s)
    # Its own writes, across shards, inside the transaction.
    assert coll.count_documents({{"_id": {{"$in": [1, 2]}}}}, session=s) == 2
    ks = [d["k"] for d in coll.find({{"_id": {{"$in": [1, 2]}}}}, session=s).sort("k", 1)]
    assert ks == [1, 200], ks
    # Not visible outside it yet, on either shard.
    assert d0.find_one({{"_id": 1}}) is None and d1.find_one({{"_id": 2}}) is None

with c.start_session() as s:
    s.with_transaction(cb)
assert d0.find_one({{"_id": 1}}) == {{"_id": 1, "k": 1}}
assert d1.find_one({{"_id": 2}}) == {{"_id": 2, "k": 200}}
print("committed")

# An abort leaves nothing.
with c.start_session() as s:
    s.start_transaction()
    coll.insert_one({{"_id": 3, "k": 3}}, session=s)
    coll.insert_one({{"_id": 4, "k": 400}}, session=s)
    s.abort_transaction()
assert coll.count_documents({{"_id": {{"$in": [3, 4]}}}}) == 0
assert d0.find_one({{"_id": 3}}) is None and d1.find_one({{"_id": 4}}) is None
print("aborted")

# A write conflict: the second transaction's update fails with
# TransientTransactionError; with_transaction retries it to success
# once the first commits.
s1 = c.start_session(); s2 = c.start_session()
s1.start_transaction()
coll.update_one({{"_id": 2}}, {{"$inc": {{"n": 1}}}}, session=s1)
s2.start_transaction()
try:
    coll.update_one({{"_id": 2}}, {{"$inc": {{"n": 1}}}}, session=s2)
    raise SystemExit("no write conflict")
except OperationFailure as e:
    assert e.has_error_label("TransientTransactionError"), e.details
    print("conflict", e.code)
s2.abort_transaction()
done = threading.Event()
def later():
    s1.commit_transaction(); done.set()
threading.Timer(0.3, later).start()
tries = []
def inc(s):
    tries.append(1)
    coll.update_one({{"_id": 2}}, {{"$inc": {{"n": 1}}}}, session=s)
s2.with_transaction(inc)
done.wait(5)
assert coll.find_one({{"_id": 2}})["n"] == 2
print("retried", len(tries))

# An unsharded collection's transaction.
u = c.tx.u
u.insert_one({{"_id": 0}})
with c.start_session() as s:
    s.with_transaction(lambda s: u.insert_many([{{"_id": 1}}, {{"_id": 2}}], session=s))
assert u.count_documents({{}}) == 3
status = c.admin.command("serverStatus")["transactions"]
assert status["currentOpen"] == 0, status
types = status["commitTypes"]
assert types["coordinatedCommit"]["successful"] >= 1, types
assert types["singleShard"]["successful"] >= 1, types
print("status", status["totalCommitted"], status["totalAborted"])
# No transaction holds the collection: a drop completes at once.
u.drop()
print("dropped")
"#,
        s0 = cluster.shards[0].address(),
        s1 = cluster.shards[1].address(),
    );
    let out = support::pymongo(&cluster.router.uri(), &script);
    for step in [
        "committed",
        "aborted",
        "conflict",
        "retried",
        "status",
        "dropped",
    ] {
        assert!(out.contains(step), "{step} missing from: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_driver_transactions_are_atomic_across_shards() {
    let config = shardgate_router::RouterConfig {
        balancer: false,
        enable_test_commands: true,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(2, config, false).await;
    let client = two_shards(&cluster).await;
    let coll = client.database("tx").collection::<Document>("c");
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": "a", "k": 5})
        .session(&mut s)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": "b", "k": 105})
        .session(&mut s)
        .await
        .unwrap();
    // A sorted scatter read in the transaction, with a getMore.
    let mut cursor = coll
        .find(doc! {})
        .sort(doc! {"k": 1})
        .batch_size(1)
        .session(&mut s)
        .await
        .unwrap();
    let mut ks = Vec::new();
    while let Some(d) = cursor.next(&mut s).await {
        ks.push(d.unwrap().get_i32("k").unwrap());
    }
    drop(cursor);
    assert_eq!(ks, [0, 5, 105, 500]);
    let outside = coll
        .count_documents(doc! {"_id": {"$in": ["a", "b"]}})
        .await
        .unwrap();
    assert_eq!(outside, 0, "not visible before the commit");
    s.commit_transaction().await.unwrap();
    for (shard, id) in [(0, "a"), (1, "b")] {
        let direct = direct_client(&cluster.shards[shard]).await;
        let found = direct
            .database("tx")
            .collection::<Document>("c")
            .find_one(doc! {"_id": id})
            .await
            .unwrap();
        assert!(found.is_some(), "{id} on shard {shard}");
    }
    // Aborted: neither.
    s.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": "x", "k": 6})
        .session(&mut s)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": "y", "k": 106})
        .session(&mut s)
        .await
        .unwrap();
    s.abort_transaction().await.unwrap();
    let left: Vec<Document> = coll
        .find(doc! {"_id": {"$in": ["x", "y"]}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(left.is_empty());
    // A statement that fails aborts the transaction everywhere: the
    // first write stays invisible.
    s.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": "z", "k": 7})
        .session(&mut s)
        .await
        .unwrap();
    let dup = coll
        .insert_one(doc! {"_id": "b", "k": 105})
        .session(&mut s)
        .await
        .unwrap_err();
    assert_eq!(support::error_code(&dup), 11000);
    let e = s.commit_transaction().await.unwrap_err();
    assert_eq!(support::error_code(&e), 251, "NoSuchTransaction: {e}");
    let z = coll.find_one(doc! {"_id": "z"}).await.unwrap();
    assert!(z.is_none());
    // A statement the router's fail point fails (before it runs) leaves the
    // transaction open, as on mongos: labelled so drivers may run it again,
    // and the transaction still commits what it did.
    s.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": "f1", "k": 8})
        .session(&mut s)
        .await
        .unwrap();
    admin(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 1}, "data": {"failCommands": ["insert"], "errorCode": 112}},
    )
    .await;
    let e = coll
        .insert_one(doc! {"_id": "f2", "k": 108})
        .session(&mut s)
        .await
        .unwrap_err();
    assert!(e.contains_label("TransientTransactionError"), "{e}");
    coll.insert_one(doc! {"_id": "f2", "k": 108})
        .session(&mut s)
        .await
        .unwrap();
    s.commit_transaction().await.unwrap();
    for id in ["f1", "f2"] {
        assert!(
            coll.find_one(doc! {"_id": id}).await.unwrap().is_some(),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causal_session_reads_through_another_router_what_it_wrote() {
    let cluster = TestCluster::start(2).await;
    let client = two_shards(&cluster).await;
    let second = cluster.second_router().await;
    let other = support::client(&second.uri()).await;
    let mut writer = client
        .start_session()
        .causal_consistency(true)
        .await
        .unwrap();
    let coll = client.database("tx").collection::<Document>("c");
    coll.insert_one(doc! {"_id": "cc", "k": 150})
        .session(&mut writer)
        .await
        .unwrap();
    let op_time = writer
        .operation_time()
        .expect("the reply carried operationTime");
    let cluster_time = writer.cluster_time().cloned().expect("and $clusterTime");
    let mut reader = other
        .start_session()
        .causal_consistency(true)
        .await
        .unwrap();
    reader.advance_cluster_time(&cluster_time);
    reader.advance_operation_time(op_time);
    let seen = other
        .database("tx")
        .collection::<Document>("c")
        .find_one(doc! {"_id": "cc"})
        .session(&mut reader)
        .await
        .unwrap();
    assert_eq!(seen, Some(doc! {"_id": "cc", "k": 150}));
    // A reply the router builds itself (a merged scatter count) carries
    // the cluster time too, never behind the write's.
    let counted = other
        .database("tx")
        .run_command(doc! {"count": "c"})
        .await
        .unwrap();
    assert_eq!(counted.get_i32("n").unwrap(), 3);
    let reply = other
        .database("tx")
        .run_command(doc! {"count": "c", "query": {}})
        .await
        .unwrap();
    assert!(reply.contains_key("n"));
    let raw = support::RawConn::connect(second.addr)
        .await
        .command(doc! {"count": "c", "$db": "tx"})
        .await;
    let t = raw
        .get_timestamp("operationTime")
        .expect("operationTime on a merged reply");
    assert!(t >= op_time, "{t:?} < {op_time:?}");
    assert!(raw.get_document("$clusterTime").is_ok());
}
