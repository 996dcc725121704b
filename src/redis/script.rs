//! The Lua scripts (`*.lua` beside this file) and how they are run: `EVALSHA`, falling back to
//! `EVAL` once after a Redis restart or script flush. (fred has no script helper that keeps the
//! SHA and the source together and retries `NOSCRIPT` on the key's own connection, so this does.)

use fred::{clients::Client, interfaces::LuaInterface, types::Value};

use crate::Error;

/// The helpers every session script starts with: the `meta` grammar, the live check, batching.
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
    pub(super) async fn run(
        &self,
        client: &Client,
        key: String,
        args: impl Fn() -> Vec<Value>,
    ) -> Result<Value, Error> {
        match client
            .evalsha::<Value, _, _, _>(self.sha.as_str(), key.as_str(), args())
            .await
        {
            // Redis restarted or its script cache was flushed: EVAL sends the source and caches it.
            Err(e) if e.details().starts_with("NOSCRIPT") => client
                .eval(self.lua.as_str(), key, args())
                .await
                .map_err(script_error),
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

pub(super) fn bad_reply(reply: &impl std::fmt::Debug) -> Error {
    Error::Malformed(format!(
        "unexpected reply from the commit script: {reply:?}"
    ))
}
