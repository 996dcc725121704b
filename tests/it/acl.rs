//! Least privilege: the store logged in as a user allowed only the ACL `docs/guarantees.md`
//! documents. The behaviour suite runs so as `redis_acl::*` and `redis_acl_cached::*`
//! (`both_stores!`); here, that the documented ACL is the tested one, that a whole workload is
//! never denied anything (`ACL LOG` stays empty), that the name and password travel in the URL
//! (the store's and the example's), and that a missing permission is the error response and a
//! log line naming it, never a silent wrong answer.

use std::pin::pin;

use futures_util::TryStreamExt;
use http::StatusCode;
use tower_scs::{RedisStore, SessionLayer};

use crate::harness::{
    Client, Logs, RedisServer, app, assert_refused, cache_refused, cached,
    example::{Example, get, http_client, token_of},
    redis::{CACHE_ACL, STORE_ACL, USER},
};

const GUARANTEES: &str = include_str!("../../docs/guarantees.md");

#[test]
fn the_documented_acl_is_the_tested_one() {
    let store = format!("ACL SETUSER sessions on >password {STORE_ACL}\n");
    let cache = format!("ACL SETUSER sessions {CACHE_ACL}\n");
    assert!(
        GUARANTEES.contains(&store),
        "docs/guarantees.md lacks {store}"
    );
    assert!(
        GUARANTEES.contains(&cache),
        "docs/guarantees.md lacks {cache}"
    );
    for forbidden in ["+keys", "+flushall", "+flushdb", "+config", "+debug", "+@"] {
        assert!(!STORE_ACL.contains(forbidden) && !CACHE_ACL.contains(forbidden));
    }
}

/// Every kind of request, the owner index, `ids()`, a lost script cache and the local cache,
/// as the restricted user (name and password in the URL given to `from_url`): all served, and
/// Redis denied nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_workload_under_the_acl_is_never_denied() {
    let server = RedisServer::start_as(&format!("{STORE_ACL} {CACHE_ACL}")).await;
    let url = server.store_url();
    assert!(
        url.starts_with(&format!("redis://{}:{}@", USER.0, USER.1)),
        "{url}"
    );
    let store = RedisStore::from_url(&url)
        .await
        .expect("from_url as the user");
    let store = cached(store, 1000).await;
    let app = app(SessionLayer::new(store.clone()));
    let mut c = Client::new(&app);
    for uri in ["/put?key=a&value=1", "/set_owner?owner=alice", "/renew"] {
        assert_eq!(c.get(uri).await.status, StatusCode::OK, "{uri}");
    }
    // Redis loses its scripts (a restart, a failover): the next write falls back to EVAL.
    server.inspector().ok("SCRIPT", &["FLUSH"]).await;
    assert_eq!(c.get("/put?key=b&value=2").await.status, StatusCode::OK);
    assert_eq!(c.get("/get?key=a").await.body, "1");
    assert_eq!(c.get("/get?key=a").await.body, "1", "a cache hit");
    assert_eq!(c.get("/pop?key=a").await.body, "1");
    assert_eq!(c.get("/devices").await.status, StatusCode::OK);
    let ids: Vec<String> = pin!(store.ids()).try_collect().await.expect("ids()");
    assert!(!ids.is_empty(), "ids() finds the session");
    assert_eq!(
        c.get("/destroy_owner?owner=alice").await.status,
        StatusCode::OK
    );
    assert_eq!(c.get("/get?key=a").await.body, "<none>");

    let inspector = server.inspector();
    let clients = inspector.command("CLIENT", &["LIST"]).await;
    let clients = clients.as_str().expect("CLIENT LIST text").into_owned();
    assert!(clients.contains(&format!("user={}", USER.0)), "{clients}");
    let denied = inspector.command("ACL", &["LOG"]).await;
    assert!(denied.array_len() == Some(0), "ACL LOG: {denied:?}");
}

/// The user without `+evalsha` and `+eval`: a read is served, a write is the error response,
/// nothing is stored, and the log line names the command Redis refused.
#[tokio::test]
async fn a_missing_permission_is_the_error_response_and_a_log_line_naming_it() {
    let rules: Vec<&str> = (STORE_ACL.split_whitespace())
        .filter(|rule| !["+evalsha", "+eval"].contains(rule))
        .collect();
    let server = RedisServer::start_as(&rules.join(" ")).await;
    let logs = Logs::default();
    let _capture = tracing::subscriber::set_default(logs.subscriber());
    let app = app(SessionLayer::new(server.store().await));
    let mut c = Client::new(&app);
    assert_eq!(c.get("/get?key=a").await.status, StatusCode::OK);
    let res = c.get("/put?key=a&value=1").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR, "{res:?}");
    assert!(res.set_cookie_headers().is_empty(), "{res:?}");
    assert!(server.inspector().keys().await.is_empty());
    let text = logs.text();
    assert!(text.contains("session error"), "{text}");
    assert!(text.contains("NOPERM"), "{text}");
    assert!(text.contains("'evalsha'"), "{text}");
}

/// The local cache for a user lacking what its tracking needs ([`CACHE_ACL`]): a warning
/// naming the refusal, and every read goes to Redis, right.
#[tokio::test]
async fn a_cache_without_its_permissions_says_so_and_reads_stay_right() {
    let server = RedisServer::start_as(STORE_ACL).await;
    cache_refused(
        &server,
        "NOPERM this user has no permissions to run the 'subscribe'",
    )
    .await;
}

/// A wrong password in the URL: a clear error (`WRONGPASS`), soon, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_with_a_clear_error() {
    let server = RedisServer::start_as(STORE_ACL).await;
    let url = server.store_url().replace(USER.1, "not-the-password");
    let config = fred::prelude::Config::from_url(&url).expect("a URL with a user");
    assert_refused(config, |e| e.contains("WRONGPASS")).await;
}

/// `REDIS_URL=redis://sessions:<password>@127.0.0.1:<port>`: the example serves a put and a get
/// as the restricted user.
#[tokio::test]
async fn the_example_takes_a_name_and_password_in_redis_url() {
    let server = RedisServer::start_as(STORE_ACL).await;
    let example = Example::on_redis("put_get", &server);
    let (http, a) = (http_client(), example.addr.as_str());
    let put = get(&http, a, "/put?message=least-privilege", None).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let token = token_of(put.set_cookie.as_deref().expect("a session cookie"));
    let got = get(&http, a, "/get", Some(&token)).await;
    assert_eq!(got.body, "least-privilege");
    let denied = server.inspector().command("ACL", &["LOG"]).await;
    assert!(denied.array_len() == Some(0), "ACL LOG: {denied:?}");
}
