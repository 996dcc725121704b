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
//! `describe()` gives the recorder a line of description of each. Every name and label is a
//! `&'static str`: no token, session id or key is ever a label, and a metric costs no
//! allocation on the request path. Counters move once per event (a request
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
//! 900 ms command timeout). `GET /metrics`, trimmed (no quantiles 0.9 to 0.999, and only the
//! counts of the ops other than `load`):
//!
//! ```text
//! # HELP tower_scs_loads_total Session loads from the store.
//! # TYPE tower_scs_loads_total counter
//! tower_scs_loads_total 5
//! # HELP tower_scs_cache_hits_total Loads the local cache answered.
//! # TYPE tower_scs_cache_hits_total counter
//! tower_scs_cache_hits_total 3
//! # HELP tower_scs_commits_total Session commits that went to the store.
//! # TYPE tower_scs_commits_total counter
//! tower_scs_commits_total 4
//! # HELP tower_scs_destroys_total Sessions destroyed by their own request.
//! # TYPE tower_scs_destroys_total counter
//! tower_scs_destroys_total 1
//! # HELP tower_scs_creates_total New sessions stored.
//! # TYPE tower_scs_creates_total counter
//! tower_scs_creates_total 2
//! # HELP tower_scs_cache_misses_total Loads the local cache sent on to Redis.
//! # TYPE tower_scs_cache_misses_total counter
//! tower_scs_cache_misses_total 2
//! # HELP tower_scs_errors_total Session errors, by kind and store call.
//! # TYPE tower_scs_errors_total counter
//! tower_scs_errors_total{kind="timeout",op="load"} 1
//! # HELP tower_scs_renewals_total Sessions renewed (new token, same data).
//! # TYPE tower_scs_renewals_total counter
//! tower_scs_renewals_total 1
//! # HELP tower_scs_store_seconds Time of each store call.
//! # TYPE tower_scs_store_seconds summary
//! tower_scs_store_seconds{op="load",quantile="0"} 0.00007345
//! tower_scs_store_seconds{op="load",quantile="0.5"} 0.001285895357266706
//! tower_scs_store_seconds{op="load",quantile="1"} 0.902183214
//! tower_scs_store_seconds_sum{op="load"} 0.903125933
//! tower_scs_store_seconds_count{op="load"} 5
//! tower_scs_store_seconds_count{op="replace"} 1
//! tower_scs_store_seconds_count{op="commit"} 3
//! tower_scs_store_seconds_count{op="delete"} 1
//! # HELP tower_scs_session_bytes Size of each session loaded.
//! # TYPE tower_scs_session_bytes summary
//! tower_scs_session_bytes_sum 44
//! tower_scs_session_bytes_count 4
//! ```
//!
//! And what a `tracing_subscriber::fmt()` subscriber at `DEBUG`, with span closes shown
//! (`.with_span_events(FmtSpan::CLOSE)`), printed for the observability test's steps on Redis:
//! a put, a get, a put, a renew (which reads first), a destroy, a put, then a get with Redis
//! stopped (timestamps cut). The first use of each script sends 2 commands (`EVALSHA`, then
//! `EVAL`, as the fresh server did not know the script yet): the first create, and the destroy.
//!
//! ```text
//! DEBUG session_commit{op="create" duration_us=1332 store_calls=1 redis_commands=2 outcome="stored"}: tower_scs::observe: close time.busy=461µs time.idle=901µs
//! DEBUG session_load{duration_us=415 store_calls=1 redis_commands=1 outcome="found"}: tower_scs::observe: close time.busy=188µs time.idle=252µs
//! DEBUG session_commit{op="update" duration_us=522 store_calls=1 redis_commands=1 outcome="stored"}: tower_scs::observe: close time.busy=147µs time.idle=393µs
//! DEBUG session_load{duration_us=276 store_calls=1 redis_commands=1 outcome="found"}: tower_scs::observe: close time.busy=97.7µs time.idle=195µs
//! DEBUG session_commit{op="renew" duration_us=1044 store_calls=2 redis_commands=3 outcome="stored"}: tower_scs::observe: close time.busy=238µs time.idle=825µs
//! DEBUG session_commit{op="destroy" duration_us=645 store_calls=1 redis_commands=2 outcome="cleared"}: tower_scs::observe: close time.busy=209µs time.idle=454µs
//! DEBUG session_commit{op="create" duration_us=364 store_calls=1 redis_commands=1 outcome="stored"}: tower_scs::observe: close time.busy=136µs time.idle=243µs
//! DEBUG session_load{duration_us=903128 store_calls=1 redis_commands=1 outcome="timeout"}: tower_scs::observe: close time.busy=234µs time.idle=903ms
//! ERROR tower_scs::error: session error error=session store did not answer within 900ms
//! DEBUG session_commit{op="refused" duration_us=9 store_calls=0 redis_commands=0 outcome="timeout"}: tower_scs::observe: close time.busy=5.06µs time.idle=16.3µs
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

/// Gives the installed recorder each metric's description and unit (Prometheus shows them as
/// `# HELP` lines). Call it once, after installing the recorder; the metrics are recorded
/// without it too.
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe() {
    use ::metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(LOADS_TOTAL, "Session loads from the store.");
    describe_counter!(COMMITS_TOTAL, "Session commits that went to the store.");
    describe_counter!(CREATES_TOTAL, "New sessions stored.");
    describe_counter!(RENEWALS_TOTAL, "Sessions renewed (new token, same data).");
    describe_counter!(DESTROYS_TOTAL, "Sessions destroyed by their own request.");
    describe_counter!(REVOKES_TOTAL, "Sessions revoked by another.");
    describe_counter!(ERRORS_TOTAL, "Session errors, by kind and store call.");
    describe_counter!(CACHE_HITS_TOTAL, "Loads the local cache answered.");
    describe_counter!(
        CACHE_MISSES_TOTAL,
        "Loads the local cache sent on to Redis."
    );
    describe_histogram!(STORE_SECONDS, Unit::Seconds, "Time of each store call.");
    describe_histogram!(SESSION_BYTES, Unit::Bytes, "Size of each session loaded.");
}

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
