//! Session size and key length limits, and `__Host-` / `__Secure-` cookie names, on both stores.

mod common;

use http::StatusCode;

use common::{Backend, Client, NONE};

crate::both_stores!(
    an_oversized_value_fails_and_leaves_the_session_intact,
    the_size_limit_counts_the_whole_session,
    an_overlong_key_is_refused,
    host_prefixed_cookie_names_are_secure_host_only,
);

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
    let app = backend.app(|l| l.max_key_bytes(16)).await;
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
