//! Exact comparison of BSON numbers across int32, int64, double and
//! Decimal128, as MongoDB's `compare_numbers.h` does.

use std::cmp::Ordering;

use bson::{Bson, Decimal128};

/// The largest canonical Decimal128 coefficient, 10^34 - 1.
const MAX_COEFFICIENT: u128 = 9_999_999_999_999_999_999_999_999_999_999_999;

/// A decoded Decimal128.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Dec {
    /// Any NaN (quiet or signalling, either sign).
    NaN,
    /// Infinity; `true` when negative.
    Inf(bool),
    /// `(-1)^neg * coeff * 10^exp`.
    Finite { neg: bool, coeff: u128, exp: i32 },
}

/// A BSON number, widened for comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    /// An int32 or int64.
    Int(i64),
    /// A double.
    Double(f64),
    /// A Decimal128.
    Dec(Dec),
}

/// The number held by `v`, if it is a number.
pub(crate) fn as_num(v: &Bson) -> Option<Num> {
    match v {
        Bson::Int32(i) => Some(Num::Int(i64::from(*i))),
        Bson::Int64(i) => Some(Num::Int(*i)),
        Bson::Double(d) => Some(Num::Double(*d)),
        Bson::Decimal128(d) => Some(Num::Dec(decode_decimal(d))),
        _ => None,
    }
}

/// Decodes the BID encoding of a Decimal128. Non-canonical coefficients
/// (larger than 10^34 - 1) read as zero, as the IEEE 754 standard says.
pub(crate) fn decode_decimal(d: &Decimal128) -> Dec {
    let b = d.bytes();
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    let low = u64::from_le_bytes(lo);
    let high = u64::from_le_bytes(hi);
    let neg = high >> 63 == 1;
    match (high >> 58) & 0x1f {
        0x1f => return Dec::NaN,
        0x1e => return Dec::Inf(neg),
        _ => {}
    }
    let (exp_bits, coeff) = if (high >> 61) & 0x3 == 0x3 {
        ((high >> 47) & 0x3fff, 0u128)
    } else {
        let c = (u128::from(high & 0x1_ffff_ffff_ffff) << 64) | u128::from(low);
        ((high >> 49) & 0x3fff, c)
    };
    let coeff = if coeff > MAX_COEFFICIENT { 0 } else { coeff };
    // exp_bits < 2^14, so it always fits an i32.
    let exp = i32::try_from(exp_bits).unwrap_or(0) - 6176;
    Dec::Finite { neg, coeff, exp }
}

impl Dec {
    /// Whether the value is a (signed) zero.
    pub(crate) fn is_zero(&self) -> bool {
        matches!(self, Dec::Finite { coeff: 0, .. })
    }

    /// The value truncated toward zero to an i64 (saturating); `None` for
    /// NaN and infinities.
    pub(crate) fn trunc_i64(&self) -> Option<i64> {
        let Dec::Finite { neg, coeff, exp } = *self else {
            return None;
        };
        let mut mag = coeff;
        if exp >= 0 {
            for _ in 0..exp {
                if mag == 0 || mag > u128::from(u64::MAX) {
                    break;
                }
                mag *= 10;
            }
        } else {
            for _ in 0..exp.unsigned_abs() {
                if mag == 0 {
                    break;
                }
                mag /= 10;
            }
        }
        let signed = i128::try_from(mag).unwrap_or(i128::MAX);
        let v = if neg { -signed } else { signed };
        Some(i64::try_from(v).unwrap_or(if neg { i64::MIN } else { i64::MAX }))
    }
}

/// A number truncated toward zero to an i64 (saturating); `None` for NaN
/// and infinities.
pub(crate) fn truncate(n: &Num) -> Option<i64> {
    match n {
        Num::Int(i) => Some(*i),
        Num::Double(d) if d.is_finite() => {
            // `as` saturates at the i64 bounds, as MongoDB's conversion does.
            #[allow(clippy::cast_possible_truncation)]
            let t = d.trunc() as i64;
            Some(t)
        }
        Num::Double(_) => None,
        Num::Dec(d) => d.trunc_i64(),
    }
}

fn sign_of(neg: bool, zero: bool) -> i8 {
    match (zero, neg) {
        (true, _) => 0,
        (false, true) => -1,
        (false, false) => 1,
    }
}

/// Compares two numbers by value. NaN equals NaN and is below every other
/// number; -0 equals 0.
pub(crate) fn compare_nums(a: &Num, b: &Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(y),
        (Num::Double(x), Num::Double(y)) => compare_doubles(*x, *y),
        (Num::Int(x), Num::Double(y)) => compare_long_double(*x, *y),
        (Num::Double(x), Num::Int(y)) => compare_long_double(*y, *x).reverse(),
        (Num::Dec(x), Num::Dec(y)) => compare_decs(x, y),
        (Num::Dec(x), Num::Int(y)) => compare_decs(x, &int_to_dec(*y)),
        (Num::Int(x), Num::Dec(y)) => compare_decs(&int_to_dec(*x), y),
        (Num::Dec(x), Num::Double(y)) => compare_dec_double(x, *y),
        (Num::Double(x), Num::Dec(y)) => compare_dec_double(y, *x).reverse(),
    }
}

fn int_to_dec(i: i64) -> Dec {
    Dec::Finite {
        neg: i < 0,
        coeff: u128::from(i.unsigned_abs()),
        exp: 0,
    }
}

fn compare_doubles(x: f64, y: f64) -> Ordering {
    match x.partial_cmp(&y) {
        Some(o) => o,
        None => match (x.is_nan(), y.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            _ => Ordering::Greater,
        },
    }
}

/// Exact comparison of an i64 with a double (port of `compareLongToDouble`).
fn compare_long_double(l: i64, d: f64) -> Ordering {
    if d.is_nan() {
        return Ordering::Greater;
    }
    const PRECISE: i64 = 1 << 53;
    if (-PRECISE..=PRECISE).contains(&l) {
        // |l| <= 2^53 converts to f64 exactly.
        #[allow(clippy::cast_precision_loss)]
        let lf = l as f64;
        return compare_doubles(lf, d);
    }
    const BOUND: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if d >= BOUND {
        return Ordering::Less;
    }
    if d < -BOUND {
        return Ordering::Greater;
    }
    // |d| > 2^53 here or l is far from d; in range, truncation is exact
    // enough: a fractional d cannot equal a large l.
    #[allow(clippy::cast_possible_truncation)]
    let t = d.trunc() as i64;
    match l.cmp(&t) {
        Ordering::Equal => compare_doubles(0.0, d - d.trunc()),
        o => o,
    }
}

fn digits(mut c: u128) -> i32 {
    let mut n = 1;
    while c >= 10 {
        c /= 10;
        n += 1;
    }
    n
}

fn compare_decs(a: &Dec, b: &Dec) -> Ordering {
    use Dec::*;
    match (a, b) {
        (NaN, NaN) => Ordering::Equal,
        (NaN, _) => Ordering::Less,
        (_, NaN) => Ordering::Greater,
        (Inf(x), Inf(y)) => y.cmp(x),
        (Inf(neg), _) => {
            if *neg {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (_, Inf(neg)) => {
            if *neg {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (
            Finite {
                neg: na,
                coeff: ca,
                exp: ea,
            },
            Finite {
                neg: nb,
                coeff: cb,
                exp: eb,
            },
        ) => {
            let (sa, sb) = (sign_of(*na, *ca == 0), sign_of(*nb, *cb == 0));
            if sa != sb || sa == 0 {
                return sa.cmp(&sb);
            }
            let mag = compare_magnitudes(*ca, *ea, *cb, *eb);
            if sa < 0 {
                mag.reverse()
            } else {
                mag
            }
        }
    }
}

/// Compares `ca * 10^ea` with `cb * 10^eb`, both coefficients non-zero.
fn compare_magnitudes(ca: u128, ea: i32, cb: u128, eb: i32) -> Ordering {
    let (da, db) = (digits(ca), digits(cb));
    match (ea + da).cmp(&(eb + db)) {
        Ordering::Equal => {}
        o => return o,
    }
    // Same adjusted exponent: scale the shorter coefficient (both have at
    // most 34 digits, so the scaled value stays below 10^34 < 2^128).
    let (mut xa, mut xb) = (ca, cb);
    for _ in da..db {
        xa *= 10;
    }
    for _ in db..da {
        xb *= 10;
    }
    xa.cmp(&xb)
}

/// Exact comparison of a Decimal128 with a double.
fn compare_dec_double(a: &Dec, d: f64) -> Ordering {
    if d.is_nan() {
        return if matches!(a, Dec::NaN) {
            Ordering::Equal
        } else {
            Ordering::Greater
        };
    }
    if d.is_infinite() {
        return compare_decs(a, &Dec::Inf(d < 0.0));
    }
    let Dec::Finite { neg, coeff, exp } = *a else {
        return compare_decs(
            a,
            &Dec::Finite {
                neg: false,
                coeff: 0,
                exp: 0,
            },
        );
    };
    let sa = sign_of(neg, coeff == 0);
    let sd = sign_of(d < 0.0, d == 0.0);
    if sa != sd || sa == 0 {
        return sa.cmp(&sd);
    }
    let mag = big::compare_dec_with_double(coeff, exp, d.abs());
    if sa < 0 {
        mag.reverse()
    } else {
        mag
    }
}

mod big;
