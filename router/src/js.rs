//! Server-side JavaScript for `mapReduce`, run in the router (the shards
//! need none): an embedded interpreter (`boa_engine`) with the helpers a
//! mongod's JavaScript has (`emit`, `ObjectId`, `NumberLong`, `Array.sum`,
//! …).
//!
//! Values cross between BSON and JavaScript as canonical Extended JSON:
//! a batch of documents is one JSON text, revived in JavaScript into
//! `ObjectId`, `Date`, `NumberLong`, … objects, and results come back
//! through `JSON.stringify` with a replacer that tags them again. As on a
//! mongod, every JavaScript number comes back a double, and a
//! `NumberInt`/`NumberLong`/`NumberDecimal` object keeps its type.
//!
//! A [`Js`] is not `Send`: it lives on one blocking thread. Loops and
//! recursion are bounded, so a runaway function fails (139
//! JSInterpreterFailure) instead of holding a thread for ever.

use boa_engine::{js_string, Context, JsValue, Source};
use bson::{Bson, Document};

use crate::error::{Result, RouterError};

/// The helpers and the conversions, evaluated once per interpreter.
const PRELUDE: &str = include_str!("js/prelude.js");

/// Loop iterations a call may run before it is stopped.
const LOOP_LIMIT: u64 = 100_000_000;
/// Nested calls a function may make.
const RECURSION_LIMIT: usize = 400;

/// One interpreter with a job's functions compiled in.
pub(crate) struct Js {
    ctx: Context,
}

fn js_error(e: impl std::fmt::Display) -> RouterError {
    RouterError::command(139, "JSInterpreterFailure", e.to_string())
}

impl Js {
    /// An interpreter with the prelude, `scope`'s variables and the named
    /// functions (`(name, source)`: `__map`, `__reduce`, `__finalize`).
    pub(crate) fn new(functions: &[(&str, &str)], scope: &Document) -> Result<Js> {
        let mut ctx = Context::default();
        ctx.runtime_limits_mut()
            .set_loop_iteration_limit(LOOP_LIMIT);
        ctx.runtime_limits_mut()
            .set_recursion_limit(RECURSION_LIMIT);
        ctx.eval(Source::from_bytes(PRELUDE)).map_err(js_error)?;
        let mut js = Js { ctx };
        for (name, source) in functions {
            let code = format!(
                "var {name} = __compile({});",
                serde_json::to_string(source).unwrap_or_default()
            );
            js.ctx.eval(Source::from_bytes(&code)).map_err(js_error)?;
        }
        js.call("__setScope", &Bson::Document(scope.clone()))?;
        Ok(js)
    }

    /// Bounds the loop iterations of each call (tests use a small one).
    #[cfg(test)]
    pub(crate) fn set_loop_limit(&mut self, iterations: u64) {
        self.ctx
            .runtime_limits_mut()
            .set_loop_iteration_limit(iterations);
    }

    /// Calls the prelude's function `name` with `arg` (as Extended JSON);
    /// returns what it returns.
    pub(crate) fn call(&mut self, name: &str, arg: &Bson) -> Result<Bson> {
        let text = serde_json::to_string(&arg.clone().into_canonical_extjson())
            .map_err(|e| RouterError::bad_value(e.to_string()))?;
        let global = self.ctx.global_object();
        let f = global
            .get(js_string!(name), &mut self.ctx)
            .map_err(js_error)?;
        let f = f
            .as_callable()
            .ok_or_else(|| js_error(format!("{name} is not a function")))?;
        let out = f
            .call(
                &JsValue::undefined(),
                &[JsValue::from(js_string!(text.as_str()))],
                &mut self.ctx,
            )
            .map_err(js_error)?;
        let out = out
            .as_string()
            .map(|s| s.to_std_string_escaped())
            .ok_or_else(|| js_error(format!("{name} returned no JSON")))?;
        let json: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| js_error(format!("{name}: {e}")))?;
        Bson::try_from(json).map_err(|e| js_error(format!("{name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn reduce_of(source: &str, key: Bson, values: Vec<Bson>) -> Bson {
        let mut js = Js::new(&[("__reduce", source)], &doc! {}).unwrap();
        let groups = Bson::Array(vec![Bson::Array(vec![key, Bson::Array(values)])]);
        match js.call("__reduceGroups", &groups).unwrap() {
            Bson::Array(mut out) => out.remove(0),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn values_keep_their_types_across() {
        let oid = bson::oid::ObjectId::new();
        let date = bson::DateTime::from_millis(1_700_000_000_123);
        let source = "function(k, vs) { return vs[0]; }";
        for v in [
            Bson::ObjectId(oid),
            Bson::DateTime(date),
            Bson::Int64(1 << 60),
            Bson::String("é\"x".into()),
            Bson::Boolean(true),
            Bson::Null,
            Bson::Document(doc! {"a": [1.5, "b", {"c": Bson::Int64(3)}]}),
            Bson::Decimal128("1.10".parse().unwrap()),
            Bson::Timestamp(bson::Timestamp {
                time: 5,
                increment: 7,
            }),
        ] {
            assert_eq!(reduce_of(source, Bson::Null, vec![v.clone()]), v);
        }
        // Numbers come back doubles, as from a mongod.
        assert_eq!(
            reduce_of(source, Bson::Null, vec![Bson::Int32(4)]),
            Bson::Double(4.0)
        );
    }

    #[test]
    fn helpers_and_scope() {
        let mut js = Js::new(
            &[(
                "__reduce",
                "function(k, vs) { return Array.sum(vs) * factor + NumberLong(2); }",
            )],
            &doc! {"factor": 10},
        )
        .unwrap();
        let groups = Bson::Array(vec![Bson::Array(vec![
            Bson::Null,
            Bson::Array(vec![Bson::Int32(1), Bson::Double(2.5)]),
        ])]);
        assert_eq!(
            js.call("__reduceGroups", &groups).unwrap(),
            Bson::Array(vec![Bson::Double(37.0)])
        );
    }

    #[test]
    fn errors_are_js_interpreter_failures() {
        let e = Js::new(&[("__reduce", "function( {")], &doc! {})
            .err()
            .unwrap();
        assert_eq!(e.code().0, 139);
        let mut js = Js::new(
            &[("__reduce", "function(k, vs) { while (true) {} }")],
            &doc! {},
        )
        .unwrap();
        js.set_loop_limit(10_000);
        let groups = Bson::Array(vec![Bson::Array(vec![Bson::Null, Bson::Array(vec![])])]);
        assert_eq!(
            js.call("__reduceGroups", &groups).unwrap_err().code().0,
            139
        );
    }
}
