//! `compare --memory`: Redis memory per session. On the bench's private Redis (flushed between
//! variants), `BENCH_SESSIONS` (50,000) sessions of one value each are created through each
//! layer, in process, after a warm-up of [`WARM_UP`] sessions flushed again, and `used_memory`'s
//! growth divided by the sessions is reported: tower-scs without and with an owner (each session
//! its own user's, so each has an owner index of one), tower-scs with text keys (`with_text_keys`: the token's 43 characters instead of its 32
//! bytes, so a 55-byte key in jemalloc's 64-byte class instead of a 44-byte one in the 48-byte
//! class), and tower-sessions.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Router, body::Body, http::Request, routing::get};
use tower::ServiceExt;

use crate::{Result, env_num, redis::Redis, servers::pool};

/// The value every session holds, under the key `v`.
const VALUE: &str = "hello, session";

/// Sessions created and flushed before each variant's measurement.
const WARM_UP: usize = 1_000;

pub async fn memory_per_session(redis: &Redis) -> Result<()> {
    let sessions: usize = env_num("BENCH_SESSIONS", 50_000)?;
    println!("\n### Redis memory per session ({sessions} sessions of one value, `{VALUE}`)\n");
    println!("| variant | used_memory growth | bytes per session |");
    println!("|---|--:|--:|");
    for (label, app) in [
        ("tower-scs", scs(redis, false, false).await?),
        (
            "tower-scs, each with its own owner",
            scs(redis, true, false).await?,
        ),
        (
            "tower-scs, text keys (`with_text_keys`, not the default)",
            scs(redis, false, true).await?,
        ),
        ("tower-sessions 0.14 + redis-store 0.16", ts(redis).await?),
    ] {
        // A warm-up, so that what Redis allocates once (the connections' buffers, the script) is
        // not charged to the sessions of whichever variant runs first.
        create(&app, WARM_UP).await?;
        redis.flushall().await?;
        let before = redis.used_memory().await?;
        create(&app, sessions).await?;
        let grown = redis.used_memory().await?.saturating_sub(before);
        println!(
            "| {label} | {grown} | {:.0} |",
            grown as f64 / sessions as f64
        );
    }
    Ok(())
}

/// `sessions` new sessions, each by one request to `/put` without a cookie.
async fn create(app: &Router, sessions: usize) -> Result<()> {
    for _ in 0..sessions {
        let req = Request::get("/put").body(Body::empty())?;
        let res = app.clone().oneshot(req).await?;
        if !res.status().is_success() {
            return Err(format!("/put answered {}", res.status()).into());
        }
    }
    Ok(())
}

async fn scs(redis: &Redis, owner: bool, text_keys: bool) -> Result<Router> {
    use tower_scs::{RedisStore, Session, SessionLayer};
    let mut store = RedisStore::from_url(&redis.url()).await?;
    if text_keys {
        store = store.with_text_keys();
    }
    // Each session of its own user: an owner index (a small sorted set) per session.
    let users = Arc::new(AtomicUsize::new(0));
    let put = move |session: Session| async move {
        session.insert("v", VALUE);
        if owner {
            session.set_owner(format!("user:{}", users.fetch_add(1, Ordering::Relaxed)));
        }
    };
    Ok(Router::new()
        .route("/put", get(put))
        .layer(SessionLayer::new(store)))
}

async fn ts(redis: &Redis) -> Result<Router> {
    use tower_sessions::{SessionManagerLayer, session::Session};
    use tower_sessions_redis_store::RedisStore;
    let put = |session: Session| async move {
        session.insert("v", VALUE).await.map_err(|e| e.to_string())
    };
    let store = RedisStore::new(pool(&redis.url()).await?);
    Ok(Router::new()
        .route("/put", get(put))
        .layer(SessionManagerLayer::new(store).with_secure(false)))
}
