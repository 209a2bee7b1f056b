//! The router's cluster time: the highest `$clusterTime` any shard
//! replied with. Replies the router builds itself carry it as
//! `$clusterTime` (with the zero signature the shards use) and as
//! `operationTime`, so a causally consistent session can pass it back as
//! `afterClusterTime` — which the router forwards to every shard it targets.

use std::sync::atomic::{AtomicU64, Ordering};

use bson::{doc, Bson, Document, RawDocument, Timestamp};

/// The highest cluster time seen, packed as `time << 32 | increment`.
#[derive(Default)]
pub(crate) struct ClusterClock(AtomicU64);

impl ClusterClock {
    /// Notes the `$clusterTime` of a shard's reply.
    pub(crate) fn observe(&self, reply: &RawDocument) {
        let Ok(ct) = reply.get_document("$clusterTime") else {
            return;
        };
        if let Ok(ts) = ct.get_timestamp("clusterTime") {
            self.0.fetch_max(
                u64::from(ts.time) << 32 | u64::from(ts.increment),
                Ordering::Relaxed,
            );
        }
    }

    /// The cluster time, once a shard has told one.
    pub(crate) fn now(&self) -> Option<Timestamp> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            v => Some(Timestamp {
                time: (v >> 32) as u32,
                increment: v as u32,
            }),
        }
    }

    /// `$clusterTime` and `operationTime` for a reply the router built (a
    /// time from the wall clock before any shard answered).
    pub(crate) fn fields(&self) -> Document {
        let ts = self.now().unwrap_or_else(|| Timestamp {
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
            increment: 0,
        });
        doc! {
            "$clusterTime": {
                "clusterTime": ts,
                "signature": {
                    "hash": Bson::Binary(bson::Binary {
                        subtype: bson::spec::BinarySubtype::Generic,
                        bytes: vec![0; 20],
                    }),
                    "keyId": 0i64,
                },
            },
            "operationTime": ts,
        }
    }

    /// Stamps a reply body the router built with [`fields`](Self::fields),
    /// unless it has a `$clusterTime` already.
    pub(crate) fn stamp(&self, body: &mut Vec<u8>) {
        let has = RawDocument::from_bytes(body)
            .map(|d| matches!(d.get("$clusterTime"), Ok(Some(_))))
            .unwrap_or(true);
        if !has {
            append_fields(body, &self.fields());
        }
    }
}

/// Appends the fields of `extra` to the BSON document in `body`, in place.
pub(crate) fn append_fields(body: &mut Vec<u8>, extra: &Document) {
    let Ok(extra) = extra.to_vec() else { return };
    if body.len() < 5 || extra.len() < 5 {
        return;
    }
    body.pop();
    body.extend_from_slice(&extra[4..]);
    let len = (body.len() as i32).to_le_bytes();
    body[..4].copy_from_slice(&len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_time_and_stamps_replies_without_one() {
        let clock = ClusterClock::default();
        assert!(clock.now().is_none());
        for (t, i) in [(10, 5), (12, 1), (11, 9)] {
            let reply = doc! {"ok": 1, "$clusterTime": {"clusterTime": Timestamp { time: t, increment: i }}};
            clock.observe(&bson::RawDocumentBuf::try_from(&reply).unwrap());
        }
        assert_eq!(
            clock.now(),
            Some(Timestamp {
                time: 12,
                increment: 1
            })
        );
        let mut body = doc! {"n": 3, "ok": 1.0}.to_vec().unwrap();
        clock.stamp(&mut body);
        let d = Document::from_reader(&body[..]).unwrap();
        assert_eq!(d.get_i32("n").unwrap(), 3);
        assert_eq!(
            d.get_timestamp("operationTime").unwrap(),
            Timestamp {
                time: 12,
                increment: 1
            }
        );
        let before = body.clone();
        clock.stamp(&mut body);
        assert_eq!(body, before, "stamped once");
    }
}
