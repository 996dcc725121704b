//! Renew, merge and pop: the operations that move data between store records, each handed over
//! atomically so that nothing destroyed comes back and nothing popped is popped twice.

use serde::de::DeserializeOwned;

use super::{CSRF_KEY, Carried, Session, State, Status, View};
use crate::{Error, store::Record, token, wire};

/// Where a popped value comes from.
enum Pop {
    /// The request's own pending value, or certainly none.
    Done(Option<String>),
    /// The store record of this id.
    Take(String),
    /// A commit is in flight: ask again once it is done.
    Wait,
}

impl Session {
    /// Removes `key` and returns its value, deserialized as `T`: for one-time values (flash
    /// messages, one-time codes). A stored value is removed **in the store at once**, not at
    /// commit, atomically: of any number of concurrent requests popping one key, in any number
    /// of processes, exactly one gets the value.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when the value does not deserialize as `T`; it then stays where it is.
    /// [`Error::Store`] or [`Error::Timeout`] when removing it from the store fails, and
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
    /// session.insert("flash", "Saved!");
    /// assert_eq!(session.pop::<String>("flash").await?.as_deref(), Some("Saved!"));
    /// assert_eq!(session.pop::<String>("flash").await?, None); // gone after one read
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn pop<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let json = loop {
            // Read first, so that a value of the wrong type is reported and left in place.
            if self.get::<T>(key).await?.is_none() {
                return Ok(None);
            }
            match self.pop_pending(key) {
                Pop::Done(found) => break found,
                Pop::Take(id) => break self.take(id, key).await?,
                Pop::Wait => self.settled().await,
            }
        };
        json.map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| Error::value(key, e))
    }

    /// Pops `key` from what this request holds itself, or says where it must be taken from.
    fn pop_pending(&self, key: &str) -> Pop {
        let mut state = self.state();
        if state.committing {
            return Pop::Wait;
        }
        let fresh = state.fresh;
        let pending = state.set.remove(key).or_else(|| state.merged.remove(key));
        if let Some(json) = pending {
            // A value this request set: the stored one, if any, goes at commit.
            match state.carried.as_mut() {
                Some(carried) => drop(carried.values.remove(key)),
                None if !fresh => drop(state.removed.insert(key.to_owned())),
                None => {}
            }
            state.status = Status::Modified;
            return Pop::Done(Some(json));
        }
        if self.known_absent(&state, key) {
            return Pop::Done(None);
        }
        let id = match state.carried.as_mut() {
            // Carried by a renew: the renewed session still holds it until the commit.
            Some(carried) => match (carried.values.remove(key), &carried.from) {
                (Some(_), Some(from)) => from.clone(),
                _ => return Pop::Done(None),
            },
            None => match self.committed_id(&state) {
                Some(id) => id,
                None => return Pop::Done(None),
            },
        };
        Pop::Take(id)
    }

    /// Takes `key` from the store record `id`.
    async fn take(&self, id: String, key: &str) -> Result<Option<String>, Error> {
        let taken = self.0.shared.take(&id, key).await;
        let mut state = self.state();
        match taken {
            Ok(json) => {
                state.taken.insert(key.to_owned());
                if json.is_some() {
                    state.status = Status::Modified;
                }
                Ok(json)
            }
            Err(e) => {
                self.fail(&mut state, &e);
                Err(e)
            }
        }
    }

    /// Gives the session a new token, keeping its data (but for its
    /// [CSRF token](Session::csrf_token), which a new token replaces) and its remember-me flag
    /// (call [`remember_me`](Session::remember_me) at a login that asks otherwise), and resets
    /// its deadline to now + lifetime; the old token stops working when the response is sent. Call it after login or
    /// any privilege change, against session fixation.
    ///
    /// The old session is handed over to the new token at commit, atomically: if it is no
    /// longer live by then (destroyed, logged out everywhere, or renewed by a concurrent
    /// request), the new token does not carry its data or owner on; the request gets a fresh
    /// session holding only what it wrote itself (or none, if it wrote nothing). So of two
    /// concurrent renews of one session, exactly one carries the data on. A destroy of the old
    /// token that arrives just after the renew (within [`REPLACE_GRACE`](crate::store::REPLACE_GRACE))
    /// also ends the renewed session.
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
    /// session.insert("cart", vec!["apple"]);
    /// // A login: a new token for the same data, then the user it now belongs to.
    /// session.renew_token().await?;
    /// session.set_owner("user:42");
    /// assert_eq!(session.get::<Vec<String>>("cart").await?, Some(vec!["apple".to_owned()]));
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn renew_token(&self) -> Result<(), Error> {
        self.with_base(|state, base| self.renew(state, base)).await
    }

    fn renew(&self, state: &mut State, base: Option<&Record>) {
        let view = View { state, base };
        let mut values = view.underneath();
        // A new token gets a new CSRF token.
        values.remove(CSRF_KEY);
        state.set.remove(CSRF_KEY);
        state.merged.remove(CSRF_KEY);
        let (remember, owner) = match &state.carried {
            Some(c) => (c.remember, c.owner.clone()),
            None => base
                .filter(|_| !state.fresh)
                .map_or((false, None), |r| (r.remember, r.owner.clone())),
        };
        let from = match &state.carried {
            Some(c) => c.from.clone(),
            None => self.committed_id(state),
        };
        let bytes = match (&state.carried, base) {
            (Some(c), _) => c.bytes,
            (None, Some(r)) if !state.fresh => r
                .values
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>() as u64,
            _ => 0,
        };
        state.carried = Some(Carried {
            from,
            values,
            remember,
            owner,
            bytes,
        });
        state.fresh = true;
        state.removed.clear();
        state.cleared = false;
        state.deadline = None;
        state.new_token = Some(token::generate());
        state.status = Status::Modified;
    }

    /// Merges the session of `token` into this one (SCS `MergeSession`): its values win over
    /// this session's, the later deadline wins, and it is handed over to this session at commit,
    /// atomically: if it is no longer live by then (destroyed meanwhile), its values are not
    /// stored. A token that is malformed, unknown, or this session's own is ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Store`], [`Error::Timeout`] or [`Error::Malformed`] when loading either session
    /// fails; the request is then answered with the layer's error response.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// // E.g. the anonymous session a client held before it signed in, sent in a form field.
    /// let anonymous = "b3fDrH4NjZ2SLRn2ZpSm0XYbmyxnEp8o4SHKvXp1HRw"; // unknown here: ignored
    /// session.merge(anonymous).await?;
    /// assert!(session.keys().await?.is_empty());
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn merge(&self, token: &str) -> Result<(), Error> {
        let Some(other) = wire::accept(&self.0.shared.config, token) else {
            return Ok(());
        };
        let token = other.token();
        let own = self.state().generation.clone();
        let own = self.generation(&own).token.as_ref();
        if own.is_some_and(|own| own.token() == token) {
            return Ok(());
        }
        let other = match self.0.shared.load(token).await {
            Ok(Some(other)) => other,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.fail(&mut self.state(), &e);
                return Err(e);
            }
        };
        let own_deadline = self.deadline().await?;
        let mut state = self.state();
        for (key, json) in other.values {
            state.removed.remove(&key);
            state.set.remove(&key);
            state.merged.insert(key, json);
        }
        state.deadline = Some(own_deadline.max(other.deadline));
        let id = self.0.shared.store_id(token).into_owned();
        state.merged_ids.push(id);
        state.status = Status::Modified;
        Ok(())
    }
}
