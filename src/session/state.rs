//! What a request did to its session ([`State`]), the session as the request sees it
//! ([`View`]), and what the layer must store once the handler has returned ([`Plan`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use super::{Current, Session, Status};
use crate::{
    Error,
    store::{Change, Mode, Record, later},
    token,
    wire::TokenOut,
};

/// What the request did to its session so far.
#[derive(Default)]
pub(super) struct State {
    /// The token and record the pending changes apply to.
    pub(super) generation: Current,
    /// A commit is storing what was pending: reads wait for it, writes are pending for the
    /// next commit.
    pub(super) committing: bool,
    /// Someone waits for the commit in flight to end.
    pub(super) waiting: bool,
    /// The layer has committed at the end of the request: the response has left (or the
    /// session never had one, from a [`SessionLoader`](crate::SessionLoader)).
    pub(super) answered: bool,
    /// What an explicit commit changed about the token that no response has said yet.
    pub(super) unsent: Option<TokenOut>,
    pub(super) status: Status,
    /// The stored record must not be used: destroyed, or renewed (its data is in `carried`).
    pub(super) fresh: bool,
    /// The token a new record gets (set by `renew_token`; otherwise generated at commit).
    pub(super) new_token: Option<String>,
    /// Values this request set itself.
    pub(super) set: BTreeMap<String, String>,
    pub(super) removed: BTreeSet<String>,
    pub(super) cleared: bool,
    /// Keys popped from the store by this request: already gone there.
    pub(super) taken: BTreeSet<String>,
    pub(super) deadline: Option<SystemTime>,
    pub(super) remember: Option<bool>,
    pub(super) owner: Option<String>,
    /// The client recorded by `set_client`, for the device list.
    pub(super) user_agent: Option<String>,
    pub(super) ip: Option<String>,
    /// After a renew: the renewed session's data, carried into the new record.
    pub(super) carried: Option<Carried>,
    /// Values pulled in by merges (they win over the stored ones), and the merged sessions'
    /// store ids, handed over to this session at commit.
    pub(super) merged: BTreeMap<String, String>,
    pub(super) merged_ids: Vec<String>,
    /// Store ids to delete at commit (destroyed sessions).
    pub(super) delete: Vec<String>,
    /// An error to answer with instead of the handler's response.
    pub(super) failure: Option<Error>,
}

/// The data a renew carries from the renewed session into the new record.
pub(super) struct Carried {
    /// The store id of the renewed session, handed over (replaced) at commit; `None` when the
    /// renewed session was itself new.
    pub(super) from: Option<String>,
    pub(super) values: BTreeMap<String, String>,
    pub(super) remember: bool,
    pub(super) owner: Option<String>,
    /// The size of the renewed session's values, for the size limit.
    pub(super) bytes: u64,
}

/// The session as the request sees it: its own writes, over merged values, over the stored
/// record (or, after a renew, the carried data).
pub(super) struct View<'a> {
    pub(super) state: &'a State,
    pub(super) base: Option<&'a Record>,
}

impl View<'_> {
    /// The values under the request's own writes and merges.
    fn below(&self) -> Option<&BTreeMap<String, String>> {
        self.state.carried.as_ref().map(|c| &c.values)
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        let s = self.state;
        if let Some(v) = s.set.get(key).or_else(|| s.merged.get(key)) {
            return Some(v);
        }
        if s.fresh {
            return self.below()?.get(key).map(String::as_str);
        }
        if s.cleared || s.removed.contains(key) || s.taken.contains(key) {
            return None;
        }
        self.base?.values.get(key).map(String::as_str)
    }

    pub(super) fn owner(&self) -> Option<String> {
        let carried = self.state.carried.as_ref().and_then(|c| c.owner.clone());
        let stored = || self.base.filter(|_| !self.state.fresh)?.owner.clone();
        self.state.owner.clone().or(carried).or_else(stored)
    }

    /// The keys and values beneath the request's own writes and merges.
    pub(super) fn underneath(&self) -> BTreeMap<String, String> {
        let s = self.state;
        if s.fresh {
            return self.below().cloned().unwrap_or_default();
        }
        let Some(base) = self.base.filter(|_| !s.cleared) else {
            return BTreeMap::new();
        };
        base.values
            .iter()
            .filter(|(k, _)| !s.removed.contains(*k) && !s.taken.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(super) fn keys(&self) -> Vec<String> {
        let mut keys: BTreeSet<String> = self.underneath().into_keys().collect();
        keys.extend(self.state.set.keys().cloned());
        keys.extend(self.state.merged.keys().cloned());
        keys.into_iter().collect()
    }
}

/// What the layer must do with the session once the handler has returned.
pub(crate) enum Plan {
    /// Nothing to store, no cookie to send.
    Nothing,
    /// A store call or a value failed during the request: answer with the error response.
    Failed(Error),
    /// Delete these store ids and send an expiring cookie.
    Destroy { delete: Vec<String> },
    /// Nothing to store, but the token came in a form the settings no longer make (an older
    /// signing key): send it again in the current form, if the session is live.
    Resend,
    /// Write the session of `token`.
    Write(Box<Write>),
}

/// A write, in the order the layer runs it: delete `delete`; hand each of `merged_ids` over to
/// the target (dropping the merged values if one is no longer live); commit; then hand
/// `renewed_from` over to the new record, which is deleted again if that session is no longer
/// live. When the target turns out gone, or the hand-over fails, what the request wrote itself
/// ([`Write::own`]) goes into a new session with a new token.
pub(crate) struct Write {
    /// Whether the write may start a session under a new token the client has not seen: in a
    /// request (the response carries it), after a renew, or for a session that never had one.
    /// Otherwise, once the response has left, a session whose token ended stays ended.
    pub(crate) may_start: bool,
    pub(crate) delete: Vec<String>,
    pub(crate) token: String,
    pub(crate) merged_ids: Vec<String>,
    pub(crate) renewed_from: Option<String>,
    pub(crate) change: Change,
    /// The merged values' keys, dropped from `change.set` when a merged session has gone.
    merged_keys: Vec<String>,
    /// Keys of `change.set` that a renew carried or a merge pulled in, and the request did not
    /// write itself (empty for a plain write: no allocation on the common path).
    foreign: BTreeSet<String>,
    /// What the request set itself beside values, for [`Write::own`].
    own_deadline: Option<SystemTime>,
    own_remember: Option<bool>,
    own_owner: bool,
    new_deadline: SystemTime,
    max_bytes: Option<u64>,
}

impl Write {
    /// Drops the merged values from the change (a merged session is no longer live), keeping
    /// the request's own writes of the same keys.
    pub(crate) fn drop_merged(&mut self) {
        let (merged, foreign) = (&self.merged_keys, &self.foreign);
        self.change
            .set
            .retain(|(k, _)| !merged.contains(k) || !foreign.contains(k));
    }

    /// What the request wrote itself, as a new session: `None` when it wrote nothing.
    pub(crate) fn own(&self) -> Option<Change> {
        let set: Vec<(String, String)> = (self.change.set.iter())
            .filter(|(k, _)| !self.foreign.contains(k))
            .cloned()
            .collect();
        let wrote = !set.is_empty()
            || self.own_deadline.is_some()
            || self.own_remember.is_some()
            || self.own_owner;
        let deadline = self.own_deadline.unwrap_or(self.new_deadline);
        wrote.then(|| Change {
            set,
            remember: self.own_remember,
            owner: self.change.owner.clone().filter(|_| self.own_owner),
            user_agent: self.change.user_agent.clone(),
            ip: self.change.ip.clone(),
            max_bytes: self.max_bytes,
            idle_ttl: self.change.idle_ttl,
            ..Change::create(self.change.now, deadline)
        })
    }
}

/// The settings a plan depends on.
pub(super) struct Settings {
    pub(super) now: SystemTime,
    pub(super) new_deadline: SystemTime,
    pub(super) idle_ttl: Option<Duration>,
    pub(super) max_bytes: Option<u64>,
}

impl State {
    /// The write of a modified session: `token` is the target, `create` whether it is new.
    pub(super) fn write(&mut self, token: String, create: bool, s: &Settings) -> Write {
        let mut carried = self.carried.take();
        let merged = std::mem::take(&mut self.merged);
        let own_set = std::mem::take(&mut self.set);
        let merged_keys: Vec<String> = merged.keys().cloned().collect();
        let mut values = carried
            .as_mut()
            .map(|c| std::mem::take(&mut c.values))
            .unwrap_or_default();
        values.extend(merged);
        let foreign = values
            .keys()
            .filter(|k| !own_set.contains_key(*k))
            .cloned()
            .collect();
        values.extend(own_set);
        // A renew may carry a session the limit was lowered below: it may stay that large.
        let carried_bytes = carried.as_ref().map_or(0, |c| c.bytes);
        let own_owner = self.owner.is_some();
        let mode = match create {
            true => Mode::Create {
                deadline: self.deadline.unwrap_or(s.new_deadline),
            },
            false => Mode::Update {
                deadline: self.deadline,
            },
        };
        let change = Change {
            mode,
            cleared: self.cleared && !create,
            removed: if create {
                Vec::new()
            } else {
                std::mem::take(&mut self.removed).into_iter().collect()
            },
            set: values.into_iter().collect(),
            remember: self.remember.or(carried.as_ref().map(|c| c.remember)),
            owner: self.owner.take().or_else(|| carried.as_mut()?.owner.take()),
            user_agent: self.user_agent.take(),
            ip: self.ip.take(),
            max_bytes: s.max_bytes.map(|m| m.max(carried_bytes)),
            now: s.now,
            idle_ttl: s.idle_ttl,
        };
        Write {
            may_start: true,
            delete: std::mem::take(&mut self.delete),
            token,
            merged_ids: std::mem::take(&mut self.merged_ids),
            renewed_from: carried.and_then(|c| c.from),
            change,
            merged_keys,
            foreign,
            own_deadline: self.deadline,
            own_remember: self.remember,
            own_owner,
            new_deadline: s.new_deadline,
            max_bytes: s.max_bytes,
        }
    }
}

impl Session {
    /// Decides what the layer must store for this request. `now` is the commit time.
    #[cfg(test)]
    pub(crate) fn plan(&self, now: SystemTime) -> Plan {
        self.plan_in(&mut self.state(), now)
    }

    /// Decides what must be stored of `state`, taking the pending changes out of it.
    pub(super) fn plan_in(&self, state: &mut State, now: SystemTime) -> Plan {
        let config = &self.0.shared.config;
        let settings = Settings {
            now,
            new_deadline: later(now, config.lifetime),
            idle_ttl: config.idle_timeout.map(|idle| idle + idle / 10),
            max_bytes: config.max_session_bytes,
        };
        if let Some(e) = state.failure.take() {
            return Plan::Failed(e);
        }
        match state.status {
            Status::Destroyed => Plan::Destroy {
                delete: std::mem::take(&mut state.delete),
            },
            Status::Unmodified => match self.touch(state, &settings) {
                Plan::Nothing if self.resend_due(state) => Plan::Resend,
                plan => plan,
            },
            Status::Modified => self.modified(state, &settings),
        }
    }

    /// Whether the token came in a form the settings no longer make, and may be live.
    fn resend_due(&self, state: &State) -> bool {
        let token = self.generation(&state.generation).token.as_ref();
        !state.fresh && token.is_some_and(|t| !t.is_current())
    }

    /// The touch of a session this request only read. The idle-timeout touch is due once the
    /// remaining time has dropped below the idle timeout; its new expiry carries 10% slack, so a
    /// busy session is touched at most once per tenth of the idle timeout. A session tied to an
    /// owner is also touched once its "last seen" is older than the layer's
    /// `last_seen_interval`, so that its device list stays that fresh.
    fn touch(&self, state: &mut State, settings: &Settings) -> Plan {
        let config = &self.0.shared.config;
        let current = state.generation.clone();
        let generation = self.generation(&current);
        let (Some(token), Some(Some(record))) = (&generation.token, generation.record.get()) else {
            return Plan::Nothing;
        };
        let now = settings.now;
        // Once the expiry has reached the deadline, a touch cannot extend it.
        let idle_due = config.idle_timeout.is_some_and(|idle| {
            record.expiry < later(now, idle) && record.expiry < record.deadline
        });
        let seen_due = record.owner.is_some()
            && record
                .seen
                .is_none_or(|seen| later(seen, config.last_seen_interval) <= now);
        if state.fresh || !(idle_due || seen_due) {
            return Plan::Nothing;
        }
        let mut write = state.write(token.token().to_owned(), false, settings);
        write.change = Change::update(now).with_idle_ttl(settings.idle_ttl);
        Plan::Write(Box::new(write))
    }

    /// The write of a modified session: an update of the stored record, or a create under a
    /// new token when there is none (new, destroyed, renewed, or gone from the store).
    fn modified(&self, state: &mut State, settings: &Settings) -> Plan {
        let current = state.generation.clone();
        let generation = self.generation(&current);
        let gone = matches!(generation.record.get(), Some(None));
        let create = state.fresh || generation.token.is_none() || gone;
        let renewed = state.new_token.is_some();
        let token = match (&generation.token, create) {
            (Some(t), false) => t.token().to_owned(),
            _ => state.new_token.take().unwrap_or_else(token::generate),
        };
        let mut write = state.write(token, create, settings);
        let had_token = generation.token.is_some() || generation.ended;
        write.may_start = !state.answered || renewed || !had_token;
        Plan::Write(Box::new(write))
    }
}
