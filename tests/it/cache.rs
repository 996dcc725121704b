//! The local cache (`LocalCache`) in one process: a cached read sends no command; every kind of
//! change made elsewhere (a write, renew, destroy, log out everywhere, expiry in Redis, a
//! flush) drops the entry; the store's own writes are read back at once; a lost connection
//! drops the cache until tracking is back; a cached record is never served past its expiry, and
//! an idle timeout still slides.
//!
//! Another process is played by a second `RedisStore` with its own connections. Its changes
//! reach the cache as Redis's invalidations, asynchronously: the tests wait (at most 5 s) until
//! the entry is gone, then check what the next read sees. The two-process tests
//! (`example_cache`) check, without waiting, that a read right after a write is never stale.

use std::time::{Duration, Instant};

use axum::Router;
use tower_scs::{RedisStore, SessionLayer};

use crate::harness::{
    Client, Inspector, Monitor, NONE, RedisServer, app, cached, connected, sleep_ms,
};

/// A store on `server` with a local cache whose tracking is on.
async fn cached_store(server: &RedisServer) -> RedisStore {
    let store = RedisStore::from_url(&server.url()).await.expect("from_url");
    cached(store, 1_000).await
}

/// The test app over `store`, configured by `configure`.
fn app_over(store: &RedisStore, configure: impl FnOnce(SessionLayer) -> SessionLayer) -> Router {
    app(configure(SessionLayer::new(store.clone())))
}

/// Waits until `store`'s cache holds `n` sessions, for at most 5 s.
async fn wait_cached(store: &RedisStore, n: u64) {
    let started = Instant::now();
    while store.local_cache_len() != Some(n) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the cache holds {:?} sessions, not {n}, after 5 s",
            store.local_cache_len()
        );
        sleep_ms(5).await;
    }
}

/// The commands clients sent since the last call, the inspector's marker left out.
async fn sent(monitor: &mut Monitor, inspector: &Inspector) -> Vec<String> {
    monitor.client_commands(inspector).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_read_sends_no_command_and_a_read_after_a_change_sends_one() {
    let server = RedisServer::start().await;
    let (store, other) = (cached_store(&server).await, cached_store(&server).await);
    let (app, elsewhere) = (app_over(&store, |l| l), app_over(&other, |l| l));
    let inspector = server.inspector();
    let mut monitor = Monitor::start(&server).await;
    let mut alice = Client::new(&app);
    alice.get("/put?key=a&value=1").await;
    sent(&mut monitor, &inspector).await;

    // The write left the record it wrote in the cache.
    assert_eq!(alice.get("/get?key=a").await.body, "1");
    assert_eq!(sent(&mut monitor, &inspector).await, Vec::<String>::new());
    for _ in 0..3 {
        assert_eq!(alice.get("/get?key=a").await.body, "1");
    }
    assert_eq!(sent(&mut monitor, &inspector).await, Vec::<String>::new());

    let token = alice.token.clone().unwrap();
    Client::with_token(&elsewhere, &token)
        .get("/put?key=a&value=2")
        .await;
    wait_cached(&store, 0).await;
    sent(&mut monitor, &inspector).await;
    assert_eq!(alice.get("/get?key=a").await.body, "2");
    assert_eq!(sent(&mut monitor, &inspector).await, ["hgetall"]);
    assert_eq!(alice.get("/get?key=a").await.body, "2");
    assert_eq!(sent(&mut monitor, &inspector).await, Vec::<String>::new());
}

/// A session cached by `store`, with `a=1`, and its token.
async fn cached_session(app: &Router, store: &RedisStore) -> (Client, String) {
    let mut client = Client::new(app);
    client.get("/put?key=a&value=1").await;
    assert_eq!(client.get("/get?key=a").await.body, "1");
    wait_cached(store, 1).await;
    let token = client.token.clone().unwrap();
    (client, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_made_elsewhere_drops_the_entry() {
    let server = RedisServer::start().await;
    let (store, other) = (cached_store(&server).await, cached_store(&server).await);
    let app = app_over(&store, |l| l);
    let elsewhere = app_over(&other, |l| l);
    let inspector = server.inspector();
    let key = |token: &str| format!("{}{token}", RedisStore::DEFAULT_PREFIX);

    // Renew elsewhere: the old token is dead here.
    let (mut here, token) = cached_session(&app, &store).await;
    let mut there = Client::with_token(&elsewhere, &token);
    there.get("/renew").await;
    wait_cached(&store, 0).await;
    assert_eq!(here.get("/get?key=a").await.body, NONE);

    // Destroy elsewhere.
    let (mut here, token) = cached_session(&app, &store).await;
    Client::with_token(&elsewhere, &token).get("/destroy").await;
    wait_cached(&store, 0).await;
    assert_eq!(here.get("/get?key=a").await.body, NONE);

    // Log out everywhere, elsewhere.
    let mut here = Client::new(&app);
    here.get("/set_owner?value=ann").await;
    here.get("/put?key=a&value=1").await;
    assert_eq!(here.get("/get?key=a").await.body, "1");
    wait_cached(&store, 1).await;
    Client::new(&elsewhere)
        .get("/destroy_owner?value=ann")
        .await;
    wait_cached(&store, 0).await;
    assert_eq!(here.get("/get?key=a").await.body, NONE);

    // Expiry inside Redis, no request touching the session (the PEXPIRE itself is a change:
    // the session is read, and cached, again after it).
    let (mut here, token) = cached_session(&app, &store).await;
    inspector.command("PEXPIRE", &[&key(&token), "1500"]).await;
    wait_cached(&store, 0).await;
    assert_eq!(here.get("/get?key=a").await.body, "1");
    wait_cached(&store, 1).await;
    wait_cached(&store, 0).await;
    assert!(!inspector.exists(&key(&token)).await);
    assert_eq!(here.get("/get?key=a").await.body, NONE);

    // A flush.
    let (mut here, _) = cached_session(&app, &store).await;
    inspector.ok("FLUSHDB", &[]).await;
    wait_cached(&store, 0).await;
    assert_eq!(here.get("/get?key=a").await.body, NONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_are_read_back_at_once() {
    let server = RedisServer::start().await;
    let store = cached_store(&server).await;
    let app = app_over(&store, |l| l);
    let mut client = Client::new(&app);
    for i in 0..500 {
        client.get(&format!("/put?key=a&value={i}")).await;
        assert_eq!(client.get("/get?key=a").await.body, i.to_string());
        assert_eq!(client.get("/get?key=a").await.body, i.to_string());
    }
    let old = client.token.clone().unwrap();
    client.get("/renew").await;
    assert_eq!(
        Client::with_token(&app, &old).get("/get?key=a").await.body,
        NONE
    );
    assert_eq!(client.get("/get?key=a").await.body, "499");
    client.get("/destroy").await;
    assert_eq!(
        Client::with_token(&app, &old).get("/get?key=a").await.body,
        NONE
    );
}

/// Tracking's subscriber connection is killed: nothing cached is served (an invalidation sent
/// meanwhile is lost), the cache is dropped, and tracking comes back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_drops_the_cache_until_tracking_is_back() {
    let server = RedisServer::start().await;
    let store = cached_store(&server).await;
    let app = app_over(&store, |l| l);
    let inspector = server.inspector();
    let (mut here, token) = cached_session(&app, &store).await;
    inspector
        .command("CLIENT", &["KILL", "TYPE", "pubsub"])
        .await;
    wait_cached(&store, 0).await;
    // Changed while no invalidation can reach the cache.
    let key = format!("{}{token}", RedisStore::DEFAULT_PREFIX);
    let other = connected(RedisStore::from_url(&server.url()).await.unwrap()).await;
    let other = app_over(&other, |l| l);
    Client::with_token(&other, &token)
        .get("/put?key=a&value=2")
        .await;
    assert!(inspector.exists(&key).await);
    assert_eq!(here.get("/get?key=a").await.body, "2");

    tokio::time::timeout(Duration::from_secs(5), store.local_cache_ready())
        .await
        .expect("tracking back within 5 s");
    let mut monitor = Monitor::start(&server).await;
    assert_eq!(here.get("/get?key=a").await.body, "2");
    wait_cached(&store, 1).await;
    sent(&mut monitor, &inspector).await;
    assert_eq!(here.get("/get?key=a").await.body, "2");
    assert_eq!(sent(&mut monitor, &inspector).await, Vec::<String>::new());

    // Every data connection killed, and Redis restarted (it keeps nothing): no stale session.
    inspector
        .command("CLIENT", &["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .await;
    assert_eq!(here.get("/get?key=a").await.body, "2");
    let mut server = server;
    server.restart().await;
    assert_eq!(here.get("/get?key=a").await.body, NONE);
}

/// With Redis's expiry paused (`CLIENT PAUSE WRITE` also stops expiring keys), no invalidation
/// comes when the session's lifetime ends: the cache itself must not serve it past its expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_record_is_never_served_past_its_expiry() {
    let server = RedisServer::start().await;
    let store = cached_store(&server).await;
    let app = app_over(&store, |l| l.lifetime(Duration::from_millis(400)));
    let (mut here, _) = cached_session(&app, &store).await;
    server
        .inspector()
        .ok("CLIENT", &["PAUSE", "3000", "WRITE"])
        .await;
    sleep_ms(500).await;
    assert_eq!(here.get("/get?key=a").await.body, NONE);
    server.inspector().ok("CLIENT", &["UNPAUSE"]).await;
}

/// Idle timeout 2 s: a read served from the cache still touches once less than the idle
/// timeout remains by a tenth (the record it knows says so), and the next read is served from
/// what the touch wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_read_still_slides_the_idle_timeout() {
    let server = RedisServer::start().await;
    let store = cached_store(&server).await;
    let app = app_over(&store, |l| l.idle_timeout(Duration::from_secs(2)));
    let inspector = server.inspector();
    let (mut here, token) = cached_session(&app, &store).await;
    let key = format!("{}{token}", RedisStore::DEFAULT_PREFIX);
    let mut monitor = Monitor::start(&server).await;
    sent(&mut monitor, &inspector).await;
    assert_eq!(here.get("/get?key=a").await.body, "1");
    assert_eq!(sent(&mut monitor, &inspector).await, Vec::<String>::new());
    sleep_ms(300).await;
    assert_eq!(here.get("/get?key=a").await.body, "1");
    // The touch's script, and the read of what it wrote (the entry kept below).
    assert_eq!(sent(&mut monitor, &inspector).await, ["evalsha", "hgetall"]);
    let after = inspector.pttl(&key).await;
    assert!(after > 1_900, "the touch slid the expiry: {after}");
    assert_eq!(here.get("/get?key=a").await.body, "1");
    // The touch left the record it wrote, with the slid expiry, in the cache: no second touch.
    assert_eq!(sent(&mut monitor, &inspector).await, ["pttl"]);
}
