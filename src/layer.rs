//! [`SessionLayer`]: the whole request path in one place —
//! cookie → session handle → handler → commit → `Set-Cookie` (SCS `LoadAndSave`).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cookie::{Cookie, SameSite};
use http::{HeaderValue, Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use time::OffsetDateTime;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    Error, Session,
    session::{Plan, Write},
    store::{Change, Committed, DynStore, Record, SessionStore},
    token,
};

/// The longest cookie lifetime browsers honour (RFC 6265bis): 400 days.
const MAX_COOKIE_AGE: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// Builds the response sent instead of the handler's when the session store fails.
type ErrorHandler = Arc<dyn Fn(&Error) -> Response<()> + Send + Sync>;

/// The layer's settings, with SCS's defaults.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) lifetime: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) cookie_name: String,
    cookie_domain: Option<String>,
    cookie_path: String,
    http_only: bool,
    secure: bool,
    same_site: SameSite,
    partitioned: bool,
    persist: bool,
    hash_token_in_store: bool,
    store_timeout: Duration,
    pub(crate) max_session_bytes: Option<u64>,
    pub(crate) max_key_bytes: Option<u64>,
    error_handler: ErrorHandler,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lifetime: Duration::from_secs(24 * 60 * 60),
            idle_timeout: None,
            cookie_name: "session".into(),
            cookie_domain: None,
            cookie_path: "/".into(),
            http_only: true,
            secure: false,
            same_site: SameSite::Lax,
            partitioned: false,
            persist: true,
            hash_token_in_store: false,
            store_timeout: Duration::from_secs(1),
            max_session_bytes: Some(1 << 20),
            max_key_bytes: Some(1024),
            error_handler: Arc::new(|_| {
                let mut res = Response::new(());
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                res
            }),
        }
    }
}

/// What the layer and every session of it share: the settings and the store.
pub(crate) struct Shared {
    pub(crate) config: Config,
    store: Arc<dyn DynStore>,
    /// The store bounds its loads within the store timeout by itself.
    store_bounds_loads: bool,
}

impl Shared {
    pub(crate) fn store_id<'a>(&self, token: &'a str) -> std::borrow::Cow<'a, str> {
        token::store_id(token, self.config.hash_token_in_store)
    }

    /// Bounds a store call by the store timeout.
    async fn bounded<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        let limit = self.config.store_timeout;
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(Error::Timeout(limit)))
    }

    pub(crate) async fn load(&self, token: &str) -> Result<Option<Record>, Error> {
        let id = self.store_id(token);
        if self.store_bounds_loads {
            return self.store.load(&id).await;
        }
        self.bounded(self.store.load(&id)).await
    }

    async fn commit(&self, token: &str, change: &Change) -> Result<Option<Committed>, Error> {
        let id = self.store_id(token);
        self.bounded(self.store.commit(&id, change)).await
    }

    pub(crate) async fn delete_owner(&self, owner: &str) -> Result<u64, Error> {
        self.bounded(self.store.delete_owner(owner)).await
    }

    pub(crate) async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        self.bounded(self.store.take(id, key)).await
    }

    async fn replace(&self, id: &str, successor: &str) -> Result<bool, Error> {
        self.bounded(self.store.replace(id, successor)).await
    }

    async fn delete(&self, ids: &[String]) -> Result<(), Error> {
        for id in ids {
            self.bounded(self.store.delete(id)).await?;
        }
        Ok(())
    }

    /// The first well-formed session token among the request's cookies. Malformed values are
    /// ignored without any store call.
    fn token_from<B>(&self, req: &Request<B>) -> Option<String> {
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
            .find(|c| c.name() == self.config.cookie_name && token::is_well_formed(c.value()))
            .map(|c| c.value().to_owned())
    }

    /// Runs a session's plan against the store; returns the `Set-Cookie` value to send.
    async fn commit_plan(&self, plan: Plan, now: SystemTime) -> Result<Option<String>, Error> {
        match plan {
            Plan::Nothing => Ok(None),
            Plan::Failed(e) => Err(e),
            Plan::Destroy { delete } => {
                self.delete(&delete).await?;
                Ok(Some(self.expired_cookie()))
            }
            Plan::Write(write) => self.write(*write, now).await,
        }
    }

    /// Runs a write (see [`Write`] for the order). Whatever a renew or merge hands over must
    /// still be live when the new record is confirmed, or the new record does not survive.
    async fn write(&self, mut w: Write, now: SystemTime) -> Result<Option<String>, Error> {
        self.delete(&w.delete).await?;
        let target = self.store_id(&w.token).into_owned();
        for merged in std::mem::take(&mut w.merged_ids) {
            if !self.replace(&merged, &target).await? {
                w.drop_merged();
            }
        }
        let done = self.commit(&w.token, &w.change).await?;
        let handed_over = match (&done, &w.renewed_from) {
            (Some(_), Some(from)) => self.replace(from, &target).await?,
            _ => true,
        };
        match done {
            Some(done) if handed_over => return Ok(Some(self.cookie(&w.token, done, now))),
            // The renewed session was destroyed, or renewed by another request, meanwhile.
            Some(_) => self.delete(std::slice::from_ref(&target)).await?,
            // The session expired or was destroyed meanwhile: never adopt or resurrect it.
            None => {}
        }
        // What this request wrote itself goes into a new session with a new token.
        let Some(own) = w.own() else {
            return Ok(None);
        };
        let token = token::generate();
        let done = self
            .commit(&token, &own)
            .await?
            .ok_or_else(|| Error::Malformed("the store refused to create a session".into()))?;
        Ok(Some(self.cookie(&token, done, now)))
    }

    /// The cookie with the configured attributes. Names with a `__Host-` prefix always get
    /// `Secure`, `Path=/` and no `Domain`, and `__Secure-` names always get `Secure`, as browsers
    /// require of those prefixes.
    fn base_cookie(&self, value: String) -> Cookie<'static> {
        let c = &self.config;
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
    fn cookie(&self, token: &str, done: Committed, now: SystemTime) -> String {
        let left = match done.expiry.duration_since(now) {
            Ok(left) if !left.is_zero() => left,
            _ => return self.expired_cookie(),
        };
        let mut cookie = self.base_cookie(token.to_owned());
        if self.config.persist || done.remember {
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
    fn expired_cookie(&self) -> String {
        let mut cookie = self.base_cookie(String::new());
        cookie.set_expires(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1));
        cookie.set_max_age(time::Duration::ZERO);
        cookie.to_string()
    }
}

/// Tower layer that gives every request a [`Session`] and commits it after the inner service
/// has answered (SCS `LoadAndSave`).
///
/// It works with any `http::Request`/`http::Response` service (axum, tonic, hyper), as long as
/// the response body implements `Default` (used for the error response).
///
/// | setting | default | method |
/// |---|---|---|
/// | absolute lifetime | 24 h | [`lifetime`](Self::lifetime) |
/// | idle timeout | off | [`idle_timeout`](Self::idle_timeout) |
/// | cookie name | `session` | [`cookie_name`](Self::cookie_name) |
/// | cookie domain | none | [`cookie_domain`](Self::cookie_domain) |
/// | cookie path | `/` | [`cookie_path`](Self::cookie_path) |
/// | HttpOnly | on | [`http_only`](Self::http_only) |
/// | Secure | off (turn it on in production) | [`secure`](Self::secure) |
/// | SameSite | Lax | [`same_site`](Self::same_site) |
/// | Partitioned | off | [`partitioned`](Self::partitioned) |
/// | persist | on | [`persist`](Self::persist) |
/// | hash token in store | off | [`hash_token_in_store`](Self::hash_token_in_store) |
/// | store timeout | 1 s | [`store_timeout`](Self::store_timeout) |
/// | max session size | 1 MiB | [`max_session_bytes`](Self::max_session_bytes) |
/// | max key length | 1024 bytes | [`max_key_bytes`](Self::max_key_bytes) |
/// | error response | empty 500 | [`error_handler`](Self::error_handler) |
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

    /// When on, the cookie carries `Max-Age`/`Expires` matching the store expiry; when off it
    /// is a browser-session cookie, unless the session has remember-me on.
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
    /// keys are refused by [`Session::try_insert`] (and make [`Session::insert`] fail the
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
    /// instead of the handler's when the store or a session value fails. Default: an empty
    /// `500 Internal Server Error`.
    #[must_use]
    pub fn error_handler(
        self,
        handler: impl Fn(&Error) -> Response<()> + Send + Sync + 'static,
    ) -> Self {
        self.with(|c| c.error_handler = Arc::new(handler))
    }
}

/// The longest idle timeout that changes anything: from the Unix epoch to the end of the year
/// 9999, where session times saturate. Longer ones are cut to it, so that the store's slack
/// added to the idle timeout can never overflow.
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(253_402_300_799);

/// Panics with `SessionLayer::<setting>: <value> is not <what>` unless `ok`: settings are
/// checked when the layer is configured, never at request time.
#[track_caller]
fn refuse_unless(ok: bool, setting: &str, value: &dyn fmt::Debug, what: &str) {
    if !ok {
        panic!("SessionLayer::{setting}: {value:?} is not {what}");
    }
}

/// An RFC 6265 cookie-name: a non-empty RFC 2616 token (visible ASCII, no separators).
fn is_token(name: &str) -> bool {
    const SEPARATORS: &[u8] = br#"()<>@,;:\"/[]?={}"#;
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !SEPARATORS.contains(&b))
}

/// A host name for the `Domain` attribute: one optional leading dot, then dot-separated
/// non-empty labels of ASCII letters, digits and `-`.
fn is_domain(domain: &str) -> bool {
    let host = domain.strip_prefix('.').unwrap_or(domain);
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An RFC 6265 path-value starting with `/`: ASCII, no control characters, no `;`.
fn is_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b';')
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("SessionLayer")
            .field("lifetime", &c.lifetime)
            .field("idle_timeout", &c.idle_timeout)
            .field("cookie_name", &c.cookie_name)
            .field("secure", &c.secure)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: Arc::new(Shared {
                config: self.config.clone(),
                store: self.store.clone(),
                store_bounds_loads: self
                    .store
                    .load_timeout()
                    .is_some_and(|t| t <= self.config.store_timeout),
            }),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let token = self.shared.token_from(&req);
        // An outer session layer's session stays reachable through `Sessions`.
        let outer = req.extensions().get::<Session>().cloned();
        let session = Session::new(self.shared.clone(), token, outer);
        req.extensions_mut().insert(session.clone());
        ResponseFuture {
            state: State::Handler {
                future: self.inner.call(req),
                session: Some(session),
            },
        }
    }
}

type Committing<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

pin_project! {
    /// Response future of [`SessionService`]: runs the inner service, then commits the session.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Handler { #[pin] future: F, session: Option<Session> },
        Committing { future: Committing<B> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                StateProj::Handler { future, session } => {
                    let mut response = ready!(future.poll(cx))?;
                    add_vary_cookie(&mut response);
                    let session = session.take().expect("polled after completion");
                    if !session.needs_commit() {
                        return Poll::Ready(Ok(response));
                    }
                    let now = SystemTime::now();
                    let plan = session.plan(now);
                    if let Plan::Nothing = plan {
                        return Poll::Ready(Ok(response));
                    }
                    let future = Box::pin(finish(session, plan, now, response));
                    self.as_mut()
                        .project()
                        .state
                        .set(State::Committing { future });
                }
                StateProj::Committing { future } => return future.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// Commits the session and puts its cookie on the response, or replaces the response with the
/// error response when the session or the store failed.
async fn finish<B: Default>(
    session: Session,
    plan: Plan,
    now: SystemTime,
    mut response: Response<B>,
) -> Response<B> {
    let shared = session.shared();
    match shared.commit_plan(plan, now).await {
        Ok(None) => response,
        Ok(Some(cookie)) => {
            let headers = response.headers_mut();
            match HeaderValue::try_from(cookie) {
                Ok(value) => {
                    headers.append(header::SET_COOKIE, value);
                    add_no_cache_set_cookie(headers);
                    response
                }
                Err(_) => error_response(shared, &Error::Malformed("cookie value".into())),
            }
        }
        Err(e) => error_response(shared, &e),
    }
}

fn error_response<B: Default>(shared: &Shared, e: &Error) -> Response<B> {
    tracing::error!(error = %e, "session error; sending the error response");
    let (parts, ()) = (shared.config.error_handler)(e).into_parts();
    let mut response = Response::from_parts(parts, B::default());
    add_vary_cookie(&mut response);
    response
}

/// Adds `Vary: Cookie`, unless the response already varies on `Cookie` (said by the handler
/// or by another session layer) or on everything (`*`).
fn add_vary_cookie<B>(response: &mut Response<B>) {
    let headers = response.headers_mut();
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

/// SCS's `Cache-Control` directive for a response that sets the cookie.
const NO_CACHE_SET_COOKIE: &str = r#"no-cache="Set-Cookie""#;

/// Adds `no-cache="Set-Cookie"` to `Cache-Control`: as the only value when there is none, else
/// merged with the directives already there into one comma-joined value, unless they hold it
/// already (another session layer set a cookie too).
fn add_no_cache_set_cookie(headers: &mut http::HeaderMap) {
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
