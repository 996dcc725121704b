//! Redis out of memory, on a private `redis-server` with a small `maxmemory`:
//!
//! - `noeviction`: writes get the error response (and no cookie), reads keep working, a failed
//!   write changes nothing, and service is whole again once memory frees;
//! - `allkeys-lru` and `volatile-lru`: every write is served (Redis evicts to make room), an
//!   evicted session reads as a fresh session (never an error, never an error loop), and the
//!   device list and "log out everywhere" work over an owner index with evicted members.

use http::StatusCode;
use tower_scs::{RedisStore, SessionLayer};

use crate::harness::{
    Client, NONE, RedisServer, app, connected,
    redis::{command, info_field},
};

/// A filler value for `noeviction`: 1 KiB.
const FILLER: usize = 1024;

/// A server capped at `maxmemory` with `policy`, and the test app over `from_url` on it.
async fn capped(maxmemory: &str, policy: &str) -> (RedisServer, axum::Router) {
    let args = ["--maxmemory", maxmemory, "--maxmemory-policy", policy];
    let server = RedisServer::start_with(&args).await;
    let store = connected(RedisStore::from_url(&server.url()).await.unwrap()).await;
    (server, app(SessionLayer::new(store)))
}

/// Fills Redis with 2 MiB of `filler:<n>` keys, then caps it half a MiB below what it then
/// uses: full, and refusing writes for as long as the fillers stay (at the very edge of the
/// limit, the buffers of each command move the memory in use across it and back). The
/// fillers written.
async fn fill(server: &RedisServer) -> usize {
    let (client, inspector, value) = (server.client(), server.inspector(), "x".repeat(FILLER));
    let fillers = 2 * 1024 * 1024 / FILLER;
    for n in 0..fillers {
        command::<()>(&client, "SET", &[&format!("filler:{n}"), &value])
            .await
            .unwrap();
    }
    let memory = inspector.info("memory").await;
    let used: u64 = info_field(&memory, "used_memory").unwrap().parse().unwrap();
    let cap = (used - 512 * 1024).to_string();
    inspector.ok("CONFIG", &["SET", "maxmemory", &cap]).await;
    let refused = command::<()>(&client, "SET", &["one-more", "x"]).await;
    assert!(refused.unwrap_err().details().starts_with("OOM"));
    fillers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_writes_keeps_reads_and_recovers() {
    let (server, app) = capped("0", "noeviction").await;
    let mut users = Vec::new();
    for i in 0..20 {
        let mut c = Client::new(&app);
        assert_eq!(
            c.get(&format!("/put?key=k&value=v{i}")).await.status,
            StatusCode::OK
        );
        users.push(c);
    }
    let fillers = fill(&server).await;

    // Writes fail: a new session gets no cookie, an update leaves the old value.
    let mut fresh = Client::new(&app);
    let res = fresh.get("/put?key=k&value=new").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        fresh.token.is_none(),
        "a cookie for a session that was not stored"
    );
    let res = users[0].get("/put?key=k&value=changed").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    // Reads keep working, and nothing changed.
    for (i, c) in users.iter_mut().enumerate() {
        let res = c.get("/get?key=k").await;
        assert_eq!((res.status, res.body), (StatusCode::OK, format!("v{i}")));
    }

    // Memory frees: service is whole again.
    let client = server.client();
    for n in 0..fillers {
        command::<()>(&client, "DEL", &[&format!("filler:{n}")])
            .await
            .unwrap();
    }
    assert_eq!(
        fresh.get("/put?key=k&value=new").await.status,
        StatusCode::OK
    );
    assert_eq!(fresh.get("/get?key=k").await.body, "new");
    assert_eq!(
        users[0].get("/put?key=k&value=changed").await.status,
        StatusCode::OK
    );
    assert_eq!(users[0].get("/get?key=k").await.body, "changed");
}

/// Sessions of 2 KiB, each tied to one of 5 owners, written until Redis has evicted some.
async fn evicted_sessions_are_fresh_sessions(policy: &str) {
    let (server, app) = capped("3mb", policy).await;
    let inspector = server.inspector();
    let value = "x".repeat(2048);
    let mut users = Vec::new();
    for i in 0..3_000 {
        let mut c = Client::new(&app);
        let put = c.get(&format!("/put?key=k&value={i}-{value}")).await;
        assert_eq!(put.status, StatusCode::OK, "put {i} under {policy}");
        let owned = c.get(&format!("/set_owner?value=owner{}", i % 5)).await;
        assert_eq!(owned.status, StatusCode::OK, "set_owner {i} under {policy}");
        users.push(c);
    }
    let stats = inspector.info("stats").await;
    let evicted: u64 = info_field(&stats, "evicted_keys").unwrap().parse().unwrap();
    assert!(evicted > 0, "nothing evicted under {policy}");
    // No more evictions while the outcome is checked.
    inspector.ok("CONFIG", &["SET", "maxmemory", "0"]).await;

    let mut live = [0_usize; 5];
    for (i, c) in users.iter_mut().enumerate() {
        let got = c.get("/get?key=k").await;
        assert_eq!(got.status, StatusCode::OK, "an evicted session is no error");
        if got.body == NONE {
            // A fresh session: a write starts a new one, under a new token.
            let old = c.token.clone();
            assert_eq!(c.get("/put?key=k&value=again").await.status, StatusCode::OK);
            assert_ne!(c.token, old, "an evicted session's token is adopted");
            assert_eq!(c.get("/get?key=k").await.body, "again");
        } else {
            assert_eq!(got.body, format!("{i}-{value}"));
            live[i % 5] += 1;
        }
    }
    let survived = live.iter().sum::<usize>();
    assert!(survived > 0, "everything evicted");
    eprintln!("{policy}: {evicted} keys evicted, {survived} of 3000 sessions live");
    for (o, &live) in live.iter().enumerate() {
        owner_index_tolerates_evictions(&app, o, live).await;
    }
}

/// Owner `o`, of whose sessions `live` survived: a new session of `o` lists at most those (and
/// itself; fewer when the index itself was evicted and built again by later sessions), and "log
/// out everywhere" ends every one it lists.
async fn owner_index_tolerates_evictions(app: &axum::Router, o: usize, live: usize) {
    let mut me = Client::new(app);
    me.get(&format!("/set_owner?value=owner{o}")).await;
    let devices = me.get("/devices").await;
    assert_eq!(devices.status, StatusCode::OK);
    let listed = devices.body.lines().count();
    let limit = 1..=live + 1;
    assert!(limit.contains(&listed), "{listed} listed, {live} live");
    let ended = me.get(&format!("/destroy_owner?value=owner{o}")).await;
    assert_eq!(
        (ended.status, ended.body),
        (StatusCode::OK, listed.to_string())
    );
    assert_eq!(me.get("/get?key=k").await.body, NONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allkeys_lru_evicts_sessions_into_fresh_ones() {
    evicted_sessions_are_fresh_sessions("allkeys-lru").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_lru_evicts_sessions_into_fresh_ones() {
    evicted_sessions_are_fresh_sessions("volatile-lru").await;
}
