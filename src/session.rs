//! [`Session`]: the per-request handle handlers read and write.
//!
//! Nothing is fetched until a handler reads: writes are recorded as pending changes (keys set,
//! keys removed, cleared, new deadline, remember-me) and the layer hands exactly those to the
//! store after the handler returns.

mod hand_over;
mod sessions;
mod state;

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::SystemTime,
};

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::OnceCell;

pub use self::sessions::Sessions;
use self::state::{Carried, State, View};
pub(crate) use self::state::{Plan, Write};
use crate::{
    Error,
    shared::Shared,
    store::{Record, later},
};

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

    /// The stored record, loading it on first use; `None` for a new, destroyed or renewed
    /// session. A load error is also kept, so that the layer answers with the error response.
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
            Ok(record) => Ok(record.as_ref().filter(|_| !self.state().fresh)),
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

    /// The value under `key`, deserialized as `T`; `None` when there is none. A value that does
    /// not deserialize as `T` is an [`Error::Value`].
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.view(|v| v.get(key).map(serde_json::from_str).transpose())
            .await?
            .map_err(|e| Error::value(key, e))
    }

    /// Stores `value` under `key`. Infallible to call: if `value` cannot be serialized to JSON,
    /// the request is answered with the layer's error response and nothing is committed (use
    /// [`try_insert`](Self::try_insert) to handle that yourself).
    pub fn insert(&self, key: impl Into<String>, value: impl Serialize) {
        let key = key.into();
        if let Err(e) = self.try_insert(&key, value) {
            self.state().failure.get_or_insert(e);
        }
    }

    /// Stores `value` under `key`, or returns the serialization error (the session is then
    /// unchanged).
    pub fn try_insert(&self, key: impl Into<String>, value: impl Serialize) -> Result<(), Error> {
        let key = key.into();
        let config = &self.0.shared.config;
        if let Some(limit) = config.max_key_bytes.filter(|&max| key.len() as u64 > max) {
            return Err(Error::TooLarge(format!(
                "a key of {} bytes, limit {limit}",
                key.len()
            )));
        }
        let json = serde_json::to_string(&value).map_err(|e| Error::value(&key, e))?;
        if let Some(max) = config.max_session_bytes {
            let size = (key.len() + json.len()) as u64;
            if size > max {
                return Err(Error::TooLarge(format!("{size} bytes, limit {max}")));
            }
        }
        let mut state = self.state();
        state.removed.remove(&key);
        state.set.insert(key, json);
        state.status = Status::Modified;
        Ok(())
    }

    /// Removes `key`. A no-op when the key is known to be absent; otherwise the removal is
    /// committed without loading the session first.
    pub fn remove(&self, key: &str) {
        let mut state = self.state();
        let pending = state.set.remove(key).is_some() | state.merged.remove(key).is_some();
        if !pending && self.known_absent(&state, key) {
            return;
        }
        if let Some(carried) = state.carried.as_mut() {
            carried.values.remove(key);
        } else if !state.fresh {
            state.removed.insert(key.to_owned());
        }
        state.status = Status::Modified;
    }

    /// Removes every value, keeping the token and the deadline (SCS `Clear`).
    pub fn clear(&self) {
        let mut state = self.state();
        let had_pending = !state.set.is_empty() || !state.merged.is_empty();
        state.set.clear();
        state.merged.clear();
        state.removed.clear();
        if let Some(carried) = state.carried.as_mut() {
            if carried.values.is_empty() && !had_pending {
                return;
            }
            carried.values.clear();
            state.status = Status::Modified;
            return;
        }
        let nothing_stored = state.fresh
            || state.cleared
            || self.0.cookie_token.is_none()
            || matches!(self.0.loaded.get(), Some(None))
            || matches!(self.0.loaded.get(), Some(Some(r)) if r.values.is_empty());
        if nothing_stored && !had_pending {
            return;
        }
        if !state.fresh {
            state.cleared = true;
        }
        state.status = Status::Modified;
    }

    /// The keys of the session, sorted.
    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        self.view(|v| v.keys()).await
    }

    /// Whether the session holds a value under `key`.
    pub async fn contains(&self, key: &str) -> Result<bool, Error> {
        self.view(|v| v.get(key).is_some()).await
    }

    /// Destroys the session: it is deleted from the store when the response is sent, the client
    /// gets an expiring cookie, and values are emptied. Writing after `destroy` starts a new
    /// session with a new token.
    pub fn destroy(&self) {
        let mut state = self.state();
        let mut delete = std::mem::take(&mut state.delete);
        delete.extend(self.committed_id(&state));
        delete.extend(state.carried.take().and_then(|c| c.from));
        delete.append(&mut state.merged_ids);
        *state = State {
            status: Status::Destroyed,
            fresh: true,
            delete,
            failure: state.failure.take(),
            ..State::default()
        };
    }

    /// Sets the remember-me flag, stored with the session: when on, the cookie persists (has
    /// `Max-Age`/`Expires`) even if the layer's `persist` setting is off.
    pub fn remember_me(&self, on: bool) {
        let mut state = self.state();
        state.remember = Some(on);
        state.status = Status::Modified;
    }

    /// Ties the session to `owner` (e.g. a user id, after login), so that
    /// [`destroy_owner`](Self::destroy_owner) can log that owner out everywhere.
    pub fn set_owner(&self, owner: impl Into<String>) {
        let mut state = self.state();
        state.owner = Some(owner.into());
        state.status = Status::Modified;
    }

    /// The owner the session is tied to, if any.
    pub async fn owner(&self) -> Result<Option<String>, Error> {
        self.view(|v| v.owner()).await
    }

    /// Logs `owner` out everywhere: deletes every session tied to it, at once (not at commit),
    /// and destroys this session too if it belongs to `owner`. Returns how many sessions were
    /// deleted.
    pub async fn destroy_owner(&self, owner: &str) -> Result<u64, Error> {
        let own = self.owner().await?;
        let deleted = match self.0.shared.delete_owner(owner).await {
            Ok(n) => n,
            Err(e) => {
                self.state().failure.get_or_insert_with(|| e.clone());
                return Err(e);
            }
        };
        if own.as_deref() == Some(owner) {
            self.destroy();
        }
        Ok(deleted)
    }

    /// The absolute deadline of the session (fixed at creation, reset by renew).
    pub async fn deadline(&self) -> Result<SystemTime, Error> {
        let new_deadline = later(SystemTime::now(), self.0.shared.config.lifetime);
        self.view(|v| {
            v.state
                .deadline
                .or(v.base.map(|r| r.deadline))
                .unwrap_or(new_deadline)
        })
        .await
    }

    /// Sets the absolute deadline of the session. A deadline in the past deletes it at commit
    /// (one before 1970 counts as 1970; one after year 9999 as the end of 9999).
    pub fn set_deadline(&self, deadline: SystemTime) {
        let mut state = self.state();
        state.deadline = Some(deadline.clamp(std::time::UNIX_EPOCH, crate::store::latest()));
        state.status = Status::Modified;
    }

    /// Whether, and how, this request changed the session.
    pub fn status(&self) -> Status {
        self.state().status
    }

    /// The session's token, once it has one: `None` for a new session until its first commit
    /// (as in SCS), and after `destroy`. Handle it as a secret.
    pub async fn token(&self) -> Result<Option<String>, Error> {
        let base = self.base().await?;
        let state = self.state();
        if let Some(t) = &state.new_token {
            return Ok(Some(t.clone()));
        }
        Ok(match (state.fresh, base) {
            (false, Some(_)) => self.0.cookie_token.clone(),
            _ => None,
        })
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
