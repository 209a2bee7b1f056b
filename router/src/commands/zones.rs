//! Zones: `addShardToZone`, `removeShardFromZone`, `updateZoneKeyRange`
//! and the legacy `addTagRange` / `removeTagRange`.

use std::sync::Arc;

use bson::{Bson, Document};
use shardgate_config_store::shard_key::ShardKeyPattern;

use super::admin::admin_only;
use super::sharding::{document_arg, key_error, name_arg, split_ns};
use super::Request;
use crate::error::{Result, RouterError};
use crate::state::RouterState;

/// `addShardToZone` / `removeShardFromZone`.
pub(crate) async fn shard_zone(
    state: &Arc<RouterState>,
    req: &Request<'_>,
    add: bool,
) -> Result<Document> {
    admin_only(req)?;
    let shard = name_arg(req, "a shard name")?;
    let zone = req
        .body
        .get_str("zone")
        .or_else(|_| req.body.get_str("tag"))
        .map_err(|_| RouterError::bad_value("'zone' must be a string"))?;
    if zone.is_empty() {
        return Err(RouterError::bad_value("zone name must not be empty"));
    }
    if add {
        state.catalog.add_shard_to_zone(shard, zone).await?;
    } else {
        state.catalog.remove_shard_from_zone(shard, zone).await?;
    }
    state.placement.refresh_shards(&state.catalog).await?;
    Ok(Document::new())
}

/// `updateZoneKeyRange` (`zone: null` removes the range), and the legacy
/// `addTagRange` (`tag` or `zone`) and `removeTagRange`.
pub(crate) async fn update_zone_key_range(
    state: &Arc<RouterState>,
    req: &Request<'_>,
) -> Result<Document> {
    admin_only(req)?;
    let ns = name_arg(req, "a namespace string")?;
    split_ns(ns)?;
    let min = document_arg(req.body, "min")?;
    let max = document_arg(req.body, "max")?;
    let zone = if req.name == "removeTagRange" {
        None
    } else {
        let value = req
            .body
            .get("zone")
            .ok()
            .flatten()
            .or(req.body.get("tag").ok().flatten());
        match value {
            Some(bson::RawBsonRef::String(s)) if !s.is_empty() => Some(s.to_owned()),
            Some(bson::RawBsonRef::Null) => None,
            _ => return Err(RouterError::bad_value("'zone' must be a zone name or null")),
        }
    };
    let pattern = match state.routing.get(ns) {
        Some(r) => r.pattern.clone(),
        None => match state.catalog.collection(ns).await? {
            Some(c) => ShardKeyPattern::parse(&c.key).map_err(key_error)?,
            None => pattern_of_bounds(&min, &max)?,
        },
    };
    state
        .catalog
        .update_zone_key_range(ns, &pattern, &min, &max, zone.as_deref())
        .await?;
    Ok(Document::new())
}

/// Before a collection is sharded, its zone bounds define the key order:
/// their fields, ascending, the same in `min` and `max`.
fn pattern_of_bounds(min: &Document, max: &Document) -> Result<ShardKeyPattern> {
    let fields: Vec<&String> = min.keys().collect();
    if fields.is_empty() || fields != max.keys().collect::<Vec<_>>() {
        return Err(RouterError::bad_value(format!(
            "zone range bounds {min} and {max} must name the same shard-key fields in the same order"
        )));
    }
    let mut key = Document::new();
    for f in fields {
        key.insert(f.clone(), Bson::Int32(1));
    }
    ShardKeyPattern::parse(&key).map_err(key_error)
}
