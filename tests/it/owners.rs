//! Log out everywhere (sessions tied to an owner) and iteration over all sessions, on both
//! stores.

use std::{collections::HashSet, pin::pin, time::Duration};

use futures_util::{Stream, TryStreamExt};
use tower_scs::store::{Change, SessionStore};
use tower_scs::{Error, RedisStore};

use crate::harness::{Backend, Client, Kind, NONE, hashed, sleep_ms};

const DEFAULT_PREFIX: &str = RedisStore::DEFAULT_PREFIX;

crate::both_stores!(
    destroy_owner_logs_the_owner_out_everywhere,
    owner_follows_the_session_through_renew,
    owner_index_forgets_expired_and_destroyed_sessions,
    ids_stream_every_live_session,
    ids_are_hashes_with_hashed_tokens,
);

/// All ids the backend's store streams.
async fn all_ids(backend: &Backend) -> Vec<String> {
    async fn collect(ids: impl Stream<Item = Result<String, Error>>) -> Vec<String> {
        pin!(ids).try_collect().await.expect("iterate sessions")
    }
    match &backend.kind {
        Kind::Memory(store) => collect(store.ids()).await,
        Kind::Redis(server) => {
            let store = server.store().await;
            collect(store.ids()).await
        }
    }
}

/// Members of the owner's index, for Redis (None for memory).
async fn index_members(backend: &Backend, owner: &str) -> Option<Vec<String>> {
    let inspector = backend.inspector()?;
    let key = format!("{DEFAULT_PREFIX}owner:{owner}");
    let members = inspector.command("ZRANGE", &[&key, "0", "-1"]).await;
    Some(
        members
            .into_array()
            .into_iter()
            .filter_map(|v| v.into_string())
            .collect(),
    )
}

async fn logged_in(app: &axum::Router, owner: &str) -> Client {
    let mut client = Client::new(app);
    client.get(&format!("/set_owner?value={owner}")).await;
    client.get("/put?key=who&value=me").await;
    assert!(client.token.is_some());
    client
}

async fn destroy_owner_logs_the_owner_out_everywhere(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(logged_in(&app, "alice").await);
    }
    let mut bob = logged_in(&app, "bob").await;
    let mut anonymous = Client::new(&app);
    anonymous.get("/put?key=who&value=anon").await;

    // From one of alice's sessions: all three go, including the caller's own.
    let res = alice[0].get("/destroy_owner?value=alice").await;
    assert_eq!(res.body, "3");
    assert_eq!(alice[0].token, None, "the caller's cookie expires");
    for client in &mut alice[1..] {
        let token = client.token.clone().unwrap();
        assert_eq!(client.get("/get?key=who").await.body, NONE);
        assert!(!backend.stored(&token).await);
    }
    assert_eq!(bob.get("/get?key=who").await.body, "me");
    assert_eq!(anonymous.get("/get?key=who").await.body, "anon");
    assert_eq!(bob.get("/destroy_owner?value=alice").await.body, "0");
    assert_eq!(bob.get("/get?key=who").await.body, "me", "bob is not alice");
    if let Some(members) = index_members(&backend, "alice").await {
        assert!(members.is_empty(), "{members:?}");
    }
}

async fn owner_follows_the_session_through_renew(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut client = logged_in(&app, "carol").await;
    let old = client.token.clone().unwrap();
    assert_eq!(client.get("/owner").await.body, "carol");
    client.get("/renew").await;
    let new = client.token.clone().unwrap();
    assert_ne!(old, new);
    assert_eq!(client.get("/owner").await.body, "carol");
    if let Some(members) = index_members(&backend, "carol").await {
        assert_eq!(members, vec![new.clone()], "the index follows the renewal");
    }
    let mut other = Client::new(&app);
    assert_eq!(other.get("/destroy_owner?value=carol").await.body, "1");
    assert!(!backend.stored(&new).await);
}

async fn owner_index_forgets_expired_and_destroyed_sessions(backend: Backend) {
    let app = backend
        .app(|l| l.idle_timeout(Duration::from_millis(500)))
        .await;
    let gone = logged_in(&app, "dave").await.token.unwrap();
    sleep_ms(700).await; // 1.1 × idle timeout has passed: expired
    let mut kept = logged_in(&app, "dave").await;
    let mut destroyed = logged_in(&app, "dave").await;
    destroyed.get("/destroy").await;
    let kept_token = kept.token.clone().unwrap();
    if let Some(members) = index_members(&backend, "dave").await {
        assert_eq!(
            members,
            vec![kept_token.clone()],
            "expired {gone:?} or destroyed kept"
        );
        let inspector = backend.inspector().unwrap();
        let pttl = inspector.pttl(&format!("{DEFAULT_PREFIX}owner:dave")).await;
        assert!(
            (0..=550).contains(&pttl),
            "the index outlives its sessions: {pttl}"
        );
    }
    assert_eq!(kept.get("/destroy_owner?value=dave").await.body, "1");
}

async fn ids_stream_every_live_session(backend: Backend) {
    let app = backend.app(|l| l).await;
    let mut live = HashSet::new();
    for i in 0..30 {
        let mut client = logged_in(&app, if i % 2 == 0 { "erin" } else { "frank" }).await;
        if i % 10 == 0 {
            client.get("/destroy").await;
        } else {
            live.insert(client.token.unwrap());
        }
    }
    let ids = all_ids(&backend).await;
    assert_eq!(
        ids.len(),
        live.len(),
        "each live session once, no index keys"
    );
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), live);
}

async fn ids_are_hashes_with_hashed_tokens(backend: Backend) {
    let app = backend.app(|l| l.hash_token_in_store(true)).await;
    let mut client = logged_in(&app, "grace").await;
    let token = client.token.clone().unwrap();
    let ids = all_ids(&backend).await;
    assert_eq!(ids, vec![hashed(&token)]);
    // Ids load as they are; the raw token is not a store id.
    assert!(backend.stored(&ids[0]).await);
    assert!(!backend.stored(&token).await);
    assert_eq!(client.get("/destroy_owner?value=grace").await.body, "1");
    assert!(all_ids(&backend).await.is_empty());
}

/// Iteration pages through many sessions (Redis: SCAN in pages of 1000 on every primary).
#[tokio::test]
async fn redis_ids_page_through_thousands_of_sessions() {
    let backend = Backend::redis().await;
    let Kind::Redis(server) = &backend.kind else {
        unreachable!()
    };
    let store = RedisStore::from_url(&server.url()).await.unwrap();
    let now = std::time::SystemTime::now();
    let change = Change::create(now, now + Duration::from_secs(60)).with_set("n", "1");
    let mut made = HashSet::new();
    for i in 0..3_000 {
        let id = crate::harness::made_up_token(&format!("bulk-{i}"));
        store.commit(&id, &change).await.unwrap();
        made.insert(id);
    }
    let ids: Vec<String> = pin!(store.ids()).try_collect().await.unwrap();
    assert_eq!(ids.len(), made.len());
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), made);
}
