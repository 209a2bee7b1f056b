//! The command registry: one [`CommandSpec`] per command the router knows —
//! its name and aliases, the privilege it needs, whether it writes and
//! whether it is a retryable write, and who runs it. Dispatch, the
//! authorization check, the retry cache and the test-only write fault all
//! read this one table.
//!
//! Privileges follow MongoDB's built-in roles: what `read`, `readWrite`,
//! `dbAdmin`, `userAdmin`, `clusterMonitor`, `clusterManager` and
//! `hostManager` grant. A command with no spec needs a role that grants
//! every action on the cluster (`root`).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Reply, Request, Session};
pub(crate) use crate::auth::Need;
use crate::error::Result;
use crate::state::RouterState;

/// The privilege of a command: fixed by its kind, on the request's
/// database where it names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Privilege {
    /// [`Need::Nothing`].
    Nothing,
    /// [`Need::Read`] on the request's database.
    Read,
    /// [`Need::Write`] on the request's database (on `config`:
    /// [`Need::ClusterManager`]).
    Write,
    /// `aggregate`: a write when the pipeline has `$out` or `$merge`.
    ReadOrOut,
    /// [`Need::DbAdmin`] on the request's database.
    DbAdmin,
    /// [`Need::UserAdmin`] on the request's database.
    UserAdmin,
    /// [`Need::ClusterMonitor`].
    ClusterMonitor,
    /// [`Need::ClusterManager`].
    ClusterManager,
    /// [`Need::HostManager`].
    HostManager,
}

impl Privilege {
    /// What this privilege needs for `req`.
    pub(crate) fn need(self, req: &Request<'_>) -> Need {
        let db = req.db.to_owned();
        match self {
            Privilege::Nothing => Need::Nothing,
            Privilege::Read => Need::Read(db),
            Privilege::Write if db == "config" => Need::ClusterManager,
            Privilege::Write => Need::Write(db),
            Privilege::ReadOrOut => {
                let pipeline_writes = req.body.get_array("pipeline").is_ok_and(|p| {
                    p.into_iter()
                        .filter_map(|s| s.ok()?.as_document())
                        .any(|s| {
                            s.get("$out").ok().flatten().is_some()
                                || s.get("$merge").ok().flatten().is_some()
                        })
                });
                // mapReduce writes unless its output is inline.
                let out_writes = match req.body.get("out") {
                    Ok(Some(bson::RawBsonRef::Document(d))) => {
                        d.get("inline").ok().flatten().is_none()
                    }
                    Ok(Some(_)) => true,
                    _ => false,
                };
                let writes = pipeline_writes || out_writes;
                if writes {
                    Privilege::Write.need(req)
                } else {
                    Need::Read(db)
                }
            }
            Privilege::DbAdmin => Need::DbAdmin(db),
            Privilege::UserAdmin => Need::UserAdmin(db),
            Privilege::ClusterMonitor => Need::ClusterMonitor,
            Privilege::ClusterManager => Need::ClusterManager,
            Privilege::HostManager => Need::HostManager,
        }
    }
}

/// A command the router answers itself.
pub(crate) type Handler = for<'a> fn(
    &'a Arc<RouterState>,
    &'a mut Session,
    &'a Request<'a>,
) -> BoxFuture<'a, Result<Reply>>;

/// Who runs a command.
#[derive(Clone, Copy)]
pub(crate) enum Run {
    /// The router, with this handler.
    Router(Handler),
    /// Where its namespace lives: the sharded read or write path for a
    /// sharded collection, else the database's primary shard.
    Namespace,
}

/// One command.
#[derive(Clone, Copy)]
pub(crate) struct CommandSpec {
    /// The name drivers send.
    pub name: &'static str,
    /// Other names for it (`ismaster`, `findandmodify`, …).
    pub aliases: &'static [&'static str],
    /// What it needs of the user's roles.
    pub privilege: Privilege,
    /// Whether it writes (opcounters, the write fault hook).
    pub writes: bool,
    /// Whether a `txnNumber` makes it a retryable write (its reply kept for
    /// a driver's retry).
    pub retryable: bool,
    /// Who runs it.
    pub run: Run,
}

/// Every command the router knows, by name and alias.
pub(crate) struct Registry {
    specs: Vec<CommandSpec>,
    by_name: HashMap<&'static str, usize>,
}

impl Registry {
    /// The registry over `specs`; a name given twice is a bug.
    pub(crate) fn new(specs: Vec<CommandSpec>) -> Registry {
        let mut by_name = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            for name in std::iter::once(&spec.name).chain(spec.aliases) {
                let previous = by_name.insert(*name, i);
                debug_assert!(previous.is_none(), "command {name} registered twice");
            }
        }
        Registry { specs, by_name }
    }

    /// The spec of `name`, if the router knows the command.
    pub(crate) fn get(&self, name: &str) -> Option<&CommandSpec> {
        self.by_name.get(name).map(|i| &self.specs[*i])
    }

    /// The position of `name`'s spec in [`Registry::all`].
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Every spec, in registration order.
    pub(crate) fn all(&self) -> &[CommandSpec] {
        &self.specs
    }
}

/// A command that goes where its namespace lives.
pub(crate) const fn namespace(name: &'static str, privilege: Privilege) -> CommandSpec {
    CommandSpec {
        name,
        aliases: &[],
        privilege,
        writes: false,
        retryable: false,
        run: Run::Namespace,
    }
}

/// A command the router answers with `handler`.
pub(crate) const fn router(
    name: &'static str,
    privilege: Privilege,
    handler: Handler,
) -> CommandSpec {
    CommandSpec {
        name,
        aliases: &[],
        privilege,
        writes: false,
        retryable: false,
        run: Run::Router(handler),
    }
}

impl CommandSpec {
    /// The same command under other names too.
    pub(crate) const fn aliases(mut self, aliases: &'static [&'static str]) -> CommandSpec {
        self.aliases = aliases;
        self
    }

    /// A write; `retryable` when a `txnNumber` makes it a retryable write.
    pub(crate) const fn writes(mut self, retryable: bool) -> CommandSpec {
        self.writes = true;
        self.retryable = retryable;
        self
    }
}

/// Makes a [`Handler`] from an async body over `state`, `session`, `req`.
macro_rules! handler {
    (|$state:ident, $session:ident, $req:ident| $body:expr) => {{
        #[allow(unused_variables)]
        fn h<'a>(
            $state: &'a std::sync::Arc<$crate::state::RouterState>,
            $session: &'a mut $crate::commands::Session,
            $req: &'a $crate::commands::Request<'a>,
        ) -> futures::future::BoxFuture<'a, $crate::error::Result<$crate::commands::Reply>>
        {
            Box::pin(async move { $body })
        }
        h as $crate::commands::registry::Handler
    }};
}
pub(crate) use handler;
