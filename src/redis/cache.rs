//! [`LocalCache`]: sessions kept in this process's memory, coherent with Redis through
//! server-assisted client-side caching (`CLIENT TRACKING`).
//!
//! ## How it stays coherent
//! Redis remembers which keys each tracked connection read and, when one changes (any command,
//! a Lua script, expiry, eviction, `FLUSHDB`), sends that connection's *redirect target* an
//! invalidation. Here every data connection of the store redirects to a subscriber connection of
//! ours on the same server (RESP2, subscribed to `__redis__:invalidate`); a listener task drops
//! the named sessions, or everything on a flush. (Not fred's RESP3 `start_tracking`: fred 10.1
//! drops the RESP3 push a flush sends, whose key list is null, so a flush would go unseen.)
//!
//! An entry is served only while tracking is intact: the data connection the key goes through
//! and the subscriber are, at that instant, the very connections tracking was turned on for
//! (fred's connection ids). Any reconnect, failover, new cluster node or lost subscriber fails
//! that check: nothing is served, the cache is dropped, and tracking is turned on again.
//!
//! A read's reply and an invalidation reach this process by different paths, so a reply could
//! be older than an invalidation already handled. Each read therefore takes a [`Ticket`] (the
//! cache's epoch and the key's stripe counter) before it is sent; an invalidation or flush bumps
//! them before it removes anything, and a reply is kept only if neither moved, checked again
//! after the insert. The store's own writes forget the entry before they run; a commit then
//! keeps the record it reads back once its script has answered (a read Redis tracks), the
//! others forget it again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
    time::SystemTime,
};

use fred::{
    clients::Client,
    interfaces::ClientLike,
    types::{ClusterHash, CustomCommand, Resp3Frame, Value},
};

use super::{FredClient, RedisStore};
use crate::{Error, store::Record};

mod socket;
mod tls;
mod tracking;

pub(super) use self::tracking::Tracking;

/// How many counters a cache's keys are spread over: an invalidation of one key makes a read
/// of another key in the same stripe, in flight at that moment, skip the cache once.
const STRIPES: usize = 1024;

/// Turns on the local cache of a [`RedisStore`](super::RedisStore): loads are served from this
/// process's memory, with 0 Redis commands, while Redis tells the process about every change
/// made to a cached session by anyone.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_scs::Error> {
/// use tower_scs::{LocalCache, RedisStore};
///
/// let store = RedisStore::from_url("redis://127.0.0.1:6379")
///     .await?
///     .with_local_cache(LocalCache::new(100_000));
/// # Ok(()) }
/// ```
///
/// What it guarantees:
/// - within a process, read-your-writes: the store's own commits leave the record they wrote in
///   the cache, its renews and deletes forget the entry, before they return;
/// - across processes, a session is as fresh as the delivery of Redis's invalidation to this
///   process (see `docs/guarantees.md` for the measured window);
/// - nothing that may have missed an invalidation is served: on any lost or replaced connection
///   the whole cache is dropped until tracking is back, and a cached record is never served past
///   its own expiry.
///
/// Tracking costs Redis memory (its tracking table, `tracking-table-max-keys`) and one
/// invalidation message per change of a session some process has read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalCache {
    max_entries: u64,
}

impl LocalCache {
    /// A cache of at most `max_entries` sessions (quick_cache's CLOCK-Pro eviction: the
    /// sessions read once and not again go first).
    #[must_use]
    pub fn new(max_entries: u64) -> Self {
        LocalCache { max_entries }
    }

    /// The most sessions the cache holds.
    pub fn max_entries(&self) -> u64 {
        self.max_entries
    }
}

/// The cache of one store: its entries, the counters that order replies against invalidations,
/// and the state of tracking.
pub(super) struct Cache {
    config: LocalCache,
    /// Keyed by session id, hashed by foldhash: std's SipHash of a 43-byte id was 270
    /// instructions, twice on every hit. (The ids a lookup brings are the client's, but only
    /// loaded records, under ids the store made, are inserted.) quick_cache, not moka: its
    /// lookups and writes are plain sharded-lock operations, where moka's record each read and
    /// write for a housekeeper (a moka `invalidate` was 2,100 instructions, twice a write).
    entries: Entries,
    /// Bumped by every flush.
    epoch: AtomicU64,
    /// Bumped by every invalidation of a key of the stripe.
    stripes: Box<[AtomicU64]>,
    pub(super) tracking: Tracking,
}

impl std::fmt::Debug for Cache {
    /// Counts only: the entries' keys are session ids.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("entries", &self.entries.len())
            .field("epoch", &self.epoch.load(SeqCst))
            .field("tracking", &self.tracking)
            .finish_non_exhaustive()
    }
}

/// The cached records, by session id, bounded by a number of entries.
type Entries = quick_cache::sync::Cache<
    String,
    Arc<Record>,
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

/// An empty cache of at most `max_entries` records.
fn entries(max_entries: u64) -> Entries {
    let items = usize::try_from(max_entries).unwrap_or(usize::MAX);
    Entries::with(
        items,
        max_entries,
        quick_cache::UnitWeighter,
        foldhash::fast::RandomState::default(),
        quick_cache::sync::DefaultLifecycle::default(),
    )
}

/// What a read knew before it was sent: an entry is kept only if neither counter moved since.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket {
    epoch: u64,
    stripe: u64,
}

impl Cache {
    /// An empty cache whose tracking is not on yet (it starts with the first read).
    pub(super) fn new(config: LocalCache, prefix: String) -> Arc<Self> {
        Arc::new(Cache {
            config,
            entries: entries(config.max_entries),
            epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            tracking: Tracking::new(prefix),
        })
    }

    /// The settings the cache was made with.
    pub(super) fn config(&self) -> LocalCache {
        self.config
    }

    fn stripe(&self, id: &str) -> &AtomicU64 {
        &self.stripes[super::client::tail_hash(id.as_bytes()) % STRIPES]
    }

    /// The session `id`, if cached, still live at `now`, and tracking through `client` intact.
    pub(super) fn get(&self, id: &str, client: &Client, now: SystemTime) -> Option<Arc<Record>> {
        // A presence check first, so that a miss costs no socket read.
        if !self.entries.contains_key(id) || !self.tracking.intact(client) {
            return None;
        }
        // Whatever invalidation has reached this process is applied before the entry is served,
        // and a subscriber found closed meanwhile breaks tracking.
        self.tracking.drain(self);
        if !self.tracking.intact(client) {
            return None;
        }
        let record = self.entries.get(id)?;
        if record.expiry <= now {
            self.entries.remove(id);
            return None;
        }
        Some(record)
    }

    /// Taken before a read is sent, when tracking is on: `None` means the reply is not cached.
    pub(super) fn ticket(self: &Arc<Self>, id: &str, client: &Client) -> Option<Ticket> {
        // Invalidations received before the read is sent are applied now, not after its reply
        // is cached (where they would drop a fresh entry).
        self.tracking.drain(self);
        self.ticket_now(id, client)
    }

    /// [`ticket`](Self::ticket) without applying what has arrived first (one socket read fewer
    /// a write): an invalidation still unread when the ticket is taken is applied later and
    /// voids it, so the record the write reads back is then not kept, and never kept stale.
    fn ticket_now(&self, id: &str, client: &Client) -> Option<Ticket> {
        let ticket = Ticket {
            epoch: self.epoch.load(SeqCst),
            stripe: self.stripe(id).load(SeqCst),
        };
        self.tracking.intact(client).then_some(ticket)
    }

    /// Keeps `record`, read with `ticket`, unless an invalidation or a flush came since, or
    /// tracking through `client` broke meanwhile.
    pub(super) fn insert(
        self: &Arc<Self>,
        id: &str,
        ticket: Ticket,
        client: &Client,
        record: &Record,
    ) {
        if !self.unmoved(id, ticket) || !self.tracking.intact(client) {
            return;
        }
        self.entries.insert(id.to_owned(), Arc::new(record.clone()));
        // An invalidation bumps before it removes: either it removed what was just inserted,
        // or the bump shows here.
        if !self.unmoved(id, ticket) {
            self.entries.remove(id);
        }
    }

    /// Keeps `record`, which a write of this store read back right after writing (the read makes
    /// Redis track the key for the connection again), unless anything moved since `ticket`,
    /// taken before the write was sent. Returns whether the reads in flight were voided (what the
    /// write's second forget does otherwise): the stripe moves from the ticket's count to the
    /// next, so a read that took its ticket before is not kept, and this one is kept only if no
    /// invalidation came since.
    pub(super) fn fill(&self, id: &str, ticket: Ticket, client: &Client, record: Record) -> bool {
        let stripe = self.stripe(id);
        let next = ticket.stripe.wrapping_add(1);
        if self.epoch.load(SeqCst) != ticket.epoch
            || stripe
                .compare_exchange(ticket.stripe, next, SeqCst, SeqCst)
                .is_err()
        {
            return false;
        }
        if self.tracking.intact(client) {
            self.entries.insert(id.to_owned(), Arc::new(record));
            let ours = Ticket {
                stripe: next,
                ..ticket
            };
            if !self.unmoved(id, ours) {
                self.entries.remove(id);
            }
        }
        true
    }

    fn unmoved(&self, id: &str, ticket: Ticket) -> bool {
        self.epoch.load(SeqCst) == ticket.epoch && self.stripe(id).load(SeqCst) == ticket.stripe
    }

    /// Drops the session `id`: Redis said it changed, or this process is changing it.
    pub(super) fn forget(&self, id: &str) {
        self.stripe(id).fetch_add(1, SeqCst);
        self.entries.remove(id);
    }

    /// Drops every session: a flush, a lost invalidation, or tracking broken.
    pub(super) fn flush(&self) {
        self.epoch.fetch_add(1, SeqCst);
        self.entries.clear();
    }

    /// How many sessions the cache holds once the invalidations received are applied.
    pub(super) fn len(&self) -> u64 {
        self.tracking.drain(self);
        self.entries.len() as u64
    }
}

/// The local cache's side of [`RedisStore`]: turning it on, and what the store's writes do to it.
impl<C: FredClient> RedisStore<C> {
    /// Turns on a local cache of sessions in this process, coherent with Redis through
    /// `CLIENT TRACKING` (see [`LocalCache`]): a load it serves sends no command. Tracking
    /// starts with the first load (or [`local_cache_ready`](Self::local_cache_ready)); until it
    /// is on, and whenever it may have missed a change, loads go to Redis.
    ///
    /// Set the prefix first: the cache hears about the keys under the prefix it was given.
    #[must_use]
    pub fn with_local_cache(mut self, config: LocalCache) -> Self {
        self.cache = Some(Cache::new(config, self.prefix.clone()));
        self
    }

    /// Waits until the local cache's tracking is on, so that loads can be served from it;
    /// returns at once `false` when the store has no local cache.
    pub async fn local_cache_ready(&self) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        cache.tracking.start(cache, self.client.clients());
        cache.tracking.ready().await;
        true
    }

    /// How many sessions the local cache holds, `None` without one.
    pub fn local_cache_len(&self) -> Option<u64> {
        self.cache.as_ref().map(|c| c.len())
    }

    /// The session `id` from the local cache, as [`Cache::get`] finds it (counted as a hit):
    /// `None` without a cache, or when the load has to go to Redis.
    pub(super) fn cached(&self, id: &str) -> Option<Arc<Record>> {
        let cache = self.cache.as_ref()?;
        cache.tracking.start(cache, self.client.clients());
        let record = cache.get(id, self.client_of(id), SystemTime::now())?;
        crate::metrics::cache(true);
        Some(record)
    }

    /// Forgets the cached session `id` now and again when the guard drops: around a change of
    /// the session by this store, so that no read in flight meanwhile leaves an old copy.
    pub(super) fn forgetting<'a>(&'a self, id: &'a str) -> Forgetting<'a> {
        let cache = self.cache.as_deref();
        if let Some(cache) = cache {
            cache.forget(id);
        }
        Forgetting(cache, id)
    }

    /// A ticket for a write of `id` that reads back the record it wrote, taken after the write's
    /// first forget: `None` without a cache or while tracking through `client` is off.
    pub(super) fn write_ticket(&self, id: &str, client: &Client) -> Option<Ticket> {
        self.cache.as_ref()?.ticket_now(id, client)
    }

    /// With the local cache on, one `PING` to the server holding `key`, after a script changed
    /// it. Redis writes the script's reply and the invalidations it sends the other processes'
    /// subscribers in the same event-loop iteration, and the reply can go first; a command sent
    /// once the reply is here runs in a later iteration, after they are all written, so that the
    /// other processes' caches hear of the change before the response leaves. (Without it, 1 to
    /// 2 % of the reads through another process right after a write were stale; with it, none.)
    /// A commit reads its record back instead, which settles alike.
    pub(super) async fn settle(
        &self,
        client: &fred::clients::Client,
        key: &[u8],
    ) -> Result<(), Error> {
        if self.cache.is_none() {
            return Ok(());
        }
        let slot = redis_protocol::redis_keyslot(key);
        let ping = CustomCommand::new_static("PING", ClusterHash::Custom(slot), false);
        crate::observe::redis_command();
        let _: Value = (Box::pin(client.custom(ping, Vec::<Value>::new())).await)
            .map_err(|e| self.failed(client, e))?;
        Ok(())
    }
}

/// See [`RedisStore::forgetting`].
pub(super) struct Forgetting<'a>(Option<&'a Cache>, &'a str);

impl Forgetting<'_> {
    /// Ends the change by caching the record it wrote (`fields`, its `HGETALL` after the
    /// write), read with `ticket` (see [`Cache::fill`]), instead of forgetting the session
    /// again; so the next load of it in this process sends nothing. A record that does not
    /// decode is forgotten.
    pub(super) fn fill(mut self, ticket: Ticket, client: &Client, fields: Resp3Frame) {
        let Some(cache) = self.0 else {
            return;
        };
        let record = super::decode::decode(fields).ok().flatten();
        if let Some(record) = record
            && cache.fill(self.1, ticket, client, record)
        {
            self.0 = None;
        }
    }
}

impl Drop for Forgetting<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.0 {
            cache.forget(self.1);
        }
    }
}

#[cfg(test)]
mod tests;
