//! Session size and key length limits, and `__Host-` / `__Secure-` cookie names, on both stores.

use std::time::Duration;

use fred::{interfaces::ClientLike, prelude::Builder};
use http::StatusCode;

use crate::harness::{Backend, Client, NONE, app};
use tower_scs::{MemoryStore, RedisStore, SessionLayer};

/// The test app with a 30 s bound on store calls (on Redis, also on fred's commands): a commit
/// of 100,000 keys can take more than the default second in a debug build on a busy machine,
/// and these tests are about what big sessions do, not how fast.
async fn patient_app(backend: &Backend) -> axum::Router {
    let patience = Duration::from_secs(30);
    let Some(server) = backend.redis_server() else {
        return backend.app(|l| l.store_timeout(patience)).await;
    };
    let config = server.store_config();
    let pool = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = patience)
        .build_pool(2)
        .expect("a fred pool");
    pool.init().await.expect("connect to the test server");
    app(SessionLayer::new(RedisStore::new(pool)).store_timeout(patience))
}

crate::both_stores!(
    an_oversized_value_fails_and_leaves_the_session_intact,
    the_size_limit_counts_the_whole_session,
    an_overlong_key_is_refused,
    host_prefixed_cookie_names_are_secure_host_only,
    big_sessions_are_written_renewed_and_cleared_in_one_request,
    a_session_of_100k_keys_lives_a_whole_life,
    a_lowered_limit_refuses_only_growth,
);

/// The sizes that broke Lua's `unpack` (about 8,000 items): 4,000 keys inserted in one request,
/// a 9,000-key session renewed and cleared, 8,100 keys removed in one request.
async fn big_sessions_are_written_renewed_and_cleared_in_one_request(backend: Backend) {
    let app = patient_app(&backend).await;
    let mut client = Client::new(&app);
    let ok = StatusCode::OK;
    assert_eq!(client.get("/put_many?n=4000&value=v").await.status, ok);
    assert_eq!(client.get("/count").await.body, "4000");
    assert_eq!(
        client
            .get("/put_many?from=4000&n=5000&value=v")
            .await
            .status,
        ok
    );
    let old = client.token.clone().unwrap();
    assert_eq!(client.get("/renew").await.status, ok);
    assert_ne!(client.token.as_deref(), Some(old.as_str()));
    assert_eq!(client.get("/count").await.body, "9000");
    assert_eq!(client.get("/get?key=k8999").await.body, "v");
    assert_eq!(client.get("/remove_many?n=8100").await.status, ok);
    assert_eq!(client.get("/count").await.body, "900");
    assert_eq!(client.get("/put_many?n=8100&value=w").await.status, ok);
    assert_eq!(client.get("/count").await.body, "9000");
    assert_eq!(client.get("/clear").await.status, ok);
    assert_eq!(client.get("/count").await.body, "0");
    assert_eq!(client.get("/put?key=after&value=1").await.status, ok);
    assert_eq!(client.get("/keys").await.body, "after");
}

/// 100,000 small keys (about 0.9 MB, under the default 1 MiB limit): created in one request,
/// renewed, partly removed, cleared, refilled and destroyed.
async fn a_session_of_100k_keys_lives_a_whole_life(backend: Backend) {
    let app = patient_app(&backend).await;
    let mut client = Client::new(&app);
    let ok = StatusCode::OK;
    assert_eq!(client.get("/put_many?n=100000&value=1").await.status, ok);
    assert_eq!(client.get("/count").await.body, "100000");
    assert_eq!(client.get("/renew").await.status, ok);
    assert_eq!(client.get("/count").await.body, "100000");
    assert_eq!(client.get("/get?key=k99999").await.body, "1");
    assert_eq!(client.get("/remove_many?n=50000").await.status, ok);
    assert_eq!(client.get("/count").await.body, "50000");
    assert_eq!(client.get("/clear").await.status, ok);
    assert_eq!(client.get("/count").await.body, "0");
    assert_eq!(client.get("/put_many?n=100000&value=2").await.status, ok);
    let token = client.token.clone().unwrap();
    assert_eq!(client.get("/destroy").await.status, ok);
    assert!(!backend.stored(&token).await);
    assert_eq!(backend.stored_count().await, 0);
}

/// After `max_session_bytes` is lowered below a session's size, writes that keep it or shrink
/// it (remove, renew, a smaller value, clear) succeed; only a write that grows it is refused.
async fn a_lowered_limit_refuses_only_growth(backend: Backend) {
    let roomy = backend.app(|l| l).await;
    let mut client = Client::new(&roomy);
    let value = "x".repeat(600);
    for key in ["a", "b", "c"] {
        client.get(&format!("/put?key={key}&value={value}")).await;
    }
    let tight = backend.app(|l| l.max_session_bytes(Some(1000))).await;
    let mut client = Client::with_token(&tight, client.token.as_deref().unwrap());
    let ok = StatusCode::OK;
    assert_eq!(client.get("/remove?key=a").await.status, ok);
    assert_eq!(client.get("/renew").await.status, ok);
    assert_eq!(client.get("/keys").await.body, "b,c");
    let res = client.get("/put?key=d&value=small").await;
    assert_eq!(
        res.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "growth refused"
    );
    assert_eq!(client.get("/keys").await.body, "b,c");
    let smaller = "y".repeat(300);
    let res = client.get(&format!("/put?key=b&value={smaller}")).await;
    assert_eq!(
        res.status, ok,
        "a smaller value for a key shrinks the session"
    );
    assert_eq!(client.get("/get?key=b").await.body, smaller);
    assert_eq!(client.get("/clear").await.status, ok);
    assert_eq!(client.get("/put?key=d&value=small").await.status, ok);
}

async fn an_oversized_value_fails_and_leaves_the_session_intact(backend: Backend) {
    let app = backend.app(|l| l.max_session_bytes(Some(100))).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=small").await;
    let token = client.token.clone().unwrap();
    let big = "x".repeat(200);
    let res = client.get(&format!("/put?key=b&value={big}")).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.set_cookie_headers().is_empty());
    assert_eq!(client.token.as_deref(), Some(token.as_str()));
    assert_eq!(client.get("/keys").await.body, "a");
    assert_eq!(client.get("/get?key=a").await.body, "small");
}

/// The limit applies to the stored session as a whole (keys + JSON values), checked atomically
/// by the store, across requests: a write that fits alone but not with what is stored fails.
async fn the_size_limit_counts_the_whole_session(backend: Backend) {
    let app = backend.app(|l| l.max_session_bytes(Some(100))).await;
    let mut client = Client::new(&app);
    let fifty = "y".repeat(47); // key "a" (1) + "\"…\"" (49) = 50 bytes
    let sixty = "z".repeat(57); // key "b" (1) + 59 = 60 bytes
    assert_eq!(
        client
            .get(&format!("/put?key=a&value={fifty}"))
            .await
            .status,
        StatusCode::OK
    );
    let res = client.get(&format!("/put?key=b&value={sixty}")).await;
    assert_eq!(
        res.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "110 bytes > 100"
    );
    assert_eq!(client.get("/keys").await.body, "a");
    // Replacing a value counts the new size, not both.
    assert_eq!(
        client
            .get(&format!("/put?key=a&value={sixty}"))
            .await
            .status,
        StatusCode::OK
    );
    // Removing frees its bytes.
    client.get("/remove?key=a").await;
    assert_eq!(
        client
            .get(&format!("/put?key=b&value={sixty}"))
            .await
            .status,
        StatusCode::OK
    );
    // Clearing frees everything.
    client.get("/clear").await;
    assert_eq!(
        client
            .get(&format!("/put?key=c&value={fifty}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(&format!("/put?key=a&value={fifty}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(client.get("/keys").await.body, "a,c");
}

async fn an_overlong_key_is_refused(backend: Backend) {
    let app = backend.app(|l| l.max_key_bytes(Some(16))).await;
    let mut client = Client::new(&app);
    let key = "k".repeat(17);
    let res = client.get(&format!("/put?key={key}&value=1")).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(client.token, None, "nothing stored, no session");
    assert_eq!(backend.stored_count().await, 0);
    client
        .get(&format!("/put?key={}&value=1", &key[..16]))
        .await;
    assert_eq!(
        client.get(&format!("/get?key={}", &key[..16])).await.body,
        "1"
    );
    assert_eq!(client.get(&format!("/get?key={key}")).await.body, NONE);
}

async fn host_prefixed_cookie_names_are_secure_host_only(backend: Backend) {
    for name in ["__Host-id", "__Secure-id"] {
        let app = backend
            .app(|l| {
                l.cookie_name(name)
                    .secure(false)
                    .cookie_domain("example.com")
                    .cookie_path("/app")
            })
            .await;
        let mut client = Client::named(&app, name);
        let res = client.get("/put?key=a&value=1").await;
        let cookie = res.set_cookie().expect("a session cookie");
        assert_eq!(cookie.name(), name);
        assert_eq!(cookie.secure(), Some(true), "{name} needs Secure");
        if name == "__Host-id" {
            assert_eq!(cookie.path(), Some("/"));
            assert_eq!(cookie.domain(), None);
        } else {
            assert_eq!(cookie.path(), Some("/app"));
            assert_eq!(cookie.domain(), Some("example.com"));
        }
        assert_eq!(client.get("/get?key=a").await.body, "1");
    }
}

/// `MemoryStore` only (Redis has no cap of ours: its `maxmemory` policy is the operator's): with
/// `max_sessions(100)`, 300 sessions created through the layer leave about 100 live, the most
/// recently used ones, and a session in use survives the churn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_memory_store_keeps_the_most_recently_used_sessions() {
    let store = MemoryStore::new().max_sessions(100);
    let app = app(SessionLayer::new(store.clone()));
    let mut kept = Client::new(&app);
    kept.get("/put?key=a&value=kept").await;
    let mut newest = Vec::new();
    for i in 0..300 {
        let mut client = Client::new(&app);
        assert_eq!(
            client.get(&format!("/put?key=a&value={i}")).await.status,
            StatusCode::OK
        );
        newest.push(client);
        // The session in use stays among the most recently used.
        assert_eq!(
            kept.get("/get?key=a").await.body,
            "kept",
            "after {i} new sessions"
        );
    }
    let live = store.len();
    assert!(
        (90..=110).contains(&live),
        "{live} sessions live with a cap of 100"
    );
    for (i, client) in newest.iter_mut().enumerate().skip(290) {
        assert_eq!(client.get("/get?key=a").await.body, i.to_string());
    }
    let oldest_left = newest[0].get("/get?key=a").await.body;
    assert_eq!(oldest_left, NONE, "the least recently used went first");
}
