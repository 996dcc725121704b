//! Storing a session: [`Session::commit`] by hand, and the layer's commit at the end of the
//! request, which is the same commit followed by the token on the response. Either takes the
//! plan of what is pending ([`Session::begin`]), runs it against the store, and puts the
//! session's new generation (its token from then on) in place.

use std::{
    sync::{Arc, PoisonError},
    time::SystemTime,
};

use super::{Current, EventKind, Generation, Inner, Plan, Session, State, Status, Write};
use crate::{
    Error, observe,
    shared::Shared,
    store::{Committed, Mode},
    token,
    wire::{TokenOut, WireToken},
};

/// What [`Session::begin`] found.
pub(crate) enum Begun {
    /// Nothing to store; for the layer, what an explicit commit left to tell the client.
    Nothing(Option<TokenOut>),
    /// This plan, taken from the session, which is committing until it is run.
    Plan(Plan, Current),
    /// Another clone of the session is committing: wait for it, then begin again.
    Busy,
}

impl Session {
    /// Stores what is pending **now**, rather than when the layer commits at the end of the
    /// request (SCS `Commit`), and returns the token the client must use from then on, as it
    /// goes on the wire (signed when signing is on): `None` when the session was destroyed or
    /// has ended, or holds nothing and never did. The layer's own commit then stores only what
    /// is still pending, and the response still carries the token.
    ///
    /// **After the response has left the layer** (a WebSocket, a stream, a spawned task, or a
    /// session from a [`SessionLoader`](crate::SessionLoader)), this is the only way a change is
    /// stored: changes without a commit are lost (with a warning in the log when the last clone
    /// of the session is dropped). Such a session can read, write, renew and destroy as in a
    /// request, but nothing reaches the client but what the application sends it itself:
    ///
    /// - it keeps the token it came with; a renew or a destroy ends that token, and the client
    ///   learns of it only at its next request (where it has no session), unless the
    ///   application sends it the token `commit` returns;
    /// - once its token has ended (destroyed here or elsewhere, renewed by another request, or
    ///   expired), the session stays ended: what it writes is not stored and `commit` returns
    ///   `None`, where a request would have started a fresh session under a new token that this
    ///   client could never learn;
    /// - a session that never had a token (the request carried none, or
    ///   [`SessionLoader::create`](crate::SessionLoader::create)) gets one at its first commit,
    ///   which the client learns of only if the application sends it.
    ///
    /// A read on another clone of the session while the commit runs waits for it; a write is
    /// pending for the next commit.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] or [`Error::Timeout`] when the store fails; what was pending may or may
    /// not be stored then, and the session is read again from the store on next use.
    /// [`Error::TooLarge`] or [`Error::Value`] for a write recorded by `insert` that could not
    /// be stored. In a request, the layer then answers with its error response.
    ///
    /// ```
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_scs::{MemoryStore, Session, SessionLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let handler = service_fn(|req: http::Request<()>| async move {
    /// # let session = req.extensions().get::<Session>().cloned().unwrap();
    /// session.insert("step", 1);
    /// let token = session.commit().await?; // stored now: a new session gets its token
    /// assert!(token.is_some());
    /// tokio::spawn(async move {
    ///     session.insert("step", 2);
    ///     session.commit().await // after the response: only a commit stores it
    /// }).await.unwrap()?;
    /// # Ok::<_, tower_scs::Error>(http::Response::new(()))
    /// # });
    /// # let layer = SessionLayer::new(MemoryStore::new());
    /// # layer.layer(handler).oneshot(http::Request::new(())).await.unwrap();
    /// # }
    /// ```
    pub async fn commit(&self) -> Result<Option<String>, Error> {
        loop {
            match self.begin(SystemTime::now(), false) {
                Begun::Busy => self.settled().await,
                Begun::Nothing(_) => return self.token().await,
                Begun::Plan(plan, generation) => {
                    return match self.run(plan, generation, false).await? {
                        Some(TokenOut::Set { token, .. }) => Ok(Some(token)),
                        _ => Ok(None),
                    };
                }
            }
        }
    }

    /// Whether the layer has anything to do after the handler: false for a request that never
    /// touched its session (no store call, no token sent), which then counts as answered.
    pub(crate) fn needs_commit(&self) -> bool {
        let mut state = self.state();
        let generation = self.generation(&state.generation);
        let needed = state.status != Status::Unmodified
            || state.failure.is_some()
            || state.unsent.is_some()
            || state.committing
            || generation.record.initialized()
            || generation.token.as_ref().is_some_and(|t| !t.is_current());
        state.answered |= !needed;
        needed
    }

    /// Takes the plan of what is pending; `by_layer` for the layer's commit at the end of the
    /// request, after which the session counts as answered.
    pub(crate) fn begin(&self, now: SystemTime, by_layer: bool) -> Begun {
        let mut state = self.state();
        if state.committing {
            return Begun::Busy;
        }
        let plan = self.plan_in(&mut state, now);
        state.answered |= by_layer;
        if matches!(plan, Plan::Nothing) {
            return Begun::Nothing(state.unsent.take().filter(|_| by_layer));
        }
        let current = state.generation.clone();
        // What is written from here on is pending over what this commit stores.
        *state = State {
            generation: current.clone(),
            committing: true,
            answered: state.answered,
            ..State::default()
        };
        Begun::Plan(plan, current)
    }

    /// The layer's commit: runs what [`Session::begin`] found, waiting for a commit in flight.
    pub(crate) async fn settle(
        &self,
        mut begun: Begun,
        now: SystemTime,
    ) -> Result<Option<TokenOut>, Error> {
        loop {
            match begun {
                Begun::Nothing(out) => return Ok(out),
                Begun::Plan(plan, generation) => return self.run(plan, generation, true).await,
                Begun::Busy => {
                    self.settled().await;
                    begun = self.begin(now, true);
                }
            }
        }
    }

    /// Runs a plan taken from `generation`, then puts the new generation in place and wakes
    /// whoever waited.
    async fn run(
        &self,
        plan: Plan,
        current: Current,
        by_layer: bool,
    ) -> Result<Option<TokenOut>, Error> {
        let shared = &self.0.shared;
        let generation = self.generation(&current);
        let owner = self.owner_for_events(&plan, generation).await;
        let result = match plan {
            Plan::Resend => self.resend(generation).await,
            plan => {
                observe::commit(observe::op_of(&plan), store(shared, plan, owner.as_deref())).await
            }
        };
        let mut state = self.state();
        state.committing = false;
        // Nobody can use a generation after the layer's commit if no one else holds the session.
        let keep = !by_layer || Arc::strong_count(&self.0) > 1;
        let result = self.install(&mut state, result, generation, keep);
        if !by_layer && !state.answered {
            state.unsent = result.as_ref().ok().cloned().flatten();
        }
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            self.0.settled.notify_waiters();
        }
        result
    }

    /// The owner a destroy's event names: the loaded record's, or, when there is a hook and the
    /// request never read its session, the stored one's (a load, only then).
    async fn owner_for_events(&self, plan: &Plan, generation: &Generation) -> Option<String> {
        let shared = &self.0.shared;
        if shared.config.on_event.is_none() || !matches!(plan, Plan::Destroy { .. }) {
            return None;
        }
        if let Some(record) = generation.record.get() {
            return record.as_ref()?.owner.clone();
        }
        let token = generation.token.as_ref()?;
        shared.load(token.token()).await.ok().flatten()?.owner
    }

    /// The token `generation` came with, in the current wire form, while its session is live;
    /// once it is gone, a clear, so that the client stops sending a token that costs a load on
    /// every request.
    async fn resend(&self, generation: &Generation) -> Result<Option<TokenOut>, Error> {
        let Some(record) = self.load(generation).await? else {
            return Ok(Some(TokenOut::Clear));
        };
        let token = generation.token.as_ref().map(|t| t.token().to_owned());
        let committed = Committed {
            expiry: record.expiry,
            remember: record.remember,
        };
        Ok(token.map(|token| TokenOut::Set { token, committed }))
    }

    /// Puts in place the generation a commit made, and turns its bare token into the wire form.
    fn install(
        &self,
        state: &mut State,
        result: Result<Option<TokenOut>, Error>,
        generation: &Generation,
        keep: bool,
    ) -> Result<Option<TokenOut>, Error> {
        let config = &self.0.shared.config;
        let (next, result) = match result {
            Ok(Some(TokenOut::Set { token, committed })) => {
                let wire = match &generation.token {
                    Some(t) if t.is_current() && t.token() == token => t.clone(),
                    _ => WireToken::new(config, token),
                };
                if !keep {
                    let token = wire.into_value(config);
                    return Ok(Some(TokenOut::Set { token, committed }));
                }
                let token = wire.value(config);
                let out = Some(TokenOut::Set { token, committed });
                (Generation::new(Some(wire)), Ok(out))
            }
            Ok(other) => {
                let ended = Generation {
                    ended: true,
                    ..Generation::default()
                };
                (ended, Ok(other))
            }
            Err(e) => {
                self.fail(state, &e);
                (Generation::new(generation.token.clone()), Err(e))
            }
        };
        // A destroy while the commit ran ends what it stored too.
        if let (Status::Destroyed, Some(token)) = (state.status, &next.token) {
            let id = self.0.shared.store_id(token.token()).into_owned();
            state.delete.push(id);
        }
        state.generation = Current::later(next);
        result
    }
}

/// A session whose changes can no longer reach the store is worth a word in the log.
impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.answered && state.status != Status::Unmodified {
            tracing::warn!(
                "a session changed after its response had left was dropped without \
                 Session::commit: those changes are lost"
            );
        }
    }
}

/// Runs a session's plan against the store; returns what to send about the token (the bare
/// token, not yet in its wire form), if anything.
async fn store(
    shared: &Shared,
    plan: Plan,
    owner: Option<&str>,
) -> Result<Option<TokenOut>, Error> {
    match plan {
        Plan::Nothing | Plan::Resend => Ok(None),
        Plan::Failed(e) => Err(e),
        Plan::Destroy { delete } => {
            shared.delete(&delete).await?;
            for id in &delete {
                shared.emit(EventKind::Destroyed, Some(id), owner);
            }
            Ok(Some(TokenOut::Clear))
        }
        Plan::Write(w) => write(shared, *w).await,
    }
}

/// Runs a write (see [`Write`] for the order). Whatever a renew or merge hands over must
/// still be live when the new record is confirmed, or the new record does not survive.
async fn write(shared: &Shared, mut w: Write) -> Result<Option<TokenOut>, Error> {
    shared.delete(&w.delete).await?;
    if !w.may_start && matches!(w.change.mode, Mode::Create { .. }) {
        return Ok(None);
    }
    let target = shared.store_id(&w.token).into_owned();
    for merged in std::mem::take(&mut w.merged_ids) {
        if !shared.replace(&merged, &target).await? {
            w.drop_merged();
        }
    }
    let done = shared.commit(&w.token, &w.change).await?;
    let handed_over = match (&done, &w.renewed_from) {
        (Some(_), Some(from)) => shared.replace(from, &target).await?,
        _ => true,
    };
    match done {
        Some(committed) if handed_over => {
            let kind = match (&w.renewed_from, w.change.is_create()) {
                (Some(_), _) => Some(EventKind::Renewed),
                (None, true) => Some(EventKind::Created),
                (None, false) => None,
            };
            if let Some(kind) = kind {
                shared.emit(kind, Some(&target), w.change.owner.as_deref());
            }
            let token = w.token;
            return Ok(Some(TokenOut::Set { token, committed }));
        }
        // The renewed session was destroyed, or renewed by another request, meanwhile.
        Some(_) => shared.delete(std::slice::from_ref(&target)).await?,
        // The session expired or was destroyed meanwhile: never adopt or resurrect it.
        None => {}
    }
    // What this request wrote itself goes into a new session with a new token.
    let Some(own) = w.own().filter(|_| w.may_start) else {
        return Ok(None);
    };
    let token = token::generate();
    let committed = shared.commit(&token, &own).await?.ok_or_else(|| {
        Error::store(std::io::Error::other(
            "the store refused to create a session",
        ))
    })?;
    let id = shared.store_id(&token);
    shared.emit(EventKind::Created, Some(&id), own.owner.as_deref());
    Ok(Some(TokenOut::Set { token, committed }))
}

#[cfg(test)]
mod tests;
