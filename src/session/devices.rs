//! An owner's device list: [`Session::devices`], [`revoke_device`](Session::revoke_device) and
//! [`revoke_other_devices`](Session::revoke_other_devices).

use std::{fmt, str::FromStr, time::SystemTime};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use super::{EventKind, Session, Status};
use crate::{Error, store::Record};

/// The opaque id of one of an owner's sessions, as the device list shows it. It is not the
/// token and cannot be turned into one (it is a SHA-256 digest of the session's store id), so
/// it can go into pages and URLs: a device id in a cookie or a header never opens a session.
/// Not a secret: `Debug` and `Display` show it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

/// Length of a device id: 16 bytes of digest, base64url.
const LEN: usize = 22;

impl DeviceId {
    /// The device id of the session stored under `store_id`.
    pub(crate) fn of(store_id: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(b"tower-scs device id\0")
            .chain_update(store_id.as_bytes())
            .finalize();
        DeviceId(URL_SAFE_NO_PAD.encode(&digest[..16]))
    }

    /// The id as text (22 base64url characters).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses a device id from a page or URL (say, `/devices/{id}/revoke`): 22 base64url
/// characters. Anything else is [`InvalidDeviceId`], which an application answers as it
/// answers an unknown id (a `404`, say).
impl FromStr for DeviceId {
    type Err = InvalidDeviceId;

    fn from_str(s: &str) -> Result<Self, InvalidDeviceId> {
        let base64url = |b: u8| b.is_ascii_alphanumeric() || b"-_".contains(&b);
        match s.len() == LEN && s.bytes().all(base64url) {
            true => Ok(DeviceId(s.to_owned())),
            false => Err(InvalidDeviceId),
        }
    }
}

/// A text that is not a [`DeviceId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a device id")]
pub struct InvalidDeviceId;

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

/// One of an owner's live sessions, as the device list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Device {
    /// Its device id, for [`Session::revoke_device`].
    pub id: DeviceId,
    /// Whether it is the session asking.
    pub current: bool,
    /// When it was tied to the owner (signed in), or created with it.
    pub created: SystemTime,
    /// When it was last seen: its last commit, or the touch that keeps "last seen" within the
    /// layer's [`last_seen_interval`](crate::SessionLayer::last_seen_interval) of the truth.
    pub last_seen: SystemTime,
    /// The user agent the application recorded, if any.
    pub user_agent: Option<String>,
    /// The client IP the application recorded, if any.
    pub ip: Option<String>,
}

impl Device {
    fn of(id: &str, record: &Record, current: Option<&str>) -> Self {
        let created = record.created.unwrap_or(record.deadline);
        Device {
            id: DeviceId::of(id),
            current: current == Some(id),
            created,
            last_seen: record.seen.unwrap_or(created),
            user_agent: record.user_agent.clone(),
            ip: record.ip.clone(),
        }
    }
}

/// The longest user agent [`Session::set_client`] records, in bytes; longer ones are cut.
pub const MAX_USER_AGENT_BYTES: usize = 256;
/// The longest client IP [`Session::set_client`] records, in bytes; longer ones are cut.
pub const MAX_IP_BYTES: usize = 64;

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncated(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl Session {
    /// Records what the application chooses to show of this client in its owner's device
    /// list: a user agent (cut to [`MAX_USER_AGENT_BYTES`]) and an IP (cut to
    /// [`MAX_IP_BYTES`]), each left as it was when `None`. Stored with the next commit, for a
    /// session tied to an owner only (call it with [`set_owner`](Self::set_owner) at login);
    /// a renew starts without them. Nothing is recorded unless the application calls this.
    pub fn set_client(&self, user_agent: Option<&str>, ip: Option<&str>) {
        let mut state = self.state();
        if let Some(ua) = user_agent {
            state.user_agent = Some(truncated(ua, MAX_USER_AGENT_BYTES));
        }
        if let Some(ip) = ip {
            state.ip = Some(truncated(ip, MAX_IP_BYTES));
        }
        state.status = Status::Modified;
    }

    /// The live sessions of this session's owner, most recently seen first, this one marked
    /// [`current`](Device::current): "where you're signed in". Empty for a session without an
    /// owner.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] from a store that keeps no owner index; [`Error::Store`] or
    /// [`Error::Timeout`] when the store fails; the request is then answered with the layer's
    /// error response.
    pub async fn devices(&self) -> Result<Vec<Device>, Error> {
        let Some((_, sessions)) = self.owner_sessions().await? else {
            return Ok(Vec::new());
        };
        let current = self.current_id().await?;
        let mut devices: Vec<Device> = (sessions.iter())
            .map(|(id, record)| Device::of(id, record, current.as_deref()))
            .collect();
        devices.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.id.cmp(&b.id)));
        Ok(devices)
    }

    /// Ends the session of this owner's whose device id is `device`, at once; returns whether
    /// there was one. When it is this very session, this is [`destroy`](Self::destroy) (the
    /// client gets its token cleared with the response). A device id of another owner's
    /// session, or of none, changes nothing.
    ///
    /// # Errors
    ///
    /// As [`devices`](Self::devices).
    pub async fn revoke_device(&self, device: &DeviceId) -> Result<bool, Error> {
        let Some((owner, sessions)) = self.owner_sessions().await? else {
            return Ok(false);
        };
        let Some((id, _)) = sessions.iter().find(|(id, _)| DeviceId::of(id) == *device) else {
            return Ok(false);
        };
        if self.current_id().await?.as_deref() == Some(id.as_str()) {
            self.destroy();
            return Ok(true);
        }
        let revoked = self.guard(self.0.shared.delete_owned(id, &owner).await)?;
        if revoked {
            self.0
                .shared
                .emit(EventKind::Revoked, Some(id), Some(&owner));
        }
        Ok(revoked)
    }

    /// Ends every session of this owner's but this one, at once ("sign out everywhere else");
    /// returns how many it ended. A session without an owner ends nothing.
    ///
    /// # Errors
    ///
    /// As [`devices`](Self::devices).
    pub async fn revoke_other_devices(&self) -> Result<u64, Error> {
        let Some((owner, sessions)) = self.owner_sessions().await? else {
            return Ok(0);
        };
        let current = self.current_id().await?;
        let others: Vec<&String> = (sessions.iter().map(|(id, _)| id))
            .filter(|id| current.as_ref() != Some(*id))
            .collect();
        let deletes = others
            .iter()
            .map(|id| self.0.shared.delete_owned(id, &owner));
        let deleted = self.guard(futures_util::future::try_join_all(deletes).await)?;
        for (id, _) in others.iter().zip(&deleted).filter(|(_, gone)| **gone) {
            self.0
                .shared
                .emit(EventKind::Revoked, Some(id), Some(&owner));
        }
        Ok(deleted.into_iter().map(u64::from).sum())
    }

    /// The owner, and its live sessions; `None` without an owner.
    async fn owner_sessions(&self) -> Result<Option<(String, Vec<(String, Record)>)>, Error> {
        let Some(owner) = self.owner().await? else {
            return Ok(None);
        };
        let sessions = self.guard(self.0.shared.owner_sessions(&owner).await)?;
        Ok(Some((owner, sessions)))
    }

    /// The store id of this session, if it is stored.
    async fn current_id(&self) -> Result<Option<String>, Error> {
        self.with_base(|state, base| base.and(self.committed_id(state)))
            .await
    }

    /// Keeps a store error for the layer's error response, and passes it on.
    fn guard<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &result {
            self.fail(&mut self.state(), e);
        }
        result
    }
}
