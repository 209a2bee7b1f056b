//! `failCommand`, the fail point drivers' test suites set on the endpoint
//! they talk to, acting on the commands the router receives, as on mongos
//! (only with `--enable-test-commands`). Modes `alwaysOn`, `off`,
//! `{times: n}`, `{skip: n}`; data `failCommands`, `errorCode`,
//! `errorLabels`, `closeConnection`, `blockConnection`/`blockTimeMS`,
//! `writeConcernError`, `appName`. Other fail points go to the shards.

use std::sync::Mutex;
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocument};

use crate::error::{Result, RouterError};
use crate::labels::Context;

/// The router's fail points.
#[derive(Default)]
pub(crate) struct FailPoints {
    fail_command: Mutex<Option<FailCommand>>,
}

#[derive(Debug, Clone)]
struct FailCommand {
    mode: Mode,
    commands: Vec<String>,
    app_name: Option<String>,
    error_code: Option<i32>,
    error_labels: Option<Vec<Bson>>,
    close: bool,
    block: Option<Duration>,
    write_concern_error: Option<Document>,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    AlwaysOn,
    Times(i64),
    Skip(i64),
}

/// What `failCommand` does to one command.
#[derive(Debug, Default)]
pub(crate) struct Action {
    /// Wait this long first.
    pub block: Option<Duration>,
    /// Close the connection without a reply.
    pub close: bool,
    /// Answer this error instead of running the command.
    pub error: Option<Document>,
    /// Run the command, then add this `writeConcernError`.
    pub write_concern_error: Option<Document>,
    /// Labels for the write concern error's reply.
    pub labels: Vec<Bson>,
}

impl FailPoints {
    /// `configureFailPoint: "failCommand"`; the reply's `count` is how many
    /// times it had been entered, as mongod answers.
    pub(crate) fn configure(&self, body: &RawDocument) -> Result<Document> {
        let body = Document::try_from(body).map_err(|e| RouterError::bad_value(e.to_string()))?;
        let mode = match body.get("mode") {
            Some(Bson::String(s)) if s == "off" => None,
            Some(Bson::String(s)) if s == "alwaysOn" => Some(Mode::AlwaysOn),
            Some(Bson::Document(m)) => {
                Some(match (number(m.get("times")), number(m.get("skip"))) {
                    (Some(n), _) if n > 0 => Mode::Times(n),
                    (Some(_), _) => return self.set(None),
                    (_, Some(n)) => Mode::Skip(n),
                    _ => return Err(bad_mode()),
                })
            }
            _ => return Err(bad_mode()),
        };
        let Some(mode) = mode else {
            return self.set(None);
        };
        let data = body.get_document("data").cloned().unwrap_or_default();
        let strings = |f: &str| -> Vec<String> {
            data.get_array(f)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let block = data
            .get_bool("blockConnection")
            .unwrap_or(false)
            .then(|| Duration::from_millis(number(data.get("blockTimeMS")).unwrap_or(0) as u64));
        self.set(Some(FailCommand {
            mode,
            commands: strings("failCommands"),
            app_name: data.get_str("appName").ok().map(str::to_owned),
            error_code: number(data.get("errorCode")).map(|c| c as i32),
            error_labels: data.get_array("errorLabels").ok().cloned(),
            close: data.get_bool("closeConnection").unwrap_or(false),
            block,
            write_concern_error: data.get_document("writeConcernError").ok().cloned(),
        }))
    }

    fn set(&self, fp: Option<FailCommand>) -> Result<Document> {
        *self.fail_command.lock().unwrap_or_else(|e| e.into_inner()) = fp;
        Ok(doc! {"count": 0})
    }

    /// What `failCommand` does to `name` from a client named `app`; it
    /// counts as one activation. `retryable_write`: the command is a
    /// retryable write (for the labels mongod adds).
    pub(crate) fn check(&self, name: &str, app: Option<&str>, ctx: Context) -> Option<Action> {
        let mut guard = self.fail_command.lock().unwrap_or_else(|e| e.into_inner());
        let fp = guard.as_mut()?;
        if !fp.commands.iter().any(|c| c == name)
            || fp.app_name.as_deref().is_some_and(|a| Some(a) != app)
        {
            return None;
        }
        match &mut fp.mode {
            Mode::AlwaysOn => {}
            Mode::Skip(n) if *n > 0 => {
                *n -= 1;
                return None;
            }
            Mode::Skip(_) => {}
            Mode::Times(n) => {
                *n -= 1;
            }
        }
        let fp = fp.clone();
        if matches!(fp.mode, Mode::Times(n) if n <= 0) {
            *guard = None;
        }
        drop(guard);
        let labels = |code: i32, wce: Option<i32>| -> Vec<Bson> {
            match &fp.error_labels {
                Some(l) => l.clone(),
                None => crate::labels::labels(code, wce, ctx)
                    .into_iter()
                    .map(Bson::from)
                    .collect(),
            }
        };
        let error = fp.error_code.map(|code| {
            let mut e = doc! {
                "ok": 0.0,
                "errmsg": "Failing command via 'failCommand' failpoint",
                "code": code,
                "codeName": crate::labels::code_name(code),
            };
            let l = labels(code, None);
            if !l.is_empty() {
                e.insert("errorLabels", l);
            }
            e
        });
        let wce_code = fp
            .write_concern_error
            .as_ref()
            .and_then(|w| number(w.get("code")))
            .unwrap_or(0) as i32;
        Some(Action {
            block: fp.block,
            close: fp.close,
            error,
            labels: if fp.write_concern_error.is_some() {
                labels(0, Some(wce_code))
            } else {
                Vec::new()
            },
            write_concern_error: fp.write_concern_error,
        })
    }
}

fn bad_mode() -> RouterError {
    RouterError::bad_value("mode must be 'off', 'alwaysOn', {times: n} or {skip: n}")
}

fn number(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(d: Document) -> bson::RawDocumentBuf {
        bson::RawDocumentBuf::try_from(&d).unwrap()
    }

    #[test]
    fn times_skip_and_app_name() {
        let fps = FailPoints::default();
        fps.configure(&raw(doc! {
            "configureFailPoint": "failCommand", "mode": {"times": 2},
            "data": {"failCommands": ["insert"], "errorCode": 91, "appName": "a"},
        }))
        .unwrap();
        let retryable = Context {
            retryable_write: true,
            ..Default::default()
        };
        let plain = Context::default();
        assert!(fps.check("find", Some("a"), plain).is_none());
        assert!(fps.check("insert", Some("b"), retryable).is_none());
        let first = fps.check("insert", Some("a"), retryable).unwrap();
        let e = first.error.unwrap();
        assert_eq!(e.get_i32("code").unwrap(), 91);
        assert_eq!(
            e.get_array("errorLabels").unwrap(),
            &vec![Bson::from("RetryableWriteError")]
        );
        assert!(fps
            .check("insert", Some("a"), plain)
            .unwrap()
            .error
            .unwrap()
            .get("errorLabels")
            .is_none());
        assert!(
            fps.check("insert", Some("a"), retryable).is_none(),
            "two times only"
        );

        fps.configure(&raw(doc! {
            "configureFailPoint": "failCommand", "mode": {"skip": 1},
            "data": {"failCommands": ["ping"], "closeConnection": true},
        }))
        .unwrap();
        assert!(fps.check("ping", None, plain).is_none());
        assert!(fps.check("ping", None, plain).unwrap().close);
        assert!(fps.check("ping", None, plain).unwrap().close);
        fps.configure(&raw(
            doc! {"configureFailPoint": "failCommand", "mode": "off"},
        ))
        .unwrap();
        assert!(fps.check("ping", None, plain).is_none());
    }
}
