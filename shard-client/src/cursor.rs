//! A shard's cursor read batch by batch: one implementation of `getMore`
//! paging for every caller, closed on the shard when dropped before its end.

use std::sync::Arc;

use bson::{RawDocument, RawDocumentBuf};

use crate::error::{Result, ShardError};
use crate::{ShardClient, Target};

/// A cursor reply: `{cursor: {id, ns, firstBatch | nextBatch}}`.
#[derive(Debug)]
pub struct CursorReply {
    /// The cursor id (0: exhausted).
    pub id: i64,
    /// `db.collection` the cursor reads.
    pub ns: String,
    /// The batch.
    pub docs: Vec<RawDocumentBuf>,
}

/// Reads a cursor reply; anything else is [`ShardError::Protocol`], never
/// an empty batch.
pub fn cursor_reply(shard: &str, reply: &RawDocument) -> Result<CursorReply> {
    let bad = |why: &str| ShardError::protocol(shard, format!("cursor reply {why}"));
    let cursor = reply
        .get_document("cursor")
        .map_err(|_| bad("without a cursor document"))?;
    let id = match cursor.get("id") {
        Ok(Some(v)) => v
            .as_i64()
            .or(v.as_i32().map(i64::from))
            .ok_or_else(|| bad("with a non-integer id"))?,
        _ => return Err(bad("without an id")),
    };
    let ns = cursor.get_str("ns").unwrap_or_default().to_owned();
    let batch = cursor
        .get_array("firstBatch")
        .or_else(|_| cursor.get_array("nextBatch"))
        .map_err(|_| bad("without firstBatch or nextBatch"))?;
    // Walked by element headers (no check of the index keys' UTF-8): a
    // batch can hold 16 MB of documents.
    const DOCUMENT: u8 = 0x03;
    let not_document = || bad("with a batch element that is not a document");
    let mut items =
        shardgate_wire::raw::Elements::new(batch.as_bytes()).map_err(|_| not_document())?;
    let mut docs = Vec::new();
    loop {
        match items.next_value() {
            Ok(Some((DOCUMENT, bytes))) => {
                docs.push(RawDocumentBuf::from_bytes(bytes.to_vec()).map_err(|_| not_document())?)
            }
            Ok(None) => break,
            _ => return Err(not_document()),
        }
    }
    Ok(CursorReply { id, ns, docs })
}

/// A shard cursor opened by a command, read with `getMore` (same `lsid`).
pub struct ShardCursor {
    client: Arc<dyn ShardClient>,
    shard: String,
    host: String,
    db: String,
    /// The collection `getMore` and `killCursors` name.
    coll: String,
    id: i64,
    first: Option<Vec<RawDocumentBuf>>,
    batch_size: Option<i64>,
    lsid: Option<RawDocumentBuf>,
}

impl ShardCursor {
    /// Runs `cmd` (with its `$db`) and holds its first batch.
    pub async fn open(
        client: Arc<dyn ShardClient>,
        shard: Target<'_>,
        cmd: &RawDocument,
    ) -> Result<ShardCursor> {
        let reply = client.command(shard, cmd).await?;
        let parsed = cursor_reply(shard.id, &reply)?;
        let db = cmd.get_str("$db").unwrap_or_default().to_owned();
        let coll = parsed
            .ns
            .split_once('.')
            .map_or(parsed.ns.as_str(), |(_, c)| c)
            .to_owned();
        let lsid = cmd.get_document("lsid").ok().map(RawDocument::to_owned);
        Ok(ShardCursor {
            client,
            shard: shard.id.to_owned(),
            host: shard.host.to_owned(),
            db,
            coll,
            id: parsed.id,
            first: Some(parsed.docs),
            batch_size: None,
            lsid,
        })
    }

    /// Asks for at most `n` documents per `getMore`.
    pub fn batch_size(mut self, n: i64) -> ShardCursor {
        self.batch_size = Some(n);
        self
    }

    /// Asks for at most `n` documents per `getMore` from now on.
    pub fn set_batch_size(&mut self, n: i64) {
        self.batch_size = Some(n);
    }

    /// The shard's cursor id (0 once exhausted).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The next batch; `None` once the cursor is exhausted.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<RawDocumentBuf>>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        if self.id == 0 {
            return Ok(None);
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append(bson::cstr!("getMore"), self.id);
        cmd.append(bson::cstr!("collection"), self.coll.as_str());
        if let Some(n) = self.batch_size {
            cmd.append(bson::cstr!("batchSize"), n);
        }
        if let Some(lsid) = &self.lsid {
            cmd.append(bson::cstr!("lsid"), lsid.clone());
        }
        cmd.append(bson::cstr!("$db"), self.db.as_str());
        let target = Target {
            id: &self.shard,
            host: &self.host,
        };
        let reply = match self.client.command(target, &cmd).await {
            Ok(r) => r,
            Err(e) => {
                // The shard closes a cursor whose getMore failed.
                self.id = 0;
                return Err(e);
            }
        };
        let parsed = cursor_reply(&self.shard, &reply)?;
        self.id = parsed.id;
        Ok(Some(parsed.docs))
    }

    /// Every remaining document.
    pub async fn all(mut self) -> Result<Vec<RawDocumentBuf>> {
        let mut out = Vec::new();
        while let Some(batch) = self.next_batch().await? {
            out.extend(batch);
        }
        Ok(out)
    }

    /// Closes the shard cursor now (a no-op once exhausted).
    pub async fn kill(mut self) {
        if let Some(cmd) = self.kill_command() {
            let target = Target {
                id: &self.shard,
                host: &self.host,
            };
            let _ = self.client.command(target, &cmd).await;
        }
    }

    /// `killCursors` for a still-open cursor; afterwards the cursor is
    /// treated as closed.
    fn kill_command(&mut self) -> Option<RawDocumentBuf> {
        if self.id == 0 {
            return None;
        }
        let mut ids = bson::RawArrayBuf::new();
        ids.push(std::mem::take(&mut self.id));
        let mut cmd = RawDocumentBuf::new();
        cmd.append(bson::cstr!("killCursors"), self.coll.as_str());
        cmd.append(bson::cstr!("cursors"), ids);
        if let Some(lsid) = &self.lsid {
            cmd.append(bson::cstr!("lsid"), lsid.clone());
        }
        cmd.append(bson::cstr!("$db"), self.db.as_str());
        Some(cmd)
    }
}

impl Drop for ShardCursor {
    fn drop(&mut self) {
        let Some(cmd) = self.kill_command() else {
            return;
        };
        // A cursor abandoned early: close it on the shard without waiting.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let (shard, host) = (self.shard.clone(), self.host.clone());
        runtime.spawn(async move {
            let target = Target {
                id: &shard,
                host: &host,
            };
            let _ = client.command(target, &cmd).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_cursor_replies_are_errors() {
        let good =
            bson::rawdoc! {"cursor": {"id": 5i64, "ns": "d.c", "firstBatch": [{"a": 1}]}, "ok": 1};
        let r = cursor_reply("s", &good).unwrap();
        assert_eq!((r.id, r.ns.as_str(), r.docs.len()), (5, "d.c", 1));
        for bad in [
            bson::rawdoc! {"ok": 1},
            bson::rawdoc! {"cursor": {"ns": "d.c", "firstBatch": []}, "ok": 1},
            bson::rawdoc! {"cursor": {"id": 0i64, "ns": "d.c"}, "ok": 1},
            bson::rawdoc! {"cursor": {"id": 0i64, "ns": "d.c", "nextBatch": [1]}, "ok": 1},
        ] {
            assert!(
                matches!(cursor_reply("s", &bad), Err(ShardError::Protocol { .. })),
                "{bad:?}"
            );
        }
    }
}
