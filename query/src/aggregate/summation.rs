//! MongoDB's `$sum`/`$avg` arithmetic: a port of `DoubleDoubleSummation`
//! (compensated double-double addition that keeps 64-bit integer sums exact)
//! and of `AccumulatorSum`'s result typing.

use bson::Bson;

use crate::number::{as_num, Num};
use crate::QueryError;

/// A double-double running sum.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DoubleDouble {
    sum: f64,
    addend: f64,
    special: f64,
}

fn fast_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let z = s - a;
    (s, b - z)
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let a_prime = s - b;
    let b_prime = s - a_prime;
    (s, (a - a_prime) + (b - b_prime))
}

const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

impl DoubleDouble {
    /// Adds a double.
    pub(crate) fn add_double(&mut self, x: f64) {
        self.special += x;
        let (x, addend) = fast_two_sum(x, self.addend);
        self.addend = addend;
        let (sum, x) = two_sum(self.sum, x);
        self.sum = sum;
        self.addend += x;
    }

    /// Adds an i64 exactly (split into two doubles).
    pub(crate) fn add_long(&mut self, x: i64) {
        let high = x / (1i64 << 32) * (1i64 << 32);
        let low = x - high;
        // Both halves are exactly representable as doubles.
        #[allow(clippy::cast_precision_loss)]
        let (low, high) = (low as f64, high as f64);
        self.add_double(low);
        self.add_double(high);
    }

    /// Adds an int32 value (given widened), as a double like MongoDB's
    /// `addInt`.
    pub(crate) fn add_int(&mut self, x: i64) {
        // int32 values are exactly representable as doubles.
        #[allow(clippy::cast_precision_loss)]
        self.add_double(x as f64);
    }

    /// The double nearest the sum.
    pub(crate) fn get_double(&self) -> f64 {
        if self.sum.is_nan() {
            self.special
        } else {
            self.sum
        }
    }

    /// Whether the sum rounds to a value in i64 range.
    fn fits_long(&self) -> bool {
        if self.sum > -TWO_POW_63 && self.sum < TWO_POW_63 {
            return true;
        }
        if self.sum == TWO_POW_63 {
            return self.addend < -0.5;
        }
        if self.sum == -TWO_POW_63 {
            return self.addend >= -0.5;
        }
        false
    }

    /// The sum rounded to the nearest integer (halves away from zero), if
    /// it fits an i64.
    fn get_long(&self) -> Option<i64> {
        if !self.fits_long() {
            return None;
        }
        if self.sum == TWO_POW_63 {
            // llround(addend) - LLONG_MIN
            #[allow(clippy::cast_possible_truncation)]
            let a = self.addend.round() as i64;
            return a.checked_sub(i64::MIN);
        }
        #[allow(clippy::cast_possible_truncation)]
        let s = self.sum.round() as i64;
        #[allow(clippy::cast_precision_loss)]
        let rest = (self.sum - s as f64) + self.addend;
        #[allow(clippy::cast_possible_truncation)]
        let r = rest.round() as i64;
        s.checked_add(r)
    }
}

/// The widest numeric type seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Width {
    Int,
    Long,
    Double,
}

/// `$sum` state.
#[derive(Debug, Clone)]
pub(crate) enum SumState {
    /// `$sum` of a numeric constant: plain arithmetic with int → long →
    /// double promotion on overflow, as MongoDB's constant fast path does.
    ConstInt(i32),
    ConstLong(i64),
    ConstDouble(f64),
    /// `$sum` of an expression.
    General(Width, DoubleDouble),
}

impl SumState {
    /// The initial state for a `$sum` whose operand is `constant` (if it is
    /// a constant).
    pub(crate) fn new(constant: Option<&Bson>) -> SumState {
        match constant {
            Some(Bson::Int32(_)) => SumState::ConstInt(0),
            Some(Bson::Int64(_)) => SumState::ConstLong(0),
            Some(Bson::Double(_)) => SumState::ConstDouble(0.0),
            _ => SumState::General(Width::Int, DoubleDouble::default()),
        }
    }

    /// Adds one input; non-numbers are ignored.
    pub(crate) fn add(&mut self, v: Option<&Bson>) -> Result<(), QueryError> {
        let Some(n) = v.and_then(as_num) else {
            return Ok(());
        };
        match (&mut *self, n) {
            (SumState::ConstInt(t), Num::Int(x)) => {
                match i32::try_from(x).ok().and_then(|x| t.checked_add(x)) {
                    Some(s) => *t = s,
                    None => *self = SumState::ConstLong(i64::from(*t)).with_long(x),
                }
            }
            (SumState::ConstLong(t), Num::Int(x)) => {
                let t = *t;
                *self = SumState::ConstLong(t).with_long(x);
            }
            (SumState::ConstDouble(t), Num::Double(x)) => *t += x,
            (SumState::General(width, total), n) => match n {
                Num::Int(x) => {
                    if matches!(v, Some(Bson::Int64(_))) {
                        *width = (*width).max(Width::Long);
                        total.add_long(x);
                    } else {
                        total.add_int(x);
                    }
                }
                Num::Double(x) => {
                    *width = Width::Double;
                    total.add_double(x);
                }
                Num::Dec(_) => {
                    return Err(QueryError::not_implemented("$sum over Decimal128 values"))
                }
            },
            // Constant states only ever see their constant's type.
            _ => {}
        }
        Ok(())
    }

    fn with_long(self, x: i64) -> SumState {
        match self {
            SumState::ConstLong(t) => match t.checked_add(x) {
                Some(s) => SumState::ConstLong(s),
                #[allow(clippy::cast_precision_loss)]
                None => SumState::ConstDouble(t as f64 + x as f64),
            },
            other => other,
        }
    }

    /// The result.
    pub(crate) fn value(&self) -> Bson {
        match self {
            SumState::ConstInt(t) => Bson::Int32(*t),
            SumState::ConstLong(t) => Bson::Int64(*t),
            SumState::ConstDouble(t) => Bson::Double(*t),
            SumState::General(width, total) => match (width, total.get_long()) {
                (Width::Int, Some(l)) => match i32::try_from(l) {
                    Ok(i) => Bson::Int32(i),
                    Err(_) => Bson::Int64(l),
                },
                (Width::Long, Some(l)) => Bson::Int64(l),
                _ => Bson::Double(total.get_double()),
            },
        }
    }
}
