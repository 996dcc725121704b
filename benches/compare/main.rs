//! Comparison benchmark: tower-scs against tower-sessions and against a one-command floor.
//!
//! ```sh
//! cargo bench --bench compare
//! ```
//!
//! The bench starts its own `redis-server` on a free loopback port (never the one on 6379), then
//! serves the same put/get routes three ways, each server in its own child process (this binary
//! re-executed with `--serve scs|ts|floor`), so that its CPU time can be read from
//! `/proc/<pid>/stat`:
//!
//! - **A** tower-scs: `SessionLayer::new(RedisStore::from_url(url))`;
//! - **B** tower-sessions 0.14 + tower-sessions-redis-store 0.16 on the fred pool
//!   `RedisStore::from_url` builds (the very same configuration as A's);
//! - **C** the floor: exactly one raw fred command per request (`SET`/`GET` of a key named by a
//!   plain cookie), no session logic, on the same kind of pool.
//!
//! One closed-loop client (tokio tasks in this process, one keep-alive HTTP/1.1 connection and
//! one cookie jar per user) drives each in turn, the order rotating every round: A, B, C, then
//! B, C, A, then C, A, B, … Each user writes (`/put?v=X`) 10% of the time and reads (`/get`)
//! otherwise, and every read is checked against that user's last write. Then a race scenario
//! counts lost updates: per session, 8 concurrent requests each read the session, wait a few ms
//! (handler work), and write a different key.
//!
//! Environment (all optional): `BENCH_SECS` (measured seconds per run, 5), `BENCH_WARMUP_SECS`
//! (1), `BENCH_ROUNDS` (7), `BENCH_USERS` (64), `BENCH_WRITE_PCT` (10), `BENCH_RACE_SESSIONS`
//! (50), `BENCH_RACE_REQUESTS` (8), `BENCH_RACE_DELAY_MS` (5), `BENCH_MAX_OTHER` (0.2: a round
//! in which other processes used more cores than this during a run is left out of the medians,
//! as long as 3 quiet rounds remain), `BENCH_MIN_QUIET` (0: with N > 0, rounds continue past
//! `BENCH_ROUNDS` until N rounds were quiet, up to 3 × `BENCH_ROUNDS`), `REDIS_SERVER` (the
//! redis-server binary, `redis-server`), `BENCH_VARIANTS` (the servers, in order, default
//! `scs,ts,floor`; `scs-signed` is A with signed tokens, `scs-header` is A with the token in
//! an `x-session-token` header instead of the cookie, and `scs-cache` is A with its coherent
//! local cache (`RedisStore::with_local_cache`; the server reports READY only once
//! `local_cache_ready` says tracking is on), and `ceiling` is the floor's routes on a map in the
//! server's memory (no Redis, no sessions: the most requests any server of these routes serves
//! on this machine, so it bounds what a local cache can gain over the floor), so that
//! `BENCH_VARIANTS=scs,scs-signed,scs-header,scs-cache` compares tower-scs's options with each
//! other). `BENCH_WRITE_PCT` sets the mix: `BENCH_WRITE_PCT=50
//! BENCH_VARIANTS=scs,scs-cache` is the write-heavy mix on which the cache must cost little.
//! With `scs-cache` the report also gives the share of reads the cache served: 1 − its
//! `HGETALL`s per read (a read it does not serve is one `HGETALL`).
//!
//! `--live` ([`live`]) measures throughput with many live sessions: for each count of
//! `BENCH_LIVE` (default `1000,1000000`) a private Redis filled with that many sessions through
//! `SessionStore::commit`, reported with its `used_memory` and the time (and the bench's peak
//! RSS growth) to drain `RedisStore::ids()` over them; then the variants of
//! `BENCH_LIVE_VARIANTS` (default `scs`; `scs-cache` and `floor` too), each served once per
//! Redis, in rounds alternating between the populations, every request on a session drawn
//! uniformly among the N. `BENCH_SECS`, `BENCH_WARMUP_SECS`, `BENCH_ROUNDS`, `BENCH_USERS`,
//! `BENCH_WRITE_PCT` and `BENCH_MAX_OTHER` apply as above.
//!
//! For instruction counts (DEVELOPERS.md, "Profiling the request path"), `--serve` runs one
//! server alone and `--drive <port> --requests <n>` sends it exactly `n` requests of the same
//! mix (`BENCH_USERS` users, `BENCH_WRITE_PCT`), every read checked.

//! The parts: [`servers`] (the three servers and `--serve`), [`procs`] (the child processes and
//! `--guard`), [`redis`] (the private `redis-server` and its counters), [`client`] (the
//! closed-loop users and the race), [`measure`] (one measured run: CPU ticks, percentiles,
//! medians) and [`report`] (the markdown report); [`live`], [`live_users`] and [`live_report`]
//! are `--live`'s. This file reads the settings and runs the rounds.

mod client;
mod live;
mod live_report;
mod live_users;
mod measure;
mod memory;
mod procs;
mod redis;
mod report;
mod servers;

use std::{env, error::Error as StdError};

use measure::{Ctx, Run};
use procs::Proc;
use servers::Variant;

type BoxError = Box<dyn StdError + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

fn main() {
    let args: Vec<String> = env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--guard") {
        if let Err(e) = procs::guard(&args[i + 1..]) {
            eprintln!("compare --guard: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.iter().any(|a| a == "--hmac") {
        hmac_cost();
        return;
    }
    if args.iter().any(|a| a == "--memory") {
        if let Err(e) = memory() {
            eprintln!("compare --memory: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.iter().any(|a| a == "--live") {
        let code = match live::live() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("compare --live: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    if let Some(port) = flag(&args, "--drive") {
        if let Err(e) = drive(&port, &args) {
            eprintln!("compare --drive {port}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let code = match flag(&args, "--serve") {
        Some(variant) => match servers::serve(&variant, &args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("compare --serve {variant}: {e}");
                1
            }
        },
        None => match bench() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("compare: {e}");
                1
            }
        },
    };
    // Every guard (Redis, servers) has been dropped by now: exit does not run destructors.
    std::process::exit(code);
}

/// The value after `name` among the arguments; anything else (`--bench`, …) is ignored.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The environment variables of the module docs, read once.
struct Settings {
    secs: f64,
    warmup_secs: f64,
    rounds: usize,
    users: usize,
    write_pct: u64,
    race_sessions: usize,
    race_requests: usize,
    race_delay_ms: u64,
    max_other: f64,
    min_quiet: usize,
    redis_server: String,
    /// `BENCH_VARIANTS`: which servers run, in this order.
    variants: Vec<Variant>,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid number").into()),
    }
}

impl Settings {
    fn from_env() -> Result<Self> {
        let s = Settings {
            secs: env_num("BENCH_SECS", 5.0)?,
            warmup_secs: env_num("BENCH_WARMUP_SECS", 1.0)?,
            rounds: env_num("BENCH_ROUNDS", 7)?,
            users: env_num("BENCH_USERS", 64)?,
            write_pct: env_num("BENCH_WRITE_PCT", 10)?,
            race_sessions: env_num("BENCH_RACE_SESSIONS", 50)?,
            race_requests: env_num("BENCH_RACE_REQUESTS", 8)?,
            race_delay_ms: env_num("BENCH_RACE_DELAY_MS", 5)?,
            max_other: env_num("BENCH_MAX_OTHER", 0.2)?,
            min_quiet: env_num("BENCH_MIN_QUIET", 0)?,
            redis_server: env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
            variants: servers::parse(
                &env::var("BENCH_VARIANTS").unwrap_or_else(|_| servers::DEFAULT_VARIANTS.into()),
            )?,
        };
        if s.secs <= 0.0 || s.warmup_secs < 0.0 || s.rounds == 0 || s.users == 0 {
            return Err("BENCH_SECS, BENCH_ROUNDS and BENCH_USERS must be positive".into());
        }
        if s.write_pct > 100 {
            return Err("BENCH_WRITE_PCT must be at most 100".into());
        }
        Ok(s)
    }
}

/// `--drive <port> --requests <n>`: `n` requests of the mix against the server on `port`.
fn drive(port: &str, args: &[String]) -> Result<()> {
    let s = Settings::from_env()?;
    let requests: u64 = flag(args, "--requests")
        .ok_or("--requests is missing")?
        .parse()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port.parse()?));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(client::drive(addr, requests, s.users, s.write_pct))?;
    eprintln!("{requests} requests sent to {addr}, every read checked");
    Ok(())
}

/// `--memory`: Redis memory per session, on a private Redis (see `memory.rs`).
fn memory() -> Result<()> {
    let s = Settings::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let redis = redis::Redis::start(&s.redis_server).await?;
        memory::memory_per_session(&redis).await
    })
}

/// `--hmac`: whether this CPU's SHA extensions are in use (they are not under valgrind, whose
/// CPU lacks them, so callgrind counts SHA-256 in software), and the time of one HMAC-SHA256 of
/// a token with a keyed state cloned, as signing and verifying do.
fn hmac_cost() {
    use hmac::{Hmac, Mac};
    let sha = std::arch::is_x86_feature_detected!("sha");
    let keyed = Hmac::<sha2::Sha256>::new_from_slice(&[7; 32]).expect("any key length");
    let token = [b'A'; 43];
    let n = 200_000;
    let start = std::time::Instant::now();
    let mut acc = 0u8;
    for i in 0..n {
        let mut mac = keyed.clone();
        mac.update(&token);
        mac.update(&[i as u8]);
        acc ^= mac.finalize().into_bytes()[0];
    }
    let each = start.elapsed() / n;
    println!("SHA extensions in use: {sha}; one HMAC-SHA256 of a token: {each:?} ({acc})");
}

/// One server process of the bench: which variant, the process, its port.
type Server = (Variant, Proc, u16);

/// The whole bench: a private Redis, the three servers, the rounds and the races, the report.
fn bench() -> Result<()> {
    let s = Settings::from_env()?;
    let load_before = report::loadavg();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let redis = rt.block_on(redis::Redis::start(&s.redis_server))?;
    eprintln!(
        "redis-server on 127.0.0.1:{} (pid {})",
        redis.port(),
        redis.pid()
    );

    let mut servers = Vec::new();
    for &v in &s.variants {
        let (proc, port) = servers::spawn(v, &redis.url(), s.race_delay_ms)?;
        eprintln!("{} on 127.0.0.1:{port} (pid {})", v.label(), proc.pid());
        servers.push((v, proc, port));
    }
    let ctx = Ctx::new(&redis);
    let (runs, races) = rt.block_on(async {
        let runs = rounds(&ctx, &s, &servers).await?;
        let races = races(&s, &servers).await?;
        Ok::<_, BoxError>((runs, races))
    })?;
    let redis_version = redis.version().to_owned();
    drop(rt);
    drop(servers);
    drop(redis);

    report::report(&s, &runs, &races, &redis_version, &load_before);
    Ok(())
}

/// A first pass over every server, unmeasured, then the measured rounds; every run of server `i`
/// in `runs[i]`.
async fn rounds(ctx: &Ctx<'_>, s: &Settings, servers: &[Server]) -> Result<Vec<Vec<Run>>> {
    let mut runs: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
    // The unmeasured pass: connection pools, allocators and Redis settle before round 1.
    for (_, proc, port) in servers {
        let short = (s.warmup_secs, s.warmup_secs.max(0.1));
        ctx.load_run(s, short, *port, proc.pid()).await?;
    }
    // BENCH_ROUNDS rounds; then, if BENCH_MIN_QUIET asks for more quiet rounds than that gave,
    // more rounds until it is met or 3 × BENCH_ROUNDS rounds have run.
    let mut quiet_rounds = 0;
    let mut round = 0;
    while round < s.rounds || (quiet_rounds < s.min_quiet && round < 3 * s.rounds) {
        round += 1;
        let mut quiet = true;
        // The order rotates every round (A, B, C; B, C, A; C, A, B; …), so that no variant
        // always runs first or last when the machine's speed drifts within a round.
        for k in 0..servers.len() {
            let i = (k + round - 1) % servers.len();
            let (v, proc, port) = &servers[i];
            let timing = (s.warmup_secs, s.secs);
            let run = ctx.load_run(s, timing, *port, proc.pid()).await?;
            eprintln!("round {round} {:<45} {}", v.label(), run.summary());
            quiet &= run.other_cores <= s.max_other;
            runs[i].push(run);
        }
        quiet_rounds += usize::from(quiet);
    }
    Ok(runs)
}

/// The race on every variant that has sessions: lost updates per server, `None` for the floor.
async fn races(s: &Settings, servers: &[Server]) -> Result<Vec<Option<usize>>> {
    let mut races = Vec::new();
    for (v, _, port) in servers {
        races.push(if v.has_race() {
            let lost = client::race(s, *port).await?;
            eprintln!("race {:<45} lost {lost}", v.label());
            Some(lost)
        } else {
            None
        });
    }
    Ok(races)
}
