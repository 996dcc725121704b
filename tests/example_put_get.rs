//! Drives the `put_get` example binary over TCP: its routes on Redis, and two server processes
//! sharing one Redis without losing concurrent writes.
//!
//! `cargo test` (and `cargo nextest run`) build the examples before running tests; the binary is
//! found next to this test's own executable (see `common::example`).

mod common;

use http::StatusCode;
use tokio::task::JoinSet;

use common::{
    RedisServer,
    example::{Example, get, http_client, token_of},
};

/// The `put_get` example on `redis`.

#[tokio::test]
async fn routes_answer_as_scs_on_redis() {
    let redis = RedisServer::start();
    let example = Example::on_redis("put_get", &redis);
    let http = http_client();
    let a = example.addr.as_str();

    let ping = get(&http, a, "/ping", None).await;
    assert_eq!((ping.status, ping.body.as_str()), (StatusCode::OK, "pong"));
    assert!(ping.set_cookie.is_none());

    let put = get(&http, a, "/put", None).await;
    assert_eq!((put.status, put.body.as_str()), (StatusCode::OK, ""));
    let token = token_of(put.set_cookie.as_deref().expect("a session cookie"));
    let t = Some(token.as_str());
    let got = get(&http, a, "/get", t).await;
    assert_eq!(got.body, "Hello from a session!");
    assert!(got.set_cookie.is_none());

    get(&http, a, "/put?message=X&key=K", t).await;
    assert_eq!(get(&http, a, "/pop?key=K", t).await.body, "X");
    assert_eq!(get(&http, a, "/get?key=K", t).await.body, "");

    let renewed = get(&http, a, "/renew", t).await;
    let new = token_of(renewed.set_cookie.as_deref().expect("renew sends a cookie"));
    assert_ne!(new, token);
    assert_eq!(
        get(&http, a, "/get", t).await.body,
        "",
        "old token still works"
    );
    let n = Some(new.as_str());
    assert_eq!(get(&http, a, "/get", n).await.body, "Hello from a session!");

    let remember = get(&http, a, "/remember?on=true", n).await;
    assert!(remember.set_cookie.unwrap().contains("Max-Age="));

    let destroyed = get(&http, a, "/destroy", n).await;
    let cookie = destroyed.set_cookie.expect("an expiring cookie");
    assert!(cookie.starts_with("session=;"), "{cookie}");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    assert_eq!(get(&http, a, "/get", n).await.body, "");
    assert!(redis.inspector().await.keys().await.is_empty());
}

/// 50 sessions × 8 concurrent writers of different keys, the writers of each session spread
/// over two example processes that share one Redis: nothing lost.
#[tokio::test]
async fn two_processes_sharing_redis_lose_no_concurrent_write() {
    let redis = RedisServer::start();
    let servers = [
        Example::on_redis("put_get", &redis),
        Example::on_redis("put_get", &redis),
    ];
    let http = http_client();
    let mut tokens = Vec::new();
    for s in 0..50 {
        let res = get(&http, &servers[s % 2].addr, "/put?key=base&message=0", None).await;
        tokens.push(token_of(&res.set_cookie.expect("a session cookie")));
    }
    let mut set = JoinSet::new();
    for token in &tokens {
        for w in 0..8 {
            let (http, addr, token) = (http.clone(), servers[w % 2].addr.clone(), token.clone());
            set.spawn(async move {
                let path = format!("/put?key=k{w}&message=v{w}");
                let res = get(&http, &addr, &path, Some(&token)).await;
                assert_eq!(res.status, StatusCode::OK);
                assert!(
                    res.set_cookie.is_some_and(|c| token_of(&c) == token),
                    "the write moved to another session"
                );
            });
        }
    }
    while let Some(done) = set.join_next().await {
        done.expect("writer task");
    }
    let mut lost = 0;
    for (s, token) in tokens.iter().enumerate() {
        for w in 0..8 {
            let addr = &servers[(s + w) % 2].addr;
            let got = get(&http, addr, &format!("/get?key=k{w}"), Some(token)).await;
            lost += usize::from(got.body != format!("v{w}"));
        }
    }
    assert_eq!(lost, 0, "{lost} of 400 writes lost");
}
