//! The `metrics` feature's recording: one function per event. The hot ones name statics of
//! ours ([`Key`]s built at compile time, hash included): the `metrics` macros build their key
//! on every call unless the name is a literal, and ours are the constants of `metrics.rs`
//! (that was about 350 instructions a request).

use std::time::Duration;

use ::metrics::{Key, Label, Level, Metadata, counter, with_recorder};

use super::{Op, kind};
use crate::{Error, session::EventKind, store::Record};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The store-call histogram's keys, one per `op` label, in the order of [`Op`]'s variants.
macro_rules! by_op {
    ($($op:literal),*) => {
        [$({
            static LABELS: [Label; 1] = [Label::from_static_parts("op", $op)];
            Key::from_static_parts(super::STORE_SECONDS, &LABELS)
        }),*]
    };
}

static STORE_SECONDS: [Key; 8] = by_op!(
    "load",
    "commit",
    "delete",
    "replace",
    "take",
    "delete_owner",
    "owner_sessions",
    "delete_owned"
);
static LOADS: Key = Key::from_static_name(super::LOADS_TOTAL);
static SESSION_BYTES: Key = Key::from_static_name(super::SESSION_BYTES);
static COMMITS: Key = Key::from_static_name(super::COMMITS_TOTAL);
static CREATES: Key = Key::from_static_name(super::CREATES_TOTAL);
static RENEWALS: Key = Key::from_static_name(super::RENEWALS_TOTAL);
static DESTROYS: Key = Key::from_static_name(super::DESTROYS_TOTAL);
static REVOKES: Key = Key::from_static_name(super::REVOKES_TOTAL);
#[cfg(feature = "redis")]
static CACHE_HITS: Key = Key::from_static_name(super::CACHE_HITS_TOTAL);
#[cfg(feature = "redis")]
static CACHE_MISSES: Key = Key::from_static_name(super::CACHE_MISSES_TOTAL);

fn count(key: &'static Key) {
    with_recorder(|r| r.register_counter(key, &METADATA)).increment(1);
}

fn observe(key: &'static Key, value: f64) {
    with_recorder(|r| r.register_histogram(key, &METADATA)).record(value);
}

/// A store call took `elapsed`, and failed with `error` if any.
pub(crate) fn store_call(op: Op, elapsed: Duration, error: Option<&Error>) {
    observe(&STORE_SECONDS[op as usize], elapsed.as_secs_f64());
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
    count(&LOADS);
    if let Some(record) = record {
        let bytes: usize = record.values.iter().map(|(k, v)| k.len() + v.len()).sum();
        observe(&SESSION_BYTES, bytes as f64);
    }
}

/// A commit went to the store.
pub(crate) fn committed() {
    count(&COMMITS);
}

/// A commit refused a write before any store call (too large, or a value that does not
/// serialize).
pub(crate) fn failed_before_store(e: &Error) {
    error_of("commit", e);
}

/// A lifecycle event happened.
pub(crate) fn event(event: EventKind) {
    match event {
        EventKind::Created => count(&CREATES),
        EventKind::Renewed => count(&RENEWALS),
        EventKind::Destroyed => count(&DESTROYS),
        EventKind::Revoked => count(&REVOKES),
    }
}

/// The local cache answered a load (`hit`) or sent it on to Redis.
#[cfg(feature = "redis")]
pub(crate) fn cache(hit: bool) {
    match hit {
        true => count(&CACHE_HITS),
        false => count(&CACHE_MISSES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_op_has_its_own_store_seconds_key() {
        let ops = [
            Op::Load,
            Op::Commit,
            Op::Delete,
            Op::Replace,
            Op::Take,
            Op::DeleteOwner,
            Op::OwnerSessions,
            Op::DeleteOwned,
        ];
        for op in ops {
            let key = &STORE_SECONDS[op as usize];
            let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
            assert_eq!(key.name(), crate::metrics::STORE_SECONDS);
            assert_eq!(labels, [("op", op.name())], "{op:?}");
        }
    }
}
