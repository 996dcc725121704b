//! [`RedisStore`]: sessions in Redis through [`fred`]. Everything about Redis is in this module.
//!
//! ## Stored shape
//! One Redis hash per session, under `<prefix><id>` (default prefix `scs:session:`), readable with
//! `redis-cli HGETALL` and decodable from any language:
//!
//! | field | value |
//! |---|---|
//! | `v:<key>` | the session value of `<key>`, as JSON text |
//! | `meta` | space-separated `name=value` pairs, e.g. `deadline=1767225600000 size=42`: |
//! | | `deadline`: absolute deadline, Unix milliseconds |
//! | | `size`: bytes of the session's keys and JSON values, for the size limit |
//! | | `expiry`: when the session expires (idle timeout), Unix ms; absent when it is the deadline |
//! | | `remember=1` when remember-me is on (absent when off) |
//! | `owner` | the owner the session is tied to, if any |
//!
//! The metadata shares one field so that a load (`HGETALL`) reads back one field and one value
//! beside the session's own values.
//!
//! `meta` has one grammar, checked alike by the Rust decoder and the Lua scripts: pairs separated
//! by spaces, each `[a-z]+=` and an integer, no name twice; anything else is a corrupt record
//! ([`Error::Malformed`]).
//!
//! A token replaced by a renew or merge keeps, for [`REPLACE_GRACE`](crate::store::REPLACE_GRACE), a
//! marker hash `{moved: <successor id>, owner: <owner>}` with no `meta`: it is no session, but a
//! delete of it also deletes the successor.
//!
//! Sessions tied to an owner are also listed in a sorted set `<prefix>owner:<owner>` (member: the
//! session id, score: its expiry), pruned of expired members at every write and expiring with its
//! last session. The session's own `owner` field is what counts: "log out everywhere" deletes a
//! listed session only if that field still names the owner.
//!
//! A load is one `HGETALL`. A commit is one `EVALSHA` of a small Lua script that applies the
//! [`Change`] (clear, `HDEL`, `HSET`, in batches of 1,000 fields) and sets the TTL with `PEXPIRE`,
//! atomically, and refuses to touch a key that holds no live session, so a destroyed or expired
//! session is never resurrected; a session with an owner then costs one more `EVALSHA` to update
//! the owner index. Times in `meta` and the index are the application's clock; TTLs are given to
//! Redis relative to it, so a Redis clock ahead or behind never shortens a session. Every command
//! names exactly one key, so it works unchanged on Redis Cluster. Redis 6.2 or later is required
//! (`ZADD GT`).

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fred::{
    clients::{Client, Pool},
    error::ErrorKind,
    interfaces::{ClientLike, LuaInterface, SortedSetsInterface},
    prelude::{Builder, Config, ReconnectPolicy},
    types::{
        ClusterHash, CustomCommand, Resp3Frame, Value,
        config::UnresponsiveConfig,
        scan::{ScanType, Scanner},
    },
};
use futures_core::Stream;
use futures_util::{StreamExt, future::Either, stream};

use crate::{
    Error,
    store::{Change, Committed, Mode, Record, SessionStore},
    token,
};

/// SCAN page size for [`RedisStore::ids`].
const SCAN_COUNT: u32 = 1000;

/// The helpers every session script starts with: the `meta` grammar, the live check, batching.
const PRELUDE_LUA: &str = include_str!("redis/prelude.lua");
/// Applies a [`Change`] (see the script for its arguments).
const COMMIT_LUA: &str = include_str!("redis/commit.lua");
/// Removes one value of a live session and returns it ([`SessionStore::take`]).
const TAKE_LUA: &str = include_str!("redis/take.lua");
/// Turns a live session into a marker pointing at its successor ([`SessionStore::replace`]).
const REPLACE_LUA: &str = include_str!("redis/replace.lua");
/// Deletes a session or marker, optionally only if it belongs to a given owner.
const DELETE_LUA: &str = include_str!("redis/delete.lua");
/// Records a session in its owner's index.
const INDEX_LUA: &str = include_str!("redis/index.lua");

/// How many replacement markers a delete follows (a renew of a renew of …) before it stops.
const MAX_FOLLOW: usize = 16;

/// A Lua script and its SHA-1, run with `EVALSHA`, falling back to `EVAL` after a Redis restart.
#[derive(Clone, Debug)]
struct Script {
    lua: String,
    sha: String,
}

impl Script {
    /// A script of `parts` concatenated (the prelude, then the body).
    fn new(parts: &[&str]) -> Self {
        let lua = parts.concat();
        Script {
            sha: fred::util::sha1_hash(&lua),
            lua,
        }
    }

    /// Runs the script on `key`. `args` is called again only for the `EVAL` after a `NOSCRIPT`.
    async fn run(
        &self,
        client: &Client,
        key: String,
        args: impl Fn() -> Vec<Value>,
    ) -> Result<Value, Error> {
        match client
            .evalsha::<Value, _, _, _>(self.sha.as_str(), key.as_str(), args())
            .await
        {
            // Redis restarted or its script cache was flushed: EVAL sends the source and caches it.
            Err(e) if e.details().starts_with("NOSCRIPT") => client
                .eval(self.lua.as_str(), key, args())
                .await
                .map_err(script_error),
            other => other.map_err(script_error),
        }
    }
}

/// A fred client or pool that [`RedisStore`] can send its commands through: fred's
/// [`Client`] or [`Pool`]. The trait is sealed: the store relies on how each one orders the
/// commands of one key, so it is not meant to be implemented elsewhere.
pub trait FredClient: sealed::Sealed + Clone + Send + Sync + 'static {
    /// The client the next command goes through.
    fn client(&self) -> &Client;

    /// The client the commands on `key` go through: always the same one for a key, so that
    /// Redis runs the commands on one session in the order they were sent, and a command whose
    /// caller gave up (store timeout) can never land after a later one.
    fn client_for(&self, key: &str) -> &Client {
        let _ = key;
        self.client()
    }
}

mod sealed {
    /// Only fred's own client types are [`FredClient`](super::FredClient)s.
    pub trait Sealed {}
    impl Sealed for fred::clients::Client {}
    impl Sealed for fred::clients::Pool {}
}

impl FredClient for Client {
    fn client(&self) -> &Client {
        self
    }
}

impl FredClient for Pool {
    /// The next connected client of the pool.
    fn client(&self) -> &Client {
        self.next_connected()
    }

    fn client_for(&self, key: &str) -> &Client {
        // Session ids are random, so the last few bytes of the key spread keys evenly; any stable
        // choice keeps one key's commands in order.
        let clients = self.clients();
        let tail = &key.as_bytes()[key.len().saturating_sub(8)..];
        let hash = tail.iter().fold(0_usize, |h, &b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        &clients[hash % clients.len()]
    }
}

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
    /// The client's command timeout, if it has one: it bounds every load (one command).
    command_timeout: Option<Duration>,
    commit: Script,
    take: Script,
    replace: Script,
    delete: Script,
    index: Script,
}

impl<C: FredClient> RedisStore<C> {
    /// A store over an initialized (connected) fred client or pool, with the default prefix
    /// `scs:session:`.
    pub fn new(client: C) -> Self {
        let timeout = client.client().perf_config().default_command_timeout;
        Self {
            client,
            prefix: RedisStore::DEFAULT_PREFIX.to_owned(),
            command_timeout: Some(timeout).filter(|t| !t.is_zero()),
            commit: Script::new(&[PRELUDE_LUA, COMMIT_LUA]),
            take: Script::new(&[PRELUDE_LUA, TAKE_LUA]),
            replace: Script::new(&[PRELUDE_LUA, REPLACE_LUA]),
            delete: Script::new(&[DELETE_LUA]),
            index: Script::new(&[INDEX_LUA]),
        }
    }

    /// Sets the key prefix, so that several session layers can share one Redis.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
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

    fn key(&self, id: &str) -> String {
        [self.prefix.as_str(), id].concat()
    }

    fn owner_key(&self, owner: &str) -> String {
        format!("{}owner:{owner}", self.prefix)
    }

    /// Streams the ids of all live sessions (SCS `Iterate`): a `SCAN` over the keys under the
    /// prefix on every primary (each node of a cluster), a page of 1000 at a time, so a million
    /// sessions never sit in memory at once. Ids are tokens, or their hashes when
    /// hash-token-in-store is on; [`SessionStore::load`], [`SessionStore::commit`] and
    /// [`SessionStore::delete`] take them as they are. As with any `SCAN`, a session created or
    /// deleted during the iteration may or may not be visited.
    ///
    /// ```no_run
    /// # async fn demo(store: tower_scs::RedisStore) -> Result<(), tower_scs::Error> {
    /// use futures_util::TryStreamExt;
    /// use tower_scs::store::SessionStore;
    ///
    /// let mut ids = std::pin::pin!(store.ids());
    /// while let Some(id) = ids.try_next().await? {
    ///     if let Some(record) = store.load(&id).await? {
    ///         println!("{} values, expires {:?}", record.values.len(), record.expiry);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ids(&self) -> impl Stream<Item = Result<String, Error>> + Send + 'static {
        let client = self.client.client().clone();
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let count = Some(SCAN_COUNT);
        let pages = if client.is_clustered() {
            Either::Left(client.scan_cluster(pattern, count, Some(ScanType::Hash)))
        } else {
            Either::Right(client.scan(pattern, count, Some(ScanType::Hash)))
        };
        let prefix = self.prefix.clone();
        pages.flat_map(move |page| {
            let ids: Vec<Result<String, Error>> = match page {
                Ok(mut page) => {
                    let keys = page.take_results().unwrap_or_default();
                    page.next();
                    keys.iter()
                        .filter_map(|key| key.as_str()?.strip_prefix(prefix.as_str()))
                        .filter(|id| token::is_well_formed(id))
                        .map(|id| Ok(id.to_owned()))
                        .collect()
                }
                Err(e) => vec![Err(Error::store(e))],
            };
            stream::iter(ids)
        })
    }

    /// Records the session `id`, expiring at `expiry`, in the index of `owner`.
    async fn index(&self, owner: &str, id: &str, expiry: SystemTime) -> Result<(), Error> {
        let now = millis(SystemTime::now());
        let args = || vec![now.into(), id.into(), millis(expiry).into()];
        let key = self.owner_key(owner);
        let client = self.client.client_for(&key);
        self.index.run(client, key, args).await?;
        Ok(())
    }
}

impl RedisStore<Pool> {
    /// The default key prefix, as in SCS's redisstore: `scs:session:`.
    pub const DEFAULT_PREFIX: &'static str = "scs:session:";

    /// Connects to the Redis at `url` (any URL fred accepts: `redis://`, `rediss://` with a fred
    /// TLS feature, `redis-cluster://host:port?node=host:port`, `redis-sentinel://…`) with
    /// settings fit for a session store:
    ///
    /// - a pool of 4 connections (each session key always uses the same one, so Redis runs one
    ///   session's commands in order);
    /// - reconnect forever, every 100 ms, so service resumes by itself after a Redis restart or
    ///   a failover;
    /// - a 1 s connection timeout, a 900 ms command timeout (below the layer's default 1 s store
    ///   timeout, so a command is dropped rather than sent after its request has failed), and
    ///   connections that stay silent for 1 s are reconnected;
    /// - up to 3 attempts and 2 redirections per command, so Cluster `MOVED`/`ASK` redirects
    ///   during resharding and failover are followed.
    ///
    /// If you lower the layer's `store_timeout` below 900 ms, build your own pool with a command
    /// timeout below it.
    ///
    /// Fails when the URL is invalid or Redis cannot be reached at start.
    pub async fn from_url(url: &str) -> Result<Self, Error> {
        let config = Config::from_url(url).map_err(Error::store)?;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.internal_command_timeout = Duration::from_secs(1);
                // fred 10.1 counts following a MOVED or ASK redirect as another attempt: with a
                // single attempt a redirected command always fails, and an ASK (live resharding)
                // ends the client's router task for good. Fewer redirections than attempts make
                // fred fail the command, not its router, when an ASK loops.
                c.max_command_attempts = 3;
                c.max_redirections = 2;
                // A connection with no reply for 1 s since its last write is closed and
                // reconnected.
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(Duration::from_secs(1)),
                    interval: Duration::from_millis(250),
                };
            })
            // Below the layer's default 1 s store timeout, so that fred's own timeout fires first
            // and fred drops the command instead of sending or resending it after the request
            // has already failed.
            .with_performance_config(|p| p.default_command_timeout = Duration::from_millis(900))
            .set_policy(ReconnectPolicy::new_constant(0, 100))
            .build_pool(4)
            .map_err(Error::store)?;
        pool.init().await.map_err(Error::store)?;
        Ok(Self::new(pool))
    }
}

impl<C: FredClient> SessionStore for RedisStore<C> {
    async fn load(&self, id: &str) -> Result<Option<Record>, Error> {
        let key = self.key(id);
        // The raw reply frame, decoded straight into a Record: no intermediate fred `Value`s.
        let hgetall = CustomCommand::new_static("HGETALL", ClusterHash::FirstKey, false);
        let reply = self
            .client
            .client_for(&key)
            .custom_raw(hgetall, vec![key])
            .await
            .map_err(|e| match (e.kind(), self.command_timeout) {
                (ErrorKind::Timeout, Some(limit)) => Error::Timeout(limit),
                _ => Error::store(e),
            })?;
        decode(reply)
    }

    /// The fred client's command timeout (`default_command_timeout`), when it has one.
    fn load_timeout(&self) -> Option<Duration> {
        self.command_timeout
    }

    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        // Numbers go as integers and fixed strings as static ones: no allocation but the fields.
        let fixed = |s: &'static str| Value::from_static_str(s);
        let args = || {
            let mut args: Vec<Value> =
                Vec::with_capacity(9 + change.removed.len() + 2 * change.set.len());
            args.push(fixed(match change.mode {
                Mode::Create { .. } => "c",
                Mode::Update { .. } => "u",
            }));
            args.push(millis(change.now).into());
            args.push(change.idle_ttl.map_or(0, millis_of).into());
            args.push(change.deadline().map_or(fixed(""), |d| millis(d).into()));
            args.push(fixed(match change.remember {
                None => "",
                Some(true) => "1",
                Some(false) => "0",
            }));
            args.push(fixed(if change.cleared { "1" } else { "0" }));
            args.push(change.owner.as_deref().unwrap_or_default().into());
            args.push(
                change
                    .max_bytes
                    .map_or(0, |m| m.min(i64::MAX as u64) as i64)
                    .into(),
            );
            args.push((change.removed.len() as i64).into());
            args.extend(change.removed.iter().map(|k| ["v:", k].concat().into()));
            for (k, v) in &change.set {
                args.push(["v:", k].concat().into());
                args.push(v.as_str().into());
            }
            args
        };
        let key = self.key(id);
        let client = self.client.client_for(&key);
        let reply = self.commit.run(client, key, args).await?;
        let (committed, owner) = match reply {
            Value::Null => return Ok(None),
            Value::Array(items) => match items.as_slice() {
                [expiry, remember, owner] => (
                    Committed {
                        expiry: from_millis(expiry.as_i64().ok_or_else(|| bad_reply(&items))?),
                        remember: remember.as_str().is_some_and(|r| r == "1"),
                    },
                    owner.as_string().filter(|o| !o.is_empty()),
                ),
                _ => return Err(bad_reply(&items)),
            },
            other => return Err(bad_reply(&other)),
        };
        if let Some(owner) = owner {
            self.index(&owner, id, committed.expiry).await?;
        }
        Ok(Some(committed))
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.delete_following(id.to_owned(), "").await.map(drop)
    }

    /// Replaces the session by a marker (one script), then drops it from its owner's index: the
    /// successor was indexed when it was committed, before this, so a log-out-everywhere that
    /// reads the index in between finds one or the other.
    async fn replace(&self, id: &str, successor: &str) -> Result<bool, Error> {
        let now = millis(SystemTime::now());
        let grace = millis_of(crate::store::REPLACE_GRACE);
        let args = || vec![now.into(), successor.into(), grace.into()];
        let key = self.key(id);
        let reply = self
            .replace
            .run(self.client.client_for(&key), key, args)
            .await?;
        let owner = match reply {
            Value::Array(items) => match items.as_slice() {
                [_, owner] => owner.as_string(),
                _ => return Err(bad_reply(&items)),
            },
            _ => return Ok(false),
        };
        if let Some(owner) = owner.filter(|o| !o.is_empty()) {
            let index = self.owner_key(&owner);
            self.client
                .client_for(&index)
                .zrem::<(), _, _>(index, id)
                .await
                .map_err(Error::store)?;
        }
        Ok(true)
    }

    async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        let now = millis(SystemTime::now());
        let field = ["v:", key].concat();
        let args = || vec![now.into(), field.as_str().into()];
        let redis_key = self.key(id);
        let client = self.client.client_for(&redis_key);
        let reply = self.take.run(client, redis_key, args).await?;
        Ok(reply.into_string())
    }

    /// Deletes, one script per session, each session listed in the owner's index whose own
    /// `owner` field is still `owner`, following replacement markers to their successors; then
    /// drops the deleted ids from the index. Ids whose session now has another owner stay
    /// listed until their score passes, and are never deleted here.
    async fn delete_owner(&self, owner: &str) -> Result<u64, Error> {
        let index = self.owner_key(owner);
        let client = self.client.client_for(&index);
        let ids: Vec<String> = client
            .zrange(index.as_str(), 0, -1, None, false, None, false)
            .await
            .map_err(Error::store)?;
        let deletes = ids
            .iter()
            .map(|id| self.delete_following(id.clone(), owner));
        let results = futures_util::future::try_join_all(deletes).await?;
        let gone: Vec<&String> = ids
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_some())
            .map(|(id, _)| id)
            .collect();
        if !gone.is_empty() {
            client
                .zrem::<(), _, _>(index, gone)
                .await
                .map_err(Error::store)?;
        }
        Ok(results.into_iter().flatten().sum())
    }
}

impl<C: FredClient> RedisStore<C> {
    /// Deletes session `id` (only if its owner is `owner`, when that is not empty), and the
    /// successors its replacement markers point to, and drops each deleted session from its
    /// owner's index. Returns how many live sessions were deleted, or `None` when `id` belongs
    /// to another owner and was kept.
    async fn delete_following(&self, mut id: String, owner: &str) -> Result<Option<u64>, Error> {
        let mut deleted = 0;
        let mut only_owner = owner;
        for _ in 0..MAX_FOLLOW {
            let key = self.key(&id);
            let reply = self
                .delete
                .run(self.client.client_for(&key), key, || {
                    vec![only_owner.into()]
                })
                .await?;
            let Value::Array(items) = reply else {
                return Err(bad_reply(&reply));
            };
            let [status, moved, stored_owner] = items.as_slice() else {
                return Err(bad_reply(&items));
            };
            match status.as_i64() {
                Some(-1) => return Ok(None),
                Some(1) => deleted += 1,
                _ => {}
            }
            // (delete_owner drops its own index's ids in one command afterwards.)
            let stored_owner = stored_owner.as_string().filter(|o| !o.is_empty());
            if let Some(stored_owner) = stored_owner.filter(|_| only_owner.is_empty()) {
                let index = self.owner_key(&stored_owner);
                self.client
                    .client_for(&index)
                    .zrem::<(), _, _>(index, id.as_str())
                    .await
                    .map_err(Error::store)?;
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

/// Decodes an `HGETALL` reply frame; an empty hash is a missing session.
fn decode(reply: Resp3Frame) -> Result<Option<Record>, Error> {
    let fields = match &reply {
        Resp3Frame::Array { data, .. } => data.len() / 2,
        Resp3Frame::Map { data, .. } => data.len(),
        _ => 0,
    };
    let mut record = Record {
        // All but `meta` are usually values.
        values: HashMap::with_capacity(fields.saturating_sub(1)),
        deadline: UNIX_EPOCH,
        expiry: UNIX_EPOCH,
        remember: false,
        owner: None,
    };
    let (mut deadline, mut expiry, mut moved) = (None, None, false);
    let mut field = |name: Resp3Frame, value: Resp3Frame| -> Result<(), Error> {
        let (name, value) = (text(&name)?, text(&value)?);
        if let Some(key) = name.strip_prefix("v:") {
            record.values.insert(key.to_owned(), value.to_owned());
            return Ok(());
        }
        match name {
            "meta" => {
                let meta = parse_meta(value)?;
                deadline = Some(meta.deadline);
                expiry = meta.expiry;
                record.remember = meta.remember;
            }
            // A token replaced by a renew or merge: not a session.
            "moved" => moved = true,
            "owner" => record.owner = Some(value.to_owned()),
            // Unknown fields are left alone, for forward compatibility.
            _ => {}
        }
        Ok(())
    };
    // RESP2 answers a flat array of fields and values (fred hands it over as a RESP3 array),
    // RESP3 a map.
    match reply {
        Resp3Frame::Array { data, .. } if data.len() % 2 == 0 => {
            if data.is_empty() {
                return Ok(None);
            }
            let mut items = data.into_iter();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                field(name, value)?;
            }
        }
        Resp3Frame::Map { data, .. } => {
            if data.is_empty() {
                return Ok(None);
            }
            for (name, value) in data {
                field(name, value)?;
            }
        }
        Resp3Frame::Null => return Ok(None),
        Resp3Frame::SimpleError { data, .. } => return Err(reply_error(&data)),
        Resp3Frame::BlobError { data, .. } => {
            return Err(reply_error(&String::from_utf8_lossy(&data)));
        }
        other => {
            return Err(Error::Malformed(format!(
                "unexpected HGETALL reply {other:?}"
            )));
        }
    }
    if moved {
        return Ok(None);
    }
    record.deadline = deadline
        .ok_or_else(|| Error::Malformed("session hash has no deadline in its meta field".into()))?;
    record.expiry = expiry.unwrap_or(record.deadline);
    if record.expiry <= SystemTime::now() {
        // Foreign data without a TTL, or a clock ahead of the writer's: expired all the same.
        return Ok(None);
    }
    Ok(Some(record))
}

/// The text of a string reply frame.
fn text(frame: &Resp3Frame) -> Result<&str, Error> {
    let not_text = || Error::Malformed("session hash holds a field that is not UTF-8".into());
    match frame {
        Resp3Frame::BlobString { data, .. }
        | Resp3Frame::SimpleString { data, .. }
        | Resp3Frame::VerbatimString { data, .. } => {
            std::str::from_utf8(data).map_err(|_| not_text())
        }
        _ => Err(not_text()),
    }
}

/// An error reply from Redis, as a store error.
fn reply_error(message: &str) -> Error {
    Error::store(fred::error::Error::new(
        ErrorKind::Unknown,
        message.to_owned(),
    ))
}

/// The `meta` field, decoded.
struct Meta {
    deadline: SystemTime,
    expiry: Option<SystemTime>,
    remember: bool,
}

/// Parses `meta` by the grammar the scripts' `parse_meta` (in `redis/prelude.lua`) uses, so that
/// Rust and Lua agree on what is corrupt: pairs separated by spaces, each `[a-z]+=-?[0-9]+` with
/// at most 16 characters of number, no name twice, a `deadline`; times between 1970 and the end
/// of year 9999 in Unix ms, `size` >= 0, `remember` 0 or 1. Unknown names are allowed.
fn parse_meta(text: &str) -> Result<Meta, Error> {
    let corrupt = |what: String| Error::Malformed(format!("stored session field meta: {what}"));
    let (mut deadline, mut expiry, mut remember, mut size) = (None, None, None, None);
    let mut others: Vec<&str> = Vec::new();
    for pair in text.split(' ').filter(|p| !p.is_empty()) {
        // Byte scans: cheaper than memchr-based `split_once` on strings this short.
        let eq = pair.bytes().position(|b| b == b'=');
        let (name, number) = eq.map_or((pair, ""), |eq| (&pair[..eq], &pair[eq + 1..]));
        if eq.is_none() || name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(corrupt(format!("{pair:?} is not name=integer")));
        }
        let slot = match name {
            "deadline" => &mut deadline,
            "expiry" => &mut expiry,
            "remember" => &mut remember,
            "size" => &mut size,
            _ if others.contains(&name) => return Err(corrupt(format!("{name} twice"))),
            _ => {
                others.push(name);
                &mut None
            }
        };
        let digits = number.strip_prefix('-').unwrap_or(number);
        let integer =
            !digits.is_empty() && number.len() <= 16 && digits.bytes().all(|b| b.is_ascii_digit());
        let value = number.parse::<i64>().ok().filter(|_| integer);
        let value = value.ok_or_else(|| match name {
            "deadline" | "expiry" => {
                corrupt(format!("{number:?} is not a time in Unix milliseconds"))
            }
            _ => corrupt(format!("{name}={number:?} is not an integer")),
        })?;
        if slot.replace(value).is_some() {
            return Err(corrupt(format!("{name} twice")));
        }
    }
    let time = |ms: i64| {
        (0..=253_402_300_799_999)
            .contains(&ms)
            .then(|| from_millis(ms))
            .ok_or_else(|| corrupt(format!("{ms} is not a time in Unix milliseconds")))
    };
    if size.is_some_and(|s| s < 0) || remember.is_some_and(|r| !(0..=1).contains(&r)) {
        return Err(corrupt(format!(
            "size {size:?} or remember {remember:?} out of range"
        )));
    }
    Ok(Meta {
        deadline: time(deadline.ok_or_else(|| corrupt("no deadline".into()))?)?,
        expiry: expiry.map(time).transpose()?,
        remember: remember == Some(1),
    })
}

/// A duration in whole milliseconds, saturating.
fn millis_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Maps a script's `TOOLARGE <bytes>` and `MALFORMED <field>` errors to [`Error::TooLarge`] and
/// [`Error::Malformed`].
fn script_error(e: fred::error::Error) -> Error {
    if let Some((_, size)) = e.details().split_once("TOOLARGE ") {
        return Error::TooLarge(format!("{size} bytes"));
    }
    if let Some((_, field)) = e.details().split_once("MALFORMED ") {
        return Error::Malformed(format!("stored session field {field}"));
    }
    Error::store(e)
}

/// Escapes the glob characters of a key prefix for a `SCAN MATCH` pattern.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn bad_reply(reply: &impl std::fmt::Debug) -> Error {
    Error::Malformed(format!(
        "unexpected reply from the commit script: {reply:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `meta` grammar, as the Lua prelude's `parse_meta` applies it too (the Lua side is
    /// exercised through the scripts by `tests/clocks.rs`).
    #[test]
    fn meta_grammar() {
        let ok = parse_meta("deadline=1767225600000 size=9").unwrap();
        assert_eq!(ok.deadline, from_millis(1_767_225_600_000));
        assert_eq!(ok.expiry, None);
        assert!(!ok.remember);
        let ok = parse_meta(" deadline=5  expiry=4 remember=1 future=7 ").unwrap();
        assert_eq!(ok.expiry, Some(from_millis(4)));
        assert!(ok.remember);
        for corrupt in [
            "",
            "size=9",
            "deadline=5 deadline=5",
            "deadline=5 future=1 future=1",
            "deadline=5 remember",
            "deadline=5 Size=1",
            "deadline=5 size=x",
            "deadline=5 size=-1",
            "deadline=5 remember=2",
            "deadline=-5",
            "deadline=253402300800000",
            "deadline=12345678901234567",
            "deadline=5\tsize=1",
            "deadline=+5",
        ] {
            assert!(
                matches!(parse_meta(corrupt), Err(Error::Malformed(_))),
                "{corrupt:?}"
            );
        }
    }
}
