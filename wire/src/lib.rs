//! MongoDB wire protocol framing and codecs for shardgate.
//!
//! # Layout
//! - [`header`]: the 16-byte message header, opcodes and size limits.
//! - [`frame`]: `check_frame`, which tells whether a buffer holds a whole
//!   message before anything is parsed (mini-redis `Frame::check` style).
//! - [`op_msg`]: OP_MSG (kind 0 body, kind 1 document sequences, CRC-32C
//!   checksum, `moreToCome`, `exhaustAllowed`), parse and encode.
//! - [`legacy`]: OP_QUERY and OP_REPLY, kept only for the legacy
//!   `hello`/`isMaster` handshake.
//! - [`compression`]: OP_COMPRESSED with snappy, zlib and zstd.
//! - [`message`]: [`Message`], the decoded form of one whole frame.
//! - [`raw`]: an allocation-free walk over raw BSON elements, for the
//!   fields routing reads on the hot path.
//! - [`error`]: the decoding errors ([`WireError`]).
//!
//! Messages stay zero-copy over [`bytes::Bytes`]: a decoded body is a slice of
//! the frame, read as a raw BSON document on demand.

pub mod compression;
pub mod error;
pub mod frame;
pub mod header;
pub mod legacy;
pub mod message;
pub mod op_msg;
pub mod raw;

pub use compression::Compressor;
pub use error::WireError;
pub use frame::check_frame;
pub use header::{MsgHeader, OpCode, HEADER_LEN, MAX_BSON_OBJECT_SIZE, MAX_MESSAGE_SIZE};
pub use legacy::{OpQuery, OpReply};
pub use message::Message;
pub use op_msg::{DocumentSequence, OpMsg, OpMsgFlags};
