//! [`Session`]: the per-request handle handlers read and write.
//!
//! Nothing is fetched until a handler reads: writes are recorded as pending changes (keys set,
//! keys removed, cleared, new deadline, remember-me) and the layer hands exactly those to the
//! store after the handler returns.
//!
//! This file holds the type and how it loads; beside it, its public methods by topic:
//! `values.rs` (get, insert, remove, …), `lifecycle.rs` (destroy, owner, deadline, token, …) and
//! `hand_over.rs` (renew, merge, pop); then `state.rs` (what a request did, and the commit plan
//! drawn from it) and `sessions.rs` (several layers, and the axum extractors).

mod hand_over;
mod lifecycle;
mod sessions;
mod state;
mod values;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OnceCell;

pub use self::sessions::Sessions;
use self::state::{Carried, State, View};
pub(crate) use self::state::{Plan, Write};
use crate::{Error, shared::Shared, store::Record};

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
#[derive(Clone)]
pub struct Session(Arc<Inner>);

struct Inner {
    shared: Arc<Shared>,
    /// The well-formed token the request's cookie carried, if any (not yet known to exist).
    cookie_token: Option<String>,
    /// The session of the next layer out, when several session layers wrap the service.
    outer: Option<Session>,
    /// The stored record, once loaded (`None` inside: no such session).
    loaded: OnceCell<Option<Record>>,
    state: Mutex<State>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        cookie_token: Option<String>,
        outer: Option<Session>,
    ) -> Self {
        Session(Arc::new(Inner {
            shared,
            cookie_token,
            outer,
            loaded: OnceCell::new(),
            state: Mutex::new(State::default()),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every method leaves State consistent between statements, so a poisoned lock is usable.
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored record, loading it on first use; `None` for a new session, or one destroyed
    /// or renewed before the load. A load error is also kept, so that the layer answers with the
    /// error response.
    async fn base(&self) -> Result<Option<&Record>, Error> {
        let Some(token) = &self.0.cookie_token else {
            return Ok(None);
        };
        if self.state().fresh {
            return Ok(None);
        }
        let shared = &self.0.shared;
        let loaded = self.0.loaded.get_or_try_init(|| shared.load(token)).await;
        match loaded {
            // Callers check `fresh` again under the lock they read the state with: a renew or
            // destroy during the load supersedes what it returns.
            Ok(record) => Ok(record.as_ref()),
            Err(e) => {
                self.state().failure.get_or_insert_with(|| e.clone());
                Err(e)
            }
        }
    }

    /// Runs `f` over the session as this request sees it: the stored record (if any, and not
    /// superseded) under the pending changes.
    async fn view<R>(&self, f: impl FnOnce(View<'_>) -> R) -> Result<R, Error> {
        let base = self.base().await?;
        let state = self.state();
        let base = if state.fresh { None } else { base };
        Ok(f(View {
            state: &state,
            base,
        }))
    }

    /// The store id of the record this session stands for, if it may exist in the store.
    fn committed_id(&self, state: &State) -> Option<String> {
        if state.fresh || matches!(self.0.loaded.get(), Some(None)) {
            return None;
        }
        self.0
            .cookie_token
            .as_deref()
            .map(|t| self.0.shared.store_id(t).into_owned())
    }

    /// Whether `key` is certainly absent, beneath the request's own writes, without asking the
    /// store.
    fn known_absent(&self, state: &State, key: &str) -> bool {
        if let Some(carried) = &state.carried {
            return !carried.values.contains_key(key);
        }
        if state.fresh || state.cleared || state.removed.contains(key) || state.taken.contains(key)
        {
            return true;
        }
        match (self.0.cookie_token.is_some(), self.0.loaded.get()) {
            (false, _) | (_, Some(None)) => true,
            (true, Some(Some(r))) => !r.values.contains_key(key),
            (true, None) => false,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.0.shared
    }

    /// Whether the layer has anything to do after the handler: false for a request that never
    /// touched its session (no store call, no cookie).
    pub(crate) fn needs_commit(&self) -> bool {
        let state = self.state();
        state.status != Status::Unmodified || state.failure.is_some() || self.0.loaded.initialized()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Session")
            .field("status", &self.status())
            .field("has_cookie", &self.0.cookie_token.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
