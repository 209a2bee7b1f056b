//! The fast path (`extract`, `fast`) against the full parser: same bytes,
//! same errors, for random documents and every kind of key field.

use bson::{doc, Bson, RawDocumentBuf};
use proptest::prelude::*;

use super::proptests::value;
use super::*;

fn raw(doc: &bson::Document) -> RawDocumentBuf {
    RawDocumentBuf::try_from(doc).unwrap()
}

fn patterns() -> Vec<ShardKeyPattern> {
    [
        doc! {"a": 1},
        doc! {"a": -1, "b": 1},
        doc! {"a": "hashed"},
        doc! {"b.c": 1, "a": "hashed"},
        doc! {"_id": 1, "bb.c.d": -1},
        doc! {"missing": 1, "a": 1},
    ]
    .iter()
    .map(|p| ShardKeyPattern::parse(p).unwrap())
    .collect()
}

#[test]
fn hashes_match_the_full_path_for_every_scalar_type() {
    let values = [
        Bson::Int32(-7),
        Bson::Int64(9_007_199_254_740_993),
        Bson::Double(129.95),
        Bson::Double(f64::NAN),
        Bson::String("c0042".into()),
        // Around one MD5 block (64 bytes with the 8-byte head), and past it.
        Bson::String("x".repeat(51)),
        Bson::String("x".repeat(52)),
        Bson::String("é".repeat(40)),
        Bson::String("y".repeat(300)),
        Bson::ObjectId(bson::oid::ObjectId::from_bytes([7; 12])),
        Bson::Boolean(true),
        Bson::DateTime(bson::DateTime::from_millis(-5)),
        Bson::Null,
        Bson::MinKey,
        Bson::MaxKey,
    ];
    let pattern = ShardKeyPattern::parse(&doc! {"a": "hashed"}).unwrap();
    for v in values {
        let d = raw(&doc! {"a": v.clone()});
        assert_eq!(
            pattern.extract_key(&d),
            pattern.extract_key_full(&d),
            "{v:?}"
        );
        let mut bytes = Vec::new();
        number::encode_i64(hash_value(&v), &mut bytes);
        assert_eq!(pattern.extract_key(&d).unwrap().as_slice()[1..], bytes[..]);
    }
}

#[test]
fn malformed_and_array_values_give_the_full_path_error() {
    let pattern = ShardKeyPattern::parse(&doc! {"a.b": 1}).unwrap();
    let d = raw(&doc! {"a": [{"b": 1}]});
    assert!(matches!(
        pattern.extract_key(&d),
        Err(ShardKeyError::ArrayValue { .. })
    ));
    let mut bytes = raw(&doc! {"x": "abc", "a": {"b": 1}}).into_bytes();
    bytes[7] = 0xff; // the string's length
    let d = bson::RawDocument::from_bytes(&bytes).unwrap();
    assert_eq!(pattern.extract_key(d), pattern.extract_key_full(d));
    assert!(pattern.extract_key(d).is_err());
}

proptest! {
    #[test]
    fn fast_extraction_equals_the_full_path(
        a in value(), c in value(), d in value(), id in value(), extra in value()
    ) {
        let document = doc! {"_id": id, "x": extra, "a": a, "b": {"c": c, "z": 1}, "bb": {"c": {"d": d}}};
        let document = raw(&document);
        for pattern in patterns() {
            prop_assert_eq!(pattern.extract_key(&document), pattern.extract_key_full(&document));
        }
    }

    #[test]
    fn raw_element_encoding_equals_the_value_encoding(v in value(), descending in any::<bool>()) {
        let document = raw(&doc! {"v": v.clone()});
        let element = shardgate_wire::raw::Elements::new(document.as_bytes())
            .unwrap()
            .find(b"v")
            .unwrap()
            .unwrap();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        prop_assert!(encode_raw_value(element.kind, element.value, descending, &mut ours));
        encode_value(&v, descending, &mut theirs);
        prop_assert_eq!(ours, theirs);
    }
}
