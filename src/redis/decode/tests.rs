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

/// The record both tests below store: ann's, one value, expiring 1 ms before its deadline.
fn assert_anns(record: Record, deadline: i64) {
    assert_eq!(record.values.len(), 1);
    assert_eq!(record.values["user"], "\"ann\"");
    assert_eq!(record.deadline, from_millis(deadline));
    assert_eq!(record.expiry, from_millis(deadline - 1));
    assert!(record.remember);
    assert_eq!(record.owner.as_deref(), Some("ann"));
    assert_eq!(record.created, Some(from_millis(1000)));
    assert_eq!(record.seen, Some(from_millis(2000)));
}

#[test]
fn a_session_hash_decodes_alike_from_resp2_and_resp3() {
    let deadline = in_an_hour();
    let (d, e) = (deadline.to_string(), (deadline - 1).to_string());
    let fields = [
        ("v:user", "\"ann\""),
        ("d", d.as_str()),
        ("s", "9"),
        ("e", e.as_str()),
        ("r", "1"),
        ("c", "1000"),
        ("l", "2000"),
        ("owner", "ann"),
        ("later", "ignored"),
    ];
    for reply in replies(&fields) {
        assert_anns(decode(reply).unwrap().unwrap(), deadline);
    }
    // Without an `e`, the session expires at its deadline.
    for reply in replies(&[("d", d.as_str()), ("s", "0")]) {
        let record = decode(reply).unwrap().unwrap();
        assert_eq!(record.expiry, record.deadline);
        assert!(!record.remember && record.owner.is_none() && record.values.is_empty());
        assert!(record.created.is_none() && record.seen.is_none());
    }
}

/// A record of the earlier shape, its metadata in one `meta` text, reads back the same.
#[test]
fn an_old_meta_field_decodes_as_before() {
    let deadline = in_an_hour();
    let meta = format!(
        "deadline={deadline} size=9 expiry={} remember=1 created=1000 seen=2000",
        deadline - 1
    );
    let fields = [
        ("v:user", "\"ann\""),
        ("meta", meta.as_str()),
        ("owner", "ann"),
    ];
    for reply in replies(&fields) {
        assert_anns(decode(reply).unwrap().unwrap(), deadline);
    }
}

#[test]
fn no_hash_a_marker_or_a_past_expiry_is_no_session() {
    let past = (millis(SystemTime::now()) - 1).to_string();
    let old_past = format!("deadline={past}");
    let marker: [(&str, &str); 2] = [("moved", "abc"), ("owner", "ann")];
    let expired: [(&str, &str); 1] = [("d", past.as_str())];
    let old_expired: [(&str, &str); 1] = [("meta", old_past.as_str())];
    for fields in [&[][..], &marker, &expired, &old_expired] {
        for reply in replies(fields) {
            assert_eq!(decode(reply).unwrap(), None, "{fields:?}");
        }
    }
    assert_eq!(decode(Resp3Frame::Null).unwrap(), None);
}

#[test]
fn corrupt_hashes_and_foreign_replies_are_errors() {
    let deadline = in_an_hour().to_string();
    let old_deadline = format!("deadline={deadline}");
    let no_meta: [(&str, &str); 1] = [("v:user", "1")];
    let bad_meta: [(&str, &str); 1] = [("meta", "deadline=soon")];
    let bad_field: [(&str, &str); 2] = [("d", &deadline), ("s", "x")];
    let no_deadline: [(&str, &str); 1] = [("s", "1")];
    let both: [(&str, &str); 2] = [("d", &deadline), ("meta", &old_deadline)];
    for fields in [&no_meta[..], &bad_meta, &bad_field, &no_deadline, &both] {
        for reply in replies(fields) {
            assert!(
                matches!(decode(reply), Err(Error::Malformed(_))),
                "{fields:?}"
            );
        }
    }
    let not_utf8 = Resp3Frame::Array {
        data: vec![
            blob("d"),
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
        data: vec![blob("d")],
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
