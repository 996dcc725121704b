//! The SCS put/get example, as an axum server.
//!
//! ```sh
//! cargo run --example put_get                                   # MemoryStore
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example put_get  # RedisStore
//! ```
//!
//! Environment: `ADDR` (default `127.0.0.1:4000`), `REDIS_URL` (any URL fred accepts,
//! `redis-cluster://` included; without it the in-memory store is used), `LIFETIME_SECS`,
//! `IDLE_TIMEOUT_SECS`. The cookie's `Secure` flag is off because this serves plain http.
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

fn secs_from_env(name: &str) -> Option<Duration> {
    let value = env::var(name).ok()?;
    match value.parse::<f64>() {
        Ok(secs) if secs >= 0.0 => Some(Duration::from_secs_f64(secs)),
        _ => {
            eprintln!("{name}={value:?} is not a number of seconds");
            std::process::exit(2);
        }
    }
}

#[tokio::main]
async fn main() {
    let addr = env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:4000".into());
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
    if let Some(lifetime) = secs_from_env("LIFETIME_SECS") {
        layer = layer.lifetime(lifetime);
    }
    if let Some(idle) = secs_from_env("IDLE_TIMEOUT_SECS") {
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
