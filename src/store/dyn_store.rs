//! [`DynStore`]: the object-safe form of [`SessionStore`], which every store gets for free, so
//! that `Session` and `SessionLayer` are not generic over the store.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use super::{Change, Committed, Record, SessionStore};
use crate::Error;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`SessionStore`], so that `Session` and `SessionLayer` are not generic.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, Error>>;
    fn load_local(&self, id: &str) -> Option<Arc<Record>>;
    fn commit<'a>(
        &'a self,
        id: &'a str,
        change: &'a Change,
    ) -> BoxFuture<'a, Result<Option<Committed>, Error>>;
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    fn replace<'a>(&'a self, id: &'a str, successor: &'a str)
    -> BoxFuture<'a, Result<bool, Error>>;
    fn take<'a>(
        &'a self,
        id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>>;
    fn delete_owner<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, Error>>;
    fn owner_sessions<'a>(
        &'a self,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Record)>, Error>>;
    fn delete_owned<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, Error>>;
    fn load_timeout(&self) -> Option<Duration>;
}

impl<S: SessionStore> DynStore for S {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, Error>> {
        Box::pin(SessionStore::load(self, id))
    }
    fn load_local(&self, id: &str) -> Option<Arc<Record>> {
        SessionStore::load_local(self, id)
    }
    fn commit<'a>(
        &'a self,
        id: &'a str,
        change: &'a Change,
    ) -> BoxFuture<'a, Result<Option<Committed>, Error>> {
        Box::pin(SessionStore::commit(self, id, change))
    }
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(SessionStore::delete(self, id))
    }
    fn replace<'a>(
        &'a self,
        id: &'a str,
        successor: &'a str,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(SessionStore::replace(self, id, successor))
    }
    fn take<'a>(
        &'a self,
        id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(SessionStore::take(self, id, key))
    }
    fn delete_owner<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(SessionStore::delete_owner(self, owner))
    }
    fn owner_sessions<'a>(
        &'a self,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Record)>, Error>> {
        Box::pin(SessionStore::owner_sessions(self, owner))
    }
    fn delete_owned<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(SessionStore::delete_owned(self, id, owner))
    }
    fn load_timeout(&self) -> Option<Duration> {
        SessionStore::load_timeout(self)
    }
}
