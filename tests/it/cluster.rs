//! tower-scs on a real Redis Cluster (3 primaries, started by the test), through
//! `RedisStore::from_url("redis-cluster://…")` and the real layer: sessions spread over every
//! primary, every operation works when the keys involved live on different nodes, concurrent
//! writers lose nothing, the `put_get` example serves many users, and service resumes by itself
//! after a primary dies and its replica takes over.

use std::{
    collections::{BTreeSet, HashMap},
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::Router;
use futures_util::TryStreamExt;
use http::StatusCode;
use tokio::task::JoinSet;
use tower_scs::{RedisStore, SessionLayer};

use crate::harness::{
    Client, NONE, app,
    cluster::{RedisCluster, Traffic, UserLog, report_and_check},
    example::{Example, get, http_client, token_of},
    sleep_ms,
};

const DEFAULT_PREFIX: &str = RedisStore::DEFAULT_PREFIX;

/// How soon after a primary dies every session must be served again.
const RESUME_LIMIT: Duration = Duration::from_secs(15);

/// The Redis key of a session.
fn key(token: &str) -> String {
    format!("{DEFAULT_PREFIX}{token}")
}

/// The test app over a `RedisStore::from_url(<cluster url>)`.
async fn cluster_app(
    cluster: &RedisCluster,
    configure: impl FnOnce(SessionLayer) -> SessionLayer,
) -> Router {
    let store = RedisStore::from_url(&cluster.url())
        .await
        .expect("RedisStore::from_url on the cluster");
    app(configure(SessionLayer::new(store)))
}

/// `n` users, each with a session holding `v=u<i>-0`.
async fn users(app: &Router, n: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for u in 0..n {
        let mut client = Client::new(app);
        let res = client.get(&format!("/put?key=v&value=u{u}-0")).await;
        assert_eq!(res.status, StatusCode::OK);
        clients.push(client);
    }
    clients
}

/// How the primary fails.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Killed,
    Hung,
}

/// What [`fail_under_traffic`] saw.
struct Failover {
    cluster: Arc<RedisCluster>,
    /// The users' logs, in the order of the clients.
    logs: Vec<UserLog>,
    /// When the primary failed.
    at: Instant,
    /// How long after that every node reported the cluster healthy again.
    healthy: Duration,
}

/// Runs `clients` as traffic and, once it flows, makes the primary `victim` fail; then waits
/// until every user has been served again (at most `RESUME_LIMIT`, plus half a second) and the
/// cluster is healthy.
async fn fail_under_traffic(
    mut cluster: RedisCluster,
    clients: Vec<Client>,
    victim: u16,
    failure: Failure,
) -> Failover {
    let traffic = Traffic::start(clients);
    traffic.wait_flowing(Duration::from_secs(10)).await;
    match failure {
        Failure::Killed => cluster.kill_primary(victim).await,
        Failure::Hung => cluster.hang_primary(victim).await,
    }
    traffic.killed_now();
    let at = Instant::now();
    let cluster = Arc::new(cluster);
    let healthy = {
        let cluster = cluster.clone();
        tokio::spawn(async move { cluster.wait_healthy(Duration::from_secs(20)).await })
    };
    traffic.wait_resumed(RESUME_LIMIT).await;
    sleep_ms(500).await;
    let logs = traffic.stop().await;
    let healthy = healthy.await.expect("the replica took over");
    Failover {
        cluster,
        logs,
        at,
        healthy,
    }
}

/// 60 new sessions land on all three primaries (by their keys' slots), each on the primary that
/// serves its slot, and each reads back its own value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_land_on_every_primary() {
    let cluster = RedisCluster::start(3, 0).await;
    let app = cluster_app(&cluster, |l| l).await;
    let mut tokens = Vec::new();
    for i in 0..60 {
        let mut client = Client::new(&app);
        let res = client.get(&format!("/put?key=n&value={i}")).await;
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
        tokens.push(client.token.expect("session created"));
    }
    let counts = cluster.key_counts().await;
    println!("sessions per primary (port, DBSIZE): {counts:?}");
    assert_eq!(counts.len(), 3);
    assert!(counts.iter().all(|&(_, n)| n > 0), "{counts:?}");
    assert_eq!(counts.iter().map(|&(_, n)| n).sum::<i64>(), 60);
    for (i, token) in tokens.iter().enumerate() {
        assert!(
            cluster.exists(&key(token)).await,
            "session {i} not on its slot's primary"
        );
        let mut client = Client::with_token(&app, token);
        assert_eq!(client.get("/get?key=n").await.body, i.to_string());
    }
}

/// A new session whose key is served by a primary other than `not_on` (tokens are random: about
/// two in three qualify).
async fn session_on_another_primary(
    cluster: &RedisCluster,
    app: &Router,
    not_on: u16,
    uri: &str,
) -> Client {
    for _ in 0..30 {
        let mut client = Client::new(app);
        assert_eq!(client.get(uri).await.status, StatusCode::OK);
        let token = client.token.clone().expect("session created");
        if cluster.primary_of(&key(&token)).await != not_on {
            return client;
        }
        assert_eq!(client.get("/destroy").await.status, StatusCode::OK);
    }
    panic!("30 sessions in a row on primary {not_on}");
}

/// Load, commit, idle-timeout touch, renew, merge and destroy on a cluster, with the two keys of
/// a renew or a merge on different primaries (tower-scs sends one single-key command each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_across_slots() {
    let cluster = RedisCluster::start(3, 0).await;
    let idle = Duration::from_millis(1_000);
    let app = cluster_app(&cluster, |l| l.idle_timeout(idle)).await;

    // Create and commit.
    let mut a = Client::new(&app);
    a.get("/put?key=a&value=1").await;
    a.get("/put?key=b&value=2").await;
    let token_a = a.token.clone().unwrap();
    assert_eq!(a.get("/keys").await.body, "a,b");
    let pttl = cluster.pttl(&key(&token_a)).await;
    assert!((1..=1_100).contains(&pttl), "PTTL after a write: {pttl}");

    // Idle timeout: a read once less than the idle timeout remains touches the expiry, to
    // the read's time + 1.1 × idle.
    let expiry = async || {
        let key = key(&token_a);
        let expiry: Option<String> = cluster.key_command(&key, "HGET", &[&key, "e"]).await;
        let expiry = expiry.expect("HGET e: no expiry");
        expiry
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("expiry {expiry:?}"))
    };
    let before = expiry().await;
    sleep_ms(250).await;
    assert_eq!(a.get("/get?key=a").await.body, "1");
    let after = expiry().await;
    assert!(
        after - before >= 250,
        "expiry {before} → {after}: not touched"
    );
    let pttl = cluster.pttl(&key(&token_a)).await;
    assert!((1..=1_100).contains(&pttl), "PTTL after the touch: {pttl}");

    // Merge a session that lives on another primary.
    let primary_a = cluster.primary_of(&key(&token_a)).await;
    let mut b = session_on_another_primary(&cluster, &app, primary_a, "/put?key=c&value=3").await;
    let token_b = b.token.clone().unwrap();
    b.get("/put?key=a&value=from-b").await;
    let res = a.get(&format!("/merge?token={token_b}")).await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    assert_eq!(a.token.as_deref(), Some(token_a.as_str()));
    assert_eq!(a.get("/keys").await.body, "a,b,c");
    assert_eq!(
        a.get("/get?key=a").await.body,
        "from-b",
        "merged values win"
    );
    assert!(
        !cluster.is_session(&key(&token_b)).await,
        "the merged session was not deleted"
    );
    assert_eq!(
        cluster.moved_to(&key(&token_b)).await,
        Some(token_a.clone()),
        "for a few seconds the merged token points at the session it went into"
    );
    assert_eq!(b.get("/keys").await.body, "");

    // Renew until the new token lives on another primary than the old one.
    let mut renewed_across = false;
    for _ in 0..30 {
        let old = a.token.clone().unwrap();
        assert_eq!(a.get("/renew").await.status, StatusCode::OK);
        let new = a.token.clone().unwrap();
        assert_ne!(new, old);
        assert!(
            !cluster.is_session(&key(&old)).await,
            "the old token's record survived"
        );
        assert_eq!(cluster.moved_to(&key(&old)).await, Some(new.clone()));
        assert!(cluster.is_session(&key(&new)).await);
        assert_eq!(Client::with_token(&app, &old).get("/keys").await.body, "");
        assert_eq!(a.get("/keys").await.body, "a,b,c");
        if cluster.primary_of(&key(&new)).await != cluster.primary_of(&key(&old)).await {
            renewed_across = true;
            break;
        }
    }
    assert!(renewed_across, "30 renews in a row stayed on one primary");

    // Destroy.
    let token = a.token.clone().unwrap();
    assert_eq!(a.get("/destroy").await.status, StatusCode::OK);
    assert_eq!(a.token, None);
    assert!(!cluster.exists(&key(&token)).await);
    assert_eq!(
        Client::with_token(&app, &token)
            .get("/get?key=a")
            .await
            .body,
        NONE
    );

    // Idle expiry: unused for 1.1 × the idle timeout (+ margin), the session is gone.
    let mut c = Client::new(&app);
    c.get("/put?key=x&value=1").await;
    let token_c = c.token.clone().unwrap();
    sleep_ms(1_150).await;
    assert!(!cluster.exists(&key(&token_c)).await);
    assert_eq!(c.get("/get?key=x").await.body, NONE);
}

/// Owner logout and session iteration on a cluster: the owner's index lives on one node, its
/// sessions on all of them; `destroy_owner` deletes them all, and `RedisStore::ids` scans every
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_logout_and_ids_span_every_primary() {
    let cluster = RedisCluster::start(3, 0).await;
    let store = RedisStore::from_url(&cluster.url())
        .await
        .expect("RedisStore::from_url on the cluster");
    let app = app(SessionLayer::new(store.clone()));
    let (mut owned, mut others) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..18 {
        let mut client = Client::new(&app);
        let uri = if i % 3 == 0 {
            "/put?key=a&value=1"
        } else {
            "/set_owner?value=user:42"
        };
        assert_eq!(client.get(uri).await.status, StatusCode::OK);
        let token = client.token.expect("session created");
        if i % 3 == 0 {
            others.insert(token)
        } else {
            owned.insert(token)
        };
    }
    let mut homes = BTreeSet::new();
    for token in &owned {
        homes.insert(cluster.primary_of(&key(token)).await);
    }
    assert!(homes.len() >= 2, "all 12 owned sessions on {homes:?}");
    let all: BTreeSet<String> = owned.union(&others).cloned().collect();
    let ids: BTreeSet<String> = pin!(store.ids()).try_collect().await.expect("ids");
    assert_eq!(ids, all, "ids() on the cluster");

    let first = owned.first().unwrap();
    let res = Client::with_token(&app, first)
        .get("/destroy_owner?value=user:42")
        .await;
    assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "12"));
    for token in &owned {
        assert!(
            !cluster.exists(&key(token)).await,
            "an owned session survived"
        );
    }
    for token in &others {
        assert!(
            cluster.exists(&key(token)).await,
            "another session was deleted"
        );
    }
    let ids: BTreeSet<String> = pin!(store.ids()).try_collect().await.expect("ids");
    assert_eq!(ids, others);
}

/// The device list on a cluster: 12 sessions of one owner spread over the primaries are listed,
/// one is revoked by its device id, then all but one; the owner index (on its own slot) shrinks
/// to the live count; the revoked sessions' keys are gone wherever they lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_list_spans_every_primary() {
    let cluster = RedisCluster::start(3, 0).await;
    let app = cluster_app(&cluster, |l| l).await;
    let mut clients = Vec::new();
    for _ in 0..12 {
        let mut client = Client::new(&app);
        client.get("/put?key=a&value=1").await;
        client.get("/set_owner?value=user:7").await;
        clients.push(client);
    }
    let mut homes = BTreeSet::new();
    for c in &clients {
        homes.insert(cluster.primary_of(&key(c.token.as_ref().unwrap())).await);
    }
    assert!(homes.len() >= 2, "all 12 sessions on {homes:?}");
    let list = clients[0].get("/devices").await.body;
    assert_eq!(list.lines().count(), 12, "{list}");
    let id_of = |body: &str| {
        let line = body.lines().find(|l| l.split(' ').nth(1) == Some("true"));
        line.unwrap().split(' ').next().unwrap().to_owned()
    };
    let last = id_of(&clients[11].get("/devices").await.body);
    let res = clients[0].get(&format!("/revoke?value={last}")).await;
    assert_eq!(res.body, "true");
    assert!(
        !cluster
            .exists(&key(clients[11].token.as_ref().unwrap()))
            .await
    );
    assert_eq!(clients[0].get("/revoke_others").await.body, "10");
    for c in &clients[1..] {
        assert!(!cluster.exists(&key(c.token.as_ref().unwrap())).await);
    }
    assert_eq!(clients[0].get("/devices").await.body.lines().count(), 1);
    let index = format!("{DEFAULT_PREFIX}owner:user:7");
    let members: i64 = cluster.key_command(&index, "ZCARD", &[&index]).await;
    assert_eq!(members, 1, "the index shrank to the live count");
    assert_eq!(clients[0].get("/get?key=a").await.body, "1");
}

/// 50 sessions × 8 concurrent requests that each load, pause while the others are in flight,
/// then write their own key: all 400 writes survive on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_of_eight_concurrent_writers_lose_nothing() {
    let cluster = RedisCluster::start(3, 0).await;
    let app = cluster_app(&cluster, |l| l).await;
    let lost = crate::harness::lost_concurrent_writes(&app, 50, 8).await;
    assert_eq!(lost, 0, "{lost} of 400 writes lost");
    assert!(cluster.key_counts().await.iter().all(|&(_, n)| n > 0));
}

/// The `put_get` example with `REDIS_URL=redis-cluster://…` serves 32 concurrent users, each
/// with its own cookie, writing and reading back its own values for two seconds: every read
/// returns that user's latest write, and the sessions are spread over every primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_example_serves_concurrent_users_on_a_cluster() {
    const USERS: usize = 32;
    let cluster = RedisCluster::start(3, 0).await;
    let url = cluster.url();
    let example = Example::start("put_get", &[("REDIS_URL", url.as_str())]);
    let http = http_client();
    let mut set = JoinSet::new();
    for u in 0..USERS {
        let (http, addr) = (http.clone(), example.addr.clone());
        set.spawn(async move {
            let first = get(&http, &addr, &format!("/put?key=u&message=u{u}-0"), None).await;
            assert_eq!(first.status, StatusCode::OK);
            let token = token_of(first.set_cookie.as_deref().expect("a session cookie"));
            let (mut rounds, mut mixups) = (0, Vec::new());
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) {
                rounds += 1;
                let value = format!("u{u}-{rounds}");
                let put = get(
                    &http,
                    &addr,
                    &format!("/put?key=u&message={value}"),
                    Some(&token),
                )
                .await;
                assert_eq!(put.status, StatusCode::OK);
                assert_eq!(
                    put.set_cookie.as_deref().map(token_of),
                    Some(token.clone()),
                    "the session changed token"
                );
                let got = get(&http, &addr, "/get?key=u", Some(&token)).await;
                assert_eq!(got.status, StatusCode::OK);
                if got.body != value {
                    mixups.push((value, got.body));
                }
            }
            (token, rounds, mixups)
        });
    }
    let (mut tokens, mut rounds, mut mixups) = (Vec::new(), 0, Vec::new());
    while let Some(done) = set.join_next().await {
        let (token, r, m) = done.expect("user task");
        tokens.push(token);
        rounds += r;
        mixups.extend(m);
    }
    let counts = cluster.key_counts().await;
    println!("{USERS} users, {rounds} put/get rounds; sessions per primary: {counts:?}");
    assert!(
        mixups.is_empty(),
        "reads that were not the user's latest write: {mixups:?}"
    );
    assert_eq!(counts.iter().map(|&(_, n)| n).sum::<i64>(), USERS as i64);
    assert!(counts.iter().all(|&(_, n)| n > 0), "{counts:?}");
    assert!(rounds >= USERS, "{rounds} rounds");
}

/// A primary dies under traffic (16 users writing and reading back their own values): its
/// replica takes over, and service resumes by itself within seconds, for the sessions on the
/// dead primary's slots as for the others. Errors meanwhile are 500s within the store timeout,
/// never a hang and never another user's data. Acknowledged writes that asynchronous
/// replication had not yet copied to the replica may be lost: they are counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_resumes_after_a_primary_fails_over() {
    const USERS: usize = 16;
    let cluster = RedisCluster::start(3, 1).await;
    let app = cluster_app(&cluster, |l| l).await;
    let clients = users(&app, USERS).await;
    // The victim: the primary holding the most of these sessions.
    let mut homes = Vec::new();
    for client in &clients {
        homes.push(
            cluster
                .primary_of(&key(client.token.as_ref().unwrap()))
                .await,
        );
    }
    let mut per_primary: HashMap<u16, usize> = HashMap::new();
    for &home in &homes {
        *per_primary.entry(home).or_default() += 1;
    }
    let (&victim, &on_victim) = per_primary.iter().max_by_key(|&(_, n)| *n).unwrap();

    let Failover { logs, healthy, .. } =
        fail_under_traffic(cluster, clients, victim, Failure::Killed).await;
    println!(
        "cluster: primary {victim} killed with {on_victim} of {USERS} sessions; every node \
         reports the cluster ok again after {healthy:?}"
    );
    let (dead, other): (Vec<_>, Vec<_>) = logs
        .into_iter()
        .zip(&homes)
        .partition(|&(_, &home)| home == victim);
    let dead: Vec<UserLog> = dead.into_iter().map(|(l, _)| l).collect();
    let other: Vec<UserLog> = other.into_iter().map(|(l, _)| l).collect();
    report_and_check("cluster, sessions on the dead primary", &dead, RESUME_LIMIT);
    report_and_check("cluster, other sessions", &other, RESUME_LIMIT);
}

/// A primary hangs (`SIGSTOP`) under traffic: its connections stay open and silent. Its replica
/// takes over, and service resumes by itself, as after a kill. Few users, so that some of the
/// pool's connections carry no traffic during the hang; once the traffic has resumed, new
/// sessions reach every connection and the hung primary's former slots (48 of them miss one
/// connection's share of those slots with a chance of about 1.5 %), and each is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_resumes_after_a_primary_hangs() {
    const USERS: usize = 4;
    const NEW_SESSIONS: usize = 48;
    let cluster = RedisCluster::start(3, 1).await;
    let app = cluster_app(&cluster, |l| l).await;
    let clients = users(&app, USERS).await;
    let victim = cluster
        .primary_of(&key(clients[0].token.as_ref().unwrap()))
        .await;
    let Failover {
        cluster,
        logs,
        at,
        healthy,
    } = fail_under_traffic(cluster, clients, victim, Failure::Hung).await;
    println!("cluster: primary {victim} hung; the cluster ok again after {healthy:?}");
    report_and_check("cluster, a primary hung", &logs, RESUME_LIMIT);
    let last_back = logs.iter().filter_map(|l| l.back_after).max().unwrap();
    println!("cluster: every user served again {last_back:?} after the hang");
    tokio::time::sleep_until((at + last_back.max(healthy)).into()).await;
    let mut homes: HashMap<u16, usize> = HashMap::new();
    for n in 0..NEW_SESSIONS {
        let mut client = Client::new(&app);
        let res = client.get(&format!("/put?key=k&value=new{n}")).await;
        assert_eq!(res.status, StatusCode::OK, "new session {n}: {res:?}");
        assert_eq!(client.get("/get?key=k").await.body, format!("new{n}"));
        let home = cluster
            .primary_of(&key(client.token.as_ref().unwrap()))
            .await;
        *homes.entry(home).or_default() += 1;
    }
    assert!(!homes.contains_key(&victim), "{homes:?}");
    println!("cluster: {NEW_SESSIONS} new sessions served, by primary: {homes:?}");
}
