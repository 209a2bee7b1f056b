//! OP_QUERY and OP_REPLY, kept only for the legacy `hello`/`isMaster`
//! handshake that drivers may send before they know the server speaks OP_MSG.

use bson::RawDocument;
use bytes::Bytes;

use crate::error::WireError;
use crate::header::{get_i32, patch_length, MsgHeader, OpCode, HEADER_LEN, MAX_COMMAND_SIZE};

/// A decoded OP_QUERY.
#[derive(Debug, Clone, PartialEq)]
pub struct OpQuery {
    /// The query flags.
    pub flags: i32,
    /// `db.collection`; commands use `db.$cmd`.
    pub full_collection_name: String,
    /// Documents to skip.
    pub number_to_skip: i32,
    /// Documents to return.
    pub number_to_return: i32,
    /// The query document (the command for `db.$cmd`).
    pub query: Bytes,
}

impl OpQuery {
    /// Decodes an OP_QUERY from a whole frame (header included).
    pub fn parse(frame: &Bytes) -> Result<OpQuery, WireError> {
        let flags = get_i32(frame, HEADER_LEN, "flags")?;
        let name_start = HEADER_LEN + 4;
        let nul = frame
            .get(name_start..)
            .and_then(|rest| rest.iter().position(|b| *b == 0))
            .ok_or(WireError::Truncated("fullCollectionName"))?;
        let full_collection_name = std::str::from_utf8(&frame[name_start..name_start + nul])
            .map_err(|_| WireError::Malformed("fullCollectionName is not UTF-8".into()))?
            .to_owned();
        let at = name_start + nul + 1;
        let number_to_skip = get_i32(frame, at, "numberToSkip")?;
        let number_to_return = get_i32(frame, at + 4, "numberToReturn")?;
        let doc_at = at + 8;
        let len = get_i32(frame, doc_at, "query")?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l >= 5 && *l <= MAX_COMMAND_SIZE && doc_at + *l <= frame.len())
            .ok_or_else(|| WireError::BadDocument(format!("query length {len}")))?;
        let query = frame.slice(doc_at..doc_at + len);
        RawDocument::from_bytes(&query[..]).map_err(|e| WireError::BadDocument(e.to_string()))?;
        Ok(OpQuery {
            flags,
            full_collection_name,
            number_to_skip,
            number_to_return,
            query,
        })
    }

    /// The query document.
    pub fn query(&self) -> &RawDocument {
        RawDocument::from_bytes(&self.query[..]).unwrap_or_else(|_| {
            RawDocument::from_bytes(&[5u8, 0, 0, 0, 0][..]).expect("empty document")
        })
    }

    /// The database part of the namespace.
    pub fn database(&self) -> &str {
        self.full_collection_name
            .split_once('.')
            .map_or(self.full_collection_name.as_str(), |(db, _)| db)
    }
}

/// An OP_REPLY carrying one document, the only form shardgate writes.
#[derive(Debug, Clone, PartialEq)]
pub struct OpReply {
    /// Response flags (bit 1: QueryFailure).
    pub response_flags: i32,
    /// The single document returned.
    pub document: Bytes,
}

impl OpReply {
    /// Response flag: the query failed and the document is the error.
    pub const QUERY_FAILURE: i32 = 1 << 1;

    /// Appends this reply to `out` as a whole frame.
    pub fn encode_into(&self, request_id: i32, response_to: i32, out: &mut Vec<u8>) {
        let start = out.len();
        MsgHeader {
            message_length: 0,
            request_id,
            response_to,
            op_code: OpCode::Reply.as_i32(),
        }
        .write(out);
        out.extend_from_slice(&self.response_flags.to_le_bytes());
        out.extend_from_slice(&0i64.to_le_bytes()); // cursorID
        out.extend_from_slice(&0i32.to_le_bytes()); // startingFrom
        out.extend_from_slice(&1i32.to_le_bytes()); // numberReturned
        out.extend_from_slice(&self.document);
        patch_length(out, start);
    }

    /// Decodes an OP_REPLY frame and returns its first document.
    pub fn parse(frame: &Bytes) -> Result<OpReply, WireError> {
        let response_flags = get_i32(frame, HEADER_LEN, "responseFlags")?;
        let doc_at = HEADER_LEN + 20;
        let len = get_i32(frame, doc_at, "document")?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l >= 5 && doc_at + *l <= frame.len())
            .ok_or_else(|| WireError::BadDocument(format!("reply document length {len}")))?;
        Ok(OpReply {
            response_flags,
            document: frame.slice(doc_at..doc_at + len),
        })
    }
}

/// Appends an OP_QUERY frame for `db.$cmd` to `out`.
pub fn encode_query(request_id: i32, db: &str, command: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    MsgHeader {
        message_length: 0,
        request_id,
        response_to: 0,
        op_code: OpCode::Query.as_i32(),
    }
    .write(out);
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(db.as_bytes());
    out.extend_from_slice(b".$cmd\0");
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&(-1i32).to_le_bytes());
    out.extend_from_slice(command);
    patch_length(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn query_round_trip() {
        let cmd = doc! {"isMaster": 1}.to_vec().unwrap();
        let mut out = Vec::new();
        encode_query(3, "admin", &cmd, &mut out);
        let q = OpQuery::parse(&Bytes::from(out)).unwrap();
        assert_eq!(q.full_collection_name, "admin.$cmd");
        assert_eq!(q.database(), "admin");
        assert_eq!(q.query().get_i32("isMaster").unwrap(), 1);
    }

    #[test]
    fn reply_round_trip() {
        let doc = doc! {"ok": 1}.to_vec().unwrap();
        let mut out = Vec::new();
        OpReply {
            response_flags: 0,
            document: doc.clone().into(),
        }
        .encode_into(4, 3, &mut out);
        let r = OpReply::parse(&Bytes::from(out)).unwrap();
        assert_eq!(&r.document[..], &doc[..]);
    }
}
