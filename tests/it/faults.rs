//! Network faults between the app and Redis, through a real fault proxy (`harness::proxy`),
//! under the outage tests' load (`harness::load`: 16 clients putting unique values and reading
//! every one back, and a `/ping` probe), with the app on `RedisStore::from_url` and its default
//! settings. In every case: every answer is 200 or 500 within the bound, `/ping` stays fast, no
//! acknowledged write is lost, no client reads another's data, and Redis holds exactly the
//! clients' sessions. And:
//!
//! - 50 ms more on every reply: slower, and every request still served;
//! - replies 1.5 s late (beyond fred's 900 ms command timeout): bounded errors, no hang;
//! - a blackhole (connections open, nothing passes): bounded errors, and service back within
//!   1 s of healing;
//! - every connection reset (RST) 20 times, mid-command;
//! - commands and replies cut in slices of 7 bytes: every request served;
//! - Redis closing every connection while the proxy keeps the app's side open 2 s (slow close).
//!
//! And beside the load, under a blackhole: an owner's device list (`ZRANGE`) and `ids()` (`SCAN`)
//! end in a timeout too, and are served again once it is lifted.
//!
//! Run with `--nocapture` for the figures: the worst request time during the fault, the time to
//! the first put+get served after it, and the writes acknowledged and lost.

use std::time::{Duration, Instant, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use http::StatusCode;
use tower_scs::{
    Error, RedisStore,
    store::{Change, SessionStore},
};

use crate::harness::{
    RedisServer,
    load::{
        AppServer, Load, MAX_LATENCY, RECOVERY_LIMIT, Window, assert_all_served, examine, probe,
        served_again, session_events, sleep, starved,
    },
    proxy::{Fault, FaultProxy},
};

/// What the test does to the network, and for how long.
#[derive(Clone, Copy)]
enum Plan {
    /// `Fault` in force for the duration.
    Hold(Fault, Duration),
    /// Every open connection reset this many times, 100 ms apart.
    Resets(u32),
    /// `CLIENT KILL TYPE normal` on Redis while the proxy delays each close toward the app by
    /// the duration.
    KillBehindSlowClose(Duration),
}

/// What a run under a fault showed.
struct Outcome {
    /// The session requests in flight while the fault was on.
    during: Window,
    /// The session requests sent and answered wholly within the fault, with 50 ms of margin.
    inside: Vec<(Option<StatusCode>, Duration)>,
    /// From the fault's end to the first put and get served.
    recovery: Duration,
    healed: Instant,
    /// The connections the app opened through the proxy, over the whole run.
    connections: usize,
}

/// Runs the load through a proxy to a fresh Redis, applies `plan` after a second, and checks
/// everything the module's doc lists as holding in every case.
async fn under(name: &'static str, plan: Plan) -> Outcome {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.port()).await;
    let server = AppServer::start_on(name, proxy.url());
    let load = Load::start(server.addr);
    sleep(Duration::from_secs(1)).await;

    let faulted = Instant::now();
    apply(plan, &proxy, &redis).await;
    let healed = Instant::now();
    let (recovery, failed, probe_token) = probe(server.addr, healed).await;
    sleep(Duration::from_millis(1_500)).await;
    let (logs, pings) = load.finish().await;
    server.assert_alive();

    eprintln!("{name}: fault for {:?}", healed - faulted);
    let during = Window::of(&logs, faulted, healed);
    during.print("during the fault");
    eprintln!("  first put+get 200 {recovery:?} after the fault ({failed} probe rounds failed)");
    let served = served_again(&logs, healed);
    eprintln!(
        "  every client served again after {:?}",
        served.iter().flatten().max()
    );
    let found = examine(server.addr, &redis, &logs, &pings, &probe_token).await;
    found.print();
    server.assert_alive();
    found.assert_none();
    assert!(
        during.too_slow.is_empty(),
        "slower than {MAX_LATENCY:?}: {:#?}",
        during.too_slow
    );
    assert_all_served_after(&served, healed, plan);
    let margin = Duration::from_millis(50);
    let inside = session_events(&logs)
        .filter(|e| e.start > faulted + margin && e.end + margin < healed)
        .map(|e| (e.status, e.latency()))
        .collect();
    eprintln!("  connections through the proxy: {}", proxy.connections());
    Outcome {
        during,
        inside,
        recovery,
        healed,
        connections: proxy.connections(),
    }
}

/// Does what `plan` says to the network, and returns once the fault is over.
async fn apply(plan: Plan, proxy: &FaultProxy, redis: &RedisServer) {
    match plan {
        Plan::Hold(fault, how_long) => {
            proxy.set(fault);
            sleep(how_long).await;
        }
        Plan::Resets(times) => {
            for _ in 0..times {
                proxy.reset();
                sleep(Duration::from_millis(100)).await;
            }
        }
        Plan::KillBehindSlowClose(delay) => {
            proxy.set(Fault::SlowClose(delay));
            let inspector = redis.inspector();
            inspector
                .command("CLIENT", &["KILL", "TYPE", "normal"])
                .await;
            sleep(delay).await;
        }
    }
    proxy.set(Fault::None);
}

/// Every client served again within `RECOVERY_LIMIT` of the fault's end; replies late by more
/// than that are still arriving then, so that long after a latency fault.
fn assert_all_served_after(served: &[Option<Duration>], healed: Instant, plan: Plan) {
    match plan {
        Plan::Hold(Fault::Latency(late), _) if late > RECOVERY_LIMIT => {
            let limit = late + RECOVERY_LIMIT;
            let slow = served
                .iter()
                .flatten()
                .filter(|s| **s > limit + starved(healed, healed + **s));
            assert_eq!(
                slow.count(),
                0,
                "clients served again only after {served:?}"
            );
            assert!(served.iter().all(Option::is_some), "{served:?}");
        }
        _ => assert_all_served(served, healed, "the fault's end"),
    }
}

impl Outcome {
    /// More than one request a client was sent and answered within the fault, all with
    /// `status`.
    fn all_inside_answered(&self, status: StatusCode) {
        assert!(self.inside.len() > 16, "{} requests", self.inside.len());
        let other: Vec<_> = self
            .inside
            .iter()
            .filter(|(s, _)| *s != Some(status))
            .collect();
        assert!(other.is_empty(), "not {status} within the fault: {other:?}");
    }
}

/// The median of the latencies.
fn median(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[latencies.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_ms_more_per_reply_is_slower_and_served() {
    let late = Duration::from_millis(50);
    let run = under(
        "latency-server",
        Plan::Hold(Fault::Latency(late), Duration::from_secs(2)),
    )
    .await;
    run.all_inside_answered(StatusCode::OK);
    let latencies: Vec<Duration> = run.inside.iter().map(|(_, l)| *l).collect();
    assert!(median(latencies) >= late, "no slower: {:?}", run.inside);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_later_than_the_command_timeout_are_bounded_errors() {
    let late = Duration::from_millis(1_500);
    let run = under(
        "late-server",
        Plan::Hold(Fault::Latency(late), Duration::from_secs(3)),
    )
    .await;
    run.all_inside_answered(StatusCode::INTERNAL_SERVER_ERROR);
    assert!(run.during.failed > 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_is_bounded_errors_and_service_back_within_a_second() {
    let run = under(
        "blackhole-server",
        Plan::Hold(Fault::Blackhole, Duration::from_secs(3)),
    )
    .await;
    run.all_inside_answered(StatusCode::INTERNAL_SERVER_ERROR);
    assert!(run.during.failed > 16);
    let limit = Duration::from_secs(1) + starved(run.healed, run.healed + run.recovery);
    assert!(
        run.recovery <= limit,
        "served again only {:?} after healing",
        run.recovery
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_mid_command_lose_no_acknowledged_write() {
    let run = under("reset-server", Plan::Resets(20)).await;
    // Connections made again after the resets (a reset may come before fred reconnected,
    // 100 ms after the last one, so not all 4 of the pool each time).
    assert!(run.connections > 20, "{} connections", run.connections);
    assert!(
        run.during.count > 16,
        "{} requests during the resets",
        run.during.count
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_replies_in_seven_byte_slices_are_served() {
    let run = under(
        "slices-server",
        Plan::Hold(Fault::Slices(7), Duration::from_secs(2)),
    )
    .await;
    run.all_inside_answered(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_closing_behind_a_slow_close_is_bounded_errors() {
    let run = under(
        "slow-close-server",
        Plan::KillBehindSlowClose(Duration::from_secs(2)),
    )
    .await;
    assert!(
        run.during.count > 16,
        "{} requests during the slow close",
        run.during.count
    );
}

/// Under a blackhole the store's other commands end like a load does: an owner's device list
/// (`ZRANGE`), `ids()` (`SCAN`) and a commit (its script) in `Error::Timeout`, within the
/// command timeout, never a hang; and once the fault is lifted all are served again, on the
/// same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_times_out_the_device_list_the_scan_and_a_commit_and_all_come_back() {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.port()).await;
    let store = RedisStore::from_url(&proxy.url()).await.unwrap();
    let limit = store
        .load_timeout()
        .expect("from_url sets a command timeout");
    let now = SystemTime::now();
    let change = Change::create(now, now + Duration::from_secs(600)).with_owner("alice");
    let id = "A".repeat(43);
    store.commit(&id, &change).await.unwrap().unwrap();

    proxy.set(Fault::Blackhole);
    let bound = limit + Duration::from_millis(500);
    let t0 = Instant::now();
    let devices = store.owner_sessions("alice").await;
    assert!(matches!(devices, Err(Error::Timeout(_))), "{devices:?}");
    let scanned = store.ids().next().await.expect("an answer");
    assert!(matches!(scanned, Err(Error::Timeout(_))), "{scanned:?}");
    let update = || Change::update(SystemTime::now()).with_set("k", "\"v\"");
    let committed = store.commit(&id, &update()).await;
    assert!(
        matches!(committed, Err(Error::Timeout(d)) if d == limit),
        "{committed:?}"
    );
    assert!(t0.elapsed() <= bound * 3, "took {:?}", t0.elapsed());

    proxy.set(Fault::None);
    let healed = Instant::now();
    loop {
        let devices = store.owner_sessions("alice").await;
        let ids: Result<Vec<String>, Error> = store.ids().try_collect().await;
        let committed = store.commit(&id, &update()).await;
        if let (Ok(devices), Ok(ids), Ok(Some(_))) = (&devices, &ids, &committed) {
            assert_eq!(devices.len(), 1);
            assert_eq!(ids, std::slice::from_ref(&id));
            break;
        }
        assert!(
            healed.elapsed() < bound * 4,
            "not served {:?} after healing: {devices:?} {ids:?} {committed:?}",
            healed.elapsed()
        );
    }
}
