//! Unit-test support: a fake `ShardClient` that answers `find`, `getMore`,
//! `killCursors` and `insert` from scripted per-shard data and records every
//! command, and a `RouterState` over an embedded store with a sharded
//! collection, so the request path runs without a shard process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bson::{doc, Bson, Document, RawDocumentBuf};
use shardgate_config_store::catalog::{new_chunk, CollectionVersion};
use shardgate_config_store::model::CollectionType;
use shardgate_config_store::{Catalog, EmbeddedStore, ShardType};
use shardgate_shard_client::{Result as ShardResult, ShardClient, Target};
use shardgate_wire::OpMsg;

use crate::catalog_cache::placement::Placement;
use crate::catalog_cache::routing::RoutingTable;
use crate::commands::{Request, Session};
use crate::config::RouterConfig;
use crate::state::RouterState;

/// One command a fake shard received.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// The shard.
    pub shard: String,
    /// The command's name.
    pub name: String,
    /// Its body.
    pub body: Document,
}

/// A stand-in for the shards (not a real part: unit tests of the request
/// path only; end-to-end tests use real shard servers).
#[derive(Default)]
pub(crate) struct FakeShards {
    /// Each shard's documents, in the order `find` returns them.
    pub docs: Mutex<HashMap<String, Vec<Document>>>,
    /// Open cursors: (shard, id) → what is left.
    pub cursors: Mutex<HashMap<(String, i64), VecDeque<Document>>>,
    /// Every command, in arrival order.
    pub calls: Mutex<Vec<Call>>,
    /// Per shard, `insert` write errors to answer: the statement index
    /// within the shard's batch → (code, errmsg).
    pub insert_errors: Mutex<HashMap<String, (usize, i32, String)>>,
    /// Shards that have `prepareTransaction`, with the prepare timestamp
    /// each answers (`None`: it refuses the prepare); the others answer
    /// CommandNotFound, as SecantusDB does.
    pub prepares: Mutex<HashMap<String, Option<bson::Timestamp>>>,
    next_id: Mutex<i64>,
}

impl FakeShards {
    /// The commands `name` the shards received.
    pub(crate) fn calls_named(&self, name: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.name == name)
            .cloned()
            .collect()
    }

    fn answer(&self, shard: &str, body: &Document) -> Document {
        let name = body.keys().next().cloned().unwrap_or_default();
        let batch = |b: &Document| {
            b.get_i64("batchSize")
                .or(b.get_i32("batchSize").map(i64::from))
        };
        match name.as_str() {
            "find" => {
                let docs: VecDeque<Document> = self
                    .docs
                    .lock()
                    .unwrap()
                    .get(shard)
                    .cloned()
                    .unwrap_or_default()
                    .into();
                self.open(shard, docs, batch(body).unwrap_or(101), body)
            }
            "getMore" => {
                let id = body.get_i64("getMore").unwrap_or(0);
                let n = batch(body).unwrap_or(i64::MAX) as usize;
                let mut cursors = self.cursors.lock().unwrap();
                let Some(left) = cursors.get_mut(&(shard.to_owned(), id)) else {
                    return doc! {"ok": 0.0, "code": 43, "codeName": "CursorNotFound", "errmsg": "cursor not found"};
                };
                let out: Vec<Document> = left.drain(..n.min(left.len())).collect();
                let next = if left.is_empty() {
                    cursors.remove(&(shard.to_owned(), id));
                    0
                } else {
                    id
                };
                doc! {"cursor": {"id": next, "ns": "db.c", "nextBatch": out}, "ok": 1.0}
            }
            "killCursors" => {
                let mut killed = Vec::new();
                for id in body.get_array("cursors").cloned().unwrap_or_default() {
                    if let Bson::Int64(id) = id {
                        if self
                            .cursors
                            .lock()
                            .unwrap()
                            .remove(&(shard.to_owned(), id))
                            .is_some()
                        {
                            killed.push(id);
                        }
                    }
                }
                doc! {"cursorsKilled": killed, "ok": 1.0}
            }
            "insert" => {
                let n = body.get_array("documents").map(Vec::len).unwrap_or(0);
                match self.insert_errors.lock().unwrap().get(shard).cloned() {
                    Some((at, code, errmsg)) if at < n => doc! {
                        "n": at as i32,
                        "writeErrors": [{"index": at as i32, "code": code, "errmsg": errmsg}],
                        "ok": 1.0,
                    },
                    _ => doc! {"n": n as i32, "ok": 1.0},
                }
            }
            "prepareTransaction" => match self.prepares.lock().unwrap().get(shard) {
                None => {
                    doc! {"ok": 0.0, "code": 59, "codeName": "CommandNotFound", "errmsg": "no such command"}
                }
                Some(_) if !body.contains_key("lsid") => {
                    doc! {"ok": 0.0, "code": 50768, "codeName": "Location50768", "errmsg": "not in a transaction"}
                }
                Some(Some(ts)) => doc! {"prepareTimestamp": *ts, "ok": 1.0},
                Some(None) => {
                    doc! {"ok": 0.0, "code": 251, "codeName": "NoSuchTransaction", "errmsg": "aborted"}
                }
            },
            _ => doc! {"ok": 1.0},
        }
    }

    fn open(&self, shard: &str, mut docs: VecDeque<Document>, n: i64, body: &Document) -> Document {
        let first: Vec<Document> = docs.drain(..(n.max(0) as usize).min(docs.len())).collect();
        let single = body.get_bool("singleBatch").unwrap_or(false);
        let id = if docs.is_empty() || single {
            0
        } else {
            let mut next = self.next_id.lock().unwrap();
            *next += 1;
            self.cursors
                .lock()
                .unwrap()
                .insert((shard.to_owned(), *next), docs);
            *next
        };
        doc! {"cursor": {"id": id, "ns": "db.c", "firstBatch": first}, "ok": 1.0}
    }
}

#[async_trait::async_trait]
impl ShardClient for FakeShards {
    async fn send(&self, shard: Target<'_>, msg: &OpMsg) -> ShardResult<OpMsg> {
        let mut body = Document::try_from(msg.body()).unwrap_or_default();
        for seq in &msg.sequences {
            let docs: Vec<Bson> = seq
                .iter()
                .filter_map(|d| Document::try_from(d).ok())
                .map(Bson::Document)
                .collect();
            body.insert(seq.identifier.clone(), docs);
        }
        self.calls.lock().unwrap().push(Call {
            shard: shard.id.to_owned(),
            name: body.keys().next().cloned().unwrap_or_default(),
            body: body.clone(),
        });
        let reply = self.answer(shard.id, &body);
        Ok(OpMsg::from_body(reply.to_vec().unwrap_or_default()))
    }
}

/// A router state over `shards` with shards `s0`, `s1` and `db.c` sharded
/// on `{x: 1}`: `[MinKey, 50)` on `s0`, `[50, MaxKey)` on `s1`.
pub(crate) async fn sharded_state(
    shards: Arc<FakeShards>,
) -> (Arc<RouterState>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let catalog = Catalog::new(store);
    for id in ["s0", "s1"] {
        catalog
            .add_shard(ShardType::new(id, format!("{id}.invalid:1")))
            .await
            .unwrap();
    }
    let coll = CollectionType {
        no_balance: true,
        ..CollectionType::new(
            "db.c",
            doc! {"x": 1},
            false,
            bson::Timestamp {
                time: 1,
                increment: 1,
            },
        )
    };
    let now = bson::Timestamp {
        time: 1,
        increment: 1,
    };
    let v = |minor| CollectionVersion { major: 1, minor };
    let chunks = [
        new_chunk(
            &coll,
            doc! {"x": Bson::MinKey},
            doc! {"x": 50},
            "s0",
            v(0),
            now,
        ),
        new_chunk(
            &coll,
            doc! {"x": 50},
            doc! {"x": Bson::MaxKey},
            "s1",
            v(1),
            now,
        ),
    ];
    assert!(catalog
        .create_sharded_collection(&coll, &chunks)
        .await
        .unwrap());
    let placement = Placement::load(&catalog).await.unwrap();
    let routing = RoutingTable::default();
    routing.load_all(&catalog).await.unwrap();
    let config = RouterConfig {
        balancer: false,
        ..Default::default()
    };
    let state = RouterState::new(config, catalog, placement, routing, shards, "test".into());
    (Arc::new(state), dir)
}

/// A session for connection 1.
pub(crate) fn session() -> Session {
    Session {
        connection_id: 1,
        peer: "127.0.0.1:1".into(),
        compressors: Vec::new(),
        auth: Default::default(),
        slot: std::sync::Arc::new(crate::operations::Slot::new(1, "127.0.0.1:1")),
        close_now: false,
    }
}

/// A message with `body` (its `$db` added) and the request over it.
pub(crate) fn message(body: Document) -> (OpMsg, RawDocumentBuf) {
    let mut body = body;
    body.insert("$db", "db");
    let raw = RawDocumentBuf::try_from(&body).unwrap();
    (OpMsg::from_body(raw.as_bytes().to_vec()), raw)
}

/// The request for `msg` (`body` is its body).
pub(crate) fn request<'a>(msg: &'a OpMsg, body: &'a RawDocumentBuf) -> Request<'a> {
    let name = body.iter().next().unwrap().unwrap().0.as_str();
    Request {
        name,
        db: "db",
        collection: body.get_str(name).ok(),
        body,
        msg,
    }
}
