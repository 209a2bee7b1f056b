//! The standard message header and protocol limits.

use crate::error::WireError;

/// Size of the standard message header in bytes.
pub const HEADER_LEN: usize = 16;
/// Largest message a client may send (`maxMessageSizeBytes`).
pub const MAX_MESSAGE_SIZE: usize = 48_000_000;
/// Largest user document (`maxBsonObjectSize`).
pub const MAX_BSON_OBJECT_SIZE: usize = 16 * 1024 * 1024;
/// Largest command body: a document plus the 16 KiB of command overhead
/// mongod allows on top of `maxBsonObjectSize`.
pub const MAX_COMMAND_SIZE: usize = MAX_BSON_OBJECT_SIZE + 16 * 1024;

/// The opcodes shardgate reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// OP_REPLY (1): legacy reply, only for the OP_QUERY handshake.
    Reply,
    /// OP_QUERY (2004): legacy query, only for the handshake.
    Query,
    /// OP_COMPRESSED (2012).
    Compressed,
    /// OP_MSG (2013).
    Msg,
}

impl OpCode {
    /// The opcode for its wire value.
    pub fn from_i32(value: i32) -> Result<OpCode, WireError> {
        match value {
            1 => Ok(OpCode::Reply),
            2004 => Ok(OpCode::Query),
            2012 => Ok(OpCode::Compressed),
            2013 => Ok(OpCode::Msg),
            other => Err(WireError::UnsupportedOpCode(other)),
        }
    }

    /// The wire value of the opcode.
    pub fn as_i32(self) -> i32 {
        match self {
            OpCode::Reply => 1,
            OpCode::Query => 2004,
            OpCode::Compressed => 2012,
            OpCode::Msg => 2013,
        }
    }
}

/// The standard 16-byte message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHeader {
    /// Total message size, header included.
    pub message_length: i32,
    /// Identifier the sender chose for this message.
    pub request_id: i32,
    /// The `request_id` this message answers (0 for requests).
    pub response_to: i32,
    /// The raw opcode value.
    pub op_code: i32,
}

impl MsgHeader {
    /// Reads a header from the first 16 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<MsgHeader, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated("header"));
        }
        Ok(MsgHeader {
            message_length: read_i32(buf, 0),
            request_id: read_i32(buf, 4),
            response_to: read_i32(buf, 8),
            op_code: read_i32(buf, 12),
        })
    }

    /// Appends the header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.message_length.to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&self.response_to.to_le_bytes());
        out.extend_from_slice(&self.op_code.to_le_bytes());
    }
}

/// Reads a little-endian i32 at `at`; the caller has checked the bounds.
pub(crate) fn read_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_le_bytes(b)
}

/// Reads a little-endian i32 at `at`, or fails with `what` when out of bounds.
pub(crate) fn get_i32(buf: &[u8], at: usize, what: &'static str) -> Result<i32, WireError> {
    match buf.get(at..at.saturating_add(4)) {
        Some(b) if b.len() == 4 => Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => Err(WireError::Truncated(what)),
    }
}

/// Fills in the message length of a message built in `out` from `start`.
pub(crate) fn patch_length(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}
