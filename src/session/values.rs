//! Reading and writing a session's values: [`Session::get`], [`insert`](Session::insert),
//! [`remove`](Session::remove), [`clear`](Session::clear) and their kin.

use serde::{Serialize, de::DeserializeOwned};

use super::{Session, Status};
use crate::Error;

impl Session {
    /// The value under `key`, deserialized as `T`; `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the stored value does not deserialize as `T` (the request goes on:
    /// the error is the handler's to answer). Also
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
    /// session.insert("user_id", 42_u64);
    /// assert_eq!(session.get::<u64>("user_id").await?, Some(42));
    /// assert_eq!(session.get::<u64>("cart").await?, None);
    /// assert!(session.get::<String>("user_id").await.is_err()); // 42 is not a string
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.view(|v| v.get(key).map(serde_json::from_str).transpose())
            .await?
            .map_err(|e| Error::value(key, e))
    }

    /// Stores `value` under `key`. Infallible to call: a value that cannot be stored (it does not
    /// serialize to JSON, [`Error::Value`], or the key or the session would be too large,
    /// [`Error::TooLarge`]) fails the request instead: it is answered with the layer's error
    /// response and nothing is committed. Use [`try_insert`](Self::try_insert) to handle those
    /// errors yourself.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// session.insert("user_id", 42_u64);
    /// session.insert("cart", vec!["apple", "pear"]);
    /// assert_eq!(session.get::<Vec<String>>("cart").await?.unwrap().len(), 2);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub fn insert(&self, key: impl Into<String>, value: impl Serialize) {
        let key = key.into();
        if let Err(e) = self.try_insert(&key, value) {
            self.state().failure.get_or_insert(e);
        }
    }

    /// Stores `value` under `key`, or returns why it cannot; the session is then unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when `value` does not serialize to JSON; [`Error::TooLarge`] when `key` is
    /// longer than the layer's `max_key_bytes`, or the key and value alone are larger than its
    /// `max_session_bytes` (a session that grows past the limit with many values is refused at
    /// commit, with the error response).
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// session.try_insert("user_id", 42_u64)?;
    /// let too_long = "k".repeat(2048); // the default max_key_bytes is 1024
    /// assert!(matches!(session.try_insert(too_long, 1), Err(tower_scs::Error::TooLarge(_))));
    /// assert_eq!(session.keys().await?, ["user_id"]);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub fn try_insert(&self, key: impl Into<String>, value: impl Serialize) -> Result<(), Error> {
        let key = key.into();
        let config = &self.0.shared.config;
        if let Some(limit) = config.max_key_bytes.filter(|&max| key.len() as u64 > max) {
            return Err(Error::TooLarge(format!(
                "a key of {} bytes, limit {limit}",
                key.len()
            )));
        }
        let json = serde_json::to_string(&value).map_err(|e| Error::value(&key, e))?;
        if let Some(max) = config.max_session_bytes {
            let size = (key.len() + json.len()) as u64;
            if size > max {
                return Err(Error::TooLarge(format!("{size} bytes, limit {max}")));
            }
        }
        let mut state = self.state();
        state.removed.remove(&key);
        state.set.insert(key, json);
        state.status = Status::Modified;
        Ok(())
    }

    /// Removes `key`. A no-op when the key is known to be absent; otherwise the removal is
    /// committed without loading the session first.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// session.insert("cart", vec!["apple"]);
    /// session.remove("cart");
    /// assert!(!session.contains("cart").await?);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub fn remove(&self, key: &str) {
        let mut state = self.state();
        let pending = state.set.remove(key).is_some() | state.merged.remove(key).is_some();
        if !pending && self.known_absent(&state, key) {
            return;
        }
        if let Some(carried) = state.carried.as_mut() {
            carried.values.remove(key);
        } else if !state.fresh {
            state.removed.insert(key.to_owned());
        }
        state.status = Status::Modified;
    }

    /// Removes every value, keeping the token and the deadline (SCS `Clear`).
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// session.insert("a", 1);
    /// session.insert("b", 2);
    /// session.clear();
    /// assert!(session.keys().await?.is_empty());
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub fn clear(&self) {
        let mut state = self.state();
        let had_pending = !state.set.is_empty() || !state.merged.is_empty();
        state.set.clear();
        state.merged.clear();
        state.removed.clear();
        if let Some(carried) = state.carried.as_mut() {
            if carried.values.is_empty() && !had_pending {
                return;
            }
            carried.values.clear();
            state.status = Status::Modified;
            return;
        }
        let generation = self.generation(&state.generation);
        let record = generation.record.get();
        let nothing_stored = !state.committing
            && (state.fresh
                || state.cleared
                || generation.token.is_none()
                || matches!(record, Some(None))
                || matches!(record, Some(Some(r)) if r.values.is_empty()));
        if nothing_stored && !had_pending {
            return;
        }
        if !state.fresh {
            state.cleared = true;
        }
        state.status = Status::Modified;
    }

    /// The keys of the session, sorted.
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
    /// session.insert("b", 2);
    /// session.insert("a", 1);
    /// assert_eq!(session.keys().await?, ["a", "b"]);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        self.view(|v| v.keys()).await
    }

    /// Whether the session holds a value under `key`.
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
    /// assert!(!session.contains("user_id").await?);
    /// session.insert("user_id", 42);
    /// assert!(session.contains("user_id").await?);
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn contains(&self, key: &str) -> Result<bool, Error> {
        self.view(|v| v.get(key).is_some()).await
    }
}
