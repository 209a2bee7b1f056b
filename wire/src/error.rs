//! Errors raised while framing or decoding a message.

use thiserror::Error;

/// A frame or message that cannot be decoded. The client is always to blame;
/// a retry of the same bytes cannot help.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// `messageLength` is below the header size or above the 48 MB limit.
    #[error("invalid messageLength {0}: must be between 16 and 48000000 bytes")]
    BadLength(i64),
    /// The opcode is not one shardgate accepts.
    #[error("unsupported opcode {0}")]
    UnsupportedOpCode(i32),
    /// The message ends before a field it announces.
    #[error("truncated message: {0}")]
    Truncated(&'static str),
    /// An OP_MSG sets a required flag bit (0-15) shardgate does not know.
    #[error("OP_MSG contains unknown required flag bits {0:#x}")]
    IllegalFlag(u32),
    /// The message is structurally invalid.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A BSON document is invalid or larger than allowed.
    #[error("invalid BSON document: {0}")]
    BadDocument(String),
    /// The CRC-32C checksum does not match the message.
    #[error("OP_MSG checksum mismatch: expected {expected:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum the message carries.
        expected: u32,
        /// The checksum computed over the message.
        computed: u32,
    },
    /// OP_COMPRESSED names a compressor shardgate does not know or did not negotiate.
    #[error("unsupported compressor id {0}")]
    UnsupportedCompressor(u8),
    /// Decompression failed or produced a size other than the announced one.
    #[error("decompression failed: {0}")]
    Decompression(String),
}

impl WireError {
    /// The MongoDB error code the client gets for this error.
    pub fn code(&self) -> (i32, &'static str) {
        match self {
            WireError::Checksum { .. } => (288, "ChecksumMismatch"),
            WireError::IllegalFlag(_) => (223, "IllegalOpMsgFlag"),
            WireError::BadDocument(_) => (22, "InvalidBSON"),
            WireError::BadLength(_)
            | WireError::UnsupportedOpCode(_)
            | WireError::Truncated(_)
            | WireError::Malformed(_)
            | WireError::UnsupportedCompressor(_)
            | WireError::Decompression(_) => (17, "ProtocolError"),
        }
    }
}
