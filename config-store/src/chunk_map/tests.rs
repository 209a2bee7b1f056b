//! Tests of routing-table validation and lookups.

use bson::doc;
use bson::oid::ObjectId;

use super::*;

fn pattern() -> ShardKeyPattern {
    ShardKeyPattern::parse(&doc! {"x": 1}).unwrap()
}

fn key(x: i64) -> KeyBytes {
    pattern().encode_bound(&doc! {"x": x}).unwrap()
}

fn epoch() -> ObjectId {
    ObjectId::from_bytes([7; 12])
}

fn chunk(min: KeyBytes, max: KeyBytes, shard: &str, major: u32, minor: u32) -> RoutingChunk {
    RoutingChunk {
        min,
        max,
        shard: shard.to_owned(),
        version: ChunkVersion {
            epoch: epoch(),
            major,
            minor,
        },
    }
}

/// [MinKey, 0) s0 1|0, [0, 10) s1 2|1, [10, 20) s0 1|3, [20, MaxKey) s2 2|0.
fn sample_chunks() -> Vec<RoutingChunk> {
    let p = pattern();
    vec![
        chunk(key(10), key(20), "s0", 1, 3),
        chunk(p.min_bytes(), key(0), "s0", 1, 0),
        chunk(key(20), p.max_bytes(), "s2", 2, 0),
        chunk(key(0), key(10), "s1", 2, 1),
    ]
}

fn build(chunks: Vec<RoutingChunk>) -> Result<ChunkMap, ChunkMapError> {
    let map = ChunkMap::for_pattern(&pattern(), chunks.clone());
    assert_eq!(map.is_ok(), ChunkMap::new(chunks).is_ok());
    map
}

#[test]
fn lookups_are_min_inclusive_and_max_exclusive() {
    let map = build(sample_chunks()).unwrap();
    assert_eq!(map.len(), 4);
    assert!(!map.is_empty());
    let owner = |x: i64| map.chunk_for(&key(x)).shard.as_str();
    assert_eq!(owner(i64::MIN), "s0");
    assert_eq!(owner(-1), "s0");
    assert_eq!(owner(0), "s1");
    assert_eq!(owner(9), "s1");
    assert_eq!(owner(10), "s0");
    assert_eq!(owner(19), "s0");
    assert_eq!(owner(20), "s2");
    assert_eq!(owner(i64::MAX), "s2");
    let p = pattern();
    let of = |bound: bson::Document| {
        map.chunk_for(&p.encode_bound(&bound).unwrap())
            .shard
            .clone()
    };
    assert_eq!(of(doc! {"x": bson::Bson::MinKey}), "s0");
    assert_eq!(of(doc! {"x": bson::Bson::Null}), "s0");
    assert_eq!(of(doc! {"x": 9.5}), "s1");
    assert_eq!(of(doc! {"x": "a string"}), "s2");
    // The all-MaxKey key (the global max itself) and stray bytes still map.
    assert_eq!(map.chunk_for(&p.max_bytes()).shard, "s2");
    assert_eq!(map.chunk_for(&KeyBytes::default()).shard, "s0");
    for x in [-5, 0, 5, 15, 25] {
        assert!(map.chunk_for(&key(x)).contains(&key(x)));
    }
}

#[test]
fn overlapping_ranges() {
    let map = build(sample_chunks()).unwrap();
    let shards = |min: KeyBytes, max: KeyBytes| -> Vec<String> {
        map.chunks_overlapping(&min, &max)
            .map(|c| c.shard.clone())
            .collect()
    };
    assert_eq!(shards(key(0), key(10)), ["s1"]);
    assert_eq!(shards(key(5), key(6)), ["s1"]);
    assert_eq!(shards(key(-1), key(10)), ["s0", "s1"]);
    assert_eq!(shards(key(-1), key(11)), ["s0", "s1", "s0"]);
    assert_eq!(shards(key(9), key(20)), ["s1", "s0"]);
    assert_eq!(shards(key(10), key(10)), Vec::<String>::new());
    assert_eq!(shards(key(12), key(3)), Vec::<String>::new());
    let p = pattern();
    assert_eq!(
        shards(p.min_bytes(), p.max_bytes()),
        ["s0", "s1", "s0", "s2"]
    );
    let all: Vec<_> = map.iter().map(|c| c.shard.as_str()).collect();
    assert_eq!(all, ["s0", "s1", "s0", "s2"]);
}

#[test]
fn versions_per_collection_and_shard() {
    let map = build(sample_chunks()).unwrap();
    assert_eq!((map.version().major, map.version().minor), (2, 1));
    let v = |s: &str| map.shard_version(s).map(|v| (v.major, v.minor));
    assert_eq!(v("s0"), Some((1, 3)));
    assert_eq!(v("s1"), Some((2, 1)));
    assert_eq!(v("s2"), Some((2, 0)));
    assert_eq!(v("s3"), None);
    assert_eq!(
        map.shards().into_iter().collect::<Vec<_>>(),
        ["s0", "s1", "s2"]
    );
    let a = ChunkVersion {
        epoch: epoch(),
        major: 1,
        minor: 9,
    };
    let b = ChunkVersion {
        epoch: epoch(),
        major: 2,
        minor: 0,
    };
    assert!(a < b && a.same_epoch(&b));
}

#[test]
fn tiling_errors_are_reported() {
    let p = pattern();
    let mut gap = sample_chunks();
    gap[0].min = key(11);
    let err = build(gap).unwrap_err();
    assert_eq!(
        err,
        ChunkMapError::Gap {
            from: key(10),
            to: key(11)
        }
    );
    assert!(
        err.to_string().starts_with("gap: no chunk covers ["),
        "{err}"
    );

    let mut overlap = sample_chunks();
    overlap[0].min = key(9);
    assert_eq!(
        build(overlap).unwrap_err(),
        ChunkMapError::Overlap {
            from: key(9),
            to: key(10)
        }
    );

    let mut duplicate = sample_chunks();
    duplicate.push(chunk(key(0), key(10), "s3", 1, 0));
    assert!(matches!(
        build(duplicate).unwrap_err(),
        ChunkMapError::Overlap { .. }
    ));

    let mut start = sample_chunks();
    start[1].min = key(-100);
    let err = build(start).unwrap_err();
    assert_eq!(
        err,
        ChunkMapError::WrongStart {
            expected: p.min_bytes(),
            found: key(-100)
        }
    );

    let mut end = sample_chunks();
    end[2].max = key(100);
    assert!(matches!(
        build(end).unwrap_err(),
        ChunkMapError::WrongEnd { .. }
    ));

    let mut empty = sample_chunks();
    empty.push(chunk(key(10), key(10), "s1", 1, 0));
    assert!(matches!(
        build(empty).unwrap_err(),
        ChunkMapError::EmptyChunk { .. }
    ));

    let mut epochs = sample_chunks();
    epochs[3].version.epoch = ObjectId::from_bytes([8; 12]);
    assert!(matches!(
        build(epochs).unwrap_err(),
        ChunkMapError::MixedEpochs { .. }
    ));

    assert_eq!(build(Vec::new()).unwrap_err(), ChunkMapError::NoChunks);
}

#[test]
fn single_chunk_and_explicit_bounds() {
    let p = ShardKeyPattern::parse(&doc! {"a": 1, "b": -1}).unwrap();
    let whole = chunk(p.min_bytes(), p.max_bytes(), "only", 1, 0);
    let map = ChunkMap::with_bounds(&p.min_bytes(), &p.max_bytes(), vec![whole.clone()]).unwrap();
    assert_eq!(ChunkMap::new(vec![whole.clone()]).unwrap().len(), 1);
    assert_eq!(
        ChunkMap::for_pattern(&p, vec![whole.clone()])
            .unwrap()
            .len(),
        1
    );
    // The same bytes under a pattern of other directions do not match.
    let other = ShardKeyPattern::parse(&doc! {"a": 1, "b": 1}).unwrap();
    assert!(matches!(
        ChunkMap::for_pattern(&other, vec![whole.clone()]).unwrap_err(),
        ChunkMapError::WrongStart { .. }
    ));
    let mut wrong_end = whole;
    wrong_end.max = other.max_bytes();
    assert!(matches!(
        ChunkMap::new(vec![wrong_end]).unwrap_err(),
        ChunkMapError::WrongEnd { .. }
    ));
    let probe = p
        .encode_bound(&doc! {"a": bson::Bson::MaxKey, "b": bson::Bson::MinKey})
        .unwrap();
    assert!(probe < p.max_bytes() || probe == p.max_bytes());
    assert_eq!(map.chunk_for(&probe).shard, "only");
    let some = p.encode_bound(&doc! {"a": 1, "b": 2}).unwrap();
    assert_eq!(map.chunks_overlapping(&p.min_bytes(), &some).count(), 1);
}

/// Mins that share their first eight bytes (long common string prefixes)
/// still find their chunk: every lookup equals a scan over the chunks.
#[test]
fn lookups_among_shared_prefixes_equal_a_scan() {
    let p = ShardKeyPattern::parse(&doc! {"s": 1}).unwrap();
    let skey = |s: &str| p.encode_bound(&doc! {"s": s}).unwrap();
    let splits: Vec<String> = [
        "a",
        "customer-0001",
        "customer-0002",
        "customer-00020",
        "customer-01",
        "customer-1",
        "d",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut bounds = vec![p.min_bytes()];
    bounds.extend(splits.iter().map(|s| skey(s)));
    bounds.push(p.max_bytes());
    let chunks: Vec<RoutingChunk> = bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| chunk(w[0].clone(), w[1].clone(), &format!("s{i}"), 1, i as u32))
        .collect();
    let map = ChunkMap::for_pattern(&p, chunks.clone()).unwrap();
    let probes = [
        "",
        "a",
        "b",
        "customer-",
        "customer-0001",
        "customer-00015",
        "customer-0002",
        "customer-000200",
        "customer-00021",
        "customer-1",
        "customer-2",
        "d",
        "zz",
    ];
    let top = p.max_bytes();
    for probe in probes {
        let k = skey(probe);
        let expected = chunks.iter().rev().find(|c| c.min <= k).unwrap();
        assert_eq!(map.chunk_for(&k), expected, "{probe}");
        let after: Vec<_> = map.chunks_overlapping(&k, &top).collect();
        assert_eq!(after.first().copied(), Some(expected), "{probe}");
    }
    assert_eq!(
        map.chunk_for(&p.max_bytes()).shard,
        format!("s{}", splits.len())
    );
}
