//! Authentication and authorization at the router (`auth = true`).
//!
//! Users live in the config store (`users/<db>.<user>`) with salted SCRAM
//! keys only (`shardgate_shard_client::scram`), never passwords. Clients authenticate with
//! `saslStart`/`saslContinue` (SCRAM-SHA-256 or SCRAM-SHA-1), also inside
//! `hello` (`speculativeAuthenticate`, `saslSupportedMechs`). Every command
//! is then checked against the built-in roles of the connection's users;
//! an unauthorized one gets Unauthorized (13). With no user yet, a client
//! on a loopback address may create the first user (the localhost
//! exception).

use shardgate_shard_client::scram;

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document, RawDocument};
use serde::{Deserialize, Serialize};
use shardgate_config_store::store::Txn;

use crate::error::{Result, RouterError};
pub(crate) use crate::session::{AuthedUser, RoleRef};
use crate::session::{InProgress, Request, Session};
use crate::state::RouterState;
use scram::{Conversation, Credential, Mechanism};

mod roles;
mod users;
pub(crate) use roles::role_command;
pub(crate) use users::user_command;

const USERS: &str = "users/";

/// The built-in roles the router knows.
pub(crate) const ROLES: [&str; 14] = [
    "read",
    "readWrite",
    "dbAdmin",
    "dbOwner",
    "userAdmin",
    "clusterAdmin",
    "clusterManager",
    "clusterMonitor",
    "hostManager",
    "readAnyDatabase",
    "readWriteAnyDatabase",
    "dbAdminAnyDatabase",
    "userAdminAnyDatabase",
    "root",
];

/// Stored credentials, by mechanism.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Credentials {
    #[serde(
        rename = "SCRAM-SHA-1",
        skip_serializing_if = "Option::is_none",
        default
    )]
    sha1: Option<Credential>,
    #[serde(
        rename = "SCRAM-SHA-256",
        skip_serializing_if = "Option::is_none",
        default
    )]
    sha256: Option<Credential>,
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserDoc {
    /// `<db>.<user>`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Name.
    pub user: String,
    /// Authentication database.
    pub db: String,
    /// Granted roles.
    pub roles: Vec<RoleRef>,
    credentials: Credentials,
}

impl UserDoc {
    fn mechanisms(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.credentials.sha1.is_some() {
            m.push("SCRAM-SHA-1");
        }
        if self.credentials.sha256.is_some() {
            m.push("SCRAM-SHA-256");
        }
        m
    }

    /// What `usersInfo` shows: never the keys.
    fn public(&self) -> Document {
        let roles: Vec<Bson> = self
            .roles
            .iter()
            .map(|r| Bson::Document(doc! {"role": &r.role, "db": &r.db}))
            .collect();
        doc! {"_id": &self.id, "user": &self.user, "db": &self.db, "roles": roles, "mechanisms": self.mechanisms()}
    }
}

fn failed() -> RouterError {
    RouterError::command(18, "AuthenticationFailed", "Authentication failed.")
}

fn key(db: &str, user: &str) -> String {
    format!("{USERS}{db}.{user}")
}

async fn find_user(state: &RouterState, db: &str, user: &str) -> Result<Option<UserDoc>> {
    match state.catalog.store().get(&key(db, user)).await? {
        Some(v) => Ok(bson::deserialize_from_slice(&v.value).ok()),
        None => Ok(None),
    }
}

async fn any_user(state: &RouterState) -> Result<bool> {
    Ok(!state.catalog.store().list(USERS).await?.is_empty())
}

async fn put_user(state: &RouterState, u: &UserDoc, create: bool) -> Result<()> {
    let k = key(&u.db, &u.user);
    let bytes = bson::serialize_to_vec(u).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let txn = if create {
        Txn::default().absent(&k).put(k, bytes)
    } else {
        Txn::default().put(k, bytes)
    };
    match state.catalog.store().txn(txn).await? {
        shardgate_config_store::store::TxnOutcome::Committed(_) => Ok(()),
        shardgate_config_store::store::TxnOutcome::Conflict => Err(RouterError::command(
            51003,
            "Location51003",
            format!("User \"{}@{}\" already exists", u.user, u.db),
        )),
    }
}

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

fn payload(body: &RawDocument) -> Result<Vec<u8>> {
    match body.get("payload") {
        Ok(Some(bson::RawBsonRef::Binary(b))) => Ok(b.bytes.to_vec()),
        Ok(Some(bson::RawBsonRef::String(s))) => Ok(s.as_bytes().to_vec()),
        _ => Err(RouterError::bad_value("SASL payload missing")),
    }
}

/// `saslStart` (also the `speculativeAuthenticate` of `hello`).
pub(crate) async fn sasl_start(
    state: &RouterState,
    session: &mut Session,
    db: &str,
    body: &RawDocument,
) -> Result<Document> {
    let mechanism = body
        .get_str("mechanism")
        .ok()
        .and_then(Mechanism::from_name)
        .ok_or_else(|| {
            RouterError::command(
                334,
                "MechanismUnavailable",
                "only SCRAM-SHA-256 and SCRAM-SHA-1 are supported",
            )
        })?;
    let (user, nonce, bare) =
        scram::parse_client_first(&payload(body)?).map_err(RouterError::bad_value)?;
    let stored = find_user(state, db, &user).await?.ok_or_else(failed)?;
    let credential = match mechanism {
        Mechanism::Sha1 => stored.credentials.sha1.clone(),
        Mechanism::Sha256 => stored.credentials.sha256.clone(),
    }
    .ok_or_else(failed)?;
    let (conversation, server_first) =
        Conversation::start(mechanism, user, &nonce, bare, credential);
    session.auth.next_conversation += 1;
    let id = session.auth.next_conversation;
    let skip_empty = body
        .get_document("options")
        .and_then(|o| o.get_bool("skipEmptyExchange"))
        .unwrap_or(false);
    session.auth.conversation = Some(InProgress {
        id,
        db: db.to_owned(),
        conversation,
        proven: false,
        skip_empty,
    });
    Ok(doc! {"conversationId": id, "done": false, "payload": binary(server_first)})
}

/// `saslContinue`.
pub(crate) async fn sasl_continue(
    state: &RouterState,
    session: &mut Session,
    body: &RawDocument,
) -> Result<Document> {
    let id = crate::session::number_field(body, "conversationId").unwrap_or(-1) as i32;
    let Some(InProgress {
        id: cid,
        db,
        conversation,
        proven,
        skip_empty,
    }) = session.auth.conversation.take()
    else {
        return Err(RouterError::command(
            17,
            "ProtocolError",
            "no SASL session state found",
        ));
    };
    if cid != id {
        return Err(RouterError::command(
            17,
            "ProtocolError",
            "unknown conversationId",
        ));
    }
    if proven {
        // The client's empty last step.
        return Ok(doc! {"conversationId": id, "done": true, "payload": binary(Vec::new())});
    }
    let server_final = match conversation.finish(&payload(body)?) {
        Ok(f) => f,
        Err(e) => {
            tracing::info!(user = %conversation.user, %db, error = %e, peer = %session.peer, "authentication failed");
            return Err(failed());
        }
    };
    let user = find_user(state, &db, &conversation.user)
        .await?
        .ok_or_else(failed)?;
    tracing::info!(user = %user.user, db = %user.db, peer = %session.peer, "authenticated");
    session
        .auth
        .users
        .retain(|u| !(u.db == user.db && u.user == user.user));
    session.auth.users.push(AuthedUser {
        db: user.db.clone(),
        user: user.user.clone(),
        roles: user.roles.clone(),
    });
    // Drivers ask to skip the empty exchange; others send one more step.
    if !skip_empty {
        session.auth.conversation = Some(InProgress {
            id: cid,
            db,
            conversation,
            proven: true,
            skip_empty,
        });
    }
    Ok(doc! {"conversationId": id, "done": skip_empty, "payload": binary(server_final)})
}

/// What `hello` adds with auth on: `saslSupportedMechs` and the first step
/// of `speculativeAuthenticate`.
pub(crate) async fn hello_extras(
    state: &RouterState,
    session: &mut Session,
    body: &RawDocument,
    reply: &mut Document,
) {
    if !state.config.auth {
        return;
    }
    if let Ok(name) = body.get_str("saslSupportedMechs") {
        if let Some((db, user)) = name.split_once('.') {
            if let Ok(Some(u)) = find_user(state, db, user).await {
                reply.insert("saslSupportedMechs", u.mechanisms());
            }
        }
    }
    if let Ok(spec) = body.get_document("speculativeAuthenticate") {
        let db = spec.get_str("db").unwrap_or("admin").to_owned();
        if spec.get("saslStart").ok().flatten().is_some() {
            if let Ok(first) = sasl_start(state, session, &db, spec).await {
                reply.insert("speculativeAuthenticate", first);
            }
        }
    }
}

/// What a command needs of the user's roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing (handshake, authentication, `ping`, …).
    Nothing,
    /// Reading the database (`read`).
    Read(String),
    /// Writing the database (`readWrite`).
    Write(String),
    /// Administering the database (`dbAdmin`).
    DbAdmin(String),
    /// Managing the database's users (`userAdmin`).
    UserAdmin(String),
    /// Watching the cluster (`clusterMonitor`).
    ClusterMonitor,
    /// Changing the cluster's sharding (`clusterManager`).
    ClusterManager,
    /// Managing the server processes (`hostManager`).
    HostManager,
    /// Every action on the cluster (`root`): commands the router does not
    /// know.
    AnyAction,
}

fn grants(roles: &[RoleRef], need: &Need) -> bool {
    roles.iter().any(|r| {
        let on = |db: &str| r.db == db;
        match (r.role.as_str(), need) {
            ("root", _) => true,
            (_, Need::Nothing) => true,
            (_, Need::AnyAction) => false,
            ("readAnyDatabase", Need::Read(_)) => true,
            ("readWriteAnyDatabase", Need::Read(_) | Need::Write(_)) => true,
            ("dbAdminAnyDatabase", Need::DbAdmin(_)) => true,
            ("clusterAdmin", Need::ClusterMonitor | Need::ClusterManager | Need::HostManager) => {
                true
            }
            ("clusterManager", Need::ClusterManager) => true,
            ("clusterMonitor", Need::ClusterMonitor) => true,
            ("hostManager", Need::HostManager) => true,
            ("clusterAdmin" | "clusterManager" | "clusterMonitor", Need::Read(db)) => {
                db == "config"
            }
            ("userAdminAnyDatabase", Need::UserAdmin(_)) => true,
            ("read", Need::Read(db)) => on(db),
            ("readWrite", Need::Read(db) | Need::Write(db)) => on(db),
            ("dbAdmin", Need::DbAdmin(db)) => on(db),
            ("userAdmin", Need::UserAdmin(db)) => on(db),
            (
                "dbOwner",
                Need::Read(db) | Need::Write(db) | Need::DbAdmin(db) | Need::UserAdmin(db),
            ) => on(db),
            _ => false,
        }
    })
}

/// The databases other than its own that an `aggregate` writes with
/// `$out: {db, coll}` or `$merge: {into: {db, coll}}`, or a `mapReduce`
/// with `out: {db}`.
fn output_dbs(req: &Request<'_>) -> Vec<String> {
    if matches!(req.name, "mapReduce" | "mapreduce") {
        let db = req
            .body
            .get_document("out")
            .ok()
            .and_then(|o| o.get_str("db").ok());
        return db
            .filter(|db| *db != req.db)
            .map(str::to_owned)
            .into_iter()
            .collect();
    }
    if req.name != "aggregate" {
        return Vec::new();
    }
    let Ok(pipeline) = req.body.get_array("pipeline") else {
        return Vec::new();
    };
    let target = |stage: &bson::RawDocument| -> Option<String> {
        let out = stage.get_document("$out").ok();
        let into = stage
            .get_document("$merge")
            .ok()
            .and_then(|m| m.get_document("into").ok());
        let db = out.or(into)?.get_str("db").ok()?;
        (db != req.db).then(|| db.to_owned())
    };
    pipeline
        .into_iter()
        .filter_map(|s| s.ok()?.as_document())
        .filter_map(target)
        .collect()
}

fn loopback(peer: &str) -> bool {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false)
}

/// Checks that this connection may run `req`.
pub(crate) async fn authorize(
    state: &RouterState,
    session: &Session,
    req: &Request<'_>,
    need: Need,
) -> Result<()> {
    if !state.config.auth {
        return Ok(());
    }
    if need == Need::Nothing {
        return Ok(());
    }
    let roles: Vec<RoleRef> = session
        .auth
        .users
        .iter()
        .flat_map(|u| u.roles.clone())
        .collect();
    let allowed = if req.name == "bulkWrite" {
        // A write on every namespace it names.
        let dbs: Vec<String> = req
            .documents("nsInfo")
            .into_iter()
            .filter_map(|d| d.get_str("ns").ok())
            .filter_map(|ns| ns.split_once('.').map(|(d, _)| d.to_owned()))
            .collect();
        !dbs.is_empty() && dbs.into_iter().all(|db| grants(&roles, &Need::Write(db)))
    } else {
        grants(&roles, &need)
    };
    // `$out`/`$merge` into another database: a write there too.
    let outputs = output_dbs(req);
    let writes_outputs = |roles: &[RoleRef]| {
        outputs
            .iter()
            .all(|db| grants(roles, &Need::Write(db.clone())))
    };
    if allowed && writes_outputs(&roles) {
        return Ok(());
    }
    // Custom roles: read from the store only when the built-in ones do not
    // allow the command, so the common path costs nothing.
    let (builtins, privileges) = roles::expand(state, &roles).await?;
    let command_allowed = allowed || grants(&builtins, &need) || roles::allows(&privileges, req);
    if command_allowed && (writes_outputs(&roles) || writes_outputs(&builtins)) {
        return Ok(());
    }
    if req.name == "createUser" && loopback(&session.peer) && !any_user(state).await? {
        // The localhost exception: the first user.
        return Ok(());
    }
    let who = if session.auth.users.is_empty() {
        "not authenticated".to_owned()
    } else {
        session
            .auth
            .users
            .iter()
            .map(|u| format!("{}@{}", u.user, u.db))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(RouterError::command(
        13,
        "Unauthorized",
        format!(
            "command {} on {} requires authorization ({who})",
            req.name, req.db
        ),
    ))
}
