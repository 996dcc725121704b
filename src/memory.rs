//! [`MemoryStore`]: sessions in this process's memory.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use futures_core::Stream;

use crate::{
    Error,
    store::{Change, Committed, Mode, Record, SessionStore},
};

/// How many commits between two sweeps of expired records.
const SWEEP_EVERY: u64 = 1024;

/// An in-process session store: the embedded default, for development, tests and single-process
/// deployments. Expiry is honoured on every read, and expired records are swept out periodically,
/// so abandoned sessions do not pile up. Clones share the same sessions.
///
/// ```
/// use tower_scs::{MemoryStore, SessionLayer};
/// let layer = SessionLayer::new(MemoryStore::new());
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, Record>,
    /// owner → ids of the sessions tied to it.
    owners: HashMap<String, HashSet<String>>,
    /// Replaced ids → (successor, owner, until).
    moved: HashMap<String, (String, Option<String>, SystemTime)>,
    commits: u64,
}

impl Inner {
    fn remove(&mut self, id: &str) -> Option<Record> {
        let record = self.records.remove(id)?;
        if let Some(owner) = &record.owner {
            if let Some(ids) = self.owners.get_mut(owner) {
                ids.remove(id);
                if ids.is_empty() {
                    self.owners.remove(owner);
                }
            }
        }
        Some(record)
    }

    fn sweep(&mut self, now: SystemTime) {
        let expired: Vec<String> = self
            .records
            .iter()
            .filter(|(_, r)| r.expiry <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of live sessions.
    pub fn len(&self) -> usize {
        let now = SystemTime::now();
        self.lock()
            .records
            .values()
            .filter(|r| r.expiry > now)
            .count()
    }

    /// Whether there is no live session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of all live sessions (SCS `Iterate`), as a stream like [`RedisStore::ids`]
    /// (here from a snapshot taken when it is called).
    ///
    /// [`RedisStore::ids`]: crate::RedisStore::ids
    pub fn ids(&self) -> impl Stream<Item = Result<String, Error>> + Send + 'static {
        let now = SystemTime::now();
        let ids: Vec<Result<String, Error>> = self
            .lock()
            .records
            .iter()
            .filter(|(_, r)| r.expiry > now)
            .map(|(id, _)| Ok(id.clone()))
            .collect();
        futures_util::stream::iter(ids)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a record half-written (every mutation below
        // is applied to a local copy first), so a poisoned lock is safe to reuse.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.lock().records.len())
            .finish()
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, id: &str) -> Result<Option<Record>, Error> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        match inner.records.get(id) {
            Some(r) if r.expiry > now => Ok(Some(r.clone())),
            Some(_) => {
                inner.remove(id);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        let mut inner = self.lock();
        inner.commits += 1;
        if inner.commits % SWEEP_EVERY == 0 {
            inner.sweep(SystemTime::now());
        }
        let existing = inner
            .records
            .get(id)
            .filter(|r| r.expiry > change.now)
            .cloned();
        let mut record = match (change.mode, existing) {
            (Mode::Update, None) => {
                inner.remove(id);
                return Ok(None);
            }
            (Mode::Update, Some(r)) => r,
            (Mode::Create, _) => Record {
                values: HashMap::new(),
                deadline: change.deadline.unwrap_or(change.now),
                expiry: change.now,
                remember: false,
                owner: None,
            },
        };
        if change.cleared {
            record.values.clear();
        }
        for key in &change.removed {
            record.values.remove(key);
        }
        for (key, value) in &change.set {
            record.values.insert(key.clone(), value.clone());
        }
        if let Some(deadline) = change.deadline {
            record.deadline = deadline;
        }
        if let Some(remember) = change.remember {
            record.remember = remember;
        }
        if change.owner.is_some() {
            record.owner.clone_from(&change.owner);
        }
        if let Some(max) = change.max_bytes {
            let size: usize = record.values.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size as u64 > max {
                return Err(Error::TooLarge(format!("{size} bytes, limit {max}")));
            }
        }
        record.expiry = change.expiry(record.deadline);
        let committed = Committed {
            expiry: record.expiry,
            remember: record.remember,
        };
        inner.remove(id);
        if record.expiry > change.now {
            if let Some(owner) = &record.owner {
                let ids = inner.owners.entry(owner.clone()).or_default();
                ids.insert(id.to_owned());
            }
            inner.records.insert(id.to_owned(), record);
        }
        Ok(Some(committed))
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        let mut inner = self.lock();
        let mut id = id.to_owned();
        for _ in 0..16 {
            inner.remove(&id);
            match inner.moved.remove(&id) {
                Some((next, _, until)) if until > SystemTime::now() => id = next,
                _ => break,
            }
        }
        Ok(())
    }

    async fn replace(&self, id: &str, successor: &str) -> Result<bool, Error> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        match inner.records.get(id) {
            Some(r) if r.expiry > now => {}
            _ => return Ok(false),
        }
        let record = inner.remove(id).expect("checked above");
        let until = record
            .expiry
            .min(crate::store::later(now, crate::store::REPLACE_GRACE));
        inner
            .moved
            .insert(id.to_owned(), (successor.to_owned(), record.owner, until));
        Ok(true)
    }

    async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        Ok(match inner.records.get_mut(id) {
            Some(r) if r.expiry > now => r.values.remove(key),
            _ => None,
        })
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, Error> {
        let (live, moved) = self.delete_owned(owner);
        for id in moved {
            self.delete(&id).await?;
        }
        Ok(live)
    }
}

impl MemoryStore {
    fn delete_owned(&self, owner: &str) -> (u64, Vec<String>) {
        let mut inner = self.lock();
        let now = SystemTime::now();
        let ids = inner.owners.remove(owner).unwrap_or_default();
        let moved: Vec<String> = inner
            .moved
            .iter()
            .filter(|(_, (_, o, until))| o.as_deref() == Some(owner) && *until > now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut live = 0;
        for id in ids {
            if inner.remove(&id).is_some_and(|r| r.expiry > now) {
                live += 1;
            }
        }
        (live, moved)
    }
}
