//! The table of commands: every command the router knows, with its
//! privilege and who runs it (see `registry`).

use bson::Document;

use super::registry::{handler, namespace, router, CommandSpec, Privilege::*};
use super::{
    admin, bulk_write, chunks, cluster, cluster_params, data_distribution, diagnostic, handshake,
    host, ok, rw_concern, shard_collection, zones,
};
use crate::error::RouterError;

/// Every command spec.
pub(crate) fn specs() -> Vec<CommandSpec> {
    let mut specs = handshake_and_auth();
    specs.extend(users_and_sessions());
    specs.extend(diagnostics());
    specs.extend(host_management());
    specs.extend(sharding_admin());
    specs.extend(super::table_keys::shard_key_admin());
    specs.extend(chunk_admin());
    specs.extend(zones_and_balancer());
    specs.extend(data());
    specs.extend(database_admin());
    specs.extend(cluster_params::specs());
    specs
}

fn handshake_and_auth() -> Vec<CommandSpec> {
    vec![
        router(
            "hello",
            Nothing,
            handler!(|state, session, req| {
                let mut d = handshake::hello(session, req.body, req.name != "hello");
                crate::auth::hello_extras(state, session, req.body, &mut d).await;
                ok(d)
            }),
        )
        .aliases(&["isMaster", "ismaster"]),
        router(
            "saslStart",
            Nothing,
            handler!(|state, session, req| {
                if !state.config.auth {
                    return Err(auth_off());
                }
                crate::auth::sasl_start(state, session, req.db, req.body)
                    .await
                    .and_then(ok)
            }),
        ),
        router(
            "saslContinue",
            Nothing,
            handler!(|state, session, req| {
                if !state.config.auth {
                    return Err(auth_off());
                }
                crate::auth::sasl_continue(state, session, req.body)
                    .await
                    .and_then(ok)
            }),
        ),
        router(
            "authenticate",
            Nothing,
            handler!(|state, session, req| Err(auth_off())),
        ),
        router(
            "logout",
            Nothing,
            handler!(|state, session, req| {
                session.auth.users.clear();
                ok(Document::new())
            }),
        ),
    ]
}

fn users_and_sessions() -> Vec<CommandSpec> {
    vec![
        router(
            "createUser",
            UserAdmin,
            handler!(
                |state, session, req| crate::auth::user_command(state, session, req)
                    .await
                    .and_then(ok)
            ),
        )
        .aliases(&[
            "updateUser",
            "dropUser",
            "grantRolesToUser",
            "revokeRolesFromUser",
        ]),
        // Users see what they may: filtered in the command.
        router(
            "usersInfo",
            Nothing,
            handler!(
                |state, session, req| crate::auth::user_command(state, session, req)
                    .await
                    .and_then(ok)
            ),
        ),
        router(
            "createRole",
            UserAdmin,
            handler!(|state, session, req| crate::auth::role_command(state, req)
                .await
                .and_then(ok)),
        )
        .aliases(&[
            "updateRole",
            "dropRole",
            "grantRolesToRole",
            "revokeRolesFromRole",
            "grantPrivilegesToRole",
            "revokePrivilegesFromRole",
            "rolesInfo",
            "dropAllUsersFromDatabase",
            "dropAllRolesFromDatabase",
        ]),
        router(
            "endSessions",
            Nothing,
            handler!(|state, session, req| admin::end_sessions(state, req).await.and_then(ok)),
        ),
        router(
            "startSession",
            Nothing,
            handler!(|state, session, req| ok(diagnostic::start_session())),
        ),
        router(
            "commitTransaction",
            Nothing,
            handler!(|state, session, req| crate::txn::commit_transaction(state, req).await),
        ),
        router(
            "abortTransaction",
            Nothing,
            handler!(|state, session, req| crate::txn::abort_transaction(state, req).await),
        ),
        // Every shard may hold state of these sessions: each is refreshed
        // (best effort, as endSessions).
        router(
            "refreshSessions",
            Nothing,
            handler!(|state, session, req| admin::end_sessions(state, req).await.and_then(ok)),
        ),
    ]
}

fn auth_off() -> RouterError {
    RouterError::command(
        18,
        "AuthenticationFailed",
        "authentication is not enabled on this router; connect without credentials",
    )
}

fn diagnostics() -> Vec<CommandSpec> {
    vec![
        router(
            "ping",
            Nothing,
            handler!(|state, session, req| ok(Document::new())),
        ),
        router(
            "isdbgrid",
            Nothing,
            handler!(|state, session, req| ok(
                bson::doc! {"isdbgrid": 1, "hostname": &state.listen}
            )),
        ),
        router(
            "buildInfo",
            Nothing,
            handler!(|state, session, req| ok(diagnostic::build_info())),
        )
        .aliases(&["buildinfo"]),
        router(
            "whatsmyuri",
            Nothing,
            handler!(|state, session, req| ok(bson::doc! {"you": &session.peer})),
        ),
        router(
            "connectionStatus",
            Nothing,
            handler!(|state, session, req| ok(diagnostic::connection_status(session))),
        ),
        router(
            "listCommands",
            Nothing,
            handler!(|state, session, req| ok(list_commands())),
        ),
        router(
            "serverStatus",
            ClusterMonitor,
            handler!(|state, session, req| ok(diagnostic::server_status(state))),
        ),
        router(
            "getCmdLineOpts",
            ClusterMonitor,
            handler!(|state, session, req| ok(diagnostic::cmd_line_opts(state))),
        ),
        router(
            "getParameter",
            ClusterMonitor,
            handler!(|state, session, req| diagnostic::get_parameter(state, req.body).and_then(ok)),
        ),
        router(
            "getLog",
            ClusterMonitor,
            handler!(|state, session, req| diagnostic::get_log(req.body).and_then(ok)),
        ),
    ]
}

fn host_management() -> Vec<CommandSpec> {
    vec![
        router(
            "configureFailPoint",
            HostManager,
            handler!(|state, session, req| {
                if !state.config.enable_test_commands {
                    return Err(RouterError::command_not_found(req.name));
                }
                match req.body.get_str(req.name).ok() {
                    Some(admin::CLOSE_AFTER_WRITE) => {
                        admin::router_fail_point(state, req.body).and_then(ok)
                    }
                    Some(admin::PAUSE_MIGRATION) => {
                        admin::pause_fail_point(state, req.body).await.and_then(ok)
                    }
                    Some("failCommand") => state.fail_points.configure(req.body).and_then(ok),
                    Some(admin::PAUSE_AFTER_COMMIT_DECISION) => {
                        admin::commit_pause_fail_point(state, req.body).and_then(ok)
                    }
                    _ => admin::to_every_shard(state, req).await.and_then(ok),
                }
            }),
        ),
        router(
            "fsync",
            HostManager,
            handler!(|state, session, req| admin::fsync(state, req).await.and_then(ok)),
        )
        .aliases(&["fsyncUnlock"]),
        router(
            "killAllSessions",
            HostManager,
            handler!(|state, session, req| admin::to_every_shard(state, req).await.and_then(ok)),
        )
        .aliases(&["killAllSessionsByPattern"]),
        router(
            "getDefaultRWConcern",
            ClusterMonitor,
            handler!(|state, session, req| rw_concern::get(state).await.and_then(ok)),
        ),
        router(
            "setDefaultRWConcern",
            ClusterManager,
            handler!(|state, session, req| rw_concern::set(state, req).await.and_then(ok)),
        ),
        router(
            "hostInfo",
            ClusterMonitor,
            handler!(|state, session, req| ok(host::host_info())),
        ),
        router(
            "connPoolStats",
            ClusterMonitor,
            handler!(|state, session, req| ok(host::conn_pool_stats(state))),
        ),
        router(
            "currentOp",
            ClusterMonitor,
            handler!(|state, session, req| host::current_op(state, req).await.and_then(ok)),
        ),
        router(
            "killOp",
            HostManager,
            handler!(|state, session, req| host::kill_op(state, req).await.and_then(ok)),
        ),
        namespace("top", ClusterMonitor).aliases(&["netstat"]),
        router(
            "setParameter",
            HostManager,
            handler!(|state, session, req| diagnostic::set_parameter(state, req.body).and_then(ok)),
        ),
    ]
}

fn sharding_admin() -> Vec<CommandSpec> {
    vec![
        router(
            "addShard",
            ClusterManager,
            handler!(|state, session, req| admin::add_shard(state, req).await.and_then(ok)),
        )
        .aliases(&["addshard"]),
        router(
            "listShards",
            ClusterMonitor,
            handler!(|state, session, req| admin::list_shards(state, req).await.and_then(ok)),
        )
        .aliases(&["listshards"]),
        router(
            "enableSharding",
            ClusterManager,
            handler!(|state, session, req| admin::enable_sharding(state, req).await.and_then(ok)),
        )
        .aliases(&["enablesharding"]),
        router(
            "shardCollection",
            ClusterManager,
            handler!(
                |state, session, req| shard_collection::shard_collection(state, req)
                    .await
                    .and_then(ok)
            ),
        )
        .aliases(&["shardcollection"]),
    ]
}

fn chunk_admin() -> Vec<CommandSpec> {
    vec![
        router(
            "split",
            ClusterManager,
            handler!(|state, session, req| chunks::split(state, req).await.and_then(ok)),
        ),
        router(
            "mergeChunks",
            ClusterManager,
            handler!(|state, session, req| chunks::merge_chunks(state, req).await.and_then(ok)),
        ),
        router(
            "moveChunk",
            ClusterManager,
            handler!(|state, session, req| chunks::move_range(state, req).await.and_then(ok)),
        )
        .aliases(&["movechunk", "moveRange"]),
        router(
            "movePrimary",
            ClusterManager,
            handler!(|state, session, req| {
                let (reply, details) = crate::ddl::move_primary::move_primary(state, req).await?;
                if !details.is_empty() {
                    let db = req.body.get_str("movePrimary").unwrap_or_default();
                    cluster::log_change(state, "movePrimary", db, details).await;
                }
                ok(reply)
            }),
        )
        .aliases(&["moveprimary"]),
        router(
            "clearJumboFlag",
            ClusterManager,
            handler!(|state, session, req| chunks::clear_jumbo_flag(state, req).await.and_then(ok)),
        ),
        router(
            "setAllowMigrations",
            ClusterManager,
            handler!(
                |state, session, req| cluster::set_allow_migrations(state, req).await.and_then(ok)
            ),
        ),
        router(
            "mergeAllChunksOnShard",
            ClusterManager,
            handler!(|state, session, req| chunks::merge_all_on_shard(state, req)
                .await
                .and_then(ok)),
        ),
        router(
            "configureCollectionBalancing",
            ClusterManager,
            handler!(
                |state, session, req| cluster::configure_collection_balancing(state, req)
                    .await
                    .and_then(ok)
            ),
        ),
    ]
}

fn zones_and_balancer() -> Vec<CommandSpec> {
    vec![
        router(
            "addShardToZone",
            ClusterManager,
            handler!(|state, session, req| zones::shard_zone(state, req, true).await.and_then(ok)),
        )
        .aliases(&["addShardTag"]),
        router(
            "removeShardFromZone",
            ClusterManager,
            handler!(|state, session, req| zones::shard_zone(state, req, false).await.and_then(ok)),
        )
        .aliases(&["removeShardTag"]),
        router(
            "updateZoneKeyRange",
            ClusterManager,
            handler!(
                |state, session, req| zones::update_zone_key_range(state, req).await.and_then(ok)
            ),
        )
        .aliases(&["addTagRange", "removeTagRange"]),
        router(
            "removeShard",
            ClusterManager,
            handler!(|state, session, req| cluster::remove_shard(state, req).await.and_then(ok)),
        )
        .aliases(&["removeshard"]),
        router(
            "balancerStart",
            ClusterManager,
            handler!(
                |state, session, req| cluster::set_balancer(state, req, true).await.and_then(ok)
            ),
        ),
        router(
            "balancerStop",
            ClusterManager,
            handler!(
                |state, session, req| cluster::set_balancer(state, req, false).await.and_then(ok)
            ),
        ),
        router(
            "balancerStatus",
            ClusterMonitor,
            handler!(|state, session, req| cluster::balancer_status(state, req).await.and_then(ok)),
        ),
        router(
            "flushRouterConfig",
            ClusterManager,
            handler!(|state, session, req| cluster::flush_router_config(state).await.and_then(ok)),
        )
        .aliases(&["flushrouterconfig"]),
        router(
            "getShardVersion",
            ClusterMonitor,
            handler!(|state, session, req| cluster::get_shard_version(state, req)
                .await
                .and_then(ok)),
        )
        .aliases(&["getshardversion"]),
    ]
}

fn data() -> Vec<CommandSpec> {
    vec![
        namespace("find", Read),
        namespace("getMore", Read),
        namespace("killCursors", Read),
        namespace("count", Read),
        namespace("distinct", Read),
        namespace("filemd5", Read),
        namespace("aggregate", ReadOrOut),
        namespace("mapReduce", ReadOrOut).aliases(&["mapreduce"]),
        namespace("explain", Read),
        namespace("listCollections", Read),
        namespace("listIndexes", Read),
        namespace("listSearchIndexes", Read),
        namespace("collStats", Read),
        router(
            "dataSize",
            Read,
            handler!(|state, session, req| crate::ddl::data_size::data_size(state, req).await),
        )
        .aliases(&["datasize"]),
        router(
            "dbStats",
            Read,
            handler!(|state, session, req| match req.db {
                "admin" | "config" | "local" => super::route(state, session, req).await,
                _ => crate::ddl::stats::db_stats(state, req).await,
            }),
        )
        .aliases(&["dbstats"]),
        router(
            "balancerCollectionStatus",
            ClusterMonitor,
            handler!(|state, session, req| {
                data_distribution::balancer_collection_status(state, req)
                    .await
                    .and_then(ok)
            }),
        ),
        router(
            "checkMetadataConsistency",
            ClusterManager,
            handler!(|state, session, req| crate::ddl::consistency::check(state, req).await),
        ),
        router(
            "listDatabases",
            Nothing,
            handler!(|state, session, req| admin::list_databases(state, req).await.and_then(ok)),
        ),
        namespace("insert", Write).writes(true),
        namespace("update", Write).writes(true),
        namespace("delete", Write).writes(true),
        namespace("findAndModify", Write)
            .aliases(&["findandmodify"])
            .writes(true),
        router(
            "bulkWrite",
            Write,
            handler!(|state, session, req| bulk_write::bulk_write(state, session, req).await),
        )
        .writes(true),
        namespace("create", Write),
        namespace("drop", Write),
        namespace("createIndexes", Write),
        namespace("dropIndexes", Write).aliases(&["deleteIndexes"]),
        namespace("renameCollection", Write),
        namespace("convertToCapped", Write),
        namespace("cloneCollectionAsCapped", Write),
        namespace("createSearchIndexes", Write).aliases(&["dropSearchIndex", "updateSearchIndex"]),
    ]
}

fn database_admin() -> Vec<CommandSpec> {
    vec![
        router(
            "dropDatabase",
            DbAdmin,
            handler!(|state, session, req| admin::drop_database(state, req).await),
        ),
        namespace("collMod", DbAdmin),
        namespace("compact", DbAdmin),
        namespace("validate", DbAdmin),
        namespace("reIndex", DbAdmin),
        router(
            "profile",
            DbAdmin,
            handler!(|state, session, req| diagnostic::profile(state, req.body).and_then(ok)),
        ),
        namespace("planCacheClear", DbAdmin).aliases(&[
            "planCacheClearFilters",
            "planCacheListFilters",
            "planCacheSetFilter",
        ]),
    ]
}

/// `listCommands`: every command in the registry, as mongos lists them.
fn list_commands() -> Document {
    let mut commands = Document::new();
    let mut names: Vec<(&str, &CommandSpec)> = crate::commands::registry()
        .all()
        .iter()
        .flat_map(|s| {
            std::iter::once(s.name)
                .chain(s.aliases.iter().copied())
                .map(move |n| (n, s))
        })
        .collect();
    names.sort_by_key(|(n, _)| *n);
    for (name, spec) in names {
        commands.insert(
            name,
            bson::doc! {
                "help": "",
                "requiresAuth": spec.privilege != Nothing,
                "secondaryOk": true,
                "adminOnly": false,
                "apiVersions": [],
                "deprecatedApiVersions": [],
            },
        );
    }
    bson::doc! {"commands": commands}
}
