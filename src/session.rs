//! [`Session`]: the per-request handle handlers read and write.
//!
//! Nothing is fetched until a handler reads: writes are recorded as pending changes (keys set,
//! keys removed, cleared, new deadline, remember-me) and the layer hands exactly those to the
//! store after the handler returns.
//!
//! This file holds the type and how it loads; beside it, its public methods by topic:
//! `values.rs` (get, insert, remove, …), `lifecycle.rs` (destroy, owner, deadline, token, …) and
//! `hand_over.rs` (renew, merge, pop) and `commit.rs` (storing it, at the end of the request or
//! by hand); then `state.rs` (what a request did, and the commit plan drawn from it),
//! `loader.rs` (sessions outside a request) and `sessions.rs` (several layers, and the axum
//! extractors).

mod commit;
mod csrf;
mod devices;
mod events;
mod hand_over;
mod lifecycle;
mod loader;
mod sessions;
mod state;
mod values;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, OnceCell};

use self::state::{Carried, State, View};
pub(crate) use self::{
    commit::Begun,
    events::EventHook,
    state::{Plan, Write},
};
pub use self::{
    csrf::CSRF_KEY,
    devices::{Device, DeviceId, InvalidDeviceId, MAX_IP_BYTES, MAX_USER_AGENT_BYTES},
    events::{EventKind, SessionEvent},
    loader::SessionLoader,
    sessions::Sessions,
};
use crate::{Error, shared::Shared, store::Record, wire::WireToken};

/// Whether, and how, a request changed its session (SCS `Status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Status {
    /// Nothing to store.
    #[default]
    Unmodified,
    /// The session will be committed and its cookie sent.
    Modified,
    /// The session was destroyed: it is deleted and the client gets an expiring cookie.
    Destroyed,
}

/// The session of the current request: a cheap, cloneable handle.
///
/// Take it as a handler argument in axum (`session: Session`), or from the request extensions in
/// any Tower service (`req.extensions().get::<Session>()`). Reads are `async` because the first
/// one loads the session from the store; writes are not, because they only record a change that
/// the layer commits after the handler returns. Values are any `serde` type, stored as JSON.
///
/// ```
/// # async fn demo(session: tower_scs::Session) -> Result<(), tower_scs::Error> {
/// session.insert("user_id", 42_u64);
/// let id: Option<u64> = session.get("user_id").await?;
/// session.remove("cart");
/// let visits: u32 = session.pop("visits").await?.unwrap_or(0);
/// session.renew_token().await?; // after login, against session fixation
/// # Ok(()) }
/// ```
///
/// **After the response.** The layer commits what the request changed once the handler has
/// returned. A clone kept beyond that (in a WebSocket task, a stream, a spawned job) still
/// works, but what it changes from then on is stored by [`Session::commit`] and only by it;
/// see there for what such a session can and cannot do.
#[derive(Clone)]
pub struct Session(Arc<Inner>);

struct Inner {
    shared: Arc<Shared>,
    /// The generation the session was made with (here, not behind an `Arc` of its own: no
    /// allocation for it on the request path).
    first: Generation,
    /// The session of the next layer out, when several session layers wrap the service.
    outer: Option<Session>,
    /// Wakes reads and commits that waited for a commit in flight.
    settled: Notify,
    state: Mutex<State>,
}

/// The token a session stands for, and its stored record once loaded. A commit that stores
/// the session puts a new generation in its place.
#[derive(Default)]
pub(super) struct Generation {
    /// The acceptable token the request (or the loader) carried, or the one the last commit
    /// stored; `None` for a new session, not yet known to exist until loaded.
    token: Option<WireToken>,
    /// The stored record, once loaded (`None` inside: no such session); shared with the
    /// store's local cache when it came from there.
    record: OnceCell<Option<Arc<Record>>>,
    /// The session had a token, and it ended (destroyed, or gone from the store).
    ended: bool,
}

impl Generation {
    fn new(token: Option<WireToken>) -> Self {
        Generation {
            token,
            record: OnceCell::new(),
            ended: false,
        }
    }
}

/// Which generation the session is at: the first (`None`) or one a commit made.
#[derive(Clone, Default)]
pub(super) struct Current(Option<Arc<Generation>>);

impl Current {
    pub(super) fn later(generation: Generation) -> Self {
        Current(Some(Arc::new(generation)))
    }

    fn is(&self, other: &Current) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        token: Option<WireToken>,
        outer: Option<Session>,
    ) -> Self {
        Session(Arc::new(Inner {
            shared,
            first: Generation::new(token),
            outer,
            settled: Notify::new(),
            state: Mutex::new(State::default()),
        }))
    }

    /// The generation `current` names.
    fn generation<'a>(&'a self, current: &'a Current) -> &'a Generation {
        current.0.as_deref().unwrap_or(&self.0.first)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every method leaves State consistent between statements, so a poisoned lock is usable.
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `e` as the request's failure, so that the layer answers with the error response;
    /// once the response has left, only the caller learns of it.
    fn fail(&self, state: &mut State, e: &Error) {
        if !state.answered {
            state.failure.get_or_insert_with(|| e.clone());
        }
    }

    /// Runs `f` over the state and the stored record (loading it on first use; `None` for a new
    /// session, or one destroyed or renewed). Waits for a commit in flight on another clone, so
    /// that `f` never sees a half-committed session. A load error is also kept for the layer.
    async fn with_base<R>(
        &self,
        f: impl FnOnce(&mut State, Option<&Record>) -> R,
    ) -> Result<R, Error> {
        loop {
            let snapshot = {
                let state = self.state();
                (!state.committing).then(|| (state.generation.clone(), state.fresh))
            };
            let Some((current, fresh)) = snapshot else {
                self.settled().await;
                continue;
            };
            let record = match fresh {
                true => None,
                false => self.load(self.generation(&current)).await?,
            };
            let mut state = self.state();
            if state.committing || !state.generation.is(&current) {
                continue;
            }
            let base = record.filter(|_| !state.fresh);
            return Ok(f(&mut state, base));
        }
    }

    /// The record of `generation`, loading it on first use: from the store's copy in memory
    /// when it has one, else through a store call.
    async fn load<'g>(&self, generation: &'g Generation) -> Result<Option<&'g Record>, Error> {
        let Some(token) = &generation.token else {
            return Ok(None);
        };
        let shared = &self.0.shared;
        if !generation.record.initialized()
            && let Some(record) = shared.load_local(token.token())
        {
            // A clone that began a load meanwhile wins; its answer is then the one read.
            let _ = generation.record.set(Some(record));
        }
        if let Some(record) = generation.record.get() {
            return Ok(record.as_deref());
        }
        let loaded = generation
            .record
            .get_or_try_init(|| async { Ok(shared.load(token.token()).await?.map(Arc::new)) })
            .await;
        match loaded {
            Ok(record) => Ok(record.as_deref()),
            Err(e) => {
                self.fail(&mut self.state(), &e);
                Err(e)
            }
        }
    }

    /// Returns once no commit is in flight.
    async fn settled(&self) {
        let notified = self.0.settled.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = self.state();
            if !state.committing {
                return;
            }
            state.waiting = true;
        }
        notified.await;
    }

    /// Runs `f` over the session as this request sees it: the stored record (if any, and not
    /// superseded) under the pending changes.
    async fn view<R>(&self, f: impl FnOnce(View<'_>) -> R) -> Result<R, Error> {
        self.with_base(|state, base| f(View { state, base })).await
    }

    /// The store id of the record this session stands for, if it may exist in the store.
    fn committed_id(&self, state: &State) -> Option<String> {
        let generation = self.generation(&state.generation);
        if state.fresh || matches!(generation.record.get(), Some(None)) {
            return None;
        }
        let token = generation.token.as_ref()?;
        Some(self.0.shared.store_id(token.token()).into_owned())
    }

    /// Whether `key` is certainly absent, beneath the request's own writes, without asking the
    /// store.
    fn known_absent(&self, state: &State, key: &str) -> bool {
        if state.committing {
            return false;
        }
        if let Some(carried) = &state.carried {
            return !carried.values.contains_key(key);
        }
        if state.fresh || state.cleared || state.removed.contains(key) || state.taken.contains(key)
        {
            return true;
        }
        let generation = self.generation(&state.generation);
        match (generation.token.is_some(), generation.record.get()) {
            (false, _) | (_, Some(None)) => true,
            (true, Some(Some(r))) => !r.values.contains_key(key),
            (true, None) => false,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.0.shared
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        let (status, has_token) = {
            let state = self.state();
            (
                state.status,
                self.generation(&state.generation).token.is_some(),
            )
        };
        f.debug_struct("Session")
            .field("status", &status)
            .field("has_token", &has_token)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
