//! The SCS put/get example, as an axum server.
//!
//! ```sh
//! cargo run --example put_get                                   # MemoryStore
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example put_get  # RedisStore
//! ```
//!
//! Environment:
//! - `ADDR` (default `127.0.0.1:4000`);
//! - `REDIS_URL` (any URL fred accepts, `redis-cluster://` included; without it the in-memory
//!   store is used), `rediss://` for TLS, with a username and password if the server wants them
//!   (`redis://user:password@host:port`);
//! - `REDIS_CA_FILE=<pem>` (`rediss://` only; unset by default: the system's roots): the CA
//!   that signed the Redis server's certificate, the only one trusted;
//! - `LIFETIME_SECS` (default 24 h) and `IDLE_TIMEOUT_SECS` (default, or `0`: none), in seconds
//!   from 0.001 (the layer's 1 ms minimum) to 1e19, fractions allowed;
//! - `SESSION_HEADER=<name>` (unset by default): the token travels in this request header
//!   instead of the cookie, and comes back in the response header of the same name (empty after
//!   `/destroy`), on the same routes. The name must be a header name a token can travel in: not
//!   one such as `Cookie`, `Authorization` or `Host`, which mean something else to HTTP;
//! - `SESSION_SIGNING_KEYS=<key>[,<key>…]` (unset by default: unsigned tokens): the token on the
//!   wire is signed, `<token>.<tag>` (HMAC-SHA256), with the first key, and verified with all
//!   of them: `new,old` rotates keys without logging anyone out, a token signed with `old`
//!   coming back signed with `new`. Each key is base64, standard or URL-safe alphabet, padding
//!   optional, of at least 32 bytes once decoded (`head -c 32 /dev/urandom | base64`);
//! - `LOCAL_CACHE=<max entries>` (Redis only; unset by default): sessions are also kept in this
//!   process's memory, up to that many, and reads of them send no Redis command; Redis tells
//!   every process about each change (`CLIENT TRACKING`), so another process's write, renew or
//!   destroy is seen (see `LocalCache`).
//! - `METRICS=1` (unset, or `0`, by default: off): the layer's metrics (see `tower_scs::metrics`)
//!   in the Prometheus text format at `GET /metrics`, which is not behind the session layer.
//!
//! Any other value exits with a message saying which variable is wrong, the usage, and code 2
//! (a bad signing key is named by its position, never shown). The cookie's `Secure` flag is off
//! because this serves plain http.
//!
//! Routes (all `GET`):
//! - `/put?message=X[&key=K]` stores X under K (default key `message`, default X
//!   `Hello from a session!`), empty body;
//! - `/get[?key=K]` returns the value, or an empty body;
//! - `/pop?key=K` returns the value and removes it;
//! - `/renew` renews the token, keeping the data; `/destroy` destroys the session;
//! - `/remember?on=true|false` sets remember-me;
//! - `/ping` returns `pong` without touching the session;
//! - `/ws` upgrades to a WebSocket on the session the upgrade request carried (its cookie, or
//!   its `SESSION_HEADER` header). Each text message gets one text message back:
//!   - `put K V` stores V (the rest of the message, spaces included) under K and answers `ok`
//!     once it is stored: the socket commits at once with `Session::commit`, since once the
//!     upgrade's response has left nothing else stores it. While the socket stays open, an
//!     HTTP `/get?key=K` with the same token sees V;
//!   - `get K` answers the value, or an empty message when there is none. It reads the session
//!     as the socket last loaded it: on its first read, and afresh after each `put`.
//!
//!   The other answers all start with `error: `, and none holds a token:
//!   - `error: usage: put K V | get K` for any other message, a binary one included;
//!   - `error: no session, …` for a `put` on a socket whose upgrade carried no live session
//!     (start one with `/put` first): a session the socket created would have a token that no
//!     client knows;
//!   - `error: the session has ended, …` for a `put` once the session was destroyed, renewed or
//!     expired while the socket was open: nothing is stored, and the socket has no session
//!     from then on;
//!   - `error: session too large: …` for a key or a session over the layer's limits: nothing
//!     is stored;
//!   - `error: session store unavailable` when the store fails, the write then stored or not
//!     (`error: session error` for a stored record the layer cannot read). The socket stays
//!     open, and its next message loads the session afresh.
//!
//!   A message never closes the socket; the client does.

use std::{env, time::Duration};

use axum::{
    Router,
    extract::{
        Query,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    response::Response,
    routing::get,
};
use serde::Deserialize;
use tower_scs::fred::{
    prelude::Config,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, pem::PemObject},
    },
    types::config::TlsConnector,
};
use tower_scs::{
    Carrier, Error, LocalCache, MIN_KEY_BYTES, MemoryStore, RedisStore, Session, SessionLayer,
    SigningKeys,
};

#[derive(Deserialize)]
struct Put {
    message: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize)]
struct Key {
    key: Option<String>,
}

#[derive(Deserialize)]
struct Remember {
    on: bool,
}

const DEFAULT_KEY: &str = "message";

async fn put(session: Session, Query(q): Query<Put>) {
    let message = q.message.unwrap_or_else(|| "Hello from a session!".into());
    session.insert(q.key.unwrap_or_else(|| DEFAULT_KEY.into()), message);
}

/// A stored value as text: strings as they are, anything else as JSON.
fn text(value: Option<serde_json::Value>) -> String {
    match value {
        None => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

async fn get_value(session: Session, Query(q): Query<Key>) -> Result<String, Error> {
    let key = q.key.as_deref().unwrap_or(DEFAULT_KEY);
    Ok(text(session.get(key).await?))
}

async fn pop(session: Session, Query(q): Query<Key>) -> Result<String, Error> {
    let key = q.key.as_deref().unwrap_or(DEFAULT_KEY);
    Ok(text(session.pop(key).await?))
}

async fn renew(session: Session) -> Result<(), Error> {
    session.renew_token().await
}

async fn destroy(session: Session) {
    session.destroy();
}

async fn remember(session: Session, Query(q): Query<Remember>) {
    session.remember_me(q.on);
}

async fn ping() -> &'static str {
    "pong"
}

/// `/ws`: the session is loaded here, in the request, so that a failing store is the layer's
/// error response rather than a socket that cannot work; then the socket takes it over.
async fn ws(upgrade: WebSocketUpgrade, session: Session) -> Result<Response, Error> {
    let token = session.token().await?;
    Ok(upgrade.on_upgrade(move |socket| talk(socket, session, token)))
}

/// Answers each message of `socket` on `session`, whose token, while it has a live one, is
/// `token` (kept to tell when the session has ended; never sent).
async fn talk(mut socket: WebSocket, session: Session, mut token: Option<String>) {
    while let Some(Ok(message)) = socket.recv().await {
        let answer = match message {
            Message::Text(line) => answer(&session, &mut token, line.as_str()).await,
            Message::Binary(_) => USAGE.into(),
            Message::Close(_) => break,
            // Pings are answered by axum.
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(Message::text(answer)).await.is_err() {
            break;
        }
    }
}

/// The answer to a message that is not `put K V` or `get K`.
const USAGE: &str = "error: usage: put K V | get K";

async fn answer(session: &Session, token: &mut Option<String>, line: &str) -> String {
    match Command::parse(line) {
        Some(Command::Put { key, value }) => put_now(session, token, key, value).await,
        Some(Command::Get { key }) => session.get(key).await.map_or_else(failed, text),
        None => USAGE.into(),
    }
}

/// A text message of the `/ws` protocol.
enum Command<'a> {
    /// `put K V`: V is the rest of the message, spaces included.
    Put { key: &'a str, value: &'a str },
    /// `get K`.
    Get { key: &'a str },
}

impl<'a> Command<'a> {
    fn parse(message: &'a str) -> Option<Self> {
        let (verb, args) = message.split_once(' ')?;
        match verb {
            "put" => {
                let (key, value) = args.split_once(' ')?;
                (!key.is_empty()).then_some(Command::Put { key, value })
            }
            "get" if !args.is_empty() && !args.contains(' ') => Some(Command::Get { key: args }),
            _ => None,
        }
    }
}

/// Stores `value` under `key` at once: after the upgrade's response, only `Session::commit`
/// stores anything.
async fn put_now(session: &Session, token: &mut Option<String>, key: &str, value: &str) -> String {
    if token.is_none() {
        return "error: no session, the upgrade request carried none: start one with /put".into();
    }
    if let Err(e) = session.try_insert(key, value) {
        return failed(e);
    }
    match session.commit().await {
        Ok(Some(_)) => "ok".into(),
        // The session ended while the socket was open (destroyed, renewed, expired): after the
        // response, a commit never moves the write into a new session nobody knows of.
        Ok(None) => {
            *token = None;
            "error: the session has ended, reconnect with a live session".into()
        }
        Err(e) => failed(e),
    }
}

/// The answer for a session error (errors never hold a token, but the store's own words are
/// for the log, not the client).
fn failed(e: Error) -> String {
    eprintln!("/ws: {e}");
    match e {
        Error::Store(_) | Error::Timeout(_) => "error: session store unavailable".into(),
        Error::TooLarge(_) => format!("error: {e}"),
        _ => "error: session error".into(),
    }
}

/// The example's routes behind `layer`.
pub fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/put", get(put))
        .route("/get", get(get_value))
        .route("/pop", get(pop))
        .route("/renew", get(renew))
        .route("/destroy", get(destroy))
        .route("/remember", get(remember))
        .route("/ping", get(ping))
        .route("/ws", get(ws))
        .layer(layer)
}

/// The most seconds `LIFETIME_SECS` and `IDLE_TIMEOUT_SECS` take; a `Duration` holds up to
/// 1.8e19, and anything past the year 9999 counts as reaching it anyway.
const MAX_SECS: f64 = 1e19;

/// The duration in seconds that the environment variable `name` holds; `None` when it is unset,
/// or when it is `0` and `zero_is_off`. Exits with a usage message unless it is a number from
/// 0.001 (the layer's 1 ms minimum) to [`MAX_SECS`].
fn secs_from_env(name: &str, zero_is_off: bool) -> Option<Duration> {
    let value = match env::var(name) {
        Ok(value) => value,
        Err(env::VarError::NotPresent) => return None,
        Err(env::VarError::NotUnicode(value)) => usage(name, &value.to_string_lossy(), zero_is_off),
    };
    let secs = value.parse::<f64>().ok();
    if zero_is_off && secs == Some(0.0) {
        return None;
    }
    match secs.filter(|secs| (0.001..=MAX_SECS).contains(secs)) {
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => usage(name, &value, zero_is_off),
    }
}

/// Says why `name=value` is refused as a duration, and how to run the example; exits with 2.
fn usage(name: &str, value: &str, zero_is_off: bool) -> ! {
    let off = if zero_is_off { ", or 0 for none" } else { "" };
    refuse(&format!(
        "{name}={value:?} is not valid: expected seconds from 0.001 to {MAX_SECS:e}{off}"
    ));
}

/// The token's carrier that `SESSION_HEADER` names, if it is set; a name `Carrier` refuses is
/// the usage message.
fn header_from_env() -> Option<(String, Carrier)> {
    let name = match env::var("SESSION_HEADER") {
        Ok(name) => name,
        Err(env::VarError::NotPresent) => return None,
        Err(env::VarError::NotUnicode(name)) => name.to_string_lossy().into_owned(),
    };
    let carrier = Carrier::try_header(&name).ok().or_else(|| {
        refuse(&format!(
            "SESSION_HEADER={name:?} is not valid: expected a header name a token can travel \
             in, not one such as Cookie, Authorization or Host"
        ))
    });
    carrier.map(|carrier| (name, carrier))
}

/// The keys `SESSION_SIGNING_KEYS` lists, if it is set. A refusal names the key by its
/// position, never its value.
fn signing_keys_from_env() -> Option<SigningKeys> {
    const NAME: &str = "SESSION_SIGNING_KEYS";
    let keys = match env::var(NAME) {
        Ok(keys) => keys,
        Err(env::VarError::NotPresent) => return None,
        Err(env::VarError::NotUnicode(_)) => refuse(&format!("{NAME} is not valid: not UTF-8")),
    };
    match SigningKeys::from_base64(keys.split(',')) {
        Ok(keys) => Some(keys),
        Err(Error::Config(why)) => refuse(&format!(
            "{NAME} is not valid: {why} (each key: base64, standard or URL-safe alphabet, \
             padding optional, at least {MIN_KEY_BYTES} bytes decoded)"
        )),
        Err(e) => refuse(&format!("{NAME} is not valid: {e}")),
    }
}

/// The local cache `LOCAL_CACHE` asks for, if it is set: a number of sessions from 1.
fn cache_from_env() -> Option<LocalCache> {
    let value = env::var("LOCAL_CACHE").ok()?;
    match value.parse::<u64>() {
        Ok(entries) if entries > 0 => Some(LocalCache::new(entries)),
        _ => refuse(&format!(
            "LOCAL_CACHE={value:?} is not valid: expected a number of sessions from 1"
        )),
    }
}

/// With `METRICS=1`, a Prometheus recorder for the process, and `app` with `/metrics` serving
/// its text (outside the session layer, so scraping never touches a session).
fn with_metrics(app: Router) -> Router {
    match env::var("METRICS").as_deref() {
        Err(_) | Ok("0") => return app,
        Ok("1") => {}
        Ok(other) => refuse(&format!(
            "METRICS={other:?} is not valid: expected 1, or 0 for off"
        )),
    }
    let handle = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(e) => refuse(&format!("METRICS=1: cannot install the recorder: {e}")),
    };
    tower_scs::metrics::describe();
    println!("metrics: Prometheus text at /metrics (METRICS)");
    let text = [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    app.route(
        "/metrics",
        get(move || async move { (text, handle.render()) }),
    )
}

/// Says why the example cannot run with its environment, and how to run it; exits with code 2.
fn refuse(why: &str) -> ! {
    eprintln!("{why}");
    eprintln!(
        "usage: [ADDR=host:port] [REDIS_URL=url [REDIS_CA_FILE=pem]] [LIFETIME_SECS=secs] \
         [IDLE_TIMEOUT_SECS=secs] [SESSION_HEADER=name] [SESSION_SIGNING_KEYS=key[,key...]] \
         [LOCAL_CACHE=entries] [METRICS=1] put_get"
    );
    std::process::exit(2);
}

/// A layer on Redis when `REDIS_URL` is set, else in memory; exits with code 1 when
/// `REDIS_URL` is not a Redis URL.
async fn store_layer() -> SessionLayer {
    let cache = cache_from_env();
    let Ok(url) = env::var("REDIS_URL") else {
        if cache.is_some() {
            refuse("LOCAL_CACHE is for the Redis store: set REDIS_URL too");
        }
        println!("store: MemoryStore (set REDIS_URL to use Redis)");
        return SessionLayer::new(MemoryStore::new());
    };
    match RedisStore::from_config(redis_config(&url)).await {
        Ok(mut store) => {
            let prefix = store.prefix();
            println!("store: RedisStore (REDIS_URL), key prefix {prefix}");
            // The store dials lazily: the server starts during a Redis outage too.
            if let Err(e) = store.ready().await {
                eprintln!("Redis does not answer yet ({e}): serving; sessions fail until it does");
            }
            if let Some(cache) = cache {
                store = store.with_local_cache(cache);
                let ready = tokio::time::timeout(Duration::from_secs(2), store.local_cache_ready());
                let state = match ready.await {
                    Ok(_) => "tracking on",
                    Err(_) => "tracking not on yet: reads go to Redis until it is",
                };
                let most = cache.max_entries();
                println!("local cache: up to {most} sessions (LOCAL_CACHE), {state}");
            }
            SessionLayer::new(store)
        }
        Err(e) => {
            eprintln!("cannot use REDIS_URL: {e}");
            std::process::exit(1);
        }
    }
}

/// fred's config for `REDIS_URL`, trusting only the CA in `REDIS_CA_FILE` when that is set;
/// exits with code 1 on a URL fred does not take, 2 on a CA file that cannot be used.
fn redis_config(url: &str) -> Config {
    let mut config = Config::from_url(url).unwrap_or_else(|e| {
        eprintln!("cannot use REDIS_URL: {e}");
        std::process::exit(1);
    });
    let Ok(ca) = env::var("REDIS_CA_FILE") else {
        return config;
    };
    if config.tls.is_none() {
        refuse("REDIS_CA_FILE is for a TLS Redis: REDIS_URL must be rediss://");
    }
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&ca).and_then(Iterator::collect::<Result<Vec<_>, _>>);
    match certs {
        Ok(certs) if !certs.is_empty() => {
            for cert in certs {
                if let Err(e) = roots.add(cert) {
                    refuse(&format!("REDIS_CA_FILE={ca}: not a CA certificate: {e}"));
                }
            }
        }
        Ok(_) => refuse(&format!("REDIS_CA_FILE={ca}: no PEM certificate in it")),
        Err(e) => refuse(&format!("REDIS_CA_FILE={ca}: {e}")),
    }
    let tls = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.tls = Some(TlsConnector::from(tls).into());
    config
}

#[tokio::main]
async fn main() {
    let addr = env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:4000".into());
    // Checked before connecting to anything, so that a bad value fails at once.
    let lifetime = secs_from_env("LIFETIME_SECS", false);
    let idle_timeout = secs_from_env("IDLE_TIMEOUT_SECS", true);
    let header = header_from_env();
    let signing_keys = signing_keys_from_env();
    let mut layer = store_layer().await.secure(false);
    if let Some(lifetime) = lifetime {
        layer = layer.lifetime(lifetime);
    }
    if let Some(idle) = idle_timeout {
        layer = layer.idle_timeout(idle);
    }
    if let Some((name, carrier)) = header {
        println!("token: in the header {name} (SESSION_HEADER), not the cookie");
        layer = layer.carriers([carrier]);
    }
    if let Some(keys) = signing_keys {
        println!(
            "token: signed, {} key(s) (SESSION_SIGNING_KEYS)",
            keys.len()
        );
        layer = layer.signing_keys(keys);
    }
    serve(&addr, with_metrics(app(layer))).await;
}

/// Serves `app` on `addr` until Ctrl-C; exits with code 1 when it cannot.
async fn serve(addr: &str, app: Router) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on http://{addr}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
