//! Placeholder: filled by the shard-key work in progress.
