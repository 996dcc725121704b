//! The device list through the real layer, on both stores: an owner's live sessions with their
//! device ids, revoke one, revoke the others, device ids that open nothing, "last seen" at most
//! once per interval without a write per request, and an owner index that shrinks to the live
//! sessions (10,000 of one owner, in Redis with no request touching them).

use futures_util::StreamExt;
use std::{
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use std::sync::{Arc, Mutex};

use tower_scs::{
    EventKind, RedisStore, SessionEvent,
    store::{Change, SessionStore},
};

use crate::harness::{Backend, Client, NONE, RedisServer, now_ms};

crate::both_stores!(
    an_owner_lists_its_live_sessions_and_marks_this_one,
    revoking_a_device_signs_it_out_and_only_it,
    revoking_the_others_keeps_only_this_one,
    a_device_id_opens_no_session,
    last_seen_moves_once_per_interval_without_a_write_per_read,
    the_client_recorded_is_shown_cut_to_its_limit,
    lifecycle_events_carry_device_and_owner_never_the_token,
);

/// A device-list line: (id, current, created ms, last seen ms).
fn lines(body: &str) -> Vec<(String, bool, i64, i64)> {
    body.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let n = |i: usize| f[i].parse::<i64>().unwrap();
            (f[0].to_owned(), f[1] == "true", n(2), n(3))
        })
        .collect()
}

/// A client signed in as `owner` (a session with a value, then the owner).
async fn signed_in(app: &axum::Router, owner: &str) -> Client {
    let mut client = Client::new(app);
    client.get("/put?key=a&value=1").await;
    client.get(&format!("/set_owner?value={owner}")).await;
    client
}

async fn an_owner_lists_its_live_sessions_and_marks_this_one(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut a = signed_in(&app, "alice").await;
    let b = signed_in(&app, "alice").await;
    let _other = signed_in(&app, "bob").await;
    let mut anonymous = Client::new(&app);
    anonymous.get("/put?key=a&value=1").await;
    assert_eq!(
        anonymous.get("/devices").await.body,
        "",
        "no owner, no list"
    );

    let list = lines(&a.get("/devices").await.body);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list.iter().filter(|d| d.1).count(), 1, "one is this one");
    for (id, _, created, seen) in &list {
        assert_eq!(id.len(), 22);
        for token in [a.token.as_deref().unwrap(), b.token.as_deref().unwrap()] {
            assert!(!token.contains(id.as_str()), "a device id is not the token");
        }
        assert!(
            (now_ms() - created).abs() < 5_000 && seen >= created,
            "{list:?}"
        );
    }
    let ids: Vec<&String> = list.iter().map(|d| &d.0).collect();
    assert_ne!(ids[0], ids[1]);
}

async fn revoking_a_device_signs_it_out_and_only_it(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut a = signed_in(&app, "alice").await;
    let mut b = signed_in(&app, "alice").await;
    let mut bob = signed_in(&app, "bob").await;
    let b_id = lines(&b.get("/devices").await.body)
        .into_iter()
        .find(|d| d.1)
        .unwrap()
        .0;
    // Bob cannot revoke alice's device; alice can.
    assert_eq!(
        bob.get(&format!("/revoke?value={b_id}")).await.body,
        "false"
    );
    assert_eq!(b.get("/get?key=a").await.body, "1");
    assert_eq!(a.get(&format!("/revoke?value={b_id}")).await.body, "true");
    assert_eq!(b.get("/get?key=a").await.body, NONE, "signed out");
    assert_eq!(a.get("/get?key=a").await.body, "1");
    assert_eq!(bob.get("/get?key=a").await.body, "1");
    assert_eq!(lines(&a.get("/devices").await.body).len(), 1);
    assert_eq!(a.get(&format!("/revoke?value={b_id}")).await.body, "false");
    assert_eq!(a.get("/revoke?value=not-an-id").await.body, "bad id");
    // Revoking this very device is a destroy: the cookie is cleared.
    let own = lines(&a.get("/devices").await.body)[0].0.clone();
    let res = a.get(&format!("/revoke?value={own}")).await;
    assert_eq!(res.body, "true");
    assert_eq!(res.set_cookie().unwrap().value(), "");
}

async fn revoking_the_others_keeps_only_this_one(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut a = signed_in(&app, "alice").await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(signed_in(&app, "alice").await);
    }
    let mut bob = signed_in(&app, "bob").await;
    assert_eq!(a.get("/revoke_others").await.body, "3");
    for other in &mut others {
        assert_eq!(other.get("/get?key=a").await.body, NONE);
    }
    assert_eq!(a.get("/get?key=a").await.body, "1");
    assert_eq!(bob.get("/get?key=a").await.body, "1");
    let list = lines(&a.get("/devices").await.body);
    assert_eq!((list.len(), list[0].1), (1, true));
}

async fn a_device_id_opens_no_session(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut a = signed_in(&app, "alice").await;
    let id = lines(&a.get("/devices").await.body)[0].0.clone();
    let loads = backend.calls.load.load(Ordering::SeqCst);
    let mut thief = Client::new(&app);
    thief.token = Some(id);
    assert_eq!(thief.get("/get?key=a").await.body, NONE);
    assert_eq!(
        backend.calls.load.load(Ordering::SeqCst),
        loads,
        "not even a load"
    );
}

async fn lifecycle_events_carry_device_and_owner_never_the_token(backend: Backend) {
    let seen: Arc<Mutex<Vec<SessionEvent>>> = Arc::default();
    let sink = seen.clone();
    let app = backend
        .app(|l| l.on_event(move |e| sink.lock().unwrap().push(e.clone())))
        .await;
    let take = || std::mem::take(&mut *seen.lock().unwrap());
    let mut a = Client::new(&app);
    a.get("/put?key=a&value=1").await;
    let created = take();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(
        (created[0].kind, created[0].owner.as_deref()),
        (EventKind::Created, None)
    );
    a.get("/set_owner?value=alice").await;
    a.get("/renew").await;
    let renewed = take();
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    assert_eq!(
        (renewed[0].kind, renewed[0].owner.as_deref()),
        (EventKind::Renewed, Some("alice"))
    );
    let a_device = lines(&a.get("/devices").await.body)[0].0.clone();
    assert_eq!(renewed[0].device.as_ref().unwrap().as_str(), a_device);

    let mut b = signed_in(&app, "alice").await;
    take();
    let b_device = lines(&b.get("/devices").await.body)
        .into_iter()
        .find(|d| d.1)
        .unwrap()
        .0;
    a.get(&format!("/revoke?value={b_device}")).await;
    let revoked = take();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0].kind, EventKind::Revoked);
    assert_eq!(revoked[0].device.as_ref().unwrap().as_str(), b_device);
    a.get("/destroy").await;
    let destroyed = take();
    assert_eq!(destroyed.len(), 1, "{destroyed:?}");
    assert_eq!(destroyed[0].kind, EventKind::Destroyed);
    assert_eq!(destroyed[0].device.as_ref().unwrap().as_str(), a_device);
    assert_eq!(destroyed[0].owner.as_deref(), Some("alice"));
    let mut c = signed_in(&app, "carol").await;
    take();
    c.get("/destroy_owner?value=carol").await;
    let everywhere = take();
    assert_eq!(everywhere[0].kind, EventKind::Revoked);
    assert_eq!(
        (
            everywhere[0].device.as_ref(),
            everywhere[0].owner.as_deref()
        ),
        (None, Some("carol"))
    );
    // No token in any event, as Debug shows it.
    let all = format!("{created:?}{renewed:?}{revoked:?}{destroyed:?}{everywhere:?}");
    for token in [a.token, b.token, c.token].into_iter().flatten() {
        assert!(!all.contains(&token[..20]), "{all}");
    }
}

async fn the_client_recorded_is_shown_cut_to_its_limit(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut a = signed_in(&app, "alice").await;
    let mut b = signed_in(&app, "alice").await;
    let body = a.get("/clients").await.body;
    let mut lines: Vec<&str> = body.lines().collect();
    lines.sort();
    assert_eq!(lines, ["false|-|-", "true|-|-"], "nothing recorded unasked");
    let long = "é".repeat(200); // 400 bytes
    a.get(&format!("/set_client?value={long}&key=203.0.113.7"))
        .await;
    b.get("/set_client?value=curl%2F8&key=").await;
    let body = a.get("/clients").await.body;
    let mut lines: Vec<&str> = body.lines().collect();
    lines.sort();
    let cut = "é".repeat(128); // 256 bytes, on a character boundary
    assert_eq!(
        lines,
        ["false|curl/8|-", &format!("true|{cut}|203.0.113.7")]
    );
    // A session without an owner records nothing (there is no list to show it in).
    let mut anonymous = Client::new(&app);
    anonymous.get("/set_client?value=x&key=y").await;
    anonymous.get("/set_owner?value=carol").await;
    assert_eq!(anonymous.get("/clients").await.body, "true|-|-");
}

async fn last_seen_moves_once_per_interval_without_a_write_per_read(backend: Backend) {
    let interval = Duration::from_millis(300);
    let app = backend.app(|l| l.last_seen_interval(interval)).await;
    let mut a = signed_in(&app, "alice").await;
    let commits = || backend.calls.commit.load(Ordering::SeqCst);
    let before = commits();
    for _ in 0..20 {
        assert_eq!(a.get("/get?key=a").await.body, "1");
    }
    assert_eq!(commits(), before, "reads within the interval write nothing");
    let seen = lines(&a.get("/devices").await.body)[0].3;
    // Once the interval has passed (the very thing under test: time), one read touches.
    tokio::time::sleep(interval).await;
    a.get("/get?key=a").await;
    a.get("/get?key=a").await;
    assert_eq!(commits(), before + 1, "one touch per interval");
    let later = lines(&a.get("/devices").await.body)[0].3;
    assert!(
        later >= seen + interval.as_millis() as i64,
        "{seen} {later}"
    );
}

/// 10,000 sessions of one owner, half expiring soon, some revoked: the owner's list and its
/// index shrink to the live count, and once all have expired in Redis, with no request touching
/// them, the index is gone too.
#[tokio::test]
async fn the_owner_index_shrinks_to_the_live_sessions_in_redis() {
    let redis = RedisServer::start().await;
    let store = RedisStore::from_url(&redis.url()).await.unwrap();
    let now = SystemTime::now();
    let (short, long) = (Duration::from_secs(5), Duration::from_secs(7));
    let ids: Vec<String> = (0..10_000).map(|i| format!("{i:0>43}")).collect();
    let creates = ids.iter().enumerate().map(|(i, id)| {
        let life = if i % 2 == 0 { short } else { long };
        let change = Change::create(now, now + life).with_owner("alice");
        let store = &store;
        async move { store.commit(id, &change).await.unwrap().unwrap() }
    });
    futures_util::stream::iter(creates)
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let inspector = redis.inspector();
    let index = format!("{}owner:alice", RedisStore::DEFAULT_PREFIX);
    let zcard = async || {
        inspector
            .command("ZCARD", &[&index])
            .await
            .as_i64()
            .unwrap()
    };
    assert_eq!(zcard().await, 10_000);
    for id in ids.iter().skip(1).step_by(10).take(100) {
        assert!(store.delete_owned(id, "alice").await.unwrap(), "revoked");
    }
    assert!(
        !store.delete_owned(&ids[3], "bob").await.unwrap(),
        "not bob's"
    );
    // The short-lived half expires in Redis (time passing is what is under test).
    let first = format!("{}{}", RedisStore::DEFAULT_PREFIX, ids[0]);
    expire(&inspector, &first, now + short).await;
    let live = store.owner_sessions("alice").await.unwrap();
    assert_eq!(live.len(), 5_000 - 100);
    assert_eq!(zcard().await, 4_900, "the index shrank to the live count");
    // The rest expire with no request: the index expires with its last member.
    expire(&inspector, &index, now + long).await;
}

/// Waits, boundedly, for `key` to be gone once `at` has passed.
async fn expire(inspector: &crate::harness::redis::Inspector, key: &str, at: SystemTime) {
    tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
    for _ in 0..100 {
        if !inspector.exists(key).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{key} still exists 2 s after it expired");
}
