//! The router's logical session cache, as mongos keeps one: every session
//! id (`lsid`) a command carried, with who used it and when, listed by the
//! `$listLocalSessions` stage and forgotten by `endSessions` or after 30
//! idle minutes (`localLogicalSessionTimeoutMinutes`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document, RawDocument};
use sha2::{Digest, Sha256};

/// How long an unused session is kept.
const TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Independent parts, so requests on different sessions rarely share a lock.
const PARTS: usize = 16;

/// One session as `$listLocalSessions` shows it.
struct Record {
    /// SHA-256 of the user's `name@db` (of "" without authentication).
    uid: [u8; 32],
    /// `name@db`, when authenticated.
    user: Option<String>,
    last_use: bson::DateTime,
    touched: Instant,
}

/// The sessions seen by this router.
pub(crate) struct LocalSessions {
    parts: Vec<Mutex<HashMap<[u8; 16], Record>>>,
}

impl Default for LocalSessions {
    fn default() -> Self {
        LocalSessions {
            parts: (0..PARTS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// The session id of a command body, if it names one.
fn session_id(body: &RawDocument) -> Option<[u8; 16]> {
    let lsid = body.get_document("lsid").ok()?;
    let id = lsid.get_binary("id").ok()?;
    id.bytes.try_into().ok()
}

/// SHA-256 of `user`, as MongoDB's session `uid`.
fn uid_of(user: Option<&str>) -> [u8; 32] {
    Sha256::digest(user.unwrap_or("").as_bytes()).into()
}

impl LocalSessions {
    fn part(&self, id: &[u8; 16]) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Record>> {
        self.parts[usize::from(id[15]) % PARTS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that `body`'s session (if any) was used now by `user`.
    pub(crate) fn touch(&self, body: &RawDocument, user: Option<&str>) {
        let Some(id) = session_id(body) else { return };
        let mut part = self.part(&id);
        let record = part.entry(id).or_insert_with(|| Record {
            uid: uid_of(user),
            user: user.map(str::to_owned),
            last_use: bson::DateTime::now(),
            touched: Instant::now(),
        });
        record.last_use = bson::DateTime::now();
        record.touched = Instant::now();
    }

    /// Forgets the sessions `endSessions` names.
    pub(crate) fn end(&self, body: &RawDocument) {
        let Ok(ids) = body.get_array("endSessions") else {
            return;
        };
        for lsid in ids.into_iter().flatten() {
            let id = lsid
                .as_document()
                .and_then(|d| d.get_binary("id").ok())
                .and_then(|b| <[u8; 16]>::try_from(b.bytes).ok());
            if let Some(id) = id {
                self.part(&id).remove(&id);
            }
        }
    }

    /// `$listLocalSessions: spec` for `user`: the caller's sessions, every
    /// one with `allUsers: true`, or those of the `users` listed.
    pub(crate) fn list(&self, spec: &Document, user: Option<&str>) -> Vec<Document> {
        let wanted: Option<Vec<[u8; 32]>> = if spec.get_bool("allUsers").unwrap_or(false) {
            None
        } else if let Ok(users) = spec.get_array("users") {
            Some(
                users
                    .iter()
                    .filter_map(Bson::as_document)
                    .filter_map(|u| {
                        Some(format!(
                            "{}@{}",
                            u.get_str("user").ok()?,
                            u.get_str("db").ok()?
                        ))
                    })
                    .map(|name| uid_of(Some(&name)))
                    .collect(),
            )
        } else {
            Some(vec![uid_of(user)])
        };
        let mut out = Vec::new();
        for part in &self.parts {
            let mut part = part.lock().unwrap_or_else(|e| e.into_inner());
            part.retain(|_, r| r.touched.elapsed() < TIMEOUT);
            for (id, r) in part.iter() {
                if wanted.as_ref().is_some_and(|w| !w.contains(&r.uid)) {
                    continue;
                }
                out.push(record_doc(id, r));
            }
        }
        out
    }
}

/// A session as `config.system.sessions` shapes it.
fn record_doc(id: &[u8; 16], r: &Record) -> Document {
    let id = Binary {
        subtype: BinarySubtype::Uuid,
        bytes: id.to_vec(),
    };
    let uid = Binary {
        subtype: BinarySubtype::Generic,
        bytes: r.uid.to_vec(),
    };
    let mut d = doc! {"_id": {"id": id, "uid": uid}, "lastUse": r.last_use};
    if let Some(user) = &r.user {
        d.insert("user", doc! {"name": user});
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    fn body(id: u8) -> bson::RawDocumentBuf {
        let lsid = Binary {
            subtype: BinarySubtype::Uuid,
            bytes: vec![id; 16],
        };
        rawdoc! {"find": "c", "lsid": {"id": lsid}}
    }

    #[test]
    fn sessions_are_listed_per_user_and_forgotten_when_ended() {
        let cache = LocalSessions::default();
        cache.touch(&body(1), Some("a@admin"));
        cache.touch(&body(2), Some("b@admin"));
        cache.touch(&body(2), Some("b@admin"));
        assert_eq!(cache.list(&Document::new(), Some("a@admin")).len(), 1);
        assert_eq!(cache.list(&doc! {"allUsers": true}, None).len(), 2);
        let users = doc! {"users": [{"user": "b", "db": "admin"}]};
        let listed = cache.list(&users, None);
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0]
                .get_document("user")
                .unwrap()
                .get_str("name")
                .unwrap(),
            "b@admin"
        );
        let lsid = Binary {
            subtype: BinarySubtype::Uuid,
            bytes: vec![1; 16],
        };
        cache.end(&rawdoc! {"endSessions": [{"id": lsid}]});
        assert_eq!(cache.list(&doc! {"allUsers": true}, None).len(), 1);
    }
}
