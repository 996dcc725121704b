//! [`Sessions`]: every layer's session, for apps with several layers; and the axum extractors.

use super::Session;
#[cfg(feature = "axum")]
use crate::Error;

/// The sessions of every [`SessionLayer`](crate::SessionLayer) a request went through, by
/// cookie name: for apps with several layers (e.g. a `session` cookie on one store and an
/// `admin` cookie on another). The plain [`Session`] extension and extractor is the innermost
/// layer's; `Sessions` reaches the others.
///
/// ```
/// # async fn demo(sessions: tower_scs::Sessions) {
/// if let Some(admin) = sessions.get("admin") {
///     admin.insert("seen", true);
/// }
/// # }
/// ```
#[derive(Clone, Default, Debug)]
pub struct Sessions(Option<Session>);

impl Sessions {
    /// The sessions of the layers a request went through, from its extensions.
    pub fn from_extensions(extensions: &http::Extensions) -> Self {
        Sessions(extensions.get::<Session>().cloned())
    }

    /// The session of the layer whose cookie is named `cookie_name`.
    pub fn get(&self, cookie_name: &str) -> Option<&Session> {
        let mut next = self.0.as_ref();
        while let Some(session) = next {
            if session.0.shared.config.cookie_name == cookie_name {
                return Some(session);
            }
            next = session.0.outer.as_ref();
        }
        None
    }
}

/// `Session` as an axum extractor: taken from the request extensions, where the layer put it; a
/// route without a `SessionLayer` gets [`Error::MissingLayer`].
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> axum_core::extract::FromRequestParts<S> for Session {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let found = parts.extensions.get::<Session>().cloned();
        found.ok_or(Error::MissingLayer)
    }
}

/// `Sessions` as an axum extractor; a route without a `SessionLayer` gets
/// [`Error::MissingLayer`].
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> axum_core::extract::FromRequestParts<S> for Sessions {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Sessions::from_extensions(&parts.extensions) {
            Sessions(None) => Err(Error::MissingLayer),
            sessions => Ok(sessions),
        }
    }
}

#[cfg(all(test, feature = "axum"))]
mod tests {
    use axum_core::extract::FromRequestParts;

    use super::*;

    #[tokio::test]
    async fn without_a_layer_the_extractors_reject_with_missing_layer() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        let session = Session::from_request_parts(&mut parts, &()).await;
        assert!(matches!(session, Err(Error::MissingLayer)));
        let sessions = Sessions::from_request_parts(&mut parts, &()).await;
        assert!(matches!(sessions, Err(Error::MissingLayer)));
        assert!(
            Sessions::from_extensions(&parts.extensions)
                .get("session")
                .is_none()
        );
    }
}
