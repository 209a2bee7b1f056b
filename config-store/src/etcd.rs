//! Placeholder: filled by the etcd store work in progress.
