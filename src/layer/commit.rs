//! The commit: runs a session's [`Plan`] against the store once the handler has returned, and
//! says what the response must tell the client about its token.

use crate::{
    Error,
    session::{Plan, Write},
    shared::Shared,
    token,
    wire::TokenOut,
};

/// Runs a session's plan against the store; returns what to send about the token, if anything.
pub(crate) async fn commit_plan(shared: &Shared, plan: Plan) -> Result<Option<TokenOut>, Error> {
    match plan {
        Plan::Nothing => Ok(None),
        Plan::Failed(e) => Err(e),
        Plan::Destroy { delete } => {
            shared.delete(&delete).await?;
            Ok(Some(TokenOut::Clear))
        }
        Plan::Write(w) => write(shared, *w).await,
    }
}

/// Runs a write (see [`Write`] for the order). Whatever a renew or merge hands over must
/// still be live when the new record is confirmed, or the new record does not survive.
async fn write(shared: &Shared, mut w: Write) -> Result<Option<TokenOut>, Error> {
    shared.delete(&w.delete).await?;
    let target = shared.store_id(&w.token).into_owned();
    for merged in std::mem::take(&mut w.merged_ids) {
        if !shared.replace(&merged, &target).await? {
            w.drop_merged();
        }
    }
    let done = shared.commit(&w.token, &w.change).await?;
    let handed_over = match (&done, &w.renewed_from) {
        (Some(_), Some(from)) => shared.replace(from, &target).await?,
        _ => true,
    };
    match done {
        Some(committed) if handed_over => {
            let token = w.token;
            return Ok(Some(TokenOut::Set { token, committed }));
        }
        // The renewed session was destroyed, or renewed by another request, meanwhile.
        Some(_) => shared.delete(std::slice::from_ref(&target)).await?,
        // The session expired or was destroyed meanwhile: never adopt or resurrect it.
        None => {}
    }
    // What this request wrote itself goes into a new session with a new token.
    let Some(own) = w.own() else {
        return Ok(None);
    };
    let token = token::generate();
    let committed = shared.commit(&token, &own).await?.ok_or_else(|| {
        Error::store(std::io::Error::other(
            "the store refused to create a session",
        ))
    })?;
    Ok(Some(TokenOut::Set { token, committed }))
}
