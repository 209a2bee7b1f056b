//! The values one shard-key field may take, as intervals of the field's
//! encoded bytes.
//!
//! Every bound is the complete encoding of one value (ascending, inverted
//! for a descending field, the `NumberLong` hash for a hashed one). The
//! encodings are prefix-free, so comparing bounds compares values, and a
//! key whose field equals a bound starts with exactly that bound's bytes.

use std::cmp::Ordering;

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Document, Timestamp};
use shardgate_config_store::shard_key::{encode_value, hash_value, KeyKind};

/// One interval of encoded field values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Interval {
    pub(super) lo: Vec<u8>,
    pub(super) lo_inc: bool,
    pub(super) hi: Vec<u8>,
    pub(super) hi_inc: bool,
}

impl Interval {
    fn point(bytes: Vec<u8>) -> Self {
        Interval {
            lo: bytes.clone(),
            lo_inc: true,
            hi: bytes,
            hi_inc: true,
        }
    }

    /// Whether the interval is exactly one value.
    pub(super) fn is_point(&self) -> bool {
        self.lo_inc && self.hi_inc && self.lo == self.hi
    }

    fn is_empty(&self) -> bool {
        match self.lo.cmp(&self.hi) {
            Ordering::Less => false,
            Ordering::Equal => !(self.lo_inc && self.hi_inc),
            Ordering::Greater => true,
        }
    }

    /// Lower ends in order: at equal bytes an inclusive end comes first.
    fn cmp_lo(&self, other: &Interval) -> Ordering {
        self.lo
            .cmp(&other.lo)
            .then_with(|| other.lo_inc.cmp(&self.lo_inc))
    }

    /// Upper ends in order: at equal bytes an exclusive end comes first.
    fn cmp_hi(&self, other: &Interval) -> Ordering {
        self.hi
            .cmp(&other.hi)
            .then_with(|| self.hi_inc.cmp(&other.hi_inc))
    }

    /// Whether `next` (starting no lower) overlaps or touches `self`.
    fn joins(&self, next: &Interval) -> bool {
        match next.lo.cmp(&self.hi) {
            Ordering::Less => true,
            Ordering::Equal => self.hi_inc || next.lo_inc,
            Ordering::Greater => false,
        }
    }
}

/// The values one field may take in one conjunction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FieldSet {
    /// Any value.
    All,
    /// Only values in these intervals: sorted, disjoint, non-empty each.
    /// No interval means no value.
    Values(Vec<Interval>),
}

impl FieldSet {
    /// The values allowed by both sets.
    pub(super) fn intersect(&self, other: &FieldSet) -> FieldSet {
        match (self, other) {
            (FieldSet::All, set) | (set, FieldSet::All) => set.clone(),
            (FieldSet::Values(a), FieldSet::Values(b)) => FieldSet::Values(intersect_lists(a, b)),
        }
    }

    /// Whether no value is allowed.
    pub(super) fn is_empty(&self) -> bool {
        matches!(self, FieldSet::Values(v) if v.is_empty())
    }

    /// The encoding of the only allowed value, if there is exactly one.
    pub(super) fn single_point(&self) -> Option<&[u8]> {
        match self {
            FieldSet::Values(v) => match v.as_slice() {
                [only] if only.is_point() => Some(&only.lo),
                _ => None,
            },
            FieldSet::All => None,
        }
    }

    /// A set from intervals in any order (sorted and merged here).
    fn from_intervals(mut list: Vec<Interval>) -> FieldSet {
        list.retain(|iv| !iv.is_empty());
        list.sort_by(Interval::cmp_lo);
        // `dedup_by` hands (later, earlier kept) pairs: fold into the kept.
        list.dedup_by(|next, last| {
            let joined = last.joins(next);
            if joined && next.cmp_hi(last) == Ordering::Greater {
                std::mem::swap(&mut last.hi, &mut next.hi);
                last.hi_inc = next.hi_inc;
            }
            joined
        });
        FieldSet::Values(list)
    }
}

/// The smallest single interval holding every interval of `list`.
pub(super) fn hull(list: &[Interval]) -> Option<Interval> {
    let lo = list.iter().min_by(|a, b| a.cmp_lo(b))?;
    let hi = list.iter().max_by(|a, b| a.cmp_hi(b))?;
    Some(Interval {
        lo: lo.lo.clone(),
        lo_inc: lo.lo_inc,
        hi: hi.hi.clone(),
        hi_inc: hi.hi_inc,
    })
}

fn intersect_lists(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        let lo = if x.cmp_lo(y) == Ordering::Less { y } else { x };
        let hi = if x.cmp_hi(y) == Ordering::Greater {
            y
        } else {
            x
        };
        let iv = Interval {
            lo: lo.lo.clone(),
            lo_inc: lo.lo_inc,
            hi: hi.hi.clone(),
            hi_inc: hi.hi_inc,
        };
        if !iv.is_empty() {
            out.push(iv);
        }
        if x.cmp_hi(y) == Ordering::Greater {
            j += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The encoding of `value` as a field of `kind` (hashed fields hash it).
pub(super) fn encode(value: &Bson, kind: KeyKind) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    match kind {
        KeyKind::Ascending => encode_value(value, false, &mut out),
        KeyKind::Descending => encode_value(value, true, &mut out),
        KeyKind::Hashed => encode_value(&Bson::Int64(hash_value(value)), false, &mut out),
    }
    out
}

/// Exactly the given values.
pub(super) fn points<'a>(values: impl IntoIterator<Item = &'a Bson>, kind: KeyKind) -> FieldSet {
    let list = values
        .into_iter()
        .map(|v| Interval::point(encode(v, kind)))
        .collect();
    FieldSet::from_intervals(list)
}

/// The values between `lo` and `hi` (with inclusivity flags), in BSON
/// order; a hashed field cannot be narrowed by a range.
fn range(lo: (&Bson, bool), hi: (&Bson, bool), kind: KeyKind) -> FieldSet {
    let (lo, hi) = match kind {
        KeyKind::Hashed => return FieldSet::All,
        KeyKind::Ascending => (lo, hi),
        // Inverted bytes reverse the order: the high value is the low end.
        KeyKind::Descending => (hi, lo),
    };
    FieldSet::from_intervals(vec![Interval {
        lo: encode(lo.0, kind),
        lo_inc: lo.1,
        hi: encode(hi.0, kind),
        hi_inc: hi.1,
    }])
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// The values `{f: {<op>: value}}` can match, within `value`'s type bracket.
pub(super) fn comparison(op: Cmp, value: &Bson, kind: KeyKind) -> FieldSet {
    if matches!(value, Bson::Null | Bson::Undefined) {
        // Comparisons with null match null and missing (and, on old
        // servers, undefined); take the whole null/undefined bracket.
        return range((&Bson::Undefined, true), (&Bson::Null, true), kind);
    }
    let Some(((lo, lo_inc), (hi, hi_inc))) = bracket(value) else {
        return FieldSet::All;
    };
    match op {
        Cmp::Gt => range((value, false), (&hi, hi_inc), kind),
        Cmp::Gte => range((value, true), (&hi, hi_inc), kind),
        Cmp::Lt => range((&lo, lo_inc), (value, false), kind),
        Cmp::Lte => range((&lo, lo_inc), (value, true), kind),
    }
}

type End = (Bson, bool);

/// The lowest and highest ends of the values a comparison with `value`
/// can match (MongoDB type bracketing), or `None` to leave the field
/// unconstrained.
fn bracket(value: &Bson) -> Option<(End, End)> {
    let incl = |lo: Bson, hi: Bson| Some(((lo, true), (hi, true)));
    let excl = |lo: Bson, hi: Bson| Some(((lo, true), (hi, false)));
    match value {
        // MinKey and MaxKey compare with everything.
        Bson::MinKey | Bson::MaxKey => incl(Bson::MinKey, Bson::MaxKey),
        // NaN sorts below every number, +Infinity above.
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
            incl(Bson::Double(f64::NAN), Bson::Double(f64::INFINITY))
        }
        Bson::String(_) | Bson::Symbol(_) => {
            excl(Bson::String(String::new()), Bson::Document(Document::new()))
        }
        Bson::Document(_) => excl(Bson::Document(Document::new()), Bson::Array(Vec::new())),
        Bson::Binary(_) => excl(
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: Vec::new(),
            }),
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
        ),
        Bson::ObjectId(_) => incl(
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            Bson::ObjectId(ObjectId::from_bytes([0xff; 12])),
        ),
        Bson::Boolean(_) => incl(Bson::Boolean(false), Bson::Boolean(true)),
        Bson::DateTime(_) => incl(
            Bson::DateTime(DateTime::from_millis(i64::MIN)),
            Bson::DateTime(DateTime::from_millis(i64::MAX)),
        ),
        Bson::Timestamp(_) => incl(
            Bson::Timestamp(Timestamp {
                time: 0,
                increment: 0,
            }),
            Bson::Timestamp(Timestamp {
                time: u32::MAX,
                increment: u32::MAX,
            }),
        ),
        // Arrays, regexes, code, DBPointers, null: not narrowed here.
        _ => None,
    }
}
