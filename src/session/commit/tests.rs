//! A commit in flight, without a layer: reads on another clone wait for it, writes made
//! meanwhile are pending for the next commit, and the session goes on under what it stored.

use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};

use crate::{
    Error, MemoryStore, SessionLoader,
    config::Config,
    shared::Shared,
    store::{Change, Committed, Record, SessionStore},
};

/// A memory store whose commits stop at a gate: `entered` is notified when one arrives, and it
/// goes on once `release` has a permit.
#[derive(Clone)]
struct Gated {
    inner: MemoryStore,
    entered: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl SessionStore for Gated {
    async fn load(&self, id: &str) -> Result<Option<Record>, Error> {
        self.inner.load(id).await
    }
    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        self.entered.notify_one();
        self.release.acquire().await.expect("never closed").forget();
        self.inner.commit(id, change).await
    }
    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.inner.delete(id).await
    }
    async fn replace(&self, id: &str, successor: &str) -> Result<bool, Error> {
        self.inner.replace(id, successor).await
    }
    async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        self.inner.take(id, key).await
    }
}

/// A gated store, and a loader of sessions on it.
fn gated() -> (Gated, SessionLoader) {
    let store = Gated {
        inner: MemoryStore::new(),
        entered: Arc::new(Notify::new()),
        release: Arc::new(Semaphore::new(0)),
    };
    let shared = Shared::new(Config::default(), Arc::new(store.clone()));
    (store, SessionLoader::new(Arc::new(shared)))
}

/// Polls `future` once: whether it is done already.
async fn ready_now<F: Future + Unpin>(future: &mut F) -> bool {
    tokio::select! {
        biased;
        _ = future => true,
        () = std::future::ready(()) => false,
    }
}

#[tokio::test]
async fn a_read_during_a_commit_waits_for_it_and_a_write_waits_for_the_next() {
    let (store, loader) = gated();
    let session = loader.create();
    session.insert("a", 1);
    let committing = tokio::spawn({
        let session = session.clone();
        async move { session.commit().await }
    });
    store.entered.notified().await;

    // The commit is at the store: a read waits, a write is taken for the next commit.
    let mut read = Box::pin(session.get::<i32>("a"));
    assert!(!ready_now(&mut read).await, "a read waits for the commit");
    session.insert("b", 2);
    store.release.add_permits(1);
    let token = committing
        .await
        .unwrap()
        .unwrap()
        .expect("a new session gets a token");
    assert_eq!(
        read.await.unwrap(),
        Some(1),
        "the read sees what was committed"
    );
    assert_eq!(
        session.get::<i32>("b").await.unwrap(),
        Some(2),
        "the write is pending"
    );
    assert_eq!(
        loader
            .load(&token)
            .await
            .unwrap()
            .unwrap()
            .get::<i32>("b")
            .await
            .unwrap(),
        None
    );

    // The next commit stores it, under the same token.
    store.release.add_permits(1);
    assert_eq!(
        session.commit().await.unwrap().as_deref(),
        Some(token.as_str())
    );
    let stored = loader.load(&token).await.unwrap().expect("live");
    assert_eq!(stored.get::<i32>("a").await.unwrap(), Some(1));
    assert_eq!(stored.get::<i32>("b").await.unwrap(), Some(2));
}

#[tokio::test]
async fn a_commit_waits_for_the_one_in_flight() {
    let (store, loader) = gated();
    let session = loader.create();
    session.insert("a", 1);
    let first = tokio::spawn({
        let session = session.clone();
        async move { session.commit().await }
    });
    store.entered.notified().await;
    session.insert("a", 2);
    let mut second = Box::pin(session.commit());
    assert!(
        !ready_now(&mut second).await,
        "a second commit waits for the first"
    );
    store.release.add_permits(2);
    let token = first.await.unwrap().unwrap().expect("stored");
    // The second stored its write on the token the first made: one session, not two.
    assert_eq!(second.await.unwrap().as_deref(), Some(token.as_str()));
    let stored = loader.load(&token).await.unwrap().expect("live");
    assert_eq!(stored.get::<i32>("a").await.unwrap(), Some(2));
}
