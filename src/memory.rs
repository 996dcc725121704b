//! [`MemoryStore`]: sessions in this process's memory, held in a [`moka`] cache.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use futures_core::Stream;
use moka::{ops::compute::Op, policy::EvictionPolicy, sync::Cache};

use self::slot::{AtEnd, Owners, Slot, lock, size, unindex};
use crate::{
    Error,
    store::{Change, Committed, Mode, REPLACE_GRACE, Record, SessionStore, later},
};

/// How many replacements [`MemoryStore::delete`](SessionStore::delete) follows from one id.
const MAX_CHAIN: usize = 16;

/// An in-process session store: the embedded default, for development, tests and single-process
/// deployments. Clones share the same sessions.
///
/// Sessions live in a [`moka`] cache with per-entry expiry: each is dropped when its expiry
/// passes, in time proportional to what expires, never by scanning what exists. By default the
/// number of sessions is not capped; [`max_sessions`](Self::max_sessions) sets a cap.
///
/// ```
/// use tower_scs::{MemoryStore, SessionLayer};
/// let layer = SessionLayer::new(MemoryStore::new().max_sessions(100_000));
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Arc<Slot>>,
    owners: Arc<Mutex<Owners>>,
    generations: Arc<AtomicU64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::build(None)
    }
}

impl MemoryStore {
    /// An empty store, with no cap on the number of sessions.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that holds at most about `max` sessions: past that, the least recently
    /// used sessions (read or written) are dropped, as if they had expired. The cap is enforced
    /// by the cache's maintenance, which runs every few dozen calls, so for a moment the store
    /// can hold somewhat more than `max`. A new session is always stored (the policy is LRU,
    /// which never refuses a newcomer). Tokens of renewed sessions remembered for
    /// [`REPLACE_GRACE`] do not count towards `max`, but may be dropped under pressure too.
    ///
    /// Meant to be called on a fresh store: sessions held by `self` are not carried over.
    #[must_use]
    pub fn max_sessions(self, max: u64) -> Self {
        Self::build(Some(max))
    }

    fn build(max: Option<u64>) -> Self {
        let owners: Arc<Mutex<Owners>> = Arc::default();
        let index = Arc::clone(&owners);
        let mut builder = Cache::builder()
            .eviction_policy(EvictionPolicy::lru())
            // Weight 1 for a session, 0 for a replacement marker: the weighted size counts
            // sessions, and only they count towards the cap.
            .weigher(|_, slot: &Arc<Slot>| u32::from(matches!(**slot, Slot::Live { .. })))
            .expire_after(AtEnd)
            // Called on expiry, eviction, removal and overwrite, never while this store holds
            // the owners lock (it never calls the cache with that lock held).
            .eviction_listener(move |id: Arc<String>, slot: Arc<Slot>, _| {
                unindex(&mut lock(&index), &id, &slot);
            });
        if let Some(max) = max {
            builder = builder.max_capacity(max);
        }
        Self {
            cache: builder.build(),
            owners,
            generations: Arc::default(),
        }
    }

    /// The number of sessions held (expired ones are dropped first).
    pub fn len(&self) -> usize {
        self.cache.run_pending_tasks();
        usize::try_from(self.cache.weighted_size()).unwrap_or(usize::MAX)
    }

    /// Whether there is no live session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of all live sessions (SCS `Iterate`), as a stream like `RedisStore::ids`
    /// (here from a snapshot taken when it is called).
    pub fn ids(&self) -> impl Stream<Item = Result<String, Error>> + Send + 'static {
        let now = SystemTime::now();
        let ids: Vec<Result<String, Error>> = self
            .cache
            .iter()
            .filter(|(_, slot)| slot.live(now).is_some())
            .map(|(id, _)| Ok(String::clone(&id)))
            .collect();
        futures_util::stream::iter(ids)
    }

    /// Runs `f` on the slot under `id` (none when absent or expired) and applies the [`Op`] it
    /// returns, atomically with respect to every other call on `id`: moka serialises
    /// `and_compute_with` per key, and this store changes the cache only through it.
    fn compute<T>(&self, id: &str, f: impl FnOnce(Option<&Arc<Slot>>) -> (Op<Arc<Slot>>, T)) -> T {
        let mut out = None;
        self.cache.entry_by_ref(id).and_compute_with(|entry| {
            let current = entry.map(moka::Entry::into_value);
            let (op, value) = f(current.as_ref());
            out = Some(value);
            op
        });
        out.expect("and_compute_with runs its closure")
    }

    /// The [`Op`] that stores `slot` under `id` in place of `old`, indexing it by its owner.
    fn put(&self, id: &str, old: Option<&Arc<Slot>>, slot: Slot) -> Op<Arc<Slot>> {
        if old.and_then(|s| s.owner()).is_some() || slot.owner().is_some() {
            let mut owners = lock(&self.owners);
            if let Some(old) = old {
                unindex(&mut owners, id, old);
            }
            if let Some(owner) = slot.owner() {
                let ids = owners.entry(owner.to_owned()).or_default();
                ids.insert(id.to_owned(), slot.generation());
            }
        }
        Op::Put(Arc::new(slot))
    }

    fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed)
    }

    /// Deletes `id` (only if its owner is `owner`, when given) and, if it was replaced, its
    /// successor, following up to [`MAX_CHAIN`] replacements. Returns how many live sessions
    /// it deleted.
    fn delete_chain(&self, id: &str, mut owner: Option<&str>) -> u64 {
        let now = SystemTime::now();
        let mut deleted = 0;
        let mut next = Some(id.to_owned());
        for _ in 0..MAX_CHAIN {
            let Some(id) = next.take() else { break };
            next = self.compute(&id, |current| {
                let Some(slot) = current else {
                    return (Op::Remove, None);
                };
                if owner.is_some_and(|o| slot.owner() != Some(o)) {
                    return (Op::Nop, None);
                }
                match &**slot {
                    Slot::Live { record, .. } => {
                        deleted += u64::from(record.expiry > now);
                        (Op::Remove, None)
                    }
                    Slot::Replaced { successor, .. } => (Op::Remove, Some(successor.clone())),
                }
            });
            owner = None;
        }
        deleted
    }

    #[cfg(test)]
    fn indexed(&self) -> usize {
        lock(&self.owners).values().map(HashMap::len).sum()
    }
}

/// Applies `change` to `record`, whose values were `before` bytes, and sets its expiry.
fn apply(record: &mut Record, change: &Change, before: u64) -> Result<(), Error> {
    if change.cleared {
        record.values.clear();
    }
    for key in &change.removed {
        record.values.remove(key);
    }
    for (key, value) in &change.set {
        record.values.insert(key.clone(), value.clone());
    }
    if let Some(deadline) = change.deadline() {
        record.deadline = deadline;
    }
    if let Some(remember) = change.remember {
        record.remember = remember;
    }
    if change.owner.is_some() {
        record.owner.clone_from(&change.owner);
    }
    if record.owner.is_some() {
        record.created.get_or_insert(change.now);
        record.seen = Some(change.now);
        if change.user_agent.is_some() {
            record.user_agent.clone_from(&change.user_agent);
        }
        if change.ip.is_some() {
            record.ip.clone_from(&change.ip);
        }
    }
    if let Some(max) = change.max_bytes {
        let after = size(&record.values);
        if after > max && after > before {
            return Err(Error::TooLarge(format!("{after} bytes, limit {max}")));
        }
    }
    record.expiry = change.expiry(record.deadline);
    Ok(())
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .finish_non_exhaustive()
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, id: &str) -> Result<Option<Record>, Error> {
        let now = SystemTime::now();
        let found = self
            .cache
            .get(id)
            .and_then(|slot| slot.live(now).map(|r| Record::clone(r)));
        if found.is_none() {
            // An expired record is dropped when a reader finds it, as it used to be.
            self.compute(id, |current| (Slot::drop_dead(current), ()));
        }
        Ok(found)
    }

    /// Every load is in memory: a live record is answered at once (an expired one goes to
    /// [`load`](SessionStore::load), which drops it).
    fn load_local(&self, id: &str) -> Option<Arc<Record>> {
        self.cache.get(id)?.live(SystemTime::now()).cloned()
    }

    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        self.compute(id, |current| {
            let (mut record, before) = match (change.mode, current.and_then(|s| s.live(change.now)))
            {
                (Mode::Update { .. }, None) => return (Slot::drop_dead(current), Ok(None)),
                (Mode::Update { .. }, Some(record)) => {
                    (Record::clone(record), size(&record.values))
                }
                (Mode::Create { deadline }, _) => {
                    (Record::new(HashMap::new(), deadline, change.now), 0)
                }
            };
            if let Err(e) = apply(&mut record, change, before) {
                return (Op::Nop, Err(e));
            }
            let committed = Committed {
                expiry: record.expiry,
                remember: record.remember,
            };
            if record.expiry <= change.now {
                return (Op::Remove, Ok(Some(committed)));
            }
            let generation = self.next_generation();
            let op = self.put(
                id,
                current,
                Slot::Live {
                    generation,
                    record: Arc::new(record),
                },
            );
            (op, Ok(Some(committed)))
        })
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.delete_chain(id, None);
        Ok(())
    }

    async fn replace(&self, id: &str, successor: &str) -> Result<bool, Error> {
        let now = SystemTime::now();
        Ok(self.compute(id, |current| {
            let Some(record) = current.and_then(|s| s.live(now)) else {
                return (Op::Nop, false);
            };
            let marker = Slot::Replaced {
                generation: self.next_generation(),
                successor: successor.to_owned(),
                owner: record.owner.clone(),
                until: later(now, REPLACE_GRACE).min(record.expiry),
            };
            (self.put(id, current, marker), true)
        }))
    }

    async fn owner_sessions(&self, owner: &str) -> Result<Vec<(String, Record)>, Error> {
        let ids: Vec<String> = lock(&self.owners)
            .get(owner)
            .map(|ids| ids.keys().cloned().collect())
            .unwrap_or_default();
        let now = SystemTime::now();
        let live = ids.into_iter().filter_map(|id| {
            let slot = self.cache.get(&id)?;
            let record = slot
                .live(now)
                .filter(|r| r.owner.as_deref() == Some(owner))?;
            Some((id, Record::clone(record)))
        });
        Ok(live.collect())
    }

    async fn delete_owned(&self, id: &str, owner: &str) -> Result<bool, Error> {
        Ok(self.delete_chain(id, Some(owner)) > 0)
    }

    async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        let now = SystemTime::now();
        Ok(self.compute(id, |current| {
            let Some(record) = current.and_then(|s| s.live(now)) else {
                return (Op::Nop, None);
            };
            let Some(value) = record.values.get(key).cloned() else {
                return (Op::Nop, None);
            };
            let mut record = Record::clone(record);
            record.values.remove(key);
            let generation = self.next_generation();
            (
                self.put(
                    id,
                    current,
                    Slot::Live {
                        generation,
                        record: Arc::new(record),
                    },
                ),
                Some(value),
            )
        }))
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, Error> {
        let ids: Vec<String> = lock(&self.owners)
            .get(owner)
            .map(|ids| ids.keys().cloned().collect())
            .unwrap_or_default();
        Ok(ids
            .iter()
            .map(|id| self.delete_chain(id, Some(owner)))
            .sum())
    }
}

mod slot;
#[cfg(test)]
mod tests;
