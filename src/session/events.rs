//! Lifecycle events: what happened to a session, told to the application's hook
//! ([`SessionLayer::on_event`](crate::SessionLayer::on_event)) with its device id and owner,
//! never its token.

use std::sync::Arc;

use super::DeviceId;
use crate::shared::Shared;

/// What happened to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A new session was stored (its first commit).
    Created,
    /// A session was renewed: [`SessionEvent::device`] is the new token's device; the old
    /// token is gone.
    Renewed,
    /// A session was destroyed by its own request ([`Session::destroy`](crate::Session::destroy)).
    Destroyed,
    /// A session was revoked by another: one device
    /// ([`revoke_device`](crate::Session::revoke_device),
    /// [`revoke_other_devices`](crate::Session::revoke_other_devices)), or every session of an
    /// owner ([`destroy_owner`](crate::Session::destroy_owner), with no device).
    Revoked,
}

/// A session's lifecycle event, for an audit log or metrics. It never carries the token: the
/// device id cannot be turned into one.
///
/// **Expiry is not an event.** A session expires inside the store (Redis deletes the key at its
/// TTL; the memory store drops the entry), with no request and no call into the layer, so
/// nothing can report it as it happens. What is observable: a device list no longer shows it,
/// and a request with its token gets a fresh session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionEvent {
    /// What happened.
    pub kind: EventKind,
    /// The session's device id; `None` for a revoke of every session of an owner.
    pub device: Option<DeviceId>,
    /// The owner the session was tied to, when known.
    pub owner: Option<String>,
}

/// The application's hook.
pub(crate) type EventHook = Arc<dyn Fn(&SessionEvent) + Send + Sync>;

impl Shared {
    /// Counts the event in the metrics, and tells the hook, if there is one, that `kind`
    /// happened to the session stored under `store_id` (`None`: every session of `owner`).
    pub(crate) fn emit(&self, kind: EventKind, store_id: Option<&str>, owner: Option<&str>) {
        crate::metrics::event(kind);
        if let Some(hook) = &self.config.on_event {
            hook(&SessionEvent {
                kind,
                device: store_id.map(DeviceId::of),
                owner: owner.map(str::to_owned),
            });
        }
    }
}
