//! The token on the wire, as pure functions of the settings: [`read`] takes it from the request,
//! [`vary`] and [`write`] put what the response says about it on the response's headers. The
//! service calls these three and knows nothing of cookies or headers.
//!
//! - [`Carrier`]: where the token travels, the cookie (`cookie.rs`) or a header (`header.rs`);
//!   a layer tries its carriers in order.
//! - [`SigningKeys`] (`signing.rs`): the token on the wire signed with HMAC-SHA256, verified
//!   before any store call.
//! - [`accept`] and [`WireToken`]: a token from the wire to the session token, and back.

mod cookie;
mod header;
mod signing;

use std::{fmt, time::SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Request, header::CACHE_CONTROL};

pub use self::signing::{MIN_KEY_BYTES, SigningKeys};
use crate::{Error, config::Config, store::Committed, token};

/// Where a session token travels between client and server; see
/// [`SessionLayer::carriers`](crate::SessionLayer::carriers).
///
/// ```
/// use tower_scs::{Carrier, MemoryStore, SessionLayer};
///
/// // Browsers send the cookie, API clients the header; a fresh session answers in the cookie.
/// let layer = SessionLayer::new(MemoryStore::new())
///     .carriers([Carrier::cookie(), Carrier::header("x-session-token")]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Carrier(Kind);

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Cookie,
    /// Read from and answered in this header.
    Header(HeaderName),
    /// Read from `Authorization: Bearer`, answered in this header.
    Bearer(HeaderName),
}

/// Headers a token cannot travel in: they mean something else to HTTP or to this layer.
const RESERVED: &[&str] = &[
    "authorization",
    "cache-control",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authorization",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "vary",
];

impl Carrier {
    /// The session cookie (the default): read from `Cookie`, answered in `Set-Cookie` with
    /// the layer's cookie settings and `Cache-Control: no-cache="Set-Cookie"`.
    #[must_use]
    pub fn cookie() -> Self {
        Carrier(Kind::Cookie)
    }

    /// A header of its own, e.g. `X-Session-Token`: read from the request, answered in the
    /// response header of the same name whenever the cookie carrier would send `Set-Cookie`
    /// (with an empty value after a destroy), with `Cache-Control: private`.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name, or is one that means something else to HTTP
    /// (`Cookie`, `Authorization`, `Host`, `Vary`, …: use [`Carrier::bearer`] for
    /// `Authorization`).
    #[must_use]
    #[track_caller]
    pub fn header(name: &str) -> Self {
        Self::try_header(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Carrier::header`], for a name that comes from configuration: a name it would panic
    /// on is an [`Error::Config`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `name` is not a header name a token can travel in.
    pub fn try_header(name: &str) -> Result<Self, Error> {
        header_name("header", name).map(|name| Carrier(Kind::Header(name)))
    }

    /// A bearer token: read from `Authorization: Bearer <token>` (other schemes are ignored),
    /// answered in the response header `answer` (say `X-Session-Token`), as
    /// [`Carrier::header`] answers.
    ///
    /// # Panics
    ///
    /// As [`Carrier::header`], for `answer`.
    #[must_use]
    #[track_caller]
    pub fn bearer(answer: &str) -> Self {
        Self::try_bearer(answer).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Carrier::bearer`], for a name that comes from configuration.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `answer` is not a header name a token can travel in.
    pub fn try_bearer(answer: &str) -> Result<Self, Error> {
        header_name("bearer", answer).map(|name| Carrier(Kind::Bearer(name)))
    }

    /// The request header this carrier reads, which responses vary on.
    fn request_header(&self) -> &str {
        match &self.0 {
            Kind::Cookie => "cookie",
            Kind::Header(name) => name.as_str(),
            Kind::Bearer(_) => "authorization",
        }
    }
}

fn header_name(carrier: &str, name: &str) -> Result<HeaderName, Error> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).ok();
    match parsed {
        Some(parsed) if !RESERVED.contains(&parsed.as_str()) => Ok(parsed),
        _ => Err(Error::Config(format!(
            "Carrier::{carrier}: {name:?} is not a header name a token can travel in \
             (valid, and not one HTTP or the layer uses, such as Cookie or Host)"
        ))),
    }
}

impl fmt::Debug for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Cookie => f.write_str("Carrier::cookie()"),
            Kind::Header(name) => write!(f, "Carrier::header({:?})", name.as_str()),
            Kind::Bearer(name) => write!(f, "Carrier::bearer({:?})", name.as_str()),
        }
    }
}

/// A token as it came from, or goes to, the wire: the session token, followed by its tag when
/// signing is on. (No `Debug`: it is a secret.)
#[derive(Clone)]
pub(crate) struct WireToken {
    /// What the client sends, in the form the settings make now.
    value: String,
    /// Whether `value` is in the current form: signed with the first key when signing is on,
    /// bare when it is off. A token in another form is accepted and answered in this one.
    current: bool,
}

impl WireToken {
    /// The token as the settings put it on the wire now.
    pub(crate) fn new(config: &Config, token: String) -> Self {
        let value = match &config.signing {
            Some(keys) => keys.sign(&token),
            None => token,
        };
        WireToken {
            value,
            current: true,
        }
    }

    /// The session token (what the store id is made from).
    pub(crate) fn token(&self) -> &str {
        &self.value[..token::LEN]
    }

    /// Whether the client must be sent this token again, in the current form.
    pub(crate) fn is_current(&self) -> bool {
        self.current
    }

    /// The value for the client, in the current form.
    pub(crate) fn value(&self, config: &Config) -> String {
        if self.current {
            return self.value.clone();
        }
        Self::new(config, self.token().to_owned()).value
    }

    /// [`WireToken::value`], consuming the token.
    pub(crate) fn into_value(self, config: &Config) -> String {
        if self.current {
            return self.value;
        }
        Self::new(config, self.token().to_owned()).value
    }
}

/// A value from the wire as a session token, or `None` for no session (checked without any
/// store call). With signing on: a `<token>.<tag>` whose tag verifies against one of the
/// keys (or, while [`SigningKeys::accept_unsigned`] is on, a bare token). With signing off: a
/// bare token, or a `<token>.<tag>` from when signing was on, whose tag is then ignored.
pub(crate) fn accept(config: &Config, value: &str) -> Option<WireToken> {
    let Some(keys) = &config.signing else {
        if token::is_well_formed(value) {
            let value = value.to_owned();
            return Some(WireToken {
                value,
                current: true,
            });
        }
        let (token, _tag) = signing::split(value)?;
        let value = token.to_owned();
        return Some(WireToken {
            value,
            current: false,
        });
    };
    let current = keys.verify(value)?;
    let value = value.to_owned();
    Some(WireToken { value, current })
}

/// What one carrier found in a request.
pub(crate) enum Seen {
    /// Nothing of this carrier's.
    Absent,
    /// This carrier's cookie or header, with no acceptable token.
    Invalid,
    Token(WireToken),
}

/// What the request carried: its token, if any, and the carrier the response answers on.
pub(crate) struct Incoming {
    pub(crate) token: Option<WireToken>,
    /// Index in the layer's carriers: the one the token came in; without a token, the first
    /// carrier the request used at all, else the first of the list.
    pub(crate) carrier: usize,
}

/// The first acceptable token, trying the layer's carriers in order. Malformed, forged,
/// oversized or ambiguous values are no token, without any store call.
#[inline]
pub(crate) fn read<B>(config: &Config, req: &Request<B>) -> Incoming {
    let headers = req.headers();
    let mut used = None;
    for (i, carrier) in config.carriers.iter().enumerate() {
        let seen = match &carrier.0 {
            Kind::Cookie => cookie::find(config, headers),
            Kind::Header(name) => header::find(config, headers, name),
            Kind::Bearer(_) => header::find_bearer(config, headers),
        };
        match seen {
            Seen::Token(token) => {
                return Incoming {
                    token: Some(token),
                    carrier: i,
                };
            }
            Seen::Invalid => drop(used.get_or_insert(i)),
            Seen::Absent => {}
        }
    }
    Incoming {
        token: None,
        carrier: used.unwrap_or(0),
    }
}

/// Marks the response as varying on every request header a carrier reads (`Cookie`, the
/// header, `Authorization`), unless it already does (said by the handler or by another session
/// layer) or varies on everything (`*`).
#[inline]
pub(crate) fn vary(config: &Config, headers: &mut HeaderMap) {
    for carrier in config.carriers.iter() {
        let field = carrier.request_header();
        let varies = headers.get_all(http::header::VARY).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .map(str::trim)
                    .any(|f| f == "*" || f.eq_ignore_ascii_case(field))
            })
        });
        if !varies {
            let value = match &carrier.0 {
                Kind::Cookie => HeaderValue::from_static("Cookie"),
                Kind::Bearer(_) => HeaderValue::from_static("Authorization"),
                Kind::Header(name) => HeaderValue::from(name.clone()),
            };
            headers.append(http::header::VARY, value);
        }
    }
}

/// What a response tells the client about its token, once the session is committed. (No
/// `Debug`: it holds the token.)
#[derive(Clone)]
pub(crate) enum TokenOut {
    /// The session lives on under `token`, until `committed.expiry`.
    Set {
        /// The token as it goes on the wire (signed when signing is on; never the store id).
        token: String,
        /// What the store kept.
        committed: Committed,
    },
    /// The session is gone: the client must forget its token.
    Clear,
}

/// Sends `out` to the client on the layer's carrier number `carrier` (see [`Incoming`]).
///
/// # Errors
///
/// [`Error::Config`] if the settings render a value that is not a valid header value (the
/// setters' checks rule that out).
pub(crate) fn write(
    config: &Config,
    headers: &mut HeaderMap,
    carrier: usize,
    out: TokenOut,
    now: SystemTime,
) -> Result<(), Error> {
    match config.carriers.get(carrier).map(|c| &c.0) {
        Some(Kind::Header(name) | Kind::Bearer(name)) => {
            let out = match out {
                TokenOut::Set { committed, .. } if committed.expiry <= now => TokenOut::Clear,
                out => out,
            };
            header::write(headers, name, out);
            Ok(())
        }
        _ => cookie::write(config, headers, out, now),
    }
}

/// Adds `directive` to `Cache-Control`: as the only value when there is none, else merged with
/// the directives already there into one comma-joined value, unless they hold it already
/// (another session layer answered too).
fn add_cache_directive(headers: &mut HeaderMap, directive: &'static str) {
    let present: Vec<&HeaderValue> = headers.get_all(CACHE_CONTROL).iter().collect();
    if present.iter().any(|value| holds(value, directive)) {
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
        HeaderValue::from_static(directive)
    } else {
        merged.extend_from_slice(directive.as_bytes());
        // Header-value bytes joined by ", " are a header value: this never fails.
        HeaderValue::from_bytes(&merged).unwrap_or(HeaderValue::from_static(directive))
    };
    headers.insert(CACHE_CONTROL, value);
}

/// Whether a `Cache-Control` value lists `directive` (case-insensitive; commas inside quoted
/// strings do not separate directives).
fn holds(value: &HeaderValue, directive: &str) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut quoted = false;
    value
        .split(|c| {
            quoted ^= c == '"';
            c == ',' && !quoted
        })
        .any(|d| d.trim().eq_ignore_ascii_case(directive))
}

#[cfg(test)]
mod tests;
