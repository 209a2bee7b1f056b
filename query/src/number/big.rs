//! Just enough arbitrary-precision arithmetic to compare a decimal with a
//! binary floating-point number exactly.

use std::cmp::Ordering;

struct Big(Vec<u32>);

impl Big {
    fn from_u128(mut v: u128) -> Big {
        let mut limbs = Vec::new();
        while v > 0 {
            limbs.push((v & 0xffff_ffff) as u32);
            v >>= 32;
        }
        Big(limbs)
    }

    fn mul_small(&mut self, m: u32) {
        let mut carry = 0u64;
        for limb in &mut self.0 {
            let p = u64::from(*limb) * u64::from(m) + carry;
            *limb = (p & 0xffff_ffff) as u32;
            carry = p >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    fn mul_pow10(&mut self, mut n: u32) {
        while n >= 9 {
            self.mul_small(1_000_000_000);
            n -= 9;
        }
        if n > 0 {
            self.mul_small(10u32.pow(n));
        }
    }

    fn mul_pow2(&mut self, n: u32) {
        let (words, bits) = ((n / 32) as usize, n % 32);
        if bits > 0 {
            self.mul_small(1 << bits);
        }
        if !self.0.is_empty() {
            let mut shifted = vec![0u32; words];
            shifted.append(&mut self.0);
            self.0 = shifted;
        }
    }

    fn cmp(&self, other: &Big) -> Ordering {
        let a = trimmed(&self.0);
        let b = trimmed(&other.0);
        a.len()
            .cmp(&b.len())
            .then_with(|| a.iter().rev().cmp(b.iter().rev()))
    }
}

fn trimmed(v: &[u32]) -> &[u32] {
    let mut end = v.len();
    while end > 0 && v[end - 1] == 0 {
        end -= 1;
    }
    &v[..end]
}

/// Compares `coeff * 10^exp` (coeff > 0) with the finite positive `x`.
pub(super) fn compare_dec_with_double(coeff: u128, exp: i32, x: f64) -> Ordering {
    // Rough magnitudes first: the decimal lies in [10^adj, 10^(adj+1)).
    let adj = exp + super::digits(coeff) - 1;
    #[allow(clippy::cast_possible_truncation)]
    let approx = x.log10().floor() as i32;
    if adj > approx + 1 {
        return Ordering::Greater;
    }
    if adj + 1 < approx {
        return Ordering::Less;
    }
    // x = m * 2^e exactly.
    let bits = x.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (m, e) = if raw_exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), raw_exp - 1075)
    };
    let mut left = Big::from_u128(coeff);
    let mut right = Big::from_u128(u128::from(m));
    if exp > 0 {
        left.mul_pow10(exp.unsigned_abs());
    } else {
        right.mul_pow10(exp.unsigned_abs());
    }
    if e < 0 {
        left.mul_pow2(e.unsigned_abs());
    } else {
        right.mul_pow2(e.unsigned_abs());
    }
    left.cmp(&right)
}
