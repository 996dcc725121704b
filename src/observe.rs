//! The `tracing` spans around a session's load and commit, and the tally of the store calls and
//! Redis commands each took (a task-local counter the store calls bump, so that the stores need
//! no parameter for it).
//!
//! The spans carry no token, session id or key: only static names, counts and times.

use std::{cell::Cell, future::Future, time::Instant};

use tracing::{Instrument, field::Empty};

use crate::{
    Error,
    metrics::{self, Op},
    session::Plan,
    store::Record,
    wire::TokenOut,
};

/// What one load or commit cost.
#[derive(Default)]
struct Tally {
    store_calls: Cell<u64>,
    redis_commands: Cell<u64>,
    /// A store call failed (and its error was counted there).
    failed: Cell<bool>,
}

tokio::task_local! {
    static TALLY: Tally;
}

/// Counts one Redis command sent, for the load or commit in progress.
#[cfg(feature = "redis")]
pub(crate) fn redis_command() {
    let _ = TALLY.try_with(|t| t.redis_commands.set(t.redis_commands.get() + 1));
}

/// Runs one store call: times it, counts it for the load or commit in progress, and records it
/// in the metrics.
pub(crate) async fn store_call<T>(
    op: Op,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let start = Instant::now();
    let result = call.await;
    let error = result.as_ref().err();
    metrics::store_call(op, start.elapsed(), error);
    let _ = TALLY.try_with(|t| {
        t.store_calls.set(t.store_calls.get() + 1);
        t.failed.set(t.failed.get() || error.is_some());
    });
    result
}

/// What a load or commit cost: its store calls, and whether one of them failed.
struct Cost {
    store_calls: u64,
    failed: bool,
}

/// Runs `call` inside `span`, with a fresh tally, and records on the span how long it took and
/// what it cost.
async fn tallied<T>(span: tracing::Span, call: impl Future<Output = T>) -> (T, Cost) {
    let recorded = span.clone();
    let start = Instant::now();
    let (result, (store_calls, redis_commands, failed)) = TALLY
        .scope(Tally::default(), async {
            let result = call.await;
            let tally = TALLY.with(|t| {
                let Tally {
                    store_calls,
                    redis_commands,
                    failed,
                } = t;
                (store_calls.get(), redis_commands.get(), failed.get())
            });
            (result, tally)
        })
        .instrument(span)
        .await;
    recorded.record("duration_us", start.elapsed().as_micros() as u64);
    recorded.record("store_calls", store_calls);
    recorded.record("redis_commands", redis_commands);
    (
        result,
        Cost {
            store_calls,
            failed,
        },
    )
}

/// The `op` of a commit's span: what `plan` does.
pub(crate) fn op_of(plan: &Plan) -> &'static str {
    match plan {
        Plan::Nothing | Plan::Resend => "nothing",
        Plan::Failed(_) => "refused",
        Plan::Destroy { .. } => "destroy",
        Plan::Write(w) if w.renewed_from.is_some() => "renew",
        Plan::Write(w) if w.change.is_create() => "create",
        Plan::Write(_) => "update",
    }
}

/// A session's load from the store: the span `session_load`.
pub(crate) async fn load(
    call: impl Future<Output = Result<Option<Record>, Error>>,
) -> Result<Option<Record>, Error> {
    let span = tracing::debug_span!(
        "session_load",
        outcome = Empty,
        duration_us = Empty,
        store_calls = Empty,
        redis_commands = Empty,
    );
    let recorded = span.clone();
    let (result, _) = tallied(span, call).await;
    let outcome = match &result {
        Ok(Some(_)) => "found",
        Ok(None) => "not_found",
        Err(e) => metrics::kind(e),
    };
    recorded.record("outcome", outcome);
    metrics::loaded(result.as_ref().ok().and_then(Option::as_ref));
    result
}

/// A session's commit: the span `session_commit`, `op` saying what it does (see [`op_of`]).
pub(crate) async fn commit(
    op: &'static str,
    call: impl Future<Output = Result<Option<TokenOut>, Error>>,
) -> Result<Option<TokenOut>, Error> {
    let span = tracing::debug_span!(
        "session_commit",
        op,
        outcome = Empty,
        duration_us = Empty,
        store_calls = Empty,
        redis_commands = Empty,
    );
    let recorded = span.clone();
    let (result, cost) = tallied(span, call).await;
    let outcome = match &result {
        Ok(Some(TokenOut::Set { .. })) => "stored",
        Ok(Some(TokenOut::Clear)) => "cleared",
        Ok(None) => "nothing",
        Err(e) => metrics::kind(e),
    };
    recorded.record("outcome", outcome);
    if cost.store_calls > 0 {
        metrics::committed();
    }
    if let Err(e) = &result {
        // A store call's error was counted by it; so was a failed load that a request's
        // commit only reports again.
        let from_store = matches!(e, Error::Store(_) | Error::Timeout(_) | Error::Malformed(_));
        if !cost.failed && !from_store {
            metrics::failed_before_store(e);
        }
        if cost.store_calls > 0 {
            tracing::warn!(op, outcome, error = %e, "session commit failed");
        }
    }
    result
}
