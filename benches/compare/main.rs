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
//! redis-server binary, `redis-server`).

use std::{
    collections::BTreeMap,
    env,
    error::Error as StdError,
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
    serve::ListenerExt,
};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes};
use hyper_util::{
    client::legacy::Client as PooledClient,
    rt::{TokioExecutor, TokioIo},
};
use serde::Deserialize;
use tower_scs::fred::{clients::Pool, interfaces::KeysInterface, types::Expiration};

type BoxError = Box<dyn StdError + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

fn main() {
    let args: Vec<String> = env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--guard") {
        if let Err(e) = guard(&args[i + 1..]) {
            eprintln!("compare --guard: {e}");
            std::process::exit(1);
        }
        return;
    }
    let code = match flag(&args, "--serve") {
        Some(variant) => match serve(&variant, &args) {
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

// ---------------------------------------------------------------------------------------------
// The servers (child processes)
// ---------------------------------------------------------------------------------------------

/// The handler work between the read and the write of `/race`, the same on every variant.
static RACE_DELAY: OnceLock<Duration> = OnceLock::new();

fn race_delay() -> Duration {
    RACE_DELAY
        .get()
        .copied()
        .unwrap_or(Duration::from_millis(5))
}

#[derive(Deserialize)]
struct Put {
    v: String,
}

#[derive(Deserialize)]
struct Race {
    k: String,
}

#[derive(Deserialize)]
struct Count {
    n: usize,
}

/// The race keys a session should hold after `/race?k=r0` … `/race?k=r{n-1}`.
fn race_key(i: usize) -> String {
    format!("r{i}")
}

fn serve(variant: &str, args: &[String]) -> Result<()> {
    let url = flag(args, "--redis-url").ok_or("--redis-url is missing")?;
    let port: u16 = flag(args, "--port").unwrap_or_else(|| "0".into()).parse()?;
    if let Some(ms) = flag(args, "--race-delay-ms") {
        let _ = RACE_DELAY.set(Duration::from_millis(ms.parse()?));
    }
    // Exit when the parent goes away (it holds our stdin; EOF = parent gone or done).
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let app = match variant {
            "scs" => scs_app(&url).await?,
            "ts" => ts_app(&url).await?,
            "floor" => floor_app(&url).await?,
            other => return Err(format!("unknown variant {other:?} (scs, ts or floor)").into()),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        println!("READY {port}");
        std::io::stdout().flush()?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// The fred pool `tower_scs::RedisStore::from_url` builds (4 connections, its timeouts,
/// reconnect policy, retries and unresponsive-connection check), taken from a store built by it
/// so that B and C can never drift from A's client configuration.
async fn pool(url: &str) -> Result<Pool> {
    Ok(tower_scs::RedisStore::from_url(url).await?.client().clone())
}

// A: tower-scs.

async fn scs_app(url: &str) -> Result<Router> {
    use tower_scs::{Error, RedisStore, Session, SessionLayer};

    async fn put(session: Session, Query(q): Query<Put>) {
        session.insert("v", q.v);
    }
    async fn read(session: Session) -> Result<String, Error> {
        Ok(session.get::<String>("v").await?.unwrap_or_default())
    }
    async fn race(session: Session, Query(q): Query<Race>) -> Result<(), Error> {
        let _ = session.get::<String>("v").await?;
        tokio::time::sleep(race_delay()).await;
        session.insert(q.k, 1);
        Ok(())
    }
    async fn count(session: Session, Query(q): Query<Count>) -> Result<String, Error> {
        let mut found = 0;
        for i in 0..q.n {
            found += usize::from(session.contains(&race_key(i)).await?);
        }
        Ok(found.to_string())
    }

    let store = RedisStore::from_url(url).await?;
    Ok(Router::new()
        .route("/put", get(put))
        .route("/get", get(read))
        .route("/race", get(race))
        .route("/count", get(count))
        .layer(SessionLayer::new(store).secure(false)))
}

// B: tower-sessions.

async fn ts_app(url: &str) -> Result<Router> {
    use tower_sessions::{SessionManagerLayer, session::Session};
    use tower_sessions_redis_store::RedisStore;

    fn fail(e: impl std::fmt::Display) -> (StatusCode, String) {
        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    async fn put(session: Session, Query(q): Query<Put>) -> Result<(), (StatusCode, String)> {
        session.insert("v", q.v).await.map_err(fail)
    }
    async fn read(session: Session) -> Result<String, (StatusCode, String)> {
        Ok(session
            .get::<String>("v")
            .await
            .map_err(fail)?
            .unwrap_or_default())
    }
    async fn race(session: Session, Query(q): Query<Race>) -> Result<(), (StatusCode, String)> {
        let _ = session.get::<String>("v").await.map_err(fail)?;
        tokio::time::sleep(race_delay()).await;
        session.insert(&q.k, 1).await.map_err(fail)
    }
    async fn count(
        session: Session,
        Query(q): Query<Count>,
    ) -> Result<String, (StatusCode, String)> {
        let mut found = 0;
        for i in 0..q.n {
            let value = session
                .get::<serde_json::Value>(&race_key(i))
                .await
                .map_err(fail)?;
            found += usize::from(value.is_some());
        }
        Ok(found.to_string())
    }

    let store = RedisStore::new(pool(url).await?);
    Ok(Router::new()
        .route("/put", get(put))
        .route("/get", get(read))
        .route("/race", get(race))
        .route("/count", get(count))
        .layer(SessionManagerLayer::new(store).with_secure(false)))
}

// C: the floor.

/// The floor's plain cookie.
const FLOOR_COOKIE: &str = "sid";

fn floor_sid(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == FLOOR_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

async fn floor_app(url: &str) -> Result<Router> {
    static NEXT: AtomicU64 = AtomicU64::new(0);

    async fn put(State(pool): State<Pool>, headers: HeaderMap, Query(q): Query<Put>) -> Response {
        let (sid, new) = match floor_sid(&headers) {
            Some(sid) => (sid, false),
            None => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                (format!("{nanos:x}{:x}{n:x}", std::process::id()), true)
            }
        };
        let key = format!("floor:{sid}");
        // One command: the same expiry-carrying SET a session store would send.
        let set: Result<(), _> = pool
            .set(key, q.v, Some(Expiration::EX(86_400)), None, false)
            .await;
        match set {
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            Ok(()) if new => (
                [(
                    header::SET_COOKIE,
                    format!("{FLOOR_COOKIE}={sid}; Path=/; HttpOnly"),
                )],
                (),
            )
                .into_response(),
            Ok(()) => ().into_response(),
        }
    }
    async fn read(State(pool): State<Pool>, headers: HeaderMap) -> Response {
        let Some(sid) = floor_sid(&headers) else {
            return ().into_response();
        };
        match pool.get::<Option<String>, _>(format!("floor:{sid}")).await {
            Ok(v) => v.unwrap_or_default().into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }

    Ok(Router::new()
        .route("/put", get(put))
        .route("/get", get(read))
        .with_state(pool(url).await?))
}

// ---------------------------------------------------------------------------------------------
// The bench (parent process)
// ---------------------------------------------------------------------------------------------

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Scs,
    Ts,
    Floor,
}

const VARIANTS: [Variant; 3] = [Variant::Scs, Variant::Ts, Variant::Floor];

impl Variant {
    fn arg(self) -> &'static str {
        match self {
            Variant::Scs => "scs",
            Variant::Ts => "ts",
            Variant::Floor => "floor",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Variant::Scs => "A: tower-scs",
            Variant::Ts => "B: tower-sessions 0.14 + redis-store 0.16",
            Variant::Floor => "C: floor (1 raw fred command, no sessions)",
        }
    }
    fn has_race(self) -> bool {
        self != Variant::Floor
    }
}

/// A child process of the bench: a server, or the guard of the Redis server. Dropping it closes
/// its stdin, which makes it exit (a server) or stop Redis and exit (the guard); a child still
/// running 3 s later is killed.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = self.child.kill() {
            eprintln!("could not kill {}: {e}", self.name);
        }
        let _ = self.child.wait();
    }
}

/// `--guard <redis-server command…>`: runs Redis as a child, prints `PID <pid>`, and stops it
/// when stdin closes, so that Redis never outlives the bench, however the bench ends (its stdin
/// is a pipe from the bench). If Redis exits by itself, its output is printed to stderr.
fn guard(command: &[String]) -> Result<()> {
    let (bin, args) = command.split_first().ok_or("--guard needs a command")?;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let output = Arc::new(std::sync::Mutex::new(String::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                if out.len() < 64 * 1024 {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        });
    }
    println!("PID {}", child.id());
    std::io::stdout().flush()?;
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let closed = closed.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            closed.store(true, Ordering::Release);
        });
    }
    loop {
        if closed.load(Ordering::Acquire) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            std::thread::sleep(Duration::from_millis(50)); // let the readers finish
            let out = output.lock().unwrap_or_else(|e| e.into_inner());
            return Err(format!("{bin} exited ({status}):\n{}", out.trim_end()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a private `redis-server` on a free loopback port, under a guard process (this binary
/// with `--guard`); returns the guard, the port and Redis's pid.
fn start_redis(bin: &str) -> Result<(Proc, u16, u32)> {
    match Command::new(bin).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(format!("`{bin} --version` failed: {}", out.status).into()),
        Err(e) => {
            return Err(format!(
                "cannot run `{bin}` ({e}). The bench starts its own Redis: install it \
                 (e.g. `apt-get install redis-server`) or set REDIS_SERVER to its path."
            )
            .into());
        }
    }
    let exe = env::current_exe()?;
    for attempt in 1..=5 {
        let port = free_port()?;
        let mut child = Command::new(&exe)
            .args(["--guard", bin, "--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut proc = Proc {
            child,
            name: format!("redis-server guard :{port}"),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let pid: u32 = line
            .trim()
            .strip_prefix("PID ")
            .and_then(|p| p.parse().ok())
            .ok_or("could not start redis-server")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if proc.child.try_wait()?.is_some() {
                // The guard printed Redis's output. A port taken meanwhile: try another.
                if attempt < 5 {
                    break;
                }
                return Err("redis-server did not start (its output is above)".into());
            }
            if redis_command(port, &["PING"]).is_ok_and(|r| r == "PONG") {
                return Ok((proc, port, pid));
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err("redis-server did not start".into())
}

/// Sends one command to Redis over a fresh connection and returns a simple or bulk string reply.
fn redis_command(port: u16, args: &[&str]) -> Result<String> {
    let mut stream = StdStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        let _ = write!(cmd, "${}\r\n{a}\r\n", a.len());
    }
    stream.write_all(cmd.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end();
    match line.as_bytes().first() {
        Some(b'+') => Ok(line[1..].to_owned()),
        Some(b'$') => {
            let len: usize = line[1..].parse()?;
            let mut buf = vec![0; len + 2];
            reader.read_exact(&mut buf)?;
            buf.truncate(len);
            Ok(String::from_utf8(buf)?)
        }
        _ => Err(format!("unexpected Redis reply {line:?}").into()),
    }
}

/// Redis counters at one instant: `total_commands_processed`, and per command its calls and the
/// microseconds Redis spent in them.
#[derive(Default)]
struct RedisCounters {
    total: u64,
    calls: BTreeMap<String, (u64, u64)>,
}

fn redis_counters(port: u16) -> Result<RedisCounters> {
    let info = redis_command(port, &["INFO", "stats", "commandstats"])?;
    let mut c = RedisCounters::default();
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("total_commands_processed:") {
            c.total = v.trim().parse()?;
        } else if let Some(rest) = line.strip_prefix("cmdstat_") {
            if let Some((name, stats)) = rest.split_once(':') {
                let field = |key: &str| -> Result<u64> {
                    let v = stats
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(key))
                        .ok_or_else(|| format!("cmdstat line without {key}"))?;
                    Ok(v.parse()?)
                };
                c.calls
                    .insert(name.to_owned(), (field("calls=")?, field("usec=")?));
            }
        }
    }
    Ok(c)
}

/// Every command a server of this bench may send Redis itself: tower-scs's `RedisStore` sends
/// `HGETALL`, `EVALSHA` (`EVAL` after a script-cache flush), and `DEL`/`SCAN`/`ZRANGE` on routes
/// this bench does not use; tower-sessions' store `GET`, `SET`, `DEL`; the floor `GET`, `SET`.
/// Any other command Redis counts was run by a Lua script (tower-scs's commit script runs
/// `HMGET`, `HSTRLEN`, `HSET`, `PEXPIREAT`, …), and is reported as such.
const TOP_LEVEL: [&str; 8] = [
    "get", "set", "hgetall", "evalsha", "eval", "del", "scan", "zrange",
];

fn in_script(command: &str) -> bool {
    !TOP_LEVEL.contains(&command) && !BENCH_OWN.contains(&command)
}

/// Commands the bench itself sends to Redis, not counted against any variant.
const BENCH_OWN: [&str; 2] = ["info", "ping"];

/// CPU time (user + system, all threads) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').ok_or("bad /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 here (0-based 11, 12).
    let utime: u64 = fields.get(11).ok_or("bad /proc stat")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("bad /proc stat")?.parse()?;
    Ok(utime + stime)
}

/// Busy CPU time of the whole machine (all cores, everything but idle and iowait), in ticks.
fn machine_busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok(total - idle)
}

/// CPU ticks of the machine, the server, Redis and this process (the client), at one instant.
struct CpuSnapshot {
    machine: u64,
    server: u64,
    redis: u64,
    client: u64,
}

fn cpu_snapshot(server_pid: u32, redis_pid: u32) -> Result<CpuSnapshot> {
    Ok(CpuSnapshot {
        machine: machine_busy_ticks()?,
        server: cpu_ticks(server_pid)?,
        redis: cpu_ticks(redis_pid)?,
        client: cpu_ticks(std::process::id())?,
    })
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn spawn_server(variant: Variant, redis_url: &str, race_delay_ms: u64) -> Result<(Proc, u16)> {
    let exe = env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "--serve",
            variant.arg(),
            "--redis-url",
            redis_url,
            "--port",
            "0",
        ])
        .args(["--race-delay-ms", &race_delay_ms.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let proc = Proc {
        child,
        name: format!("server {}", variant.arg()),
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("server {} did not start", variant.arg()))?;
    Ok((proc, port))
}

/// A user's cookies, by name.
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn header(&self) -> String {
        let mut s = String::new();
        for (name, value) in &self.0 {
            if !s.is_empty() {
                s.push_str("; ");
            }
            let _ = write!(s, "{name}={value}");
        }
        s
    }

    fn update(&mut self, headers: &hyper::HeaderMap) {
        for h in headers.get_all(header::SET_COOKIE) {
            let Ok(h) = h.to_str() else { continue };
            let mut parts = h.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
                continue;
            };
            let expired = parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if value.is_empty() || expired {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }
}

fn request(path: &str, jar: &Jar) -> Result<Request<Empty<Bytes>>> {
    let mut req = Request::get(path).header(header::HOST, "127.0.0.1");
    if !jar.0.is_empty() {
        req = req.header(header::COOKIE, jar.header());
    }
    Ok(req.body(Empty::new())?)
}

/// One user's keep-alive HTTP/1.1 connection.
struct Conn(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn(sender))
    }

    /// Sends `GET path` with the jar's cookies, updates the jar; returns status and body.
    async fn get(&mut self, path: &str, jar: &mut Jar) -> Result<(StatusCode, Bytes)> {
        self.0.ready().await?;
        let res = self.0.send_request(request(path, jar)?).await?;
        jar.update(res.headers());
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Default)]
struct UserStats {
    latencies_us: Vec<u32>,
    failures: u64,
    first_failure: Option<String>,
}

impl UserStats {
    fn fail(&mut self, what: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(what);
    }
}

async fn user(
    id: usize,
    addr: SocketAddr,
    write_pct: u64,
    phase: Arc<AtomicU8>,
) -> Result<UserStats> {
    let mut conn = Conn::open(addr).await?;
    let mut jar = Jar::default();
    let mut stats = UserStats::default();
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut seq = 0u64;
    // The session exists before the clock starts: the first request writes.
    let mut last: Option<String> = None;
    let mut first = true;
    loop {
        let started_in = phase.load(Ordering::Acquire);
        if started_in == STOP {
            break;
        }
        // xorshift64
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let write = first || rng % 100 < write_pct;
        first = false;
        let start = Instant::now();
        let failure = if write {
            seq += 1;
            let v = format!("u{id}s{seq}");
            match conn.get(&format!("/put?v={v}"), &mut jar).await {
                Ok((StatusCode::OK, _)) => {
                    last = Some(v);
                    None
                }
                Ok((status, body)) => {
                    last = None; // unknown whether it was stored
                    Some(format!("/put answered {status}: {body:?}"))
                }
                Err(e) => return Err(format!("user {id}: /put: {e}").into()),
            }
        } else {
            match conn.get("/get", &mut jar).await {
                Ok((StatusCode::OK, body)) => match &last {
                    Some(v) if body != v.as_bytes() => {
                        Some(format!("/get returned {body:?}, last write was {v:?}"))
                    }
                    _ => None,
                },
                Ok((status, body)) => Some(format!("/get answered {status}: {body:?}")),
                Err(e) => return Err(format!("user {id}: /get: {e}").into()),
            }
        };
        let elapsed = start.elapsed();
        if started_in == MEASURE && phase.load(Ordering::Acquire) == MEASURE {
            stats
                .latencies_us
                .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
            if let Some(f) = failure {
                stats.fail(f);
            }
        }
    }
    Ok(stats)
}

/// What one measured run of one variant gave.
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    server_cpu_us: f64,
    redis_cpu_us: f64,
    client_cpu_us: f64,
    /// CPU used by other processes during the window, in cores (noise indicator).
    other_cores: f64,
    /// `total_commands_processed` per request (script-internal commands included).
    redis_cmds: f64,
    /// Commands the server sent per request (script-internal commands excluded).
    sent_cmds: f64,
    /// Per command Redis executed: calls per request, and Redis's own µs per call.
    mix: BTreeMap<String, (f64, f64)>,
    failures: u64,
    first_failure: Option<String>,
}

struct Ctx {
    redis_port: u16,
    redis_pid: u32,
    ticks_per_sec: f64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// One run: `users` closed-loop users for `warmup` unmeasured, then `secs` measured.
async fn load_run(
    ctx: &Ctx,
    s: &Settings,
    (warmup, secs): (f64, f64),
    port: u16,
    server_pid: u32,
) -> Result<Run> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let users: Vec<_> = (0..s.users)
        .map(|id| tokio::spawn(user(id, addr, s.write_pct, phase.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;

    let cpu0 = cpu_snapshot(server_pid, ctx.redis_pid)?;
    let c0 = redis_counters(ctx.redis_port)?;
    phase.store(MEASURE, Ordering::Release);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    phase.store(STOP, Ordering::Release);
    let window = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_snapshot(server_pid, ctx.redis_pid)?;
    let c1 = redis_counters(ctx.redis_port)?;

    let mut latencies = Vec::new();
    let (mut failures, mut first_failure) = (0, None);
    for u in users {
        let st = u.await??;
        latencies.extend(st.latencies_us);
        failures += st.failures;
        first_failure = first_failure.or(st.first_failure);
    }
    latencies.sort_unstable();
    let n = latencies.len() as f64;
    if latencies.is_empty() {
        return Err("no request completed in the measured window".into());
    }

    let delta = |name: &str| {
        let (calls1, usec1) = c1.calls.get(name).copied().unwrap_or_default();
        let (calls0, usec0) = c0.calls.get(name).copied().unwrap_or_default();
        ((calls1 - calls0) as f64, (usec1 - usec0) as f64)
    };
    let own: f64 = BENCH_OWN.iter().map(|c| delta(c).0).sum();
    let script: f64 = c1
        .calls
        .keys()
        .filter(|c| in_script(c))
        .map(|c| delta(c).0)
        .sum();
    let redis_cmds = (c1.total - c0.total) as f64 - own;
    let mix = c1
        .calls
        .keys()
        .filter(|k| !BENCH_OWN.contains(&k.as_str()))
        .filter_map(|k| {
            let (calls, usec) = delta(k);
            (calls > 0.0).then(|| (k.clone(), (calls / n, usec / calls)))
        })
        .collect();
    let us_per_tick = 1e6 / ctx.ticks_per_sec;
    Ok(Run {
        rps: n / window,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        server_cpu_us: (cpu1.server - cpu0.server) as f64 * us_per_tick / n,
        redis_cpu_us: (cpu1.redis - cpu0.redis) as f64 * us_per_tick / n,
        client_cpu_us: (cpu1.client - cpu0.client) as f64 * us_per_tick / n,
        // Busy CPU of everything else on the machine, in cores, over the window.
        other_cores: {
            let ours = (cpu1.server + cpu1.redis + cpu1.client)
                .saturating_sub(cpu0.server + cpu0.redis + cpu0.client);
            (cpu1.machine - cpu0.machine).saturating_sub(ours) as f64 / ctx.ticks_per_sec / window
        },
        redis_cmds: redis_cmds / n,
        sent_cmds: (redis_cmds - script) / n,
        mix,
        failures,
        first_failure,
    })
}

/// The race: per session, `requests` concurrent `/race?k=rI` (read, wait, write a distinct key),
/// then count the keys that survived. Returns the number of lost updates.
async fn race(s: &Settings, port: u16) -> Result<usize> {
    let client = PooledClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let base = format!("http://127.0.0.1:{port}");
    let mut lost = 0;
    for _ in 0..s.race_sessions {
        let mut jar = Jar::default();
        let res = client
            .request(request(&format!("{base}/put?v=init"), &jar)?)
            .await?;
        jar.update(res.headers());
        if res.status() != StatusCode::OK || jar.0.is_empty() {
            return Err(format!("race: creating a session answered {}", res.status()).into());
        }
        let cookie = Arc::new(jar);
        let barrier = Arc::new(tokio::sync::Barrier::new(s.race_requests));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..s.race_requests {
            let (client, cookie, barrier) = (client.clone(), cookie.clone(), barrier.clone());
            let req = request(&format!("{base}/race?k={}", race_key(i)), &cookie)?;
            tasks.spawn(async move {
                barrier.wait().await;
                let res = client.request(req).await?;
                let status = res.status();
                res.into_body().collect().await?;
                Ok::<_, BoxError>(status)
            });
        }
        while let Some(status) = tasks.join_next().await {
            let status = status??;
            if status != StatusCode::OK {
                return Err(format!("race: /race answered {status}").into());
            }
        }
        let res = client
            .request(request(
                &format!("{base}/count?n={}", s.race_requests),
                &cookie,
            )?)
            .await?;
        let body = res.into_body().collect().await?.to_bytes();
        let found: usize = std::str::from_utf8(&body)?.trim().parse()?;
        lost += s.race_requests.saturating_sub(found);
    }
    Ok(lost)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
        / 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn bench() -> Result<()> {
    let s = Settings::from_env()?;
    let load_before = loadavg();
    let (redis, redis_port, redis_pid) = start_redis(&s.redis_server)?;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let redis_version = Command::new(&s.redis_server)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    eprintln!("redis-server on 127.0.0.1:{redis_port} (pid {redis_pid})");

    let mut servers = Vec::new();
    for v in VARIANTS {
        let (proc, port) = spawn_server(v, &redis_url, s.race_delay_ms)?;
        eprintln!("{} on 127.0.0.1:{port} (pid {})", v.label(), proc.pid());
        servers.push((v, proc, port));
    }
    let ctx = Ctx {
        redis_port,
        redis_pid,
        ticks_per_sec: clock_ticks_per_sec() as f64,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (runs, races) = rt.block_on(async {
        let mut runs: Vec<Vec<Run>> = VARIANTS.iter().map(|_| Vec::new()).collect();
        // A first pass over every server, unmeasured: connection pools, allocators and Redis
        // settle before round 1.
        for (_, proc, port) in &servers {
            let short = (s.warmup_secs, s.warmup_secs.max(0.1));
            load_run(&ctx, &s, short, *port, proc.pid()).await?;
        }
        // BENCH_ROUNDS rounds; then, if BENCH_MIN_QUIET asks for more quiet rounds than that
        // gave, more rounds until it is met or 3 × BENCH_ROUNDS rounds have run.
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
                let run = load_run(&ctx, &s, timing, *port, proc.pid()).await?;
                eprintln!(
                    "round {round} {:<45} {:>6.0} req/s  p50 {:.2} ms  p99 {:.2} ms  \
                     CPU µs/req: server {:.1}, Redis {:.1}, client {:.1}  other load {:.2} \
                     cores  failures {}",
                    v.label(),
                    run.rps,
                    run.p50_ms,
                    run.p99_ms,
                    run.server_cpu_us,
                    run.redis_cpu_us,
                    run.client_cpu_us,
                    run.other_cores,
                    run.failures
                );
                quiet &= run.other_cores <= s.max_other;
                runs[i].push(run);
            }
            quiet_rounds += usize::from(quiet);
        }
        let mut races = Vec::new();
        for (v, _, port) in &servers {
            races.push(if v.has_race() {
                let lost = race(&s, *port).await?;
                eprintln!("race {:<45} lost {lost}", v.label());
                Some(lost)
            } else {
                None
            });
        }
        Ok::<_, BoxError>((runs, races))
    })?;
    drop(rt);
    drop(servers);
    drop(redis);

    report(&s, &runs, &races, &redis_version, &load_before);
    Ok(())
}

fn report(
    s: &Settings,
    runs: &[Vec<Run>],
    races: &[Option<usize>],
    redis_version: &str,
    load_before: &str,
) {
    // A round is quiet when, in each of its three runs, other processes used at most
    // BENCH_MAX_OTHER cores. Medians use the quiet rounds when there are at least 3 of them.
    let rounds = runs[0].len();
    let busiest = |r: usize| runs.iter().map(|v| v[r].other_cores).fold(0.0, f64::max);
    let quiet: Vec<usize> = (0..rounds).filter(|&r| busiest(r) <= s.max_other).collect();
    let used: Vec<usize> = if quiet.len() >= 3 {
        quiet.clone()
    } else {
        (0..rounds).collect()
    };
    let med = |i: usize, f: fn(&Run) -> f64| median(used.iter().map(|&r| f(&runs[i][r])).collect());
    // Ratios within each round (its three runs are adjacent in time), then their median.
    let paired = |a: usize, b: usize, f: fn(&Run) -> f64| {
        median(
            used.iter()
                .map(|&r| f(&runs[a][r]) / f(&runs[b][r]))
                .collect(),
        )
    };

    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(out, "\n### tower-scs comparison — {}\n", today());
    let _ = writeln!(
        out,
        "Machine: {cores} × {}, Linux {}; {redis_version}; load average {load_before} before, \
         {} after.",
        cpu_model(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        loadavg()
    );
    let _ = writeln!(
        out,
        "Load: {} users, {}% writes; one unmeasured pass over A, B, C, then {} rounds of A/B/C \
         (order rotating: A, B, C; B, C, A; C, A, B; …), each run {} s warm-up + {} s measured. Race: {} sessions × {} \
         concurrent requests, {} ms handler delay between read and write.",
        s.users,
        s.write_pct,
        rounds,
        s.warmup_secs,
        s.secs,
        s.race_sessions,
        s.race_requests,
        s.race_delay_ms
    );
    let which = if used.len() == rounds {
        format!("all {rounds} rounds")
    } else {
        let list: Vec<String> = used.iter().map(|r| (r + 1).to_string()).collect();
        format!(
            "{} quiet rounds of {rounds} ({})",
            used.len(),
            list.join(", ")
        )
    };
    let _ = writeln!(
        out,
        "Medians over {which}; a round is quiet when other processes used at most {} cores \
         during each of its runs ({} of {rounds} were).\n",
        s.max_other,
        quiet.len()
    );
    let _ = writeln!(
        out,
        "| variant | req/s | p50 ms | p99 ms | server CPU µs/req | Redis cmds/req (executed) \
         | Redis cmds/req (sent) | Redis CPU µs/req | check failures | lost updates (race) |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let race_total = s.race_sessions * s.race_requests;
    for (i, v) in VARIANTS.iter().enumerate() {
        // Failures are counted over every round, quiet or not.
        let failures: u64 = runs[i].iter().map(|r| r.failures).sum();
        let lost = match races[i] {
            Some(l) => format!("{l} / {race_total}"),
            None => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.1} | {failures} | {lost} |",
            v.label(),
            med(i, |r| r.rps),
            med(i, |r| r.p50_ms),
            med(i, |r| r.p99_ms),
            med(i, |r| r.server_cpu_us),
            med(i, |r| r.redis_cmds),
            med(i, |r| r.sent_cmds),
            med(i, |r| r.redis_cpu_us),
        );
    }
    let _ = writeln!(
        out,
        "\nMedian of per-round ratios: tower-scs / tower-sessions req/s {:.2}×, server CPU per \
         request {:.2}×; tower-scs / floor server CPU per request {:.2}×.",
        paired(0, 1, |r| r.rps),
        paired(0, 1, |r| r.server_cpu_us),
        paired(0, 2, |r| r.server_cpu_us),
    );
    let _ = writeln!(
        out,
        "\nEvery round: req/s · server CPU µs/req · client CPU µs/req · CPU used by other \
         processes (cores); * = not quiet:\n"
    );
    for (i, v) in VARIANTS.iter().enumerate() {
        let line: Vec<String> = runs[i]
            .iter()
            .enumerate()
            .map(|(r, run)| {
                let mark = if quiet.contains(&r) { "" } else { "*" };
                format!(
                    "{:.0} · {:.1} · {:.1} · {:.2}{mark}",
                    run.rps, run.server_cpu_us, run.client_cpu_us, run.other_cores
                )
            })
            .collect();
        let _ = writeln!(out, "- {}: {}", v.label(), line.join("; "));
    }
    let calmest = (0..rounds)
        .min_by(|&a, &b| busiest(a).total_cmp(&busiest(b)))
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "\nRedis commands per request, with Redis's own time per call (`INFO commandstats`, wall \
         clock inside Redis), in the quietest round ({}); \"in script\" = run by tower-scs's \
         commit script, not sent by the server:\n",
        calmest + 1
    );
    for (i, v) in VARIANTS.iter().enumerate() {
        let mix: Vec<String> = runs[i][calmest]
            .mix
            .iter()
            .map(|(c, (n, us))| {
                let inside = if in_script(c) { " in script" } else { "" };
                format!("{}{inside} {n:.3} ({us:.2} µs)", c.to_uppercase())
            })
            .collect();
        let _ = writeln!(out, "- {}: {}", v.label(), mix.join(", "));
    }
    for (i, v) in VARIANTS.iter().enumerate() {
        if let Some(f) = runs[i].iter().find_map(|r| r.first_failure.as_ref()) {
            let _ = writeln!(out, "\nFirst check failure of {}: {f}", v.label());
        }
    }
    println!("{out}");
}
