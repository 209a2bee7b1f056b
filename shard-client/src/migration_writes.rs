//! Migration writes, tagged so change streams can leave them out.
//!
//! A chunk migration (and `movePrimary`) writes to shards on behalf of no
//! client: the clone's inserts and the catch-up's upserts and deletes on
//! the destination, the range deletion on the source (or on the
//! destination after an abort). A change stream must never show them.
//! The shards know nothing about sharding, so the only thing a change
//! event can carry to tell them apart is the session: each such write runs
//! as a one-statement transaction under a fresh logical session whose id
//! starts with [`MIGRATION_SESSION_PREFIX`], and change events of
//! transactional writes carry `lsid` (measured on SecantusDB 0.7: events
//! of a transaction carry `lsid` and `txnNumber`, those of retryable or
//! plain writes do not; `documentKey` is only `_id`). Router streams add
//! [`exclude_migration_events`] right after `$changeStream`, so the shards
//! drop these events before any client stage sees them.
//!
//! Why not filter by chunk ownership at the event's cluster time: a delete
//! event names only `_id`, so the router cannot tell which range it fell
//! in, and shard clocks are not the config store's clock.

use std::time::Duration;

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Document, RawDocument, RawDocumentBuf};

use crate::{Result, ShardClient, ShardError, Target};

/// The first 8 bytes of every migration session id (`SHARDGAT`).
pub const MIGRATION_SESSION_PREFIX: [u8; 8] = *b"SHARDGAT";

/// Attempts of a migration write that hit a transient transaction error.
const ATTEMPTS: u32 = 5;

/// A fresh migration session id: the prefix and 8 random bytes (one per
/// write, so concurrent migrations never share a session).
pub fn migration_session_id() -> Binary {
    let mut bytes = MIGRATION_SESSION_PREFIX.to_vec();
    bytes.extend_from_slice(&rand::random::<u64>().to_le_bytes());
    Binary {
        subtype: BinarySubtype::Uuid,
        bytes,
    }
}

/// Collections the router creates for itself (an aggregation merged on a
/// shard through a temporary collection) start with this.
pub const ROUTER_TEMP_PREFIX: &str = "tmp.shardgate.";

/// The `$match` stage that drops change events of migration writes and of
/// the router's temporary collections.
pub fn exclude_migration_events() -> Document {
    let bound = |fill: u8| {
        let mut bytes = MIGRATION_SESSION_PREFIX.to_vec();
        bytes.extend_from_slice(&[fill; 8]);
        Binary {
            subtype: BinarySubtype::Uuid,
            bytes,
        }
    };
    doc! {"$match": {
        "lsid.id": {"$not": {"$gte": bound(0), "$lte": bound(0xff)}},
        "ns.coll": {"$not": {"$regex": "^tmp\\.shardgate\\."}},
    }}
}

/// Runs the write command `body` (with its `$db`) on `shard` as a
/// migration write: a one-statement transaction under a fresh migration
/// session, committed at once; retried on transient transaction errors.
/// Returns the statement's reply.
pub async fn migration_write(
    client: &dyn ShardClient,
    shard: Target<'_>,
    body: &RawDocument,
) -> Result<RawDocumentBuf> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let lsid = doc! {"id": migration_session_id()};
        match write_once(client, shard, body, &lsid).await {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

async fn write_once(
    client: &dyn ShardClient,
    shard: Target<'_>,
    body: &RawDocument,
    lsid: &Document,
) -> Result<RawDocumentBuf> {
    let mut cmd = RawDocumentBuf::new();
    for (k, v) in body.iter().flatten() {
        cmd.append(k, v);
    }
    let session = doc! {"lsid": lsid.clone(), "txnNumber": 1i64, "startTransaction": true, "autocommit": false};
    let session =
        RawDocumentBuf::try_from(&session).map_err(|e| ShardError::protocol(shard.id, e))?;
    for (k, v) in session.iter().flatten() {
        cmd.append(k, v);
    }
    let reply = match client.command(shard, &cmd).await {
        Ok(reply) => reply,
        Err(e) => {
            end(client, shard, lsid, "abortTransaction").await.ok();
            return Err(e);
        }
    };
    if reply.get_array("writeErrors").is_ok() {
        end(client, shard, lsid, "abortTransaction").await.ok();
        return Ok(reply);
    }
    end(client, shard, lsid, "commitTransaction").await?;
    Ok(reply)
}

/// `commitTransaction` or `abortTransaction` of the session's transaction.
async fn end(
    client: &dyn ShardClient,
    shard: Target<'_>,
    lsid: &Document,
    command: &str,
) -> Result<RawDocumentBuf> {
    let body = doc! {command: 1, "lsid": lsid.clone(), "txnNumber": 1i64, "autocommit": false, "$db": "admin"};
    let body = RawDocumentBuf::try_from(&body).map_err(|e| ShardError::protocol(shard.id, e))?;
    client.command(shard, &body).await
}

/// Whether a retry of the whole transaction can help.
fn transient(e: &ShardError) -> bool {
    e.labels().iter().any(|l| l == "TransientTransactionError") || matches!(e.code().0, 112 | 251)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_carry_the_prefix_and_differ() {
        let (a, b) = (migration_session_id(), migration_session_id());
        assert_eq!(a.bytes[..8], MIGRATION_SESSION_PREFIX);
        assert_eq!(a.bytes.len(), 16);
        assert_ne!(a.bytes, b.bytes);
    }
}
