//! The first 8 bytes of the MD5 digest of a message short enough to pad
//! into one 64-byte block (at most 55 bytes), which every hashed shard-key
//! scalar but a long string is. The padding (RFC 1321: a 0x80 byte, zeros,
//! the bit length little-endian in the last 8 bytes) is written here, and
//! the block goes straight to the compression function: on x86 the
//! assembly one `md-5` itself uses with its `asm` feature, elsewhere
//! through `md-5`'s digest.

/// Longest message that pads into one block.
pub(crate) const ONE_BLOCK: usize = 55;

/// MD5's initial state.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
const INITIAL: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The digest's first 8 bytes of `block[..len]` (`len` at most
/// [`ONE_BLOCK`]); `block` past `len` must be zero.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
pub(crate) fn md5_head(mut block: [u8; 64], len: usize) -> [u8; 8] {
    debug_assert!(len <= ONE_BLOCK);
    block[len] = 0x80;
    block[56..].copy_from_slice(&(len as u64 * 8).to_le_bytes());
    let mut state = INITIAL;
    md5_asm::compress(&mut state, &[block]);
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&state[0].to_le_bytes());
    head[4..].copy_from_slice(&state[1].to_le_bytes());
    head
}

/// The digest's first 8 bytes of `block[..len]`.
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
pub(crate) fn md5_head(block: [u8; 64], len: usize) -> [u8; 8] {
    use md5::{Digest, Md5};
    let digest = Md5::digest(&block[..len]);
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    #[test]
    fn every_one_block_length_hashes_as_md5() {
        for len in 0..=ONE_BLOCK {
            let mut block = [0u8; 64];
            for (i, b) in block[..len].iter_mut().enumerate() {
                *b = (i * 37 + 11) as u8;
            }
            let digest = Md5::digest(&block[..len]);
            assert_eq!(md5_head(block, len), digest[..8], "length {len}");
        }
    }
}
