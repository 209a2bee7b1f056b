//! The balancer's decisions, as pure functions over a snapshot of
//! one collection: which chunks to split at zone boundaries, and which
//! chunks to move where. The service's rounds (under the lease lock) carry
//! the decisions out with the migration protocol.
//!
//! A round decides, in order:
//! 1. [`zone_splits`]: chunks that cross a zone boundary are split there;
//! 2. [`moves`]: chunks inside a zone but on a shard outside it move to the
//!    least loaded shard of the zone; chunks on draining shards move to the
//!    least loaded shard allowed to hold them; then, within each zone (and
//!    among all shards for chunks outside every zone), chunks move from the
//!    fullest to the emptiest shard while the difference in data size
//!    exceeds the threshold, which is three times the chunk size, as on
//!    MongoDB 6.0+. At most one move per shard per round; jumbo chunks
//!    never move for balance.

use std::collections::{BTreeMap, BTreeSet};

use shardgate_config_store::shard_key::KeyBytes;

/// A shard as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Its id.
    pub id: String,
    /// Its zones.
    pub zones: BTreeSet<String>,
    /// Being removed: every chunk must leave.
    pub draining: bool,
}

/// A chunk with its estimated data size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Inclusive lower bound (encoded).
    pub min: KeyBytes,
    /// Exclusive upper bound (encoded).
    pub max: KeyBytes,
    /// Owner.
    pub shard: String,
    /// Estimated bytes.
    pub bytes: u64,
    /// Too big and cannot be split.
    pub jumbo: bool,
}

/// A zone range (encoded bounds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneRange {
    /// Inclusive lower bound.
    pub min: KeyBytes,
    /// Exclusive upper bound.
    pub max: KeyBytes,
    /// The zone.
    pub zone: String,
}

/// Why a chunk moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It lies in a zone its shard is not in.
    Zone,
    /// Its shard is draining.
    Drain,
    /// Its shard holds more data than the threshold allows.
    Balance,
}

/// One move decided for a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// Index into the chunks given.
    pub chunk: usize,
    /// Destination shard.
    pub to: String,
    /// Why.
    pub reason: Reason,
}

/// Split points: for each chunk crossing a zone boundary, the boundaries
/// strictly inside it, as `(chunk index, encoded bound)`.
pub fn zone_splits(chunks: &[Chunk], zones: &[ZoneRange]) -> Vec<(usize, KeyBytes)> {
    let mut bounds: BTreeSet<&KeyBytes> = BTreeSet::new();
    for z in zones {
        bounds.insert(&z.min);
        bounds.insert(&z.max);
    }
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        for b in bounds.range::<KeyBytes, _>((
            std::ops::Bound::Excluded(&c.min),
            std::ops::Bound::Excluded(&c.max),
        )) {
            out.push((i, (*b).clone()));
        }
    }
    out
}

/// The zone holding the whole chunk, if any (after [`zone_splits`], a chunk
/// is inside one zone range or outside all of them).
pub fn zone_of<'a>(chunk: &Chunk, zones: &'a [ZoneRange]) -> Option<&'a str> {
    zones
        .iter()
        .find(|z| z.min <= chunk.min && chunk.max <= z.max)
        .map(|z| z.zone.as_str())
}

/// The moves of one round. `threshold` is the data-size difference (bytes)
/// between the fullest and the emptiest shard of a group that triggers a
/// balancing move.
pub fn moves(shards: &[Shard], chunks: &[Chunk], zones: &[ZoneRange], threshold: u64) -> Vec<Move> {
    let mut busy: BTreeSet<String> = BTreeSet::new();
    let mut out = forced_moves(shards, chunks, zones, &mut busy);
    // Balance within each group of shards that may hold a zone's chunks.
    let mut groups: BTreeSet<Option<&str>> = chunks.iter().map(|c| zone_of(c, zones)).collect();
    groups.insert(None);
    for zone in groups {
        let group = Group {
            shards,
            chunks,
            zones,
            zone,
        };
        out.extend(group.balance(threshold, &mut busy));
    }
    out
}

/// The auto-merger's merges: maximal runs (as index ranges, inclusive) of
/// two or more contiguous chunks on one shard whose data together stays
/// within `chunk_size`, so a merged chunk is never one the next round
/// splits again. Jumbo chunks are left alone.
pub fn merges(chunks: &[Chunk], chunk_size: u64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chunks.len() {
        let mut total = chunks[i].bytes;
        let mut j = i;
        while j + 1 < chunks.len() {
            let next = &chunks[j + 1];
            let joins = next.shard == chunks[i].shard
                && next.min == chunks[j].max
                && !next.jumbo
                && !chunks[i].jumbo
                && total + next.bytes <= chunk_size;
            if !joins {
                break;
            }
            total += next.bytes;
            j += 1;
        }
        if j > i {
            out.push((i, j));
        }
        i = j + 1;
    }
    out
}

/// Defragmentation's second phase, one step: the first chunk smaller than a
/// quarter of the chunk size that has a contiguous neighbour on another
/// shard, in the same zone, with which it stays within the chunk size —
/// `(small, neighbour)`, the smaller neighbour when both qualify. The small
/// chunk moves to the neighbour's shard and the two merge. `None` when no
/// chunk qualifies (the phase is over). Jumbo chunks are left alone.
pub fn defragment_step(
    chunks: &[Chunk],
    zones: &[ZoneRange],
    chunk_size: u64,
) -> Option<(usize, usize)> {
    let fits = |i: usize, j: usize| {
        let (a, b) = (&chunks[i], &chunks[j]);
        !b.jumbo
            && a.shard != b.shard
            && (a.max == b.min || b.max == a.min)
            && zone_of(a, zones) == zone_of(b, zones)
            && a.bytes + b.bytes <= chunk_size
    };
    (0..chunks.len()).find_map(|i| {
        let c = &chunks[i];
        if c.jumbo || c.bytes >= chunk_size / 4 {
            return None;
        }
        let before = i.checked_sub(1).filter(|&j| fits(i, j));
        let after = Some(i + 1).filter(|&j| j < chunks.len() && fits(i, j));
        let best = match (before, after) {
            (Some(b), Some(a)) if chunks[a].bytes < chunks[b].bytes => Some(a),
            (Some(b), _) => Some(b),
            (None, a) => a,
        };
        best.map(|j| (i, j))
    })
}

/// Whether `s` may hold a chunk of `zone`.
fn allowed(s: &Shard, zone: Option<&str>) -> bool {
    !s.draining && zone.is_none_or(|z| s.zones.contains(z))
}

/// Zone violations and chunks on draining shards: each goes to the
/// emptiest shard it may be on.
fn forced_moves(
    shards: &[Shard],
    chunks: &[Chunk],
    zones: &[ZoneRange],
    busy: &mut BTreeSet<String>,
) -> Vec<Move> {
    let mut out = Vec::new();
    // Data per shard, updated as moves are decided.
    let mut load: BTreeMap<&str, u64> = shards.iter().map(|s| (s.id.as_str(), 0)).collect();
    for c in chunks {
        *load.entry(c.shard.as_str()).or_default() += c.bytes;
    }
    for (i, c) in chunks.iter().enumerate() {
        if busy.contains(&c.shard) {
            continue;
        }
        let zone = zone_of(c, zones);
        let Some(owner) = shards.iter().find(|s| s.id == c.shard) else {
            continue;
        };
        let reason = if owner.draining {
            Reason::Drain
        } else if zone.is_some_and(|z| !owner.zones.contains(z)) {
            Reason::Zone
        } else {
            continue;
        };
        let emptiest = shards
            .iter()
            .filter(|s| allowed(s, zone) && !busy.contains(&s.id))
            .min_by_key(|s| (load.get(s.id.as_str()).copied().unwrap_or(0), s.id.clone()));
        let Some(to) = emptiest.map(|s| s.id.clone()) else {
            continue;
        };
        *load.entry(c.shard.as_str()).or_default() -= c.bytes;
        if let Some(l) = load.get_mut(to.as_str()) {
            *l += c.bytes;
        }
        busy.insert(c.shard.clone());
        busy.insert(to.clone());
        out.push(Move {
            chunk: i,
            to,
            reason,
        });
    }
    out
}

/// The chunks of one zone (or of no zone) and the shards that may hold them.
struct Group<'a> {
    shards: &'a [Shard],
    chunks: &'a [Chunk],
    zones: &'a [ZoneRange],
    zone: Option<&'a str>,
}

impl Group<'_> {
    /// Moves from the fullest free member to the emptiest while their gap
    /// exceeds `threshold`.
    fn balance(&self, threshold: u64, busy: &mut BTreeSet<String>) -> Vec<Move> {
        let mut out = Vec::new();
        let members: Vec<&Shard> = self
            .shards
            .iter()
            .filter(|s| allowed(s, self.zone))
            .collect();
        if members.len() < 2 {
            return out;
        }
        // Data of this group's chunks per member shard.
        let mut data: BTreeMap<&str, u64> = members.iter().map(|s| (s.id.as_str(), 0)).collect();
        for c in self.chunks.iter().filter(|c| self.holds(c)) {
            if let Some(d) = data.get_mut(c.shard.as_str()) {
                *d += c.bytes;
            }
        }
        loop {
            let free: Vec<(&str, u64)> = data
                .iter()
                .filter(|(s, _)| !busy.contains(**s))
                .map(|(s, d)| (*s, *d))
                .collect();
            let (Some(&(full, full_bytes)), Some(&(empty, empty_bytes))) = (
                free.iter().max_by_key(|(s, d)| (*d, std::cmp::Reverse(*s))),
                free.iter().min_by_key(|(s, d)| (*d, *s)),
            ) else {
                break;
            };
            let gap = full_bytes - empty_bytes;
            if full == empty || gap <= threshold {
                break;
            }
            // The largest chunk that does not overshoot: moving it narrows
            // the gap.
            let pick = self
                .chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| c.shard == full && !c.jumbo && self.holds(c))
                .filter(|(_, c)| c.bytes > 0 && c.bytes < gap)
                .max_by_key(|(_, c)| c.bytes);
            let Some((i, c)) = pick else { break };
            let (full, empty) = (full.to_owned(), empty.to_owned());
            *data.get_mut(full.as_str()).expect("member") -= c.bytes;
            *data.get_mut(empty.as_str()).expect("member") += c.bytes;
            busy.insert(full);
            busy.insert(empty.clone());
            out.push(Move {
                chunk: i,
                to: empty,
                reason: Reason::Balance,
            });
        }
        out
    }

    fn holds(&self, c: &Chunk) -> bool {
        zone_of(c, self.zones) == self.zone
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn defragmentation_moves_small_chunks_to_their_smaller_neighbour() {
        let chunk = |min: u8, max: u8, shard: &str, bytes: u64| Chunk {
            min: KeyBytes::from(vec![min]),
            max: KeyBytes::from(vec![max]),
            shard: shard.into(),
            bytes,
            jumbo: false,
        };
        let size = 100;
        // [0,1) s0 10 · [1,2) s1 50 · [2,3) s0 5: the first small chunk
        // (10 < 25) joins its only neighbour, on s1.
        let chunks = vec![
            chunk(0, 1, "s0", 10),
            chunk(1, 2, "s1", 50),
            chunk(2, 3, "s0", 5),
        ];
        assert_eq!(defragment_step(&chunks, &[], size), Some((0, 1)));
        // Both neighbours fit: the smaller one.
        let chunks = vec![
            chunk(0, 1, "s0", 30),
            chunk(1, 2, "s1", 10),
            chunk(2, 3, "s2", 20),
        ];
        assert_eq!(defragment_step(&chunks, &[], size), Some((1, 2)));
        // Too big together, or big enough already: nothing.
        let chunks = vec![chunk(0, 1, "s0", 20), chunk(1, 2, "s1", 90)];
        assert_eq!(defragment_step(&chunks, &[], size), None);
        // A zone boundary between them: nothing.
        let zones = vec![ZoneRange {
            min: KeyBytes::from(vec![1]),
            max: KeyBytes::from(vec![2]),
            zone: "z".into(),
        }];
        let chunks = vec![chunk(0, 1, "s0", 1), chunk(1, 2, "s1", 1)];
        assert_eq!(defragment_step(&chunks, &zones, size), None);
    }

    use super::*;

    fn k(n: u8) -> KeyBytes {
        KeyBytes::from(vec![n])
    }

    fn shard(id: &str, zones: &[&str]) -> Shard {
        Shard {
            id: id.into(),
            zones: zones.iter().map(|z| (*z).to_owned()).collect(),
            draining: false,
        }
    }

    fn chunk(min: u8, max: u8, shard: &str, bytes: u64) -> Chunk {
        Chunk {
            min: k(min),
            max: k(max),
            shard: shard.into(),
            bytes,
            jumbo: false,
        }
    }

    #[test]
    fn chunks_are_split_at_zone_boundaries() {
        let chunks = vec![chunk(0, 100, "a", 0), chunk(100, 255, "a", 0)];
        let zones = vec![ZoneRange {
            min: k(50),
            max: k(150),
            zone: "z".into(),
        }];
        assert_eq!(zone_splits(&chunks, &zones), vec![(0, k(50)), (1, k(150))]);
    }

    #[test]
    fn zone_and_drain_moves_come_first_one_per_shard() {
        let mut shards = vec![shard("a", &[]), shard("b", &["z"]), shard("c", &[])];
        shards[2].draining = true;
        let chunks = vec![
            chunk(0, 10, "a", 5),  // in zone z, on a: must go to b
            chunk(10, 20, "a", 5), // also in z, but a and b are busy now
            chunk(30, 40, "c", 5), // on draining c: to the emptiest allowed
        ];
        let zones = vec![ZoneRange {
            min: k(0),
            max: k(20),
            zone: "z".into(),
        }];
        let m = moves(&shards, &chunks, &zones, 1_000);
        assert_eq!(
            m,
            vec![Move {
                chunk: 0,
                to: "b".into(),
                reason: Reason::Zone
            },]
        );
        // The draining shard's chunk waits for a free destination (a and b
        // are busy); in the next round it goes.
        let chunks = vec![
            chunk(0, 10, "b", 5),
            chunk(10, 20, "b", 5),
            chunk(30, 40, "c", 5),
        ];
        let m = moves(&shards, &chunks, &zones, 1_000);
        assert_eq!(
            m,
            vec![Move {
                chunk: 2,
                to: "a".into(),
                reason: Reason::Drain
            }]
        );
    }

    #[test]
    fn balancing_stops_within_the_threshold() {
        let shards = vec![shard("a", &[]), shard("b", &[]), shard("c", &[])];
        let chunks: Vec<Chunk> = (0..9)
            .map(|i| chunk(i * 10, i * 10 + 10, "a", 10))
            .collect();
        let m = moves(&shards, &chunks, &[], 15);
        // a→b first (a, b busy), then c is free but has no partner.
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].to, "b");
        // Simulate rounds until nothing moves; the result is within 15.
        let mut chunks = chunks;
        for _ in 0..20 {
            let m = moves(&shards, &chunks, &[], 15);
            if m.is_empty() {
                break;
            }
            for mv in m {
                chunks[mv.chunk].shard = mv.to;
            }
        }
        let per: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|s| {
                chunks
                    .iter()
                    .filter(|c| c.shard == *s)
                    .map(|c| c.bytes)
                    .sum()
            })
            .collect();
        let (max, min) = (per.iter().max().unwrap(), per.iter().min().unwrap());
        assert!(max - min <= 15, "{per:?}");
    }

    #[test]
    fn jumbo_chunks_stay() {
        let shards = vec![shard("a", &[]), shard("b", &[])];
        let mut chunks = vec![chunk(0, 10, "a", 100)];
        chunks[0].jumbo = true;
        assert!(moves(&shards, &chunks, &[], 10).is_empty());
    }

    #[test]
    fn the_auto_merger_joins_contiguous_runs_on_one_shard_within_the_chunk_size() {
        let mut chunks = vec![
            chunk(0, 10, "a", 10),
            chunk(10, 20, "a", 10),
            chunk(20, 30, "a", 10),
            chunk(30, 40, "b", 10),
            chunk(40, 50, "a", 10),
            chunk(50, 60, "a", 50),
            chunk(60, 70, "a", 10),
            chunk(70, 80, "a", 10),
            chunk(80, 90, "c", 1),
            chunk(90, 100, "c", 1),
        ];
        // Runs stop at another shard and at the chunk size (50).
        assert_eq!(merges(&chunks, 50), [(0, 2), (6, 7), (8, 9)]);
        assert_eq!(merges(&chunks, 15), [(8, 9)]);
        // And at a jumbo chunk.
        chunks[9].jumbo = true;
        assert_eq!(merges(&chunks, 50), [(0, 2), (6, 7)]);
    }
}
