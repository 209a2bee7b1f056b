//! A test double for a replica set's *topology* only: one proxy per member
//! in front of a real SecantusDB server (all members share it, so the data
//! is the server's own and counted there). Each proxy answers `hello` as
//! its member (`setName`, `hosts`, `primary`, `isWritablePrimary` /
//! `secondary`, `topologyVersion`, `electionId`), refuses writes on a
//! secondary (NotWritablePrimary, 10107) and reads without a secondary read
//! preference (NotPrimaryNoSecondaryOk, 13435), and forwards everything else.
//! [`ReplicaSetDouble::step_down`] makes the primary a secondary — its open
//! connections close, in-flight operations included, as a stepdown does —
//! and, after an "election" pause, another member primary. A `hello` that
//! names the current `topologyVersion` with `maxAwaitTimeMS` is awaitable,
//! as mongod's: it is answered when a role changes (the version's counter
//! moves) or when the wait ends. Real mongod
//! replica sets need no double: point `SHARDGATE_SHARD_BIN` at mongod and
//! use a real set's connection string instead.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{doc, Bson, Document};
use bytes::{Bytes, BytesMut};
use shardgate_wire::{check_frame, Message, OpMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The `topologyVersion.processId` of every member.
const PROCESS_ID: bson::oid::ObjectId = bson::oid::ObjectId::from_bytes([7; 12]);

/// Commands a secondary serves when the read preference allows it.
const READS: [&str; 9] = [
    "find",
    "aggregate",
    "count",
    "distinct",
    "getMore",
    "killCursors",
    "listCollections",
    "listIndexes",
    "dbStats",
];
/// Commands any member answers.
const ANY: [&str; 8] = [
    "ping",
    "buildInfo",
    "buildinfo",
    "endSessions",
    "saslStart",
    "saslContinue",
    "serverStatus",
    "listDatabases",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Primary,
    Secondary,
}

struct Shared {
    set_name: String,
    addresses: Vec<String>,
    roles: Mutex<Vec<Role>>,
    /// Bumped at every role change; connections of a demoted primary close.
    epoch: watch::Sender<u64>,
    /// Commands each member forwarded: (reads, writes).
    served: Vec<(AtomicU64, AtomicU64)>,
    backend: String,
}

/// The double: its members' proxies.
pub struct ReplicaSetDouble {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ReplicaSetDouble {
    /// `members` proxies in front of `backend` (`host:port`), member 0
    /// primary.
    pub async fn start(set_name: &str, members: usize, backend: &str) -> ReplicaSetDouble {
        let mut listeners = Vec::new();
        for _ in 0..members {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind member"));
        }
        let addresses: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let mut roles = vec![Role::Secondary; members];
        roles[0] = Role::Primary;
        let shared = Arc::new(Shared {
            set_name: set_name.to_owned(),
            addresses,
            roles: Mutex::new(roles),
            epoch: watch::Sender::new(0),
            served: (0..members)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            backend: backend.to_owned(),
        });
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| tokio::spawn(accept(shared.clone(), i, l)))
            .collect();
        ReplicaSetDouble { shared, tasks }
    }

    /// `rs0/host1,host2,…`.
    pub fn connection_string(&self) -> String {
        format!(
            "{}/{}",
            self.shared.set_name,
            self.shared.addresses.join(",")
        )
    }

    /// The seed string naming only member `i`.
    pub fn seed(&self, i: usize) -> String {
        format!("{}/{}", self.shared.set_name, self.shared.addresses[i])
    }

    pub fn addresses(&self) -> Vec<String> {
        self.shared.addresses.clone()
    }

    /// The primary's index, if any.
    pub fn primary(&self) -> Option<usize> {
        self.shared
            .roles
            .lock()
            .unwrap()
            .iter()
            .position(|r| *r == Role::Primary)
    }

    /// Reads and writes member `i` forwarded.
    pub fn served(&self, i: usize) -> (u64, u64) {
        let (r, w) = &self.shared.served[i];
        (r.load(Ordering::SeqCst), w.load(Ordering::SeqCst))
    }

    /// The primary steps down (its connections close); after `election`,
    /// member `next` becomes primary.
    pub async fn step_down(&self, next: usize, election: Duration) {
        {
            let mut roles = self.shared.roles.lock().unwrap();
            roles.iter_mut().for_each(|r| *r = Role::Secondary);
        }
        self.shared.epoch.send_modify(|e| *e += 1);
        tokio::time::sleep(election).await;
        self.shared.roles.lock().unwrap()[next] = Role::Primary;
        self.shared.epoch.send_modify(|e| *e += 1);
    }
}

impl Drop for ReplicaSetDouble {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept(shared: Arc<Shared>, me: usize, listener: TcpListener) {
    while let Ok((client, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve(shared, me, client).await;
        });
    }
}

async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Bytes> {
    loop {
        if let Ok(Some(len)) = check_frame(buf) {
            return Some(buf.split_to(len).freeze());
        }
        match stream.read_buf(buf).await {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
}

/// One client connection of member `me`; it ends (closes) when the member
/// stops being the primary it was.
async fn serve(shared: Arc<Shared>, me: usize, mut client: TcpStream) -> std::io::Result<()> {
    let mut epoch = shared.epoch.subscribe();
    let was_primary = shared.roles.lock().unwrap()[me] == Role::Primary;
    let backend_addr: SocketAddr = shared.backend.parse().expect("backend address");
    let mut backend = TcpStream::connect(backend_addr).await?;
    let (mut cbuf, mut bbuf) = (BytesMut::new(), BytesMut::new());
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut client, &mut cbuf) => f,
            _ = epoch.changed(), if was_primary => return Ok(()),
        };
        let Some(frame) = frame else { return Ok(()) };
        let header = shardgate_wire::MsgHeader::parse(&frame).expect("header");
        let Ok(decoded) = Message::decode(frame.clone()) else {
            return Ok(());
        };
        let Message::Msg(msg) = decoded.message else {
            return Ok(());
        };
        let body = Document::from_reader(&msg.body[..]).unwrap_or_default();
        let name = body.keys().next().cloned().unwrap_or_default();
        if let Some(wait) = awaitable(&shared, &name, &body) {
            // Subscribed before the version is compared again: no change
            // between the two is missed.
            let mut changes = shared.epoch.subscribe();
            if awaitable(&shared, &name, &body).is_some() {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        let role = shared.roles.lock().unwrap()[me];
        if let Some(reply) = own_answer(&shared, me, role, &name, &body) {
            let out = OpMsg::from_body(reply.to_vec().unwrap())
                .encode(header.request_id, header.request_id);
            client.write_all(&out).await?;
            continue;
        }
        let counter = if READS.contains(&name.as_str()) {
            &shared.served[me].0
        } else {
            &shared.served[me].1
        };
        counter.fetch_add(1, Ordering::SeqCst);
        backend.write_all(&frame).await?;
        let reply = tokio::select! {
            r = read_frame(&mut backend, &mut bbuf) => r,
            _ = epoch.changed(), if was_primary => return Ok(()),
        };
        let Some(reply) = reply else { return Ok(()) };
        if was_primary && shared.roles.lock().unwrap()[me] != Role::Primary {
            return Ok(()); // stepped down while the operation ran
        }
        client.write_all(&reply).await?;
    }
}

/// How long an awaitable `hello` may wait: it names the current
/// `topologyVersion` and a `maxAwaitTimeMS`.
fn awaitable(shared: &Shared, name: &str, body: &Document) -> Option<Duration> {
    if name != "hello" {
        return None;
    }
    let version = body.get_document("topologyVersion").ok()?;
    let wait = body
        .get_i64("maxAwaitTimeMS")
        .or_else(|_| body.get_i32("maxAwaitTimeMS").map(i64::from))
        .ok()?;
    let current = *shared.epoch.borrow() as i64;
    let same = version.get_object_id("processId").ok() == Some(PROCESS_ID)
        && version.get_i64("counter").ok() == Some(current);
    same.then(|| Duration::from_millis(wait.max(0) as u64))
}

/// What the member answers itself: `hello`, or a refusal of what its role
/// does not serve.
fn own_answer(
    shared: &Shared,
    me: usize,
    role: Role,
    name: &str,
    body: &Document,
) -> Option<Document> {
    if matches!(name, "hello" | "isMaster" | "ismaster") {
        return Some(hello(shared, me, role));
    }
    if role == Role::Primary || ANY.contains(&name) {
        return None;
    }
    let secondary_ok = body
        .get_document("$readPreference")
        .ok()
        .and_then(|p| p.get_str("mode").ok())
        .is_some_and(|m| m != "primary");
    if READS.contains(&name) {
        if secondary_ok || name == "getMore" || name == "killCursors" {
            return None;
        }
        return Some(
            doc! {"ok": 0.0, "code": 13435, "codeName": "NotPrimaryNoSecondaryOk", "errmsg": "not primary and secondaryOk=false"},
        );
    }
    Some(
        doc! {"ok": 0.0, "code": 10107, "codeName": "NotWritablePrimary", "errmsg": "not primary", "errorLabels": ["RetryableWriteError"]},
    )
}

fn hello(shared: &Shared, me: usize, role: Role) -> Document {
    let roles = shared.roles.lock().unwrap().clone();
    let epoch = *shared.epoch.borrow();
    let mut d = doc! {
        "isWritablePrimary": role == Role::Primary,
        "ismaster": role == Role::Primary,
        "secondary": role == Role::Secondary,
        "setName": shared.set_name.clone(),
        "setVersion": 1,
        "hosts": shared.addresses.clone(),
        "me": shared.addresses[me].clone(),
        "topologyVersion": {"processId": PROCESS_ID, "counter": epoch as i64},
        "lastWrite": {"lastWriteDate": bson::DateTime::now()},
        "maxBsonObjectSize": 16 * 1024 * 1024,
        "maxMessageSizeBytes": 48_000_000,
        "maxWriteBatchSize": 100_000,
        "localTime": bson::DateTime::now(),
        "logicalSessionTimeoutMinutes": 30,
        "minWireVersion": 0,
        "maxWireVersion": 25,
        "ok": 1.0,
    };
    if let Some(p) = roles.iter().position(|r| *r == Role::Primary) {
        d.insert("primary", shared.addresses[p].clone());
        let mut id = [0u8; 12];
        id[11] = epoch as u8;
        d.insert(
            "electionId",
            Bson::ObjectId(bson::oid::ObjectId::from_bytes(id)),
        );
    }
    d
}
