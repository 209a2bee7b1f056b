//! OP_COMPRESSED: snappy, zlib and zstd.

use std::io::{Read, Write};

use bytes::Bytes;

use crate::error::WireError;
use crate::header::{get_i32, patch_length, MsgHeader, OpCode, HEADER_LEN, MAX_MESSAGE_SIZE};

/// A compressor a client can negotiate in its `hello` (`compression` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compressor {
    /// Snappy (id 1).
    Snappy,
    /// zlib (id 2).
    Zlib,
    /// Zstandard (id 3).
    Zstd,
}

impl Compressor {
    /// Every compressor shardgate supports, in its order of preference.
    pub const ALL: [Compressor; 3] = [Compressor::Zstd, Compressor::Snappy, Compressor::Zlib];

    /// The name used in the `hello` handshake.
    pub fn name(self) -> &'static str {
        match self {
            Compressor::Snappy => "snappy",
            Compressor::Zlib => "zlib",
            Compressor::Zstd => "zstd",
        }
    }

    /// The compressor for a handshake name.
    pub fn from_name(name: &str) -> Option<Compressor> {
        Compressor::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The wire id.
    pub fn id(self) -> u8 {
        match self {
            Compressor::Snappy => 1,
            Compressor::Zlib => 2,
            Compressor::Zstd => 3,
        }
    }

    /// The compressor for a wire id (0, noop, is handled by the caller).
    pub fn from_id(id: u8) -> Result<Compressor, WireError> {
        match id {
            1 => Ok(Compressor::Snappy),
            2 => Ok(Compressor::Zlib),
            3 => Ok(Compressor::Zstd),
            other => Err(WireError::UnsupportedCompressor(other)),
        }
    }

    fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compressor::Snappy => snap::raw::Encoder::new()
                .compress_vec(data)
                .unwrap_or_default(),
            Compressor::Zlib => {
                let mut enc =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                // Writing to a Vec cannot fail.
                let _ = enc.write_all(data);
                enc.finish().unwrap_or_default()
            }
            Compressor::Zstd => zstd::bulk::compress(data, 1).unwrap_or_default(),
        }
    }

    fn decompress(self, data: &[u8], size: usize) -> Result<Vec<u8>, WireError> {
        let err = |e: &dyn std::fmt::Display| WireError::Decompression(e.to_string());
        let out = match self {
            Compressor::Snappy => {
                let n = snap::raw::decompress_len(data).map_err(|e| err(&e))?;
                if n != size {
                    return Err(WireError::Decompression(format!(
                        "snappy length {n} differs from uncompressedSize {size}"
                    )));
                }
                snap::raw::Decoder::new()
                    .decompress_vec(data)
                    .map_err(|e| err(&e))?
            }
            Compressor::Zlib => {
                let mut out = Vec::with_capacity(size);
                flate2::read::ZlibDecoder::new(data)
                    .take(size as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| err(&e))?;
                out
            }
            Compressor::Zstd => zstd::bulk::decompress(data, size).map_err(|e| err(&e))?,
        };
        if out.len() != size {
            return Err(WireError::Decompression(format!(
                "got {} bytes, uncompressedSize says {size}",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// Unwraps an OP_COMPRESSED frame into the original frame and the compressor
/// used (`None` for the noop compressor).
pub fn decompress_frame(frame: &Bytes) -> Result<(Bytes, Option<Compressor>), WireError> {
    let header = MsgHeader::parse(frame)?;
    let original_op = get_i32(frame, HEADER_LEN, "originalOpcode")?;
    if original_op == OpCode::Compressed.as_i32() {
        return Err(WireError::Malformed("nested OP_COMPRESSED".into()));
    }
    let size = get_i32(frame, HEADER_LEN + 4, "uncompressedSize")?;
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_MESSAGE_SIZE - HEADER_LEN)
        .ok_or(WireError::BadLength(size as i64))?;
    let id = *frame
        .get(HEADER_LEN + 8)
        .ok_or(WireError::Truncated("compressorId"))?;
    let payload = &frame[HEADER_LEN + 9..];
    let (body, compressor) = if id == 0 {
        if payload.len() != size {
            return Err(WireError::Decompression(
                "noop payload size mismatch".into(),
            ));
        }
        (payload.to_vec(), None)
    } else {
        let c = Compressor::from_id(id)?;
        (c.decompress(payload, size)?, Some(c))
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    MsgHeader {
        message_length: 0,
        request_id: header.request_id,
        response_to: header.response_to,
        op_code: original_op,
    }
    .write(&mut out);
    out.extend_from_slice(&body);
    patch_length(&mut out, 0);
    Ok((out.into(), compressor))
}

/// Wraps a whole frame into an OP_COMPRESSED frame with the same ids.
pub fn compress_frame(frame: &[u8], compressor: Compressor) -> Result<Bytes, WireError> {
    let header = MsgHeader::parse(frame)?;
    let body = &frame[HEADER_LEN..];
    let compressed = compressor.compress(body);
    let mut out = Vec::with_capacity(HEADER_LEN + 9 + compressed.len());
    MsgHeader {
        message_length: 0,
        request_id: header.request_id,
        response_to: header.response_to,
        op_code: OpCode::Compressed.as_i32(),
    }
    .write(&mut out);
    out.extend_from_slice(&header.op_code.to_le_bytes());
    out.extend_from_slice(&(body.len() as i32).to_le_bytes());
    out.push(compressor.id());
    out.extend_from_slice(&compressed);
    patch_length(&mut out, 0);
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op_msg::OpMsg;
    use bson::doc;

    #[test]
    fn every_compressor_round_trips() {
        let body = doc! {"find": "c", "filter": {"x": "y".repeat(500)}, "$db": "t"}
            .to_vec()
            .unwrap();
        let frame = OpMsg::from_body(body).encode(11, 0);
        for c in Compressor::ALL {
            let z = compress_frame(&frame, c).unwrap();
            assert!(z.len() < frame.len(), "{c:?} did not compress");
            let (back, used) = decompress_frame(&z).unwrap();
            assert_eq!(used, Some(c));
            assert_eq!(back, frame);
        }
    }

    #[test]
    fn refuses_lying_sizes() {
        let frame = OpMsg::from_body(doc! {"ping": 1}.to_vec().unwrap()).encode(1, 0);
        let mut z = compress_frame(&frame, Compressor::Zstd).unwrap().to_vec();
        z[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&3i32.to_le_bytes());
        assert!(decompress_frame(&Bytes::from(z.clone())).is_err());
        z[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(decompress_frame(&Bytes::from(z)).is_err());
    }
}
