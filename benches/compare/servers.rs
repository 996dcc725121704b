//! The three servers, each of the same put/get/race/count routes, each run as a child process
//! of the bench (`--serve scs|ts|floor --redis-url URL --port P`, also handy on its own for
//! profiling): A tower-scs, B tower-sessions, C the floor of one raw fred command per request.

use std::{
    io::{Read, Write},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
    serve::ListenerExt,
};
use serde::Deserialize;
use tower_scs::fred::{clients::Pool, interfaces::KeysInterface, types::Expiration};

use crate::{Result, flag, procs::Proc};

/// The ways the bench serves the routes: the three it compares, and tower-scs's own options.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    Scs,
    /// tower-scs with signed tokens (one HMAC-SHA256 key).
    ScsSigned,
    /// tower-scs with the token in the `x-session-token` header instead of the cookie.
    ScsHeader,
    /// tower-scs with its coherent local cache (`RedisStore::with_local_cache`), serving only
    /// once tracking is on.
    ScsCache,
    Ts,
    Floor,
    /// No Redis and no sessions: the floor's routes on a map in the server's memory. No layer
    /// that keeps sessions in Redis can serve more requests than this on this machine.
    Ceiling,
}

pub const VARIANTS: [Variant; 7] = [
    Variant::Scs,
    Variant::ScsSigned,
    Variant::ScsHeader,
    Variant::ScsCache,
    Variant::Ts,
    Variant::Floor,
    Variant::Ceiling,
];

/// The variants a bench runs unless `BENCH_VARIANTS` names others.
pub const DEFAULT_VARIANTS: &str = "scs,ts,floor";

/// The header of `Variant::ScsHeader`, which the client's jar also keeps.
pub const TOKEN_HEADER: &str = "x-session-token";

impl Variant {
    /// The variant's name after `--serve`.
    pub fn arg(self) -> &'static str {
        match self {
            Variant::Scs => "scs",
            Variant::ScsSigned => "scs-signed",
            Variant::ScsHeader => "scs-header",
            Variant::ScsCache => "scs-cache",
            Variant::Ts => "ts",
            Variant::Floor => "floor",
            Variant::Ceiling => "ceiling",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Variant::Scs => "A: tower-scs",
            Variant::ScsSigned => "A/signed: tower-scs, signed tokens",
            Variant::ScsHeader => "A/header: tower-scs, header carrier",
            Variant::ScsCache => "A/cache: tower-scs + local cache",
            Variant::Ts => "B: tower-sessions 0.14 + redis-store 0.16",
            Variant::Floor => "C: floor (1 raw fred command, no sessions)",
            Variant::Ceiling => "D: ceiling (no Redis, no sessions: a map in memory)",
        }
    }
    /// Whether it has sessions to race on (the floor has no `/race`).
    pub fn has_race(self) -> bool {
        !matches!(self, Variant::Floor | Variant::Ceiling)
    }
}

/// Starts the server of `variant` on Redis at `redis_url` as a child process (this binary with
/// `--serve`), on a port of its choosing; returns it and its port.
pub fn spawn(variant: Variant, redis_url: &str, race_delay_ms: u64) -> Result<(Proc, u16)> {
    let delay = race_delay_ms.to_string();
    let args = [
        "--serve",
        variant.arg(),
        "--redis-url",
        redis_url,
        "--port",
        "0",
        "--race-delay-ms",
        &delay,
    ];
    let name = format!("server {}", variant.arg());
    let (proc, port) = Proc::spawn_self(name, &args, "READY ")?;
    let port = port.ok_or_else(|| format!("server {} did not start", variant.arg()))?;
    Ok((proc, port))
}

/// `--serve <variant>`: serves until the parent goes away, after printing `READY <port>`.
pub fn serve(variant: &str, args: &[String]) -> Result<()> {
    let url = flag(args, "--redis-url").ok_or("--redis-url is missing")?;
    let port: u16 = flag(args, "--port").unwrap_or_else(|| "0".into()).parse()?;
    if let Some(ms) = flag(args, "--race-delay-ms") {
        let _ = RACE_DELAY.set(Duration::from_millis(ms.parse()?));
    }
    // Exit when the parent goes away (it holds our stdin; EOF = parent gone or done).
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let app = match VARIANTS.into_iter().find(|v| v.arg() == variant) {
            Some(
                v @ (Variant::Scs | Variant::ScsSigned | Variant::ScsHeader | Variant::ScsCache),
            ) => scs_app(&url, v).await?,
            Some(Variant::Ts) => ts_app(&url).await?,
            Some(Variant::Floor) => floor_app(&url).await?,
            Some(Variant::Ceiling) => ceiling_app(),
            None => return Err(format!("unknown variant {variant:?} ({})", names()).into()),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        println!("READY {port}");
        std::io::stdout().flush()?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// The variants' names, for messages.
pub fn names() -> String {
    VARIANTS.map(Variant::arg).join(", ")
}

/// The variants of a comma-separated list of names (`BENCH_VARIANTS`).
pub fn parse(list: &str) -> Result<Vec<Variant>> {
    let mut variants = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let v = VARIANTS.into_iter().find(|v| v.arg() == name);
        let v = v.ok_or_else(|| format!("BENCH_VARIANTS: unknown {name:?} ({})", names()))?;
        if !variants.contains(&v) {
            variants.push(v);
        }
    }
    if variants.is_empty() {
        return Err("BENCH_VARIANTS names no variant".into());
    }
    Ok(variants)
}

/// The handler work between the read and the write of `/race`, the same on every variant.
static RACE_DELAY: OnceLock<Duration> = OnceLock::new();

fn race_delay() -> Duration {
    RACE_DELAY
        .get()
        .copied()
        .unwrap_or(Duration::from_millis(5))
}

#[derive(Deserialize)]
struct Put {
    v: String,
}

#[derive(Deserialize)]
struct Race {
    k: String,
}

#[derive(Deserialize)]
struct Count {
    n: usize,
}

/// The race keys a session should hold after `/race?k=r0` … `/race?k=r{n-1}`.
pub fn race_key(i: usize) -> String {
    format!("r{i}")
}

/// The fred pool `tower_scs::RedisStore::from_url` builds (4 connections, its timeouts,
/// reconnect policy, retries and unresponsive-connection check), taken from a store built by it
/// so that B and C can never drift from A's client configuration.
pub async fn pool(url: &str) -> Result<Pool> {
    Ok(tower_scs::RedisStore::from_url(url).await?.client().clone())
}

// A: tower-scs.

/// The local cache's bound for `scs-cache`: far above the bench's sessions (one a user, plus
/// the race's), so that nothing is evicted and a miss is always a read after an invalidation.
const CACHE_ENTRIES: u64 = 100_000;

async fn scs_app(url: &str, variant: Variant) -> Result<Router> {
    use tower_scs::{Carrier, Error, LocalCache, RedisStore, Session, SessionLayer, SigningKeys};

    async fn put(session: Session, Query(q): Query<Put>) {
        session.insert("v", q.v);
    }
    async fn read(session: Session) -> Result<String, Error> {
        Ok(session.get::<String>("v").await?.unwrap_or_default())
    }
    async fn race(session: Session, Query(q): Query<Race>) -> Result<(), Error> {
        let _ = session.get::<String>("v").await?;
        tokio::time::sleep(race_delay()).await;
        session.insert(q.k, 1);
        Ok(())
    }
    async fn count(session: Session, Query(q): Query<Count>) -> Result<String, Error> {
        let mut found = 0;
        for i in 0..q.n {
            found += usize::from(session.contains(&race_key(i)).await?);
        }
        Ok(found.to_string())
    }

    let mut store = RedisStore::from_url(url).await?;
    if variant == Variant::ScsCache {
        store = store.with_local_cache(LocalCache::new(CACHE_ENTRIES));
        // Not READY before tracking is on: until then every load would go to Redis.
        if !store.local_cache_ready().await {
            return Err("the store has no local cache".into());
        }
    }
    let layer = match variant {
        Variant::ScsSigned => SessionLayer::new(store).signing_keys(SigningKeys::new([[7; 32]])?),
        Variant::ScsHeader => SessionLayer::new(store).carriers([Carrier::header(TOKEN_HEADER)]),
        _ => SessionLayer::new(store),
    };
    Ok(Router::new()
        .route("/put", get(put))
        .route("/get", get(read))
        .route("/race", get(race))
        .route("/count", get(count))
        .layer(layer.secure(false)))
}

// B: tower-sessions.

async fn ts_app(url: &str) -> Result<Router> {
    use tower_sessions::{SessionManagerLayer, session::Session};
    use tower_sessions_redis_store::RedisStore;

    fn fail(e: impl std::fmt::Display) -> (StatusCode, String) {
        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    async fn put(session: Session, Query(q): Query<Put>) -> Result<(), (StatusCode, String)> {
        session.insert("v", q.v).await.map_err(fail)
    }
    async fn read(session: Session) -> Result<String, (StatusCode, String)> {
        Ok(session
            .get::<String>("v")
            .await
            .map_err(fail)?
            .unwrap_or_default())
    }
    async fn race(session: Session, Query(q): Query<Race>) -> Result<(), (StatusCode, String)> {
        let _ = session.get::<String>("v").await.map_err(fail)?;
        tokio::time::sleep(race_delay()).await;
        session.insert(&q.k, 1).await.map_err(fail)
    }
    async fn count(
        session: Session,
        Query(q): Query<Count>,
    ) -> Result<String, (StatusCode, String)> {
        let mut found = 0;
        for i in 0..q.n {
            let value = session
                .get::<serde_json::Value>(&race_key(i))
                .await
                .map_err(fail)?;
            found += usize::from(value.is_some());
        }
        Ok(found.to_string())
    }

    let store = RedisStore::new(pool(url).await?);
    Ok(Router::new()
        .route("/put", get(put))
        .route("/get", get(read))
        .route("/race", get(race))
        .route("/count", get(count))
        .layer(SessionManagerLayer::new(store).with_secure(false)))
}

// C: the floor.

/// The floor's plain cookie.
pub const FLOOR_COOKIE: &str = "sid";

fn floor_sid(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == FLOOR_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// A new floor session id: the time, the process and a counter, in hex.
fn new_floor_sid() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}{:x}{n:x}", std::process::id())
}

/// The request's floor session id, or a new one (`true`).
fn floor_sid_or_new(headers: &HeaderMap) -> (String, bool) {
    match floor_sid(headers) {
        Some(sid) => (sid, false),
        None => (new_floor_sid(), true),
    }
}

/// The answer to a stored `/put`: the cookie, for a new id.
fn floor_stored(sid: &str, new: bool) -> Response {
    if !new {
        return ().into_response();
    }
    let cookie = format!("{FLOOR_COOKIE}={sid}; Path=/; HttpOnly");
    ([(header::SET_COOKIE, cookie)], ()).into_response()
}

async fn floor_app(url: &str) -> Result<Router> {
    async fn put(State(pool): State<Pool>, headers: HeaderMap, Query(q): Query<Put>) -> Response {
        let (sid, new) = floor_sid_or_new(&headers);
        let key = format!("floor:{sid}");
        // One command: the same expiry-carrying SET a session store would send.
        let set: Result<(), _> = pool
            .set(key, q.v, Some(Expiration::EX(86_400)), None, false)
            .await;
        match set {
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            Ok(()) => floor_stored(&sid, new),
        }
    }
    async fn read(State(pool): State<Pool>, headers: HeaderMap) -> Response {
        let Some(sid) = floor_sid(&headers) else {
            return ().into_response();
        };
        match pool.get::<Option<String>, _>(format!("floor:{sid}")).await {
            Ok(v) => v.unwrap_or_default().into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }

    Ok(Router::new()
        .route("/put", get(put))
        .route("/get", get(read))
        .with_state(pool(url).await?))
}

// D: the ceiling.

/// The floor's routes on a map in memory: the HTTP server, the cookie and the handlers with
/// nothing behind them.
fn ceiling_app() -> Router {
    type Map = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>;

    async fn put(State(map): State<Map>, headers: HeaderMap, Query(q): Query<Put>) -> Response {
        let (sid, new) = floor_sid_or_new(&headers);
        let answer = floor_stored(&sid, new);
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sid, q.v);
        answer
    }
    async fn read(State(map): State<Map>, headers: HeaderMap) -> Response {
        let Some(sid) = floor_sid(&headers) else {
            return ().into_response();
        };
        let map = map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&sid).cloned().unwrap_or_default().into_response()
    }

    Router::new()
        .route("/put", get(put))
        .route("/get", get(read))
        .with_state(Map::default())
}
