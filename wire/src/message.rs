//! Decoding one whole frame into a [`Message`].

use bytes::Bytes;

use crate::compression::{decompress_frame, Compressor};
use crate::error::WireError;
use crate::header::{MsgHeader, OpCode};
use crate::legacy::{OpQuery, OpReply};
use crate::op_msg::OpMsg;

/// A decoded message of a kind shardgate handles.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An OP_MSG: every command of a current driver.
    Msg(OpMsg),
    /// A legacy OP_QUERY (the handshake).
    Query(OpQuery),
    /// A legacy OP_REPLY (what a shard answers to our OP_QUERY).
    Reply(OpReply),
}

/// A decoded frame: its header, message, and the compressor it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The header of the frame as the peer sent it.
    pub header: MsgHeader,
    /// The message.
    pub message: Message,
    /// The compressor the frame was wrapped in, if any.
    pub compressor: Option<Compressor>,
}

impl Message {
    /// Decodes a whole frame (as delimited by [`crate::check_frame`]).
    pub fn decode(frame: Bytes) -> Result<Decoded, WireError> {
        Message::decode_limited(frame, false)
    }

    /// [`decode`](Self::decode) of a server's reply: an OP_MSG body may be
    /// as large as the message (see [`OpMsg::parse_reply`]).
    pub fn decode_reply(frame: Bytes) -> Result<Decoded, WireError> {
        Message::decode_limited(frame, true)
    }

    fn decode_limited(frame: Bytes, reply: bool) -> Result<Decoded, WireError> {
        let header = MsgHeader::parse(&frame)?;
        if header.message_length as usize != frame.len() {
            return Err(WireError::Malformed(format!(
                "messageLength {} but frame of {} bytes",
                header.message_length,
                frame.len()
            )));
        }
        let (frame, compressor) = match OpCode::from_i32(header.op_code)? {
            OpCode::Compressed => decompress_frame(&frame)?,
            _ => (frame, None),
        };
        let message = match OpCode::from_i32(crate::header::read_i32(&frame, 12))? {
            OpCode::Msg if reply => Message::Msg(OpMsg::parse_reply(&frame)?),
            OpCode::Msg => Message::Msg(OpMsg::parse(&frame)?),
            OpCode::Query => Message::Query(OpQuery::parse(&frame)?),
            OpCode::Reply => Message::Reply(OpReply::parse(&frame)?),
            OpCode::Compressed => return Err(WireError::Malformed("nested OP_COMPRESSED".into())),
        };
        Ok(Decoded {
            header,
            message,
            compressor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::compress_frame;
    use crate::frame::check_frame;
    use crate::op_msg::DocumentSequence;
    use bson::doc;
    use proptest::prelude::*;

    fn sample_frames() -> Vec<Vec<u8>> {
        let body = doc! {"insert": "c", "ordered": true, "$db": "db"}
            .to_vec()
            .unwrap();
        let docs: Vec<u8> = (0..3)
            .flat_map(|i| doc! {"_id": i, "s": "x"}.to_vec().unwrap())
            .collect();
        let msg = OpMsg {
            flags: Default::default(),
            body: body.into(),
            sequences: vec![DocumentSequence {
                identifier: "documents".into(),
                documents: docs.into(),
            }],
        };
        let plain = msg.encode(5, 0).to_vec();
        let zstd = compress_frame(&plain, Compressor::Zstd).unwrap().to_vec();
        let snappy = compress_frame(&plain, Compressor::Snappy).unwrap().to_vec();
        let mut query = Vec::new();
        crate::legacy::encode_query(
            1,
            "admin",
            &doc! {"isMaster": 1}.to_vec().unwrap(),
            &mut query,
        );
        vec![plain, zstd, snappy, query]
    }

    /// Runs the decoder the way the router does: frame check, then decode.
    fn decode_like_router(bytes: &[u8]) {
        if let Ok(Some(len)) = check_frame(bytes) {
            let _ = Message::decode(Bytes::copy_from_slice(&bytes[..len]));
        }
    }

    #[test]
    fn samples_decode() {
        for f in sample_frames() {
            let d = Message::decode(Bytes::from(f)).unwrap();
            match d.message {
                Message::Msg(m) => assert_eq!(m.sequences[0].len(), 3),
                Message::Query(q) => assert_eq!(q.database(), "admin"),
                Message::Reply(_) => panic!("no reply expected"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Random bytes never panic the decoder.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            decode_like_router(&bytes);
        }

        /// Valid frames with random bytes overwritten never panic the decoder.
        #[test]
        fn mutated_frames_never_panic(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<Option<usize>>(),
        ) {
            let mut f = sample_frames().swap_remove(which);
            for (at, b) in edits {
                let n = f.len();
                f[at % n] = b;
            }
            if let Some(c) = cut {
                let n = f.len();
                f.truncate(c % n);
            }
            decode_like_router(&f);
        }
    }
}
