//! How a session id becomes its Redis key, and a key its id again.
//!
//! The key is the prefix, then the 32 bytes the id's 43 base64url characters encode: 44 bytes
//! under the default prefix. Redis keeps a key of up to 44 bytes in a 48-byte allocation and the
//! 55-byte text form in a 64-byte one, so a session costs 16 bytes less (`MEMORY USAGE`), which
//! is what takes it to or below tower-sessions' memory with a token twice as long. The record
//! itself is unchanged. [`RedisStore::with_text_keys`](super::RedisStore::with_text_keys) keeps
//! the text form, for sessions an earlier version stored. Reading a key back accepts both.

use fred::types::Key;

use crate::token;

/// The key of session `id` under `prefix`: the id's bytes when it is a token (and `text` is
/// off), else the id as it is.
pub(super) fn session_key(prefix: &str, id: &str, text: bool) -> Key {
    let raw = if text { None } else { token::bytes(id) };
    let rest = raw.as_ref().map_or(id.as_bytes(), |raw| &raw[..]);
    // Sized exactly, so that the boxing below does not reallocate.
    let mut key = Vec::with_capacity(prefix.len() + rest.len());
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(rest);
    Key::from(key.into_boxed_slice())
}

/// The session id a key under `prefix` stands for, in either form; `None` for a key that holds
/// no session (another prefix, an owner index).
pub(super) fn id_of(prefix: &str, key: &[u8]) -> Option<String> {
    with_id_of(prefix, key, str::to_owned)
}

/// [`id_of`], handed to `f` without an allocation (the text of a key's 32 bytes is written on
/// the stack): what an invalidation does with each key it names.
pub(super) fn with_id_of<R>(prefix: &str, key: &[u8], f: impl FnOnce(&str) -> R) -> Option<R> {
    let rest = key.strip_prefix(prefix.as_bytes())?;
    if let Ok(raw) = <&[u8; 32]>::try_from(rest) {
        return Some(f(token::of_bytes_in(raw, &mut [0; token::LEN])));
    }
    std::str::from_utf8(rest)
        .ok()
        .filter(|id| token::is_well_formed(id))
        .map(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_keyed_by_its_bytes_and_read_back() {
        let id = token::generate();
        let key = session_key("scs:session:", &id, false);
        assert_eq!(key.as_bytes().len(), 44);
        assert_eq!(&key.as_bytes()[..12], b"scs:session:");
        assert_eq!(id_of("scs:session:", key.as_bytes()), Some(id.clone()));
        assert_eq!(id_of("other:", key.as_bytes()), None);
    }

    #[test]
    fn text_keys_and_ids_that_are_not_tokens_stay_text() {
        let id = token::generate();
        let text = session_key("p:", &id, true);
        assert_eq!(text.as_bytes(), format!("p:{id}").as_bytes());
        assert_eq!(id_of("p:", text.as_bytes()), Some(id));
        assert_eq!(session_key("p:", "abc", false).as_bytes(), b"p:abc");
        assert_eq!(id_of("p:", b"p:abc"), None);
        assert_eq!(id_of("p:", b"p:owner:alice"), None);
    }

    #[test]
    fn any_32_bytes_read_back_as_the_token_that_keys_them() {
        let raw = *b"owner:abcdefghijklmnopqrstuvwxyz";
        let key = [b"p:".as_slice(), &raw].concat();
        let id = id_of("p:", &key).expect("32 bytes are a token's");
        assert_eq!(session_key("p:", &id, false).as_bytes(), key);
        // Without an allocation, the same id.
        assert_eq!(with_id_of("p:", &key, |i| i == id), Some(true));
        assert_eq!(with_id_of("p:", b"p:abc", |_| ()), None);
    }
}
