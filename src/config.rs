//! The layer's settings ([`Config`], with SCS's defaults) and the checks a setting must pass
//! when the layer is configured.

use std::{fmt, sync::Arc, time::Duration};

use cookie::SameSite;
use http::Response;

use crate::{
    Error,
    session::EventHook,
    wire::{Carrier, SigningKeys},
};

/// Builds the response sent instead of the handler's when the session store fails.
pub(crate) type ErrorHandler = Arc<dyn Fn(&Error) -> Response<()> + Send + Sync>;

/// The layer's settings, with SCS's defaults.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) lifetime: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) cookie_name: String,
    pub(crate) cookie_domain: Option<String>,
    pub(crate) cookie_path: String,
    pub(crate) http_only: bool,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) partitioned: bool,
    pub(crate) persist: bool,
    pub(crate) hash_token_in_store: bool,
    pub(crate) store_timeout: Duration,
    pub(crate) max_session_bytes: Option<u64>,
    pub(crate) max_key_bytes: Option<u64>,
    pub(crate) error_handler: ErrorHandler,
    /// Where the token travels, tried in this order; never empty.
    pub(crate) carriers: Arc<[Carrier]>,
    pub(crate) signing: Option<SigningKeys>,
    /// How stale an owned session's "last seen" may grow before a read-only request touches it.
    pub(crate) last_seen_interval: Duration,
    /// The application's lifecycle-event hook, if any.
    pub(crate) on_event: Option<EventHook>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lifetime: Duration::from_secs(24 * 60 * 60),
            idle_timeout: None,
            cookie_name: "session".into(),
            cookie_domain: None,
            cookie_path: "/".into(),
            http_only: true,
            secure: false,
            same_site: SameSite::Lax,
            partitioned: false,
            persist: true,
            hash_token_in_store: false,
            store_timeout: Duration::from_secs(1),
            max_session_bytes: Some(1 << 20),
            max_key_bytes: Some(1024),
            error_handler: Arc::new(|_| crate::error::default_response()),
            carriers: Arc::new([Carrier::cookie()]),
            signing: None,
            last_seen_interval: Duration::from_secs(60),
            on_event: None,
        }
    }
}

/// The longest idle timeout that changes anything: from the Unix epoch to the end of the year
/// 9999, where session times saturate. Longer ones are cut to it, so that the store's slack
/// added to the idle timeout can never overflow.
pub(crate) const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(253_402_300_799);

/// Panics with `SessionLayer::<setting>: <value> is not <what>` unless `ok`: settings are
/// checked when the layer is configured, never at request time.
#[track_caller]
pub(crate) fn refuse_unless(ok: bool, setting: &str, value: &dyn fmt::Debug, what: &str) {
    if !ok {
        panic!("SessionLayer::{setting}: {value:?} is not {what}");
    }
}

/// An RFC 6265 cookie-name: a non-empty RFC 2616 token (visible ASCII, no separators).
pub(crate) fn is_token(name: &str) -> bool {
    const SEPARATORS: &[u8] = br#"()<>@,;:\"/[]?={}"#;
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !SEPARATORS.contains(&b))
}

/// A host name for the `Domain` attribute: one optional leading dot, then dot-separated
/// non-empty labels of ASCII letters, digits and `-`.
pub(crate) fn is_domain(domain: &str) -> bool {
    let host = domain.strip_prefix('.').unwrap_or(domain);
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An RFC 6265 path-value starting with `/`: ASCII, no control characters, no `;`.
pub(crate) fn is_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b';')
}
