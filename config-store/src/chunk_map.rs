//! Placeholder: filled by the chunk-map work in progress.
