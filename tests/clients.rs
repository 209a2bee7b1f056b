//! Real clients see a mongos: the Rust driver, pymongo and mongosh connect
//! and work, the handshake and diagnostics answer as mongos does, and
//! compression, checksums, sessions, cursors and fire-and-forget writes pass
//! through.

mod support;

use bson::{doc, Document};
use futures::TryStreamExt;
use shardgate_router::RouterConfig;
use shardgate_wire::compression::compress_frame;
use shardgate_wire::legacy::encode_query;
use shardgate_wire::{Compressor, Message, MsgHeader, OpMsg, OpMsgFlags};
use support::{ok_of, RawConn, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_and_shells_identify_a_mongos() {
    let cluster = TestCluster::start(2).await;
    let uri = cluster.router.uri();

    // Rust driver.
    let client = cluster.client().await;
    let hello = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    assert_eq!(hello.get_str("msg").unwrap(), "isdbgrid");
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    assert!(hello.get_i32("maxWireVersion").unwrap() >= 17);
    assert!(hello.get_i32("connectionId").unwrap() >= 1);
    assert!(hello.get_datetime("localTime").is_ok());
    assert_eq!(
        hello.get_i32("maxBsonObjectSize").unwrap(),
        16 * 1024 * 1024
    );

    // pymongo: is_mongos, and a write and read through the router.
    let out = support::pymongo(
        &uri,
        r#"
import os, pymongo
c = pymongo.MongoClient(os.environ["URI"], serverSelectionTimeoutMS=10000)
c.py.items.insert_many([{"_id": i, "sq": i * i} for i in range(50)])
print(c.is_mongos, c.py.items.count_documents({"sq": {"$gt": 100}}), c.py.items.find_one({"_id": 7})["sq"])
"#,
    );
    assert_eq!(out.trim(), "True 39 49");

    // mongosh.
    let out = support::mongosh(
        &uri,
        "print(db.hello().msg); print(db.getSiblingDB('py').items.countDocuments()); print(db.adminCommand({listShards: 1}).shards.length)",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, vec!["isdbgrid", "50", "2"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_answer_as_a_mongos() {
    let cluster = TestCluster::start(1).await;
    let admin = cluster.client().await.database("admin");
    let run = |cmd: Document| {
        let admin = admin.clone();
        async move { admin.run_command(cmd).await }
    };
    assert_eq!(ok_of(&run(doc! {"ping": 1}).await.unwrap()), 1.0);
    let bi = run(doc! {"buildInfo": 1}).await.unwrap();
    assert!(bi.get_str("version").unwrap().starts_with("8."));
    let st = run(doc! {"serverStatus": 1}).await.unwrap();
    assert_eq!(st.get_str("process").unwrap(), "mongos");
    assert!(
        st.get_document("connections")
            .unwrap()
            .get_i64("current")
            .unwrap()
            >= 1
    );
    assert!(
        st.get_document("opcounters")
            .unwrap()
            .get_i64("command")
            .unwrap()
            >= 1
    );
    assert!(st.get_i64("uptimeMillis").is_ok());
    let me = run(doc! {"whatsmyuri": 1}).await.unwrap();
    assert!(me.get_str("you").unwrap().starts_with("127.0.0.1:"));
    let opts = run(doc! {"getCmdLineOpts": 1}).await.unwrap();
    assert!(opts.get_document("parsed").is_ok() && opts.get_array("argv").is_ok());
    let params = run(doc! {"getParameter": "*"}).await.unwrap();
    assert!(!params.get_bool("enableTestCommands").unwrap());
    let one = run(doc! {"getParameter": 1, "enableTestCommands": 1})
        .await
        .unwrap();
    assert!(!one.get_bool("enableTestCommands").unwrap());
    let err = run(doc! {"getParameter": 1, "noSuchParameter": 1})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no option found"), "{err}");
    assert_eq!(
        ok_of(&run(doc! {"killAllSessions": []}).await.unwrap()),
        1.0
    );
    let err = run(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("CommandNotFound") || err.to_string().contains("no such command"),
        "{err}"
    );
    let r = run(doc! {"endSessions": [{"id": bson::Binary{subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![1; 16]}}]}).await.unwrap();
    assert_eq!(ok_of(&r), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_command_acts_on_the_router_only_with_test_commands() {
    let config = RouterConfig {
        enable_test_commands: true,
        ..RouterConfig::default()
    };
    let cluster = TestCluster::start_with(2, config, true).await;
    let client = cluster.client().await;
    let admin = client.database("admin");
    let params = admin.run_command(doc! {"getParameter": "*"}).await.unwrap();
    assert!(params.get_bool("enableTestCommands").unwrap());
    let opts = admin.run_command(doc! {"getCmdLineOpts": 1}).await.unwrap();
    let set = opts
        .get_document("parsed")
        .unwrap()
        .get_document("setParameter")
        .unwrap();
    assert_eq!(set.get_str("enableTestCommands").unwrap(), "1");

    let coll = client.database("fp").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    admin
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["count"], "errorCode": 2, "errmsg": "injected"},
        })
        .await
        .unwrap();
    let err = client
        .database("fp")
        .run_command(doc! {"count": "c"})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("injected") || err.to_string().contains("BadValue"),
        "{err}"
    );
    let again = client
        .database("fp")
        .run_command(doc! {"count": "c"})
        .await
        .unwrap();
    assert_eq!(again.get_i32("n").unwrap(), 1);

    // As drivers' own test suites use it on the endpoint they talk to:
    // a closed connection for one application only, a write concern
    // error a retryable write is retried on, labels as mongod adds them.
    let out = support::pymongo(
        &cluster.router.uri(),
        r#"
import os, pymongo
from pymongo.errors import AutoReconnect, OperationFailure
c = pymongo.MongoClient(os.environ["URI"], appName="victim", retryReads=False)
other = pymongo.MongoClient(os.environ["URI"], appName="bystander")
c.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
    "data": {"failCommands": ["find"], "closeConnection": True, "appName": "victim"}})
other.fp.c.find_one()
try:
    c.fp.c.find_one(); print("no close")
except AutoReconnect:
    print("closed")
print("then", c.fp.c.find_one()["_id"])
c.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
    "data": {"failCommands": ["insert"], "writeConcernError": {"code": 91, "errmsg": "Replication is being shut down"}}})
c.fp.c.insert_one({"_id": 2})
print("inserted", c.fp.c.count_documents({"_id": 2}))
c.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 2},
    "data": {"failCommands": ["insert"], "errorCode": 262}})
try:
    c.fp.c.insert_one({"_id": 3}); print("no error")
except OperationFailure as e:
    print("failed", e.code, e.has_error_label("RetryableWriteError"))
print("absent", c.fp.c.count_documents({"_id": 3}))
# A transaction whose statement's connection is closed ends, as mongos
# aborts it: its commit is NoSuchTransaction, and its first write is gone.
with c.start_session() as s:
    s.start_transaction()
    c.fp.c.insert_one({"_id": 5}, session=s)
    c.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": ["insert"], "closeConnection": True, "appName": "victim"}})
    try:
        c.fp.c.insert_one({"_id": 6}, session=s); print("no close")
    except AutoReconnect as e:
        print("txn closed", e.has_error_label("TransientTransactionError"))
    try:
        s.commit_transaction(); print("committed")
    except OperationFailure as e:
        print("commit", e.code, e.has_error_label("TransientTransactionError"))
print("txn absent", c.fp.c.count_documents({"_id": {"$in": [5, 6]}}))
"#,
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "closed",
            "then 1",
            "inserted 1",
            "failed 262 True",
            "absent 0",
            "txn closed True",
            "commit 251 True",
            "txn absent 0"
        ],
        "pymongo saw: {out}"
    );

    // It acts on the legacy OP_QUERY handshake too, as mongod's does: a
    // closed connection, then an error reply, then a normal answer.
    admin
        .run_command(doc! {
            "configureFailPoint": "failCommand", "mode": {"times": 2},
            "data": {"failCommands": ["isMaster"], "closeConnection": true},
        })
        .await
        .unwrap();
    let is_master = |id| {
        let mut q = Vec::new();
        encode_query(id, "admin", &doc! {"isMaster": 1}.to_vec().unwrap(), &mut q);
        q
    };
    let mut c = RawConn::connect(cluster.router.addr).await;
    c.send(&is_master(1)).await;
    assert!(c.is_closed().await, "the handshake's connection is closed");
    // A handshake's own `client.application.name` is matched, as mongod
    // matches it: a monitor's first `hello` on a new connection is closed.
    admin
        .run_command(doc! {
            "configureFailPoint": "failCommand", "mode": {"times": 1},
            "data": {"failCommands": ["hello"], "closeConnection": true, "appName": "monitor"},
        })
        .await
        .unwrap();
    let hello = doc! {
        "hello": 1, "client": {"application": {"name": "monitor"}, "driver": {"name": "t", "version": "1"}},
        "$db": "admin",
    };
    let mut m = RawConn::connect(cluster.router.addr).await;
    m.send(&OpMsg::from_body(hello.to_vec().unwrap()).encode(9, 0))
        .await;
    assert!(m.is_closed().await, "the monitor's hello is failed");

    admin
        .run_command(doc! {
            "configureFailPoint": "failCommand", "mode": {"times": 1},
            "data": {"failCommands": ["isMaster"], "errorCode": 91},
        })
        .await
        .unwrap();
    let mut c = RawConn::connect(cluster.router.addr).await;
    for (id, want_code) in [(2, Some(91)), (3, None)] {
        c.send(&is_master(id)).await;
        let Message::Reply(r) = Message::decode(c.read_frame().await.unwrap())
            .unwrap()
            .message
        else {
            panic!("expected OP_REPLY")
        };
        let d = Document::from_reader(&r.document[..]).unwrap();
        assert_eq!(d.get_i32("code").ok(), want_code, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_is_negotiated_and_used() {
    let cluster = TestCluster::start(1).await;
    for (name, compressor) in [
        ("zstd", mongodb::options::Compressor::Zstd { level: None }),
        ("snappy", mongodb::options::Compressor::Snappy),
        ("zlib", mongodb::options::Compressor::Zlib { level: None }),
    ] {
        let mut opts = mongodb::options::ClientOptions::parse(cluster.router.uri())
            .await
            .unwrap();
        opts.compressors = Some(vec![compressor]);
        let client = mongodb::Client::with_options(opts).unwrap();
        let coll = client.database("z").collection::<Document>(name);
        let docs: Vec<Document> = (0..200)
            .map(|i| doc! {"_id": i, "pad": "x".repeat(1000)})
            .collect();
        coll.insert_many(docs).await.unwrap();
        let back: Vec<Document> = coll
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(back.len(), 200, "{name}");
        assert_eq!(back[199].get_str("pad").unwrap().len(), 1000);
    }

    // On the wire: only known compressors are accepted, and a compressed
    // request gets a compressed reply.
    let mut c = RawConn::connect(cluster.router.addr).await;
    let hello = c
        .command(doc! {"hello": 1, "compression": ["bogus", "snappy"], "$db": "admin"})
        .await;
    let agreed: Vec<&str> = hello
        .get_array("compression")
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(agreed, vec!["snappy"]);
    let find = OpMsg::from_body(
        doc! {"find": "snappy", "filter": {"_id": 3}, "$db": "z"}
            .to_vec()
            .unwrap(),
    )
    .encode(9, 0);
    c.send(&compress_frame(&find, Compressor::Snappy).unwrap())
        .await;
    let reply = c.read_frame().await.unwrap();
    assert_eq!(
        MsgHeader::parse(&reply).unwrap().op_code,
        2012,
        "reply is OP_COMPRESSED"
    );
    let decoded = Message::decode(reply).unwrap();
    assert_eq!(decoded.compressor, Some(Compressor::Snappy));
    let Message::Msg(m) = decoded.message else {
        panic!()
    };
    let body = Document::from_reader(&m.body[..]).unwrap();
    let batch = body
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    assert_eq!(batch[0].as_document().unwrap().get_i32("_id").unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_handshake_cursors_sessions_and_fire_and_forget() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let coll = client.database("cur").collection::<Document>("c");
    coll.insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();

    // OP_QUERY isMaster (what old drivers send first) is answered with OP_REPLY.
    let mut c = RawConn::connect(cluster.router.addr).await;
    let mut q = Vec::new();
    encode_query(5, "admin", &doc! {"isMaster": 1}.to_vec().unwrap(), &mut q);
    c.send(&q).await;
    let Message::Reply(r) = Message::decode(c.read_frame().await.unwrap())
        .unwrap()
        .message
    else {
        panic!("expected OP_REPLY")
    };
    let d = Document::from_reader(&r.document[..]).unwrap();
    assert!(d.get_bool("ismaster").unwrap());
    assert_eq!(d.get_str("msg").unwrap(), "isdbgrid");
    // Any other OP_QUERY is refused with mongod's code.
    let mut q = Vec::new();
    encode_query(6, "cur", &doc! {"find": "c"}.to_vec().unwrap(), &mut q);
    c.send(&q).await;
    let Message::Reply(r) = Message::decode(c.read_frame().await.unwrap())
        .unwrap()
        .message
    else {
        panic!()
    };
    assert_eq!(r.response_flags & 2, 2, "QueryFailure");
    assert_eq!(
        Document::from_reader(&r.document[..])
            .unwrap()
            .get_i32("code")
            .unwrap(),
        352
    );

    // Cursors: find + getMore + killCursors through the router.
    let first = c
        .command(doc! {"find": "c", "sort": {"_id": 1}, "batchSize": 3, "$db": "cur"})
        .await;
    let cursor = first.get_document("cursor").unwrap();
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0);
    assert_eq!(cursor.get_array("firstBatch").unwrap().len(), 3);
    let more = c
        .command(doc! {"getMore": id, "collection": "c", "batchSize": 3, "$db": "cur"})
        .await;
    let next = more
        .get_document("cursor")
        .unwrap()
        .get_array("nextBatch")
        .unwrap();
    assert_eq!(next[0].as_document().unwrap().get_i32("_id").unwrap(), 3);
    let killed = c
        .command(doc! {"killCursors": "c", "cursors": [id], "$db": "cur"})
        .await;
    assert_eq!(
        killed.get_array("cursorsKilled").unwrap()[0].as_i64(),
        Some(id)
    );
    let gone = c
        .command(doc! {"getMore": id, "collection": "c", "$db": "cur"})
        .await;
    assert_eq!(gone.get_i32("code").unwrap(), 43, "CursorNotFound: {gone}");

    // An explicit session: the cursor pages with the same lsid.
    let mut session = client.start_session().await.unwrap();
    let mut cursor = coll
        .find(doc! {})
        .batch_size(2)
        .session(&mut session)
        .await
        .unwrap();
    let mut seen = 0;
    while cursor.advance(&mut session).await.unwrap() {
        seen += 1;
    }
    assert_eq!(seen, 10);

    // moreToCome: an unacknowledged insert gets no reply and still lands.
    let insert = OpMsg {
        flags: OpMsgFlags(OpMsgFlags::MORE_TO_COME),
        ..OpMsg::from_body(
            doc! {"insert": "c", "documents": [{"_id": 100}], "writeConcern": {"w": 0}, "$db": "cur"}
                .to_vec()
                .unwrap(),
        )
    };
    c.send(&insert.encode(77, 0)).await;
    let pong = c.command(doc! {"ping": 1, "$db": "admin"}).await;
    assert_eq!(
        ok_of(&pong),
        1.0,
        "the next reply answers the ping, not the insert"
    );
    let mut found = 0;
    for _ in 0..50 {
        found = coll.count_documents(doc! {"_id": 100}).await.unwrap();
        if found == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(found, 1);
}

/// Exhaust cursors, as mongos (≥ 7.1) serves them: a `getMore` with
/// `exhaustAllowed` is answered with a stream of `moreToCome` replies, each
/// answering the one before, the last (cursor id 0) without the flag; the
/// documents are a plain find's, in order, on a collection spanning two
/// shards. pymongo's exhaust cursor reads the same documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaust_cursors_stream_every_batch() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    let admin = client.database("admin");
    admin
        .run_command(doc! {"enableSharding": "ex", "primaryShard": "shard0000"})
        .await
        .unwrap();
    admin
        .run_command(doc! {"shardCollection": "ex.c", "key": {"k": 1}})
        .await
        .unwrap();
    let coll = client.database("ex").collection::<Document>("c");
    coll.insert_many((0..250).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    admin
        .run_command(doc! {"split": "ex.c", "middle": {"k": 100}})
        .await
        .unwrap();
    admin
        .run_command(doc! {"moveChunk": "ex.c", "find": {"k": 100}, "to": "shard0001", "_waitForDelete": true})
        .await
        .unwrap();

    let mut c = RawConn::connect(cluster.router.addr).await;
    let first = c
        .command(doc! {"find": "c", "sort": {"k": 1}, "batchSize": 20, "$db": "ex"})
        .await;
    let cursor = first.get_document("cursor").unwrap();
    let id = cursor.get_i64("id").unwrap();
    let mut seen: Vec<i32> = docs_of(cursor, "firstBatch");
    let get_more = doc! {"getMore": id, "collection": "c", "batchSize": 40, "$db": "ex"};
    let msg = OpMsg {
        flags: OpMsgFlags(OpMsgFlags::EXHAUST_ALLOWED),
        ..OpMsg::from_body(get_more.to_vec().unwrap())
    };
    c.send(&msg.encode(77, 0)).await;
    let mut answering = 77;
    let mut replies = 0;
    loop {
        let frame = c.read_frame().await.expect("an exhaust reply");
        let header = MsgHeader::parse(&frame).unwrap();
        assert_eq!(header.response_to, answering, "each reply answers the last");
        answering = header.request_id;
        let Message::Msg(reply) = Message::decode(frame).unwrap().message else {
            panic!("not an OP_MSG reply");
        };
        let body = Document::from_reader(&reply.body[..]).unwrap();
        let cursor = body.get_document("cursor").unwrap();
        seen.extend(docs_of(cursor, "nextBatch"));
        replies += 1;
        let open = cursor.get_i64("id").unwrap() != 0;
        assert_eq!(reply.flags.more_to_come(), open, "{body}");
        if !open {
            break;
        }
    }
    assert_eq!(seen, (0..250).collect::<Vec<_>>());
    assert_eq!(replies, 6, "230 documents in batches of 40");
    // The connection serves requests again.
    let ping = c.command(doc! {"ping": 1, "$db": "admin"}).await;
    assert_eq!(ok_of(&ping), 1.0);

    let out = support::pymongo(
        &cluster.router.uri(),
        r#"
import os, pymongo
from pymongo import CursorType
c = pymongo.MongoClient(os.environ["URI"], maxPoolSize=1)
ks = [d["k"] for d in c.ex.c.find(cursor_type=CursorType.EXHAUST, batch_size=7).sort("k", 1)]
print(len(ks), ks == sorted(ks), c.ex.c.count_documents({}))
"#,
    );
    assert_eq!(out.trim(), "250 True 250");
}

fn docs_of(cursor: &Document, batch: &str) -> Vec<i32> {
    cursor
        .get_array(batch)
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().get_i32("k").unwrap())
        .collect()
}
