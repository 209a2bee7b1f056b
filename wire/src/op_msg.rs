//! OP_MSG: flag bits, a kind 0 body and kind 1 document sequences.

use bson::RawDocument;
use bytes::Bytes;

use crate::error::WireError;
use crate::header::{get_i32, patch_length, MsgHeader, OpCode, HEADER_LEN, MAX_COMMAND_SIZE};

/// The OP_MSG flag bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpMsgFlags(pub u32);

impl OpMsgFlags {
    /// The message ends with a CRC-32C checksum.
    pub const CHECKSUM_PRESENT: u32 = 1;
    /// The sender will not wait for a reply (requests) or will send more (replies).
    pub const MORE_TO_COME: u32 = 1 << 1;
    /// The client accepts an exhaust cursor reply stream.
    pub const EXHAUST_ALLOWED: u32 = 1 << 16;
    /// Bits 0-15 are required: a receiver must refuse one it does not know.
    const KNOWN_REQUIRED: u32 = Self::CHECKSUM_PRESENT | Self::MORE_TO_COME;

    /// Whether a checksum trails the message.
    pub fn checksum_present(self) -> bool {
        self.0 & Self::CHECKSUM_PRESENT != 0
    }

    /// Whether the sender expects no reply.
    pub fn more_to_come(self) -> bool {
        self.0 & Self::MORE_TO_COME != 0
    }

    /// Whether the client allows an exhaust reply.
    pub fn exhaust_allowed(self) -> bool {
        self.0 & Self::EXHAUST_ALLOWED != 0
    }
}

/// A kind 1 section: documents that belong under `identifier` in the command
/// (for example the `documents` of an `insert`).
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentSequence {
    /// The command field the documents belong to.
    pub identifier: String,
    /// The concatenated BSON documents, each already checked for size.
    pub documents: Bytes,
}

impl DocumentSequence {
    /// Iterates the raw documents of the sequence.
    pub fn iter(&self) -> impl Iterator<Item = &RawDocument> {
        let mut rest: &[u8] = &self.documents;
        std::iter::from_fn(move || {
            let len = get_i32(rest, 0, "document").ok()? as usize;
            let (doc, tail) = rest.split_at_checked(len)?;
            rest = tail;
            RawDocument::from_bytes(doc).ok()
        })
    }

    /// Number of documents in the sequence.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the sequence holds no document.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }
}

/// A decoded OP_MSG. The body and documents are slices of the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct OpMsg {
    /// Flag bits as received (checksum already verified).
    pub flags: OpMsgFlags,
    /// The kind 0 body: the command document.
    pub body: Bytes,
    /// The kind 1 sections.
    pub sequences: Vec<DocumentSequence>,
}

impl OpMsg {
    /// An OP_MSG with just a body and no flags.
    pub fn from_body(body: impl Into<Bytes>) -> OpMsg {
        OpMsg {
            flags: OpMsgFlags::default(),
            body: body.into(),
            sequences: Vec::new(),
        }
    }

    /// The command document.
    pub fn body(&self) -> &RawDocument {
        // `parse` and `from_body` callers guarantee a well-formed document;
        // an invalid one reads as empty rather than panicking.
        RawDocument::from_bytes(&self.body[..])
            .unwrap_or_else(|_| RawDocument::from_bytes(EMPTY_DOC).expect("empty document"))
    }

    /// Decodes an OP_MSG from a whole frame (header included). Documents are
    /// checked for length and terminator; their elements are read (and so
    /// validated) by whoever needs them, once.
    pub fn parse(frame: &Bytes) -> Result<OpMsg, WireError> {
        OpMsg::parse_limited(frame, MAX_COMMAND_SIZE)
    }

    /// [`parse`](Self::parse) for a server's reply, whose body may exceed
    /// a command's limit (a server that does not shorten a long list of
    /// write errors): up to the message size.
    pub fn parse_reply(frame: &Bytes) -> Result<OpMsg, WireError> {
        OpMsg::parse_limited(frame, crate::header::MAX_MESSAGE_SIZE)
    }

    fn parse_limited(frame: &Bytes, body_limit: usize) -> Result<OpMsg, WireError> {
        let flags = OpMsgFlags(get_i32(frame, HEADER_LEN, "flagBits")? as u32);
        let unknown = flags.0 & 0xffff & !OpMsgFlags::KNOWN_REQUIRED;
        if unknown != 0 {
            return Err(WireError::IllegalFlag(unknown));
        }
        let mut end = frame.len();
        if flags.checksum_present() {
            end = end
                .checked_sub(4)
                .filter(|e| *e >= HEADER_LEN + 4)
                .ok_or(WireError::Truncated("checksum"))?;
            let expected = get_i32(frame, end, "checksum")? as u32;
            let computed = crc32c::crc32c(&frame[..end]);
            if expected != computed {
                return Err(WireError::Checksum { expected, computed });
            }
        }
        let mut at = HEADER_LEN + 4;
        let mut body = None;
        let mut sequences = Vec::new();
        while at < end {
            let kind = frame[at];
            at += 1;
            match kind {
                0 => {
                    if body.is_some() {
                        return Err(WireError::Malformed("more than one body section".into()));
                    }
                    let len = document_len(frame, at, end, body_limit)?;
                    body = Some(frame.slice(at..at + len));
                    at += len;
                }
                1 => {
                    let size = get_i32(frame, at, "document sequence size")?;
                    let seq_end = usize::try_from(size)
                        .ok()
                        .filter(|s| *s >= 5)
                        .and_then(|s| at.checked_add(s))
                        .filter(|e| *e <= end)
                        .ok_or_else(|| {
                            WireError::Malformed(format!("bad document sequence size {size}"))
                        })?;
                    let name_start = at + 4;
                    let nul = frame[name_start..seq_end]
                        .iter()
                        .position(|b| *b == 0)
                        .ok_or(WireError::Truncated("document sequence identifier"))?;
                    let identifier = std::str::from_utf8(&frame[name_start..name_start + nul])
                        .map_err(|_| WireError::Malformed("identifier is not UTF-8".into()))?
                        .to_owned();
                    let docs_start = name_start + nul + 1;
                    let mut d = docs_start;
                    while d < seq_end {
                        let len = document_len(frame, d, seq_end, MAX_COMMAND_SIZE)?;
                        d += len;
                    }
                    sequences.push(DocumentSequence {
                        identifier,
                        documents: frame.slice(docs_start..seq_end),
                    });
                    at = seq_end;
                }
                other => {
                    return Err(WireError::Malformed(format!(
                        "unknown OP_MSG section kind {other}"
                    )))
                }
            }
        }
        let body = body.ok_or_else(|| WireError::Malformed("OP_MSG has no body section".into()))?;
        Ok(OpMsg {
            flags,
            body,
            sequences,
        })
    }

    /// Appends this message to `out` as a whole OP_MSG frame. The checksum
    /// bit is cleared: shardgate never adds a checksum.
    pub fn encode_into(&self, request_id: i32, response_to: i32, out: &mut Vec<u8>) {
        let flags = self.flags.0 & !OpMsgFlags::CHECKSUM_PRESENT;
        encode_msg(
            request_id,
            response_to,
            flags,
            &self.body,
            &self.sequences,
            out,
        );
    }

    /// This message as a whole OP_MSG frame.
    pub fn encode(&self, request_id: i32, response_to: i32) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(request_id, response_to, &mut out);
        out.into()
    }

    /// Size of the frame `encode` produces.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + 4
            + 1
            + self.body.len()
            + self
                .sequences
                .iter()
                .map(|s| 1 + 4 + s.identifier.len() + 1 + s.documents.len())
                .sum::<usize>()
    }
}

const EMPTY_DOC: &[u8] = &[5, 0, 0, 0, 0];

/// Writes an OP_MSG frame from its parts.
pub fn encode_msg(
    request_id: i32,
    response_to: i32,
    flags: u32,
    body: &[u8],
    sequences: &[DocumentSequence],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    MsgHeader {
        message_length: 0,
        request_id,
        response_to,
        op_code: OpCode::Msg.as_i32(),
    }
    .write(out);
    out.extend_from_slice(&flags.to_le_bytes());
    out.push(0);
    out.extend_from_slice(body);
    for seq in sequences {
        out.push(1);
        let size = 4 + seq.identifier.len() + 1 + seq.documents.len();
        out.extend_from_slice(&(size as i32).to_le_bytes());
        out.extend_from_slice(seq.identifier.as_bytes());
        out.push(0);
        out.extend_from_slice(&seq.documents);
    }
    patch_length(out, start);
}

/// Length of the BSON document at `at`, checked against `end` and `max`.
fn document_len(frame: &[u8], at: usize, end: usize, max: usize) -> Result<usize, WireError> {
    let len = get_i32(frame, at, "document length")?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l >= 5)
        .ok_or_else(|| WireError::BadDocument(format!("document length {len}")))?;
    if len > max {
        return Err(WireError::BadDocument(format!(
            "document of {len} bytes exceeds the {max} byte limit"
        )));
    }
    if at + len > end {
        return Err(WireError::Truncated("document"));
    }
    if frame[at + len - 1] != 0 {
        return Err(WireError::BadDocument(
            "document does not end with 0".into(),
        ));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    fn frame_of(msg: &OpMsg) -> Bytes {
        msg.encode(7, 0)
    }

    #[test]
    fn round_trips_body_and_sequences() {
        let body = rawdoc! { "insert": "c", "$db": "test" };
        let docs: Vec<u8> = [rawdoc! {"a": 1}, rawdoc! {"a": 2}]
            .iter()
            .flat_map(|d| d.as_bytes().to_vec())
            .collect();
        let msg = OpMsg {
            flags: OpMsgFlags(OpMsgFlags::MORE_TO_COME),
            body: Bytes::copy_from_slice(body.as_bytes()),
            sequences: vec![DocumentSequence {
                identifier: "documents".into(),
                documents: docs.into(),
            }],
        };
        let frame = frame_of(&msg);
        assert_eq!(frame.len(), msg.encoded_len());
        let parsed = OpMsg::parse(&frame).unwrap();
        assert_eq!(parsed, msg);
        assert!(parsed.flags.more_to_come());
        assert_eq!(parsed.sequences[0].len(), 2);
        assert_eq!(parsed.body().get_str("insert").unwrap(), "c");
    }

    #[test]
    fn verifies_checksum() {
        let body = doc! {"ping": 1, "$db": "admin"}.to_vec().unwrap();
        let mut msg = OpMsg::from_body(body);
        msg.flags = OpMsgFlags(OpMsgFlags::CHECKSUM_PRESENT);
        let mut frame = Vec::new();
        encode_msg(1, 0, msg.flags.0, &msg.body, &[], &mut frame);
        frame.extend_from_slice(&[0; 4]);
        patch_length(&mut frame, 0);
        let crc = crc32c::crc32c(&frame[..frame.len() - 4]);
        let n = frame.len();
        frame[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(OpMsg::parse(&Bytes::from(frame.clone())).is_ok());
        frame[n - 1] ^= 0xff;
        assert!(matches!(
            OpMsg::parse(&Bytes::from(frame)),
            Err(WireError::Checksum { .. })
        ));
    }

    #[test]
    fn refuses_unknown_required_flags_and_bad_bodies() {
        let body = doc! {"ping": 1}.to_vec().unwrap();
        let mut frame = Vec::new();
        encode_msg(1, 0, 1 << 3, &body, &[], &mut frame);
        assert!(OpMsg::parse(&Bytes::from(frame)).is_err());
        let mut frame = Vec::new();
        encode_msg(1, 0, 0, &[9, 0, 0, 0, 7, 0, 0, 0, 1], &[], &mut frame);
        assert!(
            OpMsg::parse(&Bytes::from(frame)).is_err(),
            "no terminating 0"
        );
    }
}
