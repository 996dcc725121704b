//! The cookie carrier: the token in the `Cookie` request headers, and in `Set-Cookie` with the
//! layer's cookie attributes.

use std::{
    borrow::Cow,
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cookie::SameSite;
use http::{HeaderMap, HeaderValue, header};

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
    let mut seen = Seen::Absent;
    for header in headers.get_all(header::COOKIE) {
        for value in values_named(header.as_bytes(), &config.cookie_name) {
            if let Some(token) = accept(config, &value) {
                return Seen::Token(token);
            }
            seen = Seen::Invalid;
        }
    }
    seen
}

/// The values of the cookies named `name` in one `Cookie` header, in order, as the cookie
/// crate's `Cookie::split_parse` reads the header made text: the pairs are split on `;`, each
/// at its first `=`, name and value trimmed of whitespace (a piece without `=` is no cookie).
/// Without building a cookie for every pair, and with only the values of `name` made text.
///
/// Bytes that are not UTF-8 (e.g. another cookie set by a script in Latin-1) spoil only the
/// cookie they are in, not the whole header: they become U+FFFD, as in
/// `String::from_utf8_lossy` of the whole header, which never merges a `;` or `=` into them.
pub(super) fn values_named<'a>(
    line: &'a [u8],
    name: &'a str,
) -> impl Iterator<Item = Cow<'a, str>> {
    line.split(|&b| b == b';').filter_map(move |pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let named = text(&pair[..eq]).trim() == name;
        named.then(|| match text(&pair[eq + 1..]) {
            Cow::Borrowed(value) => Cow::Borrowed(value.trim()),
            Cow::Owned(value) => Cow::Owned(value.trim().to_owned()),
        })
    })
}

/// `bytes` as text, invalid UTF-8 replaced (checked by `from_utf8` first: much faster on the
/// ASCII of a cookie than `from_utf8_lossy` is).
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
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

/// The cookie with the configured attributes, as the cookie crate renders them (its order:
/// `HttpOnly`, `SameSite`, `Partitioned`, `Secure`, `Path`, `Domain`), written straight into
/// one string with room for `tail`. Names with a `__Host-` prefix always get `Secure`,
/// `Path=/` and no `Domain`, and `__Secure-` names always get `Secure`, as browsers require of
/// those prefixes.
fn base_cookie(c: &Config, value: &str, tail: usize) -> String {
    let host_only = c.cookie_name.starts_with("__Host-");
    let secure = c.secure || host_only || c.cookie_name.starts_with("__Secure-");
    let path = if host_only { "/" } else { &c.cookie_path };
    // The cookie crate writes a domain without its leading dot.
    let domain = (c.cookie_domain.as_deref().filter(|_| !host_only))
        .map(|d| d.strip_prefix('.').unwrap_or(d));
    let same_site = match c.same_site {
        SameSite::Strict => "Strict",
        SameSite::Lax => "Lax",
        SameSite::None => "None",
    };
    let room = c.cookie_name.len() + value.len() + path.len() + domain.map_or(0, str::len);
    let mut out = String::with_capacity(room + 64 + tail);
    for part in [&c.cookie_name, "=", value] {
        out.push_str(part);
    }
    if c.http_only {
        out.push_str("; HttpOnly");
    }
    out.push_str("; SameSite=");
    out.push_str(same_site);
    if c.partitioned {
        out.push_str("; Partitioned");
    }
    if secure || c.partitioned {
        out.push_str("; Secure");
    }
    out.push_str("; Path=");
    out.push_str(path);
    if let Some(domain) = domain {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    out
}

/// The session cookie. It persists (`Expires`, `Max-Age`, both rounded up to the second)
/// when `persist` or remember-me is on; it expires at once if the store dropped the session.
fn set_cookie(config: &Config, token: &str, done: Committed, now: SystemTime) -> String {
    let left = match done.expiry.duration_since(now) {
        Ok(left) if !left.is_zero() => left,
        _ => return expired_cookie(config),
    };
    if !(config.persist || done.remember) {
        return base_cookie(config, token, 0);
    }
    // `; Max-Age=` (10), at most 11 digits, `; Expires=` (10), an IMF-fixdate (29).
    let mut cookie = base_cookie(config, token, 60);
    // Browsers cap cookie lifetimes at 400 days; capping here also keeps far-future
    // deadlines within what cookie dates can express.
    let secs = left.min(MAX_COOKIE_AGE).as_secs() + 1; // rounded up, as SCS
    // httpdate writes the same IMF-fixdate several times faster than the cookie crate's date
    // formatting.
    let whole_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let expires = UNIX_EPOCH + Duration::from_secs(whole_secs + secs);
    let _ = write!(
        cookie,
        "; Max-Age={secs}; Expires={}",
        httpdate::HttpDate::from(expires)
    );
    cookie
}

/// An empty cookie that the browser deletes at once (SCS's, after destroy).
fn expired_cookie(config: &Config) -> String {
    const EXPIRED: &str = "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:01 GMT";
    let mut cookie = base_cookie(config, "", EXPIRED.len());
    cookie.push_str(EXPIRED);
    cookie
}

#[cfg(test)]
mod tests;
