//! Commits by hand through the real layer, every test run on both stores (`both_stores!`):
//!
//! - `Session::commit` in a handler stores at once (another request sees it before the
//!   response), the layer's own commit then stores only what is still pending, and the
//!   response carries the committed token (cookie, and signed in the header), or the renewed
//!   one, or the expiring cookie of a destroy after the commit;
//! - from a task after the response has left: its commit stores (a later request sees it),
//!   gives a session that had no token one, and returns a renewed token; a change there
//!   without a commit is not stored, and costs no store call;
//! - `SessionLoader` (in `by_hand/loader.rs`): create, load, commit, renew, destroy, and
//!   changes without a commit lost; it refuses forged, tampered and unsigned tokens without a
//!   store call.
//!
//! The handlers post what their commits returned through a channel, and stop at gates: the
//! test knows when a commit is done, and decides when a task goes on.

use std::time::Duration;

use axum::{
    Router,
    extract::{Query, State},
    routing::get,
};
use serde::Deserialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::harness::{
    Backend, Client, Gate, Header, NONE, READ_OF_OWN_WRITE, Resp, TOKEN_HEADER, app, assert_calls,
    assert_valid_token, gate, get_with, monitor, session_cookie, token_header,
};
use tower_scs::{Carrier, Error, Session, SessionLayer, SigningKeys};

mod loader;

crate::both_stores!(
    commit_in_a_handler_stores_at_once_then_the_layer_only_what_is_pending,
    commit_in_a_handler_over_a_signed_header,
    a_renew_or_destroy_around_a_handler_commit_reaches_the_client,
    commit_from_a_task_after_the_response,
    a_change_after_the_response_without_commit_is_lost,
);

const KEY: &[u8; 32] = b"by hand: a key of thirty-two b's";

type Posted = Result<Option<String>, Error>;

/// Where the handlers post what their commits returned.
#[derive(Clone)]
struct Mailbox(UnboundedSender<Posted>);

#[derive(Deserialize, Default)]
#[serde(default)]
struct Q {
    key: String,
    value: String,
    gate: String,
    /// `/later`: commit in the task.
    commit: bool,
    /// `/later`: renew in the task before committing.
    renew: bool,
    /// `/later`: also write `handler=yes` in the handler itself.
    touch: bool,
    /// `/commit_op`: `renew`, or `destroy`.
    op: String,
}

/// The harness's app plus `/commit_put`, `/commit_op` and `/later`, behind `layer`; what their commits
/// return comes out of the receiver.
fn by_hand_app(layer: SessionLayer) -> (Router, UnboundedReceiver<Posted>) {
    let (tx, rx) = unbounded_channel();
    let extra = Router::new()
        .route("/commit_put", get(commit_put))
        .route("/later", get(later))
        .route("/commit_op", get(commit_op))
        .with_state(Mailbox(tx))
        .layer(layer.clone());
    (app(layer).merge(extra), rx)
}

/// Inserts `key=value`, commits by hand and posts what the commit returned; then stops at
/// `gate`, and inserts `after=pending` for the layer's commit. Answers the committed token.
async fn commit_put(
    State(mailbox): State<Mailbox>,
    s: Session,
    Query(q): Query<Q>,
) -> Result<String, Error> {
    s.insert(q.key, q.value);
    let committed = s.commit().await;
    mailbox.0.send(committed.clone()).unwrap();
    let token = committed?.unwrap_or_default();
    gate::pass(&q.gate).await;
    s.insert("after", "pending");
    Ok(token)
}

/// `op=renew`: renews, then commits by hand. `op=destroy`: writes `x=1`, commits by hand, then
/// destroys. Answers what the commit returned.
async fn commit_op(s: Session, Query(q): Query<Q>) -> Result<String, Error> {
    match q.op.as_str() {
        "renew" => s.renew_token().await?,
        _ => s.insert("x", "1"),
    }
    let committed = s.commit().await?.unwrap_or_default();
    if q.op == "destroy" {
        s.destroy();
    }
    Ok(committed)
}

/// Hands the session to a task that, once `gate` opens (the test opens it after the
/// response), inserts `key=value`, renews if `renew`, and commits if `commit`; it posts what
/// the commit returned, or `Ok(None)` once it has dropped the session uncommitted.
async fn later(State(mailbox): State<Mailbox>, s: Session, Query(q): Query<Q>) -> &'static str {
    if q.touch {
        s.insert("handler", "yes");
    }
    tokio::spawn(async move {
        gate::pass(&q.gate).await;
        s.insert(q.key, q.value);
        let renewed = match q.renew {
            true => s.renew_token().await,
            false => Ok(()),
        };
        let posted = match (renewed, q.commit) {
            (Err(e), _) => Err(e),
            (Ok(()), true) => s.commit().await,
            (Ok(()), false) => {
                drop(s);
                Ok(None)
            }
        };
        let _ = mailbox.0.send(posted);
    });
    "ok"
}

/// What a handler posted next.
async fn posted(rx: &mut UnboundedReceiver<Posted>) -> Option<String> {
    let next = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    let posted = next
        .expect("a commit posted within 10 s")
        .expect("the handler posted");
    posted.expect("the commit succeeded")
}

/// How a test's layer carries tokens: the request header for a token, and the token a
/// response sends.
struct Wire {
    carry: fn(&str) -> Header,
    answer: fn(&Resp) -> String,
}

async fn commit_in_a_handler_stores_at_once_then_the_layer_only_what_is_pending(b: Backend) {
    let layer = b.layer().await;
    let wire = Wire {
        carry: session_cookie,
        answer: Resp::cookie_token,
    };
    let token = handler_commit(&b, layer, &wire).await;
    assert_valid_token(&token);
}

async fn commit_in_a_handler_over_a_signed_header(b: Backend) {
    let keys = SigningKeys::new([KEY]).unwrap();
    let layer = (b.layer().await)
        .carriers([Carrier::header(TOKEN_HEADER)])
        .signing_keys(keys);
    let wire = Wire {
        carry: |token| token_header(token),
        answer: Resp::header_token,
    };
    let token = handler_commit(&b, layer, &wire).await;
    assert_eq!(
        token.len(),
        87,
        "the commit returns the signed token: {token}"
    );
    assert_valid_token(&token[..43]);
}

/// A new session's handler commits `a=1` by hand, then waits; meanwhile another request with
/// the committed token reads `a` and sets it to 2; then the handler writes `after`. The layer
/// stores `after` alone (`a` stays 2), and the response carries the committed token, which
/// this returns.
async fn handler_commit(backend: &Backend, layer: SessionLayer, wire: &Wire) -> String {
    let (app, mut rx) = by_hand_app(layer);
    get_with(&app, "/put?key=warm&value=up", []).await; // loads the commit script
    let mut monitor = monitor(backend).await;
    let mut before = backend.calls.get();
    let gate = Gate::new();
    let uri = format!("/commit_put?key=a&value=1&gate={}", gate.name());
    let first = {
        let app = app.clone();
        tokio::spawn(async move { get_with(&app, &uri, []).await })
    };
    let token = posted(&mut rx).await.expect("a new session gets its token");

    // Stored already: another request with the token sees it, and overwrites `a`.
    let res = get_with(&app, "/get?key=a", [(wire.carry)(&token)]).await;
    assert_eq!(res.body, "1");
    res.assert_no_token("a read");
    let res = get_with(&app, "/put?key=a&value=2", [(wire.carry)(&token)]).await;
    assert_eq!((wire.answer)(&res), token);
    gate.open();
    let res = first.await.unwrap();
    assert_eq!(res.body, token);
    assert_eq!(
        (wire.answer)(&res),
        token,
        "the response carries the committed token"
    );
    let expected = ["evalsha", READ_OF_OWN_WRITE, "evalsha", "evalsha"];
    assert_calls(backend, &mut monitor, &mut before, (1, 3, 0), &expected).await;

    // The layer stored what was still pending, and not `a` again.
    let res = get_with(&app, "/get?key=a", [(wire.carry)(&token)]).await;
    assert_eq!(res.body, "2", "the layer's commit wrote `a` again");
    let res = get_with(&app, "/get?key=after", [(wire.carry)(&token)]).await;
    assert_eq!(res.body, "pending");
    token
}

async fn a_renew_or_destroy_around_a_handler_commit_reaches_the_client(backend: Backend) {
    let (app, _) = by_hand_app(backend.layer().await);
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let old = client.token.clone().unwrap();
    // A renew committed by hand: the response carries the token the commit returned.
    let res = client.get("/commit_op?op=renew").await;
    assert_eq!(res.cookie_token(), res.body);
    assert_ne!(res.body, old);
    assert_eq!(client.get("/get?key=a").await.body, "1");
    let res = Client::with_token(&app, &old).get("/get?key=a").await;
    assert_eq!(res.body, NONE);
    // A write committed by hand, then a destroy: the cookie expires, and what the commit
    // stored is deleted.
    let res = Client::new(&app).get("/commit_op?op=destroy").await;
    assert_valid_token(&res.body);
    assert_eq!(res.cookie_value().as_deref(), Some(""));
    assert!(!backend.stored(&res.body).await);
}

async fn commit_from_a_task_after_the_response(backend: Backend) {
    let (app, mut rx) = by_hand_app(backend.layer().await);
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();

    // The task writes once the response has left; its commit stores it, under the same token.
    let gate = Gate::new();
    let uri = format!("/later?key=late&value=v&commit=true&gate={}", gate.name());
    client
        .get(&uri)
        .await
        .assert_no_token("an untouched session");
    gate.open();
    assert_eq!(posted(&mut rx).await, Some(token.clone()));
    assert_eq!(client.get("/get?key=late").await.body, "v");

    // A session without a token gets one at the task's commit, which only the task learns.
    let gate = Gate::new();
    let uri = format!("/later?key=k&value=new&commit=true&gate={}", gate.name());
    Client::new(&app)
        .get(&uri)
        .await
        .assert_no_token("no token yet");
    gate.open();
    let new = posted(&mut rx).await.expect("a token at the first commit");
    assert_ne!(new, token);
    assert_eq!(
        Client::with_token(&app, &new).get("/get?key=k").await.body,
        "new"
    );

    // A renew in the task: the commit returns the new token; the client's old one is dead.
    let gate = Gate::new();
    let uri = format!(
        "/later?key=r&value=2&commit=true&renew=true&gate={}",
        gate.name()
    );
    client
        .get(&uri)
        .await
        .assert_no_token("an untouched session");
    gate.open();
    let renewed = posted(&mut rx).await.expect("the renewed token");
    assert_ne!(renewed, token);
    assert_eq!(client.get("/get?key=a").await.body, NONE);
    let mut renewed = Client::with_token(&app, &renewed);
    assert_eq!(renewed.get("/get?key=a").await.body, "1");
    assert_eq!(renewed.get("/get?key=r").await.body, "2");
}

async fn a_change_after_the_response_without_commit_is_lost(backend: Backend) {
    let (app, mut rx) = by_hand_app(backend.layer().await);
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let token = client.token.clone().unwrap();
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();

    // The handler's own write is committed by the layer; the task's, after, by nobody.
    let gate = Gate::new();
    let uri = format!("/later?key=lost&value=v&touch=true&gate={}", gate.name());
    let res = client.get(&uri).await;
    assert_eq!(res.cookie_token(), token);
    assert_calls(&backend, &mut monitor, &mut before, (0, 1, 0), &["evalsha"]).await;
    gate.open();
    assert_eq!(posted(&mut rx).await, None, "the task dropped its session");
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 0), &[]).await;
    assert_eq!(client.get("/get?key=lost").await.body, NONE);
    assert_eq!(client.get("/get?key=handler").await.body, "yes");
    assert_eq!(client.get("/get?key=a").await.body, "1");
}
