//! [`MemoryStore`]: sessions in this process's memory, held in a [`moka`] cache.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures_core::Stream;
use moka::{Expiry, ops::compute::Op, policy::EvictionPolicy, sync::Cache};

use crate::{
    Error,
    store::{Change, Committed, Mode, REPLACE_GRACE, Record, SessionStore, later},
};

/// How many replacements [`MemoryStore::delete`](SessionStore::delete) follows from one id.
const MAX_CHAIN: usize = 16;

/// What the cache holds under an id. `generation` is unique to each write, so that the removal of one
/// write (expiry, eviction) can never unindex the write that followed it.
enum Slot {
    /// A session.
    Live { generation: u64, record: Record },
    /// A session [replaced](SessionStore::replace) by `successor`, remembered until `until`.
    Replaced {
        generation: u64,
        successor: String,
        owner: Option<String>,
        until: SystemTime,
    },
}

impl Slot {
    fn generation(&self) -> u64 {
        match self {
            Slot::Live { generation, .. } | Slot::Replaced { generation, .. } => *generation,
        }
    }

    fn owner(&self) -> Option<&str> {
        match self {
            Slot::Live { record, .. } => record.owner.as_deref(),
            Slot::Replaced { owner, .. } => owner.as_deref(),
        }
    }

    /// When the cache drops the slot.
    fn end(&self) -> SystemTime {
        match self {
            Slot::Live { record, .. } => record.expiry,
            Slot::Replaced { until, .. } => *until,
        }
    }

    /// What to do with a slot that holds no session live at `now`: a replacement marker is
    /// kept; anything else (nothing, or an expired record the cache has yet to drop, which it
    /// does on the next tick of its timer wheel, about a second) is removed now.
    fn drop_dead(slot: Option<&Arc<Slot>>) -> Op<Arc<Slot>> {
        match slot.map(|s| &**s) {
            Some(Slot::Replaced { .. }) => Op::Nop,
            _ => Op::Remove,
        }
    }

    /// The record, if this is a session still live at `now`.
    fn live(&self, now: SystemTime) -> Option<&Record> {
        match self {
            Slot::Live { record, .. } if record.expiry > now => Some(record),
            _ => None,
        }
    }
}

/// Per-entry expiry for moka: a slot expires at its own [`Slot::end`].
struct AtEnd;

impl Expiry<String, Arc<Slot>> for AtEnd {
    fn expire_after_create(&self, _: &String, slot: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(remaining(slot.end()))
    }

    fn expire_after_update(
        &self,
        _: &String,
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(remaining(slot.end()))
    }
}

fn remaining(end: SystemTime) -> Duration {
    end.duration_since(SystemTime::now()).unwrap_or_default()
}

/// owner → (id → generation of the write that indexed it).
type Owners = HashMap<String, HashMap<String, u64>>;

fn lock(owners: &Mutex<Owners>) -> MutexGuard<'_, Owners> {
    // Every change under this lock is one map operation, so a panic cannot leave it half-done.
    owners.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drops `slot`'s owner index entry for `id`, if it is still the one `slot`'s write made.
fn unindex(owners: &mut Owners, id: &str, slot: &Slot) {
    let Some(owner) = slot.owner() else { return };
    let Some(ids) = owners.get_mut(owner) else {
        return;
    };
    if ids.get(id) == Some(&slot.generation()) {
        ids.remove(id);
        if ids.is_empty() {
            owners.remove(owner);
        }
    }
}

fn size(values: &HashMap<String, String>) -> u64 {
    values.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

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

    /// The ids of all live sessions (SCS `Iterate`), as a stream like [`RedisStore::ids`]
    /// (here from a snapshot taken when it is called).
    ///
    /// [`RedisStore::ids`]: crate::RedisStore::ids
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
        let found = self.cache.get(id).and_then(|slot| slot.live(now).cloned());
        if found.is_none() {
            // An expired record is dropped when a reader finds it, as it used to be.
            self.compute(id, |current| (Slot::drop_dead(current), ()));
        }
        Ok(found)
    }

    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        self.compute(id, |current| {
            let (mut record, before) = match (change.mode, current.and_then(|s| s.live(change.now)))
            {
                (Mode::Update, None) => return (Slot::drop_dead(current), Ok(None)),
                (Mode::Update, Some(record)) => (record.clone(), size(&record.values)),
                (Mode::Create, _) => {
                    let deadline = change.deadline.unwrap_or(change.now);
                    let record = Record {
                        values: HashMap::new(),
                        deadline,
                        expiry: change.now,
                        remember: false,
                        owner: None,
                    };
                    (record, 0)
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
            let op = self.put(id, current, Slot::Live { generation, record });
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

    async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        let now = SystemTime::now();
        Ok(self.compute(id, |current| {
            let Some(record) = current.and_then(|s| s.live(now)) else {
                return (Op::Nop, None);
            };
            let Some(value) = record.values.get(key).cloned() else {
                return (Op::Nop, None);
            };
            let mut record = record.clone();
            record.values.remove(key);
            let generation = self.next_generation();
            (
                self.put(id, current, Slot::Live { generation, record }),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Barrier;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn id(n: usize) -> String {
        format!("{n:043}")
    }

    fn change(mode: Mode, set: &[(&str, &str)], owner: Option<&str>, life: Duration) -> Change {
        let now = SystemTime::now();
        Change {
            mode,
            cleared: false,
            removed: Vec::new(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            deadline: (mode == Mode::Create).then(|| later(now, life)),
            remember: None,
            owner: owner.map(str::to_owned),
            max_bytes: None,
            now,
            idle_ttl: None,
        }
    }

    async fn create(store: &MemoryStore, id: &str, owner: Option<&str>, life: Duration) {
        let change = change(Mode::Create, &[("k", "\"v\"")], owner, life);
        store.commit(id, &change).await.unwrap().unwrap();
    }

    /// Runs `f(i)` for i in 0..8 on spawned tasks released together; returns their answers.
    async fn race<T, F>(f: impl Fn(usize) -> F) -> Vec<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let barrier = Arc::new(Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (barrier, call) = (Arc::clone(&barrier), f(i));
                tokio::spawn(async move {
                    barrier.wait().await;
                    call.await
                })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replace_wins_once_and_leaves_no_live_record() {
        let store = MemoryStore::new();
        for round in 0..200 {
            let old = id(round);
            create(&store, &old, None, HOUR).await;
            let wins = race(|i| {
                let (store, old) = (store.clone(), old.clone());
                async move { store.replace(&old, &id(1_000 + i)).await.unwrap() }
            })
            .await;
            assert_eq!(wins.iter().filter(|w| **w).count(), 1, "round {round}");
            let update = change(Mode::Update, &[("k", "1")], None, HOUR);
            assert_eq!(store.load(&old).await.unwrap(), None);
            assert_eq!(store.commit(&old, &update).await.unwrap(), None);
            assert_eq!(store.take(&old, "k").await.unwrap(), None);
            assert!(!store.replace(&old, &id(9)).await.unwrap());
        }
        assert_eq!(store.len(), 0, "markers are not sessions");
    }

    #[tokio::test]
    async fn delete_of_a_replaced_id_deletes_its_successors() {
        let store = MemoryStore::new();
        for n in 0..3 {
            create(&store, &id(n), None, HOUR).await;
        }
        assert!(store.replace(&id(0), &id(1)).await.unwrap());
        assert!(store.replace(&id(1), &id(2)).await.unwrap());
        store.delete(&id(0)).await.unwrap();
        assert_eq!(store.load(&id(2)).await.unwrap(), None);
        assert!(store.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn take_gives_the_value_once_and_keeps_the_expiry() {
        let store = MemoryStore::new();
        for round in 0..200 {
            let sid = id(round);
            create(&store, &sid, None, HOUR).await;
            let expiry = store.load(&sid).await.unwrap().unwrap().expiry;
            let got = race(|_| {
                let (store, sid) = (store.clone(), sid.clone());
                async move { store.take(&sid, "k").await.unwrap() }
            })
            .await;
            let got: Vec<_> = got.into_iter().flatten().collect();
            assert_eq!(got, ["\"v\""], "round {round}");
            let record = store.load(&sid).await.unwrap().unwrap();
            assert!(record.values.is_empty());
            assert_eq!(record.expiry, expiry);
        }
    }

    #[tokio::test]
    async fn the_owner_index_follows_the_owner() {
        let store = MemoryStore::new();
        create(&store, &id(0), Some("alice"), HOUR).await;
        let to_bob = change(Mode::Update, &[], Some("bob"), HOUR);
        store.commit(&id(0), &to_bob).await.unwrap().unwrap();
        assert_eq!(store.delete_owner("alice").await.unwrap(), 0);
        assert!(store.load(&id(0)).await.unwrap().is_some());
        assert_eq!(store.delete_owner("bob").await.unwrap(), 1);
        assert_eq!(store.load(&id(0)).await.unwrap(), None);

        // A replaced session of alice's takes its successor (whoever owns it) along.
        create(&store, &id(1), Some("alice"), HOUR).await;
        create(&store, &id(2), None, HOUR).await;
        assert!(store.replace(&id(1), &id(2)).await.unwrap());
        assert_eq!(store.delete_owner("alice").await.unwrap(), 1);
        assert!(store.is_empty());
        assert_eq!(store.indexed(), 0);
    }

    #[tokio::test]
    async fn the_owner_index_drains_as_sessions_expire_or_go() {
        let store = MemoryStore::new();
        for n in 0..10_000 {
            let life = if n % 2 == 0 {
                Duration::from_millis(50)
            } else {
                HOUR
            };
            create(&store, &id(n), Some("alice"), life).await;
        }
        assert_eq!(store.indexed(), 10_000);
        for n in (1..10_000).step_by(2) {
            store.delete(&id(n)).await.unwrap();
        }
        // Expired entries go at the next tick of moka's timer wheel (~1.07 s): poll for it.
        for _ in 0..150 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            store.cache.run_pending_tasks();
            if store.indexed() == 0 {
                break;
            }
        }
        assert_eq!(store.indexed(), 0);
        assert_eq!(format!("{store:?}"), "MemoryStore { sessions: 0, .. }");
    }

    #[tokio::test]
    async fn a_reader_drops_the_expired_record_it_finds() {
        let store = MemoryStore::new();
        create(&store, &id(0), None, Duration::from_millis(50)).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.load(&id(0)).await.unwrap(), None);
        assert_eq!(format!("{store:?}"), "MemoryStore { sessions: 0, .. }");
    }

    #[tokio::test]
    async fn the_cap_drops_the_least_recently_used() {
        let store = MemoryStore::new().max_sessions(100);
        for n in 0..1_000 {
            create(&store, &id(n), None, HOUR).await;
            // Session 0 stays in use.
            assert!(store.load(&id(0)).await.unwrap().is_some(), "session {n}");
        }
        assert_eq!(store.len(), 100);
        assert!(store.load(&id(0)).await.unwrap().is_some());
        assert!(store.load(&id(999)).await.unwrap().is_some());
        assert_eq!(store.load(&id(1)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_lowered_limit_refuses_only_growth_past_it() {
        let store = MemoryStore::new();
        let big = "x".repeat(100);
        let set = [("a", big.as_str()), ("b", "1")];
        store
            .commit(&id(0), &change(Mode::Create, &set, None, HOUR))
            .await
            .unwrap();
        let limited = |set: &[(&str, &str)]| Change {
            max_bytes: Some(50),
            ..change(Mode::Update, set, None, HOUR)
        };
        let shrink = limited(&[("a", "\"short\"")]);
        assert!(store.commit(&id(0), &shrink).await.unwrap().is_some());
        let grow = Change {
            cleared: true,
            ..limited(&[("a", &"y".repeat(60))])
        };
        let err = store.commit(&id(0), &grow).await.unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
        let record = store.load(&id(0)).await.unwrap().unwrap();
        assert_eq!(record.values["a"], "\"short\"");
        let create = Change {
            max_bytes: Some(50),
            ..change(Mode::Create, &[("a", &big)], None, HOUR)
        };
        assert!(store.commit(&id(1), &create).await.is_err());
        assert_eq!(store.load(&id(1)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_expiry_in_the_past_deletes_and_update_never_resurrects() {
        let store = MemoryStore::new();
        create(&store, &id(0), Some("alice"), HOUR).await;
        let end = Change {
            idle_ttl: Some(Duration::ZERO),
            ..change(Mode::Update, &[], None, HOUR)
        };
        let done = store.commit(&id(0), &end).await.unwrap().unwrap();
        assert!(done.expiry <= end.now);
        assert_eq!(store.load(&id(0)).await.unwrap(), None);
        let update = change(Mode::Update, &[("k", "1")], None, HOUR);
        assert_eq!(store.commit(&id(0), &update).await.unwrap(), None);
        assert_eq!((store.len(), store.indexed()), (0, 0));
    }
}
