//! `compare --live`: throughput with N live sessions in Redis, for each N of `BENCH_LIVE`
//! (default `1000,1000000`), with Redis's memory and the time to iterate them all.
//!
//! Each N has its own private `redis-server`, filled once through `SessionStore::commit` (N
//! sessions of one value, 256 commits in flight), then measured for `used_memory` and for one
//! drain of `RedisStore::ids()` (its time, the ids counted, the bench's peak RSS growth). Each
//! variant of `BENCH_LIVE_VARIANTS` (default `scs`; also `scs-cache`, `floor`) is served once per
//! Redis, and the rounds alternate between the populations (1k, 1M; 1M, 1k; …), so that the
//! machine's drift hits both alike. The users draw, at every request, a session uniformly among
//! the N (each user among its own N / users, so that every read is checked exactly).

use std::{
    pin::pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use futures_util::{StreamExt, TryStreamExt, stream};
use tower_scs::{
    RedisStore,
    fred::{interfaces::KeysInterface, types::Expiration},
    store::{Change, SessionStore},
};

use crate::{
    Result, Settings, live_report,
    live_users::{Live, Tokens, VALUE},
    measure::{Ctx, Run},
    procs::Proc,
    redis::Redis,
    servers::{self, FLOOR_COOKIE, Variant},
};

/// The session layer's default cookie, which the tower-scs variants use.
const SCS_COOKIE: &str = "session";

/// Commits (and floor `SET`s) in flight while a population is created.
const IN_FLIGHT: usize = 256;

/// One population: its Redis, and what creating and iterating it cost.
pub struct Population {
    pub n: usize,
    pub redis: Redis,
    pub created: Duration,
    /// `used_memory` of the empty server, and with the N sessions.
    pub used_empty: u64,
    pub used_full: u64,
    pub iterated: Iteration,
}

/// One drain of `RedisStore::ids()`.
pub struct Iteration {
    pub ids: usize,
    pub took: Duration,
    /// Growth of the bench's peak resident memory over the drain, in KiB.
    pub rss_growth_kib: u64,
    /// Whether the peak could be reset to the current RSS first (`/proc/self/clear_refs`);
    /// if not, the growth is over the process's earlier peak, and may read 0.
    pub peak_reset: bool,
}

/// One server of one variant on one population.
pub struct Target {
    pub variant: Variant,
    /// Which population (index into the populations).
    pub pop: usize,
    proc: Proc,
    port: u16,
    live: Arc<Live>,
}

/// What `--live` reads from the environment, besides the main bench's settings.
pub struct LiveSettings {
    pub counts: Vec<usize>,
    pub variants: Vec<Variant>,
}

impl LiveSettings {
    fn from_env(users: usize) -> Result<LiveSettings> {
        let list = std::env::var("BENCH_LIVE").unwrap_or_else(|_| "1000,1000000".into());
        let counts = list
            .split(',')
            .map(|c| c.trim().replace('_', "").parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("BENCH_LIVE={list:?} is not a list of counts"))?;
        if counts.is_empty() || counts.iter().any(|&n| n < users) {
            return Err(
                format!("BENCH_LIVE: every count must be at least BENCH_USERS ({users})").into(),
            );
        }
        let names = std::env::var("BENCH_LIVE_VARIANTS").unwrap_or_else(|_| "scs".into());
        let variants = servers::parse(&names)?;
        if let Some(v) = variants
            .iter()
            .find(|v| !matches!(v, Variant::Scs | Variant::ScsCache | Variant::Floor))
        {
            return Err(format!(
                "BENCH_LIVE_VARIANTS: {} is not supported (scs, scs-cache, floor)",
                v.arg()
            )
            .into());
        }
        Ok(LiveSettings { counts, variants })
    }
}

pub fn live() -> Result<()> {
    let s = Settings::from_env()?;
    let ls = LiveSettings::from_env(s.users)?;
    let load_before = crate::report::loadavg();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let max = ls.counts.iter().copied().max().unwrap_or(0);
    let tokens = Arc::new(Tokens::generate(max));
    let floor = ls.variants.contains(&Variant::Floor);
    let mut pops = Vec::new();
    for &n in &ls.counts {
        pops.push(rt.block_on(populate(&s, &tokens, n, floor))?);
    }
    // Per population, one record of the last writes for the tower-scs variants (which serve
    // the same sessions of the same Redis) and one for the floor (its own keys).
    let lives: Vec<[Arc<Live>; 2]> = pops
        .iter()
        .map(|p| [SCS_COOKIE, FLOOR_COOKIE].map(|c| Arc::new(Live::new(tokens.clone(), p.n, c))))
        .collect();
    let mut targets = Vec::new();
    for &variant in &ls.variants {
        for (pop, p) in pops.iter().enumerate() {
            let (proc, port) = servers::spawn(variant, &p.redis.url(), s.race_delay_ms)?;
            let live = lives[pop][usize::from(variant == Variant::Floor)].clone();
            eprintln!(
                "{} with {} sessions on 127.0.0.1:{port} (pid {})",
                variant.label(),
                p.n,
                proc.pid()
            );
            targets.push(Target {
                variant,
                pop,
                proc,
                port,
                live,
            });
        }
    }
    let ctxs: Vec<Ctx> = pops.iter().map(|p| Ctx::new(&p.redis)).collect();
    let runs = rt.block_on(rounds(&s, &ctxs, &targets))?;
    let version = pops[0].redis.version().to_owned();
    live_report::report(&s, &pops, &targets, &runs, &version, &load_before);
    drop(ctxs);
    drop(targets);
    drop(rt);
    drop(pops);
    Ok(())
}

/// A private Redis with `n` sessions (and, for the floor, `n` floor keys of the same tokens).
async fn populate(s: &Settings, tokens: &Tokens, n: usize, floor: bool) -> Result<Population> {
    let redis = Redis::start(&s.redis_server).await?;
    redis.flushall().await?;
    // The baseline with the store's connections open, so that only the sessions count.
    let store = RedisStore::from_url(&redis.url()).await?;
    let used_empty = redis.used_memory().await?;
    let t0 = Instant::now();
    create(&store, tokens, n).await?;
    let created = t0.elapsed();
    let used_full = redis.used_memory().await?;
    eprintln!(
        "{n} sessions created in {:.1} s on 127.0.0.1:{} (pid {}); used_memory {used_full}",
        created.as_secs_f64(),
        redis.port(),
        redis.pid()
    );
    let iterated = iterate(&store).await?;
    if iterated.ids != n {
        return Err(format!("ids() yielded {} ids for {n} sessions", iterated.ids).into());
    }
    eprintln!(
        "ids() drained {n} ids in {:.2} s",
        iterated.took.as_secs_f64()
    );
    if floor {
        floor_create(&store, tokens, n).await?;
    }
    Ok(Population {
        n,
        redis,
        created,
        used_empty,
        used_full,
        iterated,
    })
}

/// Sessions 0..n, each of one value, by `SessionStore::commit` (`Mode::Create`), the way the
/// layer creates one on a first write; 24 h deadline, no idle timeout.
async fn create(store: &RedisStore, tokens: &Tokens, n: usize) -> Result<()> {
    let now = SystemTime::now();
    let json = serde_json::to_string(VALUE)?;
    let change = Change::create(now, now + Duration::from_secs(24 * 3600)).with_set("v", json);
    stream::iter(0..n)
        .map(|i| store.commit(tokens.get(i), &change))
        .buffer_unordered(IN_FLIGHT)
        .map(|r| match r {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("a create was refused".into()),
            Err(e) => Err(crate::BoxError::from(e)),
        })
        .try_for_each(|()| async { Ok(()) })
        .await
}

/// The floor's keys for the same tokens: `SET floor:<token> VALUE EX 86400`, as its `/put` does.
async fn floor_create(store: &RedisStore, tokens: &Tokens, n: usize) -> Result<()> {
    let pool = store.client();
    stream::iter(0..n)
        .map(|i| {
            let key = format!("floor:{}", tokens.get(i));
            pool.set::<(), _, _>(key, VALUE, Some(Expiration::EX(86_400)), None, false)
        })
        .buffer_unordered(IN_FLIGHT)
        .try_for_each(|()| async { Ok(()) })
        .await?;
    Ok(())
}

/// Drains `store.ids()`, counting the ids, timed, with the peak RSS before and after.
async fn iterate(store: &RedisStore) -> Result<Iteration> {
    // Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS.
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib(if peak_reset { "VmRSS" } else { "VmHWM" })?;
    let t0 = Instant::now();
    let mut ids = pin!(store.ids());
    let mut count = 0;
    while let Some(id) = ids.try_next().await? {
        std::hint::black_box(id);
        count += 1;
    }
    let took = t0.elapsed();
    let rss_growth_kib = status_kib("VmHWM")?.saturating_sub(before);
    Ok(Iteration {
        ids: count,
        took,
        rss_growth_kib,
        peak_reset,
    })
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// One unmeasured pass over every target, then `BENCH_ROUNDS` rounds of them all, the order
/// rotating every round; every run of target `i` in `runs[i]`.
async fn rounds(s: &Settings, ctxs: &[Ctx<'_>], targets: &[Target]) -> Result<Vec<Vec<Run>>> {
    let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
    for t in targets {
        let short = (s.warmup_secs, s.warmup_secs.max(0.1));
        run(s, &ctxs[t.pop], t, short).await?;
    }
    for round in 1..=s.rounds {
        for k in 0..targets.len() {
            let i = (k + round - 1) % targets.len();
            let t = &targets[i];
            let r = run(s, &ctxs[t.pop], t, (s.warmup_secs, s.secs)).await?;
            eprintln!(
                "round {round} {:<45} {:>8} sessions {}",
                t.variant.label(),
                t.live.sessions(),
                r.summary()
            );
            runs[i].push(r);
        }
    }
    Ok(runs)
}

async fn run(s: &Settings, ctx: &Ctx<'_>, t: &Target, timing: (f64, f64)) -> Result<Run> {
    let live = t.live.clone();
    let users = |addr, phase: &_| live.spawn(s.users, addr, s.write_pct, phase);
    ctx.load_run_with(timing, t.port, t.proc.pid(), users).await
}
