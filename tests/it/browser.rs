//! The session cookie in a real browser: headless Chromium, driven over WebDriver by a
//! chromedriver the harness starts (see `harness::browser`), against the test app served on
//! a loopback TCP port. What a browser does with the cookie's attributes (HttpOnly, expiry,
//! SameSite, the `__Host-` prefix) is shown here, not assumed.
//!
//! `localhost:<port>` and `127.0.0.1:<port>` reach the same server but are two sites for the
//! browser, each with its own cookies: the cross-site test posts from one to the other.

use std::time::Duration;

use axum::{
    Router,
    extract::Query,
    response::Html,
    routing::{get, post},
};
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use serde_json::json;
use tower_scs::{Error, MemoryStore, Session, SessionLayer};

use crate::harness::{
    NONE, app, assert_near, assert_valid_token,
    browser::{Browser, Chromedriver, Served},
    now_ms,
};

/// The layers' lifetime: not the default (24 h), so that a cookie's expiry shows it is the
/// layer's.
const LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);

fn layer() -> SessionLayer {
    SessionLayer::new(MemoryStore::new()).lifetime(LIFETIME)
}

#[derive(Deserialize)]
struct Key {
    key: String,
}

#[derive(Deserialize)]
struct Action {
    action: String,
}

/// The test app, and two routes of the browser tests': `POST /post_get?key=K` (behind the
/// layer) shows the session's value of `K` as `#seen`, and `GET /form?action=URL` is a page
/// whose form posts itself to `URL` as soon as it loads.
fn browser_app(layer: SessionLayer) -> Router {
    let posted = Router::new()
        .route("/post_get", post(post_get))
        .layer(layer.clone());
    app(layer).merge(posted).route("/form", get(form))
}

async fn post_get(s: Session, Query(q): Query<Key>) -> Result<Html<String>, Error> {
    let value = s.get::<String>(&q.key).await?;
    let value = value.unwrap_or_else(|| NONE.into());
    Ok(Html(format!(r#"<p id="seen">{}</p>"#, escape(&value))))
}

async fn form(Query(q): Query<Action>) -> Html<String> {
    Html(format!(
        r#"<!doctype html><form id="f" method="post" action="{}"></form>
<script>document.getElementById("f").submit()</script>"#,
        escape(&q.action)
    ))
}

fn escape(text: &str) -> String {
    (text.replace('&', "&amp;").replace('<', "&lt;")).replace('"', "&quot;")
}

/// The cookie's expiry, in Unix seconds; `None` for a session cookie.
fn expiry(cookie: &Cookie<'_>) -> Option<i64> {
    cookie.expires_datetime().map(|at| at.unix_timestamp())
}

/// Asserts that the cookie expires when the layer's lifetime, started now, ends.
#[track_caller]
fn assert_expires_with_lifetime(cookie: &Cookie<'_>) {
    let at = expiry(cookie).unwrap_or_else(|| panic!("{cookie} is a session cookie"));
    let end = now_ms() / 1000 + LIFETIME.as_secs() as i64;
    assert_near(at, end, 2, "the cookie's expiry, against now + lifetime");
}

/// The session cookie of the browser's current page; panics when it has none.
async fn session_cookie(browser: &Browser, name: &str) -> Cookie<'static> {
    let cookie = browser.cookie(name).await;
    let all = browser.cookies().await;
    cookie.unwrap_or_else(|| panic!("no {name} cookie in the browser's jar: {all:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_http_only_and_the_browser_sends_it() {
    let served = Served::start(browser_app(layer())).await;
    let driver = Chromedriver::start().await;
    let browser = driver.open(&driver.profile()).await;

    let put = served.url("127.0.0.1", "/put?key=k&value=v");
    assert_eq!(browser.read(&put).await, "ok");
    let cookie = session_cookie(&browser, "session").await;
    assert_valid_token(cookie.value());
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(cookie.same_site(), Some(SameSite::Lax), "{cookie}");
    assert_eq!(cookie.path(), Some("/"), "{cookie}");

    // Scripts see the page's other cookies, not the session's.
    let script = r#"document.cookie = "visible=1; path=/"; return document.cookie"#;
    assert_eq!(browser.execute(script).await, json!("visible=1"));

    let get = served.url("127.0.0.1", "/get?key=k");
    assert_eq!(
        browser.read(&get).await,
        "v",
        "the browser sends the cookie"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persist_the_cookie_ends_with_the_browser() {
    let served = Served::start(browser_app(layer().persist(false))).await;
    let driver = Chromedriver::start().await;
    let profile = driver.profile();
    let browser = driver.open(&profile).await;

    let put = served.url("127.0.0.1", "/put?key=k&value=v");
    assert_eq!(browser.read(&put).await, "ok");
    let cookie = session_cookie(&browser, "session").await;
    assert_eq!(expiry(&cookie), None, "a browser-session cookie: {cookie}");
    // A persistent cookie beside it, which the restart must keep: the same profile is back.
    let script = r#"document.cookie = "kept=1; path=/; max-age=3600""#;
    browser.execute(script).await;

    browser.quit().await;
    let browser = driver.open(&profile).await;
    let get = served.url("127.0.0.1", "/get?key=k");
    assert_eq!(browser.read(&get).await, NONE, "signed out by the restart");
    assert!(browser.cookie("session").await.is_none());
    let kept = browser.cookie("kept").await;
    assert_eq!(kept.map(|c| c.value().to_owned()).as_deref(), Some("1"));
}

/// Puts `k=v` in a new browser, then visits `then` (if any) and checks the session cookie
/// expires with the layer's lifetime; restarts the browser, and checks the value is still
/// there, under the same token.
async fn survives_a_restart(layer: SessionLayer, then: Option<&str>) {
    let served = Served::start(browser_app(layer)).await;
    let driver = Chromedriver::start().await;
    let profile = driver.profile();
    let browser = driver.open(&profile).await;

    let put = served.url("127.0.0.1", "/put?key=k&value=v");
    assert_eq!(browser.read(&put).await, "ok");
    if let Some(path) = then {
        let cookie = session_cookie(&browser, "session").await;
        assert_eq!(expiry(&cookie), None, "before {path}: {cookie}");
        assert_eq!(browser.read(&served.url("127.0.0.1", path)).await, "ok");
    }
    let cookie = session_cookie(&browser, "session").await;
    assert_expires_with_lifetime(&cookie);

    browser.quit().await;
    let browser = driver.open(&profile).await;
    let get = served.url("127.0.0.1", "/get?key=k");
    assert_eq!(
        browser.read(&get).await,
        "v",
        "still signed in after the restart"
    );
    let after = session_cookie(&browser, "session").await;
    assert_eq!(after.value(), cookie.value());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_cookie_survives_a_browser_restart() {
    survives_a_restart(layer(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_session_survives_a_browser_restart() {
    survives_a_restart(layer().persist(false), Some("/remember?on=true")).await;
}

/// Puts `k=v` on `127.0.0.1`, then submits a form to `127.0.0.1`'s `POST /post_get?key=k`
/// from a page on `host`; returns what the POST found in the session.
async fn form_post_from(browser: &Browser, served: &Served, host: &str) -> String {
    let put = served.url("127.0.0.1", "/put?key=k&value=v");
    assert_eq!(browser.read(&put).await, "ok");
    let action = served.url("127.0.0.1", "/post_get?key=k");
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("action", &action)
        .finish();
    browser
        .goto(&served.url(host, &format!("/form?{query}")))
        .await;
    browser.wait_text("seen").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_carries_no_lax_cookie() {
    let served = Served::start(browser_app(layer())).await;
    let driver = Chromedriver::start().await;
    let browser = driver.open(&driver.profile()).await;

    // From a page of the same site, the POST carries the cookie...
    assert_eq!(form_post_from(&browser, &served, "127.0.0.1").await, "v");
    // ...from localhost, another site, it does not.
    assert_eq!(form_post_from(&browser, &served, "localhost").await, NONE);
    browser.screenshot("cross_site_post_lax").await;
    // And the session is untouched.
    let get = served.url("127.0.0.1", "/get?key=k");
    assert_eq!(browser.read(&get).await, "v");
}

/// The control of the test above: with `SameSite=None` (and `Secure`, which Chromium requires
/// of it, and accepts on a loopback http origin) the same cross-site POST carries the cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_carries_a_same_site_none_cookie() {
    let layer = layer().same_site(SameSite::None).secure(true);
    let served = Served::start(browser_app(layer)).await;
    let driver = Chromedriver::start().await;
    let browser = driver.open(&driver.profile()).await;

    assert_eq!(form_post_from(&browser, &served, "localhost").await, "v");
}

/// A `__Host-` cookie (always sent with `Secure`) over plain http: Chromium keeps and sends it
/// on `localhost` and `127.0.0.1`, origins it counts as potentially trustworthy, and rejects
/// it on any other http host (here `sessions.test`, which the browser resolves to 127.0.0.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_prefixed_cookie_works_on_http_loopback_only() {
    const NAME: &str = "__Host-session";
    let served = Served::start(browser_app(layer().cookie_name(NAME))).await;
    let driver = Chromedriver::start().await;
    let rules = "--host-resolver-rules=MAP sessions.test 127.0.0.1";
    let browser = driver.open_with(&driver.profile(), &[rules]).await;

    for host in ["localhost", "127.0.0.1"] {
        let put = served.url(host, "/put?key=k&value=v");
        assert_eq!(browser.read(&put).await, "ok");
        let cookie = session_cookie(&browser, NAME).await;
        assert_eq!(cookie.secure(), Some(true), "{host}: {cookie}");
        assert_eq!(cookie.http_only(), Some(true), "{host}: {cookie}");
        let get = served.url(host, "/get?key=k");
        assert_eq!(browser.read(&get).await, "v", "{host} sends {NAME} back");
    }
    browser.screenshot("host_prefix_localhost").await;

    let put = served.url("sessions.test", "/put?key=k&value=v");
    assert_eq!(
        browser.read(&put).await,
        "ok",
        "sessions.test reaches the app"
    );
    // Cookies work there: the one a script sets is kept, not the layer's Secure one.
    browser
        .execute(r#"document.cookie = "plain=1; path=/""#)
        .await;
    let names: Vec<String> = browser
        .cookies()
        .await
        .iter()
        .map(|c| c.name().into())
        .collect();
    assert_eq!(names, ["plain"], "the browser's jar on sessions.test");
    let get = served.url("sessions.test", "/get?key=k");
    assert_eq!(browser.read(&get).await, NONE);
}
