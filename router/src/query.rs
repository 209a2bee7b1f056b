//! Placeholder: filled by the query-engine work in progress.
