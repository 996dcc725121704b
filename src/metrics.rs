//! Metrics of the session layer, through the [`metrics`](https://docs.rs/metrics) facade, with
//! the `metrics` feature (off by default). Install any recorder (for Prometheus,
//! [metrics-exporter-prometheus](https://docs.rs/metrics-exporter-prometheus)) and the layer's
//! counters and histograms show there; without the feature, or without a recorder, they cost
//! nothing but a check.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `tower_scs_loads_total` | counter | | session loads from the store (a request's first read, a `SessionLoader::load`), failed ones and hits of the local cache included |
//! | `tower_scs_commits_total` | counter | | commits that went to the store: the layer's at the end of a request, and `Session::commit` |
//! | `tower_scs_creates_total` | counter | | new sessions stored |
//! | `tower_scs_renewals_total` | counter | | sessions renewed (new token, same data) |
//! | `tower_scs_destroys_total` | counter | | sessions destroyed by their own request |
//! | `tower_scs_revokes_total` | counter | | sessions revoked by another (a device, or all of an owner) |
//! | `tower_scs_errors_total` | counter | `kind`, `op` | errors, by kind (below) and by the store call they came from (`op`, as for `tower_scs_store_seconds`; `commit` also for a write refused before any store call) |
//! | `tower_scs_cache_hits_total` | counter | | loads the Redis store's local cache answered, with no Redis command |
//! | `tower_scs_cache_misses_total` | counter | | loads the local cache could not answer, sent to Redis |
//! | `tower_scs_store_seconds` | histogram | `op` | the time of each store call, seconds: `op` is `load`, `commit`, `delete`, `replace`, `take`, `delete_owner`, `owner_sessions` or `delete_owned` |
//! | `tower_scs_session_bytes` | histogram | | the size of each session loaded: bytes of its keys and JSON values |
//!
//! The error kinds: `store` (the backend failed), `timeout` (no answer within the store
//! timeout), `malformed` (a stored record not in the store's shape), `too_large`, `value` (a
//! value that does not serialize), `unsupported`, `config`, `missing_layer`.
//!
//! Every name and label is a `&'static str`: no token, session id or key is ever a label, and a
//! metric costs no allocation on the request path. Counters move once per event (a request
//! that reads and writes its session counts one load and one commit).
//!
//! # Spans
//!
//! With or without the feature, the layer's loads and commits run inside `tracing` spans at
//! `DEBUG` (target `tower_scs::observe`), which cost nothing when no subscriber wants them:
//!
//! | span | fields |
//! |---|---|
//! | `session_load` | `outcome`: `found`, `not_found`, or the error kind; `duration_us`; `store_calls`; `redis_commands` |
//! | `session_commit` | `op`: `create`, `update`, `renew`, `destroy`, or `refused` (a write refused, or a load failed, before the commit); `outcome`: `stored`, `cleared` (destroyed), `nothing` (the session had ended), or the error kind; `duration_us`; `store_calls`; `redis_commands` |
//!
//! `store_calls` counts the calls of the [`SessionStore`](crate::store::SessionStore) trait,
//! `redis_commands` the commands `RedisStore` sent for them (0 on other
//! stores, and for a load the local cache answered). Events: `ERROR` *session error; sending the
//! error response* when the layer answers with its error response, and `WARN` *session commit
//! failed* (with `op`, `outcome`, `error`) when a commit's store calls fail. No span, field or
//! event holds a token, a hash of one, a session id or a Redis key; error messages never do
//! either.
//!
//! # Example output
//!
//! `examples/put_get` with `METRICS=1`, on Redis with `LOCAL_CACHE=1000`: a put, three gets, a
//! renew and a destroy; a put, then Redis stopped and a get (the error response, after the
//! 900 ms command timeout). An excerpt of `GET /metrics`:
//!
//! ```text
//! # TYPE tower_scs_loads_total counter
//! tower_scs_loads_total 5
//! # TYPE tower_scs_cache_hits_total counter
//! tower_scs_cache_hits_total 3
//! # TYPE tower_scs_cache_misses_total counter
//! tower_scs_cache_misses_total 2
//! # TYPE tower_scs_errors_total counter
//! tower_scs_errors_total{kind="timeout",op="load"} 1
//! # TYPE tower_scs_commits_total counter
//! tower_scs_commits_total 4
//! # TYPE tower_scs_creates_total counter
//! tower_scs_creates_total 2
//! # TYPE tower_scs_renewals_total counter
//! tower_scs_renewals_total 1
//! # TYPE tower_scs_destroys_total counter
//! tower_scs_destroys_total 1
//! # TYPE tower_scs_store_seconds summary
//! tower_scs_store_seconds{op="load",quantile="0"} 0.000097182
//! tower_scs_store_seconds{op="load",quantile="0.5"} 0.0012848670523542731
//! tower_scs_store_seconds{op="load",quantile="1"} 0.901455537
//! tower_scs_store_seconds_sum{op="load"} 0.9026668480000001
//! tower_scs_store_seconds_count{op="load"} 5
//! tower_scs_store_seconds_count{op="commit"} 3
//! tower_scs_store_seconds_count{op="replace"} 1
//! tower_scs_store_seconds_count{op="delete"} 1
//! ```
//!
//! And what a `tracing_subscriber::fmt()` subscriber at `DEBUG`, with span closes shown
//! (`.with_span_events(FmtSpan::CLOSE)`), printed for the observability test's steps on Redis:
//! a put, a get, a put, a renew (which reads first), a destroy, then a get with Redis stopped
//! (timestamps cut). The first commit sends 2 commands: `EVALSHA`, then `EVAL`, since the fresh
//! server did not know the script yet.
//!
//! ```text
//! DEBUG session_commit{op="create" duration_us=1524 store_calls=1 redis_commands=2 outcome="stored"}: tower_scs::observe: close time.busy=583µs time.idle=974µs
//! DEBUG session_load{duration_us=437 store_calls=1 redis_commands=1 outcome="found"}: tower_scs::observe: close time.busy=196µs time.idle=270µs
//! DEBUG session_commit{op="update" duration_us=460 store_calls=1 redis_commands=1 outcome="stored"}: tower_scs::observe: close time.busy=154µs time.idle=327µs
//! DEBUG session_load{duration_us=301 store_calls=1 redis_commands=1 outcome="found"}: tower_scs::observe: close time.busy=103µs time.idle=217µs
//! DEBUG session_commit{op="renew" duration_us=976 store_calls=2 redis_commands=3 outcome="stored"}: tower_scs::observe: close time.busy=261µs time.idle=733µs
//! DEBUG session_commit{op="destroy" duration_us=643 store_calls=1 redis_commands=2 outcome="cleared"}: tower_scs::observe: close time.busy=186µs time.idle=475µs
//! DEBUG session_load{duration_us=901404 store_calls=1 redis_commands=1 outcome="timeout"}: tower_scs::observe: close time.busy=511µs time.idle=901ms
//! ERROR tower_scs::error: session error error=session store did not answer within 900ms
//! DEBUG session_commit{op="refused" duration_us=11 store_calls=0 redis_commands=0 outcome="timeout"}: tower_scs::observe: close time.busy=6.34µs time.idle=316µs
//! ERROR tower_scs::layer::service: session error; sending the error response error=session store did not answer within 900ms
//! ```

use crate::Error;

/// Counter: session loads from the store.
pub const LOADS_TOTAL: &str = "tower_scs_loads_total";
/// Counter: commits that went to the store.
pub const COMMITS_TOTAL: &str = "tower_scs_commits_total";
/// Counter: new sessions stored.
pub const CREATES_TOTAL: &str = "tower_scs_creates_total";
/// Counter: sessions renewed.
pub const RENEWALS_TOTAL: &str = "tower_scs_renewals_total";
/// Counter: sessions destroyed by their own request.
pub const DESTROYS_TOTAL: &str = "tower_scs_destroys_total";
/// Counter: sessions revoked by another.
pub const REVOKES_TOTAL: &str = "tower_scs_revokes_total";
/// Counter, labels `kind` and `op`: errors.
pub const ERRORS_TOTAL: &str = "tower_scs_errors_total";
/// Counter: loads the local cache answered.
pub const CACHE_HITS_TOTAL: &str = "tower_scs_cache_hits_total";
/// Counter: loads the local cache sent on to Redis.
pub const CACHE_MISSES_TOTAL: &str = "tower_scs_cache_misses_total";
/// Histogram, label `op`: the time of each store call, in seconds.
pub const STORE_SECONDS: &str = "tower_scs_store_seconds";
/// Histogram: the size of each session loaded, in bytes.
pub const SESSION_BYTES: &str = "tower_scs_session_bytes";

/// Whether the metrics are recorded (the `metrics` feature): store calls are timed only then.
pub(crate) const ON: bool = cfg!(feature = "metrics");

/// A store call, the `op` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Load,
    Commit,
    Delete,
    Replace,
    Take,
    DeleteOwner,
    OwnerSessions,
    DeleteOwned,
}

impl Op {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Load => "load",
            Op::Commit => "commit",
            Op::Delete => "delete",
            Op::Replace => "replace",
            Op::Take => "take",
            Op::DeleteOwner => "delete_owner",
            Op::OwnerSessions => "owner_sessions",
            Op::DeleteOwned => "delete_owned",
        }
    }
}

/// The `kind` label of an error (also the `outcome` of a failed span).
pub(crate) fn kind(e: &Error) -> &'static str {
    match e {
        Error::Store(_) => "store",
        Error::Timeout(_) => "timeout",
        Error::Malformed(_) => "malformed",
        Error::Value { .. } => "value",
        Error::TooLarge(_) => "too_large",
        Error::Unsupported(_) => "unsupported",
        Error::Config(_) => "config",
        Error::MissingLayer => "missing_layer",
    }
}

#[cfg(feature = "metrics")]
mod on;
#[cfg(feature = "metrics")]
pub(crate) use self::on::*;

/// Without the `metrics` feature: nothing.
#[cfg(not(feature = "metrics"))]
mod off {
    use std::time::Duration;

    use super::{Error, Op};
    use crate::session::EventKind;

    pub(crate) fn store_call(_: Op, _: Duration, _: Option<&Error>) {}
    pub(crate) fn loaded(_: Option<&crate::store::Record>) {}
    pub(crate) fn committed() {}
    pub(crate) fn failed_before_store(_: &Error) {}
    pub(crate) fn event(_: EventKind) {}
    #[cfg(feature = "redis")]
    pub(crate) fn cache(_: bool) {}
}
#[cfg(not(feature = "metrics"))]
pub(crate) use self::off::*;
