//! [`SigningKeys`]: signed tokens, with key rotation. On the wire a signed token is
//! `<token>.<tag>`, the tag being base64url(HMAC-SHA256(key, token)): 43 + 1 + 43 characters.

use std::{fmt, sync::Arc};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Error, token};

/// The shortest key accepted, in bytes: HMAC-SHA256's output size.
pub const MIN_KEY_BYTES: usize = 32;

/// Length of a signed token on the wire.
pub(crate) const SIGNED_LEN: usize = token::LEN + 1 + TAG_LEN;
const TAG_LEN: usize = 43;

/// The keys that sign session tokens on the wire, newest first: tokens are signed with the
/// first key and verified against every key, so that adding a key in front rotates without
/// logging anyone out. Set them with
/// [`SessionLayer::signing_keys`](crate::SessionLayer::signing_keys).
///
/// A token whose tag verifies against none of the keys, including one signed with a key since
/// removed, is no session, and costs the store nothing: it is refused before any store call. A
/// token signed with an older key is answered with the token signed with the first key (see
/// the layer's docs for when). What is stored does not change with signing: keys can be added,
/// rotated or removed without touching the store.
///
/// `Debug` shows how many keys there are, never a key.
///
/// ```
/// use tower_scs::SigningKeys;
///
/// let keys = SigningKeys::new([[7u8; 32], [9u8; 32]])?;
/// assert_eq!(keys.len(), 2);
/// assert!(SigningKeys::new([[7u8; 16]]).is_err()); // too short
/// # Ok::<_, tower_scs::Error>(())
/// ```
#[derive(Clone)]
pub struct SigningKeys {
    /// One keyed HMAC state per key: cloning it skips hashing the key on every request.
    macs: Arc<[Hmac<Sha256>]>,
    accept_unsigned: bool,
}

impl SigningKeys {
    /// Keys given as raw bytes, newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if there is no key, or a key is shorter than [`MIN_KEY_BYTES`] (32).
    pub fn new<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Result<Self, Error> {
        let macs = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let key = key.as_ref();
                if key.len() < MIN_KEY_BYTES {
                    let len = key.len();
                    return Err(Error::Config(format!(
                        "signing key {} is {len} bytes; at least {MIN_KEY_BYTES} are needed",
                        i + 1
                    )));
                }
                Hmac::<Sha256>::new_from_slice(key)
                    .map_err(|_| Error::Config("unusable signing key".into()))
            })
            .collect::<Result<Arc<[_]>, _>>()?;
        if macs.is_empty() {
            return Err(Error::Config("no signing key given".into()));
        }
        Ok(SigningKeys {
            macs,
            accept_unsigned: false,
        })
    }

    /// Keys given in base64, newest first: each in the standard or the URL-safe alphabet, with
    /// or without padding, surrounding whitespace ignored.
    ///
    /// ```
    /// # use tower_scs::SigningKeys;
    /// let keys = SigningKeys::from_base64(["B2VlB2VlB2VlB2VlB2VlB2VlB2VlB2VlB2VlB2VlB2U="])?;
    /// # Ok::<_, tower_scs::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a key is not base64 (the error says which one, never its value), or
    /// as [`SigningKeys::new`].
    pub fn from_base64<K: AsRef<str>>(keys: impl IntoIterator<Item = K>) -> Result<Self, Error> {
        let decoded = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                decode_key(key.as_ref())
                    .ok_or_else(|| Error::Config(format!("signing key {} is not base64", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(decoded)
    }

    /// Also accepts tokens **without** a tag, for the move to signing: such a token is looked
    /// up in the store as before signing was on, and when its session is live the client gets
    /// it back signed. Off by default, where an unsigned token is no session. Turn it off again
    /// once the sessions from before signing have expired or been re-signed: while it is on, a
    /// forged unsigned token costs a store call, as without signing.
    #[must_use]
    pub fn accept_unsigned(mut self, on: bool) -> Self {
        self.accept_unsigned = on;
        self
    }

    /// How many keys there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.macs.len()
    }

    /// Always false: there is at least one key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }

    /// `token` signed with the first key, as it goes on the wire.
    pub(crate) fn sign(&self, token: &str) -> String {
        let mut mac = self.macs[0].clone();
        mac.update(token.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut wire = String::with_capacity(SIGNED_LEN);
        wire.push_str(token);
        wire.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut wire);
        wire
    }

    /// Checks a value from the wire: `Some(current)` when it is a well-formed token with a tag
    /// that verifies (`current`: against the first key), or an unsigned token while those are
    /// accepted (`current` false: it is to be re-signed); `None` otherwise.
    pub(crate) fn verify(&self, wire: &str) -> Option<bool> {
        if wire.len() == token::LEN {
            return (self.accept_unsigned && token::is_well_formed(wire)).then_some(false);
        }
        let (token, tag) = split(wire)?;
        let mut bytes = [0u8; 33];
        // A canonical 43-character tag decodes to exactly 32 bytes.
        if URL_SAFE_NO_PAD.decode_slice(tag, &mut bytes) != Ok(32) {
            return None;
        }
        let tag = &bytes[..32];
        self.macs.iter().enumerate().find_map(|(i, key)| {
            let mut mac = key.clone();
            mac.update(token.as_bytes());
            mac.verify_slice(tag).is_ok().then_some(i == 0)
        })
    }
}

/// The token and tag of a `<token>.<tag>` value with a well-formed token; `None` otherwise.
pub(crate) fn split(wire: &str) -> Option<(&str, &str)> {
    if wire.len() != SIGNED_LEN || wire.as_bytes()[token::LEN] != b'.' {
        return None;
    }
    let (token, tag) = (&wire[..token::LEN], &wire[token::LEN + 1..]);
    token::is_well_formed(token).then_some((token, tag))
}

/// A key in base64: standard or URL-safe alphabet, padding optional.
fn decode_key(key: &str) -> Option<Vec<u8>> {
    let key = key.trim().trim_end_matches('=');
    (STANDARD_NO_PAD.decode(key).ok()).or_else(|| URL_SAFE_NO_PAD.decode(key).ok())
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("keys", &self.macs.len())
            .field("accept_unsigned", &self.accept_unsigned)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seeds: &[u8]) -> SigningKeys {
        SigningKeys::new(seeds.iter().map(|&s| [s; 32])).unwrap()
    }

    #[test]
    fn a_signed_token_verifies_and_any_change_breaks_it() {
        let k = keys(&[1]);
        let token = token::generate();
        let wire = k.sign(&token);
        assert_eq!(wire.len(), SIGNED_LEN);
        assert!(wire.starts_with(&token));
        assert_eq!(k.verify(&wire), Some(true));
        // Every single-character change, in the token or the tag, is refused.
        for i in (0..wire.len()).filter(|&i| i != token::LEN) {
            for c in ['A', 'B', '_', '-', '.', '0'] {
                let mut forged = wire.clone().into_bytes();
                if forged[i] == c as u8 {
                    continue;
                }
                forged[i] = c as u8;
                let forged = String::from_utf8(forged).unwrap();
                assert_eq!(k.verify(&forged), None, "{i} {c}");
            }
        }
        assert_eq!(k.verify(&wire[..SIGNED_LEN - 1]), None, "truncated");
        assert_eq!(k.verify(&format!("{wire}A")), None, "extended");
        assert_eq!(k.verify(&token), None, "unsigned");
        assert_eq!(k.verify(""), None);
    }

    #[test]
    fn rotation_verifies_old_keys_as_not_current_and_removed_keys_not_at_all() {
        let token = token::generate();
        let old = keys(&[1]).sign(&token);
        assert_eq!(keys(&[2, 1]).verify(&old), Some(false));
        assert_eq!(
            keys(&[2, 1]).verify(&keys(&[2, 1]).sign(&token)),
            Some(true)
        );
        assert_eq!(keys(&[2]).verify(&old), None, "a removed key");
    }

    #[test]
    fn unsigned_tokens_only_while_accepted() {
        let token = token::generate();
        assert_eq!(keys(&[1]).verify(&token), None);
        let migrating = keys(&[1]).accept_unsigned(true);
        assert_eq!(migrating.verify(&token), Some(false));
        assert_eq!(migrating.verify(&token[..42]), None);
    }

    #[test]
    fn short_missing_or_undecodable_keys_are_refused_without_showing_them() {
        let short = SigningKeys::new([[0u8; 32].as_slice(), &[0u8; 31]]).unwrap_err();
        assert!(
            short.to_string().contains("signing key 2 is 31 bytes"),
            "{short}"
        );
        assert!(SigningKeys::new(Vec::<Vec<u8>>::new()).is_err());
        let secret = "not*base64*secret";
        let bad = SigningKeys::from_base64([secret]).unwrap_err().to_string();
        assert!(bad.contains("signing key 1 is not base64") && !bad.contains(secret));
    }

    #[test]
    fn base64_keys_in_either_alphabet_with_or_without_padding() {
        let raw = [0xfb_u8; 32]; // encodes with '+' and '/' in the standard alphabet
        let token = token::generate();
        let expected = SigningKeys::new([raw]).unwrap().sign(&token);
        for encoded in [
            base64::engine::general_purpose::STANDARD.encode(raw),
            STANDARD_NO_PAD.encode(raw),
            base64::engine::general_purpose::URL_SAFE.encode(raw),
            format!(" {} ", URL_SAFE_NO_PAD.encode(raw)),
        ] {
            let keys = SigningKeys::from_base64([&encoded]).unwrap();
            assert_eq!(keys.sign(&token), expected, "{encoded}");
        }
        let debug = format!("{:?}", SigningKeys::new([raw]).unwrap());
        assert_eq!(debug, "SigningKeys { keys: 1, accept_unsigned: false }");
    }
}
