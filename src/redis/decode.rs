//! Decoding what Redis answers: an `HGETALL` reply into a [`Record`], the `meta` field by the
//! grammar the Lua prelude shares, and times in Unix milliseconds.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fred::{error::ErrorKind, types::Resp3Frame};

use crate::{Error, store::Record};

/// Decodes an `HGETALL` reply frame; an empty hash is a missing session.
pub(super) fn decode(reply: Resp3Frame) -> Result<Option<Record>, Error> {
    // RESP2 answers a flat array of fields and values (fred hands it over as a RESP3 array),
    // RESP3 a map.
    match reply {
        Resp3Frame::Array { data, .. } if data.len() % 2 == 0 => {
            if data.is_empty() {
                return Ok(None);
            }
            let mut fields = Fields::with_capacity(data.len() / 2);
            let mut items = data.into_iter();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                fields.add(&name, &value)?;
            }
            fields.finish()
        }
        Resp3Frame::Map { data, .. } => {
            if data.is_empty() {
                return Ok(None);
            }
            let mut fields = Fields::with_capacity(data.len());
            for (name, value) in data {
                fields.add(&name, &value)?;
            }
            fields.finish()
        }
        Resp3Frame::Null => Ok(None),
        Resp3Frame::SimpleError { data, .. } => Err(reply_error(&data)),
        Resp3Frame::BlobError { data, .. } => Err(reply_error(&String::from_utf8_lossy(&data))),
        other => Err(Error::Malformed(format!(
            "unexpected HGETALL reply {other:?}"
        ))),
    }
}

/// A session hash's fields, read one at a time.
struct Fields {
    record: Record,
    deadline: Option<SystemTime>,
    expiry: Option<SystemTime>,
    /// The hash is a replaced token's marker, not a session.
    moved: bool,
}

impl Fields {
    fn with_capacity(fields: usize) -> Self {
        Fields {
            record: Record {
                // All but `meta` are usually values.
                values: HashMap::with_capacity(fields.saturating_sub(1)),
                deadline: UNIX_EPOCH,
                expiry: UNIX_EPOCH,
                remember: false,
                owner: None,
                created: None,
                seen: None,
                user_agent: None,
                ip: None,
            },
            deadline: None,
            expiry: None,
            moved: false,
        }
    }

    fn add(&mut self, name: &Resp3Frame, value: &Resp3Frame) -> Result<(), Error> {
        let (name, value) = (text(name)?, text(value)?);
        if let Some(key) = name.strip_prefix("v:") {
            self.record.values.insert(key.to_owned(), value.to_owned());
            return Ok(());
        }
        match name {
            "meta" => {
                let meta = parse_meta(value)?;
                self.deadline = Some(meta.deadline);
                self.expiry = meta.expiry;
                self.record.remember = meta.remember;
                self.record.created = meta.created;
                self.record.seen = meta.seen;
            }
            "moved" => self.moved = true,
            "owner" => self.record.owner = Some(value.to_owned()),
            "ua" => self.record.user_agent = Some(value.to_owned()),
            "ip" => self.record.ip = Some(value.to_owned()),
            // Unknown fields are left alone, for forward compatibility.
            _ => {}
        }
        Ok(())
    }

    /// The live session the fields make, if any.
    fn finish(self) -> Result<Option<Record>, Error> {
        let mut record = self.record;
        if self.moved {
            return Ok(None);
        }
        record.deadline = self.deadline.ok_or_else(|| {
            Error::Malformed("session hash has no deadline in its meta field".into())
        })?;
        record.expiry = self.expiry.unwrap_or(record.deadline);
        if record.expiry <= SystemTime::now() {
            // Foreign data without a TTL, or a clock ahead of the writer's: expired all the same.
            return Ok(None);
        }
        Ok(Some(record))
    }
}

/// The text of a string reply frame.
fn text(frame: &Resp3Frame) -> Result<&str, Error> {
    let not_text = || Error::Malformed("session hash holds a field that is not UTF-8".into());
    match frame {
        Resp3Frame::BlobString { data, .. }
        | Resp3Frame::SimpleString { data, .. }
        | Resp3Frame::VerbatimString { data, .. } => {
            std::str::from_utf8(data).map_err(|_| not_text())
        }
        _ => Err(not_text()),
    }
}

/// An error reply from Redis, as a store error.
fn reply_error(message: &str) -> Error {
    Error::store(fred::error::Error::new(
        ErrorKind::Unknown,
        message.to_owned(),
    ))
}

/// The `meta` field, decoded.
pub(super) struct Meta {
    deadline: SystemTime,
    expiry: Option<SystemTime>,
    remember: bool,
    created: Option<SystemTime>,
    seen: Option<SystemTime>,
}

/// Parses `meta` by the grammar the scripts' `parse_meta` (in `redis/prelude.lua`) uses, so that
/// Rust and Lua agree on what is corrupt: pairs separated by spaces, each `[a-z]+=-?[0-9]+` with
/// at most 16 characters of number, no name twice, a `deadline`; times between 1970 and the end
/// of year 9999 in Unix ms (`deadline`, `expiry`, `created`, `seen`), `size` >= 0, `remember` 0
/// or 1. Unknown names are allowed.
pub(super) fn parse_meta(text: &str) -> Result<Meta, Error> {
    let corrupt = |what: String| Error::Malformed(format!("stored session field meta: {what}"));
    let (mut deadline, mut expiry, mut remember, mut size) = (None, None, None, None);
    let (mut created, mut seen) = (None, None);
    let mut others: Vec<&str> = Vec::new();
    for pair in text.split(' ').filter(|p| !p.is_empty()) {
        // Byte scans: cheaper than memchr-based `split_once` on strings this short.
        let eq = pair.bytes().position(|b| b == b'=');
        let (name, number) = eq.map_or((pair, ""), |eq| (&pair[..eq], &pair[eq + 1..]));
        if eq.is_none() || name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(corrupt(format!("{pair:?} is not name=integer")));
        }
        let slot = match name {
            "deadline" => &mut deadline,
            "expiry" => &mut expiry,
            "remember" => &mut remember,
            "size" => &mut size,
            "created" => &mut created,
            "seen" => &mut seen,
            _ if others.contains(&name) => return Err(corrupt(format!("{name} twice"))),
            _ => {
                others.push(name);
                &mut None
            }
        };
        let digits = number.strip_prefix('-').unwrap_or(number);
        let integer =
            !digits.is_empty() && number.len() <= 16 && digits.bytes().all(|b| b.is_ascii_digit());
        let value = number.parse::<i64>().ok().filter(|_| integer);
        let value = value.ok_or_else(|| match name {
            "deadline" | "expiry" | "created" | "seen" => {
                corrupt(format!("{number:?} is not a time in Unix milliseconds"))
            }
            _ => corrupt(format!("{name}={number:?} is not an integer")),
        })?;
        if slot.replace(value).is_some() {
            return Err(corrupt(format!("{name} twice")));
        }
    }
    let time = |ms: i64| {
        (0..=253_402_300_799_999)
            .contains(&ms)
            .then(|| from_millis(ms))
            .ok_or_else(|| corrupt(format!("{ms} is not a time in Unix milliseconds")))
    };
    if size.is_some_and(|s| s < 0) || remember.is_some_and(|r| !(0..=1).contains(&r)) {
        return Err(corrupt(format!(
            "size {size:?} or remember {remember:?} out of range"
        )));
    }
    Ok(Meta {
        deadline: time(deadline.ok_or_else(|| corrupt("no deadline".into()))?)?,
        expiry: expiry.map(time).transpose()?,
        remember: remember == Some(1),
        created: created.map(time).transpose()?,
        seen: seen.map(time).transpose()?,
    })
}

/// A duration in whole milliseconds, saturating.
pub(super) fn millis_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

pub(super) fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn blob(text: &str) -> Resp3Frame {
        Resp3Frame::BlobString {
            data: Bytes::copy_from_slice(text.as_bytes()),
            attributes: None,
        }
    }

    /// An `HGETALL` reply as RESP2 answers it (a flat array) and as RESP3 does (a map).
    fn replies(fields: &[(&str, &str)]) -> [Resp3Frame; 2] {
        let flat = fields.iter().flat_map(|(n, v)| [blob(n), blob(v)]);
        let map = fields.iter().map(|(n, v)| (blob(n), blob(v)));
        [
            Resp3Frame::Array {
                data: flat.collect(),
                attributes: None,
            },
            Resp3Frame::Map {
                data: map.collect(),
                attributes: None,
            },
        ]
    }

    fn in_an_hour() -> i64 {
        millis(SystemTime::now()) + 3_600_000
    }

    #[test]
    fn a_session_hash_decodes_alike_from_resp2_and_resp3() {
        let deadline = in_an_hour();
        let meta = format!(
            "deadline={deadline} size=9 expiry={} remember=1 created=1000 seen=2000",
            deadline - 1
        );
        let fields = [
            ("v:user", "\"ann\""),
            ("meta", meta.as_str()),
            ("owner", "ann"),
            ("later", "ignored"),
        ];
        for reply in replies(&fields) {
            let record = decode(reply).unwrap().unwrap();
            assert_eq!(record.values.len(), 1);
            assert_eq!(record.values["user"], "\"ann\"");
            assert_eq!(record.deadline, from_millis(deadline));
            assert_eq!(record.expiry, from_millis(deadline - 1));
            assert!(record.remember);
            assert_eq!(record.owner.as_deref(), Some("ann"));
            assert_eq!(record.created, Some(from_millis(1000)));
            assert_eq!(record.seen, Some(from_millis(2000)));
        }
        // Without an `expiry`, the session expires at its deadline.
        let meta = format!("deadline={deadline}");
        for reply in replies(&[("meta", meta.as_str())]) {
            let record = decode(reply).unwrap().unwrap();
            assert_eq!(record.expiry, record.deadline);
            assert!(!record.remember && record.owner.is_none() && record.values.is_empty());
            assert!(record.created.is_none() && record.seen.is_none());
        }
    }

    #[test]
    fn no_hash_a_marker_or_a_past_expiry_is_no_session() {
        let past = format!("deadline={}", millis(SystemTime::now()) - 1);
        let marker: [(&str, &str); 2] = [("moved", "abc"), ("owner", "ann")];
        for fields in [&[][..], &marker[..], &[("meta", past.as_str())][..]] {
            for reply in replies(fields) {
                assert_eq!(decode(reply).unwrap(), None, "{fields:?}");
            }
        }
        assert_eq!(decode(Resp3Frame::Null).unwrap(), None);
    }

    #[test]
    fn corrupt_hashes_and_foreign_replies_are_errors() {
        let deadline = format!("deadline={}", in_an_hour());
        let no_meta: [(&str, &str); 1] = [("v:user", "1")];
        let bad_meta: [(&str, &str); 1] = [("meta", "deadline=soon")];
        for fields in [&no_meta[..], &bad_meta[..]] {
            for reply in replies(fields) {
                assert!(
                    matches!(decode(reply), Err(Error::Malformed(_))),
                    "{fields:?}"
                );
            }
        }
        let not_utf8 = Resp3Frame::Array {
            data: vec![
                blob("meta"),
                blob(&deadline),
                blob("v:k"),
                Resp3Frame::BlobString {
                    data: Bytes::from_static(b"\xff"),
                    attributes: None,
                },
            ],
            attributes: None,
        };
        let odd = Resp3Frame::Array {
            data: vec![blob("meta")],
            attributes: None,
        };
        let number = Resp3Frame::Number {
            data: 1,
            attributes: None,
        };
        for reply in [not_utf8, odd, number] {
            assert!(matches!(decode(reply), Err(Error::Malformed(_))));
        }
        let wrong_type = Resp3Frame::SimpleError {
            data: "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
            attributes: None,
        };
        assert!(matches!(decode(wrong_type), Err(Error::Store(_))));
    }

    #[test]
    fn times_convert_to_and_from_unix_milliseconds() {
        for ms in [0, 1, -1, 1_767_225_600_123, -86_400_000] {
            assert_eq!(millis(from_millis(ms)), ms);
        }
        assert_eq!(millis_of(Duration::from_millis(1_500)), 1_500);
        assert_eq!(millis_of(Duration::MAX), i64::MAX);
    }

    /// The `meta` grammar, as the Lua prelude's `parse_meta` applies it too (the Lua side is
    /// exercised through the scripts by `tests/it/clocks.rs`).
    #[test]
    fn meta_grammar() {
        let ok = parse_meta("deadline=1767225600000 size=9").unwrap();
        assert_eq!(ok.deadline, from_millis(1_767_225_600_000));
        assert_eq!(ok.expiry, None);
        assert!(!ok.remember);
        let ok = parse_meta(" deadline=5  expiry=4 remember=1 future=7 ").unwrap();
        assert_eq!(ok.expiry, Some(from_millis(4)));
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
            assert!(
                matches!(parse_meta(corrupt), Err(Error::Malformed(_))),
                "{corrupt:?}"
            );
        }
    }
}
