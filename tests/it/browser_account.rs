//! The `account` example in a real browser: the example binary runs as a process (see
//! `harness::example`), headless Chromium drives its pages over WebDriver (see
//! `harness::browser`), signing in through the form as a person would. Each browser profile
//! is a device; closing a browser and opening another on the same profile is a restart.
//!
//! `localhost:<port>` and `127.0.0.1:<port>` reach the same server but are two sites for the
//! browser; the cross-site test posts to the example on `127.0.0.1` from a page on
//! `localhost`.

use axum::{
    Router,
    extract::Query,
    http::{HeaderMap, header},
    response::Html,
    routing::{get, post},
};
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::harness::{
    assert_near,
    browser::{Browser, Chromedriver, Served},
    example::Example,
    now_ms,
};

/// The example's session lifetime, which a remembered cookie lasts (its docs: 7 days).
const LIFETIME_SECS: i64 = 7 * 24 * 60 * 60;
/// The window of the browsers: small, so that the screenshot kept in `docs/` stays small.
const WINDOW: &str = "--window-size=760,540";

/// The example as a process, and its URLs.
struct Account {
    example: Example,
}

impl Account {
    fn start() -> Self {
        Account {
            example: Example::start("account", &[]),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.example.addr)
    }

    /// Signs `browser` in as `user` through the login form, the remember-me box ticked when
    /// `remember`; checks it lands on the device list.
    async fn sign_in(&self, browser: &Browser, user: &str, remember: bool) {
        browser.goto(&self.url("/login")).await;
        browser.fill("username", user).await;
        browser.fill("password", "demo").await;
        if remember {
            browser.click(r#"input[name="remember"]"#).await;
        }
        browser.click_to_leave("#login button").await;
        assert_eq!(browser.url().await, self.url("/devices"));
        assert_eq!(browser.wait_text("user").await, user);
    }

    /// What `/api/me` answers the browser: the user's name, or `None` for the 401.
    async fn user(&self, browser: &Browser) -> Option<String> {
        match json_page(browser, &self.url("/api/me")).await {
            Value::Object(me) if me.contains_key("user") => me["user"].as_str().map(str::to_owned),
            answer => {
                assert_eq!(answer, json!({"error": "not signed in"}));
                None
            }
        }
    }

    /// Whether the device list sends the browser to the login form.
    async fn signed_out_on_next_load(&self, browser: &Browser) -> bool {
        browser.goto(&self.url("/devices")).await;
        let url = browser.url().await;
        let at_login = url == self.url("/login");
        assert!(at_login || url == self.url("/devices"), "{url}");
        at_login
    }
}

/// The JSON a page shows (Chromium puts a JSON response in a `<pre>`).
async fn json_page(browser: &Browser, url: &str) -> Value {
    browser.goto(url).await;
    let script = "return (document.querySelector('pre') || document.body).textContent";
    let text = browser.execute(script).await;
    let text = text.as_str().expect("text");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{url} showed {text:?}: {e}"))
}

/// The session cookie in the browser's jar for the current page.
async fn session_cookie(browser: &Browser) -> Cookie<'static> {
    let all = browser.cookies().await;
    let cookie = all.iter().find(|c| c.name() == "session").cloned();
    cookie.unwrap_or_else(|| panic!("no session cookie in the browser's jar: {all:?}"))
}

/// The device ids in the list the browser shows, this device's first.
async fn listed_devices(browser: &Browser) -> Vec<String> {
    let script = r#"const rows = [...document.querySelectorAll('tr[id^="device-"]')];
        rows.sort((a, b) => !!b.querySelector('.current') - !!a.querySelector('.current'));
        return rows.map(row => row.id.slice('device-'.length))"#;
    let ids = browser.execute(script).await;
    serde_json::from_value(ids).expect("a list of ids")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_http_only() {
    let account = Account::start();
    let driver = Chromedriver::start().await;
    let browser = driver.open(&driver.profile()).await;
    account.sign_in(&browser, "alice", false).await;

    let cookie = session_cookie(&browser).await;
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(cookie.same_site(), Some(SameSite::Lax), "{cookie}");
    assert_eq!(browser.execute("return document.cookie").await, json!(""));
    // The control: a script sees the page's other cookies.
    let script = r#"document.cookie = "visible=1; path=/"; return document.cookie"#;
    assert_eq!(browser.execute(script).await, json!("visible=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_remember_me_a_browser_restart_signs_out() {
    let account = Account::start();
    let driver = Chromedriver::start().await;
    let profile = driver.profile();
    let browser = driver.open(&profile).await;
    account.sign_in(&browser, "alice", false).await;
    let cookie = session_cookie(&browser).await;
    assert_eq!(cookie.expires(), None, "a browser-session cookie: {cookie}");
    // A persistent cookie beside it, which shows the restart is on the same profile.
    let script = r#"document.cookie = "kept=1; path=/; max-age=3600""#;
    browser.execute(script).await;

    browser.quit().await;
    let browser = driver.open(&profile).await;
    assert!(account.signed_out_on_next_load(&browser).await);
    assert_eq!(account.user(&browser).await, None);
    let kept = browser.cookies().await;
    assert!(kept.iter().any(|c| c.name() == "kept"), "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_remember_me_the_cookie_lasts_the_lifetime_and_a_restart() {
    let account = Account::start();
    let driver = Chromedriver::start().await;
    let profile = driver.profile();
    let browser = driver.open(&profile).await;
    account.sign_in(&browser, "alice", true).await;
    let cookie = session_cookie(&browser).await;
    let expires = cookie.expires_datetime().expect("a persistent cookie");
    let end = now_ms() / 1000 + LIFETIME_SECS;
    assert_near(
        expires.unix_timestamp(),
        end,
        2,
        "its expiry against now + lifetime",
    );

    browser.quit().await;
    let browser = driver.open(&profile).await;
    assert_eq!(account.user(&browser).await.as_deref(), Some("alice"));
    assert!(!account.signed_out_on_next_load(&browser).await);
    assert_eq!(session_cookie(&browser).await.value(), cookie.value());
}

/// Two profiles of one user are two devices; one revokes the other with its revoke button,
/// and the other is signed out on its next page load. Saves the device list as
/// `target/browser/devices.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_profile_revokes_the_other() {
    let account = Account::start();
    let driver = Chromedriver::start().await;
    let laptop = "--user-agent=Chromium on a laptop (profile A)";
    let phone = "--user-agent=Chromium on a phone (profile B)";
    let a = driver.open_with(&driver.profile(), &[laptop, WINDOW]).await;
    let b = driver.open_with(&driver.profile(), &[phone, WINDOW]).await;
    account.sign_in(&b, "alice", false).await;
    account.sign_in(&a, "alice", true).await;

    let text = a.text().await;
    assert!(text.contains("laptop (profile A) (this device)"), "{text}");
    assert!(text.contains("phone (profile B)"), "{text}");
    let ids = listed_devices(&a).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    b.goto(&account.url("/devices")).await;
    assert_eq!(listed_devices(&b).await.len(), 2, "the same list on B");
    a.screenshot("devices").await;

    a.click_to_leave(&format!("#device-{} button", ids[1]))
        .await;
    assert_eq!(a.url().await, account.url("/devices"));
    assert_eq!(listed_devices(&a).await, ids[..1]);
    assert!(account.signed_out_on_next_load(&b).await, "B is signed out");
    assert_eq!(account.user(&b).await, None);
    assert!(!account.signed_out_on_next_load(&a).await, "A is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_everywhere_signs_out_both_profiles() {
    let account = Account::start();
    let driver = Chromedriver::start().await;
    let a = driver.open(&driver.profile()).await;
    let b = driver.open(&driver.profile()).await;
    account.sign_in(&a, "alice", false).await;
    account.sign_in(&b, "alice", true).await;
    assert_eq!(listed_devices(&b).await.len(), 2);

    a.click_to_leave("#logout-everywhere").await;
    assert_eq!(a.url().await, account.url("/login"));
    for browser in [&a, &b] {
        assert!(account.signed_out_on_next_load(browser).await);
        assert_eq!(account.user(browser).await, None);
    }
}

#[derive(Deserialize)]
struct Action {
    action: String,
}

/// Another site's page, whose form posts itself to `action` as soon as it loads, with a
/// forged `csrf` field.
async fn form(Query(q): Query<Action>) -> Html<String> {
    let action = q.action.replace('&', "&amp;").replace('"', "&quot;");
    Html(format!(
        r#"<!doctype html><form id="f" method="post" action="{action}">
<input type="hidden" name="csrf" value="forged"></form>
<script>document.getElementById("f").submit()</script>"#
    ))
}

/// Shows as `#seen` whether the POST carried a `session` cookie.
async fn record(headers: HeaderMap) -> Html<String> {
    let cookies = headers.get_all(header::COOKIE).iter();
    let carried = cookies
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|pair| pair.trim_start().starts_with("session="));
    let seen = if carried { "cookie" } else { "no cookie" };
    Html(format!(r#"<p id="seen">{seen}</p>"#))
}

/// From a page on `host` (of the test's own server), submits the forged form to `action`.
async fn post_from(browser: &Browser, other: &Served, host: &str, action: &str) {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("action", action)
        .finish();
    browser
        .goto(&other.url(host, &format!("/form?{query}")))
        .await;
}

/// A form on another site posting to the example's `/logout`: Chromium leaves the
/// `SameSite=Lax` cookie off (the test's own server on `127.0.0.1`, which the cookie is sent to
/// whatever the port, records what comes), and the CSRF check refuses it anyway (403). A page
/// of the same site but another origin (another port) does get the cookie sent: the CSRF
/// check refuses that one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_carries_no_cookie_and_is_refused() {
    let account = Account::start();
    let other = Router::new()
        .route("/form", get(form))
        .route("/record", post(record));
    let other = Served::start(other).await;
    let driver = Chromedriver::start().await;
    let browser = driver.open(&driver.profile()).await;
    account.sign_in(&browser, "alice", false).await;
    let own = listed_devices(&browser).await.remove(0);

    let recorder = other.url("127.0.0.1", "/record");
    post_from(&browser, &other, "localhost", &recorder).await;
    assert_eq!(browser.wait_text("seen").await, "no cookie", "cross-site");
    post_from(&browser, &other, "127.0.0.1", &recorder).await;
    assert_eq!(browser.wait_text("seen").await, "cookie", "same site");

    let revoke = format!("/devices/{own}/revoke");
    for host in ["localhost", "127.0.0.1"] {
        for path in ["/logout", "/logout-everywhere", &revoke] {
            post_from(&browser, &other, host, &account.url(path)).await;
            let refused = browser.wait_text("forbidden").await;
            assert!(refused.contains("CSRF"), "{host} → {path}: {refused}");
        }
    }
    browser.screenshot("account_cross_site_403").await;
    assert_eq!(account.user(&browser).await.as_deref(), Some("alice"));
}
