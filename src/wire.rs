//! The token on the wire, as pure functions of the settings: [`read`] takes it from the request,
//! [`vary`] and [`write`] put what the response says about it on the response's headers. The
//! service calls these three and knows nothing of cookies, so another carrier (a header, gRPC
//! metadata) is added here without touching it.
//!
//! Today the carrier is the cookie: the token is read from the `Cookie` headers, sent back in
//! `Set-Cookie` (with `Cache-Control: no-cache="Set-Cookie"`, as SCS), and every response
//! varies on `Cookie`.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cookie::Cookie;
use http::{HeaderMap, HeaderValue, Request, header};
use time::OffsetDateTime;

use crate::{Error, config::Config, store::Committed, token};

/// The longest cookie lifetime browsers honour (RFC 6265bis): 400 days.
const MAX_COOKIE_AGE: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// SCS's `Cache-Control` directive for a response that sets the cookie.
const NO_CACHE_SET_COOKIE: &str = r#"no-cache="Set-Cookie""#;

/// What a response tells the client about its token, once the session is committed. (No
/// `Debug`: it holds the token.)
pub(crate) enum TokenOut {
    /// The session lives on under `token`, until `committed.expiry`.
    Set {
        /// The session token (never the store id).
        token: String,
        /// What the store kept.
        committed: Committed,
    },
    /// The session is gone: the client must forget its token.
    Clear,
}

/// The first well-formed session token the request carries. Malformed values are ignored
/// without any store call.
#[inline]
pub(crate) fn read<B>(config: &Config, req: &Request<B>) -> Option<String> {
    token_in_cookies(config, req.headers())
}

/// Marks the response as varying on the token's carrier, unless it already does (said by the
/// handler or by another session layer) or varies on everything (`*`). The settings choose the
/// carrier; for the cookie, the only one today, that is `Vary: Cookie` whatever they say.
#[inline]
pub(crate) fn vary(_config: &Config, headers: &mut HeaderMap) {
    let varies = headers.get_all(header::VARY).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|field| field == "*" || field.eq_ignore_ascii_case("cookie"))
        })
    });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
    }
}

/// Sends `out` to the client: a `Set-Cookie` for the token (or an expiring one), and the
/// `Cache-Control` that keeps it out of shared caches.
///
/// # Errors
///
/// [`Error::Config`] if the settings render a value that is not a valid header value (the
/// setters' checks rule that out).
pub(crate) fn write(
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
    add_no_cache_set_cookie(headers);
    Ok(())
}

/// The first cookie named as the session cookie whose value is a well-formed token.
#[inline]
fn token_in_cookies(config: &Config, headers: &HeaderMap) -> Option<String> {
    // Bytes that are not UTF-8 (e.g. another cookie set by a script in Latin-1) spoil only
    // the cookie they are in, not the whole header.
    headers
        .get_all(header::COOKIE)
        .iter()
        .map(|h| match h.to_str() {
            Ok(ascii) => Cow::Borrowed(ascii),
            Err(_) => String::from_utf8_lossy(h.as_bytes()),
        })
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == config.cookie_name && token::is_well_formed(c.value()))
        .map(|c| c.value().to_owned())
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

/// Adds `no-cache="Set-Cookie"` to `Cache-Control`: as the only value when there is none, else
/// merged with the directives already there into one comma-joined value, unless they hold it
/// already (another session layer set a cookie too).
fn add_no_cache_set_cookie(headers: &mut HeaderMap) {
    let present: Vec<&HeaderValue> = headers.get_all(header::CACHE_CONTROL).iter().collect();
    if present.iter().any(|value| holds_no_cache_set_cookie(value)) {
        return;
    }
    let mut merged = Vec::new();
    for value in present.iter().map(|v| v.as_bytes().trim_ascii()) {
        if !value.is_empty() {
            merged.extend_from_slice(value);
            merged.extend_from_slice(b", ");
        }
    }
    let value = if merged.is_empty() {
        HeaderValue::from_static(NO_CACHE_SET_COOKIE)
    } else {
        merged.extend_from_slice(NO_CACHE_SET_COOKIE.as_bytes());
        // Header-value bytes joined by ", " are a header value: this never fails.
        HeaderValue::from_bytes(&merged).unwrap_or(HeaderValue::from_static(NO_CACHE_SET_COOKIE))
    };
    headers.insert(header::CACHE_CONTROL, value);
}

/// Whether a `Cache-Control` value lists `no-cache="Set-Cookie"` (case-insensitive; commas
/// inside quoted strings do not separate directives).
fn holds_no_cache_set_cookie(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut quoted = false;
    value
        .split(|c| {
            quoted ^= c == '"';
            c == ',' && !quoted
        })
        .any(|directive| directive.trim().eq_ignore_ascii_case(NO_CACHE_SET_COOKIE))
}

#[cfg(test)]
mod tests;
