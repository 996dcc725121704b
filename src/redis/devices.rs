//! The owner index (listing it, dropping ids from it), an owner's live sessions for the device
//! list, and the delete of one of them: each a single-key command or script, so they work
//! unchanged on Redis Cluster.

use fred::interfaces::SortedSetsInterface;

use super::{FredClient, RedisStore};
use crate::{
    Error,
    store::{Record, SessionStore},
};

/// How many of an owner's sessions are loaded at once for its device list.
const LOADS_AT_ONCE: usize = 64;

impl<C: FredClient> RedisStore<C> {
    /// The live sessions of `owner`'s index whose own `owner` is still `owner`, each loaded
    /// (`HGETALL`, on its own node); members found gone (expired, deleted) or moved to another
    /// owner are dropped from the index afterwards (`ZREM`), so that it shrinks to the live
    /// count. (Index writes drop members past their score too, and the index expires with its
    /// last member.)
    pub(super) async fn live_of(&self, owner: &str) -> Result<Vec<(String, Record)>, Error> {
        let ids = self.indexed(owner).await?;
        // Loaded a bounded number at a time: an owner may have thousands.
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LOADS_AT_ONCE) {
            let loads = chunk.iter().map(|id| SessionStore::load(self, id));
            records.extend(futures_util::future::try_join_all(loads).await?);
        }
        let (mut live, mut gone) = (Vec::new(), Vec::new());
        for (id, record) in ids.into_iter().zip(records) {
            match record.filter(|r| r.owner.as_deref() == Some(owner)) {
                Some(record) => live.push((id, record)),
                None => gone.push(id),
            }
        }
        self.unindex(owner, gone).await?;
        Ok(live)
    }

    /// The ids `owner`'s index lists (`ZRANGE`).
    pub(super) async fn indexed(&self, owner: &str) -> Result<Vec<String>, Error> {
        let index = self.owner_key(owner);
        crate::observe::redis_command();
        let client = self.client.client_for(index.as_bytes());
        (client
            .zrange(index.as_str(), 0, -1, None, false, None, false)
            .await)
            .map_err(|e| self.failed(client, e))
    }

    /// Drops `ids` from `owner`'s index (one `ZREM`; none when there are none).
    pub(super) async fn unindex<I: Into<String>>(
        &self,
        owner: &str,
        ids: Vec<I>,
    ) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.into_iter().map(Into::into).collect();
        let index = self.owner_key(owner);
        crate::observe::redis_command();
        let client = self.client.client_for(index.as_bytes());
        (client.zrem::<(), _, _>(index, ids).await).map_err(|e| self.failed(client, e))
    }

    /// Deletes `id` if it is `owner`'s, and drops it from the index.
    pub(super) async fn delete_if_owned(&self, id: &str, owner: &str) -> Result<bool, Error> {
        let deleted = self.delete_following(id.to_owned(), owner).await?;
        if deleted.is_some() {
            self.unindex(owner, vec![id]).await?;
        }
        Ok(deleted.is_some_and(|n| n > 0))
    }
}
