//! The test application: an axum router of small handlers, each doing one session operation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::gate;

use axum::{Router, extract::Query, routing::get};
use serde::{Deserialize, Serialize};
use tower_scs::{Error, Session, SessionLayer};

/// What `/get` and friends answer when there is no value.
pub const NONE: &str = "<none>";

#[derive(Deserialize, Default)]
#[serde(default)]
struct Q {
    key: String,
    value: String,
    on: bool,
    secs: i64,
    token: String,
    /// A [`gate::Gate`] to stop at, for the routes that take one.
    gate: String,
    /// A count, for the routes that act on many keys.
    n: usize,
    /// The first index of those keys (`k<from>` … `k<from + n - 1>`).
    from: usize,
}

/// A struct value, to check that any serde type round-trips.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct User {
    pub name: String,
    pub id: u64,
    pub admin: bool,
    pub tags: Vec<String>,
}

pub fn typed_values() -> (String, i64, User) {
    let user = User {
        name: "Zoë \"z\" O'Brien".into(),
        id: 1 << 40,
        admin: true,
        tags: vec!["a".into(), "b c".into()],
    };
    ("héllo, wörld; \"quoted\"".into(), -42, user)
}

pub fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/put", get(put))
        .route("/get", get(get_value))
        .route("/peek", get(peek))
        .route("/put_typed", get(put_typed))
        .route("/get_typed", get(get_typed))
        .route("/pop", get(pop))
        .route("/remove", get(remove))
        .route("/clear", get(clear))
        .route("/keys", get(keys))
        .route("/contains", get(contains))
        .route("/destroy", get(destroy))
        .route("/destroy_put", get(destroy_put))
        .route("/renew", get(renew))
        .route("/remember", get(remember))
        .route("/set_deadline", get(set_deadline))
        .route("/deadline", get(deadline))
        .route("/merge", get(merge))
        .route("/read_put", get(read_put))
        .route("/set_owner", get(set_owner))
        .route("/owner", get(owner))
        .route("/destroy_owner", get(destroy_owner))
        .route("/devices", get(devices))
        .route("/revoke", get(revoke))
        .route("/revoke_others", get(revoke_others))
        .route("/set_client", get(set_client))
        .route("/clients", get(clients))
        .route("/put_many", get(put_many))
        .route("/remove_many", get(remove_many))
        .route("/count", get(count))
        .route("/ping", get(|| async { "pong" }))
        .layer(layer)
}

/// Inserts `n` keys `k<from>`…, each with the value `value`, in one request.
async fn put_many(s: Session, Query(q): Query<Q>) -> &'static str {
    for i in q.from..q.from + q.n {
        s.insert(format!("k{i}"), &q.value);
    }
    "ok"
}

/// Removes the `n` keys `k<from>`… in one request.
async fn remove_many(s: Session, Query(q): Query<Q>) -> &'static str {
    for i in q.from..q.from + q.n {
        s.remove(&format!("k{i}"));
    }
    "ok"
}

/// How many keys the session holds.
async fn count(s: Session) -> Result<String, Error> {
    Ok(s.keys().await?.len().to_string())
}

async fn put(s: Session, Query(q): Query<Q>) -> &'static str {
    s.insert(q.key, q.value);
    "ok"
}

async fn get_value(s: Session, Query(q): Query<Q>) -> Result<String, Error> {
    Ok(s.get::<String>(&q.key)
        .await?
        .unwrap_or_else(|| NONE.into()))
}

/// Like `/get`, but swallows the error: the layer must still answer with its error response.
async fn peek(s: Session, Query(q): Query<Q>) -> String {
    s.get::<String>(&q.key)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| NONE.into())
}

async fn put_typed(s: Session) -> &'static str {
    let (text, number, user) = typed_values();
    s.insert("text", text);
    s.insert("number", number);
    s.insert("user", user);
    "ok"
}

async fn get_typed(s: Session) -> Result<String, Error> {
    let text: Option<String> = s.get("text").await?;
    let number: Option<i64> = s.get("number").await?;
    let user: Option<User> = s.get("user").await?;
    Ok(serde_json::to_string(&(text, number, user)).unwrap())
}

async fn pop(s: Session, Query(q): Query<Q>) -> Result<String, Error> {
    Ok(s.pop::<String>(&q.key)
        .await?
        .unwrap_or_else(|| NONE.into()))
}

async fn remove(s: Session, Query(q): Query<Q>) -> &'static str {
    s.remove(&q.key);
    "ok"
}

/// Clears the session (without loading it); with a `gate`, after stopping at it.
async fn clear(s: Session, Query(q): Query<Q>) -> &'static str {
    stop_at(&q.gate).await;
    s.clear();
    "ok"
}

/// Stops at the gate `name`, unless it is empty.
async fn stop_at(name: &str) {
    if !name.is_empty() {
        gate::pass(name).await;
    }
}

async fn keys(s: Session) -> Result<String, Error> {
    Ok(s.keys().await?.join(","))
}

async fn contains(s: Session, Query(q): Query<Q>) -> Result<String, Error> {
    Ok(s.contains(&q.key).await?.to_string())
}

async fn destroy(s: Session) -> &'static str {
    s.destroy();
    "ok"
}

async fn destroy_put(s: Session, Query(q): Query<Q>) -> &'static str {
    s.destroy();
    s.insert(q.key, q.value);
    "ok"
}

async fn renew(s: Session) -> Result<&'static str, Error> {
    s.renew_token().await?;
    Ok("ok")
}

async fn remember(s: Session, Query(q): Query<Q>) -> &'static str {
    s.remember_me(q.on);
    "ok"
}

async fn set_deadline(s: Session, Query(q): Query<Q>) -> &'static str {
    let delta = Duration::from_secs(q.secs.unsigned_abs());
    let now = SystemTime::now();
    s.set_deadline(if q.secs >= 0 {
        now + delta
    } else {
        now - delta
    });
    "ok"
}

/// The deadline in Unix milliseconds.
async fn deadline(s: Session) -> Result<String, Error> {
    let d = s.deadline().await?;
    Ok(d.duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string())
}

async fn merge(s: Session, Query(q): Query<Q>) -> Result<&'static str, Error> {
    s.merge(&q.token).await?;
    Ok("ok")
}

/// Loads the session, then writes; with a `gate`, stops at it in between, so that the test
/// knows the load is done and decides when the write commits.
async fn read_put(s: Session, Query(q): Query<Q>) -> Result<&'static str, Error> {
    s.keys().await?;
    stop_at(&q.gate).await;
    s.insert(q.key, q.value);
    Ok("ok")
}

/// Ties the session to the owner `value`.
async fn set_owner(s: Session, Query(q): Query<Q>) -> &'static str {
    s.set_owner(q.value);
    "ok"
}

async fn owner(s: Session) -> Result<String, Error> {
    Ok(s.owner().await?.unwrap_or_else(|| NONE.into()))
}

/// The device list, a line a device: `<id> <current> <created ms> <last seen ms>`.
async fn devices(s: Session) -> Result<String, Error> {
    let ms =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let lines: Vec<String> = (s.devices().await?.iter())
        .map(|d| {
            format!(
                "{} {} {} {}",
                d.id,
                d.current,
                ms(d.created),
                ms(d.last_seen)
            )
        })
        .collect();
    Ok(lines.join("\n"))
}

/// Records the user agent `value` and the IP `key` (each when not empty).
async fn set_client(s: Session, Query(q): Query<Q>) -> &'static str {
    let some = |v: &str| Some(v.to_owned()).filter(|v| !v.is_empty());
    s.set_client(some(&q.value).as_deref(), some(&q.key).as_deref());
    "ok"
}

/// What the device list shows of each client: `<current>|<user agent>|<ip>` lines.
async fn clients(s: Session) -> Result<String, Error> {
    let lines: Vec<String> = (s.devices().await?.iter())
        .map(|d| {
            let (ua, ip) = (d.user_agent.as_deref(), d.ip.as_deref());
            format!("{}|{}|{}", d.current, ua.unwrap_or("-"), ip.unwrap_or("-"))
        })
        .collect();
    Ok(lines.join("\n"))
}

/// Revokes the device `value`; answers whether there was one.
async fn revoke(s: Session, Query(q): Query<Q>) -> Result<String, Error> {
    let Ok(id) = q.value.parse() else {
        return Ok("bad id".into());
    };
    Ok(s.revoke_device(&id).await?.to_string())
}

/// Revokes every other device of the owner; answers how many.
async fn revoke_others(s: Session) -> Result<String, Error> {
    Ok(s.revoke_other_devices().await?.to_string())
}

/// Logs the owner `value` out everywhere; answers how many sessions were deleted.
async fn destroy_owner(s: Session, Query(q): Query<Q>) -> Result<String, Error> {
    Ok(s.destroy_owner(&q.value).await?.to_string())
}
