//! Drives the `account` example binary over HTTP as a script would, each cookie jar a device:
//! the two-jar flow of its docs (A and B sign in as one user, A lists the devices and revokes
//! B, B is signed out) on both stores; CSRF on every POST; the login's refusals; remember-me
//! deciding whether the cookie persists; the JSON routes' fields; logout and "sign out
//! everywhere" (every session of the user's, this one included); and user-controlled text
//! escaped in the pages.

use std::time::{SystemTime, UNIX_EPOCH};

use cookie::Cookie;
use http::{StatusCode, header};
use serde_json::{Value, json};

use crate::harness::{
    RedisServer,
    example::{Example, Jar, Reply},
};

/// The example's session lifetime, which a remembered cookie lasts (its docs: 7 days).
const LIFETIME_SECS: i64 = 7 * 24 * 60 * 60;

/// The CSRF token in the first hidden `csrf` field of a page.
fn csrf_in(page: &str) -> String {
    const FIELD: &str = r#"name="csrf" value=""#;
    let at = page
        .find(FIELD)
        .unwrap_or_else(|| panic!("no csrf field in {page}"));
    let rest = &page[at + FIELD.len()..];
    rest[..rest.find('"').expect("a closing quote")].to_owned()
}

/// The jar's CSRF token, from the login page (which makes one for any session).
async fn csrf(jar: &mut Jar) -> String {
    let page = jar.get("/login").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    csrf_in(&page.body)
}

fn location(reply: &Reply) -> &str {
    let to = reply.headers.get(header::LOCATION);
    to.map_or("", |to| to.to_str().unwrap())
}

/// Asserts a `303 See Other` to `to`.
#[track_caller]
fn assert_see_other(reply: &Reply, to: &str) {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(location(reply), to);
}

/// Signs `jar` in as `user` (the remember-me box ticked when `remember`); returns the answer
/// to the `POST /login`, checked to be the `303` to `/devices`.
async fn sign_in(jar: &mut Jar, user: &str, remember: bool) -> Reply {
    let csrf = csrf(jar).await;
    let mut fields = vec![("username", user), ("password", "demo"), ("csrf", &csrf)];
    if remember {
        fields.push(("remember", "on"));
    }
    let reply = jar.post("/login", &fields).await;
    assert_see_other(&reply, "/devices");
    reply
}

/// `GET /api/me`: its status, and its JSON when it is 200.
async fn me(jar: &mut Jar) -> (StatusCode, Option<Value>) {
    let reply = jar.get("/api/me").await;
    let json = (reply.status == StatusCode::OK).then(|| serde_json::from_str(&reply.body).unwrap());
    (reply.status, json)
}

#[track_caller]
fn assert_signed_out((status, json): (StatusCode, Option<Value>)) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json:?}");
}

#[track_caller]
fn assert_signed_in_as((status, json): (StatusCode, Option<Value>), user: &str) {
    assert_eq!(
        (status, json),
        (StatusCode::OK, Some(json!({ "user": user })))
    );
}

/// `GET /api/devices`, checked to be 200.
async fn devices(jar: &mut Jar) -> Vec<Value> {
    let reply = jar.get("/api/devices").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

/// The id of the jar's own device, the one its list marks current.
async fn own_device(jar: &mut Jar) -> String {
    let list = devices(jar).await;
    let current: Vec<&Value> = list.iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1, "one current device in {list:?}");
    current[0]["id"].as_str().unwrap().to_owned()
}

/// The README's flow: two jars of one user, A revokes B.
async fn one_device_revokes_the_other(example: &Example) {
    let (mut a, mut b) = (Jar::new(&example.addr, "A"), Jar::new(&example.addr, "B"));
    sign_in(&mut a, "alice", false).await;
    sign_in(&mut b, "alice", false).await;
    let listed = devices(&mut a).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let (a_id, b_id) = (own_device(&mut a).await, own_device(&mut b).await);
    assert_ne!(a_id, b_id);
    for device in &listed {
        let agent = if device["id"] == a_id.as_str() {
            "A"
        } else {
            "B"
        };
        assert_eq!(device["user_agent"], agent, "{device}");
        assert_eq!(device["current"], agent == "A", "{device}");
    }

    let csrf = csrf(&mut a).await;
    let revoke = format!("/devices/{b_id}/revoke");
    assert_see_other(&a.post(&revoke, &[("csrf", &csrf)]).await, "/devices");
    assert_signed_out(me(&mut b).await);
    assert_see_other(&b.get("/devices").await, "/login");
    assert_signed_in_as(me(&mut a).await, "alice");
    let left = devices(&mut a).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["id"], a_id.as_str());
    let again = a.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(
        again.status,
        StatusCode::NOT_FOUND,
        "B is gone: {}",
        again.body
    );
    // Revoking its own device signs A out.
    let own = format!("/devices/{a_id}/revoke");
    assert_see_other(&a.post(&own, &[("csrf", &csrf)]).await, "/login");
    assert_signed_out(me(&mut a).await);
}

#[tokio::test]
async fn one_device_revokes_the_other_in_memory() {
    one_device_revokes_the_other(&Example::start("account", &[])).await;
}

#[tokio::test]
async fn one_device_revokes_the_other_on_redis() {
    let redis = RedisServer::start().await;
    one_device_revokes_the_other(&Example::on_redis("account", &redis)).await;
}

/// "Sign out everywhere" ends every session of the user's, this one included, and no one
/// else's; a token kept from before is worth nothing.
async fn sign_out_everywhere(example: &Example) {
    let addr = &example.addr;
    let (mut a, mut b, mut bob) = (
        Jar::new(addr, "A"),
        Jar::new(addr, "B"),
        Jar::new(addr, "C"),
    );
    sign_in(&mut a, "alice", true).await;
    sign_in(&mut b, "alice", false).await;
    sign_in(&mut bob, "bob", false).await;
    let kept = a.cookie("session").unwrap().to_owned();

    let csrf = csrf(&mut b).await;
    let out = b.post("/logout-everywhere", &[("csrf", &csrf)]).await;
    assert_see_other(&out, "/login");
    assert!(out.set_cookie.is_some_and(|c| c.contains("Max-Age=0")));
    assert_signed_out(me(&mut a).await);
    assert_signed_out(me(&mut b).await);
    let mut replay = Jar::new(addr, "A");
    replay.set_cookie("session", &kept);
    assert_signed_out(me(&mut replay).await);
    assert_signed_in_as(me(&mut bob).await, "bob");
    assert_eq!(devices(&mut bob).await.len(), 1);
}

#[tokio::test]
async fn sign_out_everywhere_in_memory() {
    sign_out_everywhere(&Example::start("account", &[])).await;
}

#[tokio::test]
async fn sign_out_everywhere_on_redis() {
    let redis = RedisServer::start().await;
    sign_out_everywhere(&Example::on_redis("account", &redis)).await;
}

#[tokio::test]
async fn logout_ends_this_session_only() {
    let example = Example::start("account", &[]);
    let (mut a, mut b) = (Jar::new(&example.addr, "A"), Jar::new(&example.addr, "B"));
    sign_in(&mut a, "alice", false).await;
    sign_in(&mut b, "alice", false).await;
    let kept = a.cookie("session").unwrap().to_owned();

    let csrf = csrf(&mut a).await;
    let out = a.post("/logout", &[("csrf", &csrf)]).await;
    assert_see_other(&out, "/login");
    assert!(out.set_cookie.is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(a.cookie("session"), None);
    assert_signed_out(me(&mut a).await);
    let mut replay = Jar::new(&example.addr, "A");
    replay.set_cookie("session", &kept);
    assert_signed_out(me(&mut replay).await);
    assert_signed_in_as(me(&mut b).await, "alice");
    assert_eq!(devices(&mut b).await.len(), 1);
}

/// Every POST answers 403 to a form without the session's CSRF token (none, a wrong one,
/// another session's), and to a body that is no form, and changes nothing; the same POSTs
/// with the token then work.
#[tokio::test]
async fn every_post_without_the_csrf_token_is_403() {
    let example = Example::start("account", &[]);
    let (mut a, mut b) = (Jar::new(&example.addr, "A"), Jar::new(&example.addr, "B"));
    sign_in(&mut a, "alice", false).await;
    sign_in(&mut b, "alice", false).await;
    let (csrf_a, csrf_b) = (csrf(&mut a).await, csrf(&mut b).await);
    let revoke_b = format!("/devices/{}/revoke", own_device(&mut b).await);
    let login = [("username", "mallory"), ("password", "x")];
    let posts = ["/login", "/logout", "/logout-everywhere", revoke_b.as_str()];
    for path in posts {
        for csrf in [
            None,
            Some(""),
            Some("wrong"),
            Some(&csrf_b[..]),
            Some(&csrf_a[..42]),
        ] {
            let mut fields = login.to_vec();
            fields.extend(csrf.map(|csrf| ("csrf", csrf)));
            let reply = a.post(path, &fields).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path} csrf={csrf:?}");
            assert!(reply.body.contains(r#"id="forbidden""#), "{}", reply.body);
        }
        let bare = a.send("POST", path, None, "").await;
        assert_eq!(bare.status, StatusCode::FORBIDDEN, "{path} with no body");
        let json = format!(r#"{{"csrf":"{csrf_a}"}}"#);
        let json = a.send("POST", path, Some("application/json"), &json).await;
        assert_eq!(json.status, StatusCode::FORBIDDEN, "{path} with JSON");
    }
    // A session that never saw a form (no cookie at all) has no token to match.
    let mut stranger = Jar::new(&example.addr, "S");
    let forged = stranger
        .post("/login", &[login[0], login[1], ("csrf", "x")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_signed_in_as(me(&mut a).await, "alice");
    assert_signed_in_as(me(&mut b).await, "alice");
    assert_eq!(devices(&mut a).await.len(), 2);

    // The control: with the token, each of them does what it says.
    assert_see_other(&a.post(&revoke_b, &[("csrf", &csrf_a)]).await, "/devices");
    assert_signed_out(me(&mut b).await);
    let out = a.post("/logout", &[("csrf", &csrf_a)]).await;
    assert_see_other(&out, "/login");
    assert_signed_out(me(&mut a).await);
}

/// An empty password, or a username empty or over 64 characters, is `400` with the form shown
/// again and an error, and signs no one in.
#[tokio::test]
async fn a_login_without_a_password_is_400() {
    let example = Example::start("account", &[]);
    let mut jar = Jar::new(&example.addr, "A");
    let csrf = csrf(&mut jar).await;
    let long = "x".repeat(65);
    for (user, password) in [("alice", ""), ("", "demo"), ("  ", "demo"), (&long, "demo")] {
        let fields = [("username", user), ("password", password), ("csrf", &csrf)];
        let reply = jar.post("/login", &fields).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{user:?} {password:?}"
        );
        assert!(reply.body.contains(r#"id="error""#), "{}", reply.body);
        assert_eq!(csrf_in(&reply.body), csrf, "the form again, same token");
        assert_signed_out(me(&mut jar).await);
    }
    let fields = [("username", "alice"), ("password", "x"), ("csrf", &csrf)];
    assert_see_other(&jar.post("/login", &fields).await, "/devices");
    assert_signed_in_as(me(&mut jar).await, "alice");
}

/// The session cookie of a reply, parsed.
fn session_cookie(reply: &Reply) -> Cookie<'static> {
    let set = reply.set_cookie.clone().expect("a Set-Cookie");
    let cookie = Cookie::parse(set).unwrap();
    assert_eq!(cookie.name(), "session", "{cookie}");
    cookie
}

/// Asserts `Max-Age` is the lifetime (give or take the second the layer rounds up, as SCS).
#[track_caller]
fn assert_lasts_the_lifetime(cookie: &Cookie<'_>) {
    let max_age = cookie.max_age().map(|age| age.whole_seconds());
    let max_age = max_age.unwrap_or_else(|| panic!("no Max-Age: {cookie}"));
    assert!(
        (LIFETIME_SECS - 2..=LIFETIME_SECS + 1).contains(&max_age),
        "{cookie}"
    );
}

/// The layer persists no cookie (`persist(false)`): the login's cookie is a browser-session
/// one unless the remember-me box is ticked, then it lasts the lifetime.
#[tokio::test]
async fn remember_me_decides_whether_the_cookie_persists() {
    let example = Example::start("account", &[]);
    let mut jar = Jar::new(&example.addr, "A");
    let before = csrf(&mut jar).await;

    let plain = session_cookie(&sign_in(&mut jar, "alice", false).await);
    assert_eq!((plain.max_age(), plain.expires()), (None, None), "{plain}");
    assert_eq!(plain.http_only(), Some(true), "{plain}");
    assert_ne!(
        csrf(&mut jar).await,
        before,
        "a login makes a new CSRF token"
    );

    let remembered = session_cookie(&sign_in(&mut jar, "alice", true).await);
    assert_lasts_the_lifetime(&remembered);
    let expires = remembered
        .expires_datetime()
        .expect("Expires")
        .unix_timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - now - LIFETIME_SECS).abs() <= 2, "{remembered}");
    // Later answers keep it persistent (the login page stores a new CSRF token)...
    assert_lasts_the_lifetime(&session_cookie(&jar.get("/login").await));
    // ...and a login without the box ends that.
    let again = session_cookie(&sign_in(&mut jar, "alice", false).await);
    assert_eq!((again.max_age(), again.expires()), (None, None), "{again}");
}

/// `/api/devices`: exactly the six fields, with their types; `/api/me`; and `401` for both
/// without a sign-in (and `GET /devices` a `303` to `/login`).
#[tokio::test]
async fn the_json_routes_fields_and_types() {
    let example = Example::start("account", &[]);
    let mut jar = Jar::new(&example.addr, "curl/8 (A)");
    assert_signed_out(me(&mut jar).await);
    assert_eq!(
        jar.get("/api/devices").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_see_other(&jar.get("/devices").await, "/login");

    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let start = now();
    sign_in(&mut jar, "alice", false).await;
    let reply = jar.get("/api/me").await;
    let content_type = reply.headers.get(header::CONTENT_TYPE).unwrap();
    assert_eq!(content_type, "application/json");
    assert_eq!(reply.body, r#"{"user":"alice"}"#);

    let list = devices(&mut jar).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let device = list[0].as_object().unwrap();
    let mut keys: Vec<&str> = device.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let six = ["created", "current", "id", "ip", "last_seen", "user_agent"];
    assert_eq!(keys, six, "{device:?}");
    let id = device["id"].as_str().unwrap();
    assert_eq!(id.len(), 22, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    );
    assert_eq!(device["current"], true);
    let (created, seen) = (device["created"].as_u64(), device["last_seen"].as_u64());
    let (created, seen) = (
        created.expect("created: u64"),
        seen.expect("last_seen: u64"),
    );
    assert!(
        (start..=now()).contains(&created),
        "{created} not in {start}.."
    );
    assert!((created..=now()).contains(&seen), "{seen}");
    assert_eq!(device["user_agent"], "curl/8 (A)");
    assert_eq!(device["ip"], "127.0.0.1");
    let page = jar.get("/devices").await.body;
    assert!(
        page.contains(&format!(r#"action="/devices/{id}/revoke""#)),
        "{page}"
    );

    // No User-Agent header: none recorded.
    let mut bare = Jar::new(&example.addr, "");
    bare.user_agent = None;
    sign_in(&mut bare, "bob", false).await;
    assert_eq!(devices(&mut bare).await[0]["user_agent"], Value::Null);
}

/// A username and a user agent full of markup show as text in the pages, never as markup.
#[tokio::test]
async fn user_controlled_text_is_escaped() {
    let example = Example::start("account", &[]);
    let (user, agent) = (
        "<script>alert(1)</script>",
        r#"<img src=x onerror=alert(2)>"'&"#,
    );
    let mut jar = Jar::new(&example.addr, agent);
    sign_in(&mut jar, user, false).await;
    assert_signed_in_as(me(&mut jar).await, user);

    let devices = jar.get("/devices").await;
    let content_type = devices.headers.get(header::CONTENT_TYPE).unwrap();
    assert_eq!(content_type, "text/html; charset=utf-8");
    let login = jar.get("/login").await;
    for page in [&devices.body, &login.body] {
        assert!(
            !page.contains("<script") && !page.contains("<img"),
            "{page}"
        );
        let shown = "&lt;script&gt;alert(1)&lt;/script&gt;";
        assert!(page.contains(shown), "{page}");
    }
    let shown = "&lt;img src=x onerror=alert(2)&gt;&quot;&#39;&amp;";
    assert!(devices.body.contains(shown), "{}", devices.body);
}
