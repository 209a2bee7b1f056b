//! The scatter read path against a fake `ShardClient`: a `find` over two
//! shards paged with `getMore`, and an early `killCursors` that closes
//! every shard cursor behind the router's.

use std::collections::BTreeSet;
use std::sync::Arc;

use bson::{doc, Document};

use crate::session::Reply;
use crate::testing::{message, request, session, sharded_state, FakeShards};

fn body_of(reply: Reply) -> Document {
    match reply {
        Reply::Body(b) => Document::from_reader(&b[..]).unwrap(),
        Reply::Msg(m) => Document::try_from(m.body()).unwrap(),
    }
}

fn batch(reply: &Document, field: &str) -> (i64, Vec<i32>) {
    let cursor = reply.get_document("cursor").unwrap();
    let xs = cursor
        .get_array(field)
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().get_i32("x").unwrap())
        .collect();
    (cursor.get_i64("id").unwrap(), xs)
}

fn fake() -> Arc<FakeShards> {
    let shards = Arc::new(FakeShards::default());
    let mut docs = shards.docs.lock().unwrap();
    docs.insert("s0".into(), (0..50).map(|x| doc! {"x": x}).collect());
    docs.insert("s1".into(), (50..100).map(|x| doc! {"x": x}).collect());
    drop(docs);
    shards
}

#[tokio::test]
async fn a_scatter_find_pages_every_document_once() {
    let shards = fake();
    let (state, _dir) = sharded_state(shards.clone()).await;
    let routing = state.routing.get("db.c").unwrap();
    let session = session();
    let (msg, body) = message(doc! {"find": "c", "filter": {}, "batchSize": 7});
    let req = request(&msg, &body);
    let reply = body_of(
        super::find::find(&state, &session, &req, &routing, "db.c")
            .await
            .unwrap(),
    );
    let (id, mut seen) = batch(&reply, "firstBatch");
    assert_eq!(seen.len(), 7);
    assert_ne!(id, 0);
    loop {
        let (msg, body) = message(doc! {"getMore": id, "collection": "c", "batchSize": 30});
        let req = request(&msg, &body);
        let reply = body_of(
            super::get_more::get_more(&state, &session, &req)
                .await
                .unwrap()
                .unwrap(),
        );
        let (next, xs) = batch(&reply, "nextBatch");
        assert!(xs.len() <= 30);
        seen.extend(xs);
        if next == 0 {
            break;
        }
        assert_eq!(next, id);
    }
    let distinct: BTreeSet<i32> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 100, "every document once");
    assert_eq!(distinct, (0..100).collect());
    assert!(
        shards.cursors.lock().unwrap().is_empty(),
        "no shard cursor left"
    );
    assert_eq!(state.cursors.len(), 0, "no router cursor left");
}

#[tokio::test]
async fn an_early_kill_cursors_closes_every_shard_cursor() {
    let shards = fake();
    let (state, _dir) = sharded_state(shards.clone()).await;
    let routing = state.routing.get("db.c").unwrap();
    let session = session();
    let (msg, body) = message(doc! {"find": "c", "filter": {}, "batchSize": 5});
    let req = request(&msg, &body);
    let reply = body_of(
        super::find::find(&state, &session, &req, &routing, "db.c")
            .await
            .unwrap(),
    );
    let (id, _) = batch(&reply, "firstBatch");
    assert_eq!(
        shards.cursors.lock().unwrap().len(),
        2,
        "one open per shard"
    );
    let (msg, body) = message(doc! {"killCursors": "c", "cursors": [id, 99i64]});
    let req = request(&msg, &body);
    let reply = body_of(
        super::get_more::kill_cursors(&state, &req)
            .await
            .unwrap()
            .unwrap(),
    );
    assert_eq!(
        reply.get_array("cursorsKilled").unwrap(),
        &vec![bson::Bson::Int64(id)]
    );
    assert_eq!(
        reply.get_array("cursorsNotFound").unwrap(),
        &vec![bson::Bson::Int64(99)]
    );
    assert!(
        shards.cursors.lock().unwrap().is_empty(),
        "shard cursors closed"
    );
    let killed: BTreeSet<String> = shards
        .calls_named("killCursors")
        .into_iter()
        .map(|c| c.shard)
        .collect();
    assert_eq!(killed, ["s0".to_owned(), "s1".to_owned()].into());
    // The router forgot its cursor: a getMore on it is not its own.
    let (msg, body) = message(doc! {"getMore": id, "collection": "c"});
    let req = request(&msg, &body);
    let session = session;
    assert!(super::get_more::get_more(&state, &session, &req)
        .await
        .unwrap()
        .is_none());
}

#[test]
fn a_cursor_reply_is_the_document_a_server_sends() {
    let docs: Vec<bson::RawDocumentBuf> = (0..12)
        .map(|i| {
            bson::RawDocumentBuf::try_from(&doc! {"_id": i, "s": "x".repeat(i as usize)}).unwrap()
        })
        .collect();
    let bytes = super::cursor_reply(
        7,
        "db.c",
        "nextBatch",
        &docs,
        doc! {"partialResultsReturned": true},
    );
    let got = bson::RawDocumentBuf::from_bytes(bytes).unwrap();
    let batch: Vec<bson::Bson> = docs
        .iter()
        .map(|d| bson::Bson::Document(Document::try_from(d.as_ref()).unwrap()))
        .collect();
    let want = doc! {
        "cursor": {"id": 7i64, "ns": "db.c", "nextBatch": batch},
        "partialResultsReturned": true,
        "ok": 1.0,
    };
    assert_eq!(Document::try_from(got.as_ref()).unwrap(), want);
    let empty = super::cursor_reply(0, "", "firstBatch", &[], Document::new());
    assert_eq!(
        Document::from_reader(&empty[..]).unwrap(),
        doc! {"cursor": {"id": 0i64, "ns": "", "firstBatch": []}, "ok": 1.0}
    );
}
