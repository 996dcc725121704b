//! Signed tokens through the real layer, every store test run on both stores
//! (`both_stores!`), on the cookie and the header carrier alike:
//!
//! - the wire token is `<token>.<base64url(HMAC-SHA256(key, token))>`, checked here with an
//!   HMAC of the test's own; the store keeps the bare token's session, never the tag;
//! - forged, tampered, truncated, extended, unsigned and rotated-out signatures are no session,
//!   and cost no store call (MONITOR on the test's own Redis);
//! - rotation without logout: keys `[A]`, then `[B, A]` (an A-signed token is answered signed
//!   with B, loaded once for that when the handler did not), then `[B]`;
//! - turning signing on (with `accept_unsigned`) and off loses no session.
//!
//! Short keys refused, and no secret in `Debug` output: `signing/secrets.rs`.

use axum::Router;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::harness::{
    Backend, NONE, READ_OF_OWN_WRITE, TOKEN_HEADER, a_session_on_each_carrier, assert_calls,
    assert_valid_token, get_with, made_up_token, monitor, session_cookie, token_header,
};
use tower_scs::{Carrier, SessionLayer, SigningKeys};

mod secrets;

crate::both_stores!(
    signed_tokens_on_the_wire,
    bad_signatures_are_no_session_and_no_store_call,
    rotation_keeps_every_session,
    signing_turned_on_with_accept_unsigned,
    signing_turned_off,
);

const A: &[u8; 32] = b"key A: at least thirty-two bytes";
const B: &[u8; 32] = b"key B: at least thirty-two bytes";
const C: &[u8; 32] = b"key C: never given to any layer!";

/// `<token>.<tag>` as the documentation defines it, computed by the test itself.
fn sign(key: &[u8], token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(token.as_bytes());
    format!(
        "{token}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn keys(list: &[&[u8; 32]]) -> SigningKeys {
    SigningKeys::new(list.iter().copied()).unwrap()
}

/// The cookie, then the header: every test here runs over both.
fn both(layer: SessionLayer) -> SessionLayer {
    layer.carriers([Carrier::cookie(), Carrier::header(TOKEN_HEADER)])
}

fn signed(list: &[&[u8; 32]]) -> impl FnOnce(SessionLayer) -> SessionLayer {
    let keys = keys(list);
    move |l| both(l).signing_keys(keys)
}

/// The bare token of a wire token.
fn bare(wire: &str) -> &str {
    &wire[..43]
}

async fn signed_tokens_on_the_wire(backend: Backend) {
    let app = backend.app(signed(&[A])).await;
    let (by_cookie, by_header) = a_session_on_each_carrier(&app).await;
    for wire in [&by_cookie, &by_header] {
        assert_eq!(wire.len(), 87, "{wire}");
        assert_valid_token(bare(wire));
        assert_eq!(
            *wire,
            sign(A, bare(wire)),
            "base64url(HMAC-SHA256(key, token))"
        );
        // The store holds the session under the bare token, and nothing of the tag.
        assert!(backend.stored(bare(wire)).await);
        assert!(!backend.stored(wire).await);
        if let Some(inspector) = backend.inspector() {
            let tag = &wire[44..];
            for key in inspector.keys().await {
                assert!(!key.contains(tag), "{key}");
                let hash = inspector.hgetall(&key).await;
                assert!(
                    hash.iter()
                        .all(|(f, v)| !f.contains(tag) && !v.contains(tag))
                );
            }
        }
    }
    // Read back on its own carrier; a read sends nothing.
    let res = get_with(&app, "/get?key=who", [session_cookie(&by_cookie)]).await;
    assert_eq!(res.body, "cookie");
    res.assert_no_token("a read");
    let res = get_with(&app, "/get?key=who", [token_header(&by_header)]).await;
    assert_eq!(res.body, "header");
    res.assert_no_token("a read");
    // A write keeps the token, and sends it signed again.
    let res = get_with(&app, "/put?key=n&value=1", [token_header(&by_header)]).await;
    assert_eq!(res.header_token(), by_header);
    // A renew: a new token, signed.
    let res = get_with(&app, "/renew", [session_cookie(&by_cookie)]).await;
    let renewed = res.cookie_token();
    assert_ne!(bare(&renewed), bare(&by_cookie));
    assert_eq!(renewed, sign(A, bare(&renewed)));
}

/// `s` with its character `i` changed.
fn flip(s: &str, i: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[i] = if b[i] == b'Q' { b'R' } else { b'Q' };
    String::from_utf8(b).unwrap()
}

/// Values that carry the token of `wire` (a live session's, signed with A) with a signature
/// that does not verify against `[A]`, and what each is.
fn bad_signatures(wire: &str) -> Vec<(String, &'static str)> {
    let (token, tag) = (bare(wire), &wire[44..]);
    let other = made_up_token("another token");
    vec![
        (
            format!("{token}.{}", URL_SAFE_NO_PAD.encode([0u8; 32])),
            "forged tag",
        ),
        (sign(C, token), "signed with a key never given"),
        (sign(B, token), "signed with a key not in the list"),
        (format!("{token}.{}", flip(tag, 10)), "tag tampered"),
        (format!("{token}.{}", flip(tag, 42)), "tag's last character"),
        (format!("{}.{tag}", flip(token, 0)), "token tampered"),
        (format!("{other}.{tag}"), "another token's tag"),
        (format!("{token}:{tag}"), "another separator"),
        (wire[..86].to_owned(), "truncated by one"),
        (wire[..44].to_owned(), "tag cut off"),
        (token.to_owned(), "unsigned"),
        (format!("{wire}A"), "extended"),
        (format!("{wire}.{tag}"), "tagged twice"),
        (sign(A, wire), "signed over the signed token"),
        (
            format!("{token}.{}", tag.replace('-', "+").replace('_', "/")),
            "std alphabet",
        ),
        (format!("{token}.{tag}="), "padded"),
    ]
    .into_iter()
    .filter(|(value, _)| value != wire) // the other alphabet, when the tag has neither - nor _
    .collect()
}

async fn bad_signatures_are_no_session_and_no_store_call(backend: Backend) {
    let app = backend.app(signed(&[A])).await;
    let rotated_out = backend.app(signed(&[B])).await;
    let (wire, _) = a_session_on_each_carrier(&app).await;
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();
    let mut cases: Vec<(&Router, String, &str)> = bad_signatures(&wire)
        .into_iter()
        .map(|(value, what)| (&app, value, what))
        .collect();
    cases.push((&rotated_out, wire.clone(), "its key removed"));
    for (app, value, what) in &cases {
        for carried in [session_cookie(value), token_header(value)] {
            for uri in ["/get?key=who", "/keys", "/pop?key=who", "/ping"] {
                let res = get_with(app, uri, [carried.clone()]).await;
                assert_ne!(res.body, "cookie", "{what}");
                res.assert_no_token(&format!("{uri}, {what}"));
            }
        }
    }
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 0), &[]).await;

    // A write with a tampered tag on the real token starts a fresh session under a new token;
    // the real one keeps its data.
    let tampered = format!("{}.{}", bare(&wire), flip(&wire[44..], 10));
    let res = get_with(
        &app,
        "/put?key=who&value=mallory",
        [session_cookie(&tampered)],
    )
    .await;
    let fresh = res.cookie_token();
    assert_ne!(bare(&fresh), bare(&wire));
    let res = get_with(&app, "/get?key=who", [session_cookie(&wire)]).await;
    assert_eq!(res.body, "cookie");
    assert_calls(
        &backend,
        &mut monitor,
        &mut before,
        (1, 1, 0),
        &["evalsha", READ_OF_OWN_WRITE],
    )
    .await;
}

async fn rotation_keeps_every_session(backend: Backend) {
    let under_a = backend.app(signed(&[A])).await;
    let under_ba = backend.app(signed(&[B, A])).await;
    let under_b = backend.app(signed(&[B])).await;
    let (by_cookie, by_header) = a_session_on_each_carrier(&under_a).await;
    let dead = get_with(&under_a, "/put?key=x&value=1", [])
        .await
        .cookie_token();
    get_with(&under_a, "/destroy", [session_cookie(&dead)]).await;
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();

    // Keys [B, A]: a read with an A-signed token sees the session, and the token comes back
    // signed with B, on its carrier: one load, nothing written.
    let res = get_with(&under_ba, "/get?key=who", [session_cookie(&by_cookie)]).await;
    assert_eq!(res.body, "cookie");
    let cookie_b = res.cookie_token();
    assert_eq!(cookie_b, sign(B, bare(&by_cookie)));
    assert_calls(&backend, &mut monitor, &mut before, (1, 0, 0), &["hgetall"]).await;
    // A request that does not touch the session: the layer loads it once, to re-sign.
    let res = get_with(&under_ba, "/ping", [token_header(&by_header)]).await;
    let header_b = res.header_token();
    assert_eq!(header_b, sign(B, bare(&by_header)));
    assert_calls(&backend, &mut monitor, &mut before, (1, 0, 0), &["hgetall"]).await;
    // A write with an A-signed token: answered signed with B as well.
    let res = get_with(
        &under_ba,
        "/put?key=w&value=1",
        [session_cookie(&by_cookie)],
    )
    .await;
    assert_eq!(res.cookie_token(), cookie_b);
    assert_calls(&backend, &mut monitor, &mut before, (0, 1, 0), &["evalsha"]).await;
    // A-signed, but the session is gone: the load finds nothing, and the cookie is cleared,
    // so that the client stops sending a token that costs a load on every request.
    let res = get_with(&under_ba, "/ping", [session_cookie(&dead)]).await;
    assert_eq!(res.cookie_value().as_deref(), Some(""), "{res:?}");
    assert_calls(&backend, &mut monitor, &mut before, (1, 0, 0), &["hgetall"]).await;
    // B-signed tokens are current: nothing to re-sign, no store call.
    get_with(&under_ba, "/ping", [session_cookie(&cookie_b)])
        .await
        .assert_no_token("current");
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 0), &[]).await;

    // Keys [B]: the A-signed tokens are no session, with no store call; the B-signed are.
    for old in [session_cookie(&by_cookie), token_header(&by_header)] {
        let res = get_with(&under_b, "/get?key=who", [old]).await;
        assert_eq!(res.body, NONE);
        res.assert_no_token("A removed");
    }
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 0), &[]).await;
    let res = get_with(&under_b, "/get?key=w", [session_cookie(&cookie_b)]).await;
    assert_eq!(res.body, "1");
    let res = get_with(&under_b, "/get?key=who", [token_header(&header_b)]).await;
    assert_eq!(res.body, "header");
}

async fn signing_turned_on_with_accept_unsigned(backend: Backend) {
    let plain = backend.app(both).await;
    let keys_a = keys(&[A]).accept_unsigned(true);
    let migrating = backend.app(|l| both(l).signing_keys(keys_a)).await;
    let signing = backend.app(signed(&[A])).await;
    let (by_cookie, by_header) = a_session_on_each_carrier(&plain).await;
    assert_valid_token(&by_cookie);
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();

    // Unsigned tokens accepted: the sessions live on, and their tokens come back signed.
    let res = get_with(&migrating, "/get?key=who", [session_cookie(&by_cookie)]).await;
    assert_eq!(res.body, "cookie");
    assert_eq!(res.cookie_token(), sign(A, &by_cookie));
    let res = get_with(&migrating, "/ping", [token_header(&by_header)]).await;
    assert_eq!(res.header_token(), sign(A, &by_header));
    // While they are, an unknown unsigned token costs a load, as without signing.
    let unknown = made_up_token("unsigned, unknown");
    let res = get_with(&migrating, "/get?key=who", [session_cookie(&unknown)]).await;
    assert_eq!(res.body, NONE);
    let loads = ["hgetall", "hgetall", "hgetall"];
    assert_calls(&backend, &mut monitor, &mut before, (3, 0, 0), &loads).await;

    // Signing alone: unsigned tokens are no session, with no store call; signed ones work.
    for unsigned in [session_cookie(&by_cookie), token_header(&by_header)] {
        let res = get_with(&signing, "/get?key=who", [unsigned]).await;
        assert_eq!(res.body, NONE);
        res.assert_no_token("unsigned");
    }
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 0), &[]).await;
    let res = get_with(
        &signing,
        "/get?key=who",
        [session_cookie(&sign(A, &by_cookie))],
    )
    .await;
    assert_eq!(res.body, "cookie");
    let res = get_with(
        &signing,
        "/get?key=who",
        [token_header(sign(A, &by_header))],
    )
    .await;
    assert_eq!(res.body, "header");
}

async fn signing_turned_off(backend: Backend) {
    let signing = backend.app(signed(&[A])).await;
    let plain = backend.app(both).await;
    let (by_cookie, by_header) = a_session_on_each_carrier(&signing).await;
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();

    // Off: a signed token is its bare token; the session lives on, and is answered bare.
    let res = get_with(&plain, "/get?key=who", [session_cookie(&by_cookie)]).await;
    assert_eq!(res.body, "cookie");
    assert_eq!(res.cookie_token(), bare(&by_cookie));
    let res = get_with(&plain, "/ping", [token_header(&by_header)]).await;
    assert_eq!(res.header_token(), bare(&by_header));
    assert_calls(
        &backend,
        &mut monitor,
        &mut before,
        (2, 0, 0),
        &["hgetall"; 2],
    )
    .await;
    // The bare token is current: a request that does not touch the session costs nothing.
    get_with(&plain, "/ping", [session_cookie(bare(&by_cookie))])
        .await
        .assert_no_token("bare");
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 0), &[]).await;
    // The tag is not checked while signing is off (as documented).
    let any_tag = format!("{}.{}", bare(&by_header), "x".repeat(43));
    let res = get_with(&plain, "/get?key=who", [token_header(&any_tag)]).await;
    assert_eq!(res.body, "header");
    assert_eq!(res.header_token(), bare(&by_header));
    // Back on: the signed tokens still work; nothing in the store changed.
    let res = get_with(&signing, "/get?key=who", [session_cookie(&by_cookie)]).await;
    assert_eq!(res.body, "cookie");
}
