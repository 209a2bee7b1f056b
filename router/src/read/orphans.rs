//! Keeping a shard's orphans out of what it answers when the collection's
//! shard key has a hashed field.
//!
//! During a migration and until its range deletion, a shard holds documents
//! it does not own (its orphan ranges). For a ranged key the exclusion is a
//! filter the shard evaluates ([`super::orphan_clause`]). A hashed field's
//! ranges are ranges of *hash* values, which a shard cannot select by query
//! (SecantusDB has no `$toHashedIndexKey`). So for such a shard the router
//! reads each document's shard-key values — from the document, or from a
//! hidden projected field when the client's projection would drop them —
//! hashes them with the chunk map's own function, drops the documents in
//! the shard's orphan ranges and removes what it added. Counts, `distinct`,
//! aggregation and multi-document writes on that shard are computed from
//! what survives (see `StreamFilter`, [`count_owned`], [`distinct_owned`],
//! [`OwnedIds`]).

use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use shardgate_config_store::shard_key::{hash_value, KeyBytes, KeyKind, ShardKeyPattern};
use shardgate_config_store::ShardType;
use shardgate_shard_client::{cursor_reply, ShardError};

use crate::catalog_cache::routing::CollectionRouting;
use crate::error::RouterError;
use crate::session::Namespace;
use crate::shards::run_on_shard_raw;
use crate::state::RouterState;

mod projection;
mod scan;
#[cfg(test)]
mod tests;

pub(crate) use projection::Reshape;
use projection::{excludes, flatten, is_inclusion, paths_overlap};
pub(crate) use scan::{count_owned, distinct_owned, OwnedIds, StreamFilter};

/// The hidden field a shard fills with the document's shard-key values.
pub(crate) const KEY_FIELD: &str = "__shardgate_shard_key";

/// Documents per page when the router pages through a shard's documents.
const PAGE: i64 = 1000;

/// How a shard's orphans are kept out of one command.
pub(crate) enum Exclusion {
    /// The shard holds none.
    None,
    /// A clause the shard evaluates, joined to the command's filter.
    Filter(Document),
    /// The router drops them itself.
    Router(Arc<HashedOrphans>),
}

impl Exclusion {
    /// The exclusion for `shard`: a range filter for a ranged key; for a
    /// hashed one, a `$toHashedIndexKey` filter where the shard evaluates it
    /// (and string comparisons of a compound key's other fields follow the
    /// simple collation, as chunk bounds do), else the router's filtering.
    pub(crate) async fn for_shard(
        state: &RouterState,
        routing: &CollectionRouting,
        shard: &ShardType,
        simple_collation: bool,
    ) -> Exclusion {
        let Some(orphans) = HashedOrphans::for_shard(routing, &shard.id) else {
            return match super::orphan_clause(routing, &shard.id) {
                clause if clause.is_empty() => Exclusion::None,
                clause => Exclusion::Filter(clause),
            };
        };
        let ranged_strings = orphans
            .pattern
            .fields()
            .any(|(_, kind)| kind != KeyKind::Hashed);
        if simple_collation || !ranged_strings {
            if let Some(clause) = orphans.pushdown() {
                let db = Namespace::parse(&routing.collection.ns).db;
                if evaluates_hashed_key(state, shard, db).await {
                    return Exclusion::Filter(clause);
                }
            }
        }
        Exclusion::Router(orphans)
    }

    /// `filter` as the shard gets it.
    pub(crate) fn apply(&self, filter: &Document) -> Document {
        match self {
            Exclusion::Filter(clause) if filter.is_empty() => clause.clone(),
            Exclusion::Filter(clause) => doc! {"$and": [filter.clone(), clause.clone()]},
            _ => filter.clone(),
        }
    }

    /// The orphans the router must drop itself.
    pub(crate) fn router(&self) -> Option<Arc<HashedOrphans>> {
        match self {
            Exclusion::Router(o) => Some(o.clone()),
            _ => None,
        }
    }
}

/// [`Exclusion::for_shard`] for each shard, in order.
pub(crate) async fn exclusions(
    state: &RouterState,
    routing: &CollectionRouting,
    shards: &[ShardType],
    simple_collation: bool,
) -> Vec<Exclusion> {
    let each = shards
        .iter()
        .map(|s| Exclusion::for_shard(state, routing, s, simple_collation));
    futures::future::join_all(each).await
}

/// Whether `shard` evaluates `$toHashedIndexKey` with the chunk map's hash;
/// asked once per shard pool (an unreachable shard is asked again later).
async fn evaluates_hashed_key(state: &RouterState, shard: &ShardType, db: &str) -> bool {
    let known = state
        .hashed_key_expr
        .lock()
        .ok()
        .and_then(|m| m.get(&shard.id).copied());
    if let Some(known) = known {
        return known;
    }
    let probe = "shardgate";
    let cmd = doc! {
        "aggregate": 1,
        "pipeline": [
            {"$documents": [{"v": probe}]},
            {"$project": {"_id": 0, "h": {"$toHashedIndexKey": "$v"}}},
        ],
        "cursor": {}, "$db": db,
    };
    let answer = match run_on_shard_raw(state, shard, cmd).await {
        Ok(reply) => {
            let docs = cursor_reply(&shard.id, &reply)
                .map(|r| r.docs)
                .unwrap_or_default();
            let want = hash_value(&Bson::String(probe.to_owned()));
            docs.first().and_then(|d| d.get_i64("h").ok()) == Some(want)
        }
        Err(e @ RouterError::Shard(ShardError::Reply { .. })) => {
            tracing::debug!(shard = %shard.id, error = %e, "no $toHashedIndexKey on this shard");
            false
        }
        Err(e) => {
            tracing::debug!(shard = %shard.id, error = %e, "$toHashedIndexKey probe failed");
            return false;
        }
    };
    if let Ok(mut m) = state.hashed_key_expr.lock() {
        m.insert(shard.id.clone(), answer);
    }
    answer
}

/// One shard's orphan ranges of a collection with a hashed shard-key field.
pub(crate) struct HashedOrphans {
    pattern: ShardKeyPattern,
    /// Encoded `[min, max)` of each orphan range on the shard.
    ranges: Vec<(KeyBytes, KeyBytes)>,
    /// The same ranges' bounds as documents.
    bounds: Vec<(Document, Document)>,
}

impl HashedOrphans {
    /// The orphan ranges `shard` holds, when the key has a hashed field and
    /// there are any; `None` means the shard answers for itself.
    pub(crate) fn for_shard(routing: &CollectionRouting, shard: &str) -> Option<Arc<Self>> {
        routing.pattern.hashed_field()?;
        let (ranges, bounds): (Vec<_>, Vec<_>) = routing
            .orphans
            .iter()
            .filter(|o| o.shard == shard)
            .filter_map(|o| {
                let min = routing.pattern.encode_bound(&o.min).ok()?;
                let max = routing.pattern.encode_bound(&o.max).ok()?;
                Some(((min, max), (o.min.clone(), o.max.clone())))
            })
            .unzip();
        if ranges.is_empty() {
            return None;
        }
        Some(Arc::new(HashedOrphans {
            pattern: routing.pattern.clone(),
            ranges,
            bounds,
        }))
    }

    /// The exclusion as a filter clause for a shard that evaluates
    /// `$toHashedIndexKey`: `{$nor: [{$expr: key in [min, max)}, …]}` with
    /// the key as the array `["$a", {$toHashedIndexKey: "$b"}]` (arrays
    /// compare element by element, as the encoded keys do). `None` for a
    /// key with a descending field, which array order cannot express.
    pub(crate) fn pushdown(&self) -> Option<Document> {
        let mut tuple = Vec::new();
        for (name, kind) in self.pattern.fields() {
            let path = Bson::String(format!("${name}"));
            tuple.push(match kind {
                KeyKind::Hashed => Bson::Document(doc! {"$toHashedIndexKey": path}),
                KeyKind::Ascending => path,
                KeyKind::Descending => return None,
            });
        }
        let values = |bound: &Document| -> Bson {
            Bson::Document(doc! {"$literal": bound.values().cloned().collect::<Vec<_>>()})
        };
        let ranges: Vec<Bson> = self
            .bounds
            .iter()
            .map(|(min, max)| {
                Bson::Document(doc! {"$expr": {"$and": [
                    {"$gte": [tuple.clone(), values(min)]},
                    {"$lt": [tuple.clone(), values(max)]},
                ]}})
            })
            .collect();
        Some(doc! {"$nor": ranges})
    }

    /// The expression that makes a shard return the key values:
    /// `["$a", "$b.c"]` (a missing value comes back as null).
    pub(crate) fn key_values(&self) -> Bson {
        Bson::Array(
            self.pattern
                .fields()
                .map(|(name, _)| Bson::String(format!("${name}")))
                .collect(),
        )
    }

    /// Whether the shard owns `doc`: its key (from [`KEY_FIELD`] when
    /// present, else from the document) lies in none of the orphan ranges.
    /// A document whose key cannot be read (no sharded collection holds
    /// one) is kept.
    pub(crate) fn owns(&self, doc: &RawDocument) -> bool {
        let key = match doc.get_array(KEY_FIELD) {
            Ok(values) => self.pattern.key_from_values(values),
            Err(_) => self.pattern.extract_key(doc),
        };
        match key {
            Ok(k) => !self.ranges.iter().any(|(min, max)| *min <= k && k < *max),
            Err(_) => true,
        }
    }

    /// The shard-key field paths.
    fn key_paths(&self) -> Vec<&str> {
        self.pattern.fields().map(|(name, _)| name).collect()
    }

    /// The projection to send the shard instead of the client's, so every
    /// returned document carries its key, and how to undo the change.
    pub(crate) fn reshape_projection(
        &self,
        client: Option<&Document>,
    ) -> (Option<Document>, Reshape) {
        let Some(p) = client.filter(|p| !p.is_empty()) else {
            return (client.cloned(), Reshape::default());
        };
        if is_inclusion(p) {
            let mut out = p.clone();
            out.insert(KEY_FIELD, self.key_values());
            let reshape = Reshape {
                hidden: true,
                removed: Vec::new(),
            };
            return (Some(out), reshape);
        }
        // An exclusion: keep the key fields, exclude them here afterwards.
        let keys = self.key_paths();
        let mut out = Document::new();
        let mut removed = Vec::new();
        for (path, value) in flatten(p) {
            let overlaps = keys.iter().any(|k| paths_overlap(k, &path));
            if overlaps && excludes(&value) {
                removed.push(path);
            } else {
                out.insert(path, value);
            }
        }
        let reshape = Reshape {
            hidden: false,
            removed,
        };
        (Some(out), reshape)
    }

    /// The documents of a batch the shard owns, with [`Reshape`] undone.
    pub(crate) fn admit(
        &self,
        docs: Vec<RawDocumentBuf>,
        reshape: &Reshape,
    ) -> Vec<RawDocumentBuf> {
        docs.into_iter()
            .filter(|d| self.owns(d))
            .map(|d| reshape.undo(d))
            .collect()
    }
}
