//! The routing table: for each sharded collection, its shard key and chunk
//! map, kept current from the config store. A refresh never installs a
//! version older than the one held.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use shardgate_config_store::catalog::CollectionVersion;
use shardgate_config_store::chunk_map::{ChunkMap, ChunkVersion, RoutingChunk};
use shardgate_config_store::model::{CollectionType, MigrationState, OrphanRange};
use shardgate_config_store::shard_key::{KeyBytes, ShardKeyPattern};
use shardgate_config_store::{Catalog, StoreError};

use crate::error::{Result, RouterError};

/// How one sharded collection is routed.
pub(crate) struct CollectionRouting {
    /// The collection entry.
    pub collection: CollectionType,
    /// Its shard key.
    pub pattern: ShardKeyPattern,
    /// Its chunks.
    pub chunks: ChunkMap,
    /// Ranges some shard holds without owning them (excluded from its reads).
    pub orphans: Vec<OrphanRange>,
    /// Encoded `[min, max)` of ranges in a migration's critical section:
    /// writes to them wait.
    pub critical: Vec<(KeyBytes, KeyBytes)>,
}

impl CollectionRouting {
    /// The collection version (highest chunk version).
    pub(crate) fn version(&self) -> CollectionVersion {
        let v = self.chunks.version();
        CollectionVersion {
            major: v.major,
            minor: v.minor,
        }
    }

    /// The shard holding every chunk, when there is only one.
    pub(crate) fn single_shard(&self) -> Option<String> {
        let shards = self.chunks.shards();
        match shards.len() {
            1 => shards.into_iter().next().map(str::to_owned),
            _ => None,
        }
    }
}

/// Every sharded collection this router knows, by namespace.
pub(crate) struct RoutingTable {
    collections: RwLock<HashMap<String, Arc<CollectionRouting>>>,
    /// Bumped whenever a collection's routing is installed or removed.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for RoutingTable {
    fn default() -> Self {
        RoutingTable {
            collections: RwLock::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl RoutingTable {
    /// The routing of `ns`, if it is sharded.
    pub(crate) fn get(&self, ns: &str) -> Option<Arc<CollectionRouting>> {
        self.collections.read().ok()?.get(ns).cloned()
    }

    /// A receiver that sees every later routing change.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every sharded collection.
    pub(crate) fn all(&self) -> Vec<Arc<CollectionRouting>> {
        self.collections
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many chunks `shard` owns over all collections.
    pub(crate) fn chunks_on(&self, shard: &str) -> usize {
        self.all()
            .iter()
            .map(|r| r.chunks.iter().filter(|c| c.shard == shard).count())
            .sum()
    }

    /// Loads every sharded collection from the store.
    pub(crate) async fn load_all(&self, catalog: &Catalog) -> Result<()> {
        let collections = catalog.collections().await?;
        let names: Vec<String> = collections.iter().map(|c| c.ns.clone()).collect();
        for coll in collections {
            let ns = coll.ns.clone();
            self.install(build(catalog, coll).await?, &ns);
        }
        if let Ok(mut m) = self.collections.write() {
            m.retain(|ns, _| names.contains(ns));
        }
        Ok(())
    }

    /// Re-reads one collection (removing it when it is no longer sharded).
    pub(crate) async fn refresh(&self, catalog: &Catalog, ns: &str) -> Result<()> {
        match catalog.collection(ns).await? {
            Some(coll) => {
                let routing = build(catalog, coll).await?;
                self.install(routing, ns);
            }
            None => {
                if let Ok(mut m) = self.collections.write() {
                    m.remove(ns);
                }
                self.changes.send_modify(|v| *v += 1);
            }
        }
        Ok(())
    }

    /// Installs `routing` unless the held one is newer.
    fn install(&self, routing: CollectionRouting, ns: &str) {
        let Ok(mut m) = self.collections.write() else {
            return;
        };
        if let Some(held) = m.get(ns) {
            let same_epoch = held.collection.epoch == routing.collection.epoch;
            let older = if same_epoch {
                routing.version() < held.version()
            } else {
                routing.collection.timestamp < held.collection.timestamp
            };
            if older {
                return;
            }
        }
        m.insert(ns.to_owned(), Arc::new(routing));
        drop(m);
        self.changes.send_modify(|v| *v += 1);
    }
}

/// `reshardingFields.state` while writes are held for the commit.
pub(crate) const RESHARD_COMMITTING: &str = "committing";

/// Reads the chunks of `coll` and builds its chunk map.
async fn build(catalog: &Catalog, coll: CollectionType) -> Result<CollectionRouting> {
    let pattern = ShardKeyPattern::parse(&coll.key)
        .map_err(|e| RouterError::Store(StoreError::Invariant(format!("{}: {e}", coll.ns))))?;
    let mut routing_chunks = Vec::new();
    for (chunk, _) in catalog.chunks(&coll.ns).await? {
        let bad = |e: shardgate_config_store::shard_key::ShardKeyError| {
            RouterError::Store(StoreError::Invariant(format!("chunk of {}: {e}", coll.ns)))
        };
        routing_chunks.push(RoutingChunk {
            min: pattern.encode_bound(&chunk.min).map_err(bad)?,
            max: pattern.encode_bound(&chunk.max).map_err(bad)?,
            shard: chunk.shard.clone(),
            version: ChunkVersion {
                epoch: chunk.epoch,
                major: chunk.major(),
                minor: chunk.minor(),
            },
        });
    }
    let chunks = ChunkMap::new(routing_chunks)
        .map_err(|e| RouterError::Store(StoreError::Invariant(format!("{}: {e}", coll.ns))))?;
    let orphans = catalog.orphan_ranges(&coll.ns).await?;
    let mut critical = Vec::new();
    for m in catalog.migrations(&coll.ns).await? {
        if m.state == MigrationState::Critical {
            let bad = |e: shardgate_config_store::shard_key::ShardKeyError| {
                RouterError::Store(StoreError::Invariant(format!(
                    "migration of {}: {e}",
                    coll.ns
                )))
            };
            critical.push((
                pattern.encode_bound(&m.min).map_err(bad)?,
                pattern.encode_bound(&m.max).map_err(bad)?,
            ));
        }
    }
    let committing = coll
        .resharding
        .as_ref()
        .is_some_and(|r| r.state == RESHARD_COMMITTING);
    if coll.dropping || committing {
        // A drop in progress, or a resharding's commit, holds writes to
        // the whole key space.
        let edge = |b: bson::Bson| -> bson::Document {
            pattern
                .fields()
                .map(|(f, _)| (f.to_owned(), b.clone()))
                .collect()
        };
        let bound = |d: &bson::Document| {
            pattern
                .encode_bound(d)
                .map_err(|e| RouterError::Store(StoreError::Invariant(format!("{}: {e}", coll.ns))))
        };
        critical.push((
            bound(&edge(bson::Bson::MinKey))?,
            bound(&edge(bson::Bson::MaxKey))?,
        ));
    }
    Ok(CollectionRouting {
        collection: coll,
        pattern,
        chunks,
        orphans,
        critical,
    })
}
