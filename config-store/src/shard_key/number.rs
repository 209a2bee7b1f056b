//! Order-preserving encoding of BSON numbers, and the integer squashing the
//! hashed-index hash applies to them.
//!
//! MongoDB compares int32, int64, double and Decimal128 by exact value across
//! types. Every finite value of these types is a finite decimal fraction, so
//! each is reduced to one canonical form: a sign, a decimal exponent `E` and a
//! digit string `d1 d2 … dn` without leading or trailing zeros, meaning
//! `0.d1d2…dn × 10^E`. Equal values get equal bytes whatever their type.
//!
//! Layout (after the number type tag): one class byte, ordered
//! NaN < -Infinity < negative < zero < positive < +Infinity; for finite
//! non-zero values the exponent as a sign-flipped big-endian `i16`, then the
//! digits two per byte (`10*hi + lo + 1`, so 1..=100) and a `0x00`
//! terminator. Negative values invert every byte after the class byte.

use bson::Decimal128;

const NAN: u8 = 0x01;
const NEG_INFINITY: u8 = 0x02;
const NEGATIVE: u8 = 0x03;
const ZERO: u8 = 0x04;
const POSITIVE: u8 = 0x05;
const POS_INFINITY: u8 = 0x06;

/// Largest canonical Decimal128 coefficient (34 nines).
const MAX_COEFFICIENT: u128 = 9_999_999_999_999_999_999_999_999_999_999_999;
/// Decimal128 exponent bias.
const DECIMAL_BIAS: i32 = 6176;
/// 2^63 as a double: the first double that does not fit an `i64`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Encodes an integer (int32 or int64).
pub(crate) fn encode_i64(value: i64, out: &mut Vec<u8>) {
    if value == 0 {
        out.push(ZERO);
        return;
    }
    emit_u64(value < 0, value.unsigned_abs(), 0, out);
}

/// Encodes a double exactly (its full binary value, not a rounded decimal).
pub(crate) fn encode_f64(value: f64, out: &mut Vec<u8>) {
    if value.is_nan() {
        out.push(NAN);
        return;
    }
    if value.is_infinite() {
        out.push(if value > 0.0 {
            POS_INFINITY
        } else {
            NEG_INFINITY
        });
        return;
    }
    if value == 0.0 {
        out.push(ZERO);
        return;
    }
    let bits = value.to_bits();
    let negative = bits >> 63 == 1;
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mut mantissa, mut exp2) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased - 1075)
    };
    let zeros = mantissa.trailing_zeros();
    mantissa >>= zeros;
    exp2 += zeros as i32;
    // value = mantissa × 2^exp2 with mantissa odd and < 2^53.
    if (0..=75).contains(&exp2) {
        emit_u128(negative, u128::from(mantissa) << exp2, 0, out);
    } else if (-27..0).contains(&exp2) {
        // m × 2^-p = m × 5^p × 10^-p, and m × 5^27 < 2^116.
        let scaled = u128::from(mantissa) * 5u128.pow(exp2.unsigned_abs());
        emit_u128(negative, scaled, exp2, out);
    } else {
        let mut big = BigDecimal::from_u64(mantissa);
        let digits = if exp2 > 0 {
            big.mul_pow(2, exp2.unsigned_abs());
            big.digits()
        } else {
            big.mul_pow(5, exp2.unsigned_abs());
            big.digits()
        };
        emit_finite(negative, &digits, exp2.min(0), out);
    }
}

/// Encodes a Decimal128 (IEEE 754-2008 BID), treating every NaN alike,
/// both zeros alike and non-canonical coefficients as zero.
pub(crate) fn encode_decimal(value: &Decimal128, out: &mut Vec<u8>) {
    match decode_decimal(value) {
        DecimalParts::NaN => out.push(NAN),
        DecimalParts::Infinity { negative: true } => out.push(NEG_INFINITY),
        DecimalParts::Infinity { negative: false } => out.push(POS_INFINITY),
        DecimalParts::Finite { coefficient: 0, .. } => out.push(ZERO),
        DecimalParts::Finite {
            negative,
            coefficient,
            exponent,
        } => emit_u128(negative, coefficient, exponent, out),
    }
}

/// A decoded Decimal128: `(-1)^negative × coefficient × 10^exponent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecimalParts {
    NaN,
    Infinity {
        negative: bool,
    },
    Finite {
        negative: bool,
        coefficient: u128,
        exponent: i32,
    },
}

/// Decodes the BID encoding of `value` (bytes are little-endian).
pub(crate) fn decode_decimal(value: &Decimal128) -> DecimalParts {
    let bits = u128::from_le_bytes(value.bytes());
    let negative = bits >> 127 == 1;
    let combination = (bits >> 122) & 0x1f;
    if combination == 0x1f {
        return DecimalParts::NaN;
    }
    if combination == 0x1e {
        return DecimalParts::Infinity { negative };
    }
    let (biased, coefficient) = if (bits >> 125) & 0b11 == 0b11 {
        // "11" form: the implied coefficient prefix 0b100 makes it >= 2^113,
        // which exceeds 10^34 - 1, so it is non-canonical and reads as zero.
        ((bits >> 111) & 0x3fff, 0)
    } else {
        let coefficient = bits & ((1u128 << 113) - 1);
        let coefficient = if coefficient > MAX_COEFFICIENT {
            0
        } else {
            coefficient
        };
        ((bits >> 113) & 0x3fff, coefficient)
    };
    DecimalParts::Finite {
        negative,
        coefficient,
        exponent: biased as i32 - DECIMAL_BIAS,
    }
}

/// `BSONElement::safeNumberLongForHash` for a double: NaN is 0, 2^63 wraps
/// to `i64::MIN` (historic behaviour kept by the server), larger values
/// saturate, and everything else truncates toward zero.
pub(crate) fn f64_to_long_for_hash(value: f64) -> i64 {
    if value.is_nan() {
        0
    } else if value == TWO_POW_63 {
        i64::MIN
    } else if value >= TWO_POW_63 {
        i64::MAX
    } else if value < -TWO_POW_63 {
        i64::MIN
    } else {
        value as i64
    }
}

/// `safeNumberLongForHash` for a Decimal128: NaN is 0, out-of-range values
/// saturate, and everything else rounds half to even (`Decimal128::toLong`).
pub(crate) fn decimal_to_long_for_hash(value: &Decimal128) -> i64 {
    let (negative, magnitude) = match decode_decimal(value) {
        DecimalParts::NaN => return 0,
        DecimalParts::Infinity { negative } => return if negative { i64::MIN } else { i64::MAX },
        DecimalParts::Finite {
            negative,
            coefficient,
            exponent,
        } => (negative, round_half_even(coefficient, exponent)),
    };
    match (negative, magnitude) {
        (false, Some(m)) if m <= i64::MAX as u128 => m as i64,
        (false, _) => i64::MAX,
        (true, Some(m)) if m <= i64::MIN.unsigned_abs() as u128 => {
            (m as i128).wrapping_neg() as i64
        }
        (true, _) => i64::MIN,
    }
}

/// `coefficient × 10^exponent` rounded half to even; `None` if it exceeds `u128`.
fn round_half_even(coefficient: u128, exponent: i32) -> Option<u128> {
    if coefficient == 0 {
        return Some(0);
    }
    if exponent >= 0 {
        let scale = 10u128.checked_pow(exponent.unsigned_abs())?;
        return coefficient.checked_mul(scale);
    }
    let Some(divisor) = 10u128.checked_pow(exponent.unsigned_abs()) else {
        // 10^39 and beyond: the coefficient (< 10^34) is under half of it.
        return Some(0);
    };
    let quotient = coefficient / divisor;
    let remainder = coefficient % divisor;
    let half = divisor / 2;
    let round_up = remainder > half || (remainder == half && quotient % 2 == 1);
    Some(quotient + u128::from(round_up))
}

/// Writes the decimal digits of `value` (> 0) into the tail of `buf`,
/// 19 digits at a time so that the loop runs on `u64` (`u128` division is
/// a slow library call).
fn u128_digits(value: u128, buf: &mut [u8; 40]) -> &[u8] {
    const TEN_POW_19: u128 = 10_000_000_000_000_000_000;
    let mut start = buf.len();
    let mut rest = value;
    while rest > 0 {
        let (next, mut chunk, full) = if rest >= TEN_POW_19 {
            (rest / TEN_POW_19, (rest % TEN_POW_19) as u64, true)
        } else {
            (0, rest as u64, false)
        };
        let mut written = 0;
        while (chunk > 0 || (full && written < 19)) && start > 0 {
            start -= 1;
            if let Some(slot) = buf.get_mut(start) {
                *slot = (chunk % 10) as u8;
            }
            chunk /= 10;
            written += 1;
        }
        rest = next;
    }
    buf.get(start..).unwrap_or_default()
}

/// Emits the canonical form of `±n × 10^k` (`n > 0`): [`emit_u64`] when
/// `n` fits 64 bits, else through its decimal digits.
fn emit_u128(negative: bool, n: u128, k: i32, out: &mut Vec<u8>) {
    match u64::try_from(n) {
        Ok(small) => emit_u64(negative, small, k, out),
        Err(_) => {
            let mut buf = [0u8; 40];
            emit_finite(negative, u128_digits(n, &mut buf), k, out);
        }
    }
}

/// [`emit_finite`] for `±n × 10^k` with `n > 0` a `u64`, without a digit
/// buffer: trailing zeros divided away, then the digit pairs (each byte
/// `10*hi + lo + 1`) read off two at a time with `% 100` (a lone last
/// digit has `lo = 0`), back to front into a stack buffer, in groups of
/// eight digits. Same bytes as `emit_finite`.
fn emit_u64(negative: bool, mut n: u64, k: i32, out: &mut Vec<u8>) {
    let digits = n.ilog10() + 1;
    let exponent = (digits as i32).saturating_add(k);
    let mut significant = digits;
    while n.is_multiple_of(10) {
        n /= 10;
        significant -= 1;
    }
    // Exponent (2), at most 10 pairs, terminator.
    let mut buf = [0u8; 13];
    let mut at = buf.len() - 1;
    if significant % 2 == 1 {
        at -= 1;
        buf[at] = (n % 10) as u8 * 10 + 1;
        n /= 10;
    }
    // Eight digits at a time in 32-bit arithmetic: a full group is four
    // pairs (inner zero pairs included), the highest group stops at its
    // last non-zero pair.
    while n >= 100_000_000 {
        let group = (n % 100_000_000) as u32;
        n /= 100_000_000;
        let (high, low) = (group / 10_000, group % 10_000);
        let pairs = [high / 100, high % 100, low / 100, low % 100].map(|p| p as u8 + 1);
        at -= 4;
        buf[at..at + 4].copy_from_slice(&pairs);
    }
    let mut group = n as u32;
    while group > 0 {
        at -= 1;
        buf[at] = (group % 100) as u8 + 1;
        group /= 100;
    }
    let exponent = exponent.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    at -= 2;
    buf[at..at + 2].copy_from_slice(&((exponent as u16) ^ 0x8000).to_be_bytes());
    let body = &mut buf[at..];
    if negative {
        for byte in body.iter_mut() {
            *byte = !*byte;
        }
    }
    out.push(if negative { NEGATIVE } else { POSITIVE });
    out.extend_from_slice(body);
}

/// Emits the canonical form of `±N × 10^k`, where `digits` are the digits of
/// the integer `N > 0` (no leading zeros; trailing zeros allowed).
fn emit_finite(negative: bool, digits: &[u8], k: i32, out: &mut Vec<u8>) {
    let exponent = (digits.len() as i32).saturating_add(k);
    let significant = digits.len() - digits.iter().rev().take_while(|&&d| d == 0).count();
    let digits = digits.get(..significant).unwrap_or_default();
    out.push(if negative { NEGATIVE } else { POSITIVE });
    let start = out.len();
    let exponent = exponent.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    out.extend_from_slice(&((exponent as u16) ^ 0x8000).to_be_bytes());
    for pair in digits.chunks(2) {
        match *pair {
            [hi, lo] => out.push(hi * 10 + lo + 1),
            [hi] => out.push(hi * 10 + 1),
            _ => {}
        }
    }
    out.push(0);
    if negative {
        for byte in out.iter_mut().skip(start) {
            *byte = !*byte;
        }
    }
}

/// A non-negative big integer in base 10^9 limbs, least significant first;
/// just enough arithmetic to expand a double exactly.
struct BigDecimal(Vec<u32>);

impl BigDecimal {
    const BASE: u64 = 1_000_000_000;

    fn from_u64(mut value: u64) -> Self {
        let mut limbs = Vec::with_capacity(96);
        while value > 0 {
            limbs.push((value % Self::BASE) as u32);
            value /= Self::BASE;
        }
        BigDecimal(limbs)
    }

    /// Multiplies by `base^exp` (`base` is 2 or 5) in word-sized batches.
    fn mul_pow(&mut self, base: u32, mut exp: u32) {
        let batch = if base == 2 { 31 } else { 13 };
        while exp > 0 {
            let step = exp.min(batch);
            self.mul_small(base.pow(step));
            exp -= step;
        }
    }

    fn mul_small(&mut self, factor: u32) {
        let mut carry = 0u64;
        for limb in &mut self.0 {
            let product = u64::from(*limb) * u64::from(factor) + carry;
            *limb = (product % Self::BASE) as u32;
            carry = product / Self::BASE;
        }
        while carry > 0 {
            self.0.push((carry % Self::BASE) as u32);
            carry /= Self::BASE;
        }
    }

    /// Decimal digits, most significant first, without leading zeros.
    fn digits(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 9);
        let mut limbs = self.0.iter().rev();
        if let Some(&top) = limbs.next() {
            let mut buf = [0u8; 40];
            out.extend_from_slice(u128_digits(u128::from(top), &mut buf));
        }
        for &limb in limbs {
            let mut divisor = 100_000_000;
            while divisor > 0 {
                out.push(((limb / divisor) % 10) as u8);
                divisor /= 10;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The digit-buffer path every number took before [`emit_u64`].
    fn through_digits(negative: bool, n: u64, k: i32) -> Vec<u8> {
        let mut buf = [0u8; 40];
        let mut out = Vec::new();
        emit_finite(negative, u128_digits(u128::from(n), &mut buf), k, &mut out);
        out
    }

    fn direct(negative: bool, n: u64, k: i32) -> Vec<u8> {
        let mut out = Vec::new();
        emit_u64(negative, n, k, &mut out);
        out
    }

    #[test]
    fn edge_integers_emit_as_through_digits() {
        let ns = [
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            120,
            1_000_000,
            100_000_001,
            10_000_000_000_000_001,
            123_000_000_000_000_007,
            u64::MAX,
            1 << 63,
        ];
        for n in ns.into_iter().chain((1..=19).map(|p| 10u64.pow(p) - 1)) {
            for k in [0, -1, -27, 5, i32::from(i16::MAX), i32::MIN, i32::MAX] {
                for negative in [false, true] {
                    assert_eq!(
                        direct(negative, n, k),
                        through_digits(negative, n, k),
                        "{n} {k}"
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn integers_emit_as_through_digits(
            n in 1u64..,
            zeros in 0u32..6,
            k in -400i32..400,
            negative in any::<bool>(),
        ) {
            let n = n.checked_mul(10u64.pow(zeros)).unwrap_or(n);
            prop_assert_eq!(direct(negative, n, k), through_digits(negative, n, k));
        }
    }
}
