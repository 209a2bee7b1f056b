//! Hostile clients: connections past the total and per-address limits are
//! refused with a clear error while existing clients keep working; a client
//! that starts a message and stalls is disconnected, an idle one is not;
//! messages that would exceed the buffered-bytes budget are refused.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bson::{doc, Document};
use shardgate_router::config::LimitsConfig;
use shardgate_router::RouterConfig;
use support::{RawConn, RouterHandle};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

async fn router(limits: LimitsConfig) -> (tempfile::TempDir, RouterHandle) {
    let dir = tempfile::tempdir().unwrap();
    let config = RouterConfig {
        limits,
        balancer: false,
        ..Default::default()
    };
    let router = RouterHandle::start(&dir.path().join("config"), config).await;
    (dir, router)
}

/// A raw connection from a chosen loopback source address.
async fn connect_from(source: &str, to: SocketAddr) -> RawConn {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    RawConn::from_stream(socket.connect(to).await.unwrap())
}

fn errmsg(d: &Document) -> &str {
    d.get_str("errmsg").unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limits_are_refused_and_existing_ones_keep_working() {
    let (_dir, router) = router(LimitsConfig {
        max_connections: 25,
        max_connections_per_ip: 20,
        ..Default::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..20 {
        let mut c = connect_from("127.0.0.1", router.addr).await;
        assert_eq!(
            c.command(doc! {"ping": 1, "$db": "admin"})
                .await
                .get_f64("ok")
                .unwrap(),
            1.0
        );
        open.push(c);
    }
    // The 21st from the same address: a clear error, then closed.
    let mut extra = connect_from("127.0.0.1", router.addr).await;
    let reply = extra.command(doc! {"hello": 1, "$db": "admin"}).await;
    assert_eq!(reply.get_f64("ok").unwrap(), 0.0, "{reply}");
    assert!(
        errmsg(&reply).contains("127.0.0.1 already has 20 open connections"),
        "{reply}"
    );
    assert!(extra.is_closed().await);
    // Another address gets in until the total limit.
    let mut others = Vec::new();
    for _ in 0..5 {
        let mut c = connect_from("127.0.0.2", router.addr).await;
        assert_eq!(
            c.command(doc! {"ping": 1, "$db": "admin"})
                .await
                .get_f64("ok")
                .unwrap(),
            1.0
        );
        others.push(c);
    }
    let mut over = connect_from("127.0.0.3", router.addr).await;
    let reply = over.command(doc! {"hello": 1, "$db": "admin"}).await;
    assert!(
        errmsg(&reply).contains("limit of 25 open connections"),
        "{reply}"
    );
    // Existing clients keep working.
    for c in open.iter_mut().chain(others.iter_mut()) {
        assert_eq!(
            c.command(doc! {"ping": 1, "$db": "admin"})
                .await
                .get_f64("ok")
                .unwrap(),
            1.0
        );
    }
    let status = open[0]
        .command(doc! {"serverStatus": 1, "$db": "admin"})
        .await;
    let conns = status.get_document("connections").unwrap();
    assert_eq!(conns.get_i64("refused").unwrap(), 2, "{conns}");
    // Closing some makes room again.
    open.truncate(10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = connect_from("127.0.0.1", router.addr).await;
    assert_eq!(
        again
            .command(doc! {"ping": 1, "$db": "admin"})
            .await
            .get_f64("ok")
            .unwrap(),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_message_is_cut_off_but_an_idle_connection_stays() {
    let (_dir, router) = router(LimitsConfig {
        frame_timeout_secs: 1,
        ..Default::default()
    })
    .await;
    let mut idle = RawConn::connect(router.addr).await;
    let mut slow = RawConn::connect(router.addr).await;
    // Half a header, then nothing: a slow-loris client.
    slow.stream
        .write_all(&[200, 0, 0, 0, 1, 0, 0])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(slow.is_closed().await, "the stalled client is disconnected");
    assert_eq!(
        idle.command(doc! {"ping": 1, "$db": "admin"})
            .await
            .get_f64("ok")
            .unwrap(),
        1.0,
        "an idle connection is not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_the_buffered_bytes_budget_are_refused() {
    let (_dir, router) = router(LimitsConfig {
        max_buffered_mb: 48,
        frame_timeout_secs: 2,
        ..Default::default()
    })
    .await;
    // A announces a 40 MB message and takes 40 MB of the 48 MB budget.
    let header = |request_id: i32| {
        let mut h = Vec::new();
        h.extend_from_slice(&(40_000_000i32).to_le_bytes());
        h.extend_from_slice(&request_id.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&2013i32.to_le_bytes());
        h
    };
    let mut a = RawConn::connect(router.addr).await;
    a.stream.write_all(&header(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B announces another: it cannot be buffered, and B is told so.
    let mut b = RawConn::connect(router.addr).await;
    b.stream.write_all(&header(2)).await.unwrap();
    let reply = b.read_frame().await.expect("an error reply");
    let body = match shardgate_wire::Message::decode(reply).unwrap().message {
        shardgate_wire::Message::Msg(m) => Document::from_reader(&m.body[..]).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(body.get_f64("ok").unwrap(), 0.0);
    assert!(
        errmsg(&body).contains("buffering too many incoming bytes"),
        "{body}"
    );
    assert!(b.is_closed().await);
    // Small requests still fit, and once A is cut off the budget is back.
    let mut c = RawConn::connect(router.addr).await;
    assert_eq!(
        c.command(doc! {"ping": 1, "$db": "admin"})
            .await
            .get_f64("ok")
            .unwrap(),
        1.0
    );
    assert!(a.is_closed().await, "A's message never came whole");
    let mut d = RawConn::connect(router.addr).await;
    assert_eq!(
        d.command(doc! {"ping": 1, "$db": "admin"})
            .await
            .get_f64("ok")
            .unwrap(),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_cursors_per_connection_are_bounded() {
    let cluster = support::TestCluster::start_with(
        2,
        RouterConfig {
            balancer: false,
            limits: LimitsConfig {
                max_cursors_per_connection: 3,
                ..Default::default()
            },
            ..Default::default()
        },
        false,
    )
    .await;
    let client = cluster.client().await;
    support::admin(
        &client,
        doc! {"enableSharding": "cur", "primaryShard": "shard0000"},
    )
    .await;
    support::admin(&client, doc! {"shardCollection": "cur.c", "key": {"k": 1}}).await;
    client
        .database("cur")
        .collection::<Document>("c")
        .insert_many((0..20).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    let mut conn = RawConn::connect(cluster.router.addr).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = conn
            .command(doc! {"find": "c", "batchSize": 1, "$db": "cur"})
            .await;
        ids.push(r.get_document("cursor").unwrap().get_i64("id").unwrap());
    }
    let r = conn
        .command(doc! {"find": "c", "batchSize": 1, "$db": "cur"})
        .await;
    assert_eq!(r.get_i32("code").unwrap(), 96, "{r}");
    assert!(errmsg(&r).contains("3 open cursors"), "{r}");
    // Another connection is not affected.
    let mut other = RawConn::connect(cluster.router.addr).await;
    let r = other
        .command(doc! {"find": "c", "batchSize": 1, "$db": "cur"})
        .await;
    assert_eq!(r.get_f64("ok").unwrap(), 1.0, "{r}");
    // Closing one makes room.
    conn.command(doc! {"killCursors": "c", "cursors": [ids[0]], "$db": "cur"})
        .await;
    let r = conn
        .command(doc! {"find": "c", "batchSize": 1, "$db": "cur"})
        .await;
    assert_eq!(r.get_f64("ok").unwrap(), 1.0, "{r}");
}

/// Idle connections cost the router little memory: 3,000 clients that sent
/// `hello` and wait add well under 12 KB each to its RSS
/// (`scripts/idle_connections.py`). A command's running state is boxed per
/// request rather than held inline in every connection's task, which had
/// made each idle connection cost about 46 KB.
#[test]
fn idle_connections_hold_little_memory() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/idle_connections.py"
        ))
        .args(["--bin", env!("CARGO_BIN_EXE_shardgate")])
        .args(["--connections", "3000", "--port", &port.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("connections: 3000"), "{stdout}");
    let per_connection: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("per connection: "))
        .and_then(|v| v.trim_end_matches(" KB").parse().ok())
        .unwrap_or_else(|| panic!("no figure in {stdout}"));
    assert!(
        per_connection < 12.0,
        "{per_connection} KB per idle connection\n{stdout}"
    );
}
