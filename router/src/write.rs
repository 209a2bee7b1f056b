//! The sharded write path: `insert`, `update`, `delete` and `findAndModify`
//! on sharded collections.
//!
//! - `plan`: routing each statement and grouping statements into per-shard
//!   batches (pure).
//! - `critical`: the critical-section hold — a write to a range a migration
//!   is committing waits, then goes to the new owner.
//! - `exec`: sending the batches and merging the shards' replies as mongos
//!   does; `findAndModify`.
//! - `owned`: filter-targeted writes on a shard holding hashed orphans.
//! - `without_key`: single-document writes without the shard key, in two
//!   phases (find one owned match, then write it by `_id` on its owner).
//! - `key_update`: single-document updates that change the shard key,
//!   moving the document to its new owner in a transaction.

pub mod plan;

pub(crate) mod critical;
pub(crate) mod exec;
mod key_update;
mod owned;
mod projection;
mod without_key;

#[cfg(test)]
mod tests;
