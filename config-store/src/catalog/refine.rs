//! `refineCollectionShardKey`: the key gains suffix fields without moving
//! data. Each chunk and zone bound gains the new fields at their lowest
//! value (the global maximum gains them at their highest), the collection
//! a new epoch; owners and versions stay. One store transaction, so a
//! reader sees the old key or the new one, never a mix.

use bson::{Document, Timestamp};

use super::sharding::range_key;
use super::{encode, Catalog};
use crate::error::{Result, StoreError};
use crate::model::keys::{CHUNKS, COLLECTIONS, TAGS};
use crate::model::CollectionType;
use crate::shard_key::ShardKeyPattern;
use crate::store::{Txn, TxnOutcome};

/// Operations one refine may take (stores bound a transaction's size).
const MAX_OPS: usize = 120;

fn invalid(message: String) -> StoreError {
    StoreError::Rejected {
        code: 72,
        code_name: "InvalidOptions",
        message,
    }
}

/// `bound` of the `old` key as a bound of `new`.
fn extend(bound: &Document, old: &ShardKeyPattern, new: &ShardKeyPattern) -> Document {
    let fill = if *bound == old.global_max() {
        new.global_max()
    } else {
        new.global_min()
    };
    let mut out = bound.clone();
    for (field, _) in new.fields().skip(old.fields().count()) {
        if let Some(v) = fill.get(field) {
            out.insert(field, v.clone());
        }
    }
    out
}

impl Catalog {
    /// Refines the shard key of `ns` to `key`, which must extend it.
    pub async fn refine_shard_key(
        &self,
        ns: &str,
        key: &Document,
        now: Timestamp,
    ) -> Result<CollectionType> {
        let coll = self.sharded_collection(ns).await?;
        let old = ShardKeyPattern::parse(&coll.key).map_err(|e| invalid(e.to_string()))?;
        let new = ShardKeyPattern::parse(key).map_err(|e| invalid(e.to_string()))?;
        let extends = new.fields().count() > old.fields().count()
            && old.fields().zip(new.fields()).all(|(a, b)| a == b);
        if !extends {
            return Err(invalid(format!(
                "the proposed shard key {key} does not extend the current shard key {}",
                coll.key
            )));
        }
        let chunks = self.chunks(ns).await?;
        let zones = self.zone_ranges(ns).await?;
        if 2 * (chunks.len() + zones.len()) + 1 > MAX_OPS {
            return Err(invalid(format!(
                "{ns} has {} chunks and zone ranges; merge chunks first (at most {} can be refined at once)",
                chunks.len() + zones.len(),
                (MAX_OPS - 1) / 2
            )));
        }
        let mut refined = coll.clone();
        refined.key = new.to_document();
        refined.epoch = bson::oid::ObjectId::new();
        refined.timestamp = now;
        refined.last_modified = bson::DateTime::now();
        let coll_key = format!("{COLLECTIONS}{ns}");
        let mut txn = Txn::default().put(&coll_key, encode(&refined)?);
        for (chunk, rev) in &chunks {
            let old_key = range_key(CHUNKS, ns, &old, &chunk.min)?;
            let mut c = chunk.clone();
            c.min = extend(&chunk.min, &old, &new);
            c.max = extend(&chunk.max, &old, &new);
            c.epoch = refined.epoch;
            txn = txn
                .unchanged(&old_key, *rev)
                .delete(old_key)
                .put(range_key(CHUNKS, ns, &new, &c.min)?, encode(&c)?);
        }
        for zone in &zones {
            let old_key = range_key(TAGS, ns, &old, &zone.min)?;
            let mut z = zone.clone();
            z.min = extend(&zone.min, &old, &new);
            z.max = extend(&zone.max, &old, &new);
            txn = txn
                .delete(old_key)
                .put(range_key(TAGS, ns, &new, &z.min)?, encode(&z)?);
        }
        match self.store().txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(refined),
            TxnOutcome::Conflict => Err(StoreError::Rejected {
                code: 117,
                code_name: "ConflictingOperationInProgress",
                message: format!("chunks of {ns} changed during the refine; retry"),
            }),
        }
    }
}
