//! The SCS put/get example, as an axum server.
//!
//! ```sh
//! cargo run --example put_get                                   # MemoryStore
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example put_get  # RedisStore
//! ```
//!
//! Environment: `ADDR` (default `127.0.0.1:4000`), `REDIS_URL` (any URL fred accepts,
//! `redis-cluster://` included; without it the in-memory store is used), `LIFETIME_SECS`
//! (default 24 h), `IDLE_TIMEOUT_SECS` (default, or `0`: none). Both take seconds from 0.001
//! (the layer's 1 ms minimum) to 1e19, fractions allowed; any other value exits with a usage
//! message and code 2. The cookie's `Secure` flag is off because this serves plain http.
//!
//! Routes (all `GET`):
//! - `/put?message=X[&key=K]` stores X under K (default key `message`, default X
//!   `Hello from a session!`), empty body;
//! - `/get[?key=K]` returns the value, or an empty body;
//! - `/pop?key=K` returns the value and removes it;
//! - `/renew` renews the token, keeping the data; `/destroy` destroys the session;
//! - `/remember?on=true|false` sets remember-me;
//! - `/ping` returns `pong` without touching the session.

use std::{env, time::Duration};

use axum::{Router, extract::Query, routing::get};
use serde::Deserialize;
use tower_scs::{Error, MemoryStore, RedisStore, Session, SessionLayer};

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

/// Says why `name=value` is refused and how to run the example, then exits with code 2.
fn usage(name: &str, value: &str, zero_is_off: bool) -> ! {
    let off = if zero_is_off { ", or 0 for none" } else { "" };
    eprintln!("{name}={value:?} is not valid: expected seconds from 0.001 to {MAX_SECS:e}{off}");
    eprintln!(
        "usage: [ADDR=host:port] [REDIS_URL=url] [LIFETIME_SECS=secs] [IDLE_TIMEOUT_SECS=secs] \
         put_get"
    );
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let addr = env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:4000".into());
    // Checked before connecting to anything, so that a bad value fails at once.
    let lifetime = secs_from_env("LIFETIME_SECS", false);
    let idle_timeout = secs_from_env("IDLE_TIMEOUT_SECS", true);
    let layer = match env::var("REDIS_URL") {
        Ok(url) => match RedisStore::from_url(&url).await {
            Ok(store) => {
                println!(
                    "store: RedisStore (REDIS_URL), key prefix {}",
                    store.prefix()
                );
                SessionLayer::new(store)
            }
            Err(e) => {
                eprintln!("cannot use REDIS_URL: {e}");
                std::process::exit(1);
            }
        },
        Err(_) => {
            println!("store: MemoryStore (set REDIS_URL to use Redis)");
            SessionLayer::new(MemoryStore::new())
        }
    };
    let mut layer = layer.secure(false);
    if let Some(lifetime) = lifetime {
        layer = layer.lifetime(lifetime);
    }
    if let Some(idle) = idle_timeout {
        layer = layer.idle_timeout(idle);
    }
    let listener = match tokio::net::TcpListener::bind(&addr).await {
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
    if let Err(e) = axum::serve(listener, app(layer))
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
