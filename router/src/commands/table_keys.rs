//! The commands that change or judge a collection's shard key.

use super::registry::{handler, router, CommandSpec, Privilege::*};
use super::{analyze_shard_key, ok, refine_shard_key};
use crate::ddl::reshard;

pub(super) fn shard_key_admin() -> Vec<CommandSpec> {
    vec![
        router(
            "refineCollectionShardKey",
            ClusterManager,
            handler!(|state, session, req| refine_shard_key::refine(state, req).await.and_then(ok)),
        ),
        router(
            "analyzeShardKey",
            ClusterManager,
            handler!(|state, session, req| analyze_shard_key::analyze(state, req)
                .await
                .and_then(ok)),
        ),
        router(
            "configureQueryAnalyzer",
            ClusterManager,
            handler!(
                |state, session, req| crate::query_analysis::configure(state, req)
                    .await
                    .and_then(ok)
            ),
        ),
        router(
            "reshardCollection",
            ClusterManager,
            handler!(|state, session, req| reshard::reshard(state, req).await.and_then(ok)),
        ),
        router(
            "moveCollection",
            ClusterManager,
            handler!(
                |state, session, req| crate::ddl::move_collection::move_collection(state, req)
                    .await
                    .and_then(ok)
            ),
        ),
        router(
            "unshardCollection",
            ClusterManager,
            handler!(|state, session, req| reshard::unshard::unshard(state, req)
                .await
                .and_then(ok)),
        ),
        router(
            "commitReshardCollection",
            ClusterManager,
            handler!(|state, session, req| reshard::commit_now(state, req).await.and_then(ok)),
        ),
        router(
            "abortReshardCollection",
            ClusterManager,
            handler!(|state, session, req| reshard::abort(state, req).await.and_then(ok)),
        ),
    ]
}
