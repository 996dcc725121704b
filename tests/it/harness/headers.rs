//! Tokens in headers: a client that carries its token in a header of its own or as a bearer
//! token and follows the header the layer answers in, requests with exactly the headers a test
//! gives, and what the tests of the carriers read off a response (`Vary`, `Cache-Control`, the
//! answer header, the cookie's value whatever its length).

use axum::{Router, body::Body};
use http::{HeaderName, HeaderValue, Request, StatusCode, header};

use super::{Resp, send};

/// The header the tests' header carriers read, and the one every header or bearer carrier of
/// theirs answers in.
pub const TOKEN_HEADER: &str = "x-session-token";

/// How a [`HeaderClient`] sends its token.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    /// `X-Session-Token: <token>`.
    Header,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

impl Via {
    /// The request header that carries `token` this way.
    pub fn header(self, token: &str) -> (HeaderName, HeaderValue) {
        let (name, value) = match self {
            Via::Header => (HeaderName::from_static(TOKEN_HEADER), token.to_owned()),
            Via::Bearer => (header::AUTHORIZATION, format!("Bearer {token}")),
        };
        (
            name,
            HeaderValue::try_from(value).expect("a token is a header value"),
        )
    }
}

/// A client whose token travels in a header: it sends it as [`Via`] says and follows the
/// layer's answer in [`TOKEN_HEADER`] (an empty value drops the token).
#[derive(Clone)]
pub struct HeaderClient {
    app: Router,
    via: Via,
    pub token: Option<String>,
}

impl HeaderClient {
    pub fn new(app: &Router, via: Via) -> Self {
        HeaderClient {
            app: app.clone(),
            via,
            token: None,
        }
    }

    pub fn with_token(app: &Router, via: Via, token: &str) -> Self {
        HeaderClient {
            token: Some(token.to_owned()),
            ..Self::new(app, via)
        }
    }

    pub async fn get(&mut self, uri: &str) -> Resp {
        let headers = self.token.as_deref().map(|t| self.via.header(t));
        let resp = get_with(&self.app, uri, headers).await;
        if let Some(answer) = resp.answer() {
            self.token = Some(answer).filter(|a| !a.is_empty());
        }
        resp
    }
}

/// A request header, as [`get_with`] takes them.
pub type Header = (HeaderName, HeaderValue);

/// `X-Session-Token: <value>`, any bytes a header value may hold.
pub fn token_header(value: impl AsRef<[u8]>) -> Header {
    let value = HeaderValue::from_bytes(value.as_ref()).expect("a header value");
    (HeaderName::from_static(TOKEN_HEADER), value)
}

/// `Authorization: <value>`.
pub fn authorization(value: &str) -> Header {
    let value = HeaderValue::try_from(value).expect("a header value");
    (header::AUTHORIZATION, value)
}

/// `Cookie: session=<value>`.
pub fn session_cookie(value: &str) -> Header {
    let value = HeaderValue::try_from(format!("session={value}")).expect("a header value");
    (header::COOKIE, value)
}

/// Sends a GET with exactly these headers, each pair one header line (repeats kept).
pub async fn get_with(app: &Router, uri: &str, headers: impl IntoIterator<Item = Header>) -> Resp {
    let mut req = Request::get(uri).body(Body::empty()).unwrap();
    for (name, value) in headers {
        req.headers_mut().append(name, value);
    }
    send(app, req).await
}

/// Two sessions made on `app`, whose carriers are the cookie then the header: `who=cookie`
/// answered in the cookie, and `who=header` answered in the header (a malformed header makes
/// it the carrier used). Their tokens, as the wire carries them.
pub async fn a_session_on_each_carrier(app: &Router) -> (String, String) {
    let by_cookie = get_with(app, "/put?key=who&value=cookie", []).await;
    let nope = token_header("nope");
    let by_header = get_with(app, "/put?key=who&value=header", [nope]).await;
    (by_cookie.cookie_token(), by_header.header_token())
}

impl Resp {
    /// The value of the response's one [`TOKEN_HEADER`], if it has one.
    pub fn answer(&self) -> Option<String> {
        let all = self.header_values(TOKEN_HEADER);
        assert!(all.len() <= 1, "more than one {TOKEN_HEADER}: {all:?}");
        all.into_iter().next()
    }

    /// The value of the session cookie the response sets (`None` without a `Set-Cookie`),
    /// whatever its length: signed tokens too.
    pub fn cookie_value(&self) -> Option<String> {
        self.set_cookie().map(|c| c.value().to_owned())
    }

    /// The token the response sends in [`TOKEN_HEADER`], checked as the header carriers send
    /// it: a non-empty value, no `Set-Cookie`, `Cache-Control: private` and nothing else.
    #[track_caller]
    pub fn header_token(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        let token = (self.answer().filter(|t| !t.is_empty()))
            .unwrap_or_else(|| panic!("no token in {TOKEN_HEADER}: {self:?}"));
        assert!(self.set_cookie_headers().is_empty(), "{self:?}");
        assert_eq!(self.cache_directives(), ["private"], "{self:?}");
        token
    }

    /// The token the response sends in the session cookie, checked as the cookie carrier
    /// sends it: a non-empty value, no [`TOKEN_HEADER`], `Cache-Control: no-cache="Set-Cookie"`.
    #[track_caller]
    pub fn cookie_token(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        let token = (self.cookie_value().filter(|t| !t.is_empty()))
            .unwrap_or_else(|| panic!("no token in Set-Cookie: {self:?}"));
        assert_eq!(self.answer(), None, "{self:?}");
        assert_eq!(
            self.cache_directives(),
            [r#"no-cache="set-cookie""#],
            "{self:?}"
        );
        token
    }

    /// Asserts the response says nothing about a token: no `Set-Cookie`, no [`TOKEN_HEADER`],
    /// no `Cache-Control` of the layer's.
    #[track_caller]
    pub fn assert_no_token(&self, what: &str) {
        assert_eq!(self.status, StatusCode::OK, "{what}: {self:?}");
        assert!(self.set_cookie_headers().is_empty(), "{what}: {self:?}");
        assert_eq!(self.answer(), None, "{what}: {self:?}");
        assert!(self.cache_directives().is_empty(), "{what}: {self:?}");
    }

    /// The fields `Vary` lists, lowercased, in order.
    pub fn vary_fields(&self) -> Vec<String> {
        self.list(header::VARY)
    }

    /// The directives `Cache-Control` lists, lowercased, in order.
    pub fn cache_directives(&self) -> Vec<String> {
        self.list(header::CACHE_CONTROL)
    }

    fn list(&self, name: HeaderName) -> Vec<String> {
        self.header_values(name.as_str())
            .iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .collect()
    }
}
