//! The router's own operations in progress, for `currentOp` and `killOp`
//! as mongos answers them about itself: one slot per client connection
//! (registered once when it connects, so a request only touches its own
//! connection's slot), holding the command it runs now.
//!
//! `killOp` of a router operation id interrupts the command at its next
//! await: the client gets Interrupted (11601), as from a killed mongod
//! operation, and work already sent to shards stays done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bson::{doc, Bson, Document, RawDocument};

use crate::error::RouterError;

/// Commands larger than this are shown as `$truncated`, as mongod shows them.
const SHOWN_BYTES: usize = 1024;

/// Every connection's slot.
#[derive(Default)]
pub(crate) struct Operations {
    slots: Mutex<HashMap<i32, Arc<Slot>>>,
    next_opid: AtomicU32,
}

/// One client connection: who it is and what it runs now.
pub(crate) struct Slot {
    connection_id: i32,
    peer: String,
    /// The `appName` of the client's handshake.
    app_name: Mutex<Option<String>>,
    current: Mutex<Option<Op>>,
    /// The id of the operation a `killOp` asked to stop.
    killed: tokio::sync::watch::Sender<u32>,
}

/// A command in progress.
struct Op {
    opid: u32,
    started: Instant,
    started_at: bson::DateTime,
    op: &'static str,
    ns: String,
    /// The command, whole up to 1 KB (copied as bytes: decoded only when
    /// `currentOp` shows it), else a summary.
    command: Result<bson::RawDocumentBuf, String>,
}

impl Operations {
    /// Registers a new connection.
    pub(crate) fn connect(&self, connection_id: i32, peer: &str) -> Arc<Slot> {
        let slot = Arc::new(Slot::new(connection_id, peer));
        self.lock().insert(connection_id, slot.clone());
        slot
    }

    /// Forgets a closed connection.
    pub(crate) fn disconnect(&self, connection_id: i32) {
        self.lock().remove(&connection_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operations in progress as `currentOp` shows them (idle
    /// connections too with `all`), ordered by connection.
    pub(crate) fn current(&self, host: &str, all: bool) -> Vec<Document> {
        let mut slots: Vec<Arc<Slot>> = self.lock().values().cloned().collect();
        slots.sort_by_key(|s| s.connection_id);
        slots.iter().filter_map(|s| s.describe(host, all)).collect()
    }

    /// Asks the operation `opid` to stop; false when none runs.
    pub(crate) fn kill(&self, opid: u32) -> bool {
        let slots: Vec<Arc<Slot>> = self.lock().values().cloned().collect();
        for slot in slots {
            let running = slot.lock().as_ref().map(|op| op.opid);
            if running == Some(opid) {
                slot.killed.send_replace(opid);
                return true;
            }
        }
        false
    }

    /// Marks the command `name` (on `db`, naming `collection`, with
    /// `body`) in progress on `slot` until the returned guard drops; its
    /// `interrupted` future completes if a `killOp` names it.
    pub(crate) fn begin(
        &self,
        slot: &Arc<Slot>,
        (name, db, collection): (&str, &str, Option<&str>),
        body: &RawDocument,
    ) -> Running {
        let opid = self.next_opid.fetch_add(1, Ordering::Relaxed) + 1;
        let ns = match collection {
            Some(c) => format!("{db}.{c}"),
            None => format!("{db}.$cmd"),
        };
        *slot.lock() = Some(Op {
            opid,
            started: Instant::now(),
            started_at: bson::DateTime::now(),
            op: op_type(name),
            ns,
            command: shown(body),
        });
        Running {
            slot: slot.clone(),
            opid,
            killed: slot.killed.subscribe(),
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("connection_id", &self.connection_id)
            .finish_non_exhaustive()
    }
}

impl Slot {
    pub(crate) fn new(connection_id: i32, peer: &str) -> Slot {
        Slot {
            connection_id,
            peer: peer.to_owned(),
            app_name: Mutex::new(None),
            current: Mutex::new(None),
            killed: tokio::sync::watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Op>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's `appName`, if its handshake gave one.
    pub(crate) fn app_name(&self) -> Option<String> {
        self.app_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the client's `appName` from its handshake.
    pub(crate) fn set_app_name(&self, name: &str) {
        *self.app_name.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.to_owned());
    }

    fn describe(&self, host: &str, all: bool) -> Option<Document> {
        let current = self.lock();
        if current.is_none() && !all {
            return None;
        }
        let mut d = doc! {
            "type": "op",
            "host": host,
            "desc": format!("conn{}", self.connection_id),
            "connectionId": self.connection_id,
            "client": &self.peer,
        };
        if let Some(app) = self
            .app_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            d.insert("appName", app.as_str());
        }
        d.insert("active", current.is_some());
        if let Some(op) = current.as_ref() {
            let micros = op.started.elapsed().as_micros() as i64;
            d.insert("currentOpTime", bson::DateTime::now());
            d.insert("opid", Bson::Int32(op.opid as i32));
            d.insert("secs_running", micros / 1_000_000);
            d.insert("microsecs_running", micros);
            d.insert("op", op.op);
            d.insert("ns", &op.ns);
            let command = match &op.command {
                Ok(raw) => Document::try_from(raw.as_ref()).unwrap_or_default(),
                Err(head) => doc! {"$truncated": head},
            };
            d.insert("command", command);
            d.insert("startedAt", op.started_at);
            d.insert("numYields", 0);
            d.insert("waitingForLock", false);
        }
        Some(d)
    }
}

/// A command in progress; clears its slot when dropped.
pub(crate) struct Running {
    slot: Arc<Slot>,
    opid: u32,
    killed: tokio::sync::watch::Receiver<u32>,
}

impl Running {
    /// Completes when a `killOp` names this operation.
    pub(crate) async fn interrupted(&mut self) -> RouterError {
        let opid = self.opid;
        let _ = self.killed.wait_for(|k| *k == opid).await;
        RouterError::command(11601, "Interrupted", "operation was interrupted")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut current = self.slot.lock();
        if current.as_ref().is_some_and(|op| op.opid == self.opid) {
            *current = None;
        }
    }
}

/// mongod's `op` of a command.
fn op_type(name: &str) -> &'static str {
    match name {
        "find" => "query",
        "getMore" => "getmore",
        "insert" => "insert",
        "update" => "update",
        "delete" => "remove",
        _ => "command",
    }
}

/// The command as `currentOp` shows it: whole up to 1 KB, else its name
/// and collection (mongod's `$truncated`).
fn shown(body: &RawDocument) -> Result<bson::RawDocumentBuf, String> {
    if body.as_bytes().len() <= SHOWN_BYTES {
        return Ok(body.to_owned());
    }
    Err(body
        .iter()
        .next()
        .and_then(|e| e.ok())
        .map(|(k, v)| format!("{{ {k}: {:?} … }}", v.as_str().unwrap_or("")))
        .unwrap_or_default())
}
