//! Read preferences, as the drivers' server-selection specification
//! defines them: the mode, tag sets and `maxStalenessSeconds` a client sent
//! in `$readPreference`, and the choice of a member among those eligible
//! (fresh enough, tags matching, within the latency window of the nearest).
//! Pure.

use std::time::Duration;

use bson::{Bson, Document, RawDocument};

use super::{MemberState, Role};

/// A read preference mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Primary,
    PrimaryPreferred,
    Secondary,
    SecondaryPreferred,
    Nearest,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Primary => "primary",
            Mode::PrimaryPreferred => "primaryPreferred",
            Mode::Secondary => "secondary",
            Mode::SecondaryPreferred => "secondaryPreferred",
            Mode::Nearest => "nearest",
        }
    }
}

/// A client's `$readPreference`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReadPreference {
    pub mode: Mode,
    pub tag_sets: Vec<Document>,
    pub max_staleness: Option<Duration>,
}

impl ReadPreference {
    /// The `$readPreference` of a command body, if it has a valid one.
    pub(crate) fn of(body: &RawDocument) -> Option<ReadPreference> {
        let pref = Document::try_from(body.get_document("$readPreference").ok()?).ok()?;
        let mode = match pref.get_str("mode").ok()? {
            "primary" => Mode::Primary,
            "primaryPreferred" => Mode::PrimaryPreferred,
            "secondary" => Mode::Secondary,
            "secondaryPreferred" => Mode::SecondaryPreferred,
            "nearest" => Mode::Nearest,
            _ => return None,
        };
        let tag_sets = pref
            .get_array("tags")
            .map(|a| a.iter().filter_map(Bson::as_document).cloned().collect())
            .unwrap_or_default();
        let max_staleness = pref
            .get("maxStalenessSeconds")
            .and_then(|v| {
                v.as_i64()
                    .or(v.as_i32().map(i64::from))
                    .or(v.as_f64().map(|f| f as i64))
            })
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64));
        Some(ReadPreference {
            mode,
            tag_sets,
            max_staleness,
        })
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.mode == Mode::Primary
    }

    /// The index of the member to read from, or `None` when none is
    /// eligible now.
    pub(crate) fn choose(
        &self,
        members: &[MemberState],
        heartbeat: Duration,
        window: Duration,
    ) -> Option<usize> {
        let primary = members.iter().position(|m| m.role == Role::Primary);
        let secondaries = || self.eligible(members, Role::Secondary, heartbeat);
        let chosen = match self.mode {
            Mode::Primary => return primary,
            Mode::PrimaryPreferred => {
                return primary.or_else(|| nearest(members, &secondaries(), window))
            }
            Mode::Secondary => secondaries(),
            Mode::SecondaryPreferred => {
                let s = secondaries();
                if s.is_empty() {
                    return primary;
                }
                s
            }
            Mode::Nearest => {
                let mut all = self.eligible(members, Role::Secondary, heartbeat);
                all.extend(primary.filter(|p| self.tags_allow(&members[*p])));
                self.first_matching_tag_set(members, all)
            }
        };
        nearest(members, &chosen, window)
    }

    /// Members of `role` fresh enough and matching the first tag set that
    /// matches any.
    fn eligible(&self, members: &[MemberState], role: Role, heartbeat: Duration) -> Vec<usize> {
        let fresh: Vec<usize> = (0..members.len())
            .filter(|i| members[*i].role == role)
            .filter(|i| self.fresh(members, *i, heartbeat))
            .collect();
        self.first_matching_tag_set(members, fresh)
    }

    fn first_matching_tag_set(
        &self,
        members: &[MemberState],
        candidates: Vec<usize>,
    ) -> Vec<usize> {
        if self.tag_sets.is_empty() {
            return candidates;
        }
        for set in &self.tag_sets {
            let matching: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|i| tags_match(&members[*i].tags, set))
                .collect();
            if !matching.is_empty() {
                return matching;
            }
        }
        Vec::new()
    }

    fn tags_allow(&self, m: &MemberState) -> bool {
        self.tag_sets.is_empty() || self.tag_sets.iter().any(|set| tags_match(&m.tags, set))
    }

    /// `maxStalenessSeconds`: how far a secondary may lag behind the
    /// primary (or, without one, the freshest secondary).
    fn fresh(&self, members: &[MemberState], i: usize, heartbeat: Duration) -> bool {
        let Some(max) = self.max_staleness else {
            return true;
        };
        let s = &members[i];
        let Some(s_write) = s.last_write_ms else {
            return false;
        };
        let hb = heartbeat.as_millis() as i64;
        let staleness_ms = match members.iter().find(|m| m.role == Role::Primary) {
            Some(p) => {
                let p_write = p.last_write_ms.unwrap_or(s_write);
                let updated_gap = signed_ms(s.updated, p.updated);
                updated_gap - (s_write - p_write) + hb
            }
            None => {
                let freshest = members
                    .iter()
                    .filter(|m| m.role == Role::Secondary)
                    .filter_map(|m| m.last_write_ms)
                    .max()
                    .unwrap_or(s_write);
                freshest - s_write + hb
            }
        };
        staleness_ms <= max.as_millis() as i64
    }
}

/// `a - b` in milliseconds, signed.
fn signed_ms(a: std::time::Instant, b: std::time::Instant) -> i64 {
    if a >= b {
        (a - b).as_millis() as i64
    } else {
        -((b - a).as_millis() as i64)
    }
}

fn tags_match(tags: &Document, set: &Document) -> bool {
    set.iter().all(|(k, v)| tags.get(k) == Some(v))
}

/// A random member among `candidates` within `window` of the fastest.
fn nearest(members: &[MemberState], candidates: &[usize], window: Duration) -> Option<usize> {
    let rtt = |i: &usize| members[*i].rtt.unwrap_or(Duration::from_secs(1));
    let fastest = candidates.iter().map(rtt).min()?;
    let within: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|i| rtt(i) <= fastest + window)
        .collect();
    within.get(random_below(within.len())).copied()
}

fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::Instant::now().elapsed().as_nanos());
    (h.finish() % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};
    use std::time::Instant;

    fn member(role: Role, rtt_ms: u64, tags: Document, lag_ms: i64) -> MemberState {
        MemberState {
            role,
            rtt: Some(Duration::from_millis(rtt_ms)),
            tags,
            last_write_ms: Some(1_000_000 - lag_ms),
            updated: Instant::now(),
            election: None,
        }
    }

    fn set() -> Vec<MemberState> {
        vec![
            member(Role::Primary, 1, doc! {"dc": "a"}, 0),
            member(Role::Secondary, 2, doc! {"dc": "b"}, 0),
            member(Role::Secondary, 40, doc! {"dc": "a"}, 120_000),
        ]
    }

    fn pref(body: bson::RawDocumentBuf) -> ReadPreference {
        ReadPreference::of(&body).unwrap()
    }

    const HB: Duration = Duration::from_millis(500);
    const WINDOW: Duration = Duration::from_millis(15);

    #[test]
    fn modes() {
        let m = set();
        let secondary = pref(rawdoc! {"find": "c", "$readPreference": {"mode": "secondary"}});
        // Within 15 ms of the fastest secondary: member 1 only.
        assert_eq!(secondary.choose(&m, HB, WINDOW), Some(1));
        let primary_only = vec![member(Role::Primary, 1, doc! {}, 0)];
        assert_eq!(secondary.choose(&primary_only, HB, WINDOW), None);
        let sp = pref(rawdoc! {"find": "c", "$readPreference": {"mode": "secondaryPreferred"}});
        assert_eq!(sp.choose(&primary_only, HB, WINDOW), Some(0));
        let pp = pref(rawdoc! {"find": "c", "$readPreference": {"mode": "primaryPreferred"}});
        assert_eq!(pp.choose(&m, HB, WINDOW), Some(0));
    }

    #[test]
    fn tags_and_staleness() {
        let m = set();
        let tagged = pref(
            rawdoc! {"find": "c", "$readPreference": {"mode": "secondary", "tags": [{"dc": "a"}]}},
        );
        assert_eq!(tagged.choose(&m, HB, WINDOW), Some(2));
        let fresh = pref(
            rawdoc! {"find": "c", "$readPreference": {"mode": "secondary", "tags": [{"dc": "a"}, {}], "maxStalenessSeconds": 90}},
        );
        // Member 2 lags 120 s: the second tag set ({}) picks member 1.
        assert_eq!(fresh.choose(&m, HB, WINDOW), Some(1));
    }

    #[test]
    fn nearest_spreads_within_the_window() {
        let m = vec![
            member(Role::Primary, 1, doc! {}, 0),
            member(Role::Secondary, 2, doc! {}, 0),
            member(Role::Secondary, 3, doc! {}, 0),
        ];
        let nearest = pref(rawdoc! {"find": "c", "$readPreference": {"mode": "nearest"}});
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            seen.insert(nearest.choose(&m, HB, WINDOW).unwrap());
        }
        assert_eq!(seen.len(), 3);
    }
}
