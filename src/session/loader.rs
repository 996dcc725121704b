//! [`SessionLoader`]: sessions by token, outside any request (SCS `Load`).

use std::{fmt, sync::Arc};

use super::Session;
use crate::{Error, shared::Shared, wire};

/// Loads sessions by token outside any request: in a background job, a WebSocket task, an admin
/// tool. Get one from [`SessionLayer::loader`](crate::SessionLayer::loader); it is cheap to
/// clone.
///
/// A loaded session has the whole [`Session`] API, with the layer's settings, limits and store
/// timeout. No layer commits it: what it changes is stored by [`Session::commit`], and only by
/// it.
///
/// ```
/// use tower_scs::{MemoryStore, SessionLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_scs::Error> {
/// let layer = SessionLayer::new(MemoryStore::new());
/// let loader = layer.loader();
///
/// let session = loader.create();
/// session.insert("job", "queued");
/// let token = session.commit().await?.expect("stored");
///
/// // Later, elsewhere: the same session by its token.
/// let again = loader.load(&token).await?.expect("live");
/// assert_eq!(again.get::<String>("job").await?.as_deref(), Some("queued"));
/// assert!(loader.load("not a token").await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionLoader {
    shared: Arc<Shared>,
}

impl SessionLoader {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        SessionLoader { shared }
    }

    /// The live session of `token` (as it travels on the wire: signed, when the layer signs),
    /// loaded now; `None` when `token` is malformed or its signature does not verify (with no
    /// store call), or when there is no such live session.
    ///
    /// # Errors
    ///
    /// [`Error::Store`], [`Error::Timeout`] or [`Error::Malformed`] when the load fails.
    pub async fn load(&self, token: &str) -> Result<Option<Session>, Error> {
        let Some(token) = wire::accept(&self.shared.config, token) else {
            return Ok(None);
        };
        let session = self.session(Some(token));
        let live = session.with_base(|_, record| record.is_some()).await?;
        Ok(live.then_some(session))
    }

    /// A new, empty session, which gets its token at its first [`Session::commit`].
    #[must_use]
    pub fn create(&self) -> Session {
        self.session(None)
    }

    fn session(&self, token: Option<wire::WireToken>) -> Session {
        let session = Session::new(self.shared.clone(), token, None);
        session.state().answered = true;
        session
    }
}

impl fmt::Debug for SessionLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLoader").finish_non_exhaustive()
    }
}
