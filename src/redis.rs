//! [`RedisStore`]: sessions in Redis through [`fred`]. Everything about Redis is in this module.
//!
//! ## Stored shape
//! One Redis hash per session, under `<prefix>` (default `scs:session:`) then the 32 bytes its
//! id (the token, 43 base64url characters) encodes: a 44-byte key, which Redis keeps in a 48-byte
//! allocation where the token's text would take 64. [`RedisStore::with_text_keys`] stores under
//! `<prefix><token>` instead. The hash is text, readable with `redis-cli` and decodable from any
//! language; to read the session of a token:
//!
//! ```text
//! { printf 'scs:session:'; printf '%s=' "$TOKEN" | basenc -d --base64url; } | redis-cli -x HGETALL
//! ```
//!
//! | field | value |
//! |---|---|
//! | `v:<key>` | the session value of `<key>`, as JSON text |
//! | `d` | the deadline: absolute, Unix milliseconds |
//! | `s` | the size: bytes of the session's keys and JSON values, for the size limit |
//! | `e` | the expiry (idle timeout), Unix ms; absent when it is the deadline |
//! | `r` | `1` when remember-me is on; absent when off |
//! | `c`, `l` | a session with an owner: when it was tied to it (created) and last seen, Unix ms |
//! | `owner` | the owner the session is tied to, if any |
//! | `ua`, `ip` | a session with an owner: the client's user agent and IP, when recorded |
//!
//! e.g. `HGETALL` → `d 1767225600000 s 17 v:v "\"hello, session\""`. The metadata fields are
//! one letter and hold bare integers so that a small session stays a compact listpack (Redis
//! stores such a value as an integer): one value and its metadata fit a 48-byte allocation.
//! A field over 64 bytes (Redis's `hash-max-listpack-value`; a long value or user agent) turns
//! the hash into a hash table: an owned session with a browser's 100-byte user agent takes 571
//! bytes (`MEMORY USAGE`) where 328 would do with `hash-max-listpack-value 128`.
//!
//! The metadata has one grammar, checked alike by the Rust decoder and the Lua scripts: each
//! value an integer (`-?[0-9]+`, at most 16 characters), a deadline, times within years
//! 1970..9999, `s` >= 0, `r` 0 or 1; anything else is a corrupt record ([`Error::Malformed`]).
//! Records of the earlier shape, whose metadata is one `meta` field of space-separated
//! `name=integer` pairs (`deadline=1767225600000 size=42`, and `expiry`, `remember`, `created`,
//! `seen`), are read alike and rewritten in this shape at their next write; a hash with both is
//! corrupt.
//!
//! A token replaced by a renew or merge keeps, for [`REPLACE_GRACE`](crate::store::REPLACE_GRACE), a
//! marker hash `{moved: <successor id>, owner: <owner>}` with no metadata: it is no session, but a
//! delete of it also deletes the successor.
//!
//! Sessions tied to an owner are also listed in a sorted set `<prefix>owner:<owner>` (member: the
//! session id as text, score: its expiry), pruned of expired members at every write and expiring
//! with its last session. The session's own `owner` field is what counts: "log out everywhere" deletes a
//! listed session only if that field still names the owner.
//!
//! A load is one `HGETALL`. A commit is one `EVALSHA` of a small Lua script that applies the
//! [`Change`] (clear, `HDEL`, `HSET`, in batches of 1,000 fields) and sets the TTL with `PEXPIRE`,
//! atomically, and refuses to touch a key that holds no live session, so a destroyed or expired
//! session is never resurrected; a session with an owner then costs one more `EVALSHA` to update
//! the owner index. Times in the metadata and the index are the application's clock; TTLs are
//! given to Redis relative to it, so a Redis clock ahead or behind never shortens a session. Every
//! command names exactly one key, so it works unchanged on Redis Cluster. Redis 6.2 or later is
//! required (`ZADD GT`).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use fred::{
    clients::Pool,
    interfaces::ClientLike,
    types::{ClusterHash, CustomCommand, Key, Resp3Frame, Value},
};

use crate::{
    Error,
    store::{Change, Committed, Record, SessionStore},
    token,
};

mod cache;
mod client;
mod decode;
mod devices;
mod ids;
mod keys;
mod script;

pub use self::{cache::LocalCache, client::FredClient};

/// How many replacement markers a delete follows (a renew of a renew of …) before it stops.
const MAX_FOLLOW: usize = 16;
use self::{
    cache::Cache,
    decode::{decode, millis, millis_of},
    script::{
        COMMIT_LUA, DELETE_LUA, INDEX_LUA, PRELUDE_LUA, REPLACE_LUA, Script, TAKE_LUA, bad_reply,
        commit_args, commit_reply,
    },
};

/// A session store in Redis, over a fred [`Pool`] (the default) or [`fred::clients::Client`],
/// with any fred configuration: single server, Cluster or Sentinel.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_scs::{RedisStore, SessionLayer};
///
/// // Ready-made: reconnects on its own, commands time out after a second.
/// let store = RedisStore::from_url("redis://127.0.0.1:6379").await?;
///
/// // Or bring your own fred client or pool, configured as you like.
/// let pool = fred::prelude::Builder::default_centralized().build_pool(4)?;
/// fred::prelude::ClientLike::init(&pool).await?;
/// let store = RedisStore::new(pool).with_prefix("myapp:session:");
/// let layer = SessionLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisStore<C = Pool> {
    client: C,
    prefix: String,
    /// Keys hold the id's text, not its bytes ([`RedisStore::with_text_keys`]).
    text_keys: bool,
    /// The client's command timeout, if it has one: it bounds every load (one command).
    command_timeout: Option<Duration>,
    commit: Script,
    take: Script,
    replace: Script,
    delete: Script,
    index: Script,
    /// The local cache, when turned on ([`RedisStore::with_local_cache`]).
    cache: Option<Arc<Cache>>,
}

impl<C: FredClient> RedisStore<C> {
    /// A store over an initialized (connected) fred client or pool, with the default prefix
    /// `scs:session:`.
    #[must_use]
    pub fn new(client: C) -> Self {
        let timeout = client.client().perf_config().default_command_timeout;
        let limit = Some(timeout).filter(|t| !t.is_zero());
        Self {
            client,
            prefix: RedisStore::DEFAULT_PREFIX.to_owned(),
            text_keys: false,
            command_timeout: limit,
            commit: Script::new(&[PRELUDE_LUA, COMMIT_LUA]),
            take: Script::new(&[PRELUDE_LUA, TAKE_LUA]),
            replace: Script::new(&[PRELUDE_LUA, REPLACE_LUA]),
            delete: Script::new(&[DELETE_LUA]),
            index: Script::new(&[INDEX_LUA]),
            cache: None,
        }
    }

    /// Sets the key prefix, so that several session layers can share one Redis.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        if let Some(cache) = &self.cache {
            let config = cache.config();
            self.cache = Some(Cache::new(config, self.prefix.clone()));
        }
        self
    }

    /// Stores each session under `<prefix><token>`, the token's 43 characters, as this crate did
    /// before binary keys, instead of `<prefix>` and the 32 bytes the token encodes (the
    /// default, 16 bytes less per session in Redis; see the module docs). For a deployment whose
    /// sessions were stored that way: with the default, they would read as absent.
    /// Either way [`ids`](RedisStore::ids) lists sessions of both forms.
    #[must_use]
    pub fn with_text_keys(mut self) -> Self {
        self.text_keys = true;
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The fred client or pool this store sends its commands through.
    pub fn client(&self) -> &C {
        &self.client
    }

    fn key(&self, id: &str) -> Key {
        keys::session_key(&self.prefix, id, self.text_keys)
    }

    /// The client every command on session `id` goes through: chosen by the id, which is as
    /// random as its key's tail, so that a cache hit builds no key.
    fn client_of(&self, id: &str) -> &fred::clients::Client {
        self.client.client_for(id.as_bytes())
    }

    fn owner_key(&self, owner: &str) -> String {
        format!("{}owner:{owner}", self.prefix)
    }

    /// Records the session `id`, expiring at `expiry`, in the index of `owner`.
    async fn index(&self, owner: &str, id: &str, expiry: SystemTime) -> Result<(), Error> {
        let now = millis(SystemTime::now());
        let args = || vec![now.into(), id.into(), millis(expiry).into()];
        let key = self.owner_key(owner);
        let client = self.client.client_for(key.as_bytes());
        self.index.run(self.via(client), key, args).await?;
        Ok(())
    }
}

impl<C: FredClient> SessionStore for RedisStore<C> {
    async fn load(&self, id: &str) -> Result<Option<Record>, Error> {
        let client = self.client_of(id);
        let Some(cache) = &self.cache else {
            return self.fetch(client, self.key(id)).await;
        };
        if let Some(record) = self.cached(id) {
            return Ok(Some(Arc::unwrap_or_clone(record)));
        }
        crate::metrics::cache(false);
        let ticket = cache.ticket(id, client);
        let record = self.fetch(client, self.key(id)).await?;
        if let (Some(ticket), Some(record)) = (ticket, &record) {
            cache.insert(id, ticket, client, record);
        }
        Ok(record)
    }

    fn load_local(&self, id: &str) -> Option<Arc<Record>> {
        self.cached(id)
    }

    /// The fred client's command timeout (`default_command_timeout`), when it has one.
    fn load_timeout(&self) -> Option<Duration> {
        self.command_timeout
    }

    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        let forgetting = self.forgetting(id);
        let key = self.key(id);
        let client = self.client_of(id);
        let ticket = self.write_ticket(id, client);
        let reply = self
            .commit
            .run_raw(self.via(client), key.clone(), || commit_args(change))
            .await?;
        // With the local cache on, the record is read back once the script has answered: that
        // read settles the write for the other processes' caches (see `settle`), and it is what
        // this one keeps.
        let written = if self.cache.is_some() {
            Some(self.hgetall(client, key).await?)
        } else {
            None
        };
        let Some(applied) = commit_reply(reply)? else {
            return Ok(None);
        };
        if let (Some(ticket), Some(fields)) = (ticket, written) {
            forgetting.fill(ticket, client, fields);
        }
        if let Some(owner) = applied.owner {
            self.index(&owner, id, applied.committed.expiry).await?;
        }
        Ok(Some(applied.committed))
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.delete_following(id.to_owned(), "").await.map(drop)
    }

    /// Replaces the session by a marker (one script), then drops it from its owner's index: the
    /// successor was indexed when it was committed, before this, so a log-out-everywhere that
    /// reads the index in between finds one or the other.
    async fn replace(&self, id: &str, successor: &str) -> Result<bool, Error> {
        let _forgetting = self.forgetting(id);
        let now = millis(SystemTime::now());
        let grace = millis_of(crate::store::REPLACE_GRACE);
        let args = || vec![now.into(), successor.into(), grace.into()];
        let key = self.key(id);
        let client = self.client_of(id);
        let reply = self
            .replace
            .run(self.via(client), key.clone(), args)
            .await?;
        self.settle(client, key.as_bytes()).await?;
        let owner = match reply {
            Value::Array(items) => match items.as_slice() {
                [_, owner] => owner.as_string(),
                _ => return Err(bad_reply()),
            },
            _ => return Ok(false),
        };
        if let Some(owner) = owner.filter(|o| !o.is_empty()) {
            self.unindex(&owner, vec![id]).await?;
        }
        Ok(true)
    }

    async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        let _forgetting = self.forgetting(id);
        let now = millis(SystemTime::now());
        let field = ["v:", key].concat();
        let args = || vec![now.into(), field.as_str().into()];
        let redis_key = self.key(id);
        let client = self.client_of(id);
        let reply = self
            .take
            .run(self.via(client), redis_key.clone(), args)
            .await?;
        self.settle(client, redis_key.as_bytes()).await?;
        Ok(reply.into_string())
    }

    /// Deletes, one script per session, each session listed in the owner's index whose own
    /// `owner` field is still `owner`, following replacement markers to their successors; then
    /// drops the deleted ids from the index. Ids whose session now has another owner stay
    /// listed until their score passes, and are never deleted here.
    async fn owner_sessions(&self, owner: &str) -> Result<Vec<(String, Record)>, Error> {
        self.live_of(owner).await
    }

    async fn delete_owned(&self, id: &str, owner: &str) -> Result<bool, Error> {
        self.delete_if_owned(id, owner).await
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, Error> {
        let ids = self.indexed(owner).await?;
        let deletes = ids
            .iter()
            .map(|id| self.delete_following(id.clone(), owner));
        let results = futures_util::future::try_join_all(deletes).await?;
        let gone: Vec<&str> = ids
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_some())
            .map(|(id, _)| id.as_str())
            .collect();
        self.unindex(owner, gone).await?;
        Ok(results.into_iter().flatten().sum())
    }
}

impl<C: FredClient> RedisStore<C> {
    /// One `HGETALL` of `key` through `client`.
    async fn fetch(
        &self,
        client: &fred::clients::Client,
        key: Key,
    ) -> Result<Option<Record>, Error> {
        decode(self.hgetall(client, key).await?)
    }

    /// One `HGETALL` of `key` through `client`: the raw reply frame, decoded straight into a
    /// Record by the caller, with no intermediate fred `Value`s.
    async fn hgetall(&self, client: &fred::clients::Client, key: Key) -> Result<Resp3Frame, Error> {
        let hgetall = CustomCommand::new_static("HGETALL", ClusterHash::FirstKey, false);
        crate::observe::redis_command();
        // fred's future is about 5 KB: boxed here, where it is made, the store's load future
        // that `DynStore` boxes again stays small (one 5 KB copy a load instead of two).
        (Box::pin(client.custom_raw(hgetall, vec![key])).await).map_err(|e| self.failed(client, e))
    }

    /// Deletes session `id` (only if its owner is `owner`, when that is not empty), and the
    /// successors its replacement markers point to, and drops each deleted session from its
    /// owner's index. Returns how many live sessions were deleted, or `None` when `id` belongs
    /// to another owner and was kept.
    async fn delete_following(&self, mut id: String, owner: &str) -> Result<Option<u64>, Error> {
        let mut deleted = 0;
        let mut only_owner = owner;
        for _ in 0..MAX_FOLLOW {
            let current = id.clone();
            let _forgetting = self.forgetting(&current);
            let key = self.key(&id);
            let client = self.client_of(&id);
            let reply = self
                .delete
                .run(self.via(client), key.clone(), || vec![only_owner.into()])
                .await?;
            self.settle(client, key.as_bytes()).await?;
            let Value::Array(items) = reply else {
                return Err(bad_reply());
            };
            let [status, moved, stored_owner] = items.as_slice() else {
                return Err(bad_reply());
            };
            match status.as_i64() {
                Some(-1) => return Ok(None),
                Some(1) => deleted += 1,
                _ => {}
            }
            // (delete_owner drops its own index's ids in one command afterwards.)
            let stored_owner = stored_owner.as_string().filter(|o| !o.is_empty());
            if let Some(stored_owner) = stored_owner.filter(|_| only_owner.is_empty()) {
                self.unindex(&stored_owner, vec![id.as_str()]).await?;
            }
            // A replaced session's successor carries its data on: it goes too, whoever owns it.
            match moved.as_string().filter(|m| token::is_well_formed(m)) {
                Some(next) => id = next,
                None => break,
            }
            only_owner = "";
        }
        Ok(Some(deleted))
    }
}
