//! No lost updates, round trips, and idle timeout bounds (both stores, through the real layer).

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::harness::{
    Backend, Client, Gate, NONE, READ_OF_OWN_WRITE, assert_calls, lost_concurrent_writes, monitor,
    overlapping_writes, sleep_ms,
};

crate::both_stores!(
    fifty_sessions_of_eight_concurrent_writers_lose_nothing,
    concurrent_writes_of_one_key_leave_one_of_them,
    renew_racing_with_a_write_never_revives_the_old_token,
    renew_and_destroy_round_trips,
    idle_reads_cost_one_load_each,
    idle_timeout_bounds_hold,
);

const SESSIONS: usize = 50;
const WRITERS: usize = 8;

/// 50 sessions × 8 concurrent requests, each loading the session, pausing while the others are
/// in flight, then writing its own key: all 400 writes must survive (tower-sessions loses about
/// two thirds of them, SCS more).
async fn fifty_sessions_of_eight_concurrent_writers_lose_nothing(backend: Backend) {
    let app = backend.app(|l| l).await;
    let lost = lost_concurrent_writes(&app, SESSIONS, WRITERS).await;
    assert_eq!(lost, 0, "{lost} of {} writes lost", SESSIONS * WRITERS);
}

/// Writers of the same key, all loaded before any writes: the last commit wins, and the record
/// stays whole and readable.
async fn concurrent_writes_of_one_key_leave_one_of_them(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=other&value=kept").await;
    let token = client.token.clone().unwrap();
    let writes: Vec<(String, String)> = (0..WRITERS)
        .map(|w| ("same".into(), format!("w{w}")))
        .collect();
    overlapping_writes(&app, &token, &writes).await;
    let value = client.get("/get?key=same").await.body;
    assert!(
        (0..WRITERS).any(|w| value == format!("w{w}")),
        "unexpected value {value:?}"
    );
    assert_eq!(client.get("/keys").await.body, "other,same");
    assert_eq!(client.get("/get?key=other").await.body, "kept");
}

/// A request that loaded the session before a renew and commits after it: its write must not
/// bring the old token back; the renewed session keeps the data it had.
async fn renew_racing_with_a_write_never_revives_the_old_token(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let old = client.token.clone().unwrap();
    let mut slow = Client::with_token(&app, &old);
    let gate = Gate::new();
    let uri = format!("/read_put?key=b&value=2&gate={}", gate.name());
    let writing = tokio::spawn(async move {
        let res = slow.get(&uri).await;
        (res, slow)
    });
    gate.arrived(1).await; // loaded
    let res = client.get("/renew").await;
    assert_eq!(res.status, StatusCode::OK);
    let renewed = client.token.clone().unwrap();
    assert_ne!(renewed, old);
    gate.open();
    let (res, mut slow) = writing.await.unwrap();
    assert_eq!(res.status, StatusCode::OK);
    assert!(!backend.stored(&old).await, "the old token came back");
    assert_ne!(slow.token.as_deref(), Some(old.as_str()));
    assert_ne!(slow.token.as_deref(), Some(renewed.as_str()));
    assert_eq!(slow.get("/keys").await.body, "b");
    assert_eq!(client.get("/keys").await.body, "a");
    // The old token now loads nothing.
    assert_eq!(Client::with_token(&app, &old).get("/keys").await.body, "");
}

/// Destroy without a read is one delete; renew is a load, a create and a delete (Redis: HGETALL,
/// then one EVALSHA each for the commit and the delete).
async fn renew_and_destroy_round_trips(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let mut warm = Client::new(&app);
    warm.get("/put?key=w&value=w").await;
    warm.get("/renew").await; // loads the commit, replace and delete scripts into Redis
    warm.get("/destroy").await;
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();
    client.get("/renew").await;
    let expected = [READ_OF_OWN_WRITE, "evalsha", "evalsha"];
    assert_calls(&backend, &mut monitor, &mut before, (1, 1, 1), &expected).await;
    client.get("/destroy").await;
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 1), &["evalsha"]).await;
}

/// With an idle timeout, read-only requests cost one load each (Redis: one HGETALL each): the
/// expiry is touched only once
/// less than the idle timeout remains, which a busy session reaches at most once per tenth of
/// the idle timeout (here: not at all within the test).
async fn idle_reads_cost_one_load_each(backend: Backend) {
    let app = backend
        .app(|l| l.idle_timeout(Duration::from_secs(10)))
        .await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();
    const READS: usize = 100;
    for _ in 0..READS {
        let res = client.get("/get?key=a").await;
        assert_eq!(res.body, "1");
        assert!(
            res.set_cookie_headers().is_empty(),
            "a read re-sent the cookie"
        );
    }
    // With the local cache, no read goes to Redis: the write left its record in the cache.
    let hgetalls = vec![READ_OF_OWN_WRITE; READS];
    assert_calls(
        &backend,
        &mut monitor,
        &mut before,
        (READS, 0, 0),
        &hgetalls,
    )
    .await;
}

/// Idle timeout 1 s, lifetime 3 s, reads at uneven intervals: after every request the session
/// lives at least the idle timeout and at most 1.1 × the idle timeout (never past the deadline)
/// in the store — each store's own expiry: the key's PTTL in Redis, the record's expiry in
/// memory — and a cookie, when sent, matches it. Then, unused, it dies within 1.1 × idle.
async fn idle_timeout_bounds_hold(backend: Backend) {
    let idle = Duration::from_secs(1);
    let lifetime = Duration::from_secs(3);
    let app = backend
        .app(|l| l.idle_timeout(idle).lifetime(lifetime))
        .await;
    let mut client = Client::new(&app);
    let created = Instant::now();
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    for gap in [100, 300, 50, 900, 250] {
        sleep_ms(gap).await;
        let res = client.get("/get?key=a").await;
        let left_to_deadline = lifetime.saturating_sub(created.elapsed()).as_millis() as i64;
        assert_eq!(
            res.body, "1",
            "expired before the idle timeout ({gap} ms unused)"
        );
        let ttl = backend.ttl_ms(&token).await.expect("a live record");
        let ceiling = 1_100.min(left_to_deadline + 20);
        let floor = 1_000.min(left_to_deadline) - 50;
        assert!(
            (floor..=ceiling).contains(&ttl),
            "the store keeps it {ttl} ms after a use, expected {floor}..={ceiling}"
        );
        if let Some(cookie) = res.set_cookie() {
            let max_age = cookie.max_age().expect("persistent cookie");
            assert!(
                (1..=2).contains(&max_age.whole_seconds()),
                "Max-Age {max_age}"
            );
            let max_age = max_age.whole_milliseconds() as i64;
            assert!(
                (ttl..=ttl + 1_050).contains(&max_age),
                "Max-Age {max_age} ms vs {ttl} ms in the store"
            );
        }
    }
    // Unused for 1.1 × idle (+ margin), still well before the deadline: gone.
    sleep_ms(1_150).await;
    assert_eq!(client.get("/get?key=a").await.body, NONE);
    assert_eq!(backend.ttl_ms(&token).await, None);
}
