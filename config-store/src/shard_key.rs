//! Shard-key patterns and the order-preserving bytes of shard-key values.
//!
//! A [`ShardKeyPattern`] (`{customerId: 1, orderId: 1}`, `{_id: "hashed"}`)
//! turns chunk bounds ([`ShardKeyPattern::encode_bound`]) and stored
//! documents ([`ShardKeyPattern::extract_key`]) into [`KeyBytes`], whose
//! plain byte order is MongoDB's BSON comparison order of the key tuples, so
//! routing tables and store keys can compare keys with `memcmp`.
//!
//! - [`encode_value`]: the per-field encoding (see `encode` for the layout,
//!   `number` for numbers: int32, int64, double and Decimal128 compare by
//!   exact value, NaN lowest).
//! - [`hash_value`]: MongoDB's hashed-index hash, for `"hashed"` fields.
//! - `extract` and `fast`: shard keys read and encoded straight from a
//!   document's raw bytes, the full parser only for unusual values;
//!   [`encode_raw_value`] is the same encoding for one raw element.
//! - `sort_value`: the router's merge keys for `$sortKey`s, the same but for
//!   top-level numbers, which take a cheaper layout.
//!
//! Differences from `mongos`: descending (`-1`) fields are accepted (the
//! server only allows `1` and `"hashed"`); their bytes are inverted, so
//! [`ShardKeyPattern::global_min`] uses `MaxKey` for them.

mod encode;
mod extract;
mod fast;
#[cfg(test)]
mod fast_tests;
mod hash;
mod key_bytes;
mod md5_block;
mod number;
mod pattern;
#[cfg(test)]
mod pattern_tests;
#[cfg(test)]
mod proptests;
mod range_filter;
#[cfg(test)]
mod reference;
mod sort_value;
#[cfg(test)]
mod tests;

pub(crate) use encode::global_max_matching;
pub use encode::{canonical_type, encode_value};
pub use fast::{encode_raw_string_bytes, encode_raw_value};
pub use hash::hash_value;
pub use key_bytes::KeyBytes;
pub use pattern::{KeyKind, ShardKeyPattern};
pub use range_filter::range_filter;
pub use sort_value::{encode_raw_sort_value, encode_sort_value};

/// Why a shard-key pattern, bound or document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardKeyError {
    /// The key pattern itself is not a valid shard key.
    #[error("invalid shard key pattern {pattern}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bound's fields are not exactly the pattern's fields in order.
    #[error("shard key bound {bound} does not match the shard key pattern {pattern}: {reason}")]
    BoundMismatch {
        /// The bound as given.
        bound: String,
        /// The shard key pattern.
        pattern: String,
        /// Which fields are missing, extra or out of order.
        reason: String,
    },
    /// A bound holds a value a shard key cannot have.
    #[error("invalid value for shard key field '{field}': {reason}")]
    InvalidValue {
        /// The shard-key field.
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A document has an array on the path of a shard-key field.
    #[error("Shard key cannot contain array values or array descendants (field '{field}')")]
    ArrayValue {
        /// The shard-key field whose path holds an array.
        field: String,
    },
    /// A value nests documents/arrays deeper than the 200 levels allowed.
    #[error("the value of shard key field '{field}' is nested deeper than 200 levels")]
    TooDeep {
        /// The shard-key field.
        field: String,
    },
    /// The document's bytes are not well-formed BSON.
    #[error("malformed BSON in shard key field '{field}': {reason}")]
    InvalidBson {
        /// The shard-key field being read.
        field: String,
        /// The parser's complaint.
        reason: String,
    },
}

impl ShardKeyError {
    /// The MongoDB error code and code name to report for this error:
    /// `BadValue` (2) for bad patterns and values, `ShardKeyNotFound` (61) for
    /// bounds without exactly the shard-key fields and for array values (as
    /// `mongos` does for inserts), `Overflow` (15) for too-deep nesting and
    /// `InvalidBSON` (22) for malformed documents.
    pub fn code(&self) -> (i32, &'static str) {
        match self {
            ShardKeyError::InvalidPattern { .. } | ShardKeyError::InvalidValue { .. } => {
                (2, "BadValue")
            }
            ShardKeyError::BoundMismatch { .. } | ShardKeyError::ArrayValue { .. } => {
                (61, "ShardKeyNotFound")
            }
            ShardKeyError::TooDeep { .. } => (15, "Overflow"),
            ShardKeyError::InvalidBson { .. } => (22, "InvalidBSON"),
        }
    }

    /// Attaches the field name to a raw-value failure.
    fn from_value(field: &str, err: encode::ValueError) -> Self {
        match err {
            encode::ValueError::Malformed(reason) => ShardKeyError::InvalidBson {
                field: field.to_owned(),
                reason,
            },
            encode::ValueError::TooDeep => ShardKeyError::TooDeep {
                field: field.to_owned(),
            },
        }
    }
}
