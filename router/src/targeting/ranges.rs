//! Turning per-field value sets into ranges of whole encoded keys.

use std::cmp::Ordering;

use bson::Bson;
use shardgate_config_store::shard_key::{encode_value, KeyBytes, KeyKind, ShardKeyPattern};

use super::field::{hull, FieldSet, Interval};
use super::parse::Conj;
use super::{KeyRange, MAX_RANGES};

/// The padding for keys cut short after a field, and the global ends.
pub(super) struct Ends {
    /// The lowest encoding of each field (MinKey, or MaxKey inverted for a
    /// descending field), concatenated: the global minimum key.
    low: Vec<u8>,
    /// The highest encoding of each field: the global maximum key.
    high: Vec<u8>,
}

impl Ends {
    pub(super) fn new(pattern: &ShardKeyPattern) -> Self {
        let (mut low, mut high) = (Vec::new(), Vec::new());
        for (_, kind) in pattern.fields() {
            let descending = kind == KeyKind::Descending;
            let (lowest, highest) = match descending {
                true => (Bson::MaxKey, Bson::MinKey),
                false => (Bson::MinKey, Bson::MaxKey),
            };
            encode_value(&lowest, descending, &mut low);
            encode_value(&highest, descending, &mut high);
        }
        // MinKey and MaxKey encode as one tag byte each, so field `i`'s
        // padding starts at byte `i`.
        debug_assert_eq!(low.len(), pattern.fields().count());
        debug_assert_eq!(high.len(), pattern.fields().count());
        Ends { low, high }
    }

    /// The lowest encodings of fields `i..` (empty past the last field).
    fn low(&self, i: usize) -> &[u8] {
        self.low.get(i..).unwrap_or_default()
    }

    /// The highest encodings of fields `i..`.
    fn high(&self, i: usize) -> &[u8] {
        self.high.get(i..).unwrap_or_default()
    }

    fn global_min(&self) -> &[u8] {
        &self.low
    }

    fn global_max(&self) -> &[u8] {
        &self.high
    }
}

/// The merged key ranges of all conjunctions.
pub(super) fn key_ranges(dnf: &[Conj], ends: &Ends) -> Vec<KeyRange> {
    let mut out = Vec::new();
    for conj in dnf {
        conj_ranges(conj, ends, &mut out);
        if out.len() > MAX_RANGES {
            out = merge(out);
            if out.len() > MAX_RANGES {
                out = range_hull(&out).into_iter().collect();
            }
        }
    }
    merge(out)
}

/// Whether `ranges` is the one range of every key.
pub(super) fn covers_everything(ranges: &[KeyRange], ends: &Ends) -> bool {
    match ranges {
        [only] => {
            only.min.as_slice() <= ends.global_min()
                && match only.max.as_slice().cmp(ends.global_max()) {
                    Ordering::Less => false,
                    Ordering::Equal => only.max_inclusive,
                    Ordering::Greater => true,
                }
        }
        _ => false,
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The key ranges of one conjunction: the points of leading fields crossed
/// with each other, then the first non-point or unconstrained field.
fn conj_ranges(conj: &Conj, ends: &Ends, out: &mut Vec<KeyRange>) {
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    for (i, set) in conj.iter().enumerate() {
        let FieldSet::Values(list) = set else {
            out.extend(prefixes.iter().map(|p| KeyRange {
                min: KeyBytes::from(cat(&[p, ends.low(i)])),
                max: KeyBytes::from(cat(&[p, ends.high(i)])),
                max_inclusive: true,
            }));
            return;
        };
        let product = prefixes.len().saturating_mul(list.len());
        if product <= MAX_RANGES && list.iter().all(Interval::is_point) {
            prefixes = prefixes
                .iter()
                .flat_map(|p| list.iter().map(move |iv| cat(&[p, &iv.lo])))
                .collect();
            continue;
        }
        let hulled: Vec<Interval>;
        let list = if product > MAX_RANGES {
            hulled = hull(list).into_iter().collect();
            &hulled
        } else {
            list
        };
        for p in &prefixes {
            out.extend(list.iter().map(|iv| interval_range(p, iv, ends, i + 1)));
        }
        return;
    }
    out.extend(prefixes.into_iter().map(|p| KeyRange {
        min: KeyBytes::from(p.clone()),
        max: KeyBytes::from(p),
        max_inclusive: true,
    }));
}

/// The keys starting with `prefix`, then a value in `iv` for the next
/// field, then anything for the fields from `rest` on.
fn interval_range(prefix: &[u8], iv: &Interval, ends: &Ends, rest: usize) -> KeyRange {
    let min = if iv.lo_inc {
        cat(&[prefix, &iv.lo, ends.low(rest)])
    } else {
        // Above every key with this value: the bytes just past the highest.
        cat(&[prefix, &iv.lo, ends.high(rest), &[0]])
    };
    let (max, max_inclusive) = if iv.hi_inc {
        (cat(&[prefix, &iv.hi, ends.high(rest)]), true)
    } else {
        (cat(&[prefix, &iv.hi, ends.low(rest)]), false)
    };
    KeyRange {
        min: KeyBytes::from(min),
        max: KeyBytes::from(max),
        max_inclusive,
    }
}

/// Upper ends in order: at equal bytes an exclusive end comes first.
fn cmp_max(a: &KeyRange, b: &KeyRange) -> Ordering {
    a.max
        .cmp(&b.max)
        .then_with(|| a.max_inclusive.cmp(&b.max_inclusive))
}

/// Whether `next` (starting no lower) overlaps or touches `range`.
fn joins(range: &KeyRange, next: &KeyRange) -> bool {
    match next.min.cmp(&range.max) {
        Ordering::Less | Ordering::Equal => true,
        // [a, b] and [b ++ 0x00, c]: nothing lies between.
        Ordering::Greater => {
            range.max_inclusive
                && next.min.len() == range.max.len() + 1
                && next.min.as_slice().starts_with(range.max.as_slice())
                && next.min.as_slice().last() == Some(&0)
        }
    }
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge(mut ranges: Vec<KeyRange>) -> Vec<KeyRange> {
    ranges.sort_by(|a, b| a.min.cmp(&b.min));
    // `dedup_by` hands (later, earlier kept) pairs: fold into the kept.
    ranges.dedup_by(|next, last| {
        let joined = joins(last, next);
        if joined && cmp_max(next, last) == Ordering::Greater {
            std::mem::swap(&mut last.max, &mut next.max);
            last.max_inclusive = next.max_inclusive;
        }
        joined
    });
    ranges
}

/// The one range holding every range of `ranges` (sorted by `min`).
fn range_hull(ranges: &[KeyRange]) -> Option<KeyRange> {
    let first = ranges.first()?;
    let last = ranges.iter().max_by(|a, b| cmp_max(a, b))?;
    Some(KeyRange {
        min: first.min.clone(),
        max: last.max.clone(),
        max_inclusive: last.max_inclusive,
    })
}
