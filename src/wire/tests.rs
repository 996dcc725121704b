//! The token on the wire, without a store: cookie parsing and rendering, `Vary` and
//! `Cache-Control`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Request, header};

use super::*;
use crate::{config::Config, store::Committed, token};

fn request(cookies: &[&[u8]]) -> Request<()> {
    let mut req = Request::new(());
    for c in cookies {
        let value = HeaderValue::from_bytes(c).unwrap();
        req.headers_mut().append(header::COOKIE, value);
    }
    req
}

/// The token `read` takes from `req`, as it came.
fn token_of(config: &Config, req: &Request<()>) -> Option<String> {
    read(config, req).token.map(|t| t.value)
}

fn committed(now: SystemTime, secs: u64, remember: bool) -> Committed {
    Committed {
        expiry: now + Duration::from_secs(secs),
        remember,
    }
}

fn written(config: &Config, out: TokenOut, now: SystemTime) -> HeaderMap {
    let mut headers = HeaderMap::new();
    write(config, &mut headers, 0, out, now).unwrap();
    headers
}

fn set_cookie_of(headers: &HeaderMap) -> &str {
    headers[header::SET_COOKIE].to_str().unwrap()
}

#[test]
fn reads_the_first_well_formed_token_of_the_named_cookie() {
    let config = Config::default();
    let (a, b) = (token::generate(), token::generate());
    let line = format!("other={a}; session=short; session={a}; session={b}");
    assert_eq!(
        token_of(&config, &request(&[line.as_bytes()])),
        Some(a.clone())
    );
    // Across several Cookie headers, in order.
    let second = format!("session={b}");
    let req = request(&[b"x=1; session=bad", second.as_bytes()]);
    assert_eq!(token_of(&config, &req), Some(b));
    // A cookie of another name holding a token is not the session.
    assert_eq!(
        token_of(&config, &request(&[format!("sid={a}").as_bytes()])),
        None
    );
    assert_eq!(token_of(&config, &request(&[])), None);
}

#[test]
fn malformed_or_foreign_values_are_no_token() {
    let config = Config::default();
    let good = token::generate();
    for value in [
        String::new(),
        good[..42].to_owned(),
        format!("{good}A"),
        format!("\"{good}\""),
        format!("{}B", &good[..42]),
        "../../../etc/passwd-aaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
    ] {
        let line = format!("session={value}");
        assert_eq!(
            token_of(&config, &request(&[line.as_bytes()])),
            None,
            "{value:?}"
        );
    }
}

#[test]
fn bytes_that_are_not_utf8_spoil_only_their_own_cookie() {
    let config = Config::default();
    let good = token::generate();
    let mut line = b"latin=caf\xe9; ".to_vec();
    line.extend_from_slice(format!("session={good}").as_bytes());
    assert_eq!(token_of(&config, &request(&[&line])), Some(good));
}

#[test]
fn a_persistent_cookie_carries_max_age_and_expires_rounded_up() {
    let config = Config::default();
    let now = UNIX_EPOCH + Duration::from_millis(1_767_225_600_250);
    let token = token::generate();
    let out = TokenOut::Set {
        token: token.clone(),
        committed: committed(now, 60, false),
    };
    let headers = written(&config, out, now);
    assert_eq!(
        set_cookie_of(&headers),
        format!(
            "session={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age=61; \
             Expires=Thu, 01 Jan 2026 00:01:01 GMT"
        )
    );
    assert_eq!(headers[header::CACHE_CONTROL], r#"no-cache="Set-Cookie""#);
}

#[test]
fn a_browser_session_cookie_unless_remembered() {
    let config = Config {
        persist: false,
        ..Config::default()
    };
    let now = SystemTime::now();
    let token = token::generate();
    let out = |remember| TokenOut::Set {
        token: token.clone(),
        committed: committed(now, 60, remember),
    };
    let plain = written(&config, out(false), now);
    assert_eq!(
        set_cookie_of(&plain),
        format!("session={token}; HttpOnly; SameSite=Lax; Path=/")
    );
    let remembered = written(&config, out(true), now);
    assert!(set_cookie_of(&remembered).contains("Max-Age=61"));
}

#[test]
fn cookie_lifetimes_are_capped_at_400_days() {
    let config = Config::default();
    let now = SystemTime::now();
    let out = TokenOut::Set {
        token: token::generate(),
        committed: committed(now, 10 * 365 * 24 * 3600, false),
    };
    let headers = written(&config, out, now);
    assert!(set_cookie_of(&headers).contains(&format!("Max-Age={}", 400 * 86_400 + 1)));
}

#[test]
fn an_expired_commit_or_a_clear_expires_the_cookie() {
    let config = Config::default();
    let now = SystemTime::now();
    let expired = "session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0; \
                   Expires=Thu, 01 Jan 1970 00:00:01 GMT";
    let out = TokenOut::Set {
        token: token::generate(),
        committed: committed(now, 0, false),
    };
    assert_eq!(set_cookie_of(&written(&config, out, now)), expired);
    assert_eq!(
        set_cookie_of(&written(&config, TokenOut::Clear, now)),
        expired
    );
}

#[test]
fn attributes_follow_the_settings_and_the_name_prefixes() {
    let now = SystemTime::now();
    let cookie = |config: Config| set_cookie_of(&written(&config, TokenOut::Clear, now)).to_owned();
    let custom = cookie(Config {
        cookie_name: "sid".into(),
        cookie_domain: Some("example.com".into()),
        cookie_path: "/app".into(),
        http_only: false,
        secure: true,
        same_site: ::cookie::SameSite::Strict,
        partitioned: true,
        ..Config::default()
    });
    assert!(custom.starts_with("sid=; "), "{custom}");
    for attribute in [
        "Secure",
        "SameSite=Strict",
        "Partitioned",
        "Path=/app",
        "Domain=example.com",
    ] {
        assert!(custom.contains(attribute), "{attribute} in {custom}");
    }
    assert!(!custom.contains("HttpOnly"), "{custom}");
    // __Host- forces Secure, Path=/ and no Domain; __Secure- forces Secure.
    let host = cookie(Config {
        cookie_name: "__Host-s".into(),
        cookie_domain: Some("example.com".into()),
        cookie_path: "/app".into(),
        ..Config::default()
    });
    assert!(
        host.contains("Secure") && host.contains("Path=/;"),
        "{host}"
    );
    assert!(!host.contains("Domain") && !host.contains("/app"), "{host}");
    let secure = cookie(Config {
        cookie_name: "__Secure-s".into(),
        ..Config::default()
    });
    assert!(secure.contains("Secure"), "{secure}");
}

#[test]
fn vary_cookie_is_added_once() {
    let mut headers = HeaderMap::new();
    vary(&Config::default(), &mut headers);
    vary(&Config::default(), &mut headers);
    assert_eq!(headers.get_all(header::VARY).iter().count(), 1);
    assert_eq!(headers[header::VARY], "Cookie");
    for present in ["accept, COOKIE", "*"] {
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static(present));
        vary(&Config::default(), &mut headers);
        assert_eq!(headers.get_all(header::VARY).iter().count(), 1, "{present}");
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Cookie"));
    vary(&Config::default(), &mut headers);
    assert_eq!(headers.get_all(header::VARY).iter().count(), 2);
}

#[test]
fn cache_control_is_merged_into_one_value_once() {
    let config = Config::default();
    let now = SystemTime::now();
    let mut headers = HeaderMap::new();
    headers.append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    headers.append(
        header::CACHE_CONTROL,
        HeaderValue::from_static(" max-age=5 "),
    );
    write(&config, &mut headers, 0, TokenOut::Clear, now).unwrap();
    write(&config, &mut headers, 0, TokenOut::Clear, now).unwrap();
    let values: Vec<_> = headers.get_all(header::CACHE_CONTROL).iter().collect();
    assert_eq!(values, [r#"private, max-age=5, no-cache="Set-Cookie""#]);
    // A quoted comma does not split a directive, and the match ignores case.
    let quoted = HeaderValue::from_static(r#"no-cache="Set-Cookie, X""#);
    assert!(!holds(&quoted, cookie::NO_CACHE_SET_COOKIE));
    let upper = HeaderValue::from_static(r#"private, NO-CACHE="SET-COOKIE""#);
    assert!(holds(&upper, cookie::NO_CACHE_SET_COOKIE));
}
