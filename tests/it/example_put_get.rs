//! Drives the `put_get` example binary over TCP: its routes on Redis, and two server processes
//! sharing one Redis without losing concurrent writes; the token in `SESSION_HEADER`'s header,
//! signed with `SESSION_SIGNING_KEYS` and rotated; its `/ws` WebSocket, committing by hand, on
//! both stores and both carriers; and checks how it takes its settings.
//!
//! `cargo test` (and `cargo nextest run`) build the examples before running tests; the binary is
//! found next to this test's own executable (see `crate::harness::example`).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use http::{StatusCode, header};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{
    RedisServer, assert_valid_token,
    example::{
        self, Carry, EXAMPLE_VARS, Example, HttpClient, Reply, Socket, get, get_via, http_client,
        token_of,
    },
    made_up_token,
};

#[tokio::test]
async fn routes_answer_as_scs_on_redis() {
    let redis = RedisServer::start().await;
    let example = Example::on_redis("put_get", &redis);
    let http = http_client();
    let a = example.addr.as_str();

    let ping = get(&http, a, "/ping", None).await;
    assert_eq!((ping.status, ping.body.as_str()), (StatusCode::OK, "pong"));
    assert!(ping.set_cookie.is_none());

    let put = get(&http, a, "/put", None).await;
    assert_eq!((put.status, put.body.as_str()), (StatusCode::OK, ""));
    let token = token_of(put.set_cookie.as_deref().expect("a session cookie"));
    let t = Some(token.as_str());
    let got = get(&http, a, "/get", t).await;
    assert_eq!(got.body, "Hello from a session!");
    assert!(got.set_cookie.is_none());

    get(&http, a, "/put?message=X&key=K", t).await;
    assert_eq!(get(&http, a, "/pop?key=K", t).await.body, "X");
    assert_eq!(get(&http, a, "/get?key=K", t).await.body, "");

    let renewed = get(&http, a, "/renew", t).await;
    let new = token_of(renewed.set_cookie.as_deref().expect("renew sends a cookie"));
    assert_ne!(new, token);
    assert_eq!(
        get(&http, a, "/get", t).await.body,
        "",
        "old token still works"
    );
    let n = Some(new.as_str());
    assert_eq!(get(&http, a, "/get", n).await.body, "Hello from a session!");

    let remember = get(&http, a, "/remember?on=true", n).await;
    assert!(remember.set_cookie.unwrap().contains("Max-Age="));

    let destroyed = get(&http, a, "/destroy", n).await;
    let cookie = destroyed.set_cookie.expect("an expiring cookie");
    assert!(cookie.starts_with("session=;"), "{cookie}");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    assert_eq!(get(&http, a, "/get", n).await.body, "");
    // No session is left; the renewed token's marker (pointing at the destroyed session) lives
    // out its few seconds.
    let inspector = redis.inspector();
    assert!(inspector.sessions().await.is_empty());
    for key in inspector.keys().await {
        assert!(inspector.hgetall(&key).await.contains_key("moved"), "{key}");
    }
}

/// 50 sessions × 8 concurrent writers of different keys, the writers of each session spread
/// over two example processes that share one Redis: nothing lost.
#[tokio::test]
async fn two_processes_sharing_redis_lose_no_concurrent_write() {
    let redis = RedisServer::start().await;
    let servers = [
        Example::on_redis("put_get", &redis),
        Example::on_redis("put_get", &redis),
    ];
    let http = http_client();
    let mut tokens = Vec::new();
    for s in 0..50 {
        let res = get(&http, &servers[s % 2].addr, "/put?key=base&message=0", None).await;
        tokens.push(token_of(&res.set_cookie.expect("a session cookie")));
    }
    let mut set = JoinSet::new();
    for token in &tokens {
        for w in 0..8 {
            let (http, addr, token) = (http.clone(), servers[w % 2].addr.clone(), token.clone());
            set.spawn(async move {
                let path = format!("/put?key=k{w}&message=v{w}");
                let res = get(&http, &addr, &path, Some(&token)).await;
                assert_eq!(res.status, StatusCode::OK);
                assert!(
                    res.set_cookie.is_some_and(|c| token_of(&c) == token),
                    "the write moved to another session"
                );
            });
        }
    }
    while let Some(done) = set.join_next().await {
        done.expect("writer task");
    }
    let mut lost = 0;
    for (s, token) in tokens.iter().enumerate() {
        for w in 0..8 {
            let addr = &servers[(s + w) % 2].addr;
            let got = get(&http, addr, &format!("/get?key=k{w}"), Some(token)).await;
            lost += usize::from(got.body != format!("v{w}"));
        }
    }
    assert_eq!(lost, 0, "{lost} of 400 writes lost");
}

/// An `ADDR` no listener can bind (the port does not parse; no DNS lookup is made): an example
/// that accepted its settings exits at once as well ("cannot listen", code 1), never hangs.
const UNBINDABLE: &str = "127.0.0.1:99999";

/// Runs the `put_get` example to its exit with `env` (and `ADDR` = [`UNBINDABLE`]; the other
/// variables it reads unset): its exit code and stderr.
pub(crate) fn run_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let bin = example::binary("put_get");
    let mut command = Command::new(&bin);
    for var in EXAMPLE_VARS {
        command.env_remove(var);
    }
    let output = command
        .envs(env.iter().copied())
        .env("ADDR", UNBINDABLE)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} (cargo build --examples): {e}", bin.display()));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[test]
fn out_of_range_durations_exit_with_a_usage_message() {
    let lifetimes = ["inf", "-inf", "NaN", "1e20", "-1", "abc", "", "0", "0.0009"];
    let idle_timeouts = ["inf", "1e20", "-1", "abc", "0.0009", "-0.5"];
    let cases = (lifetimes.iter().map(|v| ("LIFETIME_SECS", *v)))
        .chain(idle_timeouts.iter().map(|v| ("IDLE_TIMEOUT_SECS", *v)));
    for (name, value) in cases {
        let (code, stderr) = run_to_exit(&[(name, value)]);
        assert_eq!(code, Some(2), "{name}={value:?}: {stderr}");
        let says = format!("{name}={value:?} is not valid: expected seconds from 0.001 to 1e19");
        assert!(stderr.starts_with(&says), "{name}={value:?}: {stderr}");
        assert!(stderr.contains("\nusage: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn edge_durations_and_an_idle_timeout_of_zero_are_taken() {
    let cases = [
        [("LIFETIME_SECS", "0.001"), ("IDLE_TIMEOUT_SECS", "0.001")],
        [("LIFETIME_SECS", "1e19"), ("IDLE_TIMEOUT_SECS", "1e19")],
        [("LIFETIME_SECS", "60"), ("IDLE_TIMEOUT_SECS", "0")],
    ];
    for env in cases {
        // Exit code 1 from the unbindable address: the settings were taken.
        let (code, stderr) = run_to_exit(&env);
        assert_eq!(code, Some(1), "{env:?}: {stderr}");
        assert!(stderr.starts_with("cannot listen on "), "{env:?}: {stderr}");
    }
}

/// `IDLE_TIMEOUT_SECS=0` is no idle timeout: the cookie lives the whole lifetime, where an idle
/// timeout of 1 s makes it live about a second (`Max-Age` is rounded up).
#[tokio::test]
async fn an_idle_timeout_of_zero_is_none() {
    let http = http_client();
    for (idle, max_age) in [("0", 3599..=3601), ("1", 1..=2)] {
        let env = [("LIFETIME_SECS", "3600"), ("IDLE_TIMEOUT_SECS", idle)];
        let example = Example::start("put_get", &env);
        let put = get(&http, &example.addr, "/put", None).await;
        let cookie = put.set_cookie.expect("a session cookie");
        let secs: u64 = (cookie.split("; ").find_map(|a| a.strip_prefix("Max-Age=")))
            .and_then(|secs| secs.parse().ok())
            .unwrap_or_else(|| panic!("no Max-Age: {cookie}"));
        assert!(
            max_age.contains(&secs),
            "IDLE_TIMEOUT_SECS={idle}: {cookie}"
        );
    }
}

/// The header the tests name in `SESSION_HEADER`.
const HEADER: Carry = Carry::Header("x-session-token");

const KEYS: &str = "SESSION_SIGNING_KEYS";

/// Two signing keys, as raw bytes; each test encodes them in the forms it wants. Both encode
/// with `+` or `/` in the standard alphabet, so that its forms differ from the URL-safe ones.
const K1: [u8; 32] = [0xfb; 32];
const K2: [u8; 32] = [0xbe; 32];

/// Asserts `wire` is a signed token, `<token>.<tag>` (43 + 1 + 43 characters, the tag 32 bytes
/// of base64url); returns the token.
#[track_caller]
fn assert_signed(wire: &str) -> &str {
    assert_eq!(wire.len(), 87, "a signed token: {wire:?}");
    let (token, tag) = wire.split_once('.').expect("token.tag");
    assert_valid_token(token);
    assert_eq!(URL_SAFE_NO_PAD.decode(tag).map(|t| t.len()), Ok(32), "tag");
    token
}

#[track_caller]
fn assert_no_cookie(reply: &Reply) {
    assert_eq!(reply.set_cookie, None);
    assert!(!reply.headers.contains_key(header::SET_COOKIE));
}

/// The routes over the header: the token comes back in it whenever it changes (empty after a
/// destroy), a read says nothing, and no response has a `Set-Cookie`. Returns the last token.
async fn routes_over_the_header(http: &HttpClient, a: &str) -> String {
    let ping = get_via(http, a, "/ping", HEADER, None).await;
    assert_eq!(ping.body, "pong");
    assert_eq!(ping.token(HEADER), None);

    let put = get_via(http, a, "/put", HEADER, None).await;
    assert_eq!((put.status, put.body.as_str()), (StatusCode::OK, ""));
    assert_no_cookie(&put);
    let token = put.token(HEADER).expect("the token in x-session-token");
    assert_valid_token(&token);
    assert_eq!(put.headers[header::CACHE_CONTROL], "private");
    assert_eq!(put.headers[header::VARY], "x-session-token");
    let t = Some(token.as_str());
    let got = get_via(http, a, "/get", HEADER, t).await;
    assert_eq!(got.body, "Hello from a session!");
    assert_eq!(got.token(HEADER), None, "a read sends no token");
    assert_no_cookie(&got);
    // The cookie carries nothing here: the header is the only carrier.
    assert_eq!(get(http, a, "/get", t).await.body, "");

    let put = get_via(http, a, "/put?message=X&key=K", HEADER, t).await;
    assert_eq!(put.token(HEADER).as_deref(), t, "a write keeps the token");
    assert_eq!(get_via(http, a, "/pop?key=K", HEADER, t).await.body, "X");
    assert_eq!(get_via(http, a, "/get?key=K", HEADER, t).await.body, "");

    let renewed = get_via(http, a, "/renew", HEADER, t).await;
    assert_no_cookie(&renewed);
    let new = renewed.token(HEADER).expect("renew sends the new token");
    assert_valid_token(&new);
    assert_ne!(new, token);
    assert_eq!(get_via(http, a, "/get", HEADER, t).await.body, "");
    let n = Some(new.as_str());
    let got = get_via(http, a, "/get", HEADER, n).await;
    assert_eq!(got.body, "Hello from a session!");
    let remember = get_via(http, a, "/remember?on=true", HEADER, n).await;
    assert_eq!(remember.token(HEADER).as_deref(), n);
    assert_no_cookie(&remember);

    let destroyed = get_via(http, a, "/destroy", HEADER, n).await;
    assert_eq!(
        destroyed.token(HEADER).as_deref(),
        Some(""),
        "an empty header"
    );
    assert_no_cookie(&destroyed);
    assert_eq!(get_via(http, a, "/get", HEADER, n).await.body, "");
    new
}

#[tokio::test]
async fn session_header_carries_the_token_on_memory() {
    let example = Example::start("put_get", &[("SESSION_HEADER", "X-Session-Token")]);
    let stdout = example.stdout();
    assert!(
        stdout.contains("token: in the header X-Session-Token"),
        "{stdout}"
    );
    routes_over_the_header(&http_client(), &example.addr).await;
}

/// `REDIS_URL=rediss://…` with `REDIS_CA_FILE`, the CA that signed the TLS-only server's
/// certificate: a put and a get over TLS, and the session is in Redis.
#[tokio::test]
async fn rediss_with_redis_ca_file_puts_and_gets() {
    let redis = RedisServer::start_tls().await;
    let ca = redis.certs().expect("a TLS server").ca_file();
    let ca = ca.to_str().expect("a UTF-8 temp path");
    let example = Example::on_redis_with("put_get", &redis, &[("REDIS_CA_FILE", ca)]);
    assert!(
        redis.url().starts_with("rediss://127.0.0.1:"),
        "{}",
        redis.url()
    );
    let (http, a) = (http_client(), example.addr.as_str());

    let put = get(&http, a, "/put?message=over-tls", None).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let token = token_of(put.set_cookie.as_deref().expect("a session cookie"));
    let got = get(&http, a, "/get", Some(&token)).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (StatusCode::OK, "over-tls")
    );
    assert_eq!(redis.inspector().sessions().await.len(), 1);
}

/// A CA file that cannot be used, or one given for a plain-text URL, exits with code 2 naming
/// `REDIS_CA_FILE`, before any connection is made.
#[test]
fn an_unusable_redis_ca_file_exits_with_code_2() {
    let not_pem = std::env::temp_dir().join(format!("tower-scs-not-pem-{}", std::process::id()));
    std::fs::write(&not_pem, "not a certificate\n").expect("write a file");
    let not_pem = not_pem.to_str().expect("a UTF-8 temp path").to_owned();
    let cases = [
        (
            "redis://127.0.0.1:1",
            not_pem.as_str(),
            "REDIS_URL must be rediss://",
        ),
        (
            "rediss://127.0.0.1:1",
            "/nonexistent/ca.pem",
            "REDIS_CA_FILE=/nonexistent/ca.pem: ",
        ),
        (
            "rediss://127.0.0.1:1",
            not_pem.as_str(),
            "no PEM certificate in it",
        ),
    ];
    for (url, ca, says) in cases {
        let (code, stderr) = run_to_exit(&[("REDIS_URL", url), ("REDIS_CA_FILE", ca)]);
        assert_eq!(code, Some(2), "{url} {ca}: {stderr}");
        assert!(
            stderr.contains("REDIS_CA_FILE") && stderr.contains(says),
            "{stderr}"
        );
        assert!(stderr.contains("\nusage: "), "{stderr}");
    }
    let _ = std::fs::remove_file(&not_pem);
}

#[tokio::test]
async fn session_header_carries_the_token_on_redis() {
    let redis = RedisServer::start().await;
    let example =
        Example::on_redis_with("put_get", &redis, &[("SESSION_HEADER", "x-session-token")]);
    let last = routes_over_the_header(&http_client(), &example.addr).await;
    // Nothing is left but the renewed token's marker, pointing at the destroyed session.
    let inspector = redis.inspector();
    assert!(inspector.sessions().await.is_empty());
    assert!(!inspector.exists(&format!("scs:session:{last}")).await);
}

#[tokio::test]
async fn signed_tokens_on_the_wire_and_a_tampered_one_is_a_fresh_session() {
    let example = Example::start("put_get", &[(KEYS, &STANDARD.encode(K1))]);
    assert!(example.stdout().contains("token: signed, 1 key(s)"));
    let (http, a) = (http_client(), example.addr.as_str());
    let put = get(&http, a, "/put?message=signed", None).await;
    let wire = put.token(Carry::Cookie).unwrap();
    let token = assert_signed(&wire).to_owned();
    assert_eq!(get(&http, a, "/get", Some(&wire)).await.body, "signed");

    let flip = |i: usize| {
        let mut bytes = wire.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let forged = [
        flip(60),      // the tag
        flip(3),       // the token
        token.clone(), // no tag
        format!("{wire}A"),
        format!("{}.{}", token, &wire[..43]),
    ];
    for forged in &forged {
        let got = get(&http, a, "/get", Some(forged)).await;
        assert_eq!(got.body, "", "{forged}");
        assert_eq!(got.set_cookie, None, "{forged}");
    }
    // A write with a tampered token goes into a fresh session, with a token of its own.
    let fresh = get(&http, a, "/put?message=mine", Some(&forged[0])).await;
    let fresh = fresh.token(Carry::Cookie).expect("a fresh session");
    assert_ne!(assert_signed(&fresh), token);
    assert_eq!(get(&http, a, "/get", Some(&fresh)).await.body, "mine");
    assert_eq!(get(&http, a, "/get", Some(&wire)).await.body, "signed");
}

/// Signed over the header on Redis: the header carries `<token>.<tag>`, the store keeps the
/// token alone.
#[tokio::test]
async fn signed_tokens_travel_in_the_header_and_the_store_never_sees_the_tag() {
    let redis = RedisServer::start().await;
    let env = [
        ("SESSION_HEADER", "x-session-token"),
        (KEYS, &URL_SAFE.encode(K2)),
    ];
    let example = Example::on_redis_with("put_get", &redis, &env);
    let (http, a) = (http_client(), example.addr.as_str());
    let put = get_via(&http, a, "/put?message=signed", HEADER, None).await;
    let wire = put.token(HEADER).expect("the token in the header");
    let token = assert_signed(&wire);
    assert_eq!(
        redis.inspector().sessions().await,
        [format!("scs:session:{token}")]
    );
    let got = get_via(&http, a, "/get", HEADER, Some(&wire)).await;
    assert_eq!(got.body, "signed");
    let unsigned = get_via(&http, a, "/get", HEADER, Some(token)).await;
    assert_eq!(unsigned.body, "", "an unsigned token is no session");
}

/// `K1`, then `K2,K1`: the old token still works and comes back signed with `K2`; then `K2`
/// alone: the old token is no session, the re-signed one is.
#[tokio::test]
async fn rotating_keys_keeps_the_session_and_re_signs_its_token() {
    let redis = RedisServer::start().await;
    let http = http_client();
    let (k1, k2) = (STANDARD_NO_PAD.encode(K1), URL_SAFE.encode(K2));
    let old = {
        let example = Example::on_redis_with("put_get", &redis, &[(KEYS, &k1)]);
        let put = get(&http, &example.addr, "/put?message=kept", None).await;
        put.token(Carry::Cookie).expect("a session cookie")
    }; // the example is killed here
    let token = assert_signed(&old).to_owned();

    let rotated = Example::on_redis_with("put_get", &redis, &[(KEYS, &format!("{k2},{k1}"))]);
    let a = rotated.addr.as_str();
    let got = get(&http, a, "/get", Some(&old)).await;
    assert_eq!(got.body, "kept");
    let new = got.token(Carry::Cookie).expect("the token re-signed");
    assert_eq!(assert_signed(&new), token, "the same session, signed anew");
    assert_ne!(new, old);
    let again = get(&http, a, "/get", Some(&new)).await;
    assert_eq!((again.body.as_str(), again.set_cookie), ("kept", None));
    assert_eq!(get(&http, a, "/get", Some(&old)).await.body, "kept");
    drop(rotated);

    let example = Example::on_redis_with("put_get", &redis, &[(KEYS, &k2)]);
    let a = example.addr.as_str();
    let dropped = get(&http, a, "/get", Some(&old)).await;
    assert_eq!((dropped.body.as_str(), dropped.set_cookie), ("", None));
    assert_eq!(get(&http, a, "/get", Some(&new)).await.body, "kept");
}

/// One key in its four base64 forms, given to four processes on one Redis: a token any of them
/// signed verifies on all of them as signed with their first key (not re-signed).
#[tokio::test]
async fn a_key_in_either_alphabet_with_or_without_padding_is_the_same_key() {
    let redis = RedisServer::start().await;
    let forms = [
        STANDARD.encode(K1),
        STANDARD_NO_PAD.encode(K1),
        URL_SAFE.encode(K1),
        URL_SAFE_NO_PAD.encode(K1),
    ];
    for (i, form) in forms.iter().enumerate() {
        assert!(
            !forms[..i].contains(form),
            "four different forms: {forms:?}"
        );
    }
    let examples: Vec<Example> = (forms.iter())
        .map(|key| Example::on_redis_with("put_get", &redis, &[(KEYS, key)]))
        .collect();
    let http = http_client();
    let put = get(&http, &examples[0].addr, "/put?message=same", None).await;
    let wire = put.token(Carry::Cookie).unwrap();
    for example in &examples {
        let got = get(&http, &example.addr, "/get", Some(&wire)).await;
        assert_eq!((got.body.as_str(), got.set_cookie), ("same", None));
    }
}

#[test]
fn bad_signing_keys_exit_with_code_2_naming_the_key_but_never_showing_it() {
    let good = STANDARD.encode(K1);
    let short = STANDARD.encode([7u8; 31]);
    let not_base64 = "not*base64*though*as*long*as*a*key*should*be*0123";
    let cases = [
        (short.clone(), "signing key 1 is 31 bytes"),
        (not_base64.to_owned(), "signing key 1 is not base64"),
        (format!("{good},{short}"), "signing key 2 is 31 bytes"),
        (
            format!("{good},{not_base64}"),
            "signing key 2 is not base64",
        ),
        (format!("{good},"), "signing key 2 is 0 bytes"),
        (String::new(), "signing key 1 is 0 bytes"),
    ];
    for (keys, says) in cases {
        let (code, stderr) = run_to_exit(&[(KEYS, &keys)]);
        assert_eq!(code, Some(2), "{says}: {stderr}");
        let expected = format!("SESSION_SIGNING_KEYS is not valid: {says}");
        assert!(stderr.starts_with(&expected), "{stderr}");
        assert!(stderr.contains("\nusage: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for key in keys.split(',').filter(|key| !key.is_empty()) {
            assert!(!stderr.contains(key), "a key is shown: {stderr}");
        }
    }
    // Good keys are taken: exit code 1 from the unbindable address.
    let both = format!("{good}, {} ", URL_SAFE_NO_PAD.encode(K2));
    let (code, stderr) = run_to_exit(&[(KEYS, &both)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("cannot listen on "), "{stderr}");
}

#[test]
fn bad_session_header_names_exit_with_code_2() {
    let bad = [
        "bad name",
        "",
        "x-token:",
        "x-tökén",
        "cookie",
        "Set-Cookie",
        "authorization",
        "Host",
    ];
    for name in bad {
        let (code, stderr) = run_to_exit(&[("SESSION_HEADER", name)]);
        assert_eq!(code, Some(2), "{name:?}: {stderr}");
        let says = format!("SESSION_HEADER={name:?} is not valid: expected a header name");
        assert!(stderr.starts_with(&says), "{stderr}");
        assert!(stderr.contains("\nusage: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    for name in ["x-session-token", "X-Api-Session"] {
        let (code, stderr) = run_to_exit(&[("SESSION_HEADER", name)]);
        assert_eq!(code, Some(1), "{name:?}: {stderr}");
        assert!(stderr.starts_with("cannot listen on "), "{stderr}");
    }
}

/// What the example's `/ws` answers to a message that is not `put K V` or `get K`.
const USAGE: &str = "error: usage: put K V | get K";
const NO_SESSION: &str = "error: no session, the upgrade request carried none: start one with /put";
const ENDED: &str = "error: the session has ended, reconnect with a live session";
const UNAVAILABLE: &str = "error: session store unavailable";

/// A session started over HTTP on `carry`, then a WebSocket on it: each `put` is answered
/// `ok` once stored, and an HTTP `/get` with the same token sees it while the socket is open;
/// the socket's `get` reads the session (afresh after a `put`).
async fn websocket_puts_are_seen_over_http(example: &Example, carry: Carry, signed: bool) {
    let (http, a) = (http_client(), example.addr.as_str());
    let put = get_via(&http, a, "/put?key=base&message=from%20http", carry, None).await;
    let token = put.token(carry).expect("a token");
    assert_eq!(token.len(), if signed { 87 } else { 43 }, "{token}");
    let t = Some(token.as_str());
    let mut socket = Socket::open(a, carry, t).await;
    assert_eq!(
        carry.token_in(&socket.upgrade_headers),
        None,
        "the token stays"
    );
    assert_eq!(socket.say("get base").await, "from http");
    for i in 0..5 {
        assert_eq!(socket.say(&format!("put k{i} value {i}")).await, "ok");
        let got = get_via(&http, a, &format!("/get?key=k{i}"), carry, t).await;
        assert_eq!(got.body, format!("value {i}"));
        assert_eq!(got.token(carry), None);
    }
    assert_eq!(socket.say("put k0 again").await, "ok");
    assert_eq!(
        get_via(&http, a, "/get?key=k0", carry, t).await.body,
        "again"
    );
    assert_eq!(socket.say("get k1").await, "value 1");
    assert_eq!(socket.say("get missing").await, "");
    // What HTTP stores meanwhile, the socket reads after its next put.
    get_via(&http, a, "/put?key=h&message=later", carry, t).await;
    assert_eq!(socket.say("put x y").await, "ok");
    assert_eq!(socket.say("get h").await, "later");
    socket.close().await;
    // Stored, not only held by the socket.
    assert_eq!(get_via(&http, a, "/get?key=x", carry, t).await.body, "y");
}

#[tokio::test]
async fn websocket_on_memory_with_the_cookie() {
    let example = Example::start("put_get", &[]);
    websocket_puts_are_seen_over_http(&example, Carry::Cookie, false).await;
}

#[tokio::test]
async fn websocket_on_memory_with_the_header_and_signed_tokens() {
    let key = URL_SAFE_NO_PAD.encode(K1);
    let env = [("SESSION_HEADER", "x-session-token"), (KEYS, key.as_str())];
    let example = Example::start("put_get", &env);
    websocket_puts_are_seen_over_http(&example, HEADER, true).await;
}

#[tokio::test]
async fn websocket_on_redis_with_the_cookie_and_signed_tokens() {
    let redis = RedisServer::start().await;
    let example = Example::on_redis_with("put_get", &redis, &[(KEYS, &STANDARD.encode(K2))]);
    websocket_puts_are_seen_over_http(&example, Carry::Cookie, true).await;
}

#[tokio::test]
async fn websocket_on_redis_with_the_header() {
    let redis = RedisServer::start().await;
    let env = [("SESSION_HEADER", "x-session-token")];
    let example = Example::on_redis_with("put_get", &redis, &env);
    websocket_puts_are_seen_over_http(&example, HEADER, false).await;
}

#[tokio::test]
async fn websocket_answers_a_malformed_message_with_an_error_and_stays_open() {
    let example = Example::start("put_get", &[]);
    let (http, a) = (http_client(), example.addr.as_str());
    let token = get(&http, a, "/put", None)
        .await
        .token(Carry::Cookie)
        .unwrap();
    let mut socket = Socket::open(a, Carry::Cookie, Some(&token)).await;
    let malformed = [
        "", "put", "put k", "put  v", "get", "get ", "get a b", "PUT k v", "hello", "put\tk v",
        "get\tk",
    ];
    for message in malformed {
        assert_eq!(socket.say(message).await, USAGE, "{message:?}");
    }
    let binary = Message::binary(b"put k v".to_vec());
    assert_eq!(socket.send(binary).await, USAGE);
    let too_long = format!("put {} v", "k".repeat(2000));
    let refused = socket.say(&too_long).await;
    assert!(
        refused.starts_with("error: session too large: "),
        "{refused}"
    );
    assert!(!refused.contains(&token), "{refused}");
    // The socket still works, and nothing of the refused messages was stored.
    assert_eq!(socket.say("put k v w").await, "ok");
    assert_eq!(socket.say("get k").await, "v w");
    assert_eq!(get(&http, a, "/get?key=k", Some(&token)).await.body, "v w");
    assert_eq!(get(&http, a, "/get?key=a", Some(&token)).await.body, "");
}

/// A socket whose upgrade carried no live session (none, a made-up token, a destroyed
/// session's) stores nothing: its session would have a token no client knows.
#[tokio::test]
async fn websocket_without_a_live_session_stores_nothing() {
    let redis = RedisServer::start().await;
    let example = Example::on_redis("put_get", &redis);
    let (http, a) = (http_client(), example.addr.as_str());
    let destroyed = get(&http, a, "/put", None)
        .await
        .token(Carry::Cookie)
        .unwrap();
    get(&http, a, "/destroy", Some(&destroyed)).await;
    let made_up = made_up_token("nobody");
    for token in [None, Some(made_up.as_str()), Some(destroyed.as_str())] {
        let mut socket = Socket::open(a, Carry::Cookie, token).await;
        assert_eq!(socket.say("put k v").await, NO_SESSION, "{token:?}");
        assert_eq!(socket.say("get k").await, "", "{token:?}");
        socket.close().await;
    }
    assert_eq!(redis.inspector().keys().await, Vec::<String>::new());
}

/// The session destroyed, or renewed, over HTTP while the socket is open: the socket's next put
/// is refused and stores nothing, not even in a session of its own.
#[tokio::test]
async fn websocket_put_after_the_session_ended_stores_nothing() {
    let redis = RedisServer::start().await;
    let example = Example::on_redis("put_get", &redis);
    let (http, a) = (http_client(), example.addr.as_str());
    let token = get(&http, a, "/put", None)
        .await
        .token(Carry::Cookie)
        .unwrap();
    let t = Some(token.as_str());
    let mut socket = Socket::open(a, Carry::Cookie, t).await;
    assert_eq!(socket.say("put a 1").await, "ok");
    let destroyed = get(&http, a, "/destroy", t).await;
    assert_eq!(destroyed.token(Carry::Cookie).as_deref(), Some(""));
    assert_eq!(socket.say("put b 2").await, ENDED);
    assert_eq!(socket.say("put c 3").await, NO_SESSION);
    assert_eq!(socket.say("get a").await, "");
    assert_eq!(get(&http, a, "/get?key=b", t).await.body, "");
    assert_eq!(redis.inspector().keys().await, Vec::<String>::new());

    let token = get(&http, a, "/put", None)
        .await
        .token(Carry::Cookie)
        .unwrap();
    let mut socket = Socket::open(a, Carry::Cookie, Some(&token)).await;
    let renewed = get(&http, a, "/renew", Some(&token)).await;
    let new = renewed.token(Carry::Cookie).expect("the renewed token");
    assert_eq!(socket.say("put b 2").await, ENDED);
    let n = Some(new.as_str());
    assert_eq!(get(&http, a, "/get?key=b", n).await.body, "");
    assert_eq!(get(&http, a, "/get", n).await.body, "Hello from a session!");
    let sessions = redis.inspector().sessions().await;
    assert_eq!(sessions, [format!("scs:session:{new}")]);
}

/// Redis killed under an open socket: its messages are answered with an error, the process and
/// the socket live on; on an empty Redis again, the socket finds its session gone.
#[tokio::test]
async fn websocket_store_failure_is_an_error_answer_and_the_socket_stays_open() {
    let mut redis = RedisServer::start().await;
    let mut example = Example::on_redis("put_get", &redis);
    let (http, a) = (http_client(), example.addr.clone());
    let token = get(&http, &a, "/put", None)
        .await
        .token(Carry::Cookie)
        .unwrap();
    let mut socket = Socket::open(&a, Carry::Cookie, Some(&token)).await;
    assert_eq!(socket.say("put a 1").await, "ok");

    redis.stop();
    assert_eq!(socket.say("put b 2").await, UNAVAILABLE);
    assert_eq!(socket.say("get a").await, UNAVAILABLE);
    assert_eq!(socket.say("nonsense").await, USAGE);
    assert!(example.is_running(), "{}", example.stderr());

    redis.restart().await;
    let until = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = socket.say("put c 3").await;
        if answer != UNAVAILABLE || Instant::now() > until {
            break answer;
        }
    };
    assert_eq!(answer, ENDED, "the store did not come back to the socket");
    assert_eq!(redis.inspector().keys().await, Vec::<String>::new());
}
