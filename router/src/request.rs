//! Reading the fields routing needs from a command, without decoding it.

use bson::RawDocument;
use shardgate_wire::raw::{Element, Elements};
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
    /// Reads the routing fields of `msg` in one pass over the top-level
    /// keys: an allocation-free walk of the raw body, or — when the body
    /// holds values the walk does not check itself — the `bson` crate's
    /// parser, which reports malformed bytes precisely.
    pub fn parse(msg: &'a OpMsg) -> Result<CommandInfo<'a>> {
        let info = match Self::parse_fast(&msg.body) {
            Some(info) => info,
            None => Self::parse_full(msg.body())?,
        };
        if info.db.is_empty() {
            return Err(RouterError::command(
                40571,
                "Location40571",
                "OP_MSG requests require a $db argument",
            ));
        }
        Ok(info)
    }

    /// The routing fields from the raw body, or `None` to take the parser.
    fn parse_fast(bytes: &'a [u8]) -> Option<CommandInfo<'a>> {
        let body = RawDocument::from_bytes(bytes).ok()?;
        let mut elements = Elements::new(bytes).ok()?;
        let first = elements.step().ok()??;
        let mut info = CommandInfo {
            name: shardgate_wire::raw::text(first.key)?,
            db: "",
            collection: checked(&first)?,
            filter: None,
            body,
        };
        while let Some(element) = elements.step().ok()? {
            // The parser would refuse a name that is not UTF-8.
            shardgate_wire::raw::text(element.key)?;
            let text = checked(&element)?;
            match element.key {
                b"$db" => info.db = text.unwrap_or(""),
                b"filter" | b"query" | b"q" => {
                    info.filter = match element.kind {
                        DOCUMENT => RawDocument::from_bytes(element.value).ok(),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        Some(info)
    }

    /// [`parse`](Self::parse) through the `bson` crate's parser (without the
    /// `$db` check).
    fn parse_full(body: &'a RawDocument) -> Result<CommandInfo<'a>> {
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
        Ok(info)
    }
}

/// BSON type bytes the fast walk reads.
const STRING: u8 = 0x02;
const DOCUMENT: u8 = 0x03;
const ARRAY: u8 = 0x04;

/// `Some` when the parser would accept `element`'s value as the walk read
/// it (fixed-size scalars, UTF-8 strings, documents and arrays with their
/// terminator), holding a string's text (so it is checked once); `None`
/// sends the body to the parser, as rarer types do.
fn checked<'a>(element: &Element<'a>) -> Option<Option<&'a str>> {
    match element.kind {
        0x01 | 0x06 | 0x07 | 0x09 | 0x0A | 0x10 | 0x11 | 0x12 | 0x13 | 0x7F | 0xFF => Some(None),
        0x08 => (*element.value.first()? <= 1).then_some(None),
        STRING => string_value(element).map(Some),
        DOCUMENT | ARRAY => (element.value.last() == Some(&0)).then_some(None),
        _ => None,
    }
}

/// The text of a string element (`None` for other types or bad UTF-8).
fn string_value<'a>(element: &Element<'a>) -> Option<&'a str> {
    if element.kind != STRING {
        return None;
    }
    let text = element.value.get(4..element.value.len().checked_sub(1)?)?;
    shardgate_wire::raw::text(text)
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
                        let fast = CommandInfo::parse_fast(&m.body);
                        let full = CommandInfo::parse_full(m.body());
                        if let (Some(fast), Ok(full)) = (fast, full) {
                            // The walk reads what the parser reads.
                            let fields = |i: &CommandInfo<'_>| {
                                (i.name.to_owned(), i.db.to_owned(), i.collection.map(str::to_owned),
                                 i.filter.map(|f| f.as_bytes().to_vec()))
                            };
                            proptest::prop_assert_eq!(fields(&fast), fields(&full));
                        }
                    }
                }
            }
        }
    }
}
