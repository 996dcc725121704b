//! Races that must never revive or fork a session, each run for hundreds of rounds: a renew
//! racing a destroy, a log-out-everywhere, or another renew; concurrent pops of one value.
//! Every race runs on both stores in one process, across two example processes sharing one
//! Redis, and on a 3-primary Redis Cluster (where a renew's old and new keys sit in different
//! slots).

use std::sync::{Arc, atomic::Ordering};

use axum::{Router, body::Body};
use http::{Request, StatusCode, header};
use tokio::sync::Barrier;
use tower_scs::{RedisStore, SessionLayer};

use crate::harness::{
    Backend, app,
    cluster::RedisCluster,
    example::{self, Example, HttpClient},
    send,
};

const DEFAULT_PREFIX: &str = RedisStore::DEFAULT_PREFIX;

crate::both_stores!(
    a_renew_racing_a_destroy_never_revives_it,
    a_renew_racing_log_out_everywhere_never_revives_it,
    concurrent_renews_never_fork_a_session,
    a_value_is_popped_by_exactly_one_request,
    the_owner_index_follows_the_owner,
    a_merge_racing_a_destroy_never_revives_the_merged_data,
);

/// Stores `message=1` (understood by the test app and the put_get example alike).
const PUT: &str = "/put?key=message&value=1&message=1";
const GET: &str = "/get?key=message";
const POP: &str = "/pop?key=message";
/// What `GET` answers when the session holds the value.
const HELD: &str = "1";

/// Where the requests go: one app in this process, or example processes sharing one Redis
/// (request `i` of a race goes to process `i % n`).
#[derive(Clone)]
enum Target {
    App(Router),
    /// Apps in this process, each over its own store (its own Redis connections).
    Apps(Vec<Router>),
    Processes(Box<HttpClient>, Vec<String>),
}

/// A response: its status, body, and the token of its `Set-Cookie` (empty when it expires the
/// cookie), if it had one.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: String,
    token: Option<String>,
}

impl Target {
    async fn get(&self, node: usize, path: &str, token: Option<&str>) -> Reply {
        let app = match self {
            Target::App(app) => Some(app),
            Target::Apps(apps) => Some(&apps[node % apps.len()]),
            Target::Processes(..) => None,
        };
        match (self, app) {
            (_, Some(app)) => {
                let mut req = Request::get(path);
                if let Some(token) = token {
                    req = req.header(header::COOKIE, format!("session={token}"));
                }
                let res = send(app, req.body(Body::empty()).unwrap()).await;
                let token = res.set_cookie().map(|c| c.value().to_owned());
                Reply {
                    status: res.status,
                    body: res.body,
                    token,
                }
            }
            (Target::Processes(http, addrs), _) => {
                let res = example::get(http, &addrs[node % addrs.len()], path, token).await;
                Reply {
                    status: res.status,
                    token: res.set_cookie.as_deref().map(example::token_of),
                    body: res.body,
                }
            }
            _ => unreachable!("every target but processes has apps"),
        }
    }

    /// A new session holding the value; its token.
    async fn new_session(&self) -> String {
        let res = self.get(0, PUT, None).await;
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
        res.token.expect("a write sends the cookie")
    }

    /// Whether `token` opens a session holding the value.
    async fn holds(&self, token: &str) -> bool {
        self.get(0, GET, Some(token)).await.body == HELD
    }

    /// Sends every request at once, each in its own task released by one barrier.
    async fn race(&self, requests: &[(&str, Option<&str>)]) -> Vec<Reply> {
        let barrier = Arc::new(Barrier::new(requests.len()));
        let tasks: Vec<_> = requests
            .iter()
            .enumerate()
            .map(|(node, (path, token))| {
                let (target, barrier) = (self.clone(), barrier.clone());
                let (path, token) = (path.to_string(), token.map(str::to_owned));
                tokio::spawn(async move {
                    barrier.wait().await;
                    target.get(node, &path, token.as_deref()).await
                })
            })
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(task.await.expect("request task"));
        }
        replies
    }

    /// The live new tokens the replies handed out.
    fn issued(replies: &[Reply]) -> impl Iterator<Item = &str> {
        replies
            .iter()
            .filter_map(|r| r.token.as_deref())
            .filter(|t| !t.is_empty())
    }
}

const ROUNDS: usize = 200;

/// `/renew` and `/destroy` of one session at once: afterwards neither the old token nor any
/// token the renew handed out opens the session's data. Returns the tokens (old, renewed) of
/// the rounds where the renew handed one out.
async fn renew_racing_destroy(target: &Target) -> Vec<(String, String)> {
    let (mut violations, mut renewed) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let old = target.new_session().await;
        let replies = target
            .race(&[("/renew", Some(&old)), ("/destroy", Some(&old))])
            .await;
        assert!(
            replies.iter().all(|r| r.status == StatusCode::OK),
            "{replies:?}"
        );
        for new in Target::issued(&replies) {
            renewed.push((old.clone(), new.to_owned()));
            if target.holds(new).await {
                violations.push(round);
            }
        }
        if target.holds(&old).await {
            violations.push(round);
        }
    }
    assert!(
        violations.is_empty(),
        "a destroyed session came back in rounds {violations:?}"
    );
    renewed
}

/// `/renew` of a session of `alice` and `/destroy_owner?value=alice` (from another session)
/// at once: afterwards no token opens the session's data or carries alice as owner.
async fn renew_racing_destroy_owner(target: &Target) {
    let mut violations = Vec::new();
    for round in 0..ROUNDS {
        let old = target.new_session().await;
        target.get(0, "/set_owner?value=alice", Some(&old)).await;
        let other = target
            .get(0, "/put?key=x&value=y", None)
            .await
            .token
            .unwrap();
        let replies = target
            .race(&[
                ("/renew", Some(&old)),
                ("/destroy_owner?value=alice", Some(&other)),
            ])
            .await;
        assert!(
            replies.iter().all(|r| r.status == StatusCode::OK),
            "{replies:?}"
        );
        let owner_of = |t: String| async move { target.get(0, "/owner", Some(&t)).await.body };
        for token in Target::issued(&replies[..1]).chain([old.as_str()]) {
            if target.holds(token).await || owner_of(token.to_owned()).await == "alice" {
                violations.push(round);
            }
        }
    }
    assert!(
        violations.is_empty(),
        "a session logged out everywhere came back in rounds {violations:?}"
    );
}

/// Two `/renew`s of one session at once: exactly one new token carries the data on.
async fn concurrent_renews(target: &Target) {
    let mut forks = Vec::new();
    for round in 0..ROUNDS {
        let old = target.new_session().await;
        let replies = target
            .race(&[("/renew", Some(&old)), ("/renew", Some(&old))])
            .await;
        assert!(
            replies.iter().all(|r| r.status == StatusCode::OK),
            "{replies:?}"
        );
        let mut carriers = 0;
        for new in Target::issued(&replies) {
            carriers += usize::from(target.holds(new).await);
        }
        if carriers != 1 || target.holds(&old).await {
            forks.push((round, carriers));
        }
    }
    assert!(
        forks.is_empty(),
        "(round, tokens carrying the data) where not exactly one did: {forks:?}"
    );
}

/// `/merge?token=<b>` into session a and `/destroy` of b at once: afterwards no token opens b's
/// data (a merge that wins the hand-over takes b's data into a, and the destroy, following it,
/// ends a too).
async fn merge_racing_destroy(target: &Target) {
    let mut violations = Vec::new();
    for round in 0..ROUNDS {
        let a = target
            .get(0, "/put?key=own&value=a", None)
            .await
            .token
            .unwrap();
        let b = target.new_session().await;
        let merge = format!("/merge?token={b}");
        let replies = target
            .race(&[(&merge, Some(&a)), ("/destroy", Some(&b))])
            .await;
        assert!(
            replies.iter().all(|r| r.status == StatusCode::OK),
            "{replies:?}"
        );
        for token in Target::issued(&replies[..1]).chain([a.as_str(), b.as_str()]) {
            if target.holds(token).await {
                violations.push(round);
            }
        }
    }
    assert!(
        violations.is_empty(),
        "a destroyed session's data survived a merge in rounds {violations:?}"
    );
}

/// `ways` requests pop one value at once, for `rounds` rounds: exactly one gets it each time.
async fn concurrent_pops(target: &Target, ways: usize, rounds: usize) {
    let mut wrong = Vec::new();
    for round in 0..rounds {
        let token = target.new_session().await;
        let requests = vec![(POP, Some(token.as_str())); ways];
        let replies = target.race(&requests).await;
        assert!(
            replies.iter().all(|r| r.status == StatusCode::OK),
            "{replies:?}"
        );
        let got = replies.iter().filter(|r| r.body == HELD).count();
        if got != 1 || target.holds(&token).await {
            wrong.push((round, got));
        }
    }
    assert!(
        wrong.is_empty(),
        "(round, requests that got the value) where not exactly one did: {wrong:?}"
    );
}

/// `set_owner("alice")` then `set_owner("bob")`: logging alice out everywhere leaves the
/// session alone, logging bob out ends it. The same after a renew carries bob's session on.
async fn owner_moves(target: &Target) {
    let token = target.new_session().await;
    target.get(0, "/set_owner?value=alice", Some(&token)).await;
    target.get(0, "/set_owner?value=bob", Some(&token)).await;
    let other = target
        .get(0, "/put?key=x&value=y", None)
        .await
        .token
        .unwrap();
    let logout = |owner: &'static str| {
        let other = other.clone();
        async move {
            let path = format!("/destroy_owner?value={owner}");
            target.get(0, &path, Some(&other)).await.body
        }
    };
    assert_eq!(logout("alice").await, "0", "alice had no session left");
    assert!(
        target.holds(&token).await,
        "bob's session survives alice's logout"
    );
    let renewed = target.get(0, "/renew", Some(&token)).await.token.unwrap();
    assert_eq!(target.get(0, "/owner", Some(&renewed)).await.body, "bob");
    assert_eq!(logout("alice").await, "0");
    assert!(target.holds(&renewed).await);
    assert_eq!(logout("bob").await, "1");
    assert!(!target.holds(&renewed).await);
}

/// The app over `backend`'s store, every store call of which first yields for a millisecond:
/// in-memory store calls otherwise finish before a concurrent request gets to run, which would
/// leave the races below mostly unraced.
async fn racy_app(backend: &Backend) -> Target {
    backend.calls.delay_ms.store(1, Ordering::SeqCst);
    Target::App(backend.app(|l| l).await)
}

async fn a_merge_racing_a_destroy_never_revives_the_merged_data(backend: Backend) {
    merge_racing_destroy(&racy_app(&backend).await).await;
}

async fn the_owner_index_follows_the_owner(backend: Backend) {
    owner_moves(&racy_app(&backend).await).await;
}

async fn a_renew_racing_a_destroy_never_revives_it(backend: Backend) {
    let target = racy_app(&backend).await;
    renew_racing_destroy(&target).await;
}

async fn a_renew_racing_log_out_everywhere_never_revives_it(backend: Backend) {
    let target = racy_app(&backend).await;
    renew_racing_destroy_owner(&target).await;
}

async fn concurrent_renews_never_fork_a_session(backend: Backend) {
    let target = racy_app(&backend).await;
    concurrent_renews(&target).await;
}

async fn a_value_is_popped_by_exactly_one_request(backend: Backend) {
    let target = racy_app(&backend).await;
    concurrent_pops(&target, 2, ROUNDS).await;
    concurrent_pops(&target, 8, 100).await;
}

/// The same races across two put_get example processes sharing one Redis: the renew on one,
/// the destroy (or the other renew, or half the pops) on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_across_two_processes() {
    let redis = crate::harness::RedisServer::start().await;
    let a = Example::on_redis("put_get", &redis);
    let b = Example::on_redis("put_get", &redis);
    let addrs = vec![a.addr.clone(), b.addr.clone()];
    let target = Target::Processes(Box::new(example::http_client()), addrs);
    renew_racing_destroy(&target).await;
    concurrent_renews(&target).await;
    concurrent_pops(&target, 2, ROUNDS).await;
    concurrent_pops(&target, 8, 100).await;
}

/// Log out everywhere, and a merge, racing across two apps that each have their own
/// `RedisStore` (own connections) on one Redis: the renew or merge on one, the destroy on the
/// other. (The put_get example has no owner or merge routes; the other races run across two
/// example processes above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_and_merge_races_across_two_stores_on_one_redis() {
    let redis = crate::harness::RedisServer::start().await;
    let mut apps = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::from_url(&redis.url()).await.expect("from_url");
        apps.push(app(SessionLayer::new(store)));
    }
    let target = Target::Apps(apps);
    renew_racing_destroy_owner(&target).await;
    merge_racing_destroy(&target).await;
}

/// The same races on a 3-primary cluster, where a renew's old and new keys are in different
/// slots (checked: most renews move the session to another primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let store = RedisStore::from_url(&cluster.url())
        .await
        .expect("RedisStore::from_url on the cluster");
    let target = Target::App(app(SessionLayer::new(store)));
    let renewed = renew_racing_destroy(&target).await;
    let key = |t: &str| format!("{DEFAULT_PREFIX}{t}");
    let mut moved = 0;
    for (old, new) in &renewed {
        moved +=
            usize::from(cluster.primary_of(&key(old)).await != cluster.primary_of(&key(new)).await);
    }
    assert!(
        moved > 0,
        "no renew moved its session to another primary: {} renews",
        renewed.len()
    );
    renew_racing_destroy_owner(&target).await;
    concurrent_renews(&target).await;
    concurrent_pops(&target, 2, ROUNDS).await;
    concurrent_pops(&target, 8, 100).await;
    owner_moves(&target).await;
    merge_racing_destroy(&target).await;

    // A 9,000-key session (past Lua's unpack limit) renewed into another slot, then cleared.
    let token = target
        .get(0, "/put_many?n=9000&value=v", None)
        .await
        .token
        .unwrap();
    let renewed = target.get(0, "/renew", Some(&token)).await;
    assert_eq!(renewed.status, StatusCode::OK, "{renewed:?}");
    let renewed = renewed.token.unwrap();
    assert_eq!(target.get(0, "/count", Some(&renewed)).await.body, "9000");
    assert_eq!(target.get(0, "/count", Some(&token)).await.body, "0");
    assert_eq!(
        target.get(0, "/clear", Some(&renewed)).await.status,
        StatusCode::OK
    );
    assert_eq!(target.get(0, "/count", Some(&renewed)).await.body, "0");
}
