//! The shardgate balancer: chunk splitting and migration between shards.
//!
//! Nothing lives here yet. The balancer issue fills this crate (lease lock,
//! balancing rounds, the migration protocol); until then no router runs a
//! balancer and `balancerStatus` is not served.
