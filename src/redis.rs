//! [`RedisStore`]: sessions in Redis through [`fred`]. Everything about Redis is in this module.
//!
//! ## Stored shape
//! One Redis hash per session, under `<prefix><id>` (default prefix `scs:session:`), readable with
//! `redis-cli HGETALL` and decodable from any language:
//!
//! | field | value |
//! |---|---|
//! | `v:<key>` | the session value of `<key>`, as JSON text |
//! | `deadline` | absolute deadline, Unix milliseconds |
//! | `expiry` | when Redis drops the key (its `PEXPIREAT`), Unix milliseconds |
//! | `remember` | remember-me flag, `0` or `1` |
//!
//! A load is one `HGETALL`. A commit is one `EVALSHA` of a small Lua script that applies the
//! [`Change`] (clear, `HDEL`, `HSET`) and sets the expiry with `PEXPIREAT`, atomically, and
//! refuses to touch a key that no longer exists, so a destroyed or expired session is never
//! resurrected. Every command names exactly one key, so it works unchanged on Redis Cluster.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fred::{
    clients::Pool,
    interfaces::{ClientLike, HashesInterface, KeysInterface, LuaInterface},
    prelude::{Builder, Config, ReconnectPolicy},
    types::Value,
};

use crate::{
    Error,
    store::{Change, Committed, Mode, Record, SessionStore},
};

/// The default key prefix, as in SCS's redisstore.
pub const DEFAULT_PREFIX: &str = "scs:session:";

/// Applies a [`Change`]. KEYS[1] = session key. ARGV: mode (`c`|`u`), now ms, idle ttl ms (0 =
/// none), deadline ms (or empty), remember (`0`|`1`|empty), cleared (`0`|`1`), n, then n fields to
/// delete, then field/value pairs to set. Returns nil when an update finds no session, else
/// {expiry ms, remember}.
const COMMIT_LUA: &str = r#"
local key = KEYS[1]
local now = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
local deadline = ARGV[4]
local remember = ARGV[5]
if ARGV[1] == 'u' then
  local meta = redis.call('HMGET', key, 'deadline', 'remember')
  if not meta[1] then return false end
  if deadline == '' then deadline = meta[1] end
  if remember == '' then remember = meta[2] or '0' end
elseif remember == '' then
  remember = '0'
end
if ARGV[6] == '1' then
  local gone = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'v:' then gone[#gone + 1] = field end
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
end
local n = tonumber(ARGV[7])
if n > 0 then redis.call('HDEL', key, unpack(ARGV, 8, 7 + n)) end
local expiry = tonumber(deadline)
if idle > 0 and now + idle < expiry then expiry = now + idle end
if expiry <= now then
  redis.call('DEL', key)
  return {expiry, remember}
end
local fields = {'deadline', deadline, 'expiry', string.format('%d', expiry), 'remember', remember}
for i = 8 + n, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', key, unpack(fields))
redis.call('PEXPIREAT', key, expiry)
return {expiry, remember}
"#;

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
    sha: String,
}

impl<C> RedisStore<C>
where
    C: ClientLike + HashesInterface + KeysInterface + LuaInterface + Clone + Send + Sync + 'static,
{
    /// A store over an initialized (connected) fred client or pool, with the default prefix
    /// `scs:session:`.
    pub fn new(client: C) -> Self {
        Self {
            client,
            prefix: DEFAULT_PREFIX.to_owned(),
            sha: fred::util::sha1_hash(COMMIT_LUA),
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
        format!("{}{id}", self.prefix)
    }

    async fn run_commit(
        &self,
        key: String,
        args: Vec<String>,
    ) -> Result<Value, fred::error::Error> {
        match self
            .client
            .evalsha::<Value, _, _, _>(self.sha.as_str(), key.clone(), args.clone())
            .await
        {
            // Redis restarted or its script cache was flushed: EVAL sends the source and caches it.
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.client.eval(COMMIT_LUA, key, args).await
            }
            other => other,
        }
    }
}

impl RedisStore<Pool> {
    /// Connects to the Redis at `url` (any URL fred accepts: `redis://`, `rediss://` with a fred
    /// TLS feature, `redis-cluster://host:port?node=host:port`, `redis-sentinel://…`) with
    /// settings fit for a session store:
    ///
    /// - a pool of 4 connections;
    /// - reconnect forever, every 100 ms, so service resumes by itself after a Redis restart;
    /// - a 1 s connection timeout and a 1 s command timeout, so no command waits longer while
    ///   Redis is unreachable;
    /// - one attempt per command (the session layer reports the failure instead of retrying
    ///   behind the user's back).
    ///
    /// Fails when the URL is invalid or Redis cannot be reached at start.
    pub async fn from_url(url: &str) -> Result<Self, Error> {
        let config = Config::from_url(url).map_err(Error::store)?;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.internal_command_timeout = Duration::from_secs(1);
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(1))
            .set_policy(ReconnectPolicy::new_constant(0, 100))
            .build_pool(4)
            .map_err(Error::store)?;
        pool.init().await.map_err(Error::store)?;
        Ok(Self::new(pool))
    }
}

impl<C> SessionStore for RedisStore<C>
where
    C: ClientLike + HashesInterface + KeysInterface + LuaInterface + Clone + Send + Sync + 'static,
{
    async fn load(&self, id: &str) -> Result<Option<Record>, Error> {
        let fields: HashMap<String, String> = self
            .client
            .hgetall(self.key(id))
            .await
            .map_err(Error::store)?;
        decode(fields)
    }

    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        let mut args = Vec::with_capacity(7 + change.removed.len() + 2 * change.set.len());
        args.push(match change.mode {
            Mode::Create => "c".to_owned(),
            Mode::Update => "u".to_owned(),
        });
        args.push(millis(change.now).to_string());
        args.push(change.idle_ttl.map_or(0, |d| d.as_millis()).to_string());
        args.push(
            change
                .deadline
                .map(|d| millis(d).to_string())
                .unwrap_or_default(),
        );
        args.push(match change.remember {
            None => String::new(),
            Some(r) => u8::from(r).to_string(),
        });
        args.push(u8::from(change.cleared).to_string());
        args.push(change.removed.len().to_string());
        args.extend(change.removed.iter().map(|k| format!("v:{k}")));
        for (k, v) in &change.set {
            args.push(format!("v:{k}"));
            args.push(v.clone());
        }
        let reply = self
            .run_commit(self.key(id), args)
            .await
            .map_err(Error::store)?;
        match reply {
            Value::Null => Ok(None),
            Value::Array(items) => match items.as_slice() {
                [expiry, remember] => Ok(Some(Committed {
                    expiry: from_millis(expiry.as_i64().ok_or_else(|| bad_reply(&items))?),
                    remember: remember.as_str().is_some_and(|r| r == "1"),
                })),
                _ => Err(bad_reply(&items)),
            },
            other => Err(bad_reply(&other)),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.client
            .del::<(), _>(self.key(id))
            .await
            .map_err(Error::store)
    }
}

/// Decodes the fields of a session hash; an empty hash is a missing session.
fn decode(fields: HashMap<String, String>) -> Result<Option<Record>, Error> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut values = HashMap::with_capacity(fields.len());
    let (mut deadline, mut expiry, mut remember) = (None, None, false);
    for (field, value) in fields {
        if let Some(key) = field.strip_prefix("v:") {
            values.insert(key.to_owned(), value);
            continue;
        }
        match field.as_str() {
            "deadline" => deadline = Some(parse_millis(&value)?),
            "expiry" => expiry = Some(parse_millis(&value)?),
            "remember" => remember = value == "1",
            // Unknown fields are left alone, for forward compatibility.
            _ => {}
        }
    }
    let deadline =
        deadline.ok_or_else(|| Error::Malformed("session hash has no deadline field".into()))?;
    Ok(Some(Record {
        values,
        deadline,
        expiry: expiry.unwrap_or(deadline),
        remember,
    }))
}

fn parse_millis(s: &str) -> Result<SystemTime, Error> {
    s.parse::<i64>()
        .map(from_millis)
        .map_err(|_| Error::Malformed(format!("{s:?} is not a time in Unix milliseconds")))
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

fn bad_reply(reply: &impl std::fmt::Debug) -> Error {
    Error::Malformed(format!(
        "unexpected reply from the commit script: {reply:?}"
    ))
}
