//! Zones: which shards serve a zone (`config.shards` `tags`) and which
//! shard-key ranges of a namespace belong to it (`config.tags`).

use bson::oid::ObjectId;
use bson::Document;

use super::sharding::range_key;
use super::{decode, encode, Catalog};
use crate::error::{Result, StoreError};
use crate::model::keys::TAGS;
use crate::model::TagType;
use crate::shard_key::{KeyBytes, ShardKeyPattern};
use crate::store::{Txn, TxnOutcome};

impl Catalog {
    /// Adds `zone` to a shard's zones (idempotent).
    pub async fn add_shard_to_zone(&self, shard: &str, zone: &str) -> Result<()> {
        loop {
            let mut entry = self.shard_entry(shard).await?;
            if entry.0.tags.iter().any(|t| t == zone) {
                return Ok(());
            }
            entry.0.tags.push(zone.to_owned());
            if self.put_shard_if(&entry.0, entry.1).await? {
                return Ok(());
            }
        }
    }

    /// Removes `zone` from a shard; refused while the zone still has ranges
    /// and this is its last shard (ZoneStillInUse).
    pub async fn remove_shard_from_zone(&self, shard: &str, zone: &str) -> Result<()> {
        loop {
            let shards = self.shards_versioned().await?;
            let Some((mut entry, rev)) = shards.iter().find(|(s, _)| s.id == shard).cloned() else {
                return Err(shard_not_found(shard));
            };
            if !entry.tags.iter().any(|t| t == zone) {
                return Ok(());
            }
            let others = shards
                .iter()
                .filter(|(s, _)| s.id != shard && s.tags.iter().any(|t| t == zone))
                .count();
            if others == 0 && self.all_zone_ranges().await?.iter().any(|r| r.tag == zone) {
                return Err(StoreError::rejected(
                    163,
                    "ZoneStillInUse",
                    format!("zone {zone} still has key ranges and {shard} is its last shard; remove the ranges first"),
                ));
            }
            entry.tags.retain(|t| t != zone);
            if self.put_shard_if(&entry, rev).await? {
                return Ok(());
            }
        }
    }

    /// Every zone range of every namespace.
    pub async fn all_zone_ranges(&self) -> Result<Vec<TagType>> {
        self.list(TAGS).await
    }

    /// The zone ranges of `ns`, in shard-key order.
    pub async fn zone_ranges(&self, ns: &str) -> Result<Vec<TagType>> {
        self.list(&format!("{TAGS}{ns}/")).await
    }

    /// Assigns `[min, max)` of `ns` to `zone`, or with `zone: None` removes
    /// the range with exactly these bounds. `pattern` orders the bounds (the
    /// collection's shard key, or the bounds' own fields before sharding).
    pub async fn update_zone_key_range(
        &self,
        ns: &str,
        pattern: &ShardKeyPattern,
        min: &Document,
        max: &Document,
        zone: Option<&str>,
    ) -> Result<()> {
        let enc = |d: &Document| {
            pattern.encode_bound(d).map_err(|e| {
                StoreError::rejected(2, "BadValue", format!("invalid zone bound {d}: {e}"))
            })
        };
        let (lo, hi) = (enc(min)?, enc(max)?);
        if lo >= hi {
            return Err(StoreError::rejected(
                2,
                "BadValue",
                format!("zone range min {min} must be less than max {max}"),
            ));
        }
        let key = range_key(TAGS, ns, pattern, min)?;
        let Some(zone) = zone else {
            return self.remove_zone_range(&key, &hi, enc).await;
        };
        self.check_zone_exists(zone).await?;
        let listing = self.store().scan(&format!("{TAGS}{ns}/")).await?;
        let mut txn = Txn::default();
        for (k, v) in &listing.entries {
            let tag: TagType = decode(k, &v.value)?;
            let (tlo, thi) = (enc(&tag.min)?, enc(&tag.max)?);
            if tlo == lo && thi == hi && tag.tag == zone {
                return Ok(());
            }
            if tlo < hi && lo < thi {
                return Err(StoreError::rejected(
                    178,
                    "RangeOverlapConflict",
                    format!(
                        "zone range [{min}, {max}) overlaps [{}, {}) of zone {}",
                        tag.min, tag.max, tag.tag
                    ),
                ));
            }
            txn = txn.unchanged(k, v.mod_revision);
        }
        let tag = TagType {
            id: ObjectId::new(),
            ns: ns.to_owned(),
            min: min.clone(),
            max: max.clone(),
            tag: zone.to_owned(),
        };
        txn = txn.absent(&key).put(&key, encode(&tag)?);
        match self.store().txn(txn).await? {
            TxnOutcome::Committed(_) => Ok(()),
            TxnOutcome::Conflict => Err(StoreError::Unavailable(
                "zone ranges changed concurrently; retry".into(),
            )),
        }
    }

    /// Removes the zone range starting at `key` when it ends at `hi`.
    async fn remove_zone_range(
        &self,
        key: &str,
        hi: &KeyBytes,
        enc: impl Fn(&Document) -> Result<KeyBytes>,
    ) -> Result<()> {
        let Some(v) = self.store().get(key).await? else {
            return Ok(());
        };
        let tag: TagType = decode(key, &v.value)?;
        if enc(&tag.max)? == *hi {
            self.store()
                .txn(Txn::default().unchanged(key, v.mod_revision).delete(key))
                .await?;
        }
        Ok(())
    }

    /// ZoneNotFound unless some shard is in `zone`.
    async fn check_zone_exists(&self, zone: &str) -> Result<()> {
        if self
            .shards()
            .await?
            .iter()
            .any(|s| s.tags.iter().any(|t| t == zone))
        {
            return Ok(());
        }
        Err(StoreError::rejected(
            177,
            "ZoneNotFound",
            format!("zone {zone} does not exist: assign it to a shard with addShardToZone first"),
        ))
    }

    /// A shard entry and its revision.
    async fn shard_entry(&self, shard: &str) -> Result<(crate::model::ShardType, u64)> {
        self.shards_versioned()
            .await?
            .into_iter()
            .find(|(s, _)| s.id == shard)
            .ok_or_else(|| shard_not_found(shard))
    }
}

fn shard_not_found(shard: &str) -> StoreError {
    StoreError::rejected(70, "ShardNotFound", format!("shard {shard} not found"))
}
