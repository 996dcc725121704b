//! The cookie carrier's hand-written parsing and rendering, against the cookie crate that
//! they replace on the request path: the same values found, byte for byte the same
//! `Set-Cookie`.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime},
};

use cookie::{Cookie, SameSite};

use super::*;
use crate::{config::Config, store::Committed};

/// The values of the cookies named `name`, as the cookie crate reads them.
fn crate_values(line: &str, name: &str) -> Vec<String> {
    Cookie::split_parse(line)
        .filter_map(Result::ok)
        .filter(|c| c.name() == name)
        .map(|c| c.value().to_owned())
        .collect()
}

#[test]
fn cookie_lines_split_as_the_cookie_crate_splits_them() {
    let pieces = [
        "session=a",
        " session = b ",
        "session=",
        "session",
        "=x",
        "session==c=",
        "\tsession=d\t",
        "Session=e",
        "other=f",
        "",
        " ",
        "session=\"q\"",
        "\u{a0}session=g\u{2003}",
        "x=1=2",
        "sessions=h",
        "session =",
        " ;",
    ];
    let mut lines = Vec::new();
    for a in pieces {
        lines.push(a.to_owned());
        for b in pieces {
            lines.push(format!("{a};{b}"));
            lines.push(format!("{a}; {b};"));
        }
    }
    let mut lines: Vec<Vec<u8>> = lines.into_iter().map(String::into_bytes).collect();
    // Bytes that are not UTF-8, in names, values and between pairs.
    for bytes in [
        &b"caf\xe9=1; session=a"[..],
        b"session=\xff\xfe; session=b",
        b"\xc3;session=c",
        b"session\xc3=d;\xe2\x82=session=e",
        b"\xe2\x80\x83session=f",
    ] {
        lines.push(bytes.to_vec());
    }
    for line in &lines {
        let ours: Vec<String> = values_named(line, "session").map(Cow::into_owned).collect();
        let text = String::from_utf8_lossy(line);
        assert_eq!(ours, crate_values(&text, "session"), "{text:?}");
    }
}

/// The cookie the cookie crate built for these settings, as the layer built it.
fn crate_cookie(c: &Config, value: &str) -> Cookie<'static> {
    let host_only = c.cookie_name.starts_with("__Host-");
    let secure = c.secure || host_only || c.cookie_name.starts_with("__Secure-");
    let path = if host_only {
        "/"
    } else {
        c.cookie_path.as_str()
    };
    let mut cookie = Cookie::build((c.cookie_name.clone(), value.to_owned()))
        .path(path.to_owned())
        .http_only(c.http_only)
        .secure(secure)
        .same_site(c.same_site)
        .partitioned(c.partitioned)
        .build();
    if let Some(domain) = c.cookie_domain.as_ref().filter(|_| !host_only) {
        cookie.set_domain(domain.clone());
    }
    cookie
}

fn configs() -> Vec<Config> {
    let mut configs = Vec::new();
    for name in ["session", "__Host-s", "__Secure-s"] {
        for domain in [None, Some("example.com"), Some(".example.com")] {
            for (http_only, secure, partitioned) in [
                (true, false, false),
                (false, true, false),
                (true, false, true),
            ] {
                for same_site in [SameSite::Strict, SameSite::Lax, SameSite::None] {
                    configs.push(Config {
                        cookie_name: name.into(),
                        cookie_domain: domain.map(Into::into),
                        cookie_path: "/app".into(),
                        http_only,
                        secure,
                        partitioned,
                        same_site,
                        ..Config::default()
                    });
                }
            }
        }
    }
    configs
}

#[test]
fn set_cookie_renders_as_the_cookie_crate_renders() {
    let now = SystemTime::now();
    let token = crate::token::generate();
    for config in configs() {
        let mut expired = crate_cookie(&config, "");
        expired.set_expires(time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1));
        expired.set_max_age(time::Duration::ZERO);
        assert_eq!(expired_cookie(&config), expired.to_string());
        let persistent = Config {
            persist: true,
            ..config.clone()
        };
        let done = Committed {
            expiry: now + Duration::from_secs(60),
            remember: false,
        };
        let ours = set_cookie(&persistent, &token, done, now);
        let (head, expires) = ours.split_once("; Expires=").unwrap();
        let mut expected = crate_cookie(&persistent, &token);
        expected.set_max_age(time::Duration::seconds(61));
        assert_eq!(head, expected.to_string());
        assert!(httpdate::parse_http_date(expires).is_ok(), "{expires}");
        let session = Config {
            persist: false,
            ..config
        };
        let expected = crate_cookie(&session, &token).to_string();
        assert_eq!(set_cookie(&session, &token, done, now), expected);
    }
}
