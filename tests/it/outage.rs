//! Reliability when Redis fails under load, through `RedisStore::from_url` and the real layer
//! (the test app, served over TCP by axum on its own runtime), driven by 16 concurrent clients,
//! each with its own cookie, putting unique values and reading them back, plus a `/ping` probe:
//!
//! - Redis (AOF on, fsync always) killed mid-load, kept down 3 s, restarted on the same port and
//!   dir: no request hangs beyond the store timeout, every answer is 200 or 500, `/ping` stays
//!   fast, no write gets a 200 unless it is stored, no acknowledged write is lost, no client
//!   reads another's data, and service resumes by itself within about a second;
//! - Redis slow (`CLIENT PAUSE 2500 ALL`, `DEBUG SLEEP 2`): requests fail with 500 within the
//!   bound, service continues right after, the data is intact.
//!
//! Run with `--nocapture` to see the figures measured: latencies while Redis is down or slow,
//! time to the first successful put+get after it returns (and until every client is served),
//! acknowledged and lost writes, and, from the AOF, the puts answered 500 while Redis was dead
//! that Redis stored once it returned (a 500 promises nothing was stored *yet*).

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use http::StatusCode;

use crate::harness::{
    RedisServer,
    load::{
        AppServer, CLIENTS, Event, Load, MAX_LATENCY, Op, RECOVERY_LIMIT, STORE_TIMEOUT, Window,
        assert_all_served, at, examine, parse_value, probe, served_again, session_events, sleep,
        starved, value,
    },
};

/// AOF on, fsync at every write: an acknowledged write survives a kill.
const AOF: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];

/// The session values (`c<client>-<n>`) in the AOF files of the server in `dir`: every value
/// Redis ever stored there.
fn values_in_aof(dir: &std::path::Path) -> BTreeSet<String> {
    let aof = dir.join("appendonlydir");
    let files = std::fs::read_dir(&aof).unwrap_or_else(|e| panic!("{}: {e}", aof.display()));
    let mut values = BTreeSet::new();
    for file in files {
        let bytes = std::fs::read(file.expect("AOF dir entry").path()).expect("read the AOF");
        // Values are stored as JSON strings: `"c3-14"`.
        for piece in String::from_utf8_lossy(&bytes).split('"') {
            if parse_value(piece).is_some() {
                values.insert(piece.to_owned());
            }
        }
    }
    values
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Redis (AOF on, fsync always) is killed in the middle of the load, stays down 3 s, and comes
/// back on the same port with the same dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_then_restarted_loses_nothing() {
    let mut redis = RedisServer::start_with(&AOF).await;
    let persistence = redis.inspector().info("persistence").await;
    assert!(persistence.contains("aof_enabled:1"), "{persistence}");
    let server = AppServer::start("outage-server", &redis);
    let load = Load::start(server.addr);
    let epoch = load.epoch;
    sleep(Duration::from_secs(1)).await;

    redis.stop();
    let down = Instant::now();
    sleep(Duration::from_secs(3)).await;
    let respawn = Instant::now();
    redis.restart().await;
    let back = Instant::now();
    let (recovery, failed_probes, probe_token) = probe(server.addr, back).await;
    sleep(Duration::from_millis(1_500)).await;
    let (logs, pings) = load.finish().await;
    server.assert_alive();

    eprintln!(
        "Redis killed at {}, restarted at {}, answering at {}:",
        at(epoch, down),
        at(epoch, respawn),
        at(epoch, back)
    );
    let down_window = Window::of(&logs, down, back);
    down_window.print("while Redis was down");
    // A put sent and answered while Redis was dead cannot have been stored.
    let impossible: Vec<String> = session_events(&logs)
        .filter(|e| e.start > down && e.end < respawn && e.ok())
        .map(|e| e.describe(epoch))
        .collect();
    eprintln!(
        "  first put+get 200 {recovery:?} after Redis answered ({failed_probes} probe rounds \
         failed before)"
    );
    let served = served_again(&logs, back);
    let all_served = served.iter().flatten().max();
    eprintln!("  every client served again after: {all_served:?}");
    let found = examine(server.addr, &redis, &logs, &pings, &probe_token).await;
    found.print();
    // Puts answered 500 while Redis was dead, whose value Redis nevertheless stored (so, after
    // it returned): the 500 was right (nothing was stored then), but the write landed later.
    let stored = values_in_aof(redis.dir());
    let late: Vec<String> = logs
        .iter()
        .flat_map(|log| log.events.iter().map(move |e| (log.id, e)))
        .filter(|(_, e)| e.start > down && e.end < respawn && !e.ok())
        .filter_map(|(id, e)| match e.op {
            Op::Put(n) => Some(value(id, n)),
            _ => None,
        })
        .filter(|v| stored.contains(v))
        .collect();
    eprintln!(
        "  puts answered 500 while Redis was dead, stored after it returned: {} {late:?}",
        late.len()
    );
    server.assert_alive();

    assert!(
        down_window.too_slow.is_empty(),
        "requests slower than {MAX_LATENCY:?} while Redis was down: {:#?}",
        down_window.too_slow
    );
    assert!(
        down_window.failed > CLIENTS,
        "only {} requests failed while Redis was down",
        down_window.failed
    );
    assert!(
        impossible.is_empty(),
        "200s while Redis was dead: {impossible:#?}"
    );
    assert!(
        recovery <= RECOVERY_LIMIT + starved(back, back + recovery),
        "first successful put+get only {recovery:?} after Redis returned"
    );
    assert_all_served(&served, back, "Redis returning");
    found.assert_none();
}

/// How a test makes Redis stop answering.
#[derive(Clone, Copy)]
enum Stall {
    /// `CLIENT PAUSE <ms> ALL`: in effect from its reply on.
    Pause,
    /// `DEBUG SLEEP <secs>`: its reply comes when the sleep is over, so the sleep was in effect
    /// from the reply minus the sleep on (at the latest).
    DebugSleep,
}

/// Redis stops answering for `stall` (the way `how` says) during the load: requests fail with
/// 500 within the bound, service continues right after, and the data is intact.
async fn slow_redis(name: &'static str, args: &[&str], stall: Duration, how: Stall) {
    let redis = RedisServer::start_with(args).await;
    let server = AppServer::start(name, &redis);
    let load = Load::start(server.addr);
    let epoch = load.epoch;
    sleep(Duration::from_secs(1)).await;

    let stalled = Instant::now();
    let in_effect = match how {
        Stall::Pause => {
            let ms = stall.as_millis().to_string();
            redis.inspector().ok("CLIENT", &["PAUSE", &ms, "ALL"]).await;
            let in_effect = Instant::now();
            sleep(stall).await;
            in_effect
        }
        Stall::DebugSleep => redis.debug_sleep(stall.as_secs()).await - stall,
    };
    let resume = stalled + stall;
    let back = Instant::now().max(resume);
    let (recovery, failed_probes, probe_token) = probe(server.addr, back).await;
    sleep(Duration::from_millis(1_500)).await;
    let (logs, pings) = load.finish().await;
    server.assert_alive();

    eprintln!(
        "{name}: Redis stalled {stall:?} from {} to {}:",
        at(epoch, stalled),
        at(epoch, back)
    );
    let stall_window = Window::of(&logs, stalled, back);
    stall_window.print("during the stall");
    // Requests sent while Redis was stalled for longer than the store timeout.
    let doomed: Vec<&Event> = session_events(&logs)
        .filter(|e| {
            e.start > in_effect + Duration::from_millis(20)
                && e.start + STORE_TIMEOUT + Duration::from_millis(200) + starved(e.start, resume)
                    < resume
        })
        .collect();
    let not_500: Vec<String> = doomed
        .iter()
        .filter(|e| e.status != Some(StatusCode::INTERNAL_SERVER_ERROR))
        .map(|e| e.describe(epoch))
        .collect();
    let doomed_max = doomed.iter().map(|e| e.latency()).max().unwrap_or_default();
    eprintln!(
        "  requests sent when Redis could not answer in time: {} ({} not 500), max latency \
         {doomed_max:?}",
        doomed.len(),
        not_500.len()
    );
    eprintln!(
        "  first put+get 200 {recovery:?} after Redis answered again ({failed_probes} probe \
         rounds failed before)"
    );
    let served = served_again(&logs, back);
    let all_served = served.iter().flatten().max();
    eprintln!("  every client served again after: {all_served:?}");
    let found = examine(server.addr, &redis, &logs, &pings, &probe_token).await;
    found.print();
    server.assert_alive();

    assert!(
        stall_window.too_slow.is_empty(),
        "requests slower than {MAX_LATENCY:?} during the stall: {:#?}",
        stall_window.too_slow
    );
    // Each client sends a request within `THINK` of the stall's start, which Redis cannot
    // answer within the store timeout: each client got a 500 during the stall.
    let no_500: Vec<usize> = logs
        .iter()
        .filter(|log| {
            !log.events.iter().any(|e| {
                e.overlaps(in_effect, resume) && e.status == Some(StatusCode::INTERNAL_SERVER_ERROR)
            })
        })
        .map(|log| log.id)
        .collect();
    assert!(
        no_500.is_empty(),
        "clients with no 500 during the stall: {no_500:?}"
    );
    assert!(
        not_500.is_empty(),
        "requests Redis could not answer in time did not get a 500: {not_500:#?}"
    );
    assert!(
        recovery <= RECOVERY_LIMIT + starved(back, back + recovery),
        "first successful put+get only {recovery:?} after the stall"
    );
    assert_all_served(&served, back, "the stall's end");
    found.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_mid_load_times_out_cleanly() {
    slow_redis(
        "pause-server",
        &[],
        Duration::from_millis(2_500),
        Stall::Pause,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_debug_sleep_mid_load_times_out_cleanly() {
    let args = ["--enable-debug-command", "yes"];
    let stall = Duration::from_secs(2);
    slow_redis("sleep-server", &args, stall, Stall::DebugSleep).await;
}
