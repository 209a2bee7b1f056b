//! The user commands: `createUser`, `updateUser`, `dropUser`,
//! `grantRolesToUser`, `revokeRolesFromUser`, `usersInfo`.

use bson::{doc, Bson, Document, RawDocument};

use super::*;
use crate::error::{Result, RouterError};
use crate::session::{Request, Session};
use crate::state::RouterState;

fn parse_roles(body: &RawDocument, field: &str, db: &str) -> Result<Vec<RoleRef>> {
    let doc = Document::try_from(body).map_err(|e| RouterError::bad_value(e.to_string()))?;
    let arr = doc
        .get_array(field)
        .map_err(|_| RouterError::bad_value(format!("'{field}' must be an array of roles")))?;
    arr.iter()
        .map(|r| {
            let role = match r {
                Bson::String(s) => RoleRef {
                    role: s.clone(),
                    db: db.to_owned(),
                },
                Bson::Document(d) => RoleRef {
                    role: d
                        .get_str("role")
                        .map_err(|_| RouterError::bad_value("a role needs 'role'"))?
                        .to_owned(),
                    db: d.get_str("db").unwrap_or(db).to_owned(),
                },
                _ => return Err(RouterError::bad_value("a role is a name or {role, db}")),
            };
            Ok(role)
        })
        .collect()
}

fn credentials_for(user: &str, password: &str, mechanisms: &[String]) -> Result<Credentials> {
    let want = |m: &str| mechanisms.is_empty() || mechanisms.iter().any(|x| x == m);
    Ok(Credentials {
        sha1: want("SCRAM-SHA-1")
            .then(|| scram::credential(Mechanism::Sha1, user, password))
            .transpose()
            .map_err(RouterError::bad_value)?,
        sha256: want("SCRAM-SHA-256")
            .then(|| scram::credential(Mechanism::Sha256, user, password))
            .transpose()
            .map_err(RouterError::bad_value)?,
    })
}

fn mechanisms_arg(body: &RawDocument) -> Vec<String> {
    body.get_array("mechanisms")
        .map(|a| {
            a.into_iter()
                .filter_map(|m| m.ok()?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `createUser`, `updateUser`, `dropUser`, `grantRolesToUser`,
/// `revokeRolesFromUser`, `usersInfo`.
pub(crate) async fn user_command(
    state: &RouterState,
    session: &Session,
    req: &Request<'_>,
) -> Result<Document> {
    let db = req.db;
    if !matches!(
        req.name,
        "createUser" | "updateUser" | "dropUser" | "grantRolesToUser" | "revokeRolesFromUser"
    ) {
        return users_info(state, session, req).await;
    }
    let user = req
        .body
        .get_str(req.name)
        .map(str::to_owned)
        .map_err(|_| RouterError::bad_value(format!("{} takes a user name", req.name)))?;
    if req.name == "createUser" {
        return create_user(state, req, user).await;
    }
    let mut doc = find_user(state, db, &user).await?.ok_or_else(|| {
        RouterError::command(
            11,
            "UserNotFound",
            format!("Could not find user \"{user}\" for db \"{db}\""),
        )
    })?;
    match req.name {
        "updateUser" => {
            if let Ok(pwd) = req.body.get_str("pwd") {
                doc.credentials = credentials_for(&user, pwd, &mechanisms_arg(req.body))?;
            }
            if req.body.get_array("roles").is_ok() {
                doc.roles = parse_roles(req.body, "roles", db)?;
                super::roles::check_roles_exist(state, &doc.roles).await?;
            }
        }
        "dropUser" => {
            state
                .catalog
                .store()
                .txn(Txn::default().delete(key(db, &user)))
                .await?;
            return Ok(Document::new());
        }
        _ => {
            let roles = parse_roles(req.body, "roles", db)?;
            if req.name == "grantRolesToUser" {
                super::roles::check_roles_exist(state, &roles).await?;
                for r in roles {
                    if !doc.roles.contains(&r) {
                        doc.roles.push(r);
                    }
                }
            } else {
                doc.roles.retain(|r| !roles.contains(r));
            }
        }
    }
    put_user(state, &doc, false).await?;
    Ok(Document::new())
}

async fn create_user(state: &RouterState, req: &Request<'_>, user: String) -> Result<Document> {
    let db = req.db;
    let pwd = req
        .body
        .get_str("pwd")
        .map_err(|_| RouterError::bad_value("createUser needs 'pwd'"))?;
    if pwd.is_empty() {
        return Err(RouterError::bad_value("the password must not be empty"));
    }
    let roles = parse_roles(req.body, "roles", db)?;
    super::roles::check_roles_exist(state, &roles).await?;
    let doc = UserDoc {
        id: format!("{db}.{user}"),
        credentials: credentials_for(&user, pwd, &mechanisms_arg(req.body))?,
        user,
        db: db.to_owned(),
        roles,
    };
    put_user(state, &doc, true).await?;
    Ok(Document::new())
}

/// `usersInfo`: 1 (all of this db), a name, `{user, db}`, or a list; a user
/// without `userAdmin` on the database sees only themselves.
async fn users_info(state: &RouterState, session: &Session, req: &Request<'_>) -> Result<Document> {
    let db = req.db;
    let all: Vec<UserDoc> = state
        .catalog
        .store()
        .list(USERS)
        .await?
        .into_iter()
        .filter_map(|(_, v)| bson::deserialize_from_slice::<UserDoc>(&v.value).ok())
        .collect();
    let wanted: Box<dyn Fn(&UserDoc) -> bool> = match req.body.get(req.name).ok().flatten() {
        Some(bson::RawBsonRef::String(u)) => {
            let u = u.to_owned();
            Box::new(move |d: &UserDoc| d.user == u && d.db == db)
        }
        Some(bson::RawBsonRef::Document(d)) => {
            let (u, udb) = (
                d.get_str("user").unwrap_or("").to_owned(),
                d.get_str("db").unwrap_or(db).to_owned(),
            );
            Box::new(move |x: &UserDoc| x.user == u && x.db == udb)
        }
        _ => Box::new(|d: &UserDoc| d.db == db),
    };
    let may_see_all = !state.config.auth || {
        let roles: Vec<RoleRef> = session
            .auth
            .users
            .iter()
            .flat_map(|u| u.roles.clone())
            .collect();
        grants(&roles, &Need::UserAdmin(db.to_owned()))
    };
    let users: Vec<Bson> = all
        .iter()
        .filter(|d| wanted(d))
        .filter(|d| {
            may_see_all
                || session
                    .auth
                    .users
                    .iter()
                    .any(|u| u.user == d.user && u.db == d.db)
        })
        .map(|d| Bson::Document(d.public()))
        .collect();
    Ok(doc! {"users": users})
}
