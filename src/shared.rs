//! [`Shared`]: what a layer and every session of it share, the settings and the store, and the
//! store calls bounded by the store timeout.

use std::{future::Future, sync::Arc};

use crate::{
    Error,
    config::Config,
    metrics::Op,
    observe,
    store::{Change, Committed, DynStore, Record},
    token,
};

/// What the layer and every session of it share: the settings and the store.
pub(crate) struct Shared {
    pub(crate) config: Config,
    store: Arc<dyn DynStore>,
    /// The store bounds its loads within the store timeout by itself.
    store_bounds_loads: bool,
}

impl Shared {
    pub(crate) fn new(config: Config, store: Arc<dyn DynStore>) -> Self {
        let store_bounds_loads = store
            .load_timeout()
            .is_some_and(|t| t <= config.store_timeout);
        Shared {
            config,
            store,
            store_bounds_loads,
        }
    }

    pub(crate) fn store_id<'a>(&self, token: &'a str) -> std::borrow::Cow<'a, str> {
        token::store_id(token, self.config.hash_token_in_store)
    }

    /// Bounds a store call by the store timeout, and observes it (its time, its errors).
    async fn bounded<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let limit = self.config.store_timeout;
        let bounded = async {
            tokio::time::timeout(limit, call)
                .await
                .unwrap_or(Err(Error::Timeout(limit)))
        };
        observe::store_call(op, bounded).await
    }

    /// Loads the session of `token`, in the span `session_load`.
    pub(crate) async fn load(&self, token: &str) -> Result<Option<Record>, Error> {
        let id = self.store_id(token);
        // Boxed: each async layer above keeps its argument beside the future it awaits
        // (rust-lang/rust#62958), so the bounded call, passed down unboxed, made this future
        // 2 KB, copied several times on every load.
        observe::load(Box::pin(async {
            if self.store_bounds_loads {
                return observe::store_call(Op::Load, self.store.load(&id)).await;
            }
            self.bounded(Op::Load, self.store.load(&id)).await
        }))
        .await
    }

    /// The session of `token` from the store's own copy in memory
    /// ([`load_local`](crate::store::SessionStore::load_local)), when it has one and no
    /// subscriber wants the span a load records: `None` sends the load through [`load`](Self::load).
    pub(crate) fn load_local(&self, token: &str) -> Option<Arc<Record>> {
        observe::load_local(|| self.store.load_local(&self.store_id(token)))
    }

    pub(crate) async fn commit(
        &self,
        token: &str,
        change: &Change,
    ) -> Result<Option<Committed>, Error> {
        let id = self.store_id(token);
        self.bounded(Op::Commit, self.store.commit(&id, change))
            .await
    }

    pub(crate) async fn delete_owner(&self, owner: &str) -> Result<u64, Error> {
        self.bounded(Op::DeleteOwner, self.store.delete_owner(owner))
            .await
    }

    pub(crate) async fn owner_sessions(&self, owner: &str) -> Result<Vec<(String, Record)>, Error> {
        self.bounded(Op::OwnerSessions, self.store.owner_sessions(owner))
            .await
    }

    pub(crate) async fn delete_owned(&self, id: &str, owner: &str) -> Result<bool, Error> {
        self.bounded(Op::DeleteOwned, self.store.delete_owned(id, owner))
            .await
    }

    pub(crate) async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        self.bounded(Op::Take, self.store.take(id, key)).await
    }

    pub(crate) async fn replace(&self, id: &str, successor: &str) -> Result<bool, Error> {
        self.bounded(Op::Replace, self.store.replace(id, successor))
            .await
    }

    pub(crate) async fn delete(&self, ids: &[String]) -> Result<(), Error> {
        for id in ids {
            self.bounded(Op::Delete, self.store.delete(id)).await?;
        }
        Ok(())
    }
}
