//! Two `put_get` processes, A and B, on one Redis (or one 3-primary Cluster), both with
//! `LOCAL_CACHE` on: a write through A is read through B right after, with nothing in between
//! but the HTTP round trips (no wait for the invalidation); destroy, renew, a flush and a Redis
//! restart on A's side are seen by B's next request; B serves repeated reads from its cache
//! (0 commands); and on a Cluster the same holds across a primary's failover.

use std::time::Duration;

use http::StatusCode;

use crate::harness::{
    Monitor, RedisServer,
    cluster::RedisCluster,
    example::{Example, HttpClient, get, http_client, token_of},
};

/// The rounds of the single-server freshness test.
const ROUNDS: usize = 10_000;

/// `put_get` on `url` with a local cache of 1,000 sessions, tracking on before it listens.
fn cached_example(url: &str) -> Example {
    let example = Example::start("put_get", &[("REDIS_URL", url), ("LOCAL_CACHE", "1000")]);
    assert!(
        example
            .stdout()
            .contains("local cache: up to 1000 sessions (LOCAL_CACHE), tracking on"),
        "{}",
        example.stdout()
    );
    example
}

/// A new session on `example` holding `message=0`, and its token.
async fn new_session(http: &HttpClient, example: &Example) -> String {
    let res = get(http, &example.addr, "/put?message=0", None).await;
    assert_eq!(res.status, StatusCode::OK);
    token_of(&res.set_cookie.expect("a session cookie"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_process_is_never_read_stale_through_the_other() {
    let mut redis = RedisServer::start().await;
    let (a, b) = (cached_example(&redis.url()), cached_example(&redis.url()));
    let http = http_client();
    let token = new_session(&http, &a).await;
    let mut stale = Vec::new();
    for i in 1..=ROUNDS {
        let put = get(&http, &a.addr, &format!("/put?message={i}"), Some(&token)).await;
        assert_eq!(put.status, StatusCode::OK);
        let read = get(&http, &b.addr, "/get", Some(&token)).await;
        if read.body != i.to_string() {
            stale.push((i, read.body));
        }
    }
    assert!(
        stale.is_empty(),
        "{} stale reads of {ROUNDS}: {stale:?}",
        stale.len()
    );

    // B serves what it read from its cache: a second read sends no command.
    let inspector = redis.inspector();
    let mut monitor = Monitor::start(&redis).await;
    monitor.client_commands(&inspector).await;
    assert_eq!(
        get(&http, &b.addr, "/get", Some(&token)).await.body,
        ROUNDS.to_string()
    );
    assert_eq!(
        monitor.client_commands(&inspector).await,
        Vec::<String>::new()
    );

    // Renew on A: the old token is dead on B at once, the new one live.
    let renewed = get(&http, &a.addr, "/renew", Some(&token)).await;
    let new_token = token_of(&renewed.set_cookie.expect("a renewed cookie"));
    assert_eq!(get(&http, &b.addr, "/get", Some(&token)).await.body, "");
    assert_eq!(
        get(&http, &b.addr, "/get", Some(&new_token)).await.body,
        ROUNDS.to_string()
    );

    // Destroy on A: gone on B.
    assert_eq!(
        get(&http, &b.addr, "/get", Some(&new_token)).await.body,
        ROUNDS.to_string()
    );
    get(&http, &a.addr, "/destroy", Some(&new_token)).await;
    assert_eq!(get(&http, &b.addr, "/get", Some(&new_token)).await.body, "");

    // A flush: no session on B.
    let token = new_session(&http, &a).await;
    assert_eq!(get(&http, &b.addr, "/get", Some(&token)).await.body, "0");
    assert_eq!(get(&http, &b.addr, "/get", Some(&token)).await.body, "0");
    inspector.ok("FLUSHALL", &[]).await;
    assert_eq!(get(&http, &b.addr, "/get", Some(&token)).await.body, "");

    // Redis restarted (it keeps nothing): no session on B.
    let token = new_session(&http, &a).await;
    assert_eq!(get(&http, &b.addr, "/get", Some(&token)).await.body, "0");
    assert_eq!(get(&http, &b.addr, "/get", Some(&token)).await.body, "0");
    drop(monitor);
    redis.restart().await;
    let after = get(&http, &b.addr, "/get", Some(&token)).await;
    assert!(
        after.status == StatusCode::INTERNAL_SERVER_ERROR || after.body.is_empty(),
        "a session served after Redis restarted empty: {} {:?}",
        after.status,
        after.body
    );
}

/// What the users of the cluster test saw.
#[derive(Debug, Default)]
struct Seen {
    rounds: usize,
    /// Reads through B older than the write A acknowledged, while A (whose own write dropped
    /// its cache entry, so it reads Redis) sees that write: B served a stale cache entry.
    stale: Vec<String>,
    /// Acknowledged writes Redis itself lost (on the dead primary, not yet replicated).
    lost: usize,
    errors: usize,
}

/// One round for each session: write `message=<round>` through A, read it through B.
async fn round(
    http: &HttpClient,
    a: &Example,
    b: &Example,
    tokens: &[String],
    r: usize,
    seen: &mut Seen,
) {
    for token in tokens {
        let put = get(http, &a.addr, &format!("/put?message={r}"), Some(token)).await;
        if put.status != StatusCode::OK {
            seen.errors += 1;
            continue;
        }
        let read = get(http, &b.addr, "/get", Some(token)).await;
        if read.status != StatusCode::OK {
            seen.errors += 1;
            continue;
        }
        seen.rounds += 1;
        if read.body == r.to_string() {
            continue;
        }
        let truth = get(http, &a.addr, "/get", Some(token)).await;
        if truth.status == StatusCode::OK && truth.body == read.body {
            seen.lost += 1;
        } else {
            seen.stale.push(format!(
                "round {r}: B read {:?}, A reads {:?}",
                read.body, truth.body
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_no_read_is_stale_across_a_primary_failover() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let url = cluster.url();
    let (a, b) = (cached_example(&url), cached_example(&url));
    let http = http_client();
    let mut tokens = Vec::new();
    for _ in 0..12 {
        tokens.push(new_session(&http, &a).await);
    }
    let mut homes = std::collections::HashMap::<u16, usize>::new();
    for token in &tokens {
        let key = format!("scs:session:{token}");
        *homes.entry(cluster.primary_of(&key).await).or_default() += 1;
    }
    assert!(homes.len() >= 2, "the sessions span primaries: {homes:?}");
    let mut seen = Seen::default();
    for r in 1..=200 {
        round(&http, &a, &b, &tokens, r, &mut seen).await;
    }
    assert_eq!(seen.errors, 0, "{seen:?}");
    let (&victim, _) = homes.iter().max_by_key(|&(_, n)| *n).unwrap();
    cluster.kill_primary(victim).await;
    let healthy = tokio::spawn(async move {
        cluster.wait_healthy(Duration::from_secs(30)).await;
        cluster
    });
    let mut r = 200;
    while !healthy.is_finished() {
        r += 1;
        round(&http, &a, &b, &tokens, r, &mut seen).await;
    }
    let _cluster = healthy.await.expect("the replica took over");
    let errors_in_failover = seen.errors;
    for _ in 0..200 {
        r += 1;
        round(&http, &a, &b, &tokens, r, &mut seen).await;
    }
    println!(
        "cluster with the local cache: {} rounds checked, {} errors during the failover, {} \
         acknowledged writes lost by Redis, {} stale reads",
        seen.rounds,
        errors_in_failover,
        seen.lost,
        seen.stale.len()
    );
    assert!(seen.stale.is_empty(), "stale reads: {:?}", seen.stale);
    assert_eq!(
        seen.errors, errors_in_failover,
        "errors after the failover: {seen:?}"
    );
}
