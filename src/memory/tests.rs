//! Unit tests of [`MemoryStore`](super::MemoryStore).

use std::{sync::Arc, time::Duration};

use tokio::sync::Barrier;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn id(n: usize) -> String {
    format!("{n:043}")
}

/// A create (with a deadline `life` from now) when `create`, else an update.
fn change(create: bool, set: &[(&str, &str)], owner: Option<&str>, life: Duration) -> Change {
    let now = SystemTime::now();
    let mut change = match create {
        true => Change::create(now, later(now, life)),
        false => Change::update(now),
    };
    for (k, v) in set {
        change = change.with_set(*k, *v);
    }
    change.owner = owner.map(str::to_owned);
    change
}

async fn create(store: &MemoryStore, id: &str, owner: Option<&str>, life: Duration) {
    let change = change(true, &[("k", "\"v\"")], owner, life);
    store.commit(id, &change).await.unwrap().unwrap();
}

/// Runs `f(i)` for i in 0..8 on spawned tasks released together; returns their answers.
async fn race<T, F>(f: impl Fn(usize) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (barrier, call) = (Arc::clone(&barrier), f(i));
            tokio::spawn(async move {
                barrier.wait().await;
                call.await
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replace_wins_once_and_leaves_no_live_record() {
    let store = MemoryStore::new();
    for round in 0..200 {
        let old = id(round);
        create(&store, &old, None, HOUR).await;
        let wins = race(|i| {
            let (store, old) = (store.clone(), old.clone());
            async move { store.replace(&old, &id(1_000 + i)).await.unwrap() }
        })
        .await;
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "round {round}");
        let update = change(false, &[("k", "1")], None, HOUR);
        assert_eq!(store.load(&old).await.unwrap(), None);
        assert_eq!(store.commit(&old, &update).await.unwrap(), None);
        assert_eq!(store.take(&old, "k").await.unwrap(), None);
        assert!(!store.replace(&old, &id(9)).await.unwrap());
    }
    assert_eq!(store.len(), 0, "markers are not sessions");
}

#[tokio::test]
async fn delete_of_a_replaced_id_deletes_its_successors() {
    let store = MemoryStore::new();
    for n in 0..3 {
        create(&store, &id(n), None, HOUR).await;
    }
    assert!(store.replace(&id(0), &id(1)).await.unwrap());
    assert!(store.replace(&id(1), &id(2)).await.unwrap());
    store.delete(&id(0)).await.unwrap();
    assert_eq!(store.load(&id(2)).await.unwrap(), None);
    assert!(store.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn take_gives_the_value_once_and_keeps_the_expiry() {
    let store = MemoryStore::new();
    for round in 0..200 {
        let sid = id(round);
        create(&store, &sid, None, HOUR).await;
        let expiry = store.load(&sid).await.unwrap().unwrap().expiry;
        let got = race(|_| {
            let (store, sid) = (store.clone(), sid.clone());
            async move { store.take(&sid, "k").await.unwrap() }
        })
        .await;
        let got: Vec<_> = got.into_iter().flatten().collect();
        assert_eq!(got, ["\"v\""], "round {round}");
        let record = store.load(&sid).await.unwrap().unwrap();
        assert!(record.values.is_empty());
        assert_eq!(record.expiry, expiry);
    }
}

#[tokio::test]
async fn the_owner_index_follows_the_owner() {
    let store = MemoryStore::new();
    create(&store, &id(0), Some("alice"), HOUR).await;
    let to_bob = change(false, &[], Some("bob"), HOUR);
    store.commit(&id(0), &to_bob).await.unwrap().unwrap();
    assert_eq!(store.delete_owner("alice").await.unwrap(), 0);
    assert!(store.load(&id(0)).await.unwrap().is_some());
    assert_eq!(store.delete_owner("bob").await.unwrap(), 1);
    assert_eq!(store.load(&id(0)).await.unwrap(), None);

    // A replaced session of alice's takes its successor (whoever owns it) along.
    create(&store, &id(1), Some("alice"), HOUR).await;
    create(&store, &id(2), None, HOUR).await;
    assert!(store.replace(&id(1), &id(2)).await.unwrap());
    assert_eq!(store.delete_owner("alice").await.unwrap(), 1);
    assert!(store.is_empty());
    assert_eq!(store.indexed(), 0);
}

#[tokio::test]
async fn an_owned_session_keeps_when_it_was_tied_and_last_seen() {
    let store = MemoryStore::new();
    create(&store, &id(0), None, HOUR).await;
    let anonymous = store.load(&id(0)).await.unwrap().unwrap();
    assert_eq!((anonymous.created, anonymous.seen), (None, None));
    let mut tie = change(false, &[], Some("alice"), HOUR);
    store.commit(&id(0), &tie).await.unwrap().unwrap();
    let tied = store.load(&id(0)).await.unwrap().unwrap();
    assert_eq!((tied.created, tied.seen), (Some(tie.now), Some(tie.now)));
    // A later commit moves `seen`, not `created`.
    tie.now += Duration::from_secs(5);
    tie.owner = None;
    store.commit(&id(0), &tie).await.unwrap().unwrap();
    let seen = store.load(&id(0)).await.unwrap().unwrap();
    assert_eq!(seen.created, tied.created);
    assert_eq!(seen.seen, Some(tie.now));
}

#[tokio::test]
async fn the_owner_index_drains_as_sessions_expire_or_go() {
    let store = MemoryStore::new();
    for n in 0..10_000 {
        let life = if n % 2 == 0 {
            Duration::from_millis(50)
        } else {
            HOUR
        };
        create(&store, &id(n), Some("alice"), life).await;
    }
    assert_eq!(store.indexed(), 10_000);
    for n in (1..10_000).step_by(2) {
        store.delete(&id(n)).await.unwrap();
    }
    // Expired entries go at the next tick of moka's timer wheel (~1.07 s): poll for it.
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.cache.run_pending_tasks();
        if store.indexed() == 0 {
            break;
        }
    }
    assert_eq!(store.indexed(), 0);
    assert_eq!(format!("{store:?}"), "MemoryStore { sessions: 0, .. }");
}

#[tokio::test]
async fn a_reader_drops_the_expired_record_it_finds() {
    let store = MemoryStore::new();
    create(&store, &id(0), None, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(store.load(&id(0)).await.unwrap(), None);
    assert_eq!(format!("{store:?}"), "MemoryStore { sessions: 0, .. }");
}

#[tokio::test]
async fn the_cap_drops_the_least_recently_used() {
    let store = MemoryStore::new().max_sessions(100);
    for n in 0..1_000 {
        create(&store, &id(n), None, HOUR).await;
        // Session 0 stays in use.
        assert!(store.load(&id(0)).await.unwrap().is_some(), "session {n}");
    }
    assert_eq!(store.len(), 100);
    assert!(store.load(&id(0)).await.unwrap().is_some());
    assert!(store.load(&id(999)).await.unwrap().is_some());
    assert_eq!(store.load(&id(1)).await.unwrap(), None);
}

#[tokio::test]
async fn a_lowered_limit_refuses_only_growth_past_it() {
    let store = MemoryStore::new();
    let big = "x".repeat(100);
    let set = [("a", big.as_str()), ("b", "1")];
    store
        .commit(&id(0), &change(true, &set, None, HOUR))
        .await
        .unwrap();
    let limited = |set: &[(&str, &str)]| Change {
        max_bytes: Some(50),
        ..change(false, set, None, HOUR)
    };
    let shrink = limited(&[("a", "\"short\"")]);
    assert!(store.commit(&id(0), &shrink).await.unwrap().is_some());
    let grow = Change {
        cleared: true,
        ..limited(&[("a", &"y".repeat(60))])
    };
    let err = store.commit(&id(0), &grow).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    let record = store.load(&id(0)).await.unwrap().unwrap();
    assert_eq!(record.values["a"], "\"short\"");
    let create = Change {
        max_bytes: Some(50),
        ..change(true, &[("a", &big)], None, HOUR)
    };
    assert!(store.commit(&id(1), &create).await.is_err());
    assert_eq!(store.load(&id(1)).await.unwrap(), None);
}

#[tokio::test]
async fn an_expiry_in_the_past_deletes_and_update_never_resurrects() {
    let store = MemoryStore::new();
    create(&store, &id(0), Some("alice"), HOUR).await;
    let end = Change {
        idle_ttl: Some(Duration::ZERO),
        ..change(false, &[], None, HOUR)
    };
    let done = store.commit(&id(0), &end).await.unwrap().unwrap();
    assert!(done.expiry <= end.now);
    assert_eq!(store.load(&id(0)).await.unwrap(), None);
    let update = change(false, &[("k", "1")], None, HOUR);
    assert_eq!(store.commit(&id(0), &update).await.unwrap(), None);
    assert_eq!((store.len(), store.indexed()), (0, 0));
}
