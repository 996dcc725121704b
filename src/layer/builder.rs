//! [`SessionLayer`]: the settings, as a `#[must_use]` builder, and the Tower [`Layer`].

use std::{fmt, sync::Arc, time::Duration};

use cookie::SameSite;
use http::Response;
use tower_layer::Layer;

use super::SessionService;
use crate::{
    Error,
    config::{Config, MAX_IDLE_TIMEOUT, is_domain, is_path, is_token, refuse_unless},
    session::SessionLoader,
    shared::Shared,
    store::{DynStore, SessionStore},
    wire::{Carrier, SigningKeys},
};

/// Tower layer that gives every request a [`Session`](crate::Session) and commits it after the inner service
/// has answered (SCS `LoadAndSave`).
///
/// It works with any `http::Request`/`http::Response` service (axum, tonic, hyper), as long as
/// the response body implements `Default` (used for the error response). Its settings, each
/// a method below, with SCS's defaults where SCS has the setting:
///
#[doc = include_str!("settings.md")]
///
/// Each setter checks its value and panics on an invalid one, naming the setting (see its
/// `# Panics` section): a cookie name, domain or path that would break or extend `Set-Cookie`,
/// a lifetime or idle timeout under 1 ms, a zero store timeout or size limit. A configuration
/// mistake thus stops the program when it builds the layer, not a request at run time.
///
#[cfg_attr(feature = "axum", doc = "```")]
#[cfg_attr(not(feature = "axum"), doc = "```text")]
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use tower_scs::{MemoryStore, Session, SessionLayer};
///
/// async fn put(session: Session) {
///     session.insert("message", "Hello from a session!");
/// }
///
/// let app: Router = Router::new().route("/put", get(put)).layer(
///     SessionLayer::new(MemoryStore::new())
///         .idle_timeout(Duration::from_secs(30 * 60))
///         .secure(true),
/// );
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    config: Config,
    store: Arc<dyn DynStore>,
}

impl SessionLayer {
    /// A layer storing sessions in `store`, with SCS's default settings.
    #[must_use]
    pub fn new(store: impl SessionStore) -> Self {
        SessionLayer {
            config: Config::default(),
            store: Arc::new(store),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Absolute lifetime of a session from its creation (or renewal), whatever its activity.
    ///
    /// # Panics
    ///
    /// If `lifetime` is under 1 ms (stores keep expiries in milliseconds).
    #[must_use]
    #[track_caller]
    pub fn lifetime(self, lifetime: Duration) -> Self {
        let ok = lifetime >= Duration::from_millis(1);
        refuse_unless(
            ok,
            "lifetime",
            &lifetime,
            "a valid lifetime (at least 1 ms)",
        );
        self.with(|c| c.lifetime = lifetime)
    }

    /// Inactivity after which a session expires; off by default (leave it unset for no idle
    /// timeout). Each write sets the store expiry to `min(deadline, now + 1.1 × idle)`, and a
    /// read-only request touches it only once less than `idle` remains, so an unused session
    /// expires between 1× and 1.1× the idle timeout after its last use. Timeouts
    /// reaching past the year 9999, where session times end, count as reaching it.
    ///
    /// # Panics
    ///
    /// If `idle` is under 1 ms, zero included (stores keep expiries in milliseconds).
    #[must_use]
    #[track_caller]
    pub fn idle_timeout(self, idle: Duration) -> Self {
        let ok = idle >= Duration::from_millis(1);
        refuse_unless(
            ok,
            "idle_timeout",
            &idle,
            "a valid idle timeout (at least 1 ms)",
        );
        self.with(|c| c.idle_timeout = Some(idle.min(MAX_IDLE_TIMEOUT)))
    }

    /// Name of the session cookie.
    ///
    /// # Panics
    ///
    /// If `name` is not an RFC 6265 token: empty, or holding a control character, a space or
    /// one of `()<>@,;:\"/[]?={}`, or a non-ASCII character.
    #[must_use]
    #[track_caller]
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        let ok = is_token(&name);
        refuse_unless(
            ok,
            "cookie_name",
            &name,
            "a valid cookie name (RFC 6265 token)",
        );
        self.with(|c| c.cookie_name = name)
    }

    /// `Domain` attribute of the cookie: a host name such as `example.com`, optionally with a
    /// leading dot.
    ///
    /// # Panics
    ///
    /// If `domain` is not dot-separated non-empty labels of ASCII letters, digits and `-`
    /// (after one optional leading `.`): e.g. empty, or holding `;`, whitespace or control
    /// characters, which would add attributes to the cookie.
    #[must_use]
    #[track_caller]
    pub fn cookie_domain(self, domain: impl Into<String>) -> Self {
        let domain = domain.into();
        let what = r#"a valid cookie domain (letters, digits, "-" and "." only)"#;
        refuse_unless(is_domain(&domain), "cookie_domain", &domain, what);
        self.with(|c| c.cookie_domain = Some(domain))
    }

    /// `Path` attribute of the cookie.
    ///
    /// # Panics
    ///
    /// If `path` is not an RFC 6265 path-value starting with `/`: it must not hold `;`,
    /// control characters or non-ASCII characters.
    #[must_use]
    #[track_caller]
    pub fn cookie_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        let what = r#"a valid cookie path (starts with "/", no ";" or control characters)"#;
        refuse_unless(is_path(&path), "cookie_path", &path, what);
        self.with(|c| c.cookie_path = path)
    }

    /// `HttpOnly` attribute of the cookie.
    #[must_use]
    pub fn http_only(self, on: bool) -> Self {
        self.with(|c| c.http_only = on)
    }

    /// `Secure` attribute of the cookie. Off by default, as in SCS, so that plain-http
    /// development works; **turn it on in production**.
    #[must_use]
    pub fn secure(self, on: bool) -> Self {
        self.with(|c| c.secure = on)
    }

    /// `SameSite` attribute of the cookie.
    #[must_use]
    pub fn same_site(self, same_site: SameSite) -> Self {
        self.with(|c| c.same_site = same_site)
    }

    /// `Partitioned` attribute of the cookie (CHIPS); browsers then also require `Secure`, which
    /// the cookie carries whenever it is partitioned.
    #[must_use]
    pub fn partitioned(self, on: bool) -> Self {
        self.with(|c| c.partitioned = on)
    }

    /// When on, the cookie carries `Max-Age`/`Expires` matching the store expiry (rounded up to
    /// the next whole second, as SCS does: a fresh cookie's `Max-Age` is the lifetime + 1 s);
    /// when off it is a browser-session cookie, unless the session has remember-me on.
    #[must_use]
    pub fn persist(self, on: bool) -> Self {
        self.with(|c| c.persist = on)
    }

    /// Store sessions under base64url(sha256(token)) instead of the token itself, so that a
    /// leaked store dump holds no usable token.
    #[must_use]
    pub fn hash_token_in_store(self, on: bool) -> Self {
        self.with(|c| c.hash_token_in_store = on)
    }

    /// Largest a session's values may grow, in bytes (sum of key and value lengths, values as
    /// JSON); 1 MiB by default, `None` for no limit. A write that would exceed it fails with
    /// [`Error::TooLarge`] and leaves the stored session as it was.
    ///
    /// # Panics
    ///
    /// If `max` is `Some(0)`, which would refuse every write (use `None` for no limit).
    #[must_use]
    #[track_caller]
    pub fn max_session_bytes(self, max: Option<u64>) -> Self {
        let what = "a valid session size limit (at least 1 byte, or None for no limit)";
        refuse_unless(max != Some(0), "max_session_bytes", &max, what);
        self.with(|c| c.max_session_bytes = max)
    }

    /// Longest a session key may be, in bytes; 1024 by default, `None` for no limit. Longer
    /// keys are refused by [`Session::try_insert`](crate::Session::try_insert) (and make [`Session::insert`](crate::Session::insert) fail the
    /// request).
    ///
    /// # Panics
    ///
    /// If `max` is `Some(0)`, which would refuse every key.
    #[must_use]
    #[track_caller]
    pub fn max_key_bytes(self, max: Option<u64>) -> Self {
        let what = "a valid key length limit (at least 1 byte, or None for no limit)";
        refuse_unless(max != Some(0), "max_key_bytes", &max, what);
        self.with(|c| c.max_key_bytes = max)
    }

    /// Bound on every store call; a call that takes longer fails with [`Error::Timeout`]. A
    /// store whose own bound on loads is at most this long (see
    /// [`SessionStore::load_timeout`]; `RedisStore::from_url`'s is 900 ms) enforces it for loads.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero, which would fail every store call.
    #[must_use]
    #[track_caller]
    pub fn store_timeout(self, timeout: Duration) -> Self {
        let what = "a valid store timeout (above zero)";
        refuse_unless(!timeout.is_zero(), "store_timeout", &timeout, what);
        self.with(|c| c.store_timeout = timeout)
    }

    /// Builds the response (status and headers; the body is the body type's default) sent
    /// instead of the handler's when the session cannot be kept: a store call failed or timed
    /// out (the load, the commit, a pop or a log-out-everywhere), or a value given to
    /// [`Session::insert`](crate::Session::insert) could not be stored ([`Error::Value`],
    /// [`Error::TooLarge`]). Errors a handler receives itself, such as a value that does not
    /// deserialize in `get` or a refused `try_insert`, are the handler's to answer and never
    /// reach this. Default: an empty `500 Internal Server Error`, the same response as
    /// `Error`'s `IntoResponse`.
    #[must_use]
    pub fn error_handler(
        self,
        handler: impl Fn(&Error) -> Response<()> + Send + Sync + 'static,
    ) -> Self {
        self.with(|c| c.error_handler = Arc::new(handler))
    }
    /// Where the session token travels, tried in this order on each request: the first
    /// carrier holding an acceptable token gives the session, and the response answers on that
    /// carrier. A request without one gets a fresh session, answered on the first carrier it
    /// used at all (a cookie or header of a carrier's name, even one with a malformed value),
    /// else on the first carrier of the list. Responses vary on every carrier's request header.
    /// Default: the cookie alone.
    ///
    /// What counts as a token: exactly [`Carrier`]'s form (43 base64url characters, plus the tag
    /// when signing is on). Anything else (malformed, longer, or sent twice in one carrier's
    /// header) is no token, and costs no store call.
    ///
    /// ```
    /// use tower_scs::{Carrier, MemoryStore, SessionLayer};
    ///
    /// // An API: `X-Session-Token` in, `X-Session-Token` out.
    /// let api = SessionLayer::new(MemoryStore::new()).carriers([Carrier::header("x-session-token")]);
    /// // Bearer tokens from mobile clients, cookies from browsers (a fresh session gets a cookie).
    /// let both = SessionLayer::new(MemoryStore::new())
    ///     .carriers([Carrier::cookie(), Carrier::bearer("x-session-token")]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `carriers` is empty or names one carrier twice.
    #[must_use]
    #[track_caller]
    pub fn carriers(self, carriers: impl IntoIterator<Item = Carrier>) -> Self {
        let carriers: Vec<Carrier> = carriers.into_iter().collect();
        let distinct = (1..carriers.len()).all(|i| !carriers[..i].contains(&carriers[i]));
        let what = "a list of distinct carriers, at least one";
        refuse_unless(
            !carriers.is_empty() && distinct,
            "carriers",
            &carriers,
            what,
        );
        self.with(|c| c.carriers = carriers.into())
    }

    /// Signs tokens on the wire with HMAC-SHA256: tokens are signed with the first key and
    /// verified against them all, so a new key goes in front and an old one is dropped once
    /// its tokens have been re-signed. A forged or tampered token, or one signed with a key no
    /// longer in the list, is no session and costs no store call.
    ///
    /// - A request whose token was signed with an older key gets the token re-signed with the
    ///   first key, on its carrier, when its session is live: rotating keys logs nobody out.
    ///   (The layer loads the session for that once, if the handler did not; when the session
    ///   is gone, the token is cleared, so that the client stops sending it.)
    /// - What is stored does not change: the tag is never stored, so turning signing on or off
    ///   loses no stored session. Turning it **on** makes unsigned tokens no session (their
    ///   clients start afresh), unless [`SigningKeys::accept_unsigned`] is on, which accepts
    ///   them and re-signs them. Turning it **off** accepts a signed token without checking its
    ///   tag, and answers with the bare token.
    ///
    /// ```
    /// use tower_scs::{MemoryStore, SessionLayer, SigningKeys};
    ///
    /// let keys = SigningKeys::from_base64([
    ///     "bmV3LWtleS1hdC1sZWFzdC0zMi1ieXRlcy1sb25nISE", // signs and verifies
    ///     "b2xkLWtleS1hdC1sZWFzdC0zMi1ieXRlcy1sb25nISE", // verifies only
    /// ])?;
    /// let layer = SessionLayer::new(MemoryStore::new()).signing_keys(keys);
    /// # Ok::<_, tower_scs::Error>(())
    /// ```
    #[must_use]
    pub fn signing_keys(self, keys: SigningKeys) -> Self {
        self.with(|c| c.signing = Some(keys))
    }

    /// How stale the "last seen" of a session tied to an owner may grow (see
    /// [`Session::devices`](crate::Session::devices)): every commit sets it, and a request that
    /// only reads such a session touches it once it is older than this, so a busy device costs
    /// one write per interval, never one per request. Default: 1 minute.
    ///
    /// # Panics
    ///
    /// If `interval` is zero, which would make every read a write.
    #[must_use]
    #[track_caller]
    pub fn last_seen_interval(self, interval: Duration) -> Self {
        let what = "a valid interval (above zero)";
        refuse_unless(!interval.is_zero(), "last_seen_interval", &interval, what);
        self.with(|c| c.last_seen_interval = interval)
    }

    /// Calls `hook` on each session's lifecycle event: created, renewed, destroyed, revoked
    /// (see [`SessionEvent`](crate::SessionEvent), which carries the device id and owner, never
    /// the token, and says what is observable of expiry). It runs on the request's task, after
    /// the store has done what the event says: keep it quick (send it to a channel for slow
    /// work).
    ///
    /// ```
    /// use tower_scs::{EventKind, MemoryStore, SessionLayer};
    ///
    /// let layer = SessionLayer::new(MemoryStore::new()).on_event(|event| {
    ///     if event.kind == EventKind::Revoked {
    ///         tracing::info!(owner = ?event.owner, device = ?event.device, "session revoked");
    ///     }
    /// });
    /// ```
    #[must_use]
    pub fn on_event(self, hook: impl Fn(&crate::SessionEvent) + Send + Sync + 'static) -> Self {
        self.with(|c| c.on_event = Some(Arc::new(hook)))
    }

    /// A [`SessionLoader`] on this layer's store and settings: it loads sessions by token
    /// outside any request (a background job, a WebSocket task, an admin tool), with the same
    /// API, limits and store timeout. Take it once the layer is configured.
    #[must_use]
    pub fn loader(&self) -> SessionLoader {
        SessionLoader::new(self.shared())
    }

    fn shared(&self) -> Arc<Shared> {
        Arc::new(Shared::new(self.config.clone(), self.store.clone()))
    }
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("SessionLayer")
            .field("lifetime", &c.lifetime)
            .field("idle_timeout", &c.idle_timeout)
            .field("cookie_name", &c.cookie_name)
            .field("secure", &c.secure)
            .field("carriers", &c.carriers)
            .field("signing", &c.signing)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.shared())
    }
}

#[cfg(test)]
mod tests {
    /// The README's settings table is the one this rustdoc includes: one source of truth.
    #[test]
    fn the_readme_shows_the_settings_table_of_the_rustdoc() {
        let readme = include_str!("../../README.md");
        assert!(readme.contains(include_str!("settings.md")));
    }
}
