//! The token on the wire, as pure functions of the settings: reading it from the request's
//! `Cookie` headers, and rendering the `Set-Cookie` value that sends it back (or expires it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cookie::Cookie;
use http::{Request, header};
use time::OffsetDateTime;

use crate::{config::Config, store::Committed, token};

/// The longest cookie lifetime browsers honour (RFC 6265bis): 400 days.
const MAX_COOKIE_AGE: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// The first well-formed session token among the request's cookies. Malformed values are
/// ignored without any store call.
pub(crate) fn token_from<B>(config: &Config, req: &Request<B>) -> Option<String> {
    // Bytes that are not UTF-8 (e.g. another cookie set by a script in Latin-1) spoil only
    // the cookie they are in, not the whole header.
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .map(|h| match h.to_str() {
            Ok(ascii) => std::borrow::Cow::Borrowed(ascii),
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
    let mut cookie = Cookie::build((c.cookie_name.clone(), value))
        .path(
            if host_only {
                "/"
            } else {
                c.cookie_path.as_str()
            }
            .to_owned(),
        )
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
pub(crate) fn set_cookie(config: &Config, token: &str, done: Committed, now: SystemTime) -> String {
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
pub(crate) fn expired_cookie(config: &Config) -> String {
    let mut cookie = base_cookie(config, String::new());
    cookie.set_expires(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1));
    cookie.set_max_age(time::Duration::ZERO);
    cookie.to_string()
}
