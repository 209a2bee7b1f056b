//! Deciding whether a buffer holds one whole message, before parsing it.

use crate::error::WireError;
use crate::header::{read_i32, HEADER_LEN, MAX_MESSAGE_SIZE};

/// Returns `Ok(Some(len))` when `buf` starts with a whole message of `len`
/// bytes, `Ok(None)` when more bytes are needed, and an error when the
/// announced length is impossible. The length is checked before the caller
/// reserves room for the rest, so a 2 GB `messageLength` allocates nothing.
pub fn check_frame(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = read_i32(buf, 0) as i64;
    if len < HEADER_LEN as i64 || len > MAX_MESSAGE_SIZE as i64 {
        return Err(WireError::BadLength(len));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_more_until_whole() {
        let mut msg = vec![0u8; 20];
        msg[0..4].copy_from_slice(&20i32.to_le_bytes());
        assert_eq!(check_frame(&msg[..3]), Ok(None));
        assert_eq!(check_frame(&msg[..19]), Ok(None));
        assert_eq!(check_frame(&msg), Ok(Some(20)));
    }

    #[test]
    fn refuses_impossible_lengths() {
        let huge = 2_000_000_000i32.to_le_bytes();
        assert_eq!(check_frame(&huge), Err(WireError::BadLength(2_000_000_000)));
        assert_eq!(
            check_frame(&(-1i32).to_le_bytes()),
            Err(WireError::BadLength(-1))
        );
        assert_eq!(
            check_frame(&8i32.to_le_bytes()),
            Err(WireError::BadLength(8))
        );
    }
}
