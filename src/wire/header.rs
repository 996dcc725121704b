//! The header carriers: the token in a request header of its own (`X-Session-Token: <token>`)
//! or as a bearer token (`Authorization: Bearer <token>`), answered in a response header.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::{Seen, TokenOut, accept, add_cache_directive};
use crate::config::Config;

/// What the response says about the token besides the header itself: shared caches must not
/// keep a response that carries a token.
const PRIVATE: &str = "private";

/// The token in the header `name`. Exactly one such header is read: a request with two or
/// more is ambiguous, and carries no token in it.
#[inline]
pub(super) fn find(config: &Config, headers: &HeaderMap, name: &HeaderName) -> Seen {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Seen::Absent,
        (Some(value), None) => token_in(config, value.as_bytes()),
        (Some(_), Some(_)) => Seen::Invalid,
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
/// Other schemes are ignored, as if the header were not there; two or more bearer credentials
/// carry no token.
#[inline]
pub(super) fn find_bearer(config: &Config, headers: &HeaderMap) -> Seen {
    let mut bearers = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|value| bearer_credential(value.as_bytes()));
    match (bearers.next(), bearers.next()) {
        (None, _) => Seen::Absent,
        (Some(credential), None) => token_in(config, credential),
        (Some(_), Some(_)) => Seen::Invalid,
    }
}

fn bearer_credential(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let scheme = value.get(..SCHEME.len())?;
    scheme
        .eq_ignore_ascii_case(SCHEME)
        .then(|| &value[SCHEME.len()..])
}

fn token_in(config: &Config, value: &[u8]) -> Seen {
    let token = std::str::from_utf8(value.trim_ascii())
        .ok()
        .and_then(|v| accept(config, v));
    token.map_or(Seen::Invalid, Seen::Token)
}

/// Sends `out` in the header `name`: the token, or an empty value once the session is gone;
/// and `Cache-Control: private`.
pub(super) fn write(headers: &mut HeaderMap, name: &HeaderName, out: TokenOut) {
    let value = match out {
        // Tokens are base64url with an optional `.`: always a valid header value.
        TokenOut::Set { token, .. } => HeaderValue::try_from(token).ok(),
        TokenOut::Clear => None,
    };
    headers.insert(name.clone(), value.unwrap_or(HeaderValue::from_static("")));
    add_cache_directive(headers, PRIVATE);
}

#[cfg(test)]
mod tests;
