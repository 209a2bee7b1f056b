//! What the router knows of the cluster's metadata, kept current from the
//! config store (`background` follows its watch):
//!
//! - `routing`: per sharded collection, its shard key, chunk map, orphan
//!   ranges and ranges in a critical section;
//! - `placement`: the shards, and each database's primary shard.

pub(crate) mod placement;
pub(crate) mod routing;
