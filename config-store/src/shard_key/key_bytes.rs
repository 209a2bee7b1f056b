//! [`KeyBytes`]: the encoded form of one shard key.

use std::fmt;

use smallvec::SmallVec;

/// Keys up to this many bytes (most shard keys: a hashed key takes 16, an
/// int64 and a short string about 30) are held without a heap allocation.
const INLINE: usize = 32;

/// Order-preserving bytes of one shard key: `Ord` on it (`memcmp`) is
/// MongoDB's BSON comparison order of the key tuples, with descending fields
/// reversed. Built by [`ShardKeyPattern::encode_bound`] and
/// [`ShardKeyPattern::extract_key`]; two keys are equal exactly when their
/// values compare equal in MongoDB (so `1`, `1.0` and `NumberLong(1)` give
/// the same bytes).
///
/// [`Display`](fmt::Display) writes lowercase hex, which sorts like the bytes
/// and so can be embedded in ordered store keys; [`KeyBytes::from_hex`] reads
/// it back.
///
/// [`ShardKeyPattern::encode_bound`]: super::ShardKeyPattern::encode_bound
/// [`ShardKeyPattern::extract_key`]: super::ShardKeyPattern::extract_key
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct KeyBytes(SmallVec<[u8; INLINE]>);

impl KeyBytes {
    /// The encoded bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The number of encoded bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes (no real key encodes to nothing, so the
    /// empty value sorts below every key).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The encoded bytes, owned.
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_vec()
    }

    /// A key of these bytes.
    pub fn from_slice(bytes: &[u8]) -> KeyBytes {
        KeyBytes(SmallVec::from_slice(bytes))
    }

    /// Parses the lowercase or uppercase hex written by `Display`; `None` if
    /// the text is not an even number of hex digits.
    pub fn from_hex(text: &str) -> Option<KeyBytes> {
        let pairs = text.as_bytes().chunks_exact(2);
        if !pairs.remainder().is_empty() {
            return None;
        }
        pairs
            .map(|pair| match *pair {
                [hi, lo] => Some(hex_value(hi)? << 4 | hex_value(lo)?),
                _ => None,
            })
            .collect::<Option<SmallVec<[u8; INLINE]>>>()
            .map(KeyBytes)
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl AsRef<[u8]> for KeyBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for KeyBytes {
    fn from(bytes: Vec<u8>) -> Self {
        if bytes.len() <= INLINE {
            KeyBytes::from_slice(&bytes)
        } else {
            KeyBytes(SmallVec::from_vec(bytes))
        }
    }
}
