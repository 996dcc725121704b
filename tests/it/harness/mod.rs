//! Test harness: store backends (memory, or a private redis-server), a store-call counter, the
//! test app and a small client with a cookie jar (and, in `headers`, one whose token travels
//! in a header).

pub mod app;
pub mod browser;
pub mod capture;
pub mod cluster;
pub mod example;
pub mod gate;
pub mod headers;
pub mod load;
pub mod logs;
pub mod proxy;
pub mod redis;
pub mod tls;

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{Router, body::Body};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use cookie::Cookie;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use tower_scs::store::{Change, Committed, Record, SessionStore};
use tower_scs::{Error, LocalCache, MemoryStore, RedisStore, SessionLayer};

const DEFAULT_PREFIX: &str = RedisStore::DEFAULT_PREFIX;

pub use self::{
    app::{NONE, app},
    capture::Captured,
    gate::Gate,
    headers::{
        Header, HeaderClient, TOKEN_HEADER, Via, a_session_on_each_carrier, authorization,
        get_with, session_cookie, token_header,
    },
    logs::Logs,
    redis::{Inspector, Monitor, RedisServer, free_port},
};

/// Generates, for each listed `async fn name(backend: Backend)`, a `memory::name`, a
/// `redis::name`, a `redis_cached::name` (Redis with the local cache on) and a
/// `redis_tls::name` and `redis_tls_cached::name` test (Redis over TLS only, see
/// [`Backend::redis_tls`]), and a
/// `redis_acl::name` and `redis_acl_cached::name` test (the store logged in as a user allowed
/// only the documented ACL, see [`Backend::redis_acl`]), so that the same suite runs against
/// both stores, the cache, TLS and least privilege.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $crate::both_stores!(@on memory, $crate::harness::Backend::memory(); $($name),*);
        $crate::both_stores!(@on redis, $crate::harness::Backend::redis().await; $($name),*);
        $crate::both_stores!(
            @on redis_cached, $crate::harness::Backend::redis_cached().await; $($name),*
        );
        $crate::both_stores!(
            @on redis_tls, $crate::harness::Backend::redis_tls().await; $($name),*
        );
        $crate::both_stores!(
            @on redis_tls_cached, $crate::harness::Backend::redis_tls_cached().await; $($name),*
        );
        $crate::both_stores!(
            @on redis_acl, $crate::harness::Backend::redis_acl().await; $($name),*
        );
        $crate::both_stores!(
            @on redis_acl_cached, $crate::harness::Backend::redis_acl_cached().await; $($name),*
        );
    };
    // One module of tests, each given the backend `$backend` makes.
    (@on $module:ident, $backend:expr; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($backend).await
                }
            )*
        }
    };
}

/// `store` once every connection of its pool is up (`ready`): `from_url` dials lazily, and a
/// test that counts the commands it sends must not see a late connection's handshake.
pub async fn connected(store: RedisStore) -> RedisStore {
    store.ready().await.expect("the test Redis answers");
    store
}

/// `store` with a local cache of `entries` sessions, once its tracking is on.
pub async fn cached(store: RedisStore, entries: u64) -> RedisStore {
    let store = connected(store)
        .await
        .with_local_cache(LocalCache::new(entries));
    tokio::time::timeout(Duration::from_secs(5), store.local_cache_ready())
        .await
        .expect("the local cache's tracking on within 5 s");
    store
}

/// How long a refused store may take to say so, at start-up or on a request.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// A store on `config`, which must not be trusted: either `from_config` fails within the bound
/// with an error that `says`, or (if the store starts lazily) its first request gets the error
/// response within the bound.
pub async fn assert_refused(config: fred::prelude::Config, says: impl Fn(&str) -> bool) {
    let started = Instant::now();
    let store = tokio::time::timeout(REFUSED_WITHIN, RedisStore::from_config(config))
        .await
        .expect("RedisStore::from_config returns within the bound");
    let store = match store {
        Err(e) => {
            assert!(says(&e.to_string()), "{e}");
            return;
        }
        Ok(store) => store,
    };
    let app = app(SessionLayer::new(store));
    let res = tokio::time::timeout(REFUSED_WITHIN, Client::new(&app).get("/put?key=k&value=v"))
        .await
        .expect("the request is answered within the bound");
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR, "{res:?}");
    assert!(started.elapsed() < REFUSED_WITHIN * 2);
}

/// A store on `server` with a local cache whose tracking Redis refuses: a write through one
/// client is read right through another (every read goes to Redis), and the cache's warning,
/// with `says` in it, comes within 5 s. On a current-thread runtime (see [`Logs`]).
pub async fn cache_refused(server: &RedisServer, says: &str) {
    let logs = Logs::default();
    let _capture = tracing::subscriber::set_default(logs.subscriber());
    let store = server.store().await.with_local_cache(LocalCache::new(100));
    let app = app(SessionLayer::new(store));
    let mut c = Client::new(&app);
    c.get("/put?key=a&value=1").await;
    assert_eq!(c.get("/get?key=a").await.body, "1");
    let mut other = Client::with_token(&app, c.token.as_deref().expect("a session"));
    other.get("/put?key=a&value=2").await;
    assert_eq!(c.get("/get?key=a").await.body, "2");
    wait_for(Duration::from_secs(5), "the cache's warning", || async {
        let text = logs.text();
        let said = text.contains("cannot turn Redis tracking on") && text.contains(says);
        if said { Ok(()) } else { Err(text) }
    })
    .await;
}

/// Calls the session layer made to its store, counted by [`Counting`]. `fail` makes every call
/// fail.
#[derive(Default, Debug)]
pub struct Calls {
    pub load: AtomicUsize,
    pub commit: AtomicUsize,
    pub delete: AtomicUsize,
    /// `replace` (renew, merge) and `take` (pop) calls.
    pub replace: AtomicUsize,
    pub take: AtomicUsize,
    pub fail: AtomicBool,
    /// Milliseconds every call waits before running.
    pub delay_ms: AtomicU64,
}

impl Calls {
    /// (loads, commits, ends) so far, where ends are the calls that end a session: deletes and
    /// replacements (a renew or merge handing the old session over).
    pub fn get(&self) -> (usize, usize, usize) {
        (
            self.load.load(Ordering::SeqCst),
            self.commit.load(Ordering::SeqCst),
            self.delete.load(Ordering::SeqCst) + self.replace.load(Ordering::SeqCst),
        )
    }
}

/// A store wrapper that counts calls, and fails them on demand (`Error::store`).
pub struct Counting<S> {
    inner: S,
    calls: Arc<Calls>,
}

impl<S> Counting<S> {
    async fn check(&self, counter: &AtomicUsize) -> Result<(), Error> {
        counter.fetch_add(1, Ordering::SeqCst);
        let delay = self.calls.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.calls.fail.load(Ordering::SeqCst) {
            return Err(Error::store(io::Error::other("injected store failure")));
        }
        Ok(())
    }
}

impl<S: SessionStore> SessionStore for Counting<S> {
    async fn load(&self, id: &str) -> Result<Option<Record>, Error> {
        self.check(&self.calls.load).await?;
        self.inner.load(id).await
    }

    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        self.check(&self.calls.commit).await?;
        self.inner.commit(id, change).await
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.check(&self.calls.delete).await?;
        self.inner.delete(id).await
    }

    async fn replace(&self, id: &str, successor: &str) -> Result<bool, Error> {
        self.check(&self.calls.replace).await?;
        self.inner.replace(id, successor).await
    }

    async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        self.check(&self.calls.take).await?;
        self.inner.take(id, key).await
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, Error> {
        self.check(&self.calls.delete).await?;
        self.inner.delete_owner(owner).await
    }

    async fn owner_sessions(&self, owner: &str) -> Result<Vec<(String, Record)>, Error> {
        self.check(&self.calls.load).await?;
        self.inner.owner_sessions(owner).await
    }

    async fn delete_owned(&self, id: &str, owner: &str) -> Result<bool, Error> {
        self.check(&self.calls.delete).await?;
        self.inner.delete_owned(id, owner).await
    }
}

pub enum Kind {
    Memory(MemoryStore),
    Redis(RedisServer),
}

/// The store a behavioural test runs against. Every layer built from one backend shares its
/// sessions and its call counter.
pub struct Backend {
    pub kind: Kind,
    pub calls: Arc<Calls>,
    /// Redis stores get a local cache ([`LocalCache`]) of this many entries.
    pub cache: Option<u64>,
}

impl Backend {
    pub fn memory() -> Self {
        Backend {
            kind: Kind::Memory(MemoryStore::new()),
            calls: Arc::default(),
            cache: None,
        }
    }

    pub async fn redis() -> Self {
        Backend {
            kind: Kind::Redis(RedisServer::start().await),
            calls: Arc::default(),
            cache: None,
        }
    }

    /// Redis, each store with a local cache whose tracking is on before it is used.
    pub async fn redis_cached() -> Self {
        Backend {
            cache: Some(10_000),
            ..Self::redis().await
        }
    }

    /// Redis speaking TLS only, with certificates the test made; the stores trust its CA
    /// (`RedisStore::from_config` with the harness's [`RedisServer::config`]).
    pub async fn redis_tls() -> Self {
        Backend {
            kind: Kind::Redis(RedisServer::start_tls().await),
            calls: Arc::default(),
            cache: None,
        }
    }

    /// [`Backend::redis_tls`] with the local cache on (its subscriber speaks TLS too).
    pub async fn redis_tls_cached() -> Self {
        Backend {
            cache: Some(10_000),
            ..Self::redis_tls().await
        }
    }

    /// Redis, the stores logged in (name and password in the URL) as a user allowed only
    /// [`STORE_ACL`](redis::STORE_ACL).
    pub async fn redis_acl() -> Self {
        Backend {
            kind: Kind::Redis(RedisServer::start_as(redis::STORE_ACL).await),
            calls: Arc::default(),
            cache: None,
        }
    }

    /// [`Backend::redis_acl`] with the local cache on, the user also allowed what the cache
    /// needs ([`CACHE_ACL`](redis::CACHE_ACL)).
    pub async fn redis_acl_cached() -> Self {
        let rules = format!("{} {}", redis::STORE_ACL, redis::CACHE_ACL);
        Backend {
            kind: Kind::Redis(RedisServer::start_as(&rules).await),
            calls: Arc::default(),
            cache: Some(10_000),
        }
    }

    pub fn redis_server(&self) -> Option<&RedisServer> {
        match &self.kind {
            Kind::Redis(server) => Some(server),
            Kind::Memory(_) => None,
        }
    }

    pub fn inspector(&self) -> Option<Inspector> {
        match &self.kind {
            Kind::Redis(server) => Some(server.inspector()),
            Kind::Memory(_) => None,
        }
    }

    /// A layer over this backend's store (wrapped in the call counter), with default settings.
    pub async fn layer(&self) -> SessionLayer {
        let calls = self.calls.clone();
        match &self.kind {
            Kind::Memory(store) => SessionLayer::new(Counting {
                inner: store.clone(),
                calls,
            }),
            Kind::Redis(server) => {
                let mut store = connected(server.store().await).await;
                if let Some(entries) = self.cache {
                    store = cached(store, entries).await;
                }
                SessionLayer::new(Counting {
                    inner: store,
                    calls,
                })
            }
        }
    }

    /// The test app behind a layer over this backend, configured by `configure`.
    pub async fn app(&self, configure: impl FnOnce(SessionLayer) -> SessionLayer) -> Router {
        app(configure(self.layer().await))
    }

    /// Whether the store holds a live record under `id` (a token, or its hash), looked up
    /// directly, not through the layer and not counted: for Redis, whether the key
    /// `scs:session:<id>` holds a session record (not a renewed token's marker).
    pub async fn stored(&self, id: &str) -> bool {
        match &self.kind {
            Kind::Memory(store) => store.load(id).await.unwrap().is_some(),
            Kind::Redis(server) => {
                let inspector = server.inspector();
                inspector.is_session(&format!("{DEFAULT_PREFIX}{id}")).await
            }
        }
    }

    /// How long the store will keep the record under `id`, in milliseconds, by the store's
    /// own account, looked up directly (not through the layer, not counted): for Redis the
    /// PTTL of `scs:session:<id>`, for memory the loaded record's expiry. `None` when it holds
    /// none.
    pub async fn ttl_ms(&self, id: &str) -> Option<i64> {
        match &self.kind {
            Kind::Memory(store) => {
                let record = store.load(id).await.unwrap()?;
                Some(unix_ms(record.expiry) - now_ms())
            }
            Kind::Redis(server) => {
                let key = format!("{DEFAULT_PREFIX}{id}");
                match server.inspector().pttl(&key).await {
                    -2 => None,
                    -1 => panic!("{key} never expires"),
                    ttl => Some(ttl),
                }
            }
        }
    }

    /// How many sessions the store holds (for Redis: keys holding a session record).
    pub async fn stored_count(&self) -> usize {
        match &self.kind {
            Kind::Memory(store) => store.len(),
            Kind::Redis(server) => server.inspector().sessions().await.len(),
        }
    }

    /// How many records the store physically holds, expired or not: for Redis every key; for
    /// memory the count its `Debug` output shows (`MemoryStore { sessions: N, .. }`), the only
    /// view of expired records it has not dropped.
    pub async fn records_held(&self) -> usize {
        match &self.kind {
            Kind::Memory(store) => {
                let debug = format!("{store:?}");
                debug
                    .split_once("sessions: ")
                    .and_then(|(_, n)| n.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no session count in {debug}"))
            }
            Kind::Redis(server) => server.inspector().keys().await.len(),
        }
    }

    /// Makes the store stop answering for `ms` milliseconds: memory → every call waits that
    /// long; Redis → `CLIENT PAUSE <ms> ALL`.
    pub async fn stall(&self, ms: u64) {
        match &self.kind {
            Kind::Memory(_) => self.calls.delay_ms.store(ms, Ordering::SeqCst),
            Kind::Redis(server) => {
                let ms = ms.to_string();
                server
                    .inspector()
                    .ok("CLIENT", &["PAUSE", &ms, "ALL"])
                    .await;
            }
        }
    }

    /// Ends a `stall` early where that is possible (memory), so that calls answer again.
    pub fn unstall(&self) {
        self.calls.delay_ms.store(0, Ordering::SeqCst);
    }

    /// Makes the store fail from now on: memory → the counting wrapper fails every call;
    /// Redis → the server is killed.
    pub fn break_store(&mut self) {
        match &mut self.kind {
            Kind::Memory(_) => self.calls.fail.store(true, Ordering::SeqCst),
            Kind::Redis(server) => server.stop(),
        }
    }
}

/// A response, its body read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    /// The raw `Set-Cookie` values.
    pub fn set_cookie_headers(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("Set-Cookie is ASCII").to_owned())
            .collect()
    }

    /// The one `Set-Cookie` of the response, parsed; `None` when there is none.
    pub fn set_cookie(&self) -> Option<Cookie<'static>> {
        let all = self.set_cookie_headers();
        assert!(all.len() <= 1, "more than one Set-Cookie: {all:?}");
        all.first()
            .map(|c| Cookie::parse(c.clone()).expect("Set-Cookie parses"))
    }

    /// The token the response's `Set-Cookie` carries.
    pub fn new_token(&self) -> String {
        let cookie = self.set_cookie().expect("a Set-Cookie");
        assert_valid_token(cookie.value());
        cookie.value().to_owned()
    }

    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// `Vary` lists `Cookie`.
    pub fn varies_on_cookie(&self) -> bool {
        self.header_values("vary")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case("cookie"))
    }
}

/// A client with a one-cookie jar: it sends `Cookie: <name>=<token>` and follows `Set-Cookie`
/// (an empty value or `Max-Age=0` drops the cookie).
#[derive(Clone)]
pub struct Client {
    app: Router,
    name: String,
    pub token: Option<String>,
}

impl Client {
    pub fn new(app: &Router) -> Self {
        Self::named(app, "session")
    }

    pub fn named(app: &Router, cookie_name: &str) -> Self {
        Client {
            app: app.clone(),
            name: cookie_name.to_owned(),
            token: None,
        }
    }

    pub fn with_token(app: &Router, token: &str) -> Self {
        Client {
            token: Some(token.to_owned()),
            ..Self::new(app)
        }
    }

    pub async fn get(&mut self, uri: &str) -> Resp {
        let mut req = Request::get(uri);
        if let Some(token) = &self.token {
            req = req.header(header::COOKIE, format!("{}={token}", self.name));
        }
        let resp = send(&self.app, req.body(Body::empty()).unwrap()).await;
        for value in resp.set_cookie_headers() {
            let cookie = Cookie::parse(value).expect("Set-Cookie parses");
            if cookie.name() != self.name {
                continue;
            }
            let expired = cookie.max_age() == Some(time::Duration::ZERO);
            self.token = if expired || cookie.value().is_empty() {
                None
            } else {
                Some(cookie.value().to_owned())
            };
        }
        resp
    }
}

/// Sends `req` through the app (no jar).
pub async fn send(app: &Router, req: Request<Body>) -> Resp {
    let res = app.clone().oneshot(req).await.expect("infallible router");
    let (parts, body) = res.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// Sends a GET with exactly this `Cookie` header value.
pub async fn get_with_cookie_header(app: &Router, uri: &str, cookie: HeaderValue) -> Resp {
    let req = Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    send(app, req).await
}

/// A token is 43 base64url characters (32 random bytes, no padding).
pub fn assert_valid_token(token: &str) {
    assert_eq!(token.len(), 43, "token length: {token:?}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "token alphabet: {token:?}"
    );
    assert_eq!(URL_SAFE_NO_PAD.decode(token).unwrap().len(), 32);
}

/// A well-formed token that the layer never issued.
pub fn made_up_token(seed: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(seed.as_bytes()))
}

/// The store id of `token` with hash-token-in-store on: base64url-no-pad(sha256(token)).
pub fn hashed(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// Asserts `actual` is within `tolerance` of `expected`.
#[track_caller]
pub fn assert_near(actual: i64, expected: i64, tolerance: i64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not within {tolerance} of {expected}"
    );
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Polls `ready` every 50 ms until it holds, and returns what it returned; panics with `what`
/// and the last state it reported after `limit`.
pub async fn wait_for<S, F>(limit: Duration, what: &str, mut ready: impl FnMut() -> F) -> S
where
    F: Future<Output = Result<S, String>>,
{
    let until = Instant::now() + limit;
    loop {
        match ready().await {
            Ok(state) => return state,
            Err(state) if Instant::now() >= until => panic!("{what} not within {limit:?}: {state}"),
            Err(_) => sleep_ms(50).await,
        }
    }
}

/// Starts a MONITOR on the backend's Redis, if it is one (see `Monitor::client_commands`).
pub async fn monitor(backend: &Backend) -> Option<(Monitor, Inspector)> {
    let server = backend.redis_server()?;
    let mut monitor = Monitor::start(server).await;
    let inspector = server.inspector();
    monitor.client_commands(&inspector).await; // drain
    Some((monitor, inspector))
}

/// In the commands `assert_calls` expects: the `HGETALL` of a session whose last write was this
/// store's own. Sent without a local cache; with one, the write left the record it wrote in the
/// cache, so the load sends nothing.
pub const READ_OF_OWN_WRITE: &str = "hgetall of this store's own last write";

/// Asserts the store calls since `before`, and for Redis the commands the store sent since the
/// previous check (counted with MONITOR: commands sent by clients, not those run inside the
/// commit script). See [`READ_OF_OWN_WRITE`].
pub async fn assert_calls(
    backend: &Backend,
    monitor: &mut Option<(Monitor, Inspector)>,
    before: &mut (usize, usize, usize),
    (loads, commits, deletes): (usize, usize, usize),
    commands: &[&str],
) {
    let now = backend.calls.get();
    let delta = (now.0 - before.0, now.1 - before.1, now.2 - before.2);
    assert_eq!(
        delta,
        (loads, commits, deletes),
        "(loads, commits, deletes)"
    );
    *before = now;
    if let Some((m, i)) = monitor {
        let mut sent = m.client_commands(i).await;
        let cached = backend.cache.is_some();
        if cached {
            // A cached store follows each script that changed a session with a `PING`, or a
            // commit's script with an `HGETALL` of what it wrote (see `RedisStore::settle`);
            // `cache.rs` counts those.
            let mut previous = String::new();
            sent.retain(|c| {
                let settle = c == "ping" || (c == "hgetall" && previous == "evalsha");
                previous.clone_from(c);
                !settle
            });
        }
        let expected: Vec<&str> = commands
            .iter()
            .filter(|&&c| !(cached && c == READ_OF_OWN_WRITE))
            .map(|&c| if c == READ_OF_OWN_WRITE { "hgetall" } else { c })
            .collect();
        assert_eq!(sent, expected, "Redis commands sent");
    }
}

/// Writes of one session that all overlap: one `/read_put?key=<k>&value=<v>` per pair, sent at
/// once with `token`, each let on to its write only once every one of them has loaded the
/// session (they stop at one gate). The clients afterwards, in order; every write answered 200.
pub async fn overlapping_writes(
    app: &Router,
    token: &str,
    writes: &[(String, String)],
) -> Vec<Client> {
    let gate = Gate::new();
    let mut set = tokio::task::JoinSet::new();
    for (i, (key, value)) in writes.iter().enumerate() {
        let mut client = Client::with_token(app, token);
        let uri = format!("/read_put?key={key}&value={value}&gate={}", gate.name());
        set.spawn(async move {
            let res = client.get(&uri).await;
            assert_eq!(res.status, StatusCode::OK, "{uri}: {res:?}");
            (i, client)
        });
    }
    gate.arrived(writes.len()).await;
    gate.open();
    let mut clients: Vec<(usize, Client)> = set.join_all().await;
    clients.sort_by_key(|(i, _)| *i);
    clients.into_iter().map(|(_, c)| c).collect()
}

/// The lost-update scenario: `sessions` sessions × `writers` concurrent requests each, every
/// request loading its session, waiting until the others of its session have loaded too, then
/// writing its own key (see [`overlapping_writes`]); the sessions all at once. Returns how many
/// of the writes are missing afterwards (and checks each session kept the value it started
/// with).
pub async fn lost_concurrent_writes(app: &Router, sessions: usize, writers: usize) -> usize {
    let mut tokens = Vec::new();
    for s in 0..sessions {
        let mut client = Client::new(app);
        client.get(&format!("/put?key=base&value={s}")).await;
        tokens.push(client.token.expect("session created"));
    }
    let writes: Vec<(String, String)> = (0..writers)
        .map(|w| (format!("k{w}"), format!("v{w}")))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for token in &tokens {
        let (app, token, writes) = (app.clone(), token.clone(), writes.clone());
        set.spawn(async move { overlapping_writes(&app, &token, &writes).await });
    }
    while let Some(done) = set.join_next().await {
        done.expect("writer task");
    }
    let mut lost = 0;
    for (s, token) in tokens.iter().enumerate() {
        let mut client = Client::with_token(app, token);
        let keys = client.get("/keys").await.body;
        lost += (0..writers)
            .filter(|w| !keys.split(',').any(|k| k == format!("k{w}")))
            .count();
        assert_eq!(client.get("/get?key=base").await.body, s.to_string());
    }
    lost
}
