//! The Lua scripts (`*.lua` beside this file) and how they are run: `EVALSHA`, falling back to
//! `EVAL` once after a Redis restart or script flush. (Not fred's `Script::evalsha_with_reload`:
//! it clones every argument on every call, a cost on big sessions, and after a `NOSCRIPT` it
//! sends `SCRIPT LOAD` to every node and then `EVALSHA` again, where one `EVAL` does both.)

use fred::{
    clients::Client,
    interfaces::ClientLike,
    types::{ClusterHash, CustomCommand, Key, Value},
};

use super::decode::{from_millis, millis, millis_of};
use crate::{
    Error,
    store::{Change, Committed, Mode},
};

/// The helpers every session script starts with: the metadata grammar (both shapes), the live
/// check, batching.
pub(super) const PRELUDE_LUA: &str = include_str!("prelude.lua");
/// Applies a [`Change`] (see the script for its arguments).
pub(super) const COMMIT_LUA: &str = include_str!("commit.lua");
/// Removes one value of a live session and returns it ([`SessionStore::take`]).
pub(super) const TAKE_LUA: &str = include_str!("take.lua");
/// Turns a live session into a marker pointing at its successor ([`SessionStore::replace`]).
pub(super) const REPLACE_LUA: &str = include_str!("replace.lua");
/// Deletes a session or marker, optionally only if it belongs to a given owner.
pub(super) const DELETE_LUA: &str = include_str!("delete.lua");
/// Records a session in its owner's index.
pub(super) const INDEX_LUA: &str = include_str!("index.lua");

/// A Lua script and its SHA-1, run with `EVALSHA`, falling back to `EVAL` after a Redis restart.
#[derive(Clone, Debug)]
pub(super) struct Script {
    lua: String,
    sha: String,
}

impl Script {
    /// A script of `parts` concatenated (the prelude, then the body).
    pub(super) fn new(parts: &[&str]) -> Self {
        let lua = parts.concat();
        Script {
            sha: fred::util::sha1_hash(&lua),
            lua,
        }
    }

    /// Runs the script on `key`. `args` is called again only for the `EVAL` after a `NOSCRIPT`.
    ///
    /// Sent as custom commands routed by the key's slot, not through fred's `evalsha`: that
    /// one looks the key's node up before sending, so on a cluster whose routing state is not
    /// known yet (the store dials lazily) it fails at once instead of waiting for the
    /// connection like every other command.
    pub(super) async fn run(
        &self,
        client: &Client,
        key: impl Into<Key>,
        args: impl Fn() -> Vec<Value>,
    ) -> Result<Value, Error> {
        let key: Key = key.into();
        let slot = redis_protocol::redis_keyslot(key.as_bytes());
        let call = |name: &'static str, body: &str| {
            let rest = args();
            let mut all = Vec::with_capacity(3 + rest.len());
            all.extend([body.into(), 1.into(), key.clone().into()]);
            all.extend(rest);
            let command = CustomCommand::new_static(name, ClusterHash::Custom(slot), false);
            crate::observe::redis_command();
            async move {
                // Boxed where it is made, like the load's (see `RedisStore::fetch`).
                let reply = Box::pin(client.custom::<Value, Value>(command, all)).await;
                if let Err(e) = &reply {
                    super::client::revive_after(client, e);
                }
                reply
            }
        };
        match call("EVALSHA", &self.sha).await {
            // Redis restarted or its script cache was flushed: EVAL sends the source and caches it.
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                call("EVAL", &self.lua).await.map_err(script_error)
            }
            other => other.map_err(script_error),
        }
    }
}

/// Maps a script's `TOOLARGE <bytes>` and `MALFORMED <field>` errors to [`Error::TooLarge`] and
/// [`Error::Malformed`].
pub(super) fn script_error(e: fred::error::Error) -> Error {
    if let Some((_, size)) = e.details().split_once("TOOLARGE ") {
        return Error::TooLarge(format!("{size} bytes"));
    }
    if let Some((_, field)) = e.details().split_once("MALFORMED ") {
        return Error::Malformed(format!("stored session field {field}"));
    }
    Error::store(e)
}

/// `commit.lua`'s fixed arguments, in their `ARGV` order; the script names them alike
/// (`ARGV[NOW]`), and documents each. The fields to delete and the field/value pairs to set
/// follow them.
#[derive(Clone, Copy, Debug)]
enum Arg {
    Mode,
    Now,
    IdleTtl,
    Deadline,
    Remember,
    Cleared,
    Owner,
    MaxBytes,
    UserAgent,
    Ip,
    Fill,
    Removed,
}

/// How many fixed arguments `commit.lua` takes.
const FIXED_ARGS: usize = Arg::Removed as usize + 1;

/// The arguments of `commit.lua` for `change`, asking for the written record back if `fill`.
/// Numbers go as integers and fixed strings as static ones: nothing is allocated but the fields.
pub(super) fn commit_args(change: &Change, fill: bool) -> Vec<Value> {
    let fixed = |s: &'static str| Value::from_static_str(s);
    let mut head: [Value; FIXED_ARGS] = std::array::from_fn(|_| Value::Null);
    let mut put = |arg: Arg, value: Value| head[arg as usize] = value;
    put(
        Arg::Mode,
        fixed(match change.mode {
            Mode::Create { .. } => "c",
            Mode::Update { .. } => "u",
        }),
    );
    put(Arg::Now, millis(change.now).into());
    put(Arg::IdleTtl, change.idle_ttl.map_or(0, millis_of).into());
    let deadline = change.deadline();
    put(
        Arg::Deadline,
        deadline.map_or(fixed(""), |d| millis(d).into()),
    );
    put(
        Arg::Remember,
        fixed(match change.remember {
            None => "",
            Some(true) => "1",
            Some(false) => "0",
        }),
    );
    put(Arg::Cleared, fixed(if change.cleared { "1" } else { "0" }));
    put(
        Arg::Owner,
        change.owner.as_deref().unwrap_or_default().into(),
    );
    let max_bytes = change
        .max_bytes
        .map_or(0, |m| m.min(i64::MAX as u64) as i64);
    put(Arg::MaxBytes, max_bytes.into());
    put(
        Arg::UserAgent,
        change.user_agent.as_deref().unwrap_or_default().into(),
    );
    put(Arg::Ip, change.ip.as_deref().unwrap_or_default().into());
    put(Arg::Fill, fixed(if fill { "1" } else { "0" }));
    put(Arg::Removed, (change.removed.len() as i64).into());
    let mut args = Vec::with_capacity(FIXED_ARGS + change.removed.len() + 2 * change.set.len());
    args.extend(head);
    args.extend(change.removed.iter().map(|k| ["v:", k].concat().into()));
    for (k, v) in &change.set {
        args.push(["v:", k].concat().into());
        args.push(v.as_str().into());
    }
    args
}

/// What `commit.lua` answered for a session it wrote.
#[derive(Debug, PartialEq)]
pub(super) struct Applied {
    pub(super) committed: Committed,
    /// The session's owner, if it has one.
    pub(super) owner: Option<String>,
    /// The record as written (its `HGETALL`), when asked for and the session still lives.
    pub(super) record: Option<Vec<Value>>,
}

/// `commit.lua`'s reply, or `None` when an update found no live session.
pub(super) fn commit_reply(reply: Value) -> Result<Option<Applied>, Error> {
    let mut items = match reply {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        _ => return Err(bad_reply()),
    };
    let record = match items.len() {
        3 => None,
        4 => match items.pop() {
            Some(Value::Array(fields)) => Some(fields),
            _ => return Err(bad_reply()),
        },
        _ => return Err(bad_reply()),
    };
    let [expiry, remember, owner] = items.as_slice() else {
        return Err(bad_reply());
    };
    let expiry = expiry.as_i64().ok_or_else(bad_reply)?;
    let committed = Committed {
        expiry: from_millis(expiry),
        remember: remember.as_str().is_some_and(|r| r == "1"),
    };
    let owner = owner.as_string().filter(|o| !o.is_empty());
    Ok(Some(Applied {
        committed,
        owner,
        record,
    }))
}

/// A script reply not of the shape the script returns. The error does not show the reply: it
/// can hold a session id (a replaced session's successor), and errors reach the logs.
pub(super) fn bad_reply() -> Error {
    Error::Malformed("unexpected reply from a session script".into())
}

#[cfg(test)]
mod tests {
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
            Arg::Fill,
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
        let args: Vec<String> = commit_args(&change, true).iter().map(text).collect();
        let expected = [
            "u", "1000", "500", "", "1", "1", "ann", "64", "curl/8", "::1", "1", "1",
        ];
        assert_eq!(args[..FIXED_ARGS], expected);
        assert_eq!(args[FIXED_ARGS..], ["v:gone", "v:k", "\"v\""]);

        let deadline = now + Duration::from_secs(60);
        let create = Change::create(now, deadline).with_max_bytes(Some(u64::MAX));
        let args: Vec<String> = commit_args(&create, false).iter().map(text).collect();
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
            "0",
        ];
        assert_eq!(args, expected);
    }

    #[test]
    fn commit_replies_decode_or_are_refused() {
        let reply = Value::Array(vec![5_000.into(), "1".into(), "ann".into()]);
        let applied = commit_reply(reply).unwrap().unwrap();
        assert_eq!(
            applied.committed.expiry,
            UNIX_EPOCH + Duration::from_secs(5)
        );
        assert!(applied.committed.remember);
        assert_eq!(applied.owner.as_deref(), Some("ann"));
        assert_eq!(applied.record, None);
        let fields = Value::Array(vec!["d".into(), "5000".into()]);
        let reply = Value::Array(vec![5_000.into(), "0".into(), "".into(), fields]);
        let applied = commit_reply(reply).unwrap().unwrap();
        assert!(!applied.committed.remember);
        assert_eq!(applied.owner, None);
        assert_eq!(applied.record, Some(vec!["d".into(), "5000".into()]));
        assert_eq!(commit_reply(Value::Null).unwrap(), None);
        for bad in [
            Value::Array(vec![5_000.into(), "1".into()]),
            Value::Array(vec![5_000.into(), "1".into(), "".into(), "d".into()]),
            Value::Array(vec!["soon".into(), "1".into(), "".into()]),
            Value::Integer(1),
        ] {
            assert!(matches!(commit_reply(bad), Err(Error::Malformed(_))));
        }
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
}
