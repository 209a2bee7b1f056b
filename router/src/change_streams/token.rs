//! The router's resume token: `{_data: <hex>}` whose hex string is the
//! BSON document `{v: 1, t: <cluster time>, o: <origin>, s: [{i: <shard
//! id>, k: <shard token>}…]}` — every shard's own resume token at the
//! point the event (or batch) stands for, the event's cluster time, and
//! the time the stream started (where a shard missing from the token, one
//! that joined the stream later, starts again). Drivers only echo it back.

use std::collections::BTreeMap;

use bson::{doc, Bson, Document, Timestamp};

use crate::error::{Result, RouterError};

/// A decoded router resume token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouterToken {
    /// The event's cluster time (a batch's: the last released one).
    pub time: Timestamp,
    /// When the stream first started: shards the token does not name
    /// start there.
    pub origin: Timestamp,
    /// Each shard's own resume token, by shard id.
    pub shards: BTreeMap<String, Document>,
}

impl RouterToken {
    /// The token as drivers see it: `{_data: <hex string>}`.
    pub(crate) fn encode(&self) -> Document {
        let shards: Vec<Bson> = self
            .shards
            .iter()
            .map(|(id, token)| Bson::Document(doc! {"i": id, "k": token.clone()}))
            .collect();
        let inner = doc! {"v": 1, "t": self.time, "o": self.origin, "s": shards};
        let bytes = inner.to_vec().unwrap_or_default();
        doc! {"_data": hex(&bytes)}
    }

    /// Reads a token a client sent back (InvalidResumeToken, code 260,
    /// when it is not one this router made).
    pub(crate) fn decode(token: &Document) -> Result<RouterToken> {
        let invalid = |why: &str| {
            RouterError::command(
                260,
                "InvalidResumeToken",
                format!("not a resume token of this router's change streams: {why}"),
            )
        };
        let data = token
            .get_str("_data")
            .map_err(|_| invalid("no _data string"))?;
        let bytes = unhex(data).ok_or_else(|| invalid("_data is not hex"))?;
        let inner = Document::from_reader(&bytes[..]).map_err(|_| invalid("malformed _data"))?;
        if inner.get_i32("v").ok() != Some(1) {
            return Err(invalid("unknown version"));
        }
        let time = inner.get_timestamp("t").map_err(|_| invalid("no time"))?;
        let origin = inner.get_timestamp("o").map_err(|_| invalid("no origin"))?;
        let mut shards = BTreeMap::new();
        for entry in inner.get_array("s").map_err(|_| invalid("no shards"))? {
            let entry = entry
                .as_document()
                .ok_or_else(|| invalid("bad shard entry"))?;
            let id = entry.get_str("i").map_err(|_| invalid("bad shard id"))?;
            let k = entry
                .get_document("k")
                .map_err(|_| invalid("bad shard token"))?;
            shards.insert(id.to_owned(), k.clone());
        }
        Ok(RouterToken {
            time,
            origin,
            shards,
        })
    }
}

/// The cluster time a shard's resume token stands for, when the router can
/// read it: SecantusDB's `_data` is hex BSON with a `t` timestamp;
/// mongod's is a KeyString whose first value is the timestamp (type byte
/// 130, then 8 big-endian bytes).
pub(crate) fn shard_token_time(token: &Document) -> Option<Timestamp> {
    let bytes = unhex(token.get_str("_data").ok()?)?;
    if let Ok(d) = Document::from_reader(&bytes[..]) {
        return d.get_timestamp("t").ok();
    }
    match bytes.as_slice() {
        [130, rest @ ..] if rest.len() >= 8 => {
            let time = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let increment = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
            Some(Timestamp { time, increment })
        }
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips() {
        let mut shards = BTreeMap::new();
        shards.insert("shard0000".to_owned(), doc! {"_data": "2a00"});
        shards.insert("shard0001".to_owned(), doc! {"_data": "8200"});
        let t = RouterToken {
            time: Timestamp {
                time: 5,
                increment: 2,
            },
            origin: Timestamp {
                time: 1,
                increment: 1,
            },
            shards,
        };
        assert_eq!(RouterToken::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn foreign_tokens_are_refused_with_260() {
        for bad in [doc! {}, doc! {"_data": "zz"}, doc! {"_data": "8201"}] {
            let e = RouterToken::decode(&bad).unwrap_err();
            assert_eq!(e.code().0, 260);
        }
    }

    #[test]
    fn shard_token_times_are_read() {
        let inner = doc! {"s": 1, "t": Timestamp { time: 9, increment: 3 }};
        let data = hex(&inner.to_vec().unwrap());
        let ts = shard_token_time(&doc! {"_data": data}).unwrap();
        assert_eq!((ts.time, ts.increment), (9, 3));
        let ks = doc! {"_data": "82000000090000000304"};
        let ts = shard_token_time(&ks).unwrap();
        assert_eq!((ts.time, ts.increment), (9, 3));
    }
}
