//! The storage seam: the [`SessionStore`] trait and the shapes it reads and writes.
//!
//! A store never receives a whole session to overwrite. It receives a [`Change`]: which keys were
//! set, which were removed, whether the session was cleared, and a new deadline or remember-me
//! flag, and applies it atomically to what it holds. That is what lets two concurrent requests of
//! one session that write different keys both keep their writes.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    time::{Duration, SystemTime},
};

use crate::Error;

/// A session as a store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The session's values, key → JSON text.
    pub values: HashMap<String, String>,
    /// The absolute deadline, fixed when the session was created (or renewed, or set).
    pub deadline: SystemTime,
    /// When the store will drop the record: `min(deadline, last use + idle timeout)`.
    pub expiry: SystemTime,
    /// The remember-me flag: when true the cookie persists even if `persist` is off.
    pub remember: bool,
    /// The owner the session is tied to (e.g. a user id), for "log out everywhere".
    pub owner: Option<String>,
}

/// Whether a [`Change`] creates a new record or updates an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The token is new: create the record. [`Change::deadline`] is always set.
    Create,
    /// Apply to the existing record. If there is none (expired, destroyed, never existed), do
    /// nothing and report it: a store must never bring a session back to life.
    Update,
}

/// What one request changed in a session, applied by [`SessionStore::commit`] in this order:
/// clear, remove, set, deadline, remember-me; then the expiry is recomputed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Create or update.
    pub mode: Mode,
    /// Drop every value present in the store before applying `removed` and `set`.
    pub cleared: bool,
    /// Keys to remove.
    pub removed: Vec<String>,
    /// Keys to set, with their JSON text.
    pub set: Vec<(String, String)>,
    /// A new absolute deadline, if any (always set for [`Mode::Create`]).
    pub deadline: Option<SystemTime>,
    /// A new remember-me flag, if any.
    pub remember: Option<bool>,
    /// A new owner, if any: the store indexes the session under it.
    pub owner: Option<String>,
    /// The largest the record's values may be after the change, in bytes (sum of key and value
    /// lengths); `None` for no limit. A store must refuse a change that exceeds it with
    /// [`Error::TooLarge`] and leave the record as it was.
    pub max_bytes: Option<u64>,
    /// The time of the commit, as the application sees it.
    pub now: SystemTime,
    /// How long an unused session may live from `now`; `None` when there is no idle timeout.
    pub idle_ttl: Option<Duration>,
}

impl Change {
    /// The expiry this change gives a record whose deadline is `deadline`:
    /// `min(deadline, now + idle_ttl)`. Stores use it so that all of them agree.
    pub fn expiry(&self, deadline: SystemTime) -> SystemTime {
        match self.idle_ttl {
            Some(ttl) => deadline.min(later(self.now, ttl)),
            None => deadline,
        }
    }
}

/// What a successful commit left in the store; the cookie is written from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// When the record expires. At or before `now` means the store deleted it.
    pub expiry: SystemTime,
    /// The record's remember-me flag after the change.
    pub remember: bool,
}

/// The one seam between the session layer and where sessions live.
///
/// `id` is the session token, or its SHA-256 hash when hash-token-in-store is on; it has been
/// validated before any store call (43 base64url characters), so it is safe to use in a key.
///
/// Implementations must make each call atomic with respect to concurrent calls on the same id,
/// must honour expiry (an expired record is never returned, and a record whose expiry has passed
/// is deleted, never kept forever), and must not resurrect a record on [`Mode::Update`].
pub trait SessionStore: Send + Sync + 'static {
    /// Fetches a live record, or `None` when there is none.
    fn load(&self, id: &str) -> impl Future<Output = Result<Option<Record>, Error>> + Send;

    /// Applies `change` atomically. Returns `None` only for [`Mode::Update`] when no live
    /// record exists, in which case nothing was written.
    fn commit(
        &self,
        id: &str,
        change: &Change,
    ) -> impl Future<Output = Result<Option<Committed>, Error>> + Send;

    /// Deletes the record; deleting a missing record is not an error.
    fn delete(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// The longest a [`load`](Self::load) can take, when the store enforces that bound itself
    /// (a client-side command timeout, say) and then fails the load with [`Error::Timeout`].
    /// When it is no longer than the layer's store timeout, the layer sets no timer of its own
    /// around loads, so a read costs one timer instead of two. `None`, the default: the layer
    /// bounds every load.
    fn load_timeout(&self) -> Option<Duration> {
        None
    }

    /// Deletes every session tied to `owner` ("log out everywhere") and returns how many there
    /// were. Stores that keep no owner index answer with an error (the default).
    fn delete_owner(&self, owner: &str) -> impl Future<Output = Result<u64, Error>> + Send {
        let _ = owner;
        async { Err(Error::Unsupported("this store keeps no owner index")) }
    }
}

/// The latest time sessions deal with: the end of year 9999, where cookie dates end.
pub(crate) fn latest() -> SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// `t + d`, saturating at [`latest`] (so that huge lifetimes or deadlines never overflow).
pub(crate) fn later(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).map_or(latest(), |t| t.min(latest()))
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`SessionStore`], so that `Session` and `SessionLayer` are not generic.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, Error>>;
    fn commit<'a>(
        &'a self,
        id: &'a str,
        change: &'a Change,
    ) -> BoxFuture<'a, Result<Option<Committed>, Error>>;
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    fn delete_owner<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, Error>>;
    fn load_timeout(&self) -> Option<Duration>;
}

impl<S: SessionStore> DynStore for S {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, Error>> {
        Box::pin(SessionStore::load(self, id))
    }
    fn commit<'a>(
        &'a self,
        id: &'a str,
        change: &'a Change,
    ) -> BoxFuture<'a, Result<Option<Committed>, Error>> {
        Box::pin(SessionStore::commit(self, id, change))
    }
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(SessionStore::delete(self, id))
    }
    fn delete_owner<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(SessionStore::delete_owner(self, owner))
    }
    fn load_timeout(&self) -> Option<Duration> {
        SessionStore::load_timeout(self)
    }
}
