//! # tower-scs
//!
//! Sessions for Tower services — axum, tonic, hyper — stored in Redis (through
//! [fred](https://docs.rs/fred)) or in memory: Go's [SCS](https://github.com/alexedwards/scs)
//! `LoadAndSave`, `Load` and `Commit`, ported.
//!
//! - [`SessionLayer`] reads the session token (from the cookie, or a header: [`Carrier`];
//!   optionally signed: [`SigningKeys`]), puts a [`Session`] in the request, runs the inner
//!   service, then commits what the handler changed and sends the token back.
//! - [`Session`] is the handle handlers use: typed `get`/`insert`/`remove`/`pop`, `destroy`,
//!   `renew_token`, `remember_me`, deadlines, merge, and [`Session::commit`] to store now (the
//!   only way to store what changes after the response, from a WebSocket say). With the
//!   default `axum` feature it is an extractor.
//! - [`SessionLoader`] loads sessions by token outside any request.
//! - [`store::SessionStore`] is the storage seam (the [`store`] module is for store authors); [`MemoryStore`] and `RedisStore` (feature `redis`)
//!   implement it.
//!
//! The session is loaded lazily (a handler that never touches it costs no store call), and a
//! commit sends the store only what changed, so concurrent requests of one session that write
//! different keys both keep their writes.
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | on | `Session` and `Sessions` as axum extractors, `Error` as an axum response |
//! | `redis` | on | `RedisStore` over [fred](https://docs.rs/fred), re-exported as `tower_scs::fred` |
//! | `tls` | off | `rediss://` through fred's rustls (`ring`); custom CA and mutual TLS through `RedisStore::from_config` |
//! | `metrics` | off | counters and histograms through the [`metrics`](https://docs.rs/metrics) facade: see [`metrics`](mod@metrics) |
//!
//! With `default-features = false` the crate compiles no Redis client: [`MemoryStore`] only.
//!
//! ## Observability
//!
//! Loads and commits run in `tracing` spans (`session_load`, `session_commit`, at `DEBUG`) that
//! say what happened, how long it took and how many store calls and Redis commands it cost; with
//! the `metrics` feature, counters and histograms (`tower_scs_loads_total`, …) go to whatever
//! `metrics` recorder the application installs. Neither ever holds a token. The spans, every
//! metric and example output: the [`metrics`](mod@metrics) module.
//!
//! ## Example
//!
#![cfg_attr(feature = "axum", doc = "```")]
#![cfg_attr(not(feature = "axum"), doc = "```text")]
//! use axum::{Router, routing::get};
//! use tower::ServiceExt;
//! use tower_scs::{MemoryStore, Session, SessionLayer};
//!
//! async fn put(session: Session) {
//!     session.insert("message", "Hello from a session!");
//! }
//!
//! async fn get_message(session: Session) -> Result<String, tower_scs::Error> {
//!     Ok(session.get::<String>("message").await?.unwrap_or_default())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app = Router::new()
//!     .route("/put", get(put))
//!     .route("/get", get(get_message))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//!
//! let res = app.clone()
//!     .oneshot(http::Request::get("/put").body(axum::body::Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! let cookie = res.headers()["set-cookie"].to_str().unwrap();
//! let cookie = cookie.split(';').next().unwrap().to_owned(); // "session=<token>"
//!
//! let res = app
//!     .oneshot(
//!         http::Request::get("/get")
//!             .header("cookie", cookie)
//!             .body(axum::body::Body::empty())
//!             .unwrap(),
//!     )
//!     .await
//!     .unwrap();
//! let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
//! assert_eq!(body, "Hello from a session!");
//! # }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod layer;
mod memory;
pub mod metrics;
mod observe;
#[cfg(feature = "redis")]
mod redis;
mod session;
mod shared;
pub mod store;
mod token;
mod wire;

pub use cookie::SameSite;
pub use error::Error;
pub use layer::{ResponseFuture, SessionLayer, SessionService};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{FredClient, LocalCache, RedisStore};
pub use session::{
    CSRF_KEY, Device, DeviceId, EventKind, InvalidDeviceId, MAX_IP_BYTES, MAX_USER_AGENT_BYTES,
    Session, SessionEvent, SessionLoader, Sessions, Status,
};
pub use wire::{Carrier, MIN_KEY_BYTES, SigningKeys};

/// The fred crate this crate is built on, for configuring clients and pools.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use fred;

/// The README's code blocks, compiled as doc tests.
#[cfg(all(doctest, feature = "axum", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// docs/guarantees.md's code blocks, compiled as doc tests.
#[cfg(all(doctest, feature = "axum", feature = "redis"))]
#[doc = include_str!("../docs/guarantees.md")]
struct GuaranteesDoctests;
