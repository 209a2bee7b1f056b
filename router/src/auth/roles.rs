//! Custom roles, kept in the config store (never in a shard's own user
//! store): `createRole`, `updateRole`, `dropRole`, `grantPrivilegesToRole`,
//! `revokePrivilegesFromRole`, `grantRolesToRole`, `revokeRolesFromRole`,
//! `rolesInfo`, `dropAllRolesFromDatabase`, `dropAllUsersFromDatabase`;
//! and the check of a custom role's privileges (actions on a resource) for
//! a command the built-in roles do not allow.

use std::collections::BTreeSet;

use bson::{doc, Bson, Document};
use serde::{Deserialize, Serialize};
use shardgate_config_store::store::{Txn, TxnOutcome};

use super::{RoleRef, ROLES, USERS};
use crate::error::{Result, RouterError};
use crate::session::Request;
use crate::state::RouterState;

const ROLE_KEYS: &str = "roles/";

fn key(db: &str, role: &str) -> String {
    format!("{ROLE_KEYS}{db}.{role}")
}

/// What a privilege applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resource {
    /// The database (`""`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    db: Option<String>,
    /// The collection (`""`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    collection: Option<String>,
    /// The cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<bool>,
    /// Everything.
    #[serde(
        rename = "anyResource",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    any_resource: Option<bool>,
}

/// Actions on a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Privilege {
    resource: Resource,
    actions: Vec<String>,
}

/// A custom role.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoleDoc {
    #[serde(rename = "_id")]
    id: String,
    role: String,
    db: String,
    privileges: Vec<Privilege>,
    roles: Vec<RoleRef>,
}

impl RoleDoc {
    fn public(&self, show_privileges: bool) -> Document {
        let mut d = doc! {
            "_id": &self.id, "role": &self.role, "db": &self.db,
            "isBuiltin": false,
            "roles": self.roles.iter().map(|r| doc! {"role": &r.role, "db": &r.db}).collect::<Vec<_>>(),
            "inheritedRoles": self.roles.iter().map(|r| doc! {"role": &r.role, "db": &r.db}).collect::<Vec<_>>(),
        };
        if show_privileges {
            let privileges =
                bson::serialize_to_bson(&self.privileges).unwrap_or(Bson::Array(vec![]));
            d.insert("privileges", privileges.clone());
            d.insert("inheritedPrivileges", privileges);
        }
        d
    }
}

fn bad(e: impl std::fmt::Display) -> RouterError {
    RouterError::bad_value(e.to_string())
}

async fn find_role(state: &RouterState, db: &str, role: &str) -> Result<Option<RoleDoc>> {
    match state.catalog.store().get(&key(db, role)).await? {
        Some(v) => Ok(bson::deserialize_from_slice(&v.value).ok()),
        None => Ok(None),
    }
}

async fn all_roles(state: &RouterState) -> Result<Vec<RoleDoc>> {
    Ok(state
        .catalog
        .store()
        .list(ROLE_KEYS)
        .await?
        .into_iter()
        .filter_map(|(_, v)| bson::deserialize_from_slice(&v.value).ok())
        .collect())
}

/// RoleNotFound unless each role is built in or a custom role.
pub(crate) async fn check_roles_exist(state: &RouterState, roles: &[RoleRef]) -> Result<()> {
    for r in roles {
        if !ROLES.contains(&r.role.as_str()) && find_role(state, &r.db, &r.role).await?.is_none() {
            return Err(RouterError::command(
                31,
                "RoleNotFound",
                format!("Could not find role: {}@{}", r.role, r.db),
            ));
        }
    }
    Ok(())
}

fn parse_role_refs(body: &Document, field: &str, db: &str) -> Result<Vec<RoleRef>> {
    let Ok(arr) = body.get_array(field) else {
        return Ok(Vec::new());
    };
    arr.iter()
        .map(|r| match r {
            Bson::String(s) => Ok(RoleRef {
                role: s.clone(),
                db: db.to_owned(),
            }),
            Bson::Document(d) => Ok(RoleRef {
                role: d.get_str("role").map_err(bad)?.to_owned(),
                db: d.get_str("db").unwrap_or(db).to_owned(),
            }),
            _ => Err(bad("a role is a name or {role, db}")),
        })
        .collect()
}

fn parse_privileges(body: &Document, field: &str) -> Result<Vec<Privilege>> {
    match body.get(field) {
        None => Ok(Vec::new()),
        Some(v) => {
            bson::deserialize_from_bson(v.clone()).map_err(|e| bad(format!("'{field}': {e}")))
        }
    }
}

async fn put_role(state: &RouterState, r: &RoleDoc, create: bool) -> Result<()> {
    let k = key(&r.db, &r.role);
    let bytes = bson::serialize_to_vec(r).map_err(bad)?;
    let txn = if create {
        Txn::default().absent(&k).put(k, bytes)
    } else {
        Txn::default().put(k, bytes)
    };
    match state.catalog.store().txn(txn).await? {
        TxnOutcome::Committed(_) => Ok(()),
        TxnOutcome::Conflict => Err(RouterError::command(
            51002,
            "Location51002",
            format!("Role \"{}@{}\" already exists", r.role, r.db),
        )),
    }
}

/// Runs one of the role commands.
pub(crate) async fn role_command(state: &RouterState, req: &Request<'_>) -> Result<Document> {
    let body = Document::try_from(req.body).map_err(bad)?;
    let db = req.db;
    match req.name {
        "rolesInfo" => return roles_info(state, &body, db).await,
        "dropAllRolesFromDatabase" => return drop_all(state, ROLE_KEYS, db).await,
        "dropAllUsersFromDatabase" => return drop_all(state, USERS, db).await,
        _ => {}
    }
    let name = body
        .get_str(req.name)
        .map_err(|_| bad(format!("{} takes a role name", req.name)))?
        .to_owned();
    if req.name == "createRole" {
        if ROLES.contains(&name.as_str()) {
            return Err(RouterError::command(
                51002,
                "Location51002",
                format!("Cannot create the built-in role {name}"),
            ));
        }
        let roles = parse_role_refs(&body, "roles", db)?;
        check_roles_exist(state, &roles).await?;
        let role = RoleDoc {
            id: format!("{db}.{name}"),
            role: name,
            db: db.to_owned(),
            privileges: parse_privileges(&body, "privileges")?,
            roles,
        };
        put_role(state, &role, true).await?;
        return Ok(Document::new());
    }
    let mut role = find_role(state, db, &name).await?.ok_or_else(|| {
        RouterError::command(
            31,
            "RoleNotFound",
            format!("Could not find role: {name}@{db}"),
        )
    })?;
    if req.name == "dropRole" {
        state
            .catalog
            .store()
            .txn(Txn::default().delete(key(db, &name)))
            .await?;
        return Ok(Document::new());
    }
    change(&mut role, req.name, &body, db)?;
    check_roles_exist(state, &role.roles).await?;
    put_role(state, &role, false).await?;
    Ok(Document::new())
}

/// Applies `updateRole`, `grant…`/`revoke…ToRole` to `role`.
fn change(role: &mut RoleDoc, command: &str, body: &Document, db: &str) -> Result<()> {
    match command {
        "updateRole" => {
            if body.contains_key("privileges") {
                role.privileges = parse_privileges(body, "privileges")?;
            }
            if body.contains_key("roles") {
                role.roles = parse_role_refs(body, "roles", db)?;
            }
        }
        "grantPrivilegesToRole" => {
            for p in parse_privileges(body, "privileges")? {
                match role
                    .privileges
                    .iter_mut()
                    .find(|q| q.resource == p.resource)
                {
                    Some(q) => {
                        let new: Vec<String> = p
                            .actions
                            .into_iter()
                            .filter(|a| !q.actions.contains(a))
                            .collect();
                        q.actions.extend(new);
                    }
                    None => role.privileges.push(p),
                }
            }
        }
        "revokePrivilegesFromRole" => {
            for p in parse_privileges(body, "privileges")? {
                if let Some(q) = role
                    .privileges
                    .iter_mut()
                    .find(|q| q.resource == p.resource)
                {
                    q.actions.retain(|a| !p.actions.contains(a));
                }
            }
            role.privileges.retain(|q| !q.actions.is_empty());
        }
        "grantRolesToRole" => {
            for r in parse_role_refs(body, "roles", db)? {
                if !role.roles.contains(&r) {
                    role.roles.push(r);
                }
            }
        }
        _ => {
            let gone = parse_role_refs(body, "roles", db)?;
            role.roles.retain(|r| !gone.contains(r));
        }
    }
    Ok(())
}

async fn drop_all(state: &RouterState, prefix: &str, db: &str) -> Result<Document> {
    let keys: Vec<String> = state
        .catalog
        .store()
        .list(&format!("{prefix}{db}."))
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for k in &keys {
        state
            .catalog
            .store()
            .txn(Txn::default().delete(k.clone()))
            .await?;
    }
    Ok(doc! {"n": keys.len() as i32})
}

/// `rolesInfo`: 1 (this database's custom roles), a name, `{role, db}`, or
/// a list; `showPrivileges`, `showBuiltinRoles`.
async fn roles_info(state: &RouterState, body: &Document, db: &str) -> Result<Document> {
    let show_privileges = body.get_bool("showPrivileges").unwrap_or(false);
    let wanted: Vec<RoleRef> = match body.get("rolesInfo") {
        Some(Bson::String(_) | Bson::Document(_)) => parse_role_refs(
            &doc! {"r": [body.get("rolesInfo").cloned().unwrap_or(Bson::Null)]},
            "r",
            db,
        )?,
        Some(Bson::Array(_)) => parse_role_refs(body, "rolesInfo", db)?,
        _ => {
            let mut out: Vec<Bson> = all_roles(state)
                .await?
                .into_iter()
                .filter(|r| r.db == db)
                .map(|r| Bson::Document(r.public(show_privileges)))
                .collect();
            if body.get_bool("showBuiltinRoles").unwrap_or(false) {
                out.extend(ROLES.iter().map(|r| Bson::Document(builtin(r, db))));
            }
            return Ok(doc! {"roles": out});
        }
    };
    let mut out = Vec::new();
    for r in wanted {
        if ROLES.contains(&r.role.as_str()) {
            out.push(Bson::Document(builtin(&r.role, &r.db)));
        } else if let Some(doc) = find_role(state, &r.db, &r.role).await? {
            out.push(Bson::Document(doc.public(show_privileges)));
        }
    }
    Ok(doc! {"roles": out})
}

fn builtin(role: &str, db: &str) -> Document {
    doc! {"_id": format!("{db}.{role}"), "role": role, "db": db, "isBuiltin": true, "roles": [], "inheritedRoles": []}
}

/// The built-in roles and the privileges `roles` reach through custom
/// roles (transitively).
pub(crate) async fn expand(
    state: &RouterState,
    roles: &[RoleRef],
) -> Result<(Vec<RoleRef>, Vec<Privilege>)> {
    let mut builtins = Vec::new();
    let mut privileges = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<RoleRef> = roles.to_vec();
    while let Some(r) = todo.pop() {
        if !seen.insert((r.db.clone(), r.role.clone())) {
            continue;
        }
        if ROLES.contains(&r.role.as_str()) {
            builtins.push(r);
        } else if let Some(doc) = find_role(state, &r.db, &r.role).await? {
            privileges.extend(doc.privileges);
            todo.extend(doc.roles);
        }
    }
    Ok((builtins, privileges))
}

/// The actions a command needs, as MongoDB's privilege actions name them;
/// `None` for a command custom privileges do not cover here.
fn actions(req: &Request<'_>) -> Option<&'static [&'static str]> {
    Some(match req.name {
        "find" | "getMore" | "count" | "distinct" => &["find"],
        "aggregate" => &["find"],
        "listIndexes" => &["listIndexes"],
        "listCollections" => &["listCollections"],
        "collStats" => &["collStats"],
        "dbStats" => &["dbStats"],
        "insert" => &["insert"],
        "update" => &["update"],
        "delete" => &["remove"],
        "findAndModify" | "findandmodify" => &["find", "update", "remove"],
        "createIndexes" => &["createIndex"],
        "dropIndexes" | "deleteIndexes" => &["dropIndex"],
        "create" => &["createCollection"],
        "drop" => &["dropCollection"],
        "collMod" => &["collMod"],
        "validate" => &["validate"],
        "killCursors" => &["killCursors"],
        "serverStatus" => &["serverStatus"],
        "listShards" => &["listShards"],
        "currentOp" => &["inprog"],
        "killOp" => &["killop"],
        _ => return None,
    })
}

fn cluster_action(action: &str) -> bool {
    matches!(action, "serverStatus" | "listShards" | "inprog" | "killop")
}

/// Whether `privileges` allow `req`: each action it needs, on its
/// collection (or the cluster).
pub(crate) fn allows(privileges: &[Privilege], req: &Request<'_>) -> bool {
    let Some(needed) = actions(req) else {
        return false;
    };
    let coll = req.collection.unwrap_or("");
    let covers = |r: &Resource, action: &str| {
        if r.any_resource == Some(true) {
            return true;
        }
        if cluster_action(action) {
            return r.cluster == Some(true);
        }
        let db_ok = r.db.as_deref().is_some_and(|d| d.is_empty() || d == req.db);
        let coll_ok = r
            .collection
            .as_deref()
            .is_some_and(|c| c.is_empty() || c == coll);
        db_ok && coll_ok
    };
    // findAndModify needs find and update (remove for `remove: true`);
    // other commands need every action listed.
    let needed: Vec<&str> = if matches!(req.name, "findAndModify" | "findandmodify") {
        if req.body.get_bool("remove").unwrap_or(false) {
            vec!["find", "remove"]
        } else {
            vec!["find", "update"]
        }
    } else {
        needed.to_vec()
    };
    needed.iter().all(|action| {
        privileges
            .iter()
            .any(|p| p.actions.iter().any(|a| a == action) && covers(&p.resource, action))
    })
}
