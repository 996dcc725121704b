//! `MemoryStore` with 1k vs 1M live sessions (issue 9: reads must not slow down with the number
//! of sessions held; the old store swept every record every 1,024 commits, and at 1.1M sessions
//! its HTTP throughput halved and read p99 went from 2.2 to 14.5 ms).
//!
//! ```sh
//! cargo bench --bench memory_store              # both parts
//! PART=http cargo bench --bench memory_store    # the request-level part only
//! PART=micro cargo bench --bench memory_store   # the micro-bench only
//! ```
//!
//! **Request level** (the headline): two server processes (this binary re-executed with
//! `--serve`) each serve the `put_get` example's routes over a `MemoryStore` prefilled, through
//! `SessionStore::commit`, with 1,000 and 1,000,000 live sessions (one value each, 1 h lifetime;
//! token `i` is base64url(sha256(i)), 43 well-formed characters, so the client rebuilds it).
//! `CLIENTS` keep-alive HTTP/1.1 connections then send `GET /get` with the cookie of a session
//! drawn uniformly among the server's N, checking each body against the value stored for it.
//! Rounds alternate 1k, 1M, 1k, 1M …; each prints req/s, p50/p99 latency and the server's RSS,
//! then the medians and the median of the per-round 1M/1k ratios. Environment: `HTTP_ROUNDS`
//! (5), `HTTP_REQUESTS` per round (300,000), `CLIENTS` (64), `CAP` (a `max_sessions` cap for
//! both servers; none by default), `STORE=floor` (serve from a bare `Mutex<HashMap>` instead: the
//! request-level floor).
//!
//! **Micro-bench**: a store of 1,000 sessions and one of 1,000,000 in this process; for several
//! rounds, times single `load`s on one thread:
//!
//! - `1k`: uniform over the 1k store;
//! - `1M all`: uniform over all of the 1M store (every read a likely CPU-cache miss);
//! - `1M hot`: over 1k sessions of the 1M store (what the store's size alone costs);
//! - `mix`: the same three, with one update commit every ten calls (the old sweep's trigger);
//! - `floor`: a std `HashMap` behind a `Mutex` (the old store's read path without its sweep),
//!   1k and 1M all: what the memory hierarchy alone costs a uniform read over 1M sessions.
//!
//! It prints each round, the median ops/s and p99 of each, the ratios to `1k`, and the RSS the
//! 1M sessions added. `ROUNDS` and `OPS` (per scenario per round) override the defaults.

#[allow(dead_code)]
#[path = "../examples/put_get.rs"]
mod put_get;

use std::{
    collections::HashMap,
    hint::black_box,
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use axum::serve::ListenerExt;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::FutureExt;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tower_scs::store::{Change, Committed, Record, SessionStore};
use tower_scs::{Error, MemoryStore, SessionLayer};

// ---- request level ----

/// Session `i`'s token: base64url of 32 bytes (sha256 of `i`), as the layer's tokens are.
fn token(i: u64) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(i.to_le_bytes()))
}

/// The value stored in session `i` (what `GET /get` must answer).
fn value(i: u64) -> String {
    format!("value of session {i}")
}

/// Fills `store` with sessions `0..n`, through `commit` as the layer would create them.
fn prefill(store: &impl SessionStore, n: u64) {
    let now = SystemTime::now();
    for i in 0..n {
        let json = serde_json::to_string(&value(i)).unwrap();
        let create = Change::create(now, now + Duration::from_secs(3600)).with_set("message", json);
        let done = store.commit(&token(i), &create).now_or_never().unwrap();
        assert!(done.unwrap().is_some());
    }
}

/// The request-level floor (`STORE=floor`): a `Mutex<HashMap>` with no expiry, no cap, no
/// owner index, no replace or take; what the memory hierarchy alone costs a request.
#[derive(Clone, Default)]
struct FloorStore(Arc<Mutex<HashMap<String, Record>>>);

impl SessionStore for FloorStore {
    async fn load(&self, id: &str) -> Result<Option<Record>, Error> {
        Ok(self.0.lock().unwrap().get(id).cloned())
    }

    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        let deadline = change.deadline().unwrap_or(change.now);
        let values = change.set.iter().cloned().collect();
        let record = Record::new(values, deadline, change.expiry(deadline));
        let committed = Committed {
            expiry: record.expiry,
            remember: false,
        };
        self.0.lock().unwrap().insert(id.to_owned(), record);
        Ok(Some(committed))
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.0.lock().unwrap().remove(id);
        Ok(())
    }

    async fn replace(&self, _: &str, _: &str) -> Result<bool, Error> {
        Ok(false)
    }

    async fn take(&self, _: &str, _: &str) -> Result<Option<String>, Error> {
        Ok(None)
    }
}

/// The server side: `n` sessions in a `MemoryStore` (or the floor), the example's app over it,
/// until killed.
fn serve(n: u64, addr: &str, floor: bool, cap: Option<u64>) {
    let layer = if floor {
        let store = FloorStore::default();
        prefill(&store, n);
        SessionLayer::new(store)
    } else {
        let store = match cap {
            Some(cap) => MemoryStore::new().max_sessions(cap),
            None => MemoryStore::new(),
        };
        prefill(&store, n);
        assert_eq!(store.len() as u64, n.min(cap.unwrap_or(u64::MAX)));
        SessionLayer::new(store)
    };
    let layer = layer.secure(false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, put_get::app(layer))
            .await
            .expect("serve");
    });
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    name: &'static str,
    n: u64,
    addr: String,
    proc: Proc,
}

fn start_server(name: &'static str, n: u64, store: &str, cap: Option<u64>) -> Server {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let cap = cap.map_or("none".to_owned(), |c| c.to_string());
    let args = ["--serve", &n.to_string(), &addr, store, &cap];
    let child = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server process");
    Server {
        name,
        n,
        addr,
        proc: Proc(child),
    }
}

fn wait_for(server: &mut Server) {
    let start = Instant::now();
    while std::net::TcpStream::connect(&server.addr).is_err() {
        if let Ok(Some(status)) = server.proc.0.try_wait() {
            panic!("the {} server exited: {status}", server.name);
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{} never listened",
            server.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kibibytes of resident memory of `pid`.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One keep-alive connection: `GET /get` as a random session of `n` until `total` requests are
/// claimed; returns the latencies (µs), and counts wrong answers in `failures`.
async fn client(
    seed: u64,
    addr: String,
    n: u64,
    next: Arc<AtomicU64>,
    total: u64,
    failures: Arc<AtomicU64>,
) -> Vec<u32> {
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut latencies = Vec::new();
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let i = rng.below(n as usize) as u64;
        let req = Request::get("/get")
            .header(header::HOST, addr.as_str())
            .header(header::COOKIE, format!("session={}", token(i)))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let t = Instant::now();
        let answer = match sender.ready().await {
            Ok(()) => sender.send_request(req).await,
            Err(e) => Err(e),
        };
        let ok = match answer {
            Ok(res) => {
                let status = res.status();
                let body = res.into_body().collect().await.map(|b| b.to_bytes());
                status == StatusCode::OK && body.is_ok_and(|b| b == value(i).as_bytes())
            }
            Err(_) => false,
        };
        latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        if !ok {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    latencies
}

struct Round {
    rate: f64,
    p50: f64,
    p99: f64,
    failures: u64,
}

/// `total` requests over `clients` connections to `server`.
async fn drive(server: &Server, clients: u64, total: u64) -> Round {
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (next, failures) = (Arc::clone(&next), Arc::clone(&failures));
        tasks.spawn(client(
            c,
            server.addr.clone(),
            server.n,
            next,
            total,
            failures,
        ));
    }
    let mut all = Vec::with_capacity(total as usize);
    while let Some(latencies) = tasks.join_next().await {
        all.extend(latencies.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: usize| f64::from(all[(all.len() * q / 100).min(all.len() - 1)]) / 1000.0;
    Round {
        rate: all.len() as f64 / secs,
        p50: at(50),
        p99: at(99),
        failures: failures.load(Ordering::Relaxed),
    }
}

/// The request-level part: 1k vs 1M live sessions behind the session layer, over HTTP.
fn http() {
    let rounds = env("HTTP_ROUNDS", 5);
    let total = env("HTTP_REQUESTS", 300_000) as u64;
    let clients = env("CLIENTS", 64) as u64;
    let cap = std::env::var("CAP").ok().and_then(|v| v.parse().ok());
    let store = std::env::var("STORE").unwrap_or_else(|_| "moka".to_owned());
    let mut servers = [
        start_server("1k", 1_000, &store, cap),
        start_server("1M", 1_000_000, &store, cap),
    ];
    let started = Instant::now();
    for server in &mut servers {
        wait_for(server);
    }
    let cap_text = cap.map_or("none".to_owned(), |c| c.to_string());
    println!(
        "{store} servers ready in {:.1?} (cap: {cap_text}); RSS 1k {} MiB, 1M {} MiB",
        started.elapsed(),
        rss_of(servers[0].proc.0.id()) / 1024,
        rss_of(servers[1].proc.0.id()) / 1024,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut failed = 0;
    for server in &servers {
        // Warm-up: connections, allocator, the cache's first maintenance.
        failed += rt.block_on(drive(server, clients, total / 10)).failures;
    }
    let mut results: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (i, server) in servers.iter().enumerate() {
            let r = rt.block_on(drive(server, clients, total));
            println!(
                "round {round} {:>2}: {:>7.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} failed, \
                 server RSS {} MiB",
                server.name,
                r.rate,
                r.p50,
                r.p99,
                r.failures,
                rss_of(server.proc.0.id()) / 1024
            );
            failed += r.failures;
            results[i].push(r);
        }
    }
    let ratios: Vec<f64> = results[1]
        .iter()
        .zip(&results[0])
        .map(|(big, small)| big.rate / small.rate)
        .collect();
    println!("\nmedian of {rounds} rounds, {total} requests each, {clients} keep-alive clients:");
    println!("| sessions | req/s | p50 | p99 | server RSS |");
    println!("|---|---:|---:|---:|---:|");
    for (server, rs) in servers.iter().zip(&results) {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {} MiB |",
            server.name,
            median(rs.iter().map(|r| r.rate).collect()),
            median(rs.iter().map(|r| r.p50).collect()),
            median(rs.iter().map(|r| r.p99).collect()),
            rss_of(server.proc.0.id()) / 1024,
        );
    }
    let shown: Vec<String> = ratios
        .iter()
        .map(|r| format!("{:.1}%", 100.0 * r))
        .collect();
    println!(
        "1M/1k req/s: median {:.1}% (rounds: {})",
        100.0 * median(ratios.clone()),
        shown.join(", ")
    );
    assert_eq!(failed, 0, "{failed} requests got a wrong answer");
}

// ---- micro-bench ----

fn id(n: usize) -> String {
    format!("{n:043}")
}

/// A create (1 h deadline) when `create`, else an update; 30 min idle timeout.
fn change(create: bool, value: &str) -> Change {
    let now = SystemTime::now();
    let change = match create {
        true => Change::create(now, now + Duration::from_secs(3600)),
        false => Change::update(now),
    };
    (change.with_set("message", value)).with_idle_ttl(Some(Duration::from_secs(1800)))
}

fn populate(n: usize) -> MemoryStore {
    let store = MemoryStore::new();
    let create = change(true, "\"Hello from a session!\"");
    for i in 0..n {
        store
            .commit(&id(i), &create)
            .now_or_never()
            .unwrap()
            .unwrap();
    }
    store
}

/// A small xorshift generator: the same id sequence for every scenario.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `ops` calls on ids drawn from `ids`; every `write_every`-th call (if any) is an update
/// commit. Returns (calls per second, p99 of the loads in µs).
fn run(store: &MemoryStore, ids: &[String], ops: usize, write_every: Option<usize>) -> (f64, f64) {
    let update = change(false, "\"updated\"");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut loads = Vec::with_capacity(ops);
    let started = Instant::now();
    for i in 0..ops {
        let id = &ids[rng.below(ids.len())];
        if write_every.is_some_and(|w| i % w == 0) {
            black_box(store.commit(id, &update).now_or_never().unwrap().unwrap());
            continue;
        }
        let t = Instant::now();
        black_box(store.load(id).now_or_never().unwrap().unwrap());
        loads.push(t.elapsed().as_nanos() as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    loads.sort_unstable();
    let p99 = loads[loads.len() * 99 / 100] as f64 / 1000.0;
    (ops as f64 / secs, p99)
}

/// The floor: `load` as the old store did it, lock, look up, clone.
fn run_floor(map: &Mutex<HashMap<String, Record>>, ids: &[String], ops: usize) -> (f64, f64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut loads = Vec::with_capacity(ops);
    let started = Instant::now();
    for _ in 0..ops {
        let id = &ids[rng.below(ids.len())];
        let t = Instant::now();
        black_box(map.lock().unwrap().get(id.as_str()).cloned());
        loads.push(t.elapsed().as_nanos() as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    loads.sort_unstable();
    (
        ops as f64 / secs,
        loads[loads.len() * 99 / 100] as f64 / 1000.0,
    )
}

fn floor_map(store: &MemoryStore, n: usize) -> Mutex<HashMap<String, Record>> {
    let load = |i| store.load(&id(i)).now_or_never().unwrap().unwrap().unwrap();
    Mutex::new((0..n).map(|i| (id(i), load(i))).collect())
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The micro-bench: bare `load` calls on one thread.
fn micro() {
    let (rounds, ops) = (env("ROUNDS", 5), env("OPS", 2_000_000));
    let small = populate(1_000);
    let before = rss_kib();
    let started = Instant::now();
    let big = populate(1_000_000);
    let filled = started.elapsed();
    let added = rss_kib().saturating_sub(before);
    println!(
        "1M sessions: filled in {filled:.1?}, RSS +{} MiB, len {}",
        added / 1024,
        big.len()
    );
    let scenarios: [(&str, &MemoryStore, usize, Option<usize>); 6] = [
        ("1k", &small, 1_000, None),
        ("1M all", &big, 1_000_000, None),
        ("1M hot", &big, 1_000, None),
        ("mix 1k", &small, 1_000, Some(10)),
        ("mix 1M all", &big, 1_000_000, Some(10)),
        ("mix 1M hot", &big, 1_000, Some(10)),
    ];
    let ids: Vec<String> = (0..1_000_000).map(id).collect();
    let floors = [
        ("floor 1k", floor_map(&small, 1_000)),
        ("floor 1M", floor_map(&big, 1_000_000)),
    ];
    let mut results = vec![(Vec::new(), Vec::new()); scenarios.len() + 2];
    for round in 1..=rounds {
        for (i, (name, store, span, writes)) in scenarios.iter().enumerate() {
            let (rate, p99) = run(store, &ids[..*span], ops, *writes);
            println!(
                "round {round} {name:>10}: {:>5.2} M calls/s, load p99 {p99:.2} µs",
                rate / 1e6
            );
            results[i].0.push(rate);
            results[i].1.push(p99);
        }
        for (i, (name, map)) in floors.iter().enumerate() {
            let span = if i == 0 { 1_000 } else { 1_000_000 };
            let (rate, p99) = run_floor(map, &ids[..span], ops);
            println!(
                "round {round} {name:>10}: {:>5.2} M calls/s, load p99 {p99:.2} µs",
                rate / 1e6
            );
            results[scenarios.len() + i].0.push(rate);
            results[scenarios.len() + i].1.push(p99);
        }
    }
    println!("\nmedian of {rounds} rounds, {ops} calls each:");
    let medians: Vec<(f64, f64)> = results
        .into_iter()
        .map(|(r, p)| (median(r), median(p)))
        .collect();
    let names = scenarios
        .iter()
        .map(|s| s.0)
        .chain(floors.iter().map(|f| f.0));
    for (i, name) in names.enumerate() {
        let (rate, p99) = medians[i];
        let base = medians[i / 3 * 3].0;
        println!(
            "{name:>10}: {:>5.2} M calls/s ({:>5.1}% of its 1k), load p99 {p99:.2} µs",
            rate / 1e6,
            100.0 * rate / base
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let n = args[i + 1].parse().unwrap();
        let cap = args[i + 4].parse().ok();
        serve(n, &args[i + 2], args[i + 3] == "floor", cap);
        return;
    }
    let part = std::env::var("PART").unwrap_or_default();
    if part != "micro" {
        http();
    }
    if part != "http" {
        println!();
        micro();
    }
}
