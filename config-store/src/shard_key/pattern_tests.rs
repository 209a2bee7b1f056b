//! Tests of pattern parsing, bounds, extraction from documents, index
//! compatibility and `KeyBytes` text.

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};

use super::tests::dec;
use super::*;

fn pattern(key: Document) -> ShardKeyPattern {
    ShardKeyPattern::parse(&key).unwrap()
}

fn raw(doc: &Document) -> RawDocumentBuf {
    RawDocumentBuf::try_from(doc).unwrap()
}

#[test]
fn parse_accepts_and_normalizes() {
    let p = pattern(doc! {"a": 1.0, "b.c": -1i64, "d": "hashed", "e": dec("1.00")});
    assert_eq!(
        p.to_document(),
        doc! {"a": 1, "b.c": -1, "d": "hashed", "e": 1}
    );
    let fields: Vec<_> = p.fields().collect();
    assert_eq!(
        fields,
        [
            ("a", KeyKind::Ascending),
            ("b.c", KeyKind::Descending),
            ("d", KeyKind::Hashed),
            ("e", KeyKind::Ascending)
        ]
    );
    assert_eq!(p.hashed_field(), Some("d"));
    assert_eq!(pattern(doc! {"_id": 1}).hashed_field(), None);
}

#[test]
fn parse_rejects_bad_patterns_naming_the_problem() {
    let cases: &[(Document, &str)] = &[
        (doc! {}, "at least one field"),
        (doc! {"a": "text"}, "'a'"),
        (doc! {"a": "hashed", "b": "hashed"}, "at most one field"),
        (doc! {"a": 2}, "'a'"),
        (doc! {"a": 0}, "'a'"),
        (doc! {"a": 1.5}, "'a'"),
        (doc! {"a": true}, "'a'"),
        (doc! {"a": {"b": 1}}, "'a'"),
        (doc! {"": 1}, "empty"),
        (doc! {"$a": 1}, "'$'"),
        (doc! {"a.$b": 1}, "'$'"),
        (doc! {"a..b": 1}, "empty path segment"),
        (doc! {".a": 1}, "empty path segment"),
        (doc! {"a.": 1}, "empty path segment"),
    ];
    for (key, needle) in cases {
        let err = ShardKeyPattern::parse(key).unwrap_err();
        assert_eq!(err.code(), (2, "BadValue"), "{key}");
        assert!(err.to_string().contains(needle), "{key}: {err}");
    }
}

#[test]
fn bounds_need_exactly_the_pattern_fields_in_order() {
    let p = pattern(doc! {"a": 1, "b": 1});
    assert!(p.encode_bound(&doc! {"a": 1, "b": "x"}).is_ok());
    for (bound, needle) in [
        (doc! {"a": 1}, "missing fields [\"b\"]"),
        (doc! {"a": 1, "b": 1, "c": 1}, "unexpected fields [\"c\"]"),
        (doc! {"b": 1, "a": 1}, "order"),
        (
            doc! {"a": 1, "c": 1},
            "missing fields [\"b\"], unexpected fields [\"c\"]",
        ),
    ] {
        let err = p.encode_bound(&bound).unwrap_err();
        assert_eq!(err.code(), (61, "ShardKeyNotFound"), "{bound}");
        assert!(err.to_string().contains(needle), "{bound}: {err}");
    }
}

#[test]
fn bounds_refuse_values_a_shard_key_cannot_hold() {
    let p = pattern(doc! {"a": 1, "h": "hashed"});
    let regex = Bson::RegularExpression(bson::Regex {
        pattern: "x".try_into().unwrap(),
        options: "".try_into().unwrap(),
    });
    for bound in [
        doc! {"a": [1], "h": 1i64},
        doc! {"a": regex, "h": 1i64},
        doc! {"a": 1, "h": 1},
        doc! {"a": 1, "h": 1.0},
        doc! {"a": 1, "h": "x"},
    ] {
        let err = p.encode_bound(&bound).unwrap_err();
        assert_eq!(err.code(), (2, "BadValue"), "{bound}: {err}");
    }
    for ok in [
        doc! {"a": {"x": [1, 2]}, "h": -5i64},
        doc! {"a": Bson::Undefined, "h": Bson::MinKey},
        doc! {"a": Bson::Null, "h": Bson::MaxKey},
    ] {
        assert!(p.encode_bound(&ok).is_ok(), "{ok}");
    }
    let mut deep = Bson::Int32(1);
    for _ in 0..201 {
        deep = Bson::Document(doc! {"d": deep});
    }
    let err = pattern(doc! {"a": 1})
        .encode_bound(&doc! {"a": deep})
        .unwrap_err();
    assert_eq!(err.code(), (15, "Overflow"));
}

#[test]
fn extract_follows_dotted_paths_and_treats_missing_as_null() {
    let p = pattern(doc! {"a.b": 1, "c": -1});
    let cases = [
        (
            doc! {"c": 2, "a": {"x": 0, "b": "v"}},
            doc! {"a.b": "v", "c": 2},
        ),
        (
            doc! {"a": {"b": {"z": 1}}},
            doc! {"a.b": {"z": 1}, "c": Bson::Null},
        ),
        (doc! {"c": 1}, doc! {"a.b": Bson::Null, "c": 1}),
        (doc! {"a": 5, "c": 1}, doc! {"a.b": Bson::Null, "c": 1}),
        (
            doc! {"a": {"b": Bson::Undefined}, "c": 1},
            doc! {"a.b": Bson::Undefined, "c": 1},
        ),
        (doc! {"a.b": 7, "c": 1}, doc! {"a.b": Bson::Null, "c": 1}),
    ];
    for (stored, expected) in cases {
        let stored = raw(&stored);
        assert_eq!(p.key_document(&stored).unwrap(), expected);
        assert_eq!(
            p.extract_key(&stored).unwrap(),
            p.encode_bound(&expected).unwrap()
        );
    }
}

#[test]
fn extract_refuses_arrays_on_the_path() {
    let p = pattern(doc! {"a.b": 1});
    for stored in [
        doc! {"a": [1, 2]},
        doc! {"a": []},
        doc! {"a": {"b": [1]}},
        doc! {"a": [{"b": 1}]},
    ] {
        let err = p.extract_key(&raw(&stored)).unwrap_err();
        assert_eq!(err.code(), (61, "ShardKeyNotFound"), "{stored}");
        assert!(err.to_string().contains("array"));
        assert!(p.key_document(&raw(&stored)).is_err());
    }
    // Arrays below the shard-key value are fine.
    assert!(p.extract_key(&raw(&doc! {"a": {"b": {"c": [1]}}})).is_ok());
}

#[test]
fn extract_hashes_hashed_fields() {
    let p = pattern(doc! {"_id": "hashed"});
    let one = p.extract_key(&raw(&doc! {"_id": 1, "x": "y"})).unwrap();
    assert_eq!(
        one,
        p.encode_bound(&doc! {"_id": 5902408780260971510i64})
            .unwrap()
    );
    assert_eq!(one, p.extract_key(&raw(&doc! {"_id": 1.5})).unwrap());
    let missing = p.key_document(&raw(&doc! {"x": 1})).unwrap();
    assert_eq!(missing, doc! {"_id": 2338878944348059895i64});

    let compound = pattern(doc! {"region": 1, "user": "hashed"});
    let stored = raw(&doc! {"user": "abc", "region": "eu"});
    let key = compound.key_document(&stored).unwrap();
    assert_eq!(key, doc! {"region": "eu", "user": 8478485326885698097i64});
    assert_eq!(
        compound.extract_key(&stored).unwrap(),
        compound.encode_bound(&key).unwrap()
    );
}

#[test]
fn extract_reports_malformed_and_too_deep_documents() {
    let p = pattern(doc! {"a": 1});
    // {a: "x"} with the string length field corrupted.
    let mut bytes = raw(&doc! {"a": "x"}).into_bytes();
    bytes[7] = 0x7f;
    let doc = RawDocument::from_bytes(&bytes).unwrap();
    assert_eq!(p.extract_key(doc).unwrap_err().code(), (22, "InvalidBSON"));

    let mut deep = doc! {"z": 1};
    for _ in 0..250 {
        deep = doc! {"d": deep};
    }
    let stored = raw(&doc! {"a": deep.clone()});
    assert_eq!(p.extract_key(&stored).unwrap_err().code(), (15, "Overflow"));
    let hashed = pattern(doc! {"a": "hashed"});
    assert_eq!(
        hashed.extract_key(&stored).unwrap_err().code(),
        (15, "Overflow")
    );
    assert_eq!(
        p.key_document(&stored).unwrap_err().code(),
        (15, "Overflow")
    );
}

#[test]
fn global_bounds_enclose_every_key() {
    let p = pattern(doc! {"a": 1, "b": "hashed"});
    assert_eq!(p.global_min(), doc! {"a": Bson::MinKey, "b": Bson::MinKey});
    assert_eq!(p.global_max(), doc! {"a": Bson::MaxKey, "b": Bson::MaxKey});
    assert_eq!(p.min_bytes(), p.encode_bound(&p.global_min()).unwrap());
    assert_eq!(p.max_bytes(), p.encode_bound(&p.global_max()).unwrap());
    for stored in [
        doc! {},
        doc! {"a": Bson::MinKey},
        doc! {"a": Bson::MaxKey, "b": 1},
    ] {
        let key = p.extract_key(&raw(&stored)).unwrap();
        assert!(p.min_bytes() < key && key < p.max_bytes(), "{stored}");
    }
}

#[test]
fn index_prefix_compatibility() {
    let p = pattern(doc! {"a": 1, "b": -1});
    assert!(p.is_prefix_of_index(&doc! {"a": 1, "b": -1}));
    assert!(p.is_prefix_of_index(&doc! {"a": 1.0, "b": -1i64, "c": 1}));
    assert!(!p.is_prefix_of_index(&doc! {"a": 1}));
    assert!(!p.is_prefix_of_index(&doc! {"a": 1, "b": 1}));
    assert!(!p.is_prefix_of_index(&doc! {"b": -1, "a": 1}));
    assert!(!p.is_prefix_of_index(&doc! {"a": 1, "c": 1, "b": -1}));
    assert!(!p.is_prefix_of_index(&doc! {"a": "text", "b": -1}));
    let h = pattern(doc! {"a": "hashed"});
    assert!(h.is_prefix_of_index(&doc! {"a": "hashed"}));
    assert!(h.is_prefix_of_index(&doc! {"a": 1, "z": 1}));
    assert!(!h.is_prefix_of_index(&doc! {"a": -1}));
    assert!(!h.is_prefix_of_index(&doc! {"a": "2dsphere"}));
}

#[test]
fn key_bytes_hex_round_trips_and_sorts_like_bytes() {
    let keys: Vec<KeyBytes> = [
        vec![],
        vec![0x00],
        vec![0x00, 0xff],
        vec![0x0a],
        vec![0xa0, 0x01],
    ]
    .into_iter()
    .map(KeyBytes::from)
    .collect();
    for pair in keys.windows(2) {
        assert!(pair[0] < pair[1]);
        assert!(pair[0].to_string() < pair[1].to_string());
    }
    for key in &keys {
        assert_eq!(KeyBytes::from_hex(&key.to_string()).as_ref(), Some(key));
    }
    assert_eq!(KeyBytes::from(vec![0xab, 0x01]).to_string(), "ab01");
    assert_eq!(
        KeyBytes::from_hex("AB01"),
        Some(KeyBytes::from(vec![0xab, 0x01]))
    );
    assert_eq!(KeyBytes::from_hex("abc"), None);
    assert_eq!(KeyBytes::from_hex("zz"), None);
}

#[test]
fn key_from_values_equals_extract_key() {
    let p = pattern(doc! {"tenant": 1, "user.id": "hashed", "at": -1});
    let docs = [
        doc! {"tenant": "acme", "user": {"id": 7}, "at": 3},
        doc! {"tenant": "acme", "user": {"id": "x"}},
        doc! {"user": "not a document", "at": 1.5},
        doc! {},
    ];
    for d in &docs {
        let values: Vec<Bson> = ["tenant", "user.id", "at"]
            .iter()
            .map(|path| {
                let mut v = Bson::Document(d.clone());
                for part in path.split('.') {
                    v = match v {
                        Bson::Document(sub) => sub.get(part).cloned().unwrap_or(Bson::Null),
                        _ => Bson::Null,
                    };
                }
                v
            })
            .collect();
        let arr = raw(&doc! {"v": values});
        let arr = arr.get_array("v").unwrap();
        assert_eq!(
            p.key_from_values(arr).unwrap(),
            p.extract_key(&raw(d)).unwrap(),
            "{d}"
        );
    }
    let arr = raw(&doc! {"v": [[1, 2]]});
    assert!(matches!(
        p.key_from_values(arr.get_array("v").unwrap()),
        Err(ShardKeyError::ArrayValue { .. })
    ));
}
