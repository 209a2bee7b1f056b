//! Collations at the router: where it compares strings itself — merging
//! sorted shard streams, ordering single-write candidates, deduplicating
//! `distinct` values — under a command's non-simple `collation`.
//!
//! A `mongod` puts collation comparison keys in `$sortKey` (strings whose
//! bytes sort as the collation orders them), so a merge by bytes is right
//! as it is. A shard that puts the raw values there (SecantusDB does) is
//! asked once ([`shard_keys_collated`]); for such shards the router turns
//! each string into an order-preserving key itself, with ICU4X
//! (`icu_collator`), the Unicode collation algorithm and CLDR's
//! tailorings that ICU gives `mongod`.

use std::sync::Arc;

use bson::{cstr, doc, Bson, Document, RawArrayBuf, RawDocument, RawDocumentBuf};
use icu_collator::options::{AlternateHandling, CaseLevel, CollatorOptions, MaxVariable, Strength};
use icu_collator::{CollatorBorrowed, CollatorPreferences};
use shardgate_config_store::ShardType;
use shardgate_wire::{DocumentSequence, OpMsg};

use crate::shards::run_on_shard_raw;
use crate::state::RouterState;

/// A non-simple collation the router applies.
pub(crate) struct Collator {
    inner: CollatorBorrowed<'static>,
}

impl std::fmt::Debug for Collator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collator")
    }
}

impl Collator {
    /// The collator of a MongoDB collation document; `None` for the
    /// simple collation (or one ICU4X cannot build, which the shards then
    /// reject or apply themselves).
    pub(crate) fn from_spec(spec: &Document) -> Option<Collator> {
        let locale = spec.get_str("locale").ok()?;
        if locale == "simple" {
            return None;
        }
        let tag = bcp47(locale, spec);
        let locale = icu_locale_core::Locale::try_from_str(&tag)
            .or_else(|_| icu_locale_core::Locale::try_from_str("und"))
            .ok()?;
        let prefs = CollatorPreferences::from(&locale);
        let inner = CollatorBorrowed::try_new(prefs, options(spec)).ok()?;
        Some(Collator { inner })
    }

    /// The collation of a command `body` (its `collation` field).
    pub(crate) fn of_command(body: &bson::RawDocument) -> Option<Collator> {
        let spec = body.get_document("collation").ok()?;
        Collator::from_spec(&Document::try_from(spec).ok()?)
    }

    /// `value` with every string (at any depth) replaced by its comparison
    /// key: a string whose UTF-8 bytes sort as the collation orders the
    /// originals, so the simple comparison of keys is the collated one.
    pub(crate) fn key(&self, value: &Bson) -> Bson {
        match value {
            Bson::String(s) => Bson::String(self.string_key(s)),
            Bson::Array(items) => Bson::Array(items.iter().map(|v| self.key(v)).collect()),
            Bson::Document(d) => Bson::Document(
                d.iter()
                    .map(|(k, v)| (k.clone(), self.key(v)))
                    .collect::<Document>(),
            ),
            other => other.clone(),
        }
    }

    /// The ICU sort key of `s`, each byte `b` written as the character
    /// `b + 1`: UTF-8 keeps the order of code points, and no key holds
    /// a NUL.
    fn string_key(&self, s: &str) -> String {
        let mut bytes: Vec<u8> = Vec::with_capacity(s.len() * 2);
        let Ok(()) = self.inner.write_sort_key_to(s, &mut bytes);
        bytes
            .into_iter()
            .map(|b| char::from_u32(u32::from(b) + 1).unwrap_or('\u{1}'))
            .collect()
    }
}

/// The BCP 47 tag of a MongoDB `locale` (`en_US`, `de@collation=phonebook`)
/// with the collation's `caseFirst` and `numericOrdering`.
fn bcp47(locale: &str, spec: &Document) -> String {
    let (base, variant) = match locale.split_once("@collation=") {
        Some((b, v)) => (b, Some(v)),
        None => (locale, None),
    };
    let mut tag = if base == "root" {
        "und".to_owned()
    } else {
        base.replace('_', "-")
    };
    let mut keys = Vec::new();
    if let Some(v) = variant {
        keys.push(format!("co-{v}"));
    }
    match spec.get_str("caseFirst") {
        Ok("upper") => keys.push("kf-upper".to_owned()),
        Ok("lower") => keys.push("kf-lower".to_owned()),
        _ => {}
    }
    if spec.get_bool("numericOrdering").unwrap_or(false) {
        keys.push("kn".to_owned());
    }
    if !keys.is_empty() {
        tag.push_str("-u-");
        tag.push_str(&keys.join("-"));
    }
    tag
}

/// The options of a MongoDB collation document ICU4X takes.
fn options(spec: &Document) -> CollatorOptions {
    let mut options = CollatorOptions::default();
    let strength = spec.get("strength").and_then(|v| {
        v.as_i32()
            .or(v.as_i64().map(|n| n as i32))
            .or(v.as_f64().map(|n| n as i32))
    });
    options.strength = Some(match strength {
        Some(1) => Strength::Primary,
        Some(2) => Strength::Secondary,
        Some(4) => Strength::Quaternary,
        Some(5) => Strength::Identical,
        _ => Strength::Tertiary,
    });
    if spec.get_bool("caseLevel").unwrap_or(false) {
        options.case_level = Some(CaseLevel::On);
    }
    if spec.get_str("alternate").ok() == Some("shifted") {
        options.alternate_handling = Some(AlternateHandling::Shifted);
        options.max_variable = Some(match spec.get_str("maxVariable") {
            Ok("space") => MaxVariable::Space,
            _ => MaxVariable::Punctuation,
        });
    }
    options
}

/// `msg` (a `name` command on a collection whose default collation is
/// `default`) with that collation made explicit where the command names
/// none: on the command (`find`, `aggregate`, `count`, `distinct`,
/// `findAndModify`) or on each statement (`update`, `delete`), so targeting
/// and merging see the collation the shards apply. `None`: unchanged.
pub(crate) fn made_explicit(msg: &OpMsg, name: &str, default: &Document) -> Option<OpMsg> {
    let body = msg.body();
    let statements = match name {
        "find" | "aggregate" | "count" | "distinct" | "findAndModify" | "findandmodify" => {
            if body.get("collation").ok().flatten().is_some() {
                return None;
            }
            let mut out = body.to_owned();
            out.append(cstr!("collation"), RawDocumentBuf::try_from(default).ok()?);
            return Some(OpMsg {
                body: out.into_bytes().into(),
                ..msg.clone()
            });
        }
        "update" => "updates",
        "delete" => "deletes",
        _ => return None,
    };
    let default = RawDocumentBuf::try_from(default).ok()?;
    let changed = std::cell::Cell::new(false);
    let with = |stmt: &RawDocument| -> RawDocumentBuf {
        let mut out = stmt.to_owned();
        if stmt.get("collation").ok().flatten().is_none() {
            out.append(cstr!("collation"), default.clone());
            changed.set(true);
        }
        out
    };
    let mut out = RawDocumentBuf::new();
    for (k, v) in body.iter().flatten() {
        match v.as_array() {
            Some(items) if k.as_str() == statements => {
                let mut array = RawArrayBuf::new();
                for stmt in items.into_iter().flatten().filter_map(|v| v.as_document()) {
                    array.push(with(stmt));
                }
                out.append(k, array);
            }
            _ => out.append(k, v),
        }
    }
    let sequences = msg
        .sequences
        .iter()
        .map(|seq| {
            if seq.identifier != statements {
                return seq.clone();
            }
            let mut bytes = Vec::with_capacity(seq.documents.len());
            for stmt in seq.iter() {
                bytes.extend_from_slice(with(stmt).as_bytes());
            }
            DocumentSequence {
                identifier: seq.identifier.clone(),
                documents: bytes.into(),
            }
        })
        .collect();
    if !changed.get() {
        return None;
    }
    Some(OpMsg {
        flags: msg.flags,
        body: out.into_bytes().into(),
        sequences,
    })
}

/// The collator a merge of `shards`' sorted streams applies to their
/// `$sortKey`s under `collator` (the command's): `None` when there is none
/// or every shard puts comparison keys there itself.
pub(crate) async fn for_merge(
    state: &RouterState,
    collator: Option<Collator>,
    shards: &[ShardType],
) -> Option<Arc<Collator>> {
    let collator = collator?;
    for shard in shards {
        if !shard_keys_collated(state, shard).await {
            return Some(Arc::new(collator));
        }
    }
    None
}

/// Whether `shard`'s `$sortKey` under a collation holds comparison keys
/// (as `mongod`'s does) rather than the raw values; asked once per shard.
async fn shard_keys_collated(state: &RouterState, shard: &ShardType) -> bool {
    let known = state
        .collated_sort_keys
        .lock()
        .ok()
        .and_then(|m| m.get(&shard.id).copied());
    if let Some(known) = known {
        return known;
    }
    let asked = crate::transactions::outside(probe(state, shard)).await;
    let answer = match asked {
        Ok(raw) => !raw,
        // A shard that cannot say is taken to be a mongod.
        Err(e) => {
            tracing::debug!(shard = %shard.id, error = %e, "collated $sortKey probe failed");
            return true;
        }
    };
    if let Ok(mut m) = state.collated_sort_keys.lock() {
        m.insert(shard.id.clone(), answer);
    }
    answer
}

/// Whether `shard` answers a collated `find` with the raw value in
/// `$sortKey`: one document in a temporary collection of `admin`, sorted
/// under a case-insensitive collation, then dropped.
async fn probe(state: &RouterState, shard: &ShardType) -> crate::error::Result<bool> {
    const PROBE: &str = "Shardgate";
    let coll = format!(
        "tmp.shardgate.probe.{}",
        bson::oid::ObjectId::new().to_hex()
    );
    let insert = doc! {"insert": &coll, "documents": [{"_id": 1, "v": PROBE}], "$db": "admin"};
    run_on_shard_raw(state, shard, insert).await?;
    let find = doc! {
        "find": &coll, "sort": {"v": 1},
        "projection": {"$sortKey": {"$meta": "sortKey"}},
        "collation": {"locale": "en", "strength": 1},
        "$db": "admin",
    };
    let found = run_on_shard_raw(state, shard, find).await;
    let _ = run_on_shard_raw(state, shard, doc! {"drop": &coll, "$db": "admin"}).await;
    let reply = found?;
    let key = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|b| {
            b.into_iter()
                .next()?
                .ok()?
                .as_document()?
                .get_array("$sortKey")
                .ok()
        })
        .and_then(|k| k.into_iter().next()?.ok()?.as_str().map(str::to_owned));
    Ok(key.as_deref() == Some(PROBE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(spec: Document, words: &[&str]) -> Vec<String> {
        let c = Collator::from_spec(&spec).unwrap();
        let mut w: Vec<(Bson, &str)> = words
            .iter()
            .map(|s| (c.key(&Bson::String((*s).to_owned())), *s))
            .collect();
        w.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
        w.into_iter().map(|(_, s)| s.to_owned()).collect()
    }

    #[test]
    fn tertiary_english_puts_lower_case_first_and_accents_beside_their_letter() {
        let got = sorted(
            doc! {"locale": "en"},
            &["b", "B", "é", "a", "A", "e", "E", "z"],
        );
        assert_eq!(got, ["a", "A", "b", "B", "e", "E", "é", "z"]);
    }

    #[test]
    fn strength_two_ties_case_and_upper_first_flips_it() {
        let c = Collator::from_spec(&doc! {"locale": "en", "strength": 2}).unwrap();
        assert_eq!(c.key(&Bson::from("abc")), c.key(&Bson::from("ABC")));
        assert_ne!(c.key(&Bson::from("abc")), c.key(&Bson::from("ábc")));
        let got = sorted(doc! {"locale": "en", "caseFirst": "upper"}, &["a", "A"]);
        assert_eq!(got, ["A", "a"]);
    }

    #[test]
    fn numeric_ordering_and_locales() {
        let got = sorted(
            doc! {"locale": "en", "numericOrdering": true},
            &["a10", "a9", "a100"],
        );
        assert_eq!(got, ["a9", "a10", "a100"]);
        let got = sorted(doc! {"locale": "sv"}, &["ä", "z", "a"]);
        assert_eq!(got, ["a", "z", "ä"]);
        assert!(Collator::from_spec(&doc! {"locale": "simple"}).is_none());
    }

    #[test]
    fn keys_reach_into_arrays_and_documents() {
        let c = Collator::from_spec(&doc! {"locale": "en", "strength": 1}).unwrap();
        let a = c.key(&Bson::from(doc! {"x": ["Ab", 1]}));
        let b = c.key(&Bson::from(doc! {"x": ["ab", 1]}));
        assert_eq!(a, b);
    }

    #[test]
    fn a_default_collation_is_named_where_the_command_names_none() {
        let default = doc! {"locale": "en", "strength": 2};
        let find = OpMsg::from_body(doc! {"find": "c", "$db": "d"}.to_vec().unwrap());
        let out = made_explicit(&find, "find", &default).unwrap();
        assert_eq!(
            out.body()
                .get_document("collation")
                .unwrap()
                .get_str("locale")
                .unwrap(),
            "en"
        );
        assert!(
            made_explicit(&out, "find", &default).is_none(),
            "already named"
        );
        let stmts = [
            doc! {"q": {}, "u": {"$set": {"a": 1}}},
            doc! {"q": {}, "u": {}, "collation": {"locale": "fr"}},
        ];
        let mut documents = Vec::new();
        for s in &stmts {
            documents.extend(s.to_vec().unwrap());
        }
        let mut update = OpMsg::from_body(doc! {"update": "c", "$db": "d"}.to_vec().unwrap());
        update.sequences.push(DocumentSequence {
            identifier: "updates".into(),
            documents: documents.into(),
        });
        let out = made_explicit(&update, "update", &default).unwrap();
        let locales: Vec<&str> = out.sequences[0]
            .iter()
            .map(|s| {
                s.get_document("collation")
                    .unwrap()
                    .get_str("locale")
                    .unwrap()
            })
            .collect();
        assert_eq!(locales, ["en", "fr"]);
        assert!(
            made_explicit(&out, "update", &default).is_none(),
            "every statement names one"
        );
        assert!(made_explicit(&update, "insert", &default).is_none());
    }
}
