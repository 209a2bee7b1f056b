//! The sharded write path against a fake `ShardClient`: an ordered insert
//! split over two shards stops at the first error, as mongos's does.

use std::sync::Arc;

use bson::{doc, Document};

use crate::session::Reply;
use crate::testing::{message, request, sharded_state, FakeShards};
use crate::write::plan::WriteKind;

#[tokio::test]
async fn an_ordered_batch_stops_at_the_first_error_on_any_shard() {
    let shards = Arc::new(FakeShards::default());
    // s1 refuses the first statement it gets.
    shards
        .insert_errors
        .lock()
        .unwrap()
        .insert("s1".into(), (0, 11000, "E11000 duplicate key".into()));
    let (state, _dir) = sharded_state(shards.clone()).await;
    let docs = vec![
        doc! {"_id": 1, "x": 1},
        doc! {"_id": 2, "x": 2},
        doc! {"_id": 3, "x": 60},
        doc! {"_id": 4, "x": 3},
        doc! {"_id": 5, "x": 70},
    ];
    let (msg, body) = message(doc! {"insert": "c", "documents": docs, "ordered": true});
    let req = request(&msg, &body);
    let reply = crate::write::exec::write(&state, &req, "db.c", WriteKind::Insert)
        .await
        .unwrap();
    let reply = match reply {
        Reply::Body(b) => Document::from_reader(&b[..]).unwrap(),
        Reply::Msg(m) => Document::try_from(m.body()).unwrap(),
    };
    assert_eq!(reply.get_i32("n").unwrap(), 2, "the two before the error");
    let errors = reply.get_array("writeErrors").unwrap();
    assert_eq!(errors.len(), 1);
    let e = errors[0].as_document().unwrap();
    assert_eq!(e.get_i32("index").unwrap(), 2, "the client's index");
    assert_eq!(e.get_i32("code").unwrap(), 11000);
    // Nothing after the error was sent: s0 got one batch (x 1, 2), s1 one
    // (x 60), and x 3 and x 70 never left the router.
    let inserts = shards.calls_named("insert");
    let sent: Vec<(String, Vec<i32>)> = inserts
        .iter()
        .map(|c| {
            let xs = c
                .body
                .get_array("documents")
                .unwrap()
                .iter()
                .map(|d| d.as_document().unwrap().get_i32("x").unwrap())
                .collect();
            (c.shard.clone(), xs)
        })
        .collect();
    assert_eq!(
        sent,
        vec![("s0".to_owned(), vec![1, 2]), ("s1".to_owned(), vec![60])]
    );
}
