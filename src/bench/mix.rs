//! The operations, the weighted mix they are drawn from, and a small PRNG.

use std::fmt;
use std::str::FromStr;

/// One kind of operation a bench client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `find_one({key: k})` for an existing `k`: a targeted read.
    FindByKey,
    /// `find({cat: c}).sort({key: -1}).limit(20)`, read to the end.
    ScatterSortedFind,
    /// `insert_one` of one new document with a fresh key.
    Insert,
    /// `insert_many` of `--batch-size` new documents with fresh keys.
    InsertBatch,
    /// `update_one({key: k}, {$inc: {n: 1}})` for an existing `k`: a
    /// targeted write.
    Update,
    /// `find({}).sort({key: 1})`, the whole collection read to the end in
    /// batches: a sorted scatter scan on a router.
    SortedScan,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 6] = [
        Op::FindByKey,
        Op::ScatterSortedFind,
        Op::Insert,
        Op::InsertBatch,
        Op::Update,
        Op::SortedScan,
    ];

    /// The name used in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::FindByKey => "find_by_key",
            Op::ScatterSortedFind => "scatter_sorted_find",
            Op::Insert => "insert",
            Op::InsertBatch => "insert_batch",
            Op::Update => "update",
            Op::SortedScan => "sorted_scan",
        }
    }

    /// Position in [`Op::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Op {
    type Err = String;

    fn from_str(s: &str) -> Result<Op, String> {
        Op::ALL
            .into_iter()
            .find(|op| op.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
                format!("unknown operation {s:?} (known: {})", names.join(", "))
            })
    }
}

/// Relative weights of the operations, e.g. `find_by_key=70,insert=30`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 6],
}

impl Mix {
    /// A mix of one operation only.
    pub fn only(op: Op) -> Mix {
        let mut weights = [0; 6];
        weights[op.index()] = 1;
        Mix { weights }
    }

    /// The weight of `op` (0 when absent).
    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    /// The operations with a nonzero weight, in report order.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        Op::ALL.into_iter().filter(|op| self.weight(*op) > 0)
    }

    /// Draws an operation with probability proportional to its weight.
    pub fn pick(&self, rng: &mut Rng) -> Op {
        let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        let mut r = rng.below(total.max(1));
        for op in Op::ALL {
            let w = u64::from(self.weight(op));
            if r < w {
                return op;
            }
            r -= w;
        }
        Op::FindByKey
    }
}

impl FromStr for Mix {
    type Err = String;

    /// `name=weight` pairs separated by commas; a bare `name` weighs 1.
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut weights = [0u32; 6];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => {
                    let w = w
                        .trim()
                        .parse::<u32>()
                        .map_err(|e| format!("weight of {:?}: {e}", n.trim()))?;
                    (n.trim(), w)
                }
                None => (part, 1),
            };
            let op: Op = name.parse()?;
            weights[op.index()] = weights[op.index()].saturating_add(weight);
        }
        if weights.iter().all(|w| *w == 0) {
            return Err("the mix needs at least one operation with a nonzero weight".into());
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ops()
            .map(|op| format!("{op}={}", self.weight(op)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// clap value parser for `--mix`.
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    s.parse()
}

/// splitmix64: fast, seedable, good enough to pick keys and operations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is negligible here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_a_mix() {
        let mix: Mix = "find_by_key=70, scatter_sorted_find=10,insert=15,insert_batch=5"
            .parse()
            .unwrap();
        assert_eq!(mix.weight(Op::FindByKey), 70);
        assert_eq!(mix.weight(Op::InsertBatch), 5);
        assert_eq!(
            mix.to_string(),
            "find_by_key=70,scatter_sorted_find=10,insert=15,insert_batch=5"
        );
        assert_eq!("insert".parse::<Mix>().unwrap(), Mix::only(Op::Insert));
        assert!("nope=1".parse::<Mix>().is_err());
        assert!("insert=0".parse::<Mix>().is_err());
        assert!("insert=x".parse::<Mix>().is_err());
    }

    #[test]
    fn picks_by_weight() {
        let mix: Mix = "find_by_key=3,insert=1".parse().unwrap();
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 6];
        for _ in 0..40_000 {
            counts[mix.pick(&mut rng).index()] += 1;
        }
        assert_eq!(counts[Op::ScatterSortedFind.index()], 0);
        assert_eq!(counts[Op::InsertBatch.index()], 0);
        let share = f64::from(counts[Op::FindByKey.index()]) / 40_000.0;
        assert!((0.72..0.78).contains(&share), "{share}");
    }
}
