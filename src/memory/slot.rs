//! What the cache holds under a session id ([`Slot`]), its expiry policy, and the owner index.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use moka::{Expiry, ops::compute::Op};

use crate::store::Record;

/// What the cache holds under an id. `generation` is unique to each write, so that the removal of one
/// write (expiry, eviction) can never unindex the write that followed it.
pub(super) enum Slot {
    /// A session.
    Live {
        generation: u64,
        record: Arc<Record>,
    },
    /// A session [replaced](SessionStore::replace) by `successor`, remembered until `until`.
    Replaced {
        generation: u64,
        successor: String,
        owner: Option<String>,
        until: SystemTime,
    },
}

impl Slot {
    pub(super) fn generation(&self) -> u64 {
        match self {
            Slot::Live { generation, .. } | Slot::Replaced { generation, .. } => *generation,
        }
    }

    pub(super) fn owner(&self) -> Option<&str> {
        match self {
            Slot::Live { record, .. } => record.owner.as_deref(),
            Slot::Replaced { owner, .. } => owner.as_deref(),
        }
    }

    /// When the cache drops the slot.
    pub(super) fn end(&self) -> SystemTime {
        match self {
            Slot::Live { record, .. } => record.expiry,
            Slot::Replaced { until, .. } => *until,
        }
    }

    /// What to do with a slot that holds no session live at `now`: a replacement marker is
    /// kept; anything else (nothing, or an expired record the cache has yet to drop, which it
    /// does on the next tick of its timer wheel, about a second) is removed now.
    pub(super) fn drop_dead(slot: Option<&Arc<Slot>>) -> Op<Arc<Slot>> {
        match slot.map(|s| &**s) {
            Some(Slot::Replaced { .. }) => Op::Nop,
            _ => Op::Remove,
        }
    }

    /// The record, if this is a session still live at `now`.
    pub(super) fn live(&self, now: SystemTime) -> Option<&Arc<Record>> {
        match self {
            Slot::Live { record, .. } if record.expiry > now => Some(record),
            _ => None,
        }
    }
}

/// Per-entry expiry for moka: a slot expires at its own [`Slot::end`].
pub(super) struct AtEnd;

impl Expiry<String, Arc<Slot>> for AtEnd {
    fn expire_after_create(&self, _: &String, slot: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(remaining(slot.end()))
    }

    fn expire_after_update(
        &self,
        _: &String,
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(remaining(slot.end()))
    }
}

pub(super) fn remaining(end: SystemTime) -> Duration {
    end.duration_since(SystemTime::now()).unwrap_or_default()
}

/// owner → (id → generation of the write that indexed it).
pub(super) type Owners = HashMap<String, HashMap<String, u64>>;

pub(super) fn lock(owners: &Mutex<Owners>) -> MutexGuard<'_, Owners> {
    // Every change under this lock is one map operation, so a panic cannot leave it half-done.
    owners.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drops `slot`'s owner index entry for `id`, if it is still the one `slot`'s write made.
pub(super) fn unindex(owners: &mut Owners, id: &str, slot: &Slot) {
    let Some(owner) = slot.owner() else { return };
    let Some(ids) = owners.get_mut(owner) else {
        return;
    };
    if ids.get(id) == Some(&slot.generation()) {
        ids.remove(id);
        if ids.is_empty() {
            owners.remove(owner);
        }
    }
}

pub(super) fn size(values: &HashMap<String, String>) -> u64 {
    values.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}
