//! The carriers beside the cookie, in order, and signing, without a store.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Request, header};

use crate::{
    config::Config,
    store::Committed,
    token,
    wire::{Carrier, SigningKeys, TokenOut, WireToken, accept, read, vary, write},
};

/// The token `read` takes from `req`, as it came.
fn token_of(config: &Config, req: &Request<()>) -> Option<String> {
    read(config, req).token.map(|t| t.value)
}

fn committed(now: SystemTime, secs: u64) -> Committed {
    Committed {
        expiry: now + Duration::from_secs(secs),
        remember: false,
    }
}

/// Settings with these carriers (and signing keys, when given).
fn with(carriers: &[Carrier], keys: Option<SigningKeys>) -> Config {
    Config {
        carriers: carriers.to_vec().into(),
        signing: keys,
        ..Config::default()
    }
}

fn headers_req(headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::new(());
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut()
            .append(name, HeaderValue::from_str(value).unwrap());
    }
    req
}

#[test]
fn a_header_carrier_reads_exactly_one_well_formed_value() {
    let config = with(&[Carrier::header("X-Session-Token")], None);
    let t = token::generate();
    let read_of = |h: &[(&str, &str)]| token_of(&config, &headers_req(h));
    assert_eq!(read_of(&[("x-session-token", &t)]), Some(t.clone()));
    assert_eq!(
        read_of(&[("X-Session-Token", &format!("  {t} "))]),
        Some(t.clone())
    );
    let long = format!("{t}{t}");
    for bad in ["", "nope", &t[..42], long.as_str(), &format!("{t}\t;x")] {
        assert_eq!(read_of(&[("x-session-token", bad)]), None, "{bad:?}");
    }
    // Sent twice, even with the same value: ambiguous, so no token.
    let twice = [
        ("x-session-token", t.as_str()),
        ("x-session-token", t.as_str()),
    ];
    assert_eq!(read_of(&twice), None);
    // The header carrier alone ignores cookies.
    assert_eq!(read_of(&[("cookie", &format!("session={t}"))]), None);
}

#[test]
fn a_bearer_carrier_reads_only_the_bearer_scheme() {
    let config = with(&[Carrier::bearer("x-session-token")], None);
    let t = token::generate();
    let read_of = |h: &[(&str, &str)]| token_of(&config, &headers_req(h));
    assert_eq!(
        read_of(&[("authorization", &format!("Bearer {t}"))]),
        Some(t.clone())
    );
    assert_eq!(
        read_of(&[("authorization", &format!("bEaReR {t}"))]),
        Some(t.clone())
    );
    for other in [
        format!("Basic {t}"),
        format!("Bearer{t}"),
        t.clone(),
        String::new(),
    ] {
        let incoming = read(&config, &headers_req(&[("authorization", &other)]));
        assert!(incoming.token.is_none(), "{other:?}");
    }
    // Another scheme beside the bearer token is ignored; two bearer tokens are ambiguous.
    let basic = [
        ("authorization", "Basic dTpw"),
        ("authorization", &format!("Bearer {t}")),
    ];
    assert_eq!(read_of(&basic), Some(t.clone()));
    let two = format!("Bearer {}", token::generate());
    let both = [
        ("authorization", two.as_str()),
        ("authorization", &format!("Bearer {t}")),
    ];
    assert_eq!(read_of(&both), None);
}

#[test]
fn carriers_are_tried_in_order_and_the_answer_goes_where_the_request_came() {
    let config = with(
        &[Carrier::cookie(), Carrier::header("x-session-token")],
        None,
    );
    let (a, b) = (token::generate(), token::generate());
    let cookie = format!("session={a}");
    let both = read(
        &config,
        &headers_req(&[("cookie", &cookie), ("x-session-token", &b)]),
    );
    assert_eq!(
        (both.token.map(|t| t.value), both.carrier),
        (Some(a.clone()), 0)
    );
    // A malformed cookie falls through to the header.
    let bad_cookie = [("cookie", "session=bad"), ("x-session-token", b.as_str())];
    let header = read(&config, &headers_req(&bad_cookie));
    assert_eq!(
        (header.token.map(|t| t.value), header.carrier),
        (Some(b.clone()), 1)
    );
    // No token: the first carrier the request used answers, else the first of the list.
    let used = read(&config, &headers_req(&[("x-session-token", "bad")]));
    assert_eq!((used.token.is_none(), used.carrier), (true, 1));
    let none = read(&config, &headers_req(&[]));
    assert_eq!((none.token.is_none(), none.carrier), (true, 0));
}

#[test]
fn a_header_answer_carries_the_token_or_an_empty_value_and_stays_private() {
    let config = with(&[Carrier::header("x-session-token")], None);
    let now = SystemTime::now();
    let t = token::generate();
    let set = TokenOut::Set {
        token: t.clone(),
        committed: committed(now, 60),
    };
    let mut headers = HeaderMap::new();
    write(&config, &mut headers, 0, set, now).unwrap();
    assert_eq!(headers["x-session-token"], t.as_str());
    assert_eq!(headers[header::CACHE_CONTROL], "private");
    assert!(headers.get(header::SET_COOKIE).is_none());
    for gone in [
        TokenOut::Clear,
        TokenOut::Set {
            token: t,
            committed: committed(now, 0),
        },
    ] {
        let mut headers = HeaderMap::new();
        write(&config, &mut headers, 0, gone, now).unwrap();
        assert_eq!(headers["x-session-token"], "");
    }
    let mut headers = HeaderMap::new();
    vary(&config, &mut headers);
    let varies: Vec<_> = headers.get_all(header::VARY).iter().collect();
    assert_eq!(varies, ["x-session-token"]);
    let both = with(
        &[Carrier::cookie(), Carrier::bearer("x-session-token")],
        None,
    );
    let mut headers = HeaderMap::new();
    vary(&both, &mut headers);
    let varies: Vec<_> = headers.get_all(header::VARY).iter().collect();
    assert_eq!(varies, ["Cookie", "Authorization"]);
}

#[test]
fn signing_decides_which_values_are_tokens_on_every_carrier() {
    let keys = SigningKeys::new([[1u8; 32]]).unwrap();
    let config = with(
        &[Carrier::cookie(), Carrier::header("x-t")],
        Some(keys.clone()),
    );
    let t = token::generate();
    let signed = keys.sign(&t);
    let cookie = format!("session={signed}");
    let by_cookie = read(&config, &headers_req(&[("cookie", &cookie)]))
        .token
        .unwrap();
    assert_eq!(
        (by_cookie.token(), by_cookie.is_current()),
        (t.as_str(), true)
    );
    assert!(
        read(&config, &headers_req(&[("x-t", &signed)]))
            .token
            .is_some()
    );
    // Unsigned, or tampered: no token.
    assert!(read(&config, &headers_req(&[("x-t", &t)])).token.is_none());
    let tampered = format!(
        "{}{}",
        &signed[..86],
        if signed.ends_with('A') { 'Q' } else { 'A' }
    );
    assert!(
        read(&config, &headers_req(&[("x-t", &tampered)]))
            .token
            .is_none()
    );
    // Signing off: a signed value is its token, to be answered bare.
    let off = accept(&Config::default(), &signed).unwrap();
    assert_eq!((off.token(), off.is_current()), (t.as_str(), false));
    assert_eq!(off.value(&Config::default()), t);
    // New tokens go out signed with the first key.
    assert_eq!(WireToken::new(&config, t.clone()).value(&config), signed);
}

#[test]
#[should_panic(expected = "Carrier::header")]
fn a_header_carrier_cannot_be_a_header_http_owns() {
    let _ = Carrier::header("Cookie");
}
