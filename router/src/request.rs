//! Reading the fields routing needs from a command, without decoding it.

use bson::RawDocument;
use shardgate_wire::OpMsg;

use crate::error::{Result, RouterError};

/// The routing fields of one command, borrowed from the raw body.
#[derive(Debug, Clone, Copy)]
pub struct CommandInfo<'a> {
    /// The command name (first key of the body).
    pub name: &'a str,
    /// The `$db` it runs on.
    pub db: &'a str,
    /// The collection, when the command's first value is a string.
    pub collection: Option<&'a str>,
    /// The `filter` (find, count, …) or `query` document, if any.
    pub filter: Option<&'a RawDocument>,
    /// The whole body.
    pub body: &'a RawDocument,
}

impl<'a> CommandInfo<'a> {
    /// Reads the routing fields of `msg` in one pass over the top-level keys.
    pub fn parse(msg: &'a OpMsg) -> Result<CommandInfo<'a>> {
        let body = msg.body();
        let mut iter = body.iter();
        let (name, first) = match iter.next() {
            Some(Ok((name, value))) => (name.as_str(), value),
            Some(Err(e)) => return Err(invalid_bson(e)),
            None => return Err(RouterError::bad_value("empty command")),
        };
        let mut info = CommandInfo {
            name,
            db: "",
            collection: first.as_str(),
            filter: None,
            body,
        };
        for elem in iter {
            let (key, value) = elem.map_err(invalid_bson)?;
            match key.as_str() {
                "$db" => info.db = value.as_str().unwrap_or(""),
                "filter" | "query" | "q" => info.filter = value.as_document(),
                _ => {}
            }
        }
        if info.db.is_empty() {
            return Err(RouterError::command(
                40571,
                "Location40571",
                "OP_MSG requests require a $db argument",
            ));
        }
        Ok(info)
    }
}

fn invalid_bson(e: bson::error::Error) -> RouterError {
    RouterError::Wire(shardgate_wire::WireError::BadDocument(format!(
        "invalid command body: {e}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn reads_name_db_collection_filter() {
        let msg = OpMsg::from_body(
            doc! {"find": "orders", "filter": {"customer": "c1"}, "limit": 5, "$db": "shop"}
                .to_vec()
                .unwrap(),
        );
        let info = CommandInfo::parse(&msg).unwrap();
        assert_eq!(
            (info.name, info.db, info.collection),
            ("find", "shop", Some("orders"))
        );
        assert_eq!(info.filter.unwrap().get_str("customer").unwrap(), "c1");
    }

    #[test]
    fn requires_db() {
        let msg = OpMsg::from_body(doc! {"ping": 1}.to_vec().unwrap());
        assert!(CommandInfo::parse(&msg).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, ..Default::default() })]

        /// Frame check, decode and routing-field extraction never panic on a
        /// mutated command, whatever bytes are changed.
        #[test]
        fn mutated_commands_never_panic(
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..6),
        ) {
            let body = doc! {"find": "c", "filter": {"a": {"$in": [1, "x", {"y": null}]}}, "$db": "d"};
            let mut frame = OpMsg::from_body(body.to_vec().unwrap()).encode(1, 0).to_vec();
            for (at, b) in edits {
                let n = frame.len();
                frame[at % n] = b;
            }
            if let Ok(Some(len)) = shardgate_wire::check_frame(&frame) {
                let frame = bytes::Bytes::copy_from_slice(&frame[..len]);
                if let Ok(d) = shardgate_wire::Message::decode(frame) {
                    if let shardgate_wire::Message::Msg(m) = d.message {
                        let _ = CommandInfo::parse(&m);
                    }
                }
            }
        }
    }
}
