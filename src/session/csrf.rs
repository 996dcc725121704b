//! CSRF synchronizer tokens (OWASP): a random token kept in the session, echoed by every form
//! and checked in constant time.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::Session;
use crate::Error;

/// The session key the CSRF token is kept under.
pub const CSRF_KEY: &str = "_csrf";

impl Session {
    /// The session's CSRF token (OWASP's synchronizer-token pattern): 32 random bytes,
    /// base64url, made on first use and kept in the session under [`CSRF_KEY`]. Put it in a
    /// hidden field of every form (or a header of every unsafe request) and check what comes
    /// back with [`verify_csrf`](Self::verify_csrf). [`renew_token`](Self::renew_token) drops
    /// it, so that a login gets a new one. Rendering a form thus stores a session for an
    /// anonymous visitor (a login page, say): give such apps an
    /// [`idle_timeout`](crate::SessionLayer::idle_timeout), so that the ones never used again go
    /// soon.
    ///
    /// # Errors
    ///
    /// As [`Session::get`].
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// let token = session.csrf_token().await?; // into the form's hidden field
    /// assert!(session.verify_csrf(&token).await?); // the form came back from our page
    /// assert!(!session.verify_csrf("forged").await?);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn csrf_token(&self) -> Result<String, Error> {
        if let Some(token) = self.get::<String>(CSRF_KEY).await? {
            return Ok(token);
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        self.try_insert(CSRF_KEY, &token)?;
        Ok(token)
    }

    /// Whether `presented` is the session's CSRF token, compared in constant time. A session
    /// without one (no form of ours was ever rendered for it) verifies nothing.
    ///
    /// # Errors
    ///
    /// As [`Session::get`].
    pub async fn verify_csrf(&self, presented: &str) -> Result<bool, Error> {
        let Some(expected) = self.get::<String>(CSRF_KEY).await? else {
            return Ok(false);
        };
        Ok(expected.as_bytes().ct_eq(presented.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{MemoryStore, SessionLoader, config::Config, shared::Shared};

    fn loader() -> SessionLoader {
        let shared = Shared::new(Config::default(), Arc::new(MemoryStore::new()));
        SessionLoader::new(Arc::new(shared))
    }

    #[tokio::test]
    async fn the_token_is_kept_checked_and_rotated_by_a_renew() {
        let loader = loader();
        let session = loader.create();
        assert!(!session.verify_csrf("").await.unwrap(), "no token yet");
        let first = session.csrf_token().await.unwrap();
        assert_eq!(first.len(), 43);
        assert_eq!(session.csrf_token().await.unwrap(), first, "kept");
        let token = session.commit().await.unwrap().unwrap();
        let again = loader.load(&token).await.unwrap().unwrap();
        assert!(
            again.verify_csrf(&first).await.unwrap(),
            "stored with the session"
        );
        for forged in [
            "",
            &first[..42],
            &format!("{first}x"),
            &first.to_uppercase(),
        ] {
            assert!(!again.verify_csrf(forged).await.unwrap(), "{forged:?}");
        }
        again.renew_token().await.unwrap();
        assert!(
            !again.verify_csrf(&first).await.unwrap(),
            "a renew drops it"
        );
        let second = again.csrf_token().await.unwrap();
        assert_ne!(second, first);
    }
}
