//! Starting while Redis is down: `RedisStore::from_url` dials lazily, so a server comes up
//! during an outage. Until Redis answers, requests that use their session get the error
//! response within the bound and the others are served; full service begins by itself; and
//! `RedisStore::ready` is the fail-fast check. On a single Redis, on a 3-primary cluster with
//! one primary down, and through the `put_get` example.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use axum::Router;
use http::StatusCode;
use tower_scs::{RedisStore, SessionLayer};

use crate::harness::{
    Client, RedisServer, app,
    cluster::RedisCluster,
    example::{Example, get, http_client, token_of},
    made_up_token, wait_for,
};

/// How long a request that needs Redis may take while Redis is down: the layer's store
/// timeout (1 s) and fred's command timeout (900 ms), with room for a loaded machine.
const BOUND: Duration = Duration::from_millis(2_500);

/// `what`'s output and how long it took.
async fn timed<T>(what: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = what.await;
    (out, started.elapsed())
}

/// A store made with nothing answering at `url`: made at once, `ready` fails within the bound.
async fn store_while_down(url: &str) -> RedisStore {
    let (store, took) = timed(RedisStore::from_url(url)).await;
    let store = store.expect("from_url does not need Redis to answer");
    assert!(took < Duration::from_millis(500), "from_url took {took:?}");
    let (ready, took) = timed(store.ready()).await;
    let err = ready.expect_err("ready() while Redis is down");
    assert!(took < BOUND, "ready() took {took:?}");
    assert!(err.to_string().starts_with("session store error"), "{err}");
    store
}

/// While Redis is down: `/ping` (no session) is served, and a put and a get (session) are the
/// error response within the bound, with no cookie.
async fn served_without_redis(app: &Router) {
    let mut c = Client::new(app);
    let (ping, took) = timed(c.get("/ping")).await;
    assert_eq!((ping.status, ping.body.as_str()), (StatusCode::OK, "pong"));
    assert!(took < Duration::from_millis(500), "/ping took {took:?}");
    // A new session's commit, and the load of a token the client holds.
    let mut held = Client::with_token(app, &made_up_token("held"));
    for (c, uri) in [(&mut c, "/put?key=k&value=down"), (&mut held, "/get?key=k")] {
        let (res, took) = timed(c.get(uri)).await;
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
        assert!(took < BOUND, "{uri} took {took:?}");
        assert!(res.set_cookie_headers().is_empty(), "{uri}: a cookie");
    }
}

/// Once Redis answers: a put and a get round-trip without anyone restarting the app (run with
/// `--nocapture` to see how long after).
async fn full_service_resumes(app: &Router, limit: Duration) {
    let started = Instant::now();
    let value = wait_for(limit, "a put through the app", || async {
        let mut c = Client::new(app);
        let put = c.get("/put?key=k&value=up").await;
        if put.status != StatusCode::OK {
            return Err(format!("put: {}", put.status));
        }
        Ok(c.get("/get?key=k").await.body)
    })
    .await;
    assert_eq!(value, "up");
    eprintln!("full service {:?} after Redis answered", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_while_redis_is_down_serves_once_it_answers() {
    let mut redis = RedisServer::start().await;
    redis.stop();
    let store = store_while_down(&redis.url()).await;
    let app = app(SessionLayer::new(store.clone()));
    served_without_redis(&app).await;

    redis.restart().await;
    full_service_resumes(&app, Duration::from_secs(10)).await;
    store.ready().await.expect("ready() once Redis answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_while_a_cluster_primary_is_down_serves_once_it_is_back() {
    let mut cluster = RedisCluster::start(3, 0).await;
    let down = cluster.primaries().await[1];
    cluster.kill_primary(down).await;
    let store = store_while_down(&cluster.url()).await;
    let app = app(SessionLayer::new(store.clone()));
    served_without_redis(&app).await;

    cluster.restart_node(down).await;
    cluster.wait_healthy(Duration::from_secs(20)).await;
    full_service_resumes(&app, Duration::from_secs(10)).await;
    store
        .ready()
        .await
        .expect("ready() once every primary answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_starts_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    redis.stop();
    let example = Example::on_redis("put_get", &redis);
    let (http, a) = (http_client(), example.addr.as_str());
    assert_eq!(get(&http, a, "/ping", None).await.body, "pong");
    let (put, took) = timed(get(&http, a, "/put?message=down", None)).await;
    assert_eq!(put.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(put.set_cookie.is_none() && took < BOUND, "{took:?}");

    redis.restart().await;
    let token = wait_for(Duration::from_secs(10), "a put through put_get", || async {
        let put = get(&http, a, "/put?message=up", None).await;
        match (put.status, put.set_cookie) {
            (StatusCode::OK, Some(cookie)) => Ok(token_of(&cookie)),
            (status, _) => Err(format!("put: {status}")),
        }
    })
    .await;
    assert_eq!(get(&http, a, "/get", Some(&token)).await.body, "up");
}
