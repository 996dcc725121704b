//! A session's life beside its values: its end ([`Session::destroy`],
//! [`destroy_owner`](Session::destroy_owner)), its owner, deadline, remember-me flag, status
//! and token.

use std::time::SystemTime;

use super::{EventKind, Session, State, Status};
use crate::{Error, store::later, wire::WireToken};

impl Session {
    /// Destroys the session: it is deleted from the store when the response is sent, the client
    /// gets an expiring cookie, and values are emptied. Writing after `destroy` starts a new
    /// session with a new token.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// session.insert("user_id", 42);
    /// session.destroy();
    /// assert_eq!(session.status(), tower_scs::Status::Destroyed);
    /// assert!(session.keys().await?.is_empty());
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub fn destroy(&self) {
        let mut state = self.state();
        let mut delete = std::mem::take(&mut state.delete);
        delete.extend(self.committed_id(&state));
        delete.extend(state.carried.take().and_then(|c| c.from));
        delete.append(&mut state.merged_ids);
        *state = State {
            status: Status::Destroyed,
            fresh: true,
            delete,
            failure: state.failure.take(),
            ..State::default()
        };
    }

    /// Sets the remember-me flag, stored with the session: when on, the cookie persists (has
    /// `Max-Age`/`Expires`) even if the layer's `persist` setting is off.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// // After a login form with a "remember me" box ticked:
    /// session.remember_me(true);
    /// assert_eq!(session.status(), tower_scs::Status::Modified);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub fn remember_me(&self, on: bool) {
        let mut state = self.state();
        state.remember = Some(on);
        state.status = Status::Modified;
    }

    /// Ties the session to `owner` (e.g. a user id, after login), so that
    /// [`destroy_owner`](Self::destroy_owner) can log that owner out everywhere.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// session.renew_token().await?; // a login: new token against session fixation
    /// session.set_owner("user:42");
    /// assert_eq!(session.owner().await?.as_deref(), Some("user:42"));
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub fn set_owner(&self, owner: impl Into<String>) {
        let mut state = self.state();
        state.owner = Some(owner.into());
        state.status = Status::Modified;
    }

    /// The owner the session is tied to, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Store`], [`Error::Timeout`] or [`Error::Malformed`] when loading the session (on the
    /// request's first read) fails; the request is then answered with the layer's error response,
    /// whatever the handler returns.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// assert_eq!(session.owner().await?, None);
    /// session.set_owner("user:42");
    /// assert_eq!(session.owner().await?.as_deref(), Some("user:42"));
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn owner(&self) -> Result<Option<String>, Error> {
        self.view(|v| v.owner()).await
    }

    /// Logs `owner` out everywhere: deletes every session tied to it, at once (not at commit),
    /// and destroys this session too if it belongs to `owner`. Returns how many sessions were
    /// deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when the store keeps no owner index (both stores of this crate do);
    /// [`Error::Store`] or [`Error::Timeout`] when the store fails, and the load errors of
    /// [`owner`](Self::owner). The request is then answered with the layer's error response.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// session.set_owner("user:42");
    /// // "Log out everywhere": every stored session of user:42, then this one at commit.
    /// session.destroy_owner("user:42").await?;
    /// assert_eq!(session.status(), tower_scs::Status::Destroyed);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn destroy_owner(&self, owner: &str) -> Result<u64, Error> {
        let own = self.owner().await?;
        let deleted = match self.0.shared.delete_owner(owner).await {
            Ok(n) => n,
            Err(e) => {
                self.state().failure.get_or_insert_with(|| e.clone());
                return Err(e);
            }
        };
        self.0.shared.emit(EventKind::Revoked, None, Some(owner));
        if own.as_deref() == Some(owner) {
            self.destroy();
        }
        Ok(deleted)
    }

    /// The absolute deadline of the session (fixed at creation, reset by renew).
    ///
    /// # Errors
    ///
    /// [`Error::Store`], [`Error::Timeout`] or [`Error::Malformed`] when loading the session (on the
    /// request's first read) fails; the request is then answered with the layer's error response,
    /// whatever the handler returns.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// use std::time::{Duration, SystemTime};
    ///
    /// let deadline = session.deadline().await?; // a new session: now + the layer's lifetime
    /// assert!(deadline > SystemTime::now() + Duration::from_secs(23 * 3600));
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn deadline(&self) -> Result<SystemTime, Error> {
        let new_deadline = later(SystemTime::now(), self.0.shared.config.lifetime);
        self.view(|v| {
            v.state
                .deadline
                .or(v.base.map(|r| r.deadline))
                .unwrap_or(new_deadline)
        })
        .await
    }

    /// Sets the absolute deadline of the session. A deadline in the past deletes it at commit
    /// (one before 1970 counts as 1970; one after year 9999 as the end of 9999).
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// use std::time::{Duration, SystemTime};
    ///
    /// let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    /// session.set_deadline(in_an_hour);
    /// assert_eq!(session.deadline().await?, in_an_hour);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub fn set_deadline(&self, deadline: SystemTime) {
        let mut state = self.state();
        state.deadline = Some(deadline.clamp(std::time::UNIX_EPOCH, crate::store::latest()));
        state.status = Status::Modified;
    }

    /// Whether, and how, this request changed the session.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// use tower_scs::Status;
    ///
    /// assert_eq!(session.status(), Status::Unmodified);
    /// session.insert("a", 1);
    /// assert_eq!(session.status(), Status::Modified);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub fn status(&self) -> Status {
        self.state().status
    }

    /// The session's token, once it has one: `None` for a new session until its first commit
    /// (as in SCS), and after `destroy`. Handle it as a secret.
    ///
    /// # Errors
    ///
    /// [`Error::Store`], [`Error::Timeout`] or [`Error::Malformed`] when loading the session (on the
    /// request's first read) fails; the request is then answered with the layer's error response,
    /// whatever the handler returns.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// session.insert("a", 1);
    /// assert_eq!(session.token().await?, None); // a new session gets its token at commit
    /// session.renew_token().await?;
    /// assert!(session.token().await?.is_some()); // a renewed one already has its new token
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn token(&self) -> Result<Option<String>, Error> {
        let config = &self.0.shared.config;
        self.with_base(|state, base| {
            if let Some(t) = &state.new_token {
                return Some(WireToken::new(config, t.clone()).value(config));
            }
            match (base, &self.generation(&state.generation).token) {
                (Some(_), Some(t)) => Some(t.value(config)),
                _ => None,
            }
        })
        .await
    }
}
