//! `MemoryStore` reads with 1k vs 1M live sessions (issue 9: reads must not slow down with the
//! number of sessions held; the old store swept every record every 1,024 commits).
//!
//! `cargo bench --bench memory_store` builds a store of 1,000 sessions and one of 1,000,000,
//! then, for several rounds, times single `load`s on one thread:
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

use std::{
    collections::HashMap,
    hint::black_box,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use futures_util::FutureExt;
use tower_scs::{Change, MemoryStore, Mode, Record, SessionStore};

fn id(n: usize) -> String {
    format!("{n:043}")
}

fn change(mode: Mode, value: &str) -> Change {
    let now = SystemTime::now();
    Change {
        mode,
        cleared: false,
        removed: Vec::new(),
        set: vec![("message".into(), value.into())],
        deadline: (mode == Mode::Create).then(|| now + Duration::from_secs(3600)),
        remember: None,
        owner: None,
        max_bytes: None,
        now,
        idle_ttl: Some(Duration::from_secs(1800)),
    }
}

fn populate(n: usize) -> MemoryStore {
    let store = MemoryStore::new();
    let create = change(Mode::Create, "\"Hello from a session!\"");
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
    let update = change(Mode::Update, "\"updated\"");
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

fn main() {
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
