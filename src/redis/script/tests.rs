//! The scripts' arguments, replies and errors, without Redis.

use std::time::{Duration, UNIX_EPOCH};

use fred::error::{Error as FredError, ErrorKind};

use super::*;

/// `Arg::IdleTtl` as commit.lua spells it: `IDLE_TTL`.
fn lua_name(arg: Arg) -> String {
    let mut name = String::new();
    for (i, c) in format!("{arg:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[test]
fn commit_lua_names_its_arguments_in_the_order_rust_sends_them() {
    let all = [
        Arg::Mode,
        Arg::Now,
        Arg::IdleTtl,
        Arg::Deadline,
        Arg::Remember,
        Arg::Cleared,
        Arg::Owner,
        Arg::MaxBytes,
        Arg::UserAgent,
        Arg::Ip,
        Arg::Removed,
    ];
    assert_eq!(all.len(), FIXED_ARGS);
    let names: Vec<String> = all.iter().map(|&a| lua_name(a)).collect();
    let numbers: Vec<String> = (1..=FIXED_ARGS).map(|n| n.to_string()).collect();
    let declared = format!("local {} =\n  {}\n", names.join(", "), numbers.join(", "));
    assert!(
        COMMIT_LUA.contains(&declared),
        "commit.lua lacks {declared:?}"
    );
    assert!(COMMIT_LUA.contains(&format!("local FIELDS = {}\n", FIXED_ARGS + 1)));
    for (i, &arg) in all.iter().enumerate() {
        assert_eq!(arg as usize, i, "{arg:?}");
        assert!(
            COMMIT_LUA.contains(&format!("--   {}", lua_name(arg))),
            "{arg:?} documented"
        );
    }
}

fn text(v: &Value) -> String {
    v.as_string().unwrap_or_else(|| panic!("{v:?} is not text"))
}

#[test]
fn commit_args_put_each_argument_in_its_place() {
    let now = UNIX_EPOCH + Duration::from_millis(1_000);
    let change = Change::update(now)
        .with_removed("gone")
        .with_set("k", "\"v\"")
        .with_remember(true)
        .with_idle_ttl(Some(Duration::from_millis(500)))
        .with_max_bytes(Some(64))
        .with_owner("ann")
        .with_cleared();
    let change = Change {
        user_agent: Some("curl/8".into()),
        ip: Some("::1".into()),
        ..change
    };
    let args: Vec<String> = commit_args(&change).iter().map(text).collect();
    let expected = [
        "u", "1000", "500", "", "1", "1", "ann", "64", "curl/8", "::1", "1",
    ];
    assert_eq!(args[..FIXED_ARGS], expected);
    assert_eq!(args[FIXED_ARGS..], ["v:gone", "v:k", "\"v\""]);

    let deadline = now + Duration::from_secs(60);
    let create = Change::create(now, deadline).with_max_bytes(Some(u64::MAX));
    let args: Vec<String> = commit_args(&create).iter().map(text).collect();
    let expected = [
        "c",
        "1000",
        "0",
        "61000",
        "",
        "0",
        "",
        &i64::MAX.to_string(),
        "",
        "",
        "0",
    ];
    assert_eq!(args, expected);
}

fn blob(text: &str) -> Resp3Frame {
    Resp3Frame::BlobString {
        data: text.as_bytes().to_vec().into(),
        attributes: None,
    }
}

fn number(n: i64) -> Resp3Frame {
    Resp3Frame::Number {
        data: n,
        attributes: None,
    }
}

fn array(items: Vec<Resp3Frame>) -> Resp3Frame {
    Resp3Frame::Array {
        data: items,
        attributes: None,
    }
}

#[test]
fn commit_replies_decode_or_are_refused() {
    let reply = array(vec![number(5_000), blob("1"), blob("ann")]);
    let applied = commit_reply(reply).unwrap().unwrap();
    assert_eq!(
        applied.committed.expiry,
        UNIX_EPOCH + Duration::from_secs(5)
    );
    assert!(applied.committed.remember);
    assert_eq!(applied.owner.as_deref(), Some("ann"));
    let reply = array(vec![number(5_000), blob("0"), blob("")]);
    let applied = commit_reply(reply).unwrap().unwrap();
    assert!(!applied.committed.remember);
    assert_eq!(applied.owner, None);
    assert_eq!(commit_reply(Resp3Frame::Null).unwrap(), None);
    for bad in [
        array(vec![number(5_000), blob("1")]),
        array(vec![number(5_000), blob("1"), blob(""), blob("d")]),
        array(vec![number(5_000), blob("1"), blob(""), array(vec![])]),
        array(vec![blob("soon"), blob("1"), blob("")]),
        array(vec![number(5_000), number(1), blob("")]),
        number(1),
    ] {
        assert!(matches!(commit_reply(bad), Err(Error::Malformed(_))));
    }
}

#[test]
fn error_replies_become_the_errors_fred_makes_of_them() {
    let simple = Resp3Frame::SimpleError {
        data: "NOSCRIPT No matching script".into(),
        attributes: None,
    };
    let e = error_of(simple).unwrap_err();
    assert!(e.details().starts_with("NOSCRIPT"), "{e:?}");
    let blob_error = Resp3Frame::BlobError {
        data: b"ERR TOOLARGE 5000".to_vec().into(),
        attributes: None,
    };
    let e = script_error(error_of(blob_error).unwrap_err());
    assert!(
        matches!(e, Error::TooLarge(ref s) if s == "5000 bytes"),
        "{e:?}"
    );
    assert_eq!(error_of(number(3)).unwrap(), number(3));
}

#[test]
fn script_errors_map_to_the_errors_they_mean() {
    let reply = |msg: &str| FredError::new(ErrorKind::Unknown, msg.to_owned());
    let too_large = script_error(reply("ERR user_script:60: TOOLARGE 2048"));
    assert!(
        matches!(&too_large, Error::TooLarge(m) if m == "2048 bytes"),
        "{too_large:?}"
    );
    let corrupt = script_error(reply("ERR user_script:17: MALFORMED meta"));
    assert!(
        matches!(&corrupt, Error::Malformed(m) if m.ends_with("field meta")),
        "{corrupt:?}"
    );
    let other = script_error(reply("OOM command not allowed"));
    assert!(matches!(other, Error::Store(_)), "{other:?}");
}

#[test]
fn a_script_is_its_parts_and_their_sha1() {
    let script = Script::new(&[PRELUDE_LUA, TAKE_LUA]);
    assert_eq!(script.lua, [PRELUDE_LUA, TAKE_LUA].concat());
    assert_eq!(script.sha, fred::util::sha1_hash(&script.lua));
    assert_eq!(script.sha.len(), 40);
}
