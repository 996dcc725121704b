//! [`RedisStore::ids`]: iterating every session with `SCAN`, on every primary.

use std::time::Duration;

use fred::{
    clients::Client,
    error::{Error as FredError, ErrorKind},
    interfaces::ClientLike,
    types::scan::{ScanType, Scanner},
};
use futures_core::Stream;
use futures_util::{StreamExt, future::Either, stream};

use super::{FredClient, RedisStore, client::Via};
use crate::Error;

/// SCAN page size for [`RedisStore::ids`].
const SCAN_COUNT: u32 = 1000;

impl<C: FredClient> RedisStore<C> {
    /// Streams the ids of all live sessions (SCS `Iterate`): a `SCAN` over the keys under the
    /// prefix on every primary (each node of a cluster), a page of 1000 at a time, so a million
    /// sessions never sit in memory at once. Ids are tokens, or their hashes when
    /// hash-token-in-store is on; the [`SessionStore`](crate::store::SessionStore) calls take
    /// them as they are. As with any `SCAN`, a session created or deleted during the iteration
    /// may or may not be visited.
    ///
    /// # Errors
    ///
    /// The stream yields an [`Error::Store`] for a `SCAN` page Redis fails to answer, or an
    /// [`Error::Timeout`] for one that does not come within the command timeout, and ends there.
    ///
    /// ```no_run
    /// # async fn demo(store: tower_scs::RedisStore) -> Result<(), tower_scs::Error> {
    /// use futures_util::TryStreamExt;
    /// use tower_scs::store::SessionStore;
    ///
    /// let mut ids = std::pin::pin!(store.ids());
    /// while let Some(id) = ids.try_next().await? {
    ///     if let Some(record) = store.load(&id).await? {
    ///         println!("{} values, expires {:?}", record.values.len(), record.expiry);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ids(&self) -> impl Stream<Item = Result<String, Error>> + Send + 'static {
        let client = self.client.client().clone();
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let count = Some(SCAN_COUNT);
        let pages = if client.is_clustered() {
            Either::Left(client.scan_cluster(pattern, count, Some(ScanType::Hash)))
        } else {
            Either::Right(client.scan(pattern, count, Some(ScanType::Hash)))
        };
        let pool = self.client.clients().to_vec();
        let pages = bounded(Box::pin(pages), (client, pool), self.command_timeout);
        let prefix = self.prefix.clone();
        pages.flat_map(move |page| {
            let ids: Vec<Result<String, Error>> = match page {
                Ok(mut page) => {
                    let keys = page.take_results().unwrap_or_default();
                    page.next();
                    keys.iter()
                        .filter_map(|key| super::keys::id_of(&prefix, key.as_bytes()))
                        .map(Ok)
                        .collect()
                }
                Err(e) => vec![Err(e)],
            };
            stream::iter(ids)
        })
    }
}

/// `pages`, each awaited for at most `limit` (fred's command timeout does not bound a `SCAN`
/// page: under a network blackhole one waited forever): a page that fails or does not come in
/// time ends the stream with its error, after which it yields nothing. `clients`: the one the
/// pages come through, and all of its store's.
fn bounded<S, T>(
    pages: std::pin::Pin<Box<S>>,
    clients: (Client, Vec<Client>),
    limit: Option<Duration>,
) -> impl Stream<Item = Result<T, Error>> + Send + 'static
where
    S: Stream<Item = Result<T, FredError>> + Send + 'static,
    T: Send + 'static,
{
    // Boxed, so that `ids()` stays `Unpin` as it was.
    Box::pin(stream::unfold(
        Some((pages, clients)),
        move |state| async move {
            let (mut pages, (client, pool)) = state?;
            let page = match limit {
                Some(limit) => tokio::time::timeout(limit, pages.next()).await,
                None => Ok(pages.next().await),
            };
            let late = || FredError::new(ErrorKind::Timeout, "a SCAN page did not come in time");
            match page.unwrap_or_else(|_| Some(Err(late())))? {
                Ok(page) => Some((Ok(page), Some((pages, (client, pool))))),
                Err(e) => {
                    let via = Via {
                        client: &client,
                        pool: &pool,
                        limit,
                    };
                    Some((Err(super::client::failed(via, e)), None))
                }
            }
        },
    ))
}

/// Escapes the glob characters of a key prefix for a `SCAN MATCH` pattern.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
