//! The `tracing` spans around a session's load and commit, and the tally of the store calls and
//! Redis commands each took (a task-local counter the store calls bump, so that the stores need
//! no parameter for it).
//!
//! The spans carry no token, session id or key: only static names, counts and times.

use std::{cell::Cell, future::Future, sync::Arc, time::Instant};

use tracing::{Instrument, field::Empty};

use crate::{
    Error,
    metrics::{self, Op},
    session::Plan,
    store::Record,
    wire::TokenOut,
};

/// What one load or commit cost, while its span is on.
#[derive(Default)]
struct Tally {
    store_calls: Cell<u64>,
    redis_commands: Cell<u64>,
}

tokio::task_local! {
    static TALLY: Tally;
}

/// Counts one Redis command sent, for the load or commit in progress.
#[cfg(feature = "redis")]
pub(crate) fn redis_command() {
    let _ = TALLY.try_with(|t| t.redis_commands.set(t.redis_commands.get() + 1));
}

/// Runs one store call: counts it for the load or commit in progress, and, with the `metrics`
/// feature, times it and records it.
pub(crate) async fn store_call<T>(
    op: Op,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let start = metrics::ON.then(Instant::now);
    let result = call.await;
    if let Some(start) = start {
        metrics::store_call(op, start.elapsed(), result.as_ref().err());
    }
    let _ = TALLY.try_with(|t| t.store_calls.set(t.store_calls.get() + 1));
    result
}

/// Runs `call` inside `span`, with a fresh tally, and records on the span how long it took and
/// what it cost. When no subscriber wants the span, only runs `call`: no clock read, no tally.
async fn tallied<T>(span: tracing::Span, call: impl Future<Output = T>) -> T {
    if span.is_disabled() {
        return call.await;
    }
    let recorded = span.clone();
    let start = Instant::now();
    let (result, (store_calls, redis_commands)) = TALLY
        .scope(Tally::default(), async {
            let result = call.await;
            let tally = TALLY.with(|t| (t.store_calls.get(), t.redis_commands.get()));
            (result, tally)
        })
        .instrument(span)
        .await;
    recorded.record("duration_us", start.elapsed().as_micros() as u64);
    recorded.record("store_calls", store_calls);
    recorded.record("redis_commands", redis_commands);
    result
}

/// The `op` of a commit that only reports an error met before it.
const REFUSED: &str = "refused";

/// The `op` of a commit's span: what `plan` does.
pub(crate) fn op_of(plan: &Plan) -> &'static str {
    match plan {
        Plan::Nothing | Plan::Resend => "nothing",
        Plan::Failed(_) => REFUSED,
        Plan::Destroy { .. } => "destroy",
        Plan::Write(w) if w.renewed_from.is_some() => "renew",
        Plan::Write(w) if w.change.is_create() => "create",
        Plan::Write(_) => "update",
    }
}

/// The span `$name` of a load or commit, with the fields `$field` and those recorded when it
/// ends.
macro_rules! session_span {
    ($name:literal $(, $field:ident)*) => {
        tracing::debug_span!(
            $name,
            $($field,)*
            outcome = Empty,
            duration_us = Empty,
            store_calls = Empty,
            redis_commands = Empty,
        )
    };
}

/// Records `outcome` on `span`, unless no subscriber wants it: `record` on a disabled span
/// still costs about 200 instructions when `tracing`'s `log` feature is on.
fn record_outcome(span: &tracing::Span, outcome: &'static str) {
    if !span.is_disabled() {
        span.record("outcome", outcome);
    }
}

/// A session's load from the store: the span `session_load`.
pub(crate) async fn load(
    call: impl Future<Output = Result<Option<Record>, Error>>,
) -> Result<Option<Record>, Error> {
    let span = session_span!("session_load");
    let recorded = span.clone();
    let result = tallied(span, call).await;
    let outcome = match &result {
        Ok(Some(_)) => "found",
        Ok(None) => "not_found",
        Err(e) => metrics::kind(e),
    };
    record_outcome(&recorded, outcome);
    metrics::loaded(result.as_ref().ok().and_then(Option::as_ref));
    result
}

/// A load answered from the store's copy in memory by `local`: counted and timed as a load,
/// without a span; `None` at once when a subscriber wants the span `session_load`, so that
/// the load goes the way that records it.
pub(crate) fn load_local(local: impl FnOnce() -> Option<Arc<Record>>) -> Option<Arc<Record>> {
    if tracing::span_enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let start = metrics::ON.then(Instant::now);
    let record = local()?;
    if let Some(start) = start {
        metrics::store_call(Op::Load, start.elapsed(), None);
    }
    metrics::loaded(Some(&record));
    Some(record)
}

/// A session's commit: the span `session_commit`, `op` saying what it does (see [`op_of`]).
pub(crate) async fn commit(
    op: &'static str,
    call: impl Future<Output = Result<Option<TokenOut>, Error>>,
) -> Result<Option<TokenOut>, Error> {
    let span = session_span!("session_commit", op);
    let recorded = span.clone();
    let result = tallied(span, call).await;
    let outcome = match &result {
        Ok(Some(TokenOut::Set { .. })) => "stored",
        Ok(Some(TokenOut::Clear)) => "cleared",
        Ok(None) => "nothing",
        Err(e) => metrics::kind(e),
    };
    record_outcome(&recorded, outcome);
    let refused = op == REFUSED;
    if !refused {
        metrics::committed();
    }
    match &result {
        // A refused commit reports an error met before it: a failed load (counted by its
        // store call), or a write the session refused (counted here).
        Err(e @ (Error::TooLarge(_) | Error::Value { .. })) if refused => {
            metrics::failed_before_store(e);
        }
        Err(e) if !refused => tracing::warn!(op, outcome, error = %e, "session commit failed"),
        _ => {}
    }
    result
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc, time::SystemTime};

    use tracing::{Level, subscriber::NoSubscriber};

    use super::load_local;
    use crate::store::Record;

    /// The copy in memory is taken only while the span `session_load` is off: a subscriber at
    /// DEBUG gets the load through the store call, in its span, instead.
    #[test]
    fn a_local_load_steps_aside_for_a_wanted_span() {
        let now = SystemTime::now();
        let record = Arc::new(Record::new(HashMap::new(), now, now));
        let local = || load_local(|| Some(record.clone())).is_some();
        let at = |level| tracing_subscriber::fmt().with_max_level(level).finish();
        assert!(tracing::subscriber::with_default(
            NoSubscriber::new(),
            local
        ));
        assert!(tracing::subscriber::with_default(at(Level::INFO), local));
        assert!(!tracing::subscriber::with_default(at(Level::DEBUG), local));
    }
}
