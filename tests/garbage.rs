//! Hostile and broken input gets an error reply (where a reply is possible)
//! or a close, and the router keeps serving everyone else.

mod support;

use bson::{doc, Document};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use shardgate_wire::op_msg::encode_msg;
use shardgate_wire::{Message, MsgHeader};
use support::{ok_of, RawConn, TestCluster};
use tokio::io::AsyncWriteExt;

/// Reads the error reply to `request_id` and returns its body.
async fn error_reply(conn: &mut RawConn, request_id: i32) -> Document {
    let frame: Bytes = conn
        .read_frame()
        .await
        .expect("an error reply before the close");
    let header = MsgHeader::parse(&frame).unwrap();
    assert_eq!(
        header.response_to, request_id,
        "reply answers the bad request"
    );
    let body = match Message::decode(frame).unwrap().message {
        Message::Msg(m) => Document::from_reader(&m.body[..]).unwrap(),
        Message::Reply(r) => Document::from_reader(&r.document[..]).unwrap(),
        Message::Query(_) => panic!("router sent OP_QUERY"),
    };
    assert_eq!(ok_of(&body), 0.0, "{body}");
    assert!(
        body.get_str("errmsg").is_ok() && body.get_str("codeName").is_ok(),
        "{body}"
    );
    body
}

fn header(len: i32, request_id: i32, op: i32) -> Vec<u8> {
    let mut v = Vec::new();
    MsgHeader {
        message_length: len,
        request_id,
        response_to: 0,
        op_code: op,
    }
    .write(&mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused_and_the_router_keeps_serving() {
    let cluster = TestCluster::start(1).await;
    let addr = cluster.router.addr;
    // A well-behaved client stays connected through all of it.
    let mut good = RawConn::connect(addr).await;
    let check_good = |r: Document| assert_eq!(ok_of(&r), 1.0, "{r}");
    check_good(good.command(doc! {"ping": 1, "$db": "admin"}).await);

    // Random bytes.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20 {
        let mut c = RawConn::connect(addr).await;
        let junk: Vec<u8> = (0..rng.random_range(1..2048))
            .map(|_| rng.random())
            .collect();
        c.send(&junk).await;
        let _ = c.stream.shutdown().await;
        assert!(c.is_closed().await, "random bytes: connection closed");
    }

    // messageLength of 2 GB: refused from the header alone, nothing allocated.
    let mut c = RawConn::connect(addr).await;
    c.send(&header(2_000_000_000, 42, 2013)).await;
    let e = error_reply(&mut c, 42).await;
    assert_eq!(e.get_i32("code").unwrap(), 17);
    assert!(c.is_closed().await);

    // A truncated frame: the header promises more than ever arrives.
    let mut c = RawConn::connect(addr).await;
    let mut frame = header(100, 43, 2013);
    frame.extend_from_slice(&[0u8; 20]);
    c.send(&frame).await;
    let _ = c.stream.shutdown().await;
    assert!(c.is_closed().await, "truncated frame: closed");

    // A bad checksum.
    let mut c = RawConn::connect(addr).await;
    let body = doc! {"ping": 1, "$db": "admin"}.to_vec().unwrap();
    let mut frame = Vec::new();
    encode_msg(44, 0, 1, &body, &[], &mut frame);
    frame.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
    let len = frame.len() as i32;
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    c.send(&frame).await;
    let e = error_reply(&mut c, 44).await;
    assert_eq!(e.get_str("codeName").unwrap(), "ChecksumMismatch");
    assert!(c.is_closed().await);

    // The same message with a correct CRC-32C is served.
    let mut c = RawConn::connect(addr).await;
    let n = frame.len();
    let crc = crc32c(&frame[..n - 4]);
    frame[n - 4..].copy_from_slice(&crc.to_le_bytes());
    c.send(&frame).await;
    let ok = c.read_frame().await.expect("reply to a valid checksum");
    match Message::decode(ok).unwrap().message {
        Message::Msg(m) => assert_eq!(ok_of(&Document::from_reader(&m.body[..]).unwrap()), 1.0),
        other => panic!("{other:?}"),
    }

    // An unknown opcode.
    let mut c = RawConn::connect(addr).await;
    let mut frame = header(26, 45, 9999);
    frame.extend_from_slice(&[0u8; 10]);
    c.send(&frame).await;
    let e = error_reply(&mut c, 45).await;
    assert_eq!(e.get_i32("code").unwrap(), 17);
    assert!(c.is_closed().await);

    // A body that is not BSON.
    let mut c = RawConn::connect(addr).await;
    let mut frame = Vec::new();
    encode_msg(
        46,
        0,
        0,
        &[
            20, 0, 0, 0, 2, b'x', 0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        &[],
        &mut frame,
    );
    c.send(&frame).await;
    let e = error_reply(&mut c, 46).await;
    assert_eq!(e.get_str("codeName").unwrap(), "InvalidBSON");
    assert!(c.is_closed().await);

    // An unknown required flag bit.
    let mut c = RawConn::connect(addr).await;
    let mut frame = Vec::new();
    encode_msg(47, 0, 1 << 4, &body, &[], &mut frame);
    c.send(&frame).await;
    assert_eq!(error_reply(&mut c, 47).await.get_i32("code").unwrap(), 223);

    // Well-formed but meaningless commands get errors, not closes.
    let mut c = RawConn::connect(addr).await;
    let r = c.command(doc! {"ping": 1}).await;
    assert_eq!(r.get_i32("code").unwrap(), 40571, "missing $db: {r}");
    let r = c.command(doc! {"noSuchCommand": 1, "$db": "admin"}).await;
    assert_eq!(r.get_str("codeName").unwrap(), "CommandNotFound");
    let r = c.command(doc! {"find": "x", "$db": "bad.name"}).await;
    assert_eq!(r.get_str("codeName").unwrap(), "InvalidNamespace");
    check_good(c.command(doc! {"ping": 1, "$db": "admin"}).await);

    // Through all of it, the first client and new clients are served.
    check_good(good.command(doc! {"ping": 1, "$db": "admin"}).await);
    let client = cluster.client().await;
    let coll = client.database("after").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
}

/// CRC-32C (Castagnoli), bitwise, independent of the router's implementation.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
