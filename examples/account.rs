//! Sign-in with a device list: "where you're signed in", each device revocable, sign out here
//! or everywhere. Server-rendered HTML with plain forms (no JavaScript), and a JSON twin.
//!
//! ```sh
//! cargo run --example account                                   # MemoryStore
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example account  # RedisStore
//! ```
//!
//! then open <http://127.0.0.1:4002/login>.
//!
//! Environment:
//! - `ADDR` (default `127.0.0.1:4002`);
//! - `REDIS_URL` (any URL fred accepts; without it the in-memory store is used).
//!
//! Routes:
//! - `GET /login`: the sign-in form (username, password, "remember me"; when signed in, it
//!   says as whom). A demo: any username of 1 to 64 characters and any non-empty password
//!   sign in. `GET /` is a `303` to `/devices`.
//! - `POST /login` (fields `username`, `password`, `remember`, `csrf`): renews the token
//!   (against session fixation), ties the session to the user (`set_owner`), records the
//!   client's `User-Agent` and IP (`set_client`) and the remember-me box, and answers
//!   `303 See Other` to `/devices`. An empty username or password is `400 Bad Request`, the
//!   form shown again with the error.
//! - `GET /devices`: the user's sessions (`Session::devices`), this one marked, each with a
//!   revoke button; `303` to `/login` when not signed in.
//! - `POST /devices/{id}/revoke`: ends that session (`revoke_device`), `303` to `/devices`
//!   (to `/login` when it was this one); `404` when the user has no such device.
//! - `POST /logout`: ends this session (`destroy`), `303` to `/login`.
//! - `POST /logout-everywhere`: signs the user out *everywhere*, this device included
//!   (`destroy_owner`: every session of the user's), `303` to `/login`.
//! - `GET /api/me`: `{"user": "<name>"}`, or `401` when not signed in.
//! - `GET /api/devices`: `[{"id", "current", "created", "last_seen", "user_agent", "ip"}]`,
//!   times in Unix seconds, `user_agent` and `ip` strings or null; `401` when not signed in.
//!
//! Every POST must echo the session's CSRF token (`Session::csrf_token`), which each page's
//! forms carry in the hidden field `csrf`: without it, or with a wrong one, the answer is
//! `403 Forbidden` and nothing changes. A login renews the token, and with it the CSRF token.
//!
//! The cookie, `session`, is HttpOnly and `SameSite=Lax`, not `Secure` (this serves plain
//! http). The layer is built with `.persist(false)`: the cookie is a browser-session cookie,
//! gone when the browser closes, unless "remember me" was ticked, which makes it persistent
//! (`Max-Age`/`Expires`: the layer's lifetime, 7 days).
//!
//! Try it with curl (and jq): two cookie jars are two devices of alice's. A signs in, B signs
//! in, A lists its devices and revokes B's, and B is signed out:
//!
//! ```sh
//! S=http://127.0.0.1:4002
//! csrf() { curl -s -b "$1" -c "$1" "$S/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p'; }
//! login() { curl -s -o /dev/null -w '%{http_code}\n' -b "$1" -c "$1" \
//!   -d username=alice -d password=demo -d "csrf=$(csrf "$1")" "$S/login"; }
//! login a.jar; login b.jar                             # 303, 303
//! curl -s -b a.jar "$S/api/devices" | jq               # two devices, A's "current": true
//! B=$(curl -s -b a.jar "$S/api/devices" | jq -r '.[] | select(.current | not) | .id')
//! curl -s -o /dev/null -w '%{http_code}\n' -b a.jar -c a.jar \
//!   -d "csrf=$(csrf a.jar)" "$S/devices/$B/revoke"    # 303
//! curl -s -w ' %{http_code}\n' -b b.jar "$S/api/me"    # {"error":"not signed in"} 401
//! curl -s -b a.jar "$S/api/me"                         # {"user":"alice"}
//! ```

use std::{
    env,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Form, Json, Router,
    extract::{ConnectInfo, Path, rejection::FormRejection},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_scs::{Device, DeviceId, Error, MemoryStore, RedisStore, Session, SessionLayer, Status};

/// The session's lifetime, which a remembered cookie lasts too.
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The longest username, in characters.
const MAX_USERNAME: usize = 64;

/// The fields of every form; each POST reads those it needs. A body that is not a form at all
/// reads as all empty, so that it meets the CSRF check (403), not the extractor's rejection.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Fields {
    csrf: String,
    username: String,
    password: String,
    /// A checkbox: sent (as `on`) only when ticked.
    remember: Option<String>,
}

type Posted = Result<Form<Fields>, FormRejection>;

fn fields(posted: Posted) -> Fields {
    posted.map(|Form(fields)| fields).unwrap_or_default()
}

/// Why a handler stops early: a session error (the layer's error response), or a page.
enum Stop {
    Session(Error),
    Page(Response),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Session(e)
    }
}

impl IntoResponse for Stop {
    fn into_response(self) -> Response {
        match self {
            Stop::Session(e) => e.into_response(),
            Stop::Page(page) => page,
        }
    }
}

type Answer = Result<Response, Stop>;

/// Refuses the POST (403) unless its `csrf` field is the session's CSRF token.
async fn check_csrf(session: &Session, fields: &Fields) -> Result<(), Stop> {
    if session.verify_csrf(&fields.csrf).await? {
        return Ok(());
    }
    let body = r#"<p id="forbidden">This form is stale or did not come from this site: its
CSRF token is missing or wrong. Nothing was changed. <a href="/login">Start again</a>.</p>"#;
    let page = (StatusCode::FORBIDDEN, page("Forbidden", body));
    Err(Stop::Page(page.into_response()))
}

/// The signed-in user, or a `303` to `/login`.
async fn signed_in(session: &Session) -> Result<String, Stop> {
    let user = session.owner().await?;
    user.ok_or_else(|| Stop::Page(Redirect::to("/login").into_response()))
}

/// The signed-in user, or a `401` for the JSON routes.
async fn api_user(session: &Session) -> Result<String, Stop> {
    let user = session.owner().await?;
    let body = Json(json!({"error": "not signed in"}));
    user.ok_or_else(|| Stop::Page((StatusCode::UNAUTHORIZED, body).into_response()))
}

async fn login_page(session: Session) -> Answer {
    Ok(login_form(&session, StatusCode::OK, "").await?)
}

/// The sign-in form, with `error` (HTML) above it.
async fn login_form(session: &Session, status: StatusCode, error: &str) -> Result<Response, Error> {
    let csrf = csrf_input(&session.csrf_token().await?);
    let signed_in = match session.owner().await? {
        Some(user) => format!(
            r#"<p>Signed in as <b>{}</b>: <a href="/devices">your devices</a>.</p>"#,
            esc(&user)
        ),
        None => String::new(),
    };
    let body = format!(
        r#"{signed_in}{error}<form id="login" method="post" action="/login">{csrf}
<p><label>Username <input name="username" maxlength="{MAX_USERNAME}" required autofocus></label>
<p><label>Password <input name="password" type="password" required></label>
<p><label><input name="remember" type="checkbox"> Remember me on this device</label>
<p><button>Sign in</button> <small>(a demo: any non-empty password)</small></form>"#
    );
    Ok((status, page("Sign in", &body)).into_response())
}

async fn login(
    session: Session,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    posted: Posted,
) -> Answer {
    let fields = fields(posted);
    check_csrf(&session, &fields).await?;
    let username = fields.username.trim();
    let valid = (1..=MAX_USERNAME).contains(&username.chars().count());
    if !valid || fields.password.is_empty() {
        let error = format!(
            r#"<p id="error">Enter a username (1 to {MAX_USERNAME} characters) and a password.</p>"#
        );
        return Ok(login_form(&session, StatusCode::BAD_REQUEST, &error).await?);
    }
    // A new token for the signed-in session: one planted before the login is worth nothing.
    session.renew_token().await?;
    session.set_owner(username);
    let agent = headers.get(header::USER_AGENT);
    let agent = agent.map(|agent| String::from_utf8_lossy(agent.as_bytes()));
    session.set_client(agent.as_deref(), Some(&peer.ip().to_string()));
    // The layer does not persist cookies (`persist(false)`): only a ticked box does.
    let remember = fields.remember.as_deref();
    session.remember_me(!matches!(remember, None | Some("" | "0" | "off" | "false")));
    Ok(Redirect::to("/devices").into_response())
}

async fn devices_page(session: Session) -> Answer {
    let user = signed_in(&session).await?;
    let csrf = csrf_input(&session.csrf_token().await?);
    let devices = session.devices().await?;
    let rows: String = devices.iter().map(|d| device_row(d, &csrf)).collect();
    let body = format!(
        r#"<p>Signed in as <b id="user">{user}</b>. Your sessions, most recently seen first:</p>
<table id="devices"><tr><th>Device</th><th>IP</th><th>Signed in</th><th>Last seen</th><th></th></tr>
{rows}</table>
<form method="post" action="/logout">{csrf}<button id="logout">Sign out</button>
<small>this device only</small></form>
<form method="post" action="/logout-everywhere">{csrf}<button id="logout-everywhere">Sign out
everywhere</button> <small>every device of yours, this one included</small></form>"#,
        user = esc(&user),
    );
    Ok(page("Your devices", &body).into_response())
}

/// One row of the device list; `csrf` is the hidden field of its revoke form.
fn device_row(device: &Device, csrf: &str) -> String {
    let agent = device.user_agent.as_deref().unwrap_or("unknown device");
    let this = match device.current {
        true => r#" <b class="current">(this device)</b>"#,
        false => "",
    };
    format!(
        r#"<tr id="device-{id}"><td>{agent}{this}</td><td>{ip}</td><td>{created}</td>
<td>{seen}</td><td><form method="post" action="/devices/{id}/revoke">{csrf}<button>Revoke</button>
</form></td></tr>
"#,
        id = device.id,
        agent = esc(agent),
        ip = esc(device.ip.as_deref().unwrap_or("")),
        created = httpdate::fmt_http_date(device.created),
        seen = httpdate::fmt_http_date(device.last_seen),
    )
}

async fn revoke(session: Session, Path(id): Path<String>, posted: Posted) -> Answer {
    check_csrf(&session, &fields(posted)).await?;
    signed_in(&session).await?;
    let revoked = match id.parse::<DeviceId>() {
        Ok(id) => session.revoke_device(&id).await?,
        Err(_) => false,
    };
    if !revoked {
        let body = r#"<p>You have no such device. <a href="/devices">Your devices</a>.</p>"#;
        return Ok((StatusCode::NOT_FOUND, page("No such device", body)).into_response());
    }
    // Revoking this very device signs it out.
    let to = match session.status() {
        Status::Destroyed => "/login",
        _ => "/devices",
    };
    Ok(Redirect::to(to).into_response())
}

async fn logout(session: Session, posted: Posted) -> Answer {
    check_csrf(&session, &fields(posted)).await?;
    session.destroy();
    Ok(Redirect::to("/login").into_response())
}

/// "Everywhere" means every session of the user's, this one too (`destroy_owner`); for
/// "everywhere else", `Session::revoke_other_devices` would keep this one.
async fn logout_everywhere(session: Session, posted: Posted) -> Answer {
    check_csrf(&session, &fields(posted)).await?;
    let user = signed_in(&session).await?;
    session.destroy_owner(&user).await?;
    Ok(Redirect::to("/login").into_response())
}

async fn api_me(session: Session) -> Answer {
    let user = api_user(&session).await?;
    Ok(Json(json!({ "user": user })).into_response())
}

async fn api_devices(session: Session) -> Answer {
    api_user(&session).await?;
    let devices = session.devices().await?;
    let list: Vec<Value> = devices.iter().map(device_json).collect();
    Ok(Json(list).into_response())
}

fn device_json(device: &Device) -> Value {
    json!({
        "id": device.id.as_str(),
        "current": device.current,
        "created": unix_secs(device.created),
        "last_seen": unix_secs(device.last_seen),
        "user_agent": device.user_agent,
        "ip": device.ip,
    })
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The hidden field that carries the CSRF token in every form.
fn csrf_input(token: &str) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(token)
    )
}

/// `text` escaped for HTML text and quoted attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{padding:.3em .6em;text-align:left;
border-bottom:1px solid #ddd;vertical-align:top;font-size:13px}.current{color:#070}
form{margin:.3em 0}td form{margin:0}";

/// A page titled `title` around `body` (HTML: the callers escape what is not theirs).
fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head><body><h1>{title}</h1>
{body}</body></html>"#
    ))
}

/// The example's routes behind `layer`.
fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/devices") }))
        .route("/login", get(login_page).post(login))
        .route("/devices", get(devices_page))
        .route("/devices/{id}/revoke", post(revoke))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/api/me", get(api_me))
        .route("/api/devices", get(api_devices))
        .layer(layer)
}

/// A layer on Redis when `REDIS_URL` is set, else in memory; exits with code 1 when Redis
/// cannot be used.
async fn store_layer() -> SessionLayer {
    let Ok(url) = env::var("REDIS_URL") else {
        println!("store: MemoryStore (set REDIS_URL to use Redis)");
        return SessionLayer::new(MemoryStore::new());
    };
    match RedisStore::from_url(&url).await {
        Ok(store) => {
            println!(
                "store: RedisStore (REDIS_URL), key prefix {}",
                store.prefix()
            );
            SessionLayer::new(store)
        }
        Err(e) => {
            eprintln!("cannot use REDIS_URL: {e}");
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() {
    let addr = env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:4002".into());
    let layer = (store_layer().await)
        .lifetime(LIFETIME)
        .persist(false)
        .secure(false);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on http://{addr}");
    // The peer's address, for the device list (`ConnectInfo<SocketAddr>`).
    let app = app(layer).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = async { drop(tokio::signal::ctrl_c().await) };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
