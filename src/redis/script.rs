//! The Lua scripts (`*.lua` beside this file) and how they are run: `EVALSHA`, falling back to
//! `EVAL` once after a Redis restart or script flush. (Not fred's `Script::evalsha_with_reload`:
//! it clones every argument on every call, a cost on big sessions, and after a `NOSCRIPT` it
//! sends `SCRIPT LOAD` to every node and then `EVALSHA` again, where one `EVAL` does both.)

use std::future::Future;

use fred::{
    interfaces::ClientLike,
    types::{ClusterHash, CustomCommand, Key, Resp3Frame, Value},
};

use super::{
    client::Via,
    decode::{error_of, from_millis, millis, millis_of, text},
};
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

    /// Runs the script on `key` through `via`'s client (a script that runs past the command
    /// timeout ends in [`Error::Timeout`], like the store's other commands, and the store's
    /// other clients are checked). `args` is called again only for the `EVAL` after a `NOSCRIPT`.
    ///
    /// Sent as custom commands routed by the key's slot, not through fred's `evalsha`: that
    /// one looks the key's node up before sending, so on a cluster whose routing state is not
    /// known yet (the store dials lazily) it fails at once instead of waiting for the
    /// connection like every other command.
    pub(super) async fn run(
        &self,
        via: Via<'_>,
        key: impl Into<Key>,
        args: impl Fn() -> Vec<Value>,
    ) -> Result<Value, Error> {
        // Boxed where it is made, like the load's (see `RedisStore::fetch`).
        let send = |command, all| Box::pin(via.client.custom::<Value, Value>(command, all));
        self.run_with(via, key.into(), args, send).await
    }

    /// [`run`](Self::run), answering the reply frame as Redis sent it (no fred `Value`s on the
    /// way: the commit's reply is decoded straight from the frame).
    pub(super) async fn run_raw(
        &self,
        via: Via<'_>,
        key: impl Into<Key>,
        args: impl Fn() -> Vec<Value>,
    ) -> Result<Resp3Frame, Error> {
        let send = |command, all| {
            Box::pin(async move {
                match via.client.custom_raw(command, all).await {
                    Ok(frame) => error_of(frame),
                    Err(e) => Err(e),
                }
            })
        };
        self.run_with(via, key.into(), args, send).await
    }

    async fn run_with<T, F>(
        &self,
        via: Via<'_>,
        key: Key,
        args: impl Fn() -> Vec<Value>,
        send: impl Fn(CustomCommand, Vec<Value>) -> F,
    ) -> Result<T, Error>
    where
        F: Future<Output = Result<T, fred::error::Error>>,
    {
        let slot = redis_protocol::redis_keyslot(key.as_bytes());
        let call = |name: &'static str, body: &str| {
            let rest = args();
            let mut all = Vec::with_capacity(3 + rest.len());
            all.extend([body.into(), 1.into(), key.clone().into()]);
            all.extend(rest);
            let command = CustomCommand::new_static(name, ClusterHash::Custom(slot), false);
            crate::observe::redis_command();
            send(command, all)
        };
        let failed = |e| super::client::failed_as(via, e, script_error);
        match call("EVALSHA", &self.sha).await {
            // Redis restarted or its script cache was flushed: EVAL sends the source and caches it.
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                call("EVAL", &self.lua).await.map_err(failed)
            }
            other => other.map_err(failed),
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
    Removed,
}

/// How many fixed arguments `commit.lua` takes.
const FIXED_ARGS: usize = Arg::Removed as usize + 1;

/// The arguments of `commit.lua` for `change`.
/// Numbers go as integers and fixed strings as static ones: nothing is allocated but the fields.
pub(super) fn commit_args(change: &Change) -> Vec<Value> {
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
}

/// `commit.lua`'s reply, or `None` when an update found no live session.
pub(super) fn commit_reply(reply: Resp3Frame) -> Result<Option<Applied>, Error> {
    let items = match reply {
        Resp3Frame::Null => return Ok(None),
        Resp3Frame::Array { data, .. } => data,
        _ => return Err(bad_reply()),
    };
    let [expiry, remember, owner] = items.as_slice() else {
        return Err(bad_reply());
    };
    let expiry = match expiry {
        Resp3Frame::Number { data, .. } => *data,
        _ => return Err(bad_reply()),
    };
    let committed = Committed {
        expiry: from_millis(expiry),
        remember: text(remember).map_err(|_| bad_reply())? == "1",
    };
    let owner = text(owner).map_err(|_| bad_reply())?;
    Ok(Some(Applied {
        committed,
        owner: (!owner.is_empty()).then(|| owner.to_owned()),
    }))
}

/// A script reply not of the shape the script returns. The error does not show the reply: it
/// can hold a session id (a replaced session's successor), and errors reach the logs.
pub(super) fn bad_reply() -> Error {
    Error::Malformed("unexpected reply from a session script".into())
}

#[cfg(test)]
mod tests;
