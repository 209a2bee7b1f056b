//! Query targeting: which shard-key ranges can hold the documents a filter
//! matches, and so which shards a read must reach.
//!
//! [`target`] is conservative: every document the filter matches (under
//! MongoDB's query semantics) has its shard key inside one of the returned
//! ranges. The ranges may be wider than necessary, never narrower.
//!
//! # How a filter is read
//! The filter becomes a disjunction of conjunctions (`parse`), each giving
//! every shard-key field a set of allowed values (`field`), in the field's
//! own encoding (ascending, byte-inverted for descending fields, the
//! `NumberLong` hash for hashed ones). Per field:
//! - equality (`{f: v}`, `{f: {$eq: v}}`) and `$in` give points; `null`
//!   gives the points `null` and `undefined` (servers before 8.0 match
//!   `undefined` too; a missing field is routed as `null`);
//! - `$gt $gte $lt $lte` give an interval clipped to the operand's type
//!   bracket (`{$gt: 5}` is `(5, +Infinity]`), intersected within one
//!   operator document and across `$and` and the implicit top-level AND;
//! - a regex, an array, a document with `$`-fields as a value, `undefined`,
//!   and every other operator (`$ne $nin $not $exists $type $regex $nor
//!   $expr $where $text $elemMatch`, geo, unknown ones) leave the field
//!   unconstrained; a range on a hashed field does too;
//! - a dotted key field `a.b` is pinned by `{"a.b": …}`, and by an equality
//!   or `$in` on its parent `a` with literal documents (the value at `b`
//!   inside them, `null` where the path is missing);
//! - `$or` unions its branches (one unconstrained branch makes it all).
//!
//! Conjunctions then become key ranges (`ranges`) lexicographically: points
//! of leading fields are crossed with the next field's set, and the first
//! field that is unconstrained or a non-point range ends the key (the rest
//! padded with the fields' lowest/highest encodings). Products beyond
//! [`MAX_RANGES`] fall back to the hull of that field's values; disjunctions
//! beyond [`MAX_CONJUNCTIONS`] to the per-field hull.
//!
//! Not handled here: collations. With a non-simple collation, string
//! equality and ranges do not follow the binary order, so callers must use
//! [`Targets::All`] for such queries.

use std::collections::BTreeSet;

use bson::Document;
use shardgate_config_store::chunk_map::ChunkMap;
use shardgate_config_store::shard_key::{KeyBytes, ShardKeyPattern};

mod field;
#[cfg(test)]
mod key_tests;
mod parse;
#[cfg(test)]
mod proptests;
mod ranges;
#[cfg(test)]
pub(crate) mod tests;

/// Most key ranges one filter turns into before falling back to hulls.
pub const MAX_RANGES: usize = 10_000;
/// Most conjunctions a filter's `$or`/`$and` expansion keeps before falling
/// back to per-field hulls.
pub const MAX_CONJUNCTIONS: usize = 1_000;

/// One interval of encoded shard keys: `[min, max)`, or `[min, max]` when
/// `max_inclusive`.
///
/// The bounds compare with chunk bounds exactly as keys do, but are not
/// always whole keys: a bound may be a key prefix padded with the lowest or
/// highest encoding of the remaining fields, and an exclusive lower end
/// (`{$gt: 5}`) is written as the smallest byte string above the key, the
/// key's bytes followed by `0x00`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Inclusive lower end.
    pub min: KeyBytes,
    /// Upper end.
    pub max: KeyBytes,
    /// Whether `max` itself is in the range.
    pub max_inclusive: bool,
}

impl KeyRange {
    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &KeyBytes) -> bool {
        self.min <= *key
            && if self.max_inclusive {
                *key <= self.max
            } else {
                *key < self.max
            }
    }
}

/// Where a filter's matches can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Anywhere: the filter does not constrain the shard key.
    All,
    /// Only in these ranges: sorted, merged, non-overlapping. Empty when no
    /// document can match (`{$in: []}`); callers still send such a query to
    /// one shard of their choice.
    Ranges(Vec<KeyRange>),
}

impl Targets {
    /// Whether `key` can hold a match.
    pub fn contains(&self, key: &KeyBytes) -> bool {
        match self {
            Targets::All => true,
            Targets::Ranges(ranges) => ranges.iter().any(|r| r.contains(key)),
        }
    }
}

/// The shard-key ranges that can hold documents matching `filter`, for a
/// collection sharded on `pattern`. Never fails: anything not understood
/// widens the result (the shards report invalid queries).
pub fn target(pattern: &ShardKeyPattern, filter: &Document) -> Targets {
    let fields: Vec<_> = pattern.fields().collect();
    let ctx = parse::Ctx::new(&fields, parse::Mode::Target);
    let dnf = parse::document(&ctx, filter, 0);
    if dnf.iter().any(parse::is_unconstrained) {
        return Targets::All;
    }
    let ends = ranges::Ends::new(pattern);
    let ranges = ranges::key_ranges(&dnf, &ends);
    if ranges::covers_everything(&ranges, &ends) {
        Targets::All
    } else {
        Targets::Ranges(ranges)
    }
}

/// The shards owning a chunk that overlaps `targets` (every shard owning a
/// chunk for [`Targets::All`]; none for an empty range list).
pub fn shards_for(chunks: &ChunkMap, targets: &Targets) -> BTreeSet<String> {
    let ranges = match targets {
        Targets::All => return chunks.shards().into_iter().map(str::to_owned).collect(),
        Targets::Ranges(ranges) => ranges,
    };
    let mut shards = BTreeSet::new();
    let mut visited = 0usize;
    let mut shard_count = None;
    for range in ranges {
        // A chunk [cmin, cmax) overlaps [min, max) iff cmin < max && cmax > min;
        // an inclusive max adds the chunk owning max. A point needs only that.
        let point = range.max_inclusive && range.min == range.max;
        let overlapping = (!point).then(|| chunks.chunks_overlapping(&range.min, &range.max));
        let last =
            (range.max_inclusive && range.min <= range.max).then(|| chunks.chunk_for(&range.max));
        for chunk in overlapping.into_iter().flatten().chain(last) {
            if !shards.contains(&chunk.shard) {
                shards.insert(chunk.shard.clone());
            }
            visited += 1;
            // Once many chunks were seen, stop as soon as every shard is in.
            if visited >= 16 {
                let total = *shard_count.get_or_insert_with(|| chunks.shards().len());
                if shards.len() >= total {
                    return shards;
                }
            }
        }
    }
    shards
}

/// [`shards_for`] of [`target`]: the shards a read with `filter` must reach.
/// Empty when no document can match.
pub fn target_shards(
    pattern: &ShardKeyPattern,
    chunks: &ChunkMap,
    filter: &Document,
) -> BTreeSet<String> {
    shards_for(chunks, &target(pattern, filter))
}

/// The one shard key `filter` pins, if it pins every shard-key field by
/// equality (`{f: v}` or `{f: {$eq: v}}`, possibly inside `$and`, or an
/// equality on the parent document of a dotted field): the key a document
/// upserted with this filter gets. `null` pins `null`. `None` when some
/// field is not pinned by equality alone (ranges, `$in`, `$or`, regexes,
/// arrays, …) or when the equalities contradict each other.
pub fn exact_key(pattern: &ShardKeyPattern, filter: &Document) -> Option<KeyBytes> {
    let fields: Vec<_> = pattern.fields().collect();
    let ctx = parse::Ctx::new(&fields, parse::Mode::Exact);
    let dnf = parse::document(&ctx, filter, 0);
    let [conj] = dnf.as_slice() else {
        return None;
    };
    let mut key = Vec::new();
    for set in conj {
        key.extend_from_slice(set.single_point()?);
    }
    Some(KeyBytes::from(key))
}
