//! Time on Redis: an app clock a few seconds off Redis's (libfaketime) never turns an acknowledged write into
//! nothing; a record past its expiry that Redis still holds is never written into; corrupt
//! metadata reads as corrupt on every path (Rust decoder and Lua scripts alike).

use http::StatusCode;
use tower_scs::{RedisStore, SessionLayer};

use crate::harness::{
    Client, NONE, RedisServer, app,
    example::{self, Example},
    now_ms,
};

const DEFAULT_PREFIX: &str = RedisStore::DEFAULT_PREFIX;

/// The put_get example on `redis`, its clock shifted by `skew` (a faketime offset such as
/// `-3s`) and its idle timeout 2 s: a put is stored and readable, the key lives the idle
/// timeout (plus slack) in Redis's own time, and the cookie says as much.
async fn put_survives_skew(redis: &RedisServer, skew: &str) {
    // libfaketime preloaded into the example itself (not the `faketime` wrapper, which would
    // leave the example running when the test kills the wrapper).
    let app = Example::start(
        "put_get",
        &[
            ("LD_PRELOAD", &libfaketime()),
            ("FAKETIME", skew),
            // tokio's timers keep the real monotonic clock.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("REDIS_URL", &redis.url()),
            ("LIFETIME_SECS", "4"),
            ("IDLE_TIMEOUT_SECS", "2"),
        ],
    );
    let http = example::http_client();
    let res = example::get(&http, &app.addr, "/put?message=kept", None).await;
    assert_eq!(res.status, StatusCode::OK);
    let cookie = res.set_cookie.expect("a write sends the cookie");
    let token = example::token_of(&cookie);
    assert!(cookie.contains("Max-Age=3"), "skew {skew}: {cookie}");
    let pttl = redis
        .inspector()
        .pttl(&format!("{DEFAULT_PREFIX}{token}"))
        .await;
    assert!(
        (2_000..=2_200).contains(&pttl),
        "skew {skew}: the key lives the idle timeout in Redis's time, PTTL {pttl}"
    );
    let res = example::get(&http, &app.addr, "/get", Some(&token)).await;
    assert_eq!(res.body, "kept", "skew {skew}");
}

/// Debian's thread-safe libfaketime (package `faketime`).
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1"))
        .find(|lib| lib.exists());
    let lib = found.expect("libfaketimeMT.so.1 not found: install it (apt-get install faketime)");
    lib.to_string_lossy().into_owned()
}

/// The issue's case: the app 3 s behind Redis with a 2 s idle timeout (it used to answer 200
/// with the key already gone), and the app 3 s ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_clock_three_seconds_off_redis_keeps_every_write() {
    let redis = RedisServer::start().await;
    put_survives_skew(&redis, "-3s").await;
    put_survives_skew(&redis, "+3s").await;
}

/// A record whose deadline has passed but which Redis still holds (here: `PERSIST`, and a
/// deadline moved into the past) is no session: a blind write goes into a fresh session with
/// a new token, never into nothing.
#[tokio::test]
async fn a_blind_write_to_an_expired_but_held_record_starts_a_fresh_session() {
    let redis = RedisServer::start().await;
    let store = RedisStore::from_url(&redis.url()).await.unwrap();
    let app = app(SessionLayer::new(store));
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let old = client.token.clone().unwrap();
    let key = format!("{DEFAULT_PREFIX}{old}");
    let inspector = redis.inspector();
    let past = (now_ms() - 1_000).to_string();
    inspector.command("PERSIST", &[&key]).await;
    inspector.command("HSET", &[&key, "d", &past]).await;

    let res = client.get("/put?key=b&value=2").await;
    assert_eq!(res.status, StatusCode::OK);
    let new = res.new_token();
    assert_ne!(new, old, "the write went into a new session");
    assert_eq!(client.get("/get?key=b").await.body, "2");
    assert_eq!(client.get("/get?key=a").await.body, NONE);
    assert!(!inspector.exists(&key).await, "the expired record is gone");
}

/// Metadata the store did not write the way it writes it: a value that is not a number or out
/// of range, no deadline; in the earlier shape's `meta` text, a name twice or a pair without
/// `=`; both shapes at once. Loads (Rust) and writes (Lua) both answer the error response, and
/// leave the record as it was.
#[tokio::test]
async fn corrupt_metadata_is_corrupt_to_the_decoder_and_the_scripts_alike() {
    let redis = RedisServer::start().await;
    let store = RedisStore::from_url(&redis.url()).await.unwrap();
    let app = app(SessionLayer::new(store));
    let inspector = redis.inspector();
    let deadline = (now_ms() + 3_600_000).to_string();
    let old = |meta: String| vec![("d", None), ("s", None), ("meta", Some(meta))];
    let fields = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, Option<String>)> {
        (pairs.iter())
            .map(|(f, v)| (*f, Some((*v).to_owned())))
            .collect()
    };
    for planted in [
        fields(&[("s", "x4")]),
        fields(&[("s", "-1")]),
        fields(&[("r", "2")]),
        fields(&[("e", "soon")]),
        fields(&[("d", &format!("{deadline}0000000"))]),
        vec![("d", None)],
        fields(&[("meta", &format!("deadline={deadline}"))]),
        old(format!("deadline={deadline} deadline={deadline} size=4")),
        old(format!("deadline={deadline} size=4 remember")),
        old(format!("deadline={deadline} size=x4")),
        old(format!("deadline={deadline} size=4 remember=2")),
        old("size=4".to_owned()),
    ] {
        let mut client = Client::new(&app);
        client.get("/put?key=a&value=1").await;
        let key = format!("{DEFAULT_PREFIX}{}", client.token.clone().unwrap());
        for (field, value) in &planted {
            match value {
                Some(value) => inspector.command("HSET", &[&key, field, value]).await,
                None => inspector.command("HDEL", &[&key, field]).await,
            };
        }
        let before = inspector.hgetall(&key).await;
        for uri in ["/get?key=a", "/put?key=b&value=2", "/pop?key=a", "/renew"] {
            let res = client.get(uri).await;
            assert_eq!(
                res.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{uri} with {planted:?}"
            );
        }
        assert_eq!(inspector.hgetall(&key).await, before, "left as it was");
        assert_eq!(before["v:a"], "\"1\"");
    }
}
