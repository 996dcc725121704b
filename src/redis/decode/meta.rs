//! A session hash's metadata: the one-letter integer fields of the stored shape (`d`, `s`, `e`,
//! `r`, `c`, `l`), or the earlier shape's one `meta` text (`deadline=… size=…`), by the grammar
//! the Lua prelude (`redis/prelude.lua`) shares, so that Rust and Lua agree on what is corrupt.

use std::time::SystemTime;

use super::from_millis;
use crate::Error;

/// The latest time a record may hold: the end of year 9999, in Unix ms.
const MAX_TIME: i64 = 253_402_300_799_999;

/// The metadata, decoded and checked.
pub(super) struct Meta {
    pub(super) deadline: SystemTime,
    pub(super) expiry: Option<SystemTime>,
    pub(super) remember: bool,
    pub(super) created: Option<SystemTime>,
    pub(super) seen: Option<SystemTime>,
}

/// The metadata as stored: each value read as an integer, not yet checked.
#[derive(Debug, Default)]
pub(super) struct Raw {
    deadline: Option<i64>,
    expiry: Option<i64>,
    remember: Option<i64>,
    size: Option<i64>,
    created: Option<i64>,
    seen: Option<i64>,
}

impl Raw {
    /// Reads the metadata field `name` of the stored shape (`d`, `s`, …). Returns `Ok(false)`
    /// when `name` is no such field, an error when its value is no integer.
    pub(super) fn field(&mut self, name: &str, value: &str) -> Result<bool, Error> {
        let Some((slot, long)) = self.slot(name) else {
            return Ok(false);
        };
        let corrupt = |what| Error::Malformed(format!("stored session field {name}: {what}"));
        *slot = Some(integer(value).ok_or_else(|| corrupt(not_integer(long, value)))?);
        Ok(true)
    }

    /// The slot of a one-letter field, and the field's name in the old `meta` text.
    fn slot(&mut self, name: &str) -> Option<(&mut Option<i64>, &'static str)> {
        Some(match name {
            "d" => (&mut self.deadline, "deadline"),
            "s" => (&mut self.size, "size"),
            "e" => (&mut self.expiry, "expiry"),
            "r" => (&mut self.remember, "remember"),
            "c" => (&mut self.created, "created"),
            "l" => (&mut self.seen, "seen"),
            _ => return None,
        })
    }

    /// The slot of a name of the old `meta` text.
    fn slot_of_long(&mut self, name: &str) -> Option<&mut Option<i64>> {
        let short = match name {
            "deadline" => "d",
            "size" => "s",
            "expiry" => "e",
            "remember" => "r",
            "created" => "c",
            "seen" => "l",
            _ => return None,
        };
        self.slot(short).map(|(slot, _)| slot)
    }

    /// The metadata, checked: a deadline; times between 1970 and the end of year 9999 in Unix
    /// ms (`deadline`, `expiry`, `created`, `seen`); `size` >= 0; `remember` 0 or 1.
    pub(super) fn check(self) -> Result<Meta, Error> {
        let corrupt = |what: String| Error::Malformed(format!("stored session metadata: {what}"));
        let time = |ms: i64| {
            (0..=MAX_TIME)
                .contains(&ms)
                .then(|| from_millis(ms))
                .ok_or_else(|| corrupt(format!("{ms} is not a time in Unix milliseconds")))
        };
        let (size, remember) = (self.size, self.remember);
        if size.is_some_and(|s| s < 0) || remember.is_some_and(|r| !(0..=1).contains(&r)) {
            return Err(corrupt(format!(
                "size {size:?} or remember {remember:?} out of range"
            )));
        }
        Ok(Meta {
            deadline: time(self.deadline.ok_or_else(|| corrupt("no deadline".into()))?)?,
            expiry: self.expiry.map(time).transpose()?,
            remember: remember == Some(1),
            created: self.created.map(time).transpose()?,
            seen: self.seen.map(time).transpose()?,
        })
    }
}

/// `-?[0-9]+`, at most 16 characters: the integers the grammar allows.
fn integer(number: &str) -> Option<i64> {
    let digits = number.strip_prefix('-').unwrap_or(number);
    let integer =
        !digits.is_empty() && number.len() <= 16 && digits.bytes().all(|b| b.is_ascii_digit());
    number.parse::<i64>().ok().filter(|_| integer)
}

fn not_integer(name: &str, number: &str) -> String {
    match name {
        "deadline" | "expiry" | "created" | "seen" => {
            format!("{number:?} is not a time in Unix milliseconds")
        }
        _ => format!("{name}={number:?} is not an integer"),
    }
}

/// Parses the earlier shape's `meta` text: pairs separated by spaces, each `[a-z]+=` and an
/// integer, no name twice; unknown names are allowed. What it holds is checked by
/// [`Raw::check`].
pub(super) fn parse_meta(text: &str) -> Result<Raw, Error> {
    let corrupt = |what: String| Error::Malformed(format!("stored session field meta: {what}"));
    let mut raw = Raw::default();
    let mut others: Vec<&str> = Vec::new();
    for pair in text.split(' ').filter(|p| !p.is_empty()) {
        // Byte scans: cheaper than memchr-based `split_once` on strings this short.
        let eq = pair.bytes().position(|b| b == b'=');
        let (name, number) = eq.map_or((pair, ""), |eq| (&pair[..eq], &pair[eq + 1..]));
        if eq.is_none() || name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(corrupt(format!("{pair:?} is not name=integer")));
        }
        let value = integer(number).ok_or_else(|| corrupt(not_integer(name, number)))?;
        let slot = match raw.slot_of_long(name) {
            Some(slot) => slot,
            None if others.contains(&name) => return Err(corrupt(format!("{name} twice"))),
            None => {
                others.push(name);
                continue;
            }
        };
        if slot.replace(value).is_some() {
            return Err(corrupt(format!("{name} twice")));
        }
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Result<Meta, Error> {
        let mut raw = Raw::default();
        for (name, value) in pairs {
            assert!(raw.field(name, value)?, "{name} is a metadata field");
        }
        raw.check()
    }

    /// The grammar of the one-letter fields, as the Lua prelude's `parse_stored` applies it too
    /// (the Lua side is exercised through the scripts by `tests/it/clocks.rs`).
    #[test]
    fn metadata_fields_grammar() {
        let ok = fields(&[("d", "1767225600000"), ("s", "9")]).unwrap();
        assert_eq!(ok.deadline, from_millis(1_767_225_600_000));
        assert!(ok.expiry.is_none() && !ok.remember && ok.created.is_none());
        let all = [("d", "5"), ("e", "4"), ("r", "1"), ("c", "2"), ("l", "3")];
        let ok = fields(&all).unwrap();
        assert_eq!(ok.expiry, Some(from_millis(4)));
        assert!(ok.remember);
        assert_eq!(
            (ok.created, ok.seen),
            (Some(from_millis(2)), Some(from_millis(3)))
        );
        assert!(!Raw::default().field("owner", "x").unwrap(), "not metadata");
        for corrupt in [
            &[("s", "9")][..],
            &[("d", "soon")],
            &[("d", "5"), ("s", "x")],
            &[("d", "5"), ("s", "-1")],
            &[("d", "5"), ("r", "2")],
            &[("d", "-5")],
            &[("d", "253402300800000")],
            &[("d", "12345678901234567")],
            &[("d", "+5")],
            &[("d", "5 ")],
            &[("d", "5"), ("e", "")],
        ] {
            assert!(
                matches!(fields(corrupt), Err(Error::Malformed(_))),
                "{corrupt:?}"
            );
        }
    }

    /// The earlier shape's `meta` text, as the Lua prelude's `parse_meta` reads it too.
    #[test]
    fn old_meta_grammar() {
        let ok = parse_meta("deadline=1767225600000 size=9").unwrap().check();
        let ok = ok.unwrap();
        assert_eq!(ok.deadline, from_millis(1_767_225_600_000));
        assert_eq!(ok.expiry, None);
        assert!(!ok.remember);
        let ok = parse_meta(" deadline=5  expiry=4 remember=1 future=7 seen=3 ");
        let ok = ok.unwrap().check().unwrap();
        assert_eq!(ok.expiry, Some(from_millis(4)));
        assert_eq!(ok.seen, Some(from_millis(3)));
        assert!(ok.remember);
        for corrupt in [
            "",
            "size=9",
            "deadline=5 deadline=5",
            "deadline=5 future=1 future=1",
            "deadline=5 remember",
            "deadline=5 Size=1",
            "deadline=5 size=x",
            "deadline=5 size=-1",
            "deadline=5 remember=2",
            "deadline=-5",
            "deadline=253402300800000",
            "deadline=12345678901234567",
            "deadline=5\tsize=1",
            "deadline=+5",
        ] {
            let meta = parse_meta(corrupt).and_then(Raw::check);
            assert!(matches!(meta, Err(Error::Malformed(_))), "{corrupt:?}");
        }
    }
}
