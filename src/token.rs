//! Session tokens: 32 bytes from a CSPRNG, base64url without padding (43 characters).

use std::borrow::Cow;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Length of a token in characters.
pub(crate) const LEN: usize = 43;

/// A new random token from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub(crate) fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The base64url alphabet, as a table: the check runs on every request's cookie.
const URL_SAFE: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        c += 1;
    }
    table
};

/// Whether `s` is a token this crate could have generated: exactly 43 base64url characters that
/// decode (canonically) to 32 bytes. Anything else is treated as no session, before any store call.
pub(crate) fn is_well_formed(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == LEN
        && b.iter().all(|&c| URL_SAFE[usize::from(c)])
        // 43 characters carry 258 bits: in the canonical encoding of 32 bytes the last
        // character's 2 low bits are zero (checked here on every request without decoding).
        && b"AEIMQUYcgkosw048".contains(&b[LEN - 1])
}

/// The id a token is stored under: the token itself, or base64url(sha256(token)) when
/// hash-token-in-store is on.
pub(crate) fn store_id(token: &str, hash: bool) -> Cow<'_, str> {
    if hash {
        Cow::Owned(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())))
    } else {
        Cow::Borrowed(token)
    }
}

/// The 32 bytes a well-formed token encodes (the Redis store's key ends in them); `None` for
/// anything else.
#[cfg(feature = "redis")]
pub(crate) fn bytes(token: &str) -> Option<[u8; 32]> {
    // The decoder checks the alphabet and that the encoding is canonical (no trailing bits), so
    // only the length is left to check: a token decodes exactly when it is well formed.
    let mut out = [0u8; 33];
    if token.len() != LEN {
        return None;
    }
    match URL_SAFE_NO_PAD.decode_slice(token, &mut out) {
        Ok(32) => out[..32].try_into().ok(),
        _ => None,
    }
}

/// The token of 32 bytes (the inverse of [`bytes`]), written into `text`.
#[cfg(feature = "redis")]
pub(crate) fn of_bytes_in<'t>(bytes: &[u8; 32], text: &'t mut [u8; LEN]) -> &'t str {
    let written = URL_SAFE_NO_PAD.encode_slice(bytes, text);
    debug_assert_eq!(written, Ok(LEN));
    // base64url is ASCII.
    std::str::from_utf8(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), LEN);
        assert!(is_well_formed(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = generate();
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&good[..42]));
        assert!(!is_well_formed(&format!("{good}A")));
        assert!(!is_well_formed(&good.replace(|_c: char| true, "+")));
        // 43 chars whose last one carries non-zero padding bits ('B' = 1): not canonical.
        assert!(!is_well_formed(&format!("{}B", &good[..42])));
        assert!(is_well_formed(&format!("{}A", &good[..42])));
        assert!(!is_well_formed(
            "*/../../scs:session:*aaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
    }

    #[test]
    fn well_formed_means_canonical_base64url_of_32_bytes() {
        let prefix = &generate()[..42];
        let chars = (0..=255u8).map(char::from).chain(['é', '€']);
        for last in chars {
            let token = format!("{prefix}{last}");
            let mut bytes = [0u8; 48];
            let decodes =
                token.len() == LEN && URL_SAFE_NO_PAD.decode_slice(&token, &mut bytes) == Ok(32);
            assert_eq!(is_well_formed(&token), decodes, "{token:?}");
        }
    }

    #[test]
    #[cfg(feature = "redis")]
    fn bytes_round_trip_only_for_well_formed_tokens() {
        let t = generate();
        let raw = bytes(&t).expect("a generated token decodes");
        assert_eq!(of_bytes_in(&raw, &mut [0; LEN]), t);
        assert_eq!(bytes(&format!("{}B", &t[..42])), None);
        assert_eq!(bytes(&t[..42]), None);
        assert_eq!(bytes("not a token"), None);
        // Decoding accepts exactly the well-formed tokens: every last character, and characters
        // outside base64url (standard base64's, padding, non-ASCII) anywhere.
        let head = &t[..42];
        for last in (0..=u8::MAX).map(char::from) {
            let s = format!("{head}{last}");
            assert_eq!(bytes(&s).is_some(), is_well_formed(&s), "{s}");
        }
        for bad in ["+", "/", "=", "é", " "] {
            let s = format!("{bad}{}", &t[bad.len()..]);
            assert_eq!(bytes(&s), None, "{s}");
            assert!(!is_well_formed(&s));
        }
    }

    #[test]
    fn store_id_hashes_only_when_asked() {
        let t = generate();
        assert_eq!(store_id(&t, false), t);
        let h = store_id(&t, true);
        assert_eq!(h.len(), LEN);
        assert_ne!(h, t);
        assert_eq!(h, store_id(&t, true));
    }
}
