//! Decoding what Redis answers: an `HGETALL` reply into a [`Record`], its metadata by the grammar
//! the Lua prelude shares (`meta.rs`), and times in Unix milliseconds.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fred::{error::ErrorKind, types::Resp3Frame};

use self::meta::{Raw, parse_meta};
use crate::{Error, store::Record};

mod meta;

/// Decodes an `HGETALL` reply frame; an empty hash is a missing session.
pub(super) fn decode(reply: Resp3Frame) -> Result<Option<Record>, Error> {
    // RESP2 answers a flat array of fields and values (fred hands it over as a RESP3 array),
    // RESP3 a map.
    match error_of(reply).map_err(Error::store)? {
        Resp3Frame::Array { data, .. } if data.len() % 2 == 0 => record_of(
            data.chunks_exact(2)
                .map(|p| Ok((text(&p[0])?, text(&p[1])?))),
        ),
        Resp3Frame::Map { data, .. } => {
            record_of(data.iter().map(|(n, v)| Ok((text(n)?, text(v)?))))
        }
        Resp3Frame::Null => Ok(None),
        other => Err(Error::Malformed(format!(
            "unexpected HGETALL reply {other:?}"
        ))),
    }
}

/// The record that a hash's field/value pairs make; no pair at all is a missing session.
fn record_of<'a>(
    pairs: impl ExactSizeIterator<Item = Result<(&'a str, &'a str), Error>>,
) -> Result<Option<Record>, Error> {
    if pairs.len() == 0 {
        return Ok(None);
    }
    let mut fields = Fields::with_capacity(pairs.len());
    for pair in pairs {
        let (name, value) = pair?;
        fields.add(name, value)?;
    }
    fields.finish()
}

/// A session hash's fields, read one at a time.
struct Fields {
    record: Record,
    /// The one-letter metadata fields (`d`, `s`, …), and whether there was any.
    meta: Raw,
    has_meta: bool,
    /// The earlier shape's `meta` text, parsed.
    old_meta: Option<Raw>,
    /// The hash is a replaced token's marker, not a session.
    moved: bool,
}

impl Fields {
    fn with_capacity(fields: usize) -> Self {
        Fields {
            // Most fields are usually values.
            record: Record::new(
                HashMap::with_capacity(fields.saturating_sub(2)),
                UNIX_EPOCH,
                UNIX_EPOCH,
            ),
            meta: Raw::default(),
            has_meta: false,
            old_meta: None,
            moved: false,
        }
    }

    fn add(&mut self, name: &str, value: &str) -> Result<(), Error> {
        if let Some(key) = name.strip_prefix("v:") {
            self.record.values.insert(key.to_owned(), value.to_owned());
            return Ok(());
        }
        match name {
            "meta" => self.old_meta = Some(parse_meta(value)?),
            "moved" => self.moved = true,
            "owner" => self.record.owner = Some(value.to_owned()),
            "ua" => self.record.user_agent = Some(value.to_owned()),
            "ip" => self.record.ip = Some(value.to_owned()),
            // Unknown fields are left alone, for forward compatibility.
            _ => self.has_meta |= self.meta.field(name, value)?,
        }
        Ok(())
    }

    /// The live session the fields make, if any.
    fn finish(self) -> Result<Option<Record>, Error> {
        let mut record = self.record;
        if self.moved {
            return Ok(None);
        }
        let meta = match (self.old_meta, self.has_meta) {
            (Some(_), true) => {
                return Err(Error::Malformed(
                    "session hash holds both metadata fields and an old meta field".into(),
                ));
            }
            (Some(old), false) => old,
            (None, _) => self.meta,
        };
        let meta = meta.check()?;
        record.deadline = meta.deadline;
        record.expiry = meta.expiry.unwrap_or(record.deadline);
        record.remember = meta.remember;
        record.created = meta.created;
        record.seen = meta.seen;
        if record.expiry <= SystemTime::now() {
            // Foreign data without a TTL, or a clock ahead of the writer's: expired all the same.
            return Ok(None);
        }
        Ok(Some(record))
    }
}

/// The text of a string reply frame.
pub(super) fn text(frame: &Resp3Frame) -> Result<&str, Error> {
    match frame {
        Resp3Frame::BlobString { data, .. }
        | Resp3Frame::SimpleString { data, .. }
        | Resp3Frame::VerbatimString { data, .. } => {
            std::str::from_utf8(data).map_err(|_| not_text())
        }
        _ => Err(not_text()),
    }
}

fn not_text() -> Error {
    Error::Malformed("session hash holds a field that is not UTF-8".into())
}

/// An error reply frame as the error fred makes of it on its own replies (its text, whole, as
/// the details); any other frame as it is.
pub(super) fn error_of(frame: Resp3Frame) -> Result<Resp3Frame, fred::error::Error> {
    let message = match &frame {
        Resp3Frame::SimpleError { data, .. } => data.to_string(),
        Resp3Frame::BlobError { data, .. } => String::from_utf8_lossy(data).into_owned(),
        _ => return Ok(frame),
    };
    Err(fred::error::Error::new(ErrorKind::Unknown, message))
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
mod tests;
