//! The SCS behaviour through the real layer, requests in and responses out. Every test is an
//! `async fn(Backend)` run twice by `both_stores!`: `memory::<name>` and `redis::<name>` (each
//! Redis test with its own redis-server).

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use axum::body::Body;
use cookie::{Cookie, SameSite};
use http::{HeaderValue, Request, Response, StatusCode, header};
use tokio::task::JoinSet;

use crate::harness::{
    Backend, Client, Gate, NONE, READ_OF_OWN_WRITE, Resp, app::User, assert_calls, assert_near,
    assert_valid_token, get_with_cookie_header, hashed, made_up_token, monitor, now_ms,
    overlapping_writes, send, sleep_ms,
};

crate::both_stores!(
    put_then_get_round_trips,
    session_cookie_among_other_cookies,
    keys_that_look_like_store_fields,
    typed_values_round_trip,
    default_cookie_attributes,
    settings_change_cookie_attributes,
    vary_on_every_response_and_cache_control_only_with_set_cookie,
    read_only_request_sends_no_cookie,
    untouched_session_makes_no_store_call,
    store_calls_per_request,
    new_session_first_write_is_one_store_call,
    unknown_token_is_never_adopted,
    malformed_cookies_are_no_session,
    pop_remove_clear_keys_contains,
    destroy_expires_cookie_and_record,
    destroy_then_write_starts_new_session,
    renew_token_replaces_token_and_keeps_data,
    persist_off_unless_remember_me,
    idle_timeout_slides_then_expires,
    absolute_lifetime_ends_active_session,
    reads_near_the_deadline_do_not_rewrite,
    expired_record_is_deleted,
    deadline_in_the_past_deletes_at_commit,
    set_deadline_and_deadline,
    merge_pulls_in_other_session,
    hash_token_in_store,
    store_failure_gives_error_response,
    stalled_store_gives_error_response,
    concurrent_clients_never_mix_sessions,
    concurrent_writes_of_one_session_are_all_kept,
    clear_applies_to_what_is_stored_when_it_commits,
    destroy_is_not_undone_by_a_concurrent_write,
);

async fn put_then_get_round_trips(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    let res = client.get("/put?key=greeting&value=hello%20world").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(client.token.is_some(), "a write sends the session cookie");
    assert_eq!(client.get("/get?key=greeting").await.body, "hello world");
    assert_eq!(client.get("/get?key=missing").await.body, NONE);
    // Overwrite.
    client.get("/put?key=greeting&value=bye").await;
    assert_eq!(client.get("/get?key=greeting").await.body, "bye");
    // Another client sees nothing.
    assert_eq!(Client::new(&app).get("/get?key=greeting").await.body, NONE);
}

async fn session_cookie_among_other_cookies(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let t = client.token.clone().unwrap();
    for header in [
        format!("a=b; session={t}; c=d"),
        format!("theme=dark;session={t}"),
        format!("session_x=1; xsession=2; session={t}"),
        format!("session=short; session={t}"),
    ] {
        let res = get_with_cookie_header(&app, "/get?key=a", header.parse().unwrap()).await;
        assert_eq!(res.body, "1", "{header}");
    }
    // Cookies split over several headers (as HTTP/2 sends them).
    let req = Request::get("/get?key=a")
        .header(header::COOKIE, "a=b")
        .header(header::COOKIE, format!("session={t}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.body, "1");
}

async fn keys_that_look_like_store_fields(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    let keys = [
        ("meta", "meta"),
        ("deadline", "deadline"),
        ("expiry", "expiry"),
        ("remember", "remember"),
        ("v%3A", "v:"),
        ("v%3Ax", "v:x"),
        ("", ""),
        ("a%20b", "a b"),
        ("%D0%BA%D0%BB%D1%8E%D1%87", "ключ"),
    ];
    for (encoded, _) in keys {
        client
            .get(&format!("/put?key={encoded}&value=x{encoded}"))
            .await;
    }
    let mut expected: Vec<&str> = keys.iter().map(|(_, k)| *k).collect();
    expected.sort();
    assert_eq!(client.get("/keys").await.body, expected.join(","));
    for (encoded, key) in keys {
        let res = client.get(&format!("/get?key={encoded}")).await;
        assert_eq!(res.body, format!("x{key}"));
    }
    // The session's own metadata is unaffected.
    let d: i64 = client.get("/deadline").await.body.parse().unwrap();
    assert_near(d, now_ms() + 86_400_000, 3_000, "deadline");
    let res = client.get("/put?key=z&value=1").await;
    assert!(res.set_cookie().unwrap().max_age().is_some());
}

async fn typed_values_round_trip(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put_typed").await;
    let body = client.get("/get_typed").await.body;
    let got: (Option<String>, Option<i64>, Option<User>) = serde_json::from_str(&body).unwrap();
    let (text, number, user) = crate::harness::app::typed_values();
    assert_eq!(got, (Some(text), Some(number), Some(user)));
    // Missing keys of every type are None.
    let body = Client::new(&app).get("/get_typed").await.body;
    assert_eq!(body, "[null,null,null]");
}

async fn default_cookie_attributes(backend: Backend) {
    let app = backend.app(|l| l).await;
    let res = Client::new(&app).get("/put?key=a&value=1").await;
    let raw = res.set_cookie_headers().join("\n");
    let cookie = res.set_cookie().expect("Set-Cookie on a commit");
    assert_eq!(cookie.name(), "session");
    assert_valid_token(cookie.value());
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.http_only(), Some(true), "{raw}");
    assert_eq!(cookie.same_site(), Some(SameSite::Lax), "{raw}");
    assert!(!raw.contains("Secure"), "{raw}");
    assert!(!raw.contains("Partitioned"), "{raw}");
    assert_eq!(cookie.domain(), None, "{raw}");
    let max_age = cookie.max_age().expect("Max-Age").whole_seconds();
    assert!((86_399..=86_401).contains(&max_age), "{raw}");
    let expires = cookie.expires_datetime().expect("Expires").unix_timestamp();
    assert_near(expires * 1000, now_ms() + 86_400_000, 3_000, "Expires");
    assert_eq!(
        res.header_values("cache-control"),
        [r#"no-cache="Set-Cookie""#]
    );
    assert!(res.varies_on_cookie());
}

async fn settings_change_cookie_attributes(backend: Backend) {
    let app = backend
        .app(|l| {
            l.cookie_name("sid")
                .cookie_domain("example.com")
                .cookie_path("/app")
                .secure(true)
                .same_site(SameSite::Strict)
                .partitioned(true)
                .http_only(false)
        })
        .await;
    let mut client = Client::named(&app, "sid");
    let res = client.get("/put?key=a&value=1").await;
    let raw = res.set_cookie_headers().join("\n");
    let cookie = res.set_cookie().unwrap();
    assert_eq!(cookie.name(), "sid");
    assert_valid_token(cookie.value());
    assert_eq!(cookie.domain(), Some("example.com"), "{raw}");
    assert_eq!(cookie.path(), Some("/app"), "{raw}");
    assert_eq!(cookie.secure(), Some(true), "{raw}");
    assert_eq!(cookie.same_site(), Some(SameSite::Strict), "{raw}");
    assert_eq!(cookie.partitioned(), Some(true), "{raw}");
    assert!(!raw.contains("HttpOnly"), "{raw}");
    // The custom name is the one read back; a `session` cookie is not.
    assert_eq!(client.get("/get?key=a").await.body, "1");
    let token = client.token.clone().unwrap();
    let res = Client::with_token(&app, &token).get("/get?key=a").await;
    assert_eq!(
        res.body, NONE,
        "a cookie named `session` is not the session"
    );

    // Browsers require Secure on a partitioned cookie: it is there even with secure off.
    let app = backend.app(|l| l.partitioned(true)).await;
    let res = Client::new(&app).get("/put?key=a&value=1").await;
    let raw = res.set_cookie_headers().join("\n");
    assert!(
        raw.contains("; Partitioned") && raw.contains("; Secure"),
        "{raw}"
    );
}

async fn vary_on_every_response_and_cache_control_only_with_set_cookie(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    let check = |res: &Resp, sets_cookie: bool| {
        assert!(res.varies_on_cookie(), "Vary: Cookie missing: {res:?}");
        assert_eq!(
            res.set_cookie_headers().len(),
            usize::from(sets_cookie),
            "{res:?}"
        );
        let cache = res.header_values("cache-control");
        if sets_cookie {
            assert_eq!(cache, [r#"no-cache="Set-Cookie""#], "{res:?}");
        } else {
            assert!(cache.is_empty(), "{res:?}");
        }
    };
    check(&client.get("/ping").await, false);
    check(&client.get("/get?key=a").await, false);
    check(&client.get("/put?key=a&value=1").await, true);
    check(&client.get("/ping").await, false);
    check(&client.get("/get?key=a").await, false);
    check(&client.get("/keys").await, false);
    check(&client.get("/no/such/route").await, false);
    check(&client.get("/destroy").await, true);
}

async fn read_only_request_sends_no_cookie(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    for uri in [
        "/get?key=a",
        "/get?key=zzz",
        "/keys",
        "/contains?key=a",
        "/deadline",
    ] {
        let res = client.get(uri).await;
        assert_eq!(res.status, StatusCode::OK);
        assert!(res.set_cookie_headers().is_empty(), "{uri}: {res:?}");
    }
    // Popping or removing a key that is not there changes nothing either.
    let res = client.get("/pop?key=zzz").await;
    assert_eq!(res.body, NONE);
    assert!(res.set_cookie_headers().is_empty(), "{res:?}");
}

async fn untouched_session_makes_no_store_call(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let inspector = backend.inspector();
    let before_calls = backend.calls.get();
    // Redis: two INFOs in a row differ by 1 (the first INFO); any command of the store in
    // between would add to that.
    let before = match &inspector {
        Some(i) => i.total_commands_processed().await,
        None => 0,
    };
    let res = client.get("/ping").await;
    assert_eq!(res.body, "pong");
    if let Some(i) = &inspector {
        let after = i.total_commands_processed().await;
        assert_eq!(after - before, 1, "Redis ran commands for /ping");
    }
    assert_eq!(backend.calls.get(), before_calls, "store called for /ping");
    // Without a cookie too.
    Client::new(&app).get("/ping").await;
    assert_eq!(backend.calls.get(), before_calls);
}

async fn store_calls_per_request(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await; // also loads the commit script into Redis
    let mut warm = Client::new(&app);
    warm.get("/put?key=w&value=w").await;
    warm.get("/destroy").await; // loads the delete script into Redis
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();

    // Read-only: exactly one load (Redis: one HGETALL, none with the local cache).
    assert_eq!(client.get("/get?key=a").await.body, "1");
    let expected = [READ_OF_OWN_WRITE];
    assert_calls(&backend, &mut monitor, &mut before, (1, 0, 0), &expected).await;

    // A write that never read: exactly one commit (Redis: one EVALSHA).
    client.get("/put?key=b&value=2").await;
    assert_calls(&backend, &mut monitor, &mut before, (0, 1, 0), &["evalsha"]).await;

    // Read then write: one load and one commit.
    client.get("/read_put?key=c&value=3").await;
    let expected = [READ_OF_OWN_WRITE, "evalsha"];
    assert_calls(&backend, &mut monitor, &mut before, (1, 1, 0), &expected).await;

    // Destroy without reading: one delete (Redis: one EVALSHA that deletes and returns the owner).
    client.get("/destroy").await;
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 1), &["evalsha"]).await;
}

async fn new_session_first_write_is_one_store_call(backend: Backend) {
    let app = backend.app(|l| l).await;
    Client::new(&app).get("/put?key=warm&value=up").await; // loads the commit script into Redis
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();

    // No cookie: the session is new, so its first commit is a create. Trying an update first
    // under a token nobody has ever seen is a wasted store call.
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    assert_calls(&backend, &mut monitor, &mut before, (0, 1, 0), &["evalsha"]).await;
    assert_eq!(client.get("/get?key=a").await.body, "1");
}

async fn unknown_token_is_never_adopted(backend: Backend) {
    let app = backend.app(|l| l).await;
    let unknown = made_up_token("never issued");
    let mut client = Client::with_token(&app, &unknown);
    let res = client.get("/get?key=a").await;
    assert_eq!(res.body, NONE);
    assert!(res.set_cookie_headers().is_empty());

    // A write-only request: a fresh session under a new token.
    let res = client.get("/put?key=a&value=1").await;
    assert_eq!(res.status, StatusCode::OK);
    let token = res.new_token();
    assert_ne!(token, unknown, "the client's token was adopted (fixation)");
    assert_eq!(client.get("/get?key=a").await.body, "1");
    assert!(!backend.stored(&unknown).await);
    assert!(backend.stored(&token).await);

    // A read-then-write request: same.
    let unknown = made_up_token("another one");
    let mut client = Client::with_token(&app, &unknown);
    let res = client.get("/read_put?key=b&value=2").await;
    assert_ne!(res.new_token(), unknown);
    assert_eq!(client.get("/keys").await.body, "b");
    assert!(!backend.stored(&unknown).await);
}

async fn malformed_cookies_are_no_session(backend: Backend) {
    let app = backend.app(|l| l).await;
    let valid = made_up_token("x");
    let mut headers: Vec<HeaderValue> = [
        "session=".to_owned(),
        "session=abc".to_owned(),
        format!("session={}", &valid[..42]),
        format!("session={valid}A"),
        format!("session={}", "+".repeat(43)),
        format!("session={}", ".".repeat(43)),
        "session=; session=".to_owned(),
        "session=abc; session=../..".to_owned(),
        "session=../..*".to_owned(),
        "session=*/../../scs:session:*aaaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
        // 43 base64url characters, but the last one has non-zero padding bits: not canonical.
        format!("session={}B", &valid[..42]),
        format!("session={}%41", &valid[..42]),
        "session".to_owned(),
        ";;; ===".to_owned(),
    ]
    .into_iter()
    .map(|s| HeaderValue::from_str(&s).unwrap())
    .collect();
    headers.push(HeaderValue::from_bytes(b"session=\xff\xfe\x80abc").unwrap());
    let mut bytes = format!("session={valid}").into_bytes();
    bytes[20] = 0xe9;
    headers.push(HeaderValue::from_bytes(&bytes).unwrap());

    for header in headers {
        let reads = [
            ("/get?key=a", NONE),
            ("/keys", ""),
            ("/contains?key=a", "false"),
            ("/ping", "pong"),
        ];
        for (uri, body) in reads {
            let res = get_with_cookie_header(&app, uri, header.clone()).await;
            assert_eq!(res.status, StatusCode::OK, "{header:?} {uri}");
            assert_eq!(res.body, body, "{header:?} {uri}");
            assert!(res.set_cookie_headers().is_empty(), "{header:?} {uri}");
        }
        let res = get_with_cookie_header(&app, "/put?key=a&value=1", header.clone()).await;
        assert_eq!(res.status, StatusCode::OK, "{header:?}");
        let token = res.new_token();
        assert!(!header.as_bytes().windows(43).any(|w| w == token.as_bytes()));
    }
    // Only the writes reached the store: no load, no delete.
    let (loads, commits, deletes) = backend.calls.get();
    assert_eq!((loads, deletes), (0, 0));
    assert!(commits >= 16);
}

async fn pop_remove_clear_keys_contains(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    for (k, v) in [("b", "2"), ("a", "1"), ("c", "3"), ("d", "4")] {
        client.get(&format!("/put?key={k}&value={v}")).await;
    }
    let token = client.token.clone().unwrap();
    assert_eq!(client.get("/keys").await.body, "a,b,c,d");
    assert_eq!(client.get("/contains?key=a").await.body, "true");
    assert_eq!(client.get("/contains?key=z").await.body, "false");

    let res = client.get("/pop?key=a").await;
    assert_eq!(res.body, "1");
    assert!(res.set_cookie().is_some(), "pop of a present key commits");
    assert_eq!(client.get("/get?key=a").await.body, NONE);
    assert_eq!(client.get("/contains?key=a").await.body, "false");
    assert_eq!(client.get("/pop?key=a").await.body, NONE);

    client.get("/remove?key=b").await;
    assert_eq!(client.get("/keys").await.body, "c,d");
    client.get("/remove?key=nothing").await;
    assert_eq!(client.get("/keys").await.body, "c,d");

    let res = client.get("/clear").await;
    assert_eq!(res.new_token(), token, "clear keeps the token");
    assert_eq!(client.get("/keys").await.body, "");
    assert_eq!(client.get("/get?key=c").await.body, NONE);
    // The session lives on under the same token.
    client.get("/put?key=e&value=5").await;
    assert_eq!(client.token.as_deref(), Some(token.as_str()));
    assert_eq!(client.get("/keys").await.body, "e");
}

fn assert_expiring_cookie(res: &Resp, name: &str) {
    let raw = res.set_cookie_headers();
    assert_eq!(raw.len(), 1, "{res:?}");
    let cookie = Cookie::parse(raw[0].clone()).unwrap();
    assert_eq!(cookie.name(), name);
    assert_eq!(cookie.value(), "", "{raw:?}");
    assert_eq!(cookie.max_age(), Some(time::Duration::ZERO), "{raw:?}");
    assert!(
        raw[0].contains("Expires=Thu, 01 Jan 1970 00:00:01 GMT"),
        "{raw:?}"
    );
    assert_eq!(cookie.path(), Some("/"));
}

async fn destroy_expires_cookie_and_record(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    assert!(backend.stored(&token).await);

    let res = client.get("/destroy").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_expiring_cookie(&res, "session");
    assert_eq!(
        res.header_values("cache-control"),
        [r#"no-cache="Set-Cookie""#]
    );
    assert!(client.token.is_none(), "the jar dropped the cookie");
    assert!(!backend.stored(&token).await, "the record is gone");
    assert_eq!(backend.stored_count().await, 0);

    // The old token loads nothing, and is not revived by a write.
    let mut old = Client::with_token(&app, &token);
    assert_eq!(old.get("/get?key=a").await.body, NONE);
    let res = old.get("/put?key=b&value=2").await;
    assert_ne!(res.new_token(), token);
    assert_eq!(old.get("/keys").await.body, "b");
    assert!(!backend.stored(&token).await);
}

async fn destroy_then_write_starts_new_session(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    let res = client.get("/destroy_put?key=b&value=2").await;
    let new = res.new_token();
    assert_ne!(new, token);
    assert_eq!(client.get("/keys").await.body, "b");
    assert!(!backend.stored(&token).await);
    assert_eq!(backend.stored_count().await, 1);
}

async fn renew_token_replaces_token_and_keeps_data(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    client.get("/put?key=b&value=2").await;
    let old = client.token.clone().unwrap();

    let res = client.get("/renew").await;
    assert_eq!(res.status, StatusCode::OK);
    let new = res.new_token();
    assert_ne!(new, old);
    assert_eq!(client.get("/keys").await.body, "a,b");
    assert_eq!(client.get("/get?key=b").await.body, "2");
    assert!(!backend.stored(&old).await, "old record deleted");
    assert!(backend.stored(&new).await, "new record stored");
    assert_eq!(backend.stored_count().await, 1);

    let mut attacker = Client::with_token(&app, &old);
    assert_eq!(attacker.get("/keys").await.body, "");
    assert_eq!(attacker.get("/get?key=a").await.body, NONE);

    // Renewing a brand-new session works too.
    let mut fresh = Client::new(&app);
    let res = fresh.get("/renew").await;
    assert_eq!(res.status, StatusCode::OK);
    res.new_token();
}

async fn persist_off_unless_remember_me(backend: Backend) {
    let app = backend.app(|l| l.persist(false)).await;
    let mut client = Client::new(&app);
    let session_cookie = |res: &Resp| {
        let c = res.set_cookie().expect("Set-Cookie");
        c.max_age().is_none() && c.expires().is_none()
    };
    let res = client.get("/put?key=a&value=1").await;
    assert!(session_cookie(&res), "{res:?}");

    let res = client.get("/remember?on=true").await;
    assert!(
        !session_cookie(&res),
        "remember-me makes it persistent: {res:?}"
    );
    let max_age = res.set_cookie().unwrap().max_age().unwrap().whole_seconds();
    assert!((86_399..=86_401).contains(&max_age));

    // Remember-me is stored with the session: a later, unrelated write keeps it.
    let res = client.get("/put?key=b&value=2").await;
    assert!(!session_cookie(&res), "{res:?}");
    assert_eq!(client.get("/get?key=a").await.body, "1");

    let res = client.get("/remember?on=false").await;
    assert!(session_cookie(&res), "{res:?}");
    let res = client.get("/put?key=c&value=3").await;
    assert!(session_cookie(&res), "{res:?}");

    // A new session with remember-me from its first request.
    let res = Client::new(&app).get("/remember?on=true").await;
    assert!(!session_cookie(&res), "{res:?}");
}

async fn idle_timeout_slides_then_expires(backend: Backend) {
    let app = backend
        .app(|l| {
            l.lifetime(Duration::from_secs(4))
                .idle_timeout(Duration::from_secs(1))
        })
        .await;
    let mut client = Client::new(&app);
    let res = client.get("/put?key=a&value=1").await;
    let max_age = res.set_cookie().unwrap().max_age().unwrap().whole_seconds();
    assert!(
        (1..=2).contains(&max_age),
        "cookie follows the idle expiry: {max_age}"
    );
    let token = client.token.clone().unwrap();
    let mut touched = 0;
    for _ in 0..5 {
        sleep_ms(500).await;
        let res = client.get("/get?key=a").await;
        assert_eq!(res.body, "1", "still alive while used");
        if let Some(cookie) = res.set_cookie() {
            assert_eq!(cookie.value(), token);
            touched += 1;
        }
    }
    // Every read came more than a tenth of the idle timeout after the previous touch.
    assert_eq!(touched, 5, "reads of an idle-timeout session refresh it");
    sleep_ms(1_300).await;
    assert_eq!(
        client.get("/get?key=a").await.body,
        NONE,
        "idle for too long"
    );
    assert!(!backend.stored(&token).await);
}

async fn absolute_lifetime_ends_active_session(backend: Backend) {
    let app = backend
        .app(|l| {
            l.lifetime(Duration::from_secs(2))
                .idle_timeout(Duration::from_secs(1))
        })
        .await;
    let mut client = Client::new(&app);
    let start = Instant::now();
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    loop {
        sleep_ms(400).await;
        let elapsed = start.elapsed();
        let body = client.get("/get?key=a").await.body;
        if elapsed < Duration::from_millis(1_800) {
            assert_eq!(body, "1", "alive at {elapsed:?}");
        } else if elapsed > Duration::from_millis(2_100) {
            assert_eq!(body, NONE, "past the lifetime at {elapsed:?}");
            break;
        }
    }
    assert!(!backend.stored(&token).await);
}

async fn reads_near_the_deadline_do_not_rewrite(backend: Backend) {
    let app = backend
        .app(|l| {
            l.lifetime(Duration::from_secs(3))
                .idle_timeout(Duration::from_secs(2))
        })
        .await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await; // expiry = now + 2.2 s, deadline = now + 3 s
    sleep_ms(1_000).await;
    // Less than the idle timeout remains: this read touches, and the expiry reaches the deadline.
    let res = client.get("/get?key=a").await;
    assert!(res.set_cookie().is_some(), "touched: {res:?}");
    // From now on a touch cannot move the expiry (it is capped by the deadline): reads made
    // within a tenth of the idle timeout must not rewrite the session or resend the cookie.
    let before = backend.calls.get();
    for _ in 0..3 {
        let res = client.get("/get?key=a").await;
        assert_eq!(res.body, "1");
        assert!(res.set_cookie_headers().is_empty(), "{res:?}");
    }
    let after = backend.calls.get();
    assert_eq!(
        after.1 - before.1,
        0,
        "commits for reads that cannot extend the session"
    );
}

async fn expired_record_is_deleted(backend: Backend) {
    let app = backend.app(|l| l.lifetime(Duration::from_secs(1))).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    // The store expires it (Redis: the key's PTTL; memory: the record's expiry).
    let ttl = backend.ttl_ms(&token).await.expect("a live record");
    assert!((1..=1_000).contains(&ttl), "expiring record, TTL {ttl} ms");
    sleep_ms(1_200).await;
    assert_eq!(client.get("/get?key=a").await.body, NONE);
    assert_eq!(
        backend.records_held().await,
        0,
        "the expired record is dropped"
    );
    assert!(!backend.stored(&token).await);
    // A write with the expired token does not bring it back.
    let res = client.get("/put?key=b&value=2").await;
    assert_ne!(res.new_token(), token);
    assert!(!backend.stored(&token).await);
}

async fn deadline_in_the_past_deletes_at_commit(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    let res = client.get("/set_deadline?secs=-10").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_expiring_cookie(&res, "session");
    assert_eq!(backend.records_held().await, 0, "deleted, not kept forever");
    assert!(!backend.stored(&token).await);
    let mut old = Client::with_token(&app, &token);
    assert_eq!(old.get("/get?key=a").await.body, NONE);

    // Same for a new session created with a past deadline.
    let res = Client::new(&app).get("/set_deadline?secs=-10").await;
    assert_expiring_cookie(&res, "session");
    assert_eq!(backend.records_held().await, 0);

    // And for a deadline before 1970 (about 63 years ago), on both stores alike.
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let res = client.get("/set_deadline?secs=-2000000000").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_expiring_cookie(&res, "session");
    assert_eq!(backend.records_held().await, 0);
    let res = Client::new(&app)
        .get("/set_deadline?secs=-2000000000")
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_expiring_cookie(&res, "session");
    assert_eq!(backend.records_held().await, 0);
}

async fn set_deadline_and_deadline(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    // A new session's deadline is now + lifetime (24 h).
    let d: i64 = client.get("/deadline").await.body.parse().unwrap();
    assert_near(d, now_ms() + 86_400_000, 2_000, "default deadline");
    client.get("/put?key=a&value=1").await;
    let d: i64 = client.get("/deadline").await.body.parse().unwrap();
    assert_near(d, now_ms() + 86_400_000, 2_000, "stored deadline");

    let res = client.get("/set_deadline?secs=3600").await;
    let max_age = res.set_cookie().unwrap().max_age().unwrap().whole_seconds();
    assert!((3_599..=3_601).contains(&max_age), "{max_age}");
    let d: i64 = client.get("/deadline").await.body.parse().unwrap();
    assert_near(d, now_ms() + 3_600_000, 2_000, "set deadline");
    assert_eq!(client.get("/get?key=a").await.body, "1");
    let token = client.token.clone().unwrap();
    let ttl = backend.ttl_ms(&token).await.expect("a live record");
    assert_near(ttl, 3_600_000, 2_000, "TTL in the store after set_deadline");
}

async fn merge_pulls_in_other_session(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut a = Client::new(&app);
    a.get("/put?key=own&value=a").await;
    a.get("/put?key=shared&value=from-a").await;
    let mut b = Client::new(&app);
    b.get("/put?key=other&value=b").await;
    b.get("/put?key=shared&value=from-b").await;
    b.get("/set_deadline?secs=200000").await;
    let b_token = b.token.clone().unwrap();
    let a_token = a.token.clone().unwrap();

    let res = a.get(&format!("/merge?token={b_token}")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(a.token.as_deref(), Some(a_token.as_str()));
    assert_eq!(a.get("/keys").await.body, "other,own,shared");
    assert_eq!(
        a.get("/get?key=shared").await.body,
        "from-b",
        "its values win"
    );
    let d: i64 = a.get("/deadline").await.body.parse().unwrap();
    assert_near(d, now_ms() + 200_000_000, 3_000, "the later deadline wins");
    assert!(
        !backend.stored(&b_token).await,
        "the other session is deleted"
    );
    assert_eq!(b.get("/keys").await.body, "");

    // Unknown, malformed, or own tokens are ignored.
    for token in [
        made_up_token("nobody"),
        "garbage".to_owned(),
        a_token.clone(),
    ] {
        let res = a.get(&format!("/merge?token={token}")).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(a.get("/keys").await.body, "other,own,shared");
    }
    assert!(backend.stored(&a_token).await);
}

async fn hash_token_in_store(backend: Backend) {
    let app = backend.app(|l| l.hash_token_in_store(true)).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    assert_valid_token(&token);
    assert_eq!(client.get("/get?key=a").await.body, "1");
    assert!(
        backend.stored(&hashed(&token)).await,
        "stored under the hash"
    );
    assert!(!backend.stored(&token).await, "not under the raw token");
    if let Some(i) = backend.inspector() {
        let keys = i.keys().await;
        assert_eq!(keys, [format!("scs:session:{}", hashed(&token))]);
        assert!(keys.iter().all(|k| !k.contains(&token)));
    }

    // Renew and destroy work on the hashed ids.
    let res = client.get("/renew").await;
    let new = res.new_token();
    assert!(!backend.stored(&hashed(&token)).await);
    assert!(backend.stored(&hashed(&new)).await);
    assert_eq!(client.get("/get?key=a").await.body, "1");
    client.get("/destroy").await;
    assert!(!backend.stored(&hashed(&new)).await);
    assert_eq!(backend.stored_count().await, 0);

    // A layer without hashing does not find hashed sessions.
    let mut c = Client::new(&app);
    c.get("/put?key=x&value=y").await;
    let plain = backend.app(|l| l).await;
    let t = c.token.clone().unwrap();
    assert_eq!(
        Client::with_token(&plain, &t).get("/get?key=x").await.body,
        NONE
    );
}

async fn store_failure_gives_error_response(mut backend: Backend) {
    let app = backend.app(|l| l).await;
    let custom = backend
        .app(|l| {
            l.error_handler(|e| {
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header("x-session-error", e.to_string().len().to_string())
                    .body(())
                    .unwrap()
            })
        })
        .await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    backend.break_store();

    let checks = [
        ("/get?key=a", true),
        ("/peek?key=a", true),
        ("/put?key=b&value=2", true),
        ("/read_put?key=b&value=2", true),
        ("/renew", true),
        ("/put?key=b&value=2", false),
    ];
    let mut set = JoinSet::new();
    for (uri, with_cookie) in checks {
        for app in [app.clone(), custom.clone()] {
            let token = token.clone();
            set.spawn(async move {
                let mut c = if with_cookie {
                    Client::with_token(&app, &token)
                } else {
                    Client::new(&app)
                };
                (uri, c.get(uri).await)
            });
        }
    }
    while let Some(done) = set.join_next().await {
        let (uri, res) = done.expect("no panic");
        match res.status {
            StatusCode::INTERNAL_SERVER_ERROR => assert!(res.body.is_empty(), "{uri}: {res:?}"),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    res.headers.contains_key("x-session-error"),
                    "{uri}: {res:?}"
                )
            }
            _ => panic!("{uri}: a store failure must give the error response: {res:?}"),
        }
        assert!(res.set_cookie_headers().is_empty(), "{uri}: {res:?}");
        assert!(res.varies_on_cookie(), "{uri}: {res:?}");
    }
    // A request that does not use the session still works.
    let res = Client::with_token(&app, &token).get("/ping").await;
    assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "pong"));
}

async fn stalled_store_gives_error_response(backend: Backend) {
    let app = backend
        .app(|l| l.store_timeout(Duration::from_millis(300)))
        .await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let stall = Instant::now();
    backend.stall(1_500).await;
    // Without the store timeout these would answer 200 once the stall is over.
    let res = client.get("/get?key=a").await;
    if backend.cache.is_some() {
        // The local cache holds what the write wrote: the read needs no Redis.
        assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "1"));
    } else {
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR, "{res:?}");
    }
    let res = client.get("/put?key=b&value=2").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR, "{res:?}");
    assert!(res.set_cookie_headers().is_empty());
    // Once the store answers again, so does the session.
    backend.unstall();
    if let Some(left) = Duration::from_millis(1_600).checked_sub(stall.elapsed()) {
        tokio::time::sleep(left).await;
    }
    assert_eq!(client.get("/get?key=a").await.body, "1");
}

async fn concurrent_clients_never_mix_sessions(backend: Backend) {
    let app = backend.app(|l| l).await;
    let until = Instant::now() + Duration::from_secs(2);
    let mut set = JoinSet::new();
    for id in 0..32 {
        let app = app.clone();
        set.spawn(async move {
            let mut client = Client::new(&app);
            let mut n = 0;
            while n == 0 || Instant::now() < until {
                n += 1;
                let value = format!("client{id}-{n}");
                let res = client.get(&format!("/put?key=mine&value={value}")).await;
                assert_eq!(res.status, StatusCode::OK);
                let res = client.get("/get?key=mine").await;
                assert_eq!(res.body, value, "client {id} got another's value");
            }
            client.token.unwrap()
        });
    }
    let mut tokens = HashSet::new();
    while let Some(token) = set.join_next().await {
        assert!(tokens.insert(token.expect("client task")));
    }
    assert_eq!(tokens.len(), 32);
    assert_eq!(backend.stored_count().await, 32);
}

async fn concurrent_writes_of_one_session_are_all_kept(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=base&value=0").await;
    let token = client.token.clone().unwrap();
    // Each request loads the session, then writes once all eight have loaded it.
    let writes: Vec<(String, String)> =
        (0..8).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    for c in overlapping_writes(&app, &token, &writes).await {
        assert_eq!(c.token.as_deref(), Some(token.as_str()), "same session");
    }
    assert_eq!(
        client.get("/keys").await.body,
        "base,k0,k1,k2,k3,k4,k5,k6,k7"
    );
    for i in 0..8 {
        assert_eq!(
            client.get(&format!("/get?key=k{i}")).await.body,
            format!("v{i}")
        );
    }
}

async fn clear_applies_to_what_is_stored_when_it_commits(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    let mut slow = Client::with_token(&app, &token);
    let gate = Gate::new();
    let uri = format!("/clear?gate={}", gate.name());
    let clearing = tokio::spawn(async move { slow.get(&uri).await });
    gate.arrived(1).await;
    // Committed before the clear commits: cleared with the rest.
    client.get("/put?key=b&value=2").await;
    assert_eq!(client.get("/keys").await.body, "a,b");
    gate.open();
    let res = clearing.await.unwrap();
    assert_eq!(res.new_token(), token);
    assert_eq!(client.get("/keys").await.body, "");
    // Committed after: survives.
    client.get("/put?key=c&value=3").await;
    assert_eq!(client.get("/keys").await.body, "c");
}

async fn destroy_is_not_undone_by_a_concurrent_write(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    let mut slow = Client::with_token(&app, &token);
    // Loads the session (with `a`), then writes `b` after the destroy below has committed.
    let gate = Gate::new();
    let uri = format!("/read_put?key=b&value=2&gate={}", gate.name());
    let writing = tokio::spawn(async move {
        let res = slow.get(&uri).await;
        (res, slow)
    });
    gate.arrived(1).await;
    assert_expiring_cookie(&client.get("/destroy").await, "session");
    gate.open();
    let (res, mut slow) = writing.await.unwrap();
    assert_eq!(res.status, StatusCode::OK);
    let new = res.new_token();
    assert_ne!(new, token, "the destroyed session came back");
    assert!(!backend.stored(&token).await);
    assert_eq!(
        slow.get("/keys").await.body,
        "b",
        "only this request's write"
    );
    assert_eq!(backend.records_held().await, 1);
}
