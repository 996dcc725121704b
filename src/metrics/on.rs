//! The `metrics` feature's recording: one function per event, each with static names and
//! labels (the `metrics` macros then build their keys once, in statics, and allocate nothing).

use std::time::Duration;

use ::metrics::{counter, histogram};

use super::{Op, kind};
use crate::{Error, session::EventKind, store::Record};

/// A store call took `elapsed`, and failed with `error` if any.
pub(crate) fn store_call(op: Op, elapsed: Duration, error: Option<&Error>) {
    let secs = elapsed.as_secs_f64();
    match op {
        Op::Load => histogram!(super::STORE_SECONDS, "op" => "load").record(secs),
        Op::Commit => histogram!(super::STORE_SECONDS, "op" => "commit").record(secs),
        Op::Delete => histogram!(super::STORE_SECONDS, "op" => "delete").record(secs),
        Op::Replace => histogram!(super::STORE_SECONDS, "op" => "replace").record(secs),
        Op::Take => histogram!(super::STORE_SECONDS, "op" => "take").record(secs),
        Op::DeleteOwner => histogram!(super::STORE_SECONDS, "op" => "delete_owner").record(secs),
        Op::OwnerSessions => {
            histogram!(super::STORE_SECONDS, "op" => "owner_sessions").record(secs);
        }
        Op::DeleteOwned => histogram!(super::STORE_SECONDS, "op" => "delete_owned").record(secs),
    }
    if let Some(e) = error {
        error_of(op.name(), e);
    }
}

/// An error, by kind and by where it came from (not the request path: labels built here may
/// allocate).
fn error_of(op: &'static str, e: &Error) {
    counter!(super::ERRORS_TOTAL, "kind" => kind(e), "op" => op).increment(1);
}

/// A load from the store answered `record` (`None`: no such session, or the load failed).
pub(crate) fn loaded(record: Option<&Record>) {
    counter!(super::LOADS_TOTAL).increment(1);
    if let Some(record) = record {
        let bytes: usize = record.values.iter().map(|(k, v)| k.len() + v.len()).sum();
        histogram!(super::SESSION_BYTES).record(bytes as f64);
    }
}

/// A commit went to the store.
pub(crate) fn committed() {
    counter!(super::COMMITS_TOTAL).increment(1);
}

/// A commit refused a write before any store call (too large, or a value that does not
/// serialize).
pub(crate) fn failed_before_store(e: &Error) {
    error_of("commit", e);
}

/// A lifecycle event happened.
pub(crate) fn event(event: EventKind) {
    match event {
        EventKind::Created => counter!(super::CREATES_TOTAL).increment(1),
        EventKind::Renewed => counter!(super::RENEWALS_TOTAL).increment(1),
        EventKind::Destroyed => counter!(super::DESTROYS_TOTAL).increment(1),
        EventKind::Revoked => counter!(super::REVOKES_TOTAL).increment(1),
    }
}

/// The local cache answered a load (`hit`) or sent it on to Redis.
#[cfg(feature = "redis")]
pub(crate) fn cache(hit: bool) {
    match hit {
        true => counter!(super::CACHE_HITS_TOTAL).increment(1),
        false => counter!(super::CACHE_MISSES_TOTAL).increment(1),
    }
}
