//! No header injection through a token's path, on both stores (`both_stores!`): what a client
//! sends in a token's place (`;`, `,`, spaces, tabs, obs-text, 100 kB, a tail after the token)
//! never comes back in a response, on the cookie, header or bearer carrier, and a token padded
//! with whitespace is found and answered clean. Raw CR, LF or NUL cannot reach a layer at all:
//! `http` refuses to build such a header value.

use http::HeaderValue;

use super::PUT;
use crate::harness::{
    Backend, Resp, TOKEN_HEADER, authorization, get_with, session_cookie, token_header,
};
use tower_scs::Carrier;

crate::both_stores!(
    padded_tokens_are_found_and_answered_clean,
    what_a_client_sends_never_comes_back,
);

async fn padded_tokens_are_found_and_answered_clean(backend: Backend) {
    let app = backend
        .app(|l| l.carriers([Carrier::header(TOKEN_HEADER), Carrier::bearer("x-answer")]))
        .await;
    let token = get_with(&app, PUT, []).await.header_token();
    // Whitespace around a field value is not part of it (RFC 9110 §5.5): the token is found,
    // and the answer is the token alone.
    for padded in [
        format!(" {token}"),
        format!("{token} "),
        format!("\t{token}\t"),
    ] {
        let res = get_with(&app, "/put?key=b&value=2", [token_header(&padded)]).await;
        assert_eq!(res.header_token(), token, "{padded:?}");
        let auth = authorization(&format!("Bearer {padded}"));
        let res = get_with(&app, "/put?key=b&value=2", [auth]).await;
        assert_eq!(
            res.header_values("x-answer"),
            [token.as_str()],
            "{padded:?}"
        );
        assert_eq!(res.answer(), None);
        assert_eq!(res.cache_directives(), ["private"]);
    }
}

/// The response's headers are the layer's and the app's only, and hold no `marker`.
#[track_caller]
fn assert_nothing_echoed(res: &Resp, marker: &str) {
    let known = [
        "vary",
        "cache-control",
        "set-cookie",
        TOKEN_HEADER,
        "x-answer",
    ];
    for (name, value) in &res.headers {
        let known = known.contains(&name.as_str()) || name.as_str().starts_with("content-");
        assert!(known, "unexpected header {name}: {res:?}");
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(!value.contains(marker), "{name}: {value}");
    }
}

async fn what_a_client_sends_never_comes_back(backend: Backend) {
    let carriers = [
        Carrier::cookie(),
        Carrier::header(TOKEN_HEADER),
        Carrier::bearer("x-answer"),
    ];
    let app = backend.app(|l| l.carriers(carriers)).await;
    assert!(
        HeaderValue::from_bytes(b"x\r\nSet-Cookie: evil=1").is_err()
            && HeaderValue::from_bytes(b"x\nVary: *").is_err()
            && HeaderValue::from_bytes(b"x\0").is_err(),
        "raw CR, LF or NUL never reach a layer"
    );
    let token = get_with(&app, PUT, []).await.cookie_token();
    // Signing is off: `<token>.<43 characters>` is the bare token, its tail ignored and never
    // sent back, whatever it holds.
    let tails = [
        format!("{:-<43}", "EVIL;x=1, Vary: *\t\"q\"\\%0D%0A"),
        format!("{:=<43}", "EVIL Set-Cookie: a=b"),
    ];
    for tail in tails {
        let value = format!("{token}.{tail}");
        let res = get_with(&app, "/get?key=a", [token_header(&value)]).await;
        assert_eq!(res.body, "1");
        assert_eq!(res.header_token(), token);
        assert_nothing_echoed(&res, "EVIL");
        let res = get_with(
            &app,
            "/get?key=a",
            [authorization(&format!("Bearer {value}"))],
        )
        .await;
        assert_eq!(res.body, "1");
        assert_eq!(res.header_values("x-answer"), [token.as_str()]);
        assert_nothing_echoed(&res, "EVIL");
    }
    // Odd values are no token: a fresh session each, nothing of them in the response.
    let odd = [
        format!("EVIL; {token}"),
        format!("{token}, EVIL"),
        format!("{token} EVIL"),
        format!("{token}\tEVIL"),
        format!("EVIL{}", "\u{e9}".repeat(10)),
        format!("EVIL{}", "x".repeat(100_000)),
    ];
    for value in &odd {
        let res = get_with(&app, PUT, [token_header(value)]).await;
        let fresh = res.header_token();
        assert!(fresh != token && !fresh.contains("EVIL"));
        assert_nothing_echoed(&res, "EVIL");
        let res = get_with(&app, PUT, [session_cookie(value)]).await;
        assert_ne!(res.cookie_token(), token);
        assert_nothing_echoed(&res, "EVIL");
        let res = get_with(&app, PUT, [authorization(&format!("Bearer {value}"))]).await;
        let fresh = res.header_values("x-answer");
        assert!(fresh.len() == 1 && fresh[0] != token, "{res:?}");
        assert_nothing_echoed(&res, "EVIL");
    }
}
