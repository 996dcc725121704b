//! Drives the `hyper_server` example binary (plain hyper 1, no axum) over TCP, with sessions in
//! a private Redis: its routes over HTTP/1.1 and HTTP/2, and a store failure.

use std::time::{Duration, Instant};

use http::StatusCode;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::harness::{
    RedisServer, assert_valid_token,
    example::{Example, HttpClient, get, token_of},
};

fn http1() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// HTTP/2 with prior knowledge (h2c), which the example's `auto` connection builder accepts.
fn http2() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

#[tokio::test]
async fn put_get_ping_on_redis() {
    let redis = RedisServer::start().await;
    let example = Example::on_redis("hyper_server", &redis);
    let http = http1();

    let ping = get(&http, &example.addr, "/ping", None).await;
    assert_eq!((ping.status, ping.body.as_str()), (StatusCode::OK, "pong"));
    assert!(ping.set_cookie.is_none());

    let put = get(&http, &example.addr, "/put?message=hi%20there", None).await;
    assert_eq!((put.status, put.body.as_str()), (StatusCode::OK, ""));
    let set_cookie = put.set_cookie.expect("a session cookie");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let token = token_of(&set_cookie);
    assert_valid_token(&token);
    let stored = redis
        .inspector()
        .hgetall(&format!("scs:session:{token}"))
        .await;
    assert_eq!(stored["v:message"], r#""hi there""#);

    let t = Some(token.as_str());
    let got = get(&http, &example.addr, "/get", t).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (StatusCode::OK, "hi there")
    );
    assert!(got.set_cookie.is_none(), "a read sends no cookie");

    // The same session over HTTP/2.
    let h2 = http2();
    assert_eq!(get(&h2, &example.addr, "/get", t).await.body, "hi there");
    let put = get(&h2, &example.addr, "/put", t).await;
    assert_eq!(token_of(&put.set_cookie.expect("a cookie")), token);
    assert_eq!(
        get(&http, &example.addr, "/get", t).await.body,
        "Hello from a session!"
    );

    // Without the cookie, or with a token the server never issued: no session.
    let anonymous = get(&http, &example.addr, "/get", None).await;
    assert_eq!(
        (anonymous.status, anonymous.body.as_str()),
        (StatusCode::OK, "")
    );
    assert!(anonymous.set_cookie.is_none());
    let made_up = crate::harness::made_up_token("hyper");
    assert_eq!(
        get(&http, &example.addr, "/get", Some(&made_up)).await.body,
        ""
    );

    assert_eq!(
        get(&http, &example.addr, "/nope", t).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(redis.inspector().keys().await.len(), 1);
}

#[tokio::test]
async fn a_store_failure_is_a_500_and_the_server_recovers() {
    let mut redis = RedisServer::start().await;
    let mut example = Example::on_redis("hyper_server", &redis);
    let http = http1();
    let put = get(&http, &example.addr, "/put?message=before", None).await;
    let token = token_of(&put.set_cookie.expect("a session cookie"));
    let t = Some(token.as_str());

    redis.stop();
    let read = get(&http, &example.addr, "/get", t).await;
    assert_eq!(
        (read.status, read.body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "")
    );
    let write = get(&http, &example.addr, "/put?message=during", t).await;
    assert_eq!(write.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(write.set_cookie.is_none());
    assert_eq!(get(&http, &example.addr, "/ping", t).await.body, "pong");
    assert!(
        example.is_running(),
        "the example died: {}",
        example.stderr()
    );

    // A new, empty Redis on the same port: the store reconnects; the old session is gone.
    redis.restart().await;
    let until = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let reply = get(&http, &example.addr, "/put?message=after", t).await;
        if reply.status == StatusCode::OK || Instant::now() > until {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after.status, StatusCode::OK, "the store did not recover");
    let new = token_of(&after.set_cookie.expect("a new session cookie"));
    assert_ne!(new, token);
    assert_eq!(
        get(&http, &example.addr, "/get", Some(&new)).await.body,
        "after"
    );
    assert_eq!(get(&http, &example.addr, "/get", t).await.body, "");
}
