//! The one error type of the crate.

use std::{error::Error as StdError, sync::Arc, time::Duration};

/// What went wrong with a session: a store failure, a timeout, or a value that does not
/// (de)serialize.
///
/// Errors never contain a session token. With the `axum` feature, `Error` implements
/// `IntoResponse` as the layer's default error response, an empty `500 Internal Server Error`,
/// so handlers can use `?` on session calls.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session store (Redis, memory, ...) reported an error.
    #[error("session store error: {0}")]
    Store(#[source] Arc<dyn StdError + Send + Sync>),
    /// The session store did not answer within the configured store timeout.
    #[error("session store did not answer within {0:?}")]
    Timeout(Duration),
    /// A stored session record is not in the shape this crate writes (foreign or corrupted data
    /// under a session key).
    #[error("stored session record is malformed: {0}")]
    Malformed(String),
    /// A value could not be serialized to, or deserialized from, JSON as the requested type.
    #[error("session value {key:?} could not be converted: {source}")]
    Value {
        /// The session key whose value failed.
        key: String,
        /// The serde_json error.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// A write would make the session larger than the layer's `max_session_bytes`, or a key
    /// is longer than `max_key_bytes`. Nothing was stored.
    #[error("session too large: {0}")]
    TooLarge(String),
    /// The store does not support the operation.
    #[error("unsupported by this session store: {0}")]
    Unsupported(&'static str),
    /// The layer's settings do not work, e.g. they render a `Set-Cookie` that is not a valid
    /// header value. Each setter checks its own value when the layer is built and panics on an
    /// invalid one; this reports what can only show later.
    #[error("invalid session layer configuration: {0}")]
    Config(String),
    /// The `Session` extractor was used on a route that is not wrapped in a `SessionLayer`.
    #[error("no session: the request did not pass through a SessionLayer")]
    MissingLayer,
}

impl Error {
    /// Wraps an error of a session store backend, for implementors of
    /// [`SessionStore`](crate::store::SessionStore).
    pub fn store(err: impl StdError + Send + Sync + 'static) -> Self {
        Error::Store(Arc::new(err))
    }

    pub(crate) fn value(key: &str, source: serde_json::Error) -> Self {
        Error::Value {
            key: key.to_owned(),
            source: Arc::new(source),
        }
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for Error {
    fn into_response(self) -> axum_core::response::Response {
        tracing::error!(error = %self, "session error");
        default_response().map(|()| axum_core::body::Body::empty())
    }
}

/// The response for a session error, unless the layer's `error_handler` says otherwise: an
/// empty `500 Internal Server Error`.
pub(crate) fn default_response() -> http::Response<()> {
    let mut res = http::Response::new(());
    *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    res
}
