//! The storage seam, for store authors: the [`SessionStore`] trait and the shapes it reads and
//! writes. Applications only pass a store to [`SessionLayer::new`](crate::SessionLayer::new).
//!
//! A store never receives a whole session to overwrite. It receives a [`Change`]: which keys were
//! set, which were removed, whether the session was cleared, and a new deadline or remember-me
//! flag, and applies it atomically to what it holds. That is what lets two concurrent requests of
//! one session that write different keys both keep their writes.

use std::{
    collections::HashMap,
    future::Future,
    sync::Arc,
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
    /// When the store will drop the record: the deadline, or earlier with an idle timeout
    /// (`min(deadline, time of the last write + idle TTL)`, see [`Change::idle_ttl`]).
    pub expiry: SystemTime,
    /// The remember-me flag: when true the cookie persists even if `persist` is off.
    pub remember: bool,
    /// The owner the session is tied to (e.g. a user id), for "log out everywhere".
    pub owner: Option<String>,
    /// For a session tied to an owner: when it was tied (created with an owner, or given one),
    /// for the owner's device list. `None` for a session without an owner.
    pub created: Option<SystemTime>,
    /// For a session tied to an owner: its last commit (a write, or an idle-timeout touch).
    pub seen: Option<SystemTime>,
    /// For a session tied to an owner: the user agent the application recorded, if any.
    pub user_agent: Option<String>,
    /// For a session tied to an owner: the client IP the application recorded, if any.
    pub ip: Option<String>,
}

impl Record {
    /// A record of `values` with these times, no owner and no device details: the start of
    /// what a [`SessionStore`] builds from what it holds.
    #[must_use]
    pub fn new(
        values: HashMap<String, String>,
        deadline: SystemTime,
        expiry: SystemTime,
    ) -> Record {
        Record {
            values,
            deadline,
            expiry,
            remember: false,
            owner: None,
            created: None,
            seen: None,
            user_agent: None,
            ip: None,
        }
    }
}

/// Whether a [`Change`] creates a new record or updates an existing one, and the deadline it
/// sets: a create always has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// The token is new: create the record, with this absolute deadline.
    Create {
        /// The new record's absolute deadline.
        deadline: SystemTime,
    },
    /// Apply to the existing record. If there is none (expired, destroyed, never existed), do
    /// nothing and report it: a store must never bring a session back to life.
    Update {
        /// A new absolute deadline for the record, if any.
        deadline: Option<SystemTime>,
    },
}

/// What one request changed in a session, applied by [`SessionStore::commit`] in this order:
/// clear, remove, set, deadline, remember-me; then the expiry is recomputed.
///
/// Stores read its fields; it is built with [`Change::create`] or [`Change::update`] and the
/// `with_` methods.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_scs::store::Change;
///
/// let now = SystemTime::now();
/// let change = Change::create(now, now + Duration::from_secs(3600))
///     .with_set("user_id", "42")
///     .with_owner("user:42");
/// assert_eq!(change.deadline(), Some(now + Duration::from_secs(3600)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// Create (with its deadline) or update.
    pub mode: Mode,
    /// Drop every value present in the store before applying `removed` and `set`.
    pub cleared: bool,
    /// Keys to remove.
    pub removed: Vec<String>,
    /// Keys to set, with their JSON text.
    pub set: Vec<(String, String)>,
    /// A new remember-me flag, if any.
    pub remember: Option<bool>,
    /// A new owner, if any: the store indexes the session under it.
    pub owner: Option<String>,
    /// The size limit of the record's values, in bytes (sum of key and value lengths); `None`
    /// for no limit. A store must refuse, with [`Error::TooLarge`] and leaving the record as it
    /// was, a change that leaves the values both larger than this **and** larger than they were
    /// before the change (for a create: larger than nothing). So a limit lowered below existing
    /// sessions never blocks a write that keeps a session's size or shrinks it.
    pub max_bytes: Option<u64>,
    /// A user agent to record with a session tied to an owner (ignored for one without).
    pub user_agent: Option<String>,
    /// A client IP to record with a session tied to an owner (ignored for one without).
    pub ip: Option<String>,
    /// The time of the commit, as the application sees it.
    pub now: SystemTime,
    /// How long an unused session may live from `now`; `None` when there is no idle timeout.
    pub idle_ttl: Option<Duration>,
}

impl Change {
    /// A change that creates a record with the absolute `deadline`, at `now`.
    #[must_use]
    pub fn create(now: SystemTime, deadline: SystemTime) -> Self {
        Self::with_mode(now, Mode::Create { deadline })
    }

    /// A change to the existing record, at `now`; with nothing else, it only refreshes the
    /// expiry.
    #[must_use]
    pub fn update(now: SystemTime) -> Self {
        Self::with_mode(now, Mode::Update { deadline: None })
    }

    fn with_mode(now: SystemTime, mode: Mode) -> Self {
        Change {
            mode,
            cleared: false,
            removed: Vec::new(),
            set: Vec::new(),
            remember: None,
            owner: None,
            user_agent: None,
            ip: None,
            max_bytes: None,
            now,
            idle_ttl: None,
        }
    }

    /// Also sets `key` to the JSON text `json`.
    #[must_use]
    pub fn with_set(mut self, key: impl Into<String>, json: impl Into<String>) -> Self {
        self.set.push((key.into(), json.into()));
        self
    }

    /// Also removes `key`.
    #[must_use]
    pub fn with_removed(mut self, key: impl Into<String>) -> Self {
        self.removed.push(key.into());
        self
    }

    /// Also clears the values stored before the change.
    #[must_use]
    pub fn with_cleared(mut self) -> Self {
        self.cleared = true;
        self
    }

    /// Also sets a new absolute deadline (for a create: replaces the one it was made with).
    #[must_use]
    pub fn with_deadline(mut self, new: SystemTime) -> Self {
        match &mut self.mode {
            Mode::Create { deadline } => *deadline = new,
            Mode::Update { deadline } => *deadline = Some(new),
        }
        self
    }

    /// Also sets the remember-me flag.
    #[must_use]
    pub fn with_remember(mut self, on: bool) -> Self {
        self.remember = Some(on);
        self
    }

    /// Also ties the session to `owner`.
    #[must_use]
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets the size limit ([`Change::max_bytes`]).
    #[must_use]
    pub fn with_max_bytes(mut self, max: Option<u64>) -> Self {
        self.max_bytes = max;
        self
    }

    /// Sets the idle time-to-live ([`Change::idle_ttl`]).
    #[must_use]
    pub fn with_idle_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.idle_ttl = ttl;
        self
    }

    /// Whether the change creates a record.
    pub fn is_create(&self) -> bool {
        matches!(self.mode, Mode::Create { .. })
    }

    /// The deadline the change sets: always `Some` for a create.
    pub fn deadline(&self) -> Option<SystemTime> {
        match self.mode {
            Mode::Create { deadline } => Some(deadline),
            Mode::Update { deadline } => deadline,
        }
    }

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

/// How long a token replaced by [`SessionStore::replace`] keeps pointing at its successor: a
/// [`delete`](SessionStore::delete) of the old id within this time also deletes the successor,
/// so a destroy that races a renew (and arrives just after it) still ends the session.
pub const REPLACE_GRACE: Duration = Duration::from_secs(10);

/// The one seam between the session layer and where sessions live.
///
/// `id` is the session token, or its SHA-256 hash when hash-token-in-store is on; it has been
/// validated before any store call (43 base64url characters), so it is safe to use in a key.
///
/// Implementations must make each call atomic with respect to concurrent calls on the same id,
/// must honour expiry (an expired record is never returned, and a record whose expiry has passed
/// is deleted, never kept forever), and must not resurrect a record on [`Mode::Update`].
///
/// A record is *live* while it exists, has not been replaced, and its expiry is after the
/// current time. Times are the application's clock ([`Change::now`]); a store whose server has
/// its own clock (Redis) sets expiries as durations from now, so skew between the two never
/// shortens a session.
///
/// # Errors
///
/// Every call returns [`Error::Store`] (built with [`Error::store`]) when the backend fails,
/// [`Error::Malformed`] for stored data not in the store's shape, and [`Error::Timeout`] when
/// it bounds the call itself (see [`load_timeout`](Self::load_timeout)); the layer answers the
/// request with its error response. The methods name the errors of their own.
pub trait SessionStore: Send + Sync + 'static {
    /// Fetches a live record, or `None` when there is none.
    fn load(&self, id: &str) -> impl Future<Output = Result<Option<Record>, Error>> + Send;

    /// A load answered at once from this process's memory, for a store that keeps a copy it
    /// can vouch for (a coherent local cache): `Some` is what [`load`](Self::load) would return
    /// now; `None`, the default, sends the load its usual way. The layer asks it first, then
    /// skips the load's future and timer (and its span, when no subscriber wants it).
    fn load_local(&self, id: &str) -> Option<Arc<Record>> {
        let _ = id;
        None
    }

    /// Applies `change` atomically. Returns `None` only for [`Mode::Update`] when no live
    /// record exists, in which case nothing was written.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when the change breaks [`Change::max_bytes`]; nothing is written.
    fn commit(
        &self,
        id: &str,
        change: &Change,
    ) -> impl Future<Output = Result<Option<Committed>, Error>> + Send;

    /// Deletes the record; deleting a missing record is not an error. If `id` was
    /// [replaced](Self::replace) less than [`REPLACE_GRACE`] ago, its successor is deleted too
    /// (and the successor's successor, and so on).
    fn delete(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Ends the live record `id` because a renew or a merge has moved its data into `successor`
    /// (a record the caller has already written). Atomic: returns `true` when `id` was live and
    /// is now gone, `false` when it was not live (never existed, expired, deleted, or already
    /// replaced), in which case nothing changed. The caller then deletes `successor`: only one
    /// of any number of concurrent renews of one session carries its data on.
    ///
    /// For [`REPLACE_GRACE`] (or until `id` would have expired, if sooner) the store remembers
    /// the replacement, with `id`'s owner: [`delete`](Self::delete) of `id`, and
    /// [`delete_owner`](Self::delete_owner) of that owner, then also delete `successor`.
    fn replace(
        &self,
        id: &str,
        successor: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Removes `key` from the live record `id` and returns its value (JSON text), atomically:
    /// of any number of concurrent calls for one key, exactly one gets the value. `None` when
    /// the record is not live or has no such key. The record's expiry is left as it is.
    fn take(
        &self,
        id: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// The longest a [`load`](Self::load) can take, when the store enforces that bound itself
    /// (a client-side command timeout, say) and then fails the load with [`Error::Timeout`].
    /// When it is no longer than the layer's store timeout, the layer sets no timer of its own
    /// around loads. `None`, the default: the layer bounds every load.
    ///
    /// It is part of the trait because only the store knows whether its client already bounds
    /// a call, and a load is on the path of every request that reads its session: a second
    /// timer there is measurable (a tokio timer registered and dropped per request). A store
    /// that answers `Some` must keep the promise, or a hung backend hangs the request. Commits
    /// and the other calls are always bounded by the layer.
    fn load_timeout(&self) -> Option<Duration> {
        None
    }

    /// Deletes every session tied to `owner` ("log out everywhere"), and the successors of
    /// sessions of `owner` replaced less than [`REPLACE_GRACE`] ago, and returns how many live
    /// sessions it deleted. A session whose owner has changed away from `owner` is never
    /// deleted by it, even if an index still lists it. Stores that keep no owner index answer
    /// with an error (the default).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] from a store that keeps no owner index.
    fn delete_owner(&self, owner: &str) -> impl Future<Output = Result<u64, Error>> + Send {
        let _ = owner;
        async { Err(Error::Unsupported("this store keeps no owner index")) }
    }

    /// The live sessions tied to `owner` (whose own `owner` is still `owner`), with their ids:
    /// the owner's device list. A store prunes its owner index of what it finds gone on the
    /// way, so that the index shrinks to the live sessions. Stores that keep no owner index
    /// answer with an error (the default).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] from a store that keeps no owner index.
    fn owner_sessions(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Vec<(String, Record)>, Error>> + Send {
        let _ = owner;
        async { Err(Error::Unsupported("this store keeps no owner index")) }
    }

    /// Deletes the session `id` if it is tied to `owner` (and, as [`delete`](Self::delete)
    /// does, the successor of a replaced one); returns whether a live session was deleted. A
    /// session of another owner is left alone.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] from a store that keeps no owner index.
    fn delete_owned(
        &self,
        id: &str,
        owner: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        let _ = (id, owner);
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

mod dyn_store;

pub(crate) use self::dyn_store::DynStore;
