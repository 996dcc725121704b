//! Settings are checked when the layer is configured: every invalid value panics with the
//! setting's name, every valid edge value is taken and shows in the cookie. Plus the headers
//! nested layers add beside a handler's own `Vary` and `Cache-Control`. In-memory store only.

use std::{
    panic::{UnwindSafe, catch_unwind},
    time::Duration,
};

use axum::{Router, body::Body, routing::get};
use http::{
    HeaderMap, HeaderValue, Request, StatusCode,
    header::{self, HeaderName},
};
use tower_scs::{MemoryStore, Session, SessionLayer, Sessions};

use crate::harness::{Backend, Client, Resp, send};

/// Runs `configure` on a fresh layer and returns its panic message; fails if it did not panic.
fn panic_message(configure: impl FnOnce(SessionLayer) -> SessionLayer + UnwindSafe) -> String {
    let payload = catch_unwind(|| {
        let _ = configure(SessionLayer::new(MemoryStore::new()));
    })
    .expect_err("the setting was accepted");
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "<not a string>".into(), |s| (*s).to_owned()),
    }
}

/// Asserts `configure` panics with a message naming `SessionLayer::<setting>` and `shown`
/// (the refused value, as `Debug` prints it).
#[track_caller]
fn assert_refused(
    setting: &str,
    shown: &str,
    configure: impl FnOnce(SessionLayer) -> SessionLayer + UnwindSafe,
) {
    let message = panic_message(configure);
    let prefix = format!("SessionLayer::{setting}: {shown} is not a valid ");
    assert!(message.starts_with(&prefix), "{message:?} for {shown}");
}

#[test]
#[should_panic(
    expected = r#"SessionLayer::cookie_name: "a;b" is not a valid cookie name (RFC 6265 token)"#
)]
fn the_message_names_the_setting_the_value_and_the_rule() {
    let _ = SessionLayer::new(MemoryStore::new()).cookie_name("a;b");
}

#[test]
fn cookie_names_that_are_not_tokens_are_refused() {
    let names = [
        "",
        "a=b",
        "a;b",
        "my session",
        "a,b",
        "a\tb",
        "a\nb",
        "a\u{7f}",
        "a\"b",
        "a/b",
        "(a)",
        "a:b",
        "a@b",
        "a[b]",
        "a{b}",
        "a?b",
        "a\\b",
        "<a>",
        "é",
    ];
    for name in names {
        assert_refused("cookie_name", &format!("{name:?}"), |l| l.cookie_name(name));
    }
}

#[test]
fn cookie_domains_that_are_not_host_names_are_refused() {
    let domains = [
        "",
        ".",
        "x.com; SameSite=None",
        "x.com;",
        "x .com",
        " x.com",
        "x.com\n",
        "x.com\r\nSet-Cookie: a=b",
        "a..b",
        "..x.com",
        "x.com.",
        "x_y.com",
        "x.com/",
        "x.com:80",
        "[::1]",
        "exämple.com",
    ];
    for domain in domains {
        assert_refused("cookie_domain", &format!("{domain:?}"), |l| {
            l.cookie_domain(domain)
        });
    }
}

#[test]
fn cookie_paths_that_are_not_path_values_are_refused() {
    let paths = [
        "",
        "app",
        " /",
        "/a;b",
        "/a; Domain=evil.com",
        "/a\nb",
        "/a\rb",
        "/a\0",
        "/a\u{7f}",
        "/a\tb",
        "/é",
    ];
    for path in paths {
        assert_refused("cookie_path", &format!("{path:?}"), |l| l.cookie_path(path));
    }
}

#[test]
fn durations_under_a_millisecond_and_zero_limits_are_refused() {
    for d in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(999),
    ] {
        let shown = format!("{d:?}");
        assert_refused("lifetime", &shown, move |l| l.lifetime(d));
        assert_refused("idle_timeout", &shown, move |l| l.idle_timeout(d));
    }
    assert_refused("store_timeout", "0ns", |l| l.store_timeout(Duration::ZERO));
    assert_refused("max_key_bytes", "Some(0)", |l| l.max_key_bytes(Some(0)));
    assert_refused("max_session_bytes", "Some(0)", |l| {
        l.max_session_bytes(Some(0))
    });
}

/// The `Set-Cookie` a first `/put` gets from the test app behind a configured layer.
async fn first_cookie(configure: impl FnOnce(SessionLayer) -> SessionLayer) -> String {
    let app = Backend::memory().app(configure).await;
    let res = Client::new(&app).get("/put?key=a&value=1").await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    let all = res.set_cookie_headers();
    assert_eq!(all.len(), 1, "{all:?}");
    all[0].clone()
}

/// The `Max-Age` of a `Set-Cookie` value.
fn max_age(set_cookie: &str) -> &str {
    let (_, rest) = set_cookie.split_once("; Max-Age=").expect("Max-Age");
    rest.split(';').next().unwrap()
}

#[tokio::test]
async fn every_token_character_makes_a_cookie_name_that_round_trips() {
    let name = "!#$%&'*+-.^_`|~09AZaz";
    let backend = Backend::memory();
    let app = backend.app(|l| l.cookie_name(name)).await;
    let mut client = Client::named(&app, name);
    let res = client.get("/put?key=a&value=1").await;
    let raw = res.set_cookie_headers().join("\n");
    assert!(raw.starts_with(&format!("{name}=")), "{raw}");
    assert_eq!(res.set_cookie().unwrap().name(), name);
    assert_eq!(
        client.get("/get?key=a").await.body,
        "1",
        "read back by name"
    );
}

#[tokio::test]
async fn edge_domains_and_paths_show_in_the_cookie() {
    // The cookie crate drops a leading dot, which RFC 6265 user agents ignore anyway.
    for domain in [
        ".a-b.example.com",
        "localhost",
        "127.0.0.1",
        "X-1.Example.COM",
    ] {
        let raw = first_cookie(|l| l.cookie_domain(domain)).await;
        let attribute = format!("; Domain={}", domain.trim_start_matches('.'));
        assert!(raw.contains(&(attribute + ";")), "{domain}: {raw}");
    }
    for path in ["/", "/app/", "/a b/x=y,z~!\"", "/%C3%A9"] {
        let raw = first_cookie(|l| l.cookie_path(path)).await;
        assert!(raw.contains(&format!("; Path={path};")), "{path}: {raw}");
    }
}

#[tokio::test]
async fn one_millisecond_lifetimes_and_idle_timeouts_are_taken() {
    // Max-Age is rounded up to the second, as in SCS.
    let raw = first_cookie(|l| l.lifetime(Duration::from_millis(1))).await;
    assert_eq!(max_age(&raw), "1", "{raw}");
    let raw = first_cookie(|l| l.idle_timeout(Duration::from_millis(1))).await;
    assert_eq!(max_age(&raw), "1", "{raw}");
}

#[tokio::test]
async fn the_longest_durations_are_taken_and_capped_at_400_days_in_the_cookie() {
    const FOUR_HUNDRED_DAYS_ROUNDED_UP: &str = "34560001";
    let raw = first_cookie(|l| l.lifetime(Duration::MAX)).await;
    assert_eq!(max_age(&raw), FOUR_HUNDRED_DAYS_ROUNDED_UP, "{raw}");
    // Used to overflow at request time when the store's 10% slack was added.
    let raw = first_cookie(|l| l.lifetime(Duration::MAX).idle_timeout(Duration::MAX)).await;
    assert_eq!(max_age(&raw), FOUR_HUNDRED_DAYS_ROUNDED_UP, "{raw}");
    let raw = first_cookie(|l| l.idle_timeout(Duration::MAX)).await;
    assert!(
        ["86400", "86401"].contains(&max_age(&raw)),
        "the 24 h lifetime: {raw}"
    );
}

#[tokio::test]
async fn the_smallest_limits_are_taken() {
    let backend = Backend::memory();
    let app = backend.app(|l| l.max_key_bytes(Some(1))).await;
    let mut client = Client::new(&app);
    assert_eq!(
        client.get("/put?key=a&value=1").await.status,
        StatusCode::OK
    );
    let res = client.get("/put?key=ab&value=1").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(client.get("/get?key=a").await.body, "1");

    // `"1"` under `a` is 4 bytes.
    let app = backend.app(|l| l.max_session_bytes(Some(4))).await;
    let mut client = Client::new(&app);
    assert_eq!(
        client.get("/put?key=a&value=1").await.status,
        StatusCode::OK
    );
    let res = client.get("/put?key=a&value=12").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);

    let app = backend
        .app(|l| {
            l.max_session_bytes(None)
                .store_timeout(Duration::from_millis(1))
        })
        .await;
    let res = Client::new(&app).get("/put?key=a&value=1").await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
}

/// `Cache-Control` and `Vary` as the handlers below set them.
const OWN_CACHE_CONTROL: &str = "private, max-age=0";
const OWN_VARY: &str = "Accept-Encoding";
const NO_CACHE_SET_COOKIE: &str = r#"no-cache="Set-Cookie""#;

/// Headers with these values, in order (a name may repeat).
fn headers(pairs: &[(HeaderName, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name, HeaderValue::from_static(value));
    }
    map
}

/// Writes to the inner (`Session`) and the outer layer's session.
fn write_both(inner: &Session, sessions: &Sessions) {
    inner.insert("who", "inner");
    sessions
        .get("outer")
        .expect("outer layer")
        .insert("who", "outer");
}

async fn both_own_headers(inner: Session, sessions: Sessions) -> (HeaderMap, &'static str) {
    write_both(&inner, &sessions);
    let own = [
        (header::CACHE_CONTROL, OWN_CACHE_CONTROL),
        (header::VARY, OWN_VARY),
    ];
    (headers(&own), "ok")
}

async fn both(inner: Session, sessions: Sessions) -> &'static str {
    write_both(&inner, &sessions);
    "ok"
}

async fn outer_own_headers(sessions: Sessions) -> (HeaderMap, &'static str) {
    sessions.get("outer").unwrap().insert("who", "outer");
    let own = [
        (header::CACHE_CONTROL, "private"),
        (header::CACHE_CONTROL, "max-age=0"),
        (header::VARY, "accept-encoding, COOKIE"),
    ];
    (headers(&own), "ok")
}

async fn already_said(inner: Session, sessions: Sessions) -> (HeaderMap, &'static str) {
    write_both(&inner, &sessions);
    let own = [
        (header::CACHE_CONTROL, r#"private, No-Cache="set-cookie""#),
        (header::VARY, "*"),
    ];
    (headers(&own), "ok")
}

async fn quoted_comma(inner: Session) -> (HeaderMap, &'static str) {
    inner.insert("who", "inner");
    let own = [(header::CACHE_CONTROL, r#"no-cache="Set-Cookie, X-Token""#)];
    (headers(&own), "ok")
}

/// Fails the inner layer: its key limit is 1 byte.
async fn fail_inner(inner: Session) -> &'static str {
    inner.insert("too long", 1);
    "ok"
}

/// The routes above behind two session layers, cookies `inner` (inner) and `outer`.
fn nested_app() -> Router {
    let inner = SessionLayer::new(MemoryStore::new())
        .cookie_name("inner")
        .max_key_bytes(Some(3));
    let outer = SessionLayer::new(MemoryStore::new()).cookie_name("outer");
    Router::new()
        .route("/both_own_headers", get(both_own_headers))
        .route("/both", get(both))
        .route("/outer_own_headers", get(outer_own_headers))
        .route("/already_said", get(already_said))
        .route("/quoted_comma", get(quoted_comma))
        .route("/fail_inner", get(fail_inner))
        .route("/ping", get(|| async { "pong" }))
        .layer(inner)
        .layer(outer)
}

async fn call(app: &Router, path: &str) -> Resp {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

/// The names of the cookies a response sets.
fn cookie_names(res: &Resp) -> Vec<String> {
    let mut names: Vec<String> = (res.set_cookie_headers().iter())
        .map(|c| c.split('=').next().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn nested_layers_merge_into_the_handlers_cache_control_and_vary_once() {
    let app = nested_app();
    let res = call(&app, "/both_own_headers").await;
    assert_eq!(cookie_names(&res), ["inner", "outer"], "{res:?}");
    assert_eq!(
        res.header_values("cache-control"),
        [format!("{OWN_CACHE_CONTROL}, {NO_CACHE_SET_COOKIE}")],
        "one value, the directive once"
    );
    assert_eq!(res.header_values("vary"), [OWN_VARY, "Cookie"]);

    // Several handler values become one; a Vary listing cookie in any case is left alone.
    let res = call(&app, "/outer_own_headers").await;
    assert_eq!(cookie_names(&res), ["outer"], "{res:?}");
    assert_eq!(
        res.header_values("cache-control"),
        [format!("private, max-age=0, {NO_CACHE_SET_COOKIE}")]
    );
    assert_eq!(res.header_values("vary"), ["accept-encoding, COOKIE"]);
}

#[tokio::test]
async fn nested_layers_without_handler_headers_add_each_header_once() {
    let app = nested_app();
    let res = call(&app, "/both").await;
    assert_eq!(cookie_names(&res), ["inner", "outer"], "{res:?}");
    assert_eq!(res.header_values("cache-control"), [NO_CACHE_SET_COOKIE]);
    assert_eq!(res.header_values("vary"), ["Cookie"]);

    let res = call(&app, "/ping").await;
    assert!(res.set_cookie_headers().is_empty(), "{res:?}");
    assert!(res.header_values("cache-control").is_empty(), "{res:?}");
    assert_eq!(res.header_values("vary"), ["Cookie"]);

    // The inner layer's error response: Vary once, no cookie, no Cache-Control.
    let res = call(&app, "/fail_inner").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.set_cookie_headers().is_empty(), "{res:?}");
    assert!(res.header_values("cache-control").is_empty(), "{res:?}");
    assert_eq!(res.header_values("vary"), ["Cookie"]);
}

#[tokio::test]
async fn a_handler_that_already_said_it_is_left_alone() {
    let app = nested_app();
    let res = call(&app, "/already_said").await;
    assert_eq!(cookie_names(&res), ["inner", "outer"], "{res:?}");
    assert_eq!(
        res.header_values("cache-control"),
        [r#"private, No-Cache="set-cookie""#]
    );
    assert_eq!(res.header_values("vary"), ["*"]);

    // A comma inside a quoted list does not end the directive: it is not the same one.
    let res = call(&app, "/quoted_comma").await;
    assert_eq!(
        res.header_values("cache-control"),
        [format!(
            r#"no-cache="Set-Cookie, X-Token", {NO_CACHE_SET_COOKIE}"#
        )]
    );
}
