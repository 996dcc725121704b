//! The cookie carrier: the token in the `Cookie` request headers, and in `Set-Cookie` with the
//! layer's cookie attributes.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cookie::Cookie;
use http::{HeaderMap, HeaderValue, header};
use time::OffsetDateTime;

use super::{Seen, TokenOut, accept, add_cache_directive};
use crate::{Error, config::Config, store::Committed};

/// The longest cookie lifetime browsers honour (RFC 6265bis): 400 days.
const MAX_COOKIE_AGE: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// SCS's `Cache-Control` directive for a response that sets the cookie.
pub(super) const NO_CACHE_SET_COOKIE: &str = r#"no-cache="Set-Cookie""#;

/// The first cookie named as the session cookie whose value is an acceptable token; a session
/// cookie with no acceptable value still counts as the carrier the request used.
#[inline]
pub(super) fn find(config: &Config, headers: &HeaderMap) -> Seen {
    // Bytes that are not UTF-8 (e.g. another cookie set by a script in Latin-1) spoil only
    // the cookie they are in, not the whole header.
    let mut seen = Seen::Absent;
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|h| match h.to_str() {
            Ok(ascii) => Cow::Borrowed(ascii),
            Err(_) => String::from_utf8_lossy(h.as_bytes()),
        })
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == config.cookie_name);
    for cookie in cookies {
        if let Some(token) = accept(config, cookie.value()) {
            return Seen::Token(token);
        }
        seen = Seen::Invalid;
    }
    seen
}

/// Sends `out` in a `Set-Cookie` (an expiring one for [`TokenOut::Clear`]), with the
/// `Cache-Control` that keeps it out of shared caches.
pub(super) fn write(
    config: &Config,
    headers: &mut HeaderMap,
    out: TokenOut,
    now: SystemTime,
) -> Result<(), Error> {
    let cookie = match out {
        TokenOut::Set { token, committed } => set_cookie(config, &token, committed, now),
        TokenOut::Clear => expired_cookie(config),
    };
    let value = HeaderValue::try_from(cookie)
        .map_err(|_| Error::Config("the cookie settings make an invalid Set-Cookie".into()))?;
    headers.append(header::SET_COOKIE, value);
    add_cache_directive(headers, NO_CACHE_SET_COOKIE);
    Ok(())
}

/// The cookie with the configured attributes. Names with a `__Host-` prefix always get
/// `Secure`, `Path=/` and no `Domain`, and `__Secure-` names always get `Secure`, as browsers
/// require of those prefixes.
fn base_cookie(c: &Config, value: String) -> Cookie<'static> {
    let host_only = c.cookie_name.starts_with("__Host-");
    let secure = c.secure || host_only || c.cookie_name.starts_with("__Secure-");
    let path = if host_only {
        "/"
    } else {
        c.cookie_path.as_str()
    };
    let mut cookie = Cookie::build((c.cookie_name.clone(), value))
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

/// The session cookie. It persists (`Expires`, `Max-Age`, both rounded up to the second)
/// when `persist` or remember-me is on; it expires at once if the store dropped the session.
fn set_cookie(config: &Config, token: &str, done: Committed, now: SystemTime) -> String {
    let left = match done.expiry.duration_since(now) {
        Ok(left) if !left.is_zero() => left,
        _ => return expired_cookie(config),
    };
    let mut cookie = base_cookie(config, token.to_owned());
    if config.persist || done.remember {
        // Browsers cap cookie lifetimes at 400 days; capping here also keeps far-future
        // deadlines within what cookie dates can express.
        let secs = left.min(MAX_COOKIE_AGE).as_secs() + 1; // rounded up, as SCS
        cookie.set_max_age(time::Duration::seconds(secs as i64));
        // `Expires` comes last in the cookie crate's output too; httpdate writes the same
        // IMF-fixdate several times faster than the cookie crate's date formatting.
        let whole_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expires = UNIX_EPOCH + Duration::from_secs(whole_secs + secs);
        return format!("{cookie}; Expires={}", httpdate::fmt_http_date(expires));
    }
    cookie.to_string()
}

/// An empty cookie that the browser deletes at once (SCS's, after destroy).
fn expired_cookie(config: &Config) -> String {
    let mut cookie = base_cookie(config, String::new());
    cookie.set_expires(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1));
    cookie.set_max_age(time::Duration::ZERO);
    cookie.to_string()
}
