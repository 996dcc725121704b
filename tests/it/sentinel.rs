//! tower-scs behind Redis Sentinel (one primary, one replica, one sentinel, started by the test),
//! through `RedisStore::from_url("redis-sentinel://…")` and the real layer: sessions are served,
//! and keep being served after the primary dies and the sentinel promotes the replica.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use http::StatusCode;
use tower_scs::{RedisStore, SessionLayer};

use crate::harness::{
    Client, app,
    cluster::{RedisSentinel, Traffic, report_and_check},
    redis::info_field,
    sleep_ms, wait_for,
};

const DEFAULT_PREFIX: &str = RedisStore::DEFAULT_PREFIX;

/// How soon after the primary dies every session must be served again.
const RESUME_LIMIT: Duration = Duration::from_secs(15);

async fn dbsize(setup: &RedisSentinel, port: u16) -> i64 {
    setup.command(port, "DBSIZE", &[]).await
}

/// The replication offset the node reports (`master_repl_offset` on a primary,
/// `slave_repl_offset` on a replica).
async fn repl_offset(setup: &RedisSentinel, port: u16, field: &str) -> i64 {
    let info: String = setup.command(port, "INFO", &["replication"]).await;
    info_field(&info, field)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {info}"))
}

/// Sessions through a `redis-sentinel://` URL; then, under traffic, the primary dies: the
/// sentinel promotes the replica, and the same sessions are served again by themselves. Writes
/// the replica had received before the kill survive; acknowledged writes racing the kill may be
/// lost (asynchronous replication): they are counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_served_through_a_sentinel_failover() {
    through_a_failover(Failure::Killed).await;
}

/// The same with a primary that hangs (`SIGSTOP`) instead of dying: its connections stay open
/// and silent, so fred finds out through its unresponsive-connection check; every user is
/// served again within `HUNG_LIMIT` of the promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_served_soon_after_a_hung_primary_fails_over() {
    through_a_failover(Failure::Hung).await;
}

/// How the primary fails.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Killed,
    Hung,
}

/// How soon after the sentinel promoted the replica every user must be served again when the
/// primary hung.
const HUNG_LIMIT: Duration = Duration::from_secs(2);

async fn through_a_failover(failure: Failure) {
    const USERS: usize = 8;
    let mut setup = RedisSentinel::start().await;
    let store = RedisStore::from_url(&setup.url())
        .await
        .expect("RedisStore::from_url on the sentinel");
    let app = app(SessionLayer::new(store));
    let (primary, replica) = (setup.primary_port(), setup.replica_port());
    assert_eq!(setup.reported_primary().await, Some(primary));

    // Sessions through the sentinel URL land on the primary, and reach the replica.
    let mut early = Vec::new();
    for u in 0..USERS {
        let mut client = Client::new(&app);
        let res = client.get(&format!("/put?key=early&value=e{u}")).await;
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
        assert_eq!(client.get("/get?key=early").await.body, format!("e{u}"));
        early.push(client.token.clone().unwrap());
    }
    assert_eq!(dbsize(&setup, primary).await, USERS as i64);
    let target = repl_offset(&setup, primary, "master_repl_offset").await;
    let setup_ref = &setup;
    wait_for(
        Duration::from_secs(2),
        "the replica at the primary's offset",
        move || async move {
            match repl_offset(setup_ref, replica, "slave_repl_offset").await {
                at if at >= target => Ok(()),
                at => Err(format!("replica at {at}, primary at {target}")),
            }
        },
    )
    .await;
    assert_eq!(dbsize(&setup, replica).await, USERS as i64, "replication");

    // Traffic on those sessions; the primary dies under it.
    let mut clients = Vec::new();
    for token in &early {
        let mut client = Client::with_token(&app, token);
        let u = clients.len();
        let res = client.get(&format!("/put?key=v&value=u{u}-0")).await;
        assert_eq!(res.status, StatusCode::OK);
        clients.push(client);
    }
    let traffic = Traffic::start(clients);
    traffic.wait_flowing(Duration::from_secs(10)).await;
    match failure {
        Failure::Killed => setup.kill_primary(),
        Failure::Hung => setup.hang_primary(),
    }
    traffic.killed_now();
    let failed_at = Instant::now();
    let setup = Arc::new(setup);
    let promoted = {
        let setup = setup.clone();
        tokio::spawn(async move { setup.wait_promoted(Duration::from_secs(20)).await })
    };
    traffic.wait_resumed(RESUME_LIMIT).await;
    sleep_ms(500).await;
    let logs = traffic.stop().await;
    let promoted = promoted.await.expect("the sentinel promoted the replica");
    println!("sentinel: replica {replica} promoted {promoted:?} after the primary {failure:?}");
    report_and_check("sentinel", &logs, RESUME_LIMIT);
    let last_back = logs.iter().filter_map(|l| l.back_after).max().unwrap();
    let after_promotion = last_back.saturating_sub(promoted);
    println!("sentinel: every user served again {after_promotion:?} after the promotion");
    if let Failure::Hung = failure {
        assert!(
            after_promotion <= HUNG_LIMIT,
            "{after_promotion:?} after the promotion"
        );
    }

    // Writes replicated before the kill survived; new sessions and writes go to the new primary.
    let mut survived = 0;
    for (u, token) in early.iter().enumerate() {
        let mut client = Client::with_token(&app, token);
        let res = client.get("/get?key=early").await;
        assert_eq!(res.status, StatusCode::OK);
        survived += usize::from(res.body == format!("e{u}"));
    }
    println!("sentinel: {survived} of {USERS} sessions written before the kill survived");
    assert_eq!(survived, USERS, "replicated sessions lost in the failover");
    // New sessions land on every connection of the pool, also on those no user's traffic went
    // through (an idle connection to a hung primary stays open): each one serves too, by the
    // time the traffic had to be back (with a hung primary, `HUNG_LIMIT` after the promotion).
    if let Failure::Hung = failure {
        tokio::time::sleep_until((failed_at + promoted + HUNG_LIMIT).into()).await;
    }
    for n in 0..NEW_SESSIONS {
        let mut client = Client::new(&app);
        let res = client.get(&format!("/put?key=k&value=after{n}")).await;
        assert_eq!(res.status, StatusCode::OK, "new session {n}: {res:?}");
        assert_eq!(client.get("/get?key=k").await.body, format!("after{n}"));
        let new_key = format!("{DEFAULT_PREFIX}{}", client.token.unwrap());
        let exists: i64 = setup.command(replica, "EXISTS", &[&new_key]).await;
        assert_eq!(exists, 1);
    }
}

/// New sessions after the failover: with the pool's 4 connections, 16 random sessions miss one
/// of them with a chance of about 4 %.
const NEW_SESSIONS: usize = 16;
