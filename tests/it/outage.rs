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
    net::SocketAddr,
    sync::{
        Arc, Mutex, Once, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{sync::oneshot, task::JoinSet};
use tower_scs::{RedisStore, SessionLayer};

use crate::harness::{NONE, RedisServer, app};

const DEFAULT_PREFIX: &str = RedisStore::DEFAULT_PREFIX;

/// The layer's store timeout (its default).
const STORE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest any request may take, whatever Redis does: the store timeout and a margin for
/// scheduling on a busy machine.
const MAX_LATENCY: Duration = Duration::from_millis(1_500);
/// The longest `/ping` (no session) may take, whatever Redis does.
const PING_MAX: Duration = Duration::from_millis(250);
/// How soon after Redis answers again a put and a get must both succeed.
const RECOVERY_LIMIT: Duration = Duration::from_millis(1_500);
/// How many concurrent clients make the load.
const CLIENTS: usize = 16;
/// A client's pause between two put+get rounds, to keep the load fair to a shared machine.
const THINK: Duration = Duration::from_millis(40);
/// How long a client waits for an answer before it counts the request as hung.
const HANG: Duration = Duration::from_secs(5);
/// AOF on, fsync at every write: an acknowledged write survives a kill.
const AOF: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];

// ---------------------------------------------------------------------------------------------
// Starvation: this 2-core machine is shared, and other processes may starve this one for a
// while. A latency bound is checked against the request's latency minus the time the process
// was starved meanwhile, as measured by a plain OS thread that sleeps `TICK` in a loop (a thread
// outside the async runtimes, so a blocked runtime is never excused).

const TICK: Duration = Duration::from_millis(5);

/// The ticks that woke up late: (when the tick began, how late it woke).
static LATE_TICKS: OnceLock<Mutex<Vec<(Instant, Duration)>>> = OnceLock::new();

fn late_ticks() -> &'static Mutex<Vec<(Instant, Duration)>> {
    LATE_TICKS.get_or_init(|| {
        std::thread::spawn(|| {
            loop {
                let began = Instant::now();
                std::thread::sleep(TICK);
                let late = began.elapsed().saturating_sub(TICK);
                if late > Duration::from_millis(10) {
                    late_ticks().lock().unwrap().push((began, late));
                }
            }
        });
        Mutex::default()
    })
}

/// How long the process was starved during `[from, to]`.
fn starved(from: Instant, to: Instant) -> Duration {
    late_ticks()
        .lock()
        .unwrap()
        .iter()
        .filter(|&&(began, late)| began <= to && began + TICK + late >= from)
        .map(|&(_, late)| late)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The server under test.

/// Names of the threads that panicked, recorded by a panic hook: the server's threads carry
/// the server's name, so a panic anywhere in the server (handler, layer, fred's tasks) shows.
static PANICKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            PANICKED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(name);
            previous(info);
        }));
    });
}

/// The test app over `RedisStore::from_url(<redis>)` with the default settings, served by axum
/// on a free loopback port, on its own 2-thread runtime whose threads are named `name` (so that
/// the clients do not share its scheduler, and a panic in it is attributed). Stopped on drop.
struct AppServer {
    addr: SocketAddr,
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AppServer {
    fn start(name: &'static str, redis: &RedisServer) -> Self {
        record_panics();
        late_ticks();
        let url = redis.url();
        let (ready, addr) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(name)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                runtime.block_on(async move {
                    let store = RedisStore::from_url(&url)
                        .await
                        .expect("RedisStore::from_url on the test server");
                    let router = app(SessionLayer::new(store));
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind 127.0.0.1:0");
                    ready.send(listener.local_addr().unwrap()).unwrap();
                    tokio::select! {
                        served = axum::serve(listener, router) => served.expect("serve"),
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the server thread");
        let addr = addr.recv().expect("the server starts");
        AppServer {
            addr,
            name,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The server still runs, and nothing in it panicked.
    fn assert_alive(&self) {
        let thread = self.thread.as_ref().expect("server thread");
        assert!(!thread.is_finished(), "the server stopped");
        let panicked = PANICKED.lock().unwrap().clone();
        assert!(
            !panicked.iter().any(|n| n == self.name),
            "the server panicked (threads: {panicked:?})"
        );
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients and their logs.

type Http = Client<HttpConnector, Empty<Bytes>>;

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `/put?key=v&value=c<client>-<n>`
    Put(u64),
    /// `/get?key=v`
    Get,
    /// `/ping`, without a cookie
    Ping,
}

/// One request, timed.
#[derive(Debug)]
struct Event {
    op: Op,
    start: Instant,
    end: Instant,
    /// `None`: no answer (connection error, or nothing within `HANG`).
    status: Option<StatusCode>,
    body: String,
    /// The session token the response's `Set-Cookie` carries.
    token: Option<String>,
    error: Option<String>,
}

impl Event {
    fn latency(&self) -> Duration {
        self.end - self.start
    }

    /// It took longer than `bound`, not counting the time the process was starved meanwhile.
    fn slower_than(&self, bound: Duration) -> bool {
        self.latency() > bound + starved(self.start, self.end)
    }

    fn ok(&self) -> bool {
        self.status == Some(StatusCode::OK)
    }

    /// `+<start> <op> → <status> in <latency> <body>`, times from `epoch`.
    fn describe(&self, epoch: Instant) -> String {
        let status = match self.status {
            Some(s) => s.as_u16().to_string(),
            None => format!("no answer ({})", self.error.as_deref().unwrap_or("")),
        };
        format!(
            "+{:.3}s {:?} → {status} in {:.3}s {:?}",
            (self.start - epoch).as_secs_f64(),
            self.op,
            self.latency().as_secs_f64(),
            self.body
        )
    }

    /// The request was in flight at some moment of `[from, to]`.
    fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.start <= to && self.end >= from
    }
}

/// GET `path`, with `session=<token>` when given, timed.
async fn request(http: &Http, addr: SocketAddr, op: Op, path: &str, token: Option<&str>) -> Event {
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        req = req.header(header::COOKIE, format!("session={token}"));
    }
    let req = req.body(Empty::new()).unwrap();
    let start = Instant::now();
    let answer = tokio::time::timeout(HANG, async {
        let res = http.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = res.status();
        let token = res
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .and_then(|pair| pair.strip_prefix("session="))
            .map(str::to_owned);
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, token, body.to_bytes()))
    })
    .await;
    let end = Instant::now();
    let (status, token, body, error) = match answer {
        Ok(Ok((status, token, body))) => (
            Some(status),
            token,
            String::from_utf8_lossy(&body).into_owned(),
            None,
        ),
        Ok(Err(e)) => (None, None, String::new(), Some(e)),
        Err(_) => (
            None,
            None,
            String::new(),
            Some(format!("no answer in {HANG:?}")),
        ),
    };
    Event {
        op,
        start,
        end,
        status,
        body,
        token,
        error,
    }
}

fn value(client: usize, n: u64) -> String {
    format!("c{client}-{n}")
}

/// `c<client>-<n>` → (client, n).
fn parse_value(v: &str) -> Option<(usize, u64)> {
    let (client, n) = v.strip_prefix('c')?.split_once('-')?;
    Some((client.parse().ok()?, n.parse().ok()?))
}

/// What one client did: its requests in order, and its session token at the end.
struct ClientLog {
    id: usize,
    events: Vec<Event>,
    token: Option<String>,
    /// When the load started.
    epoch: Instant,
}

impl ClientLog {
    /// The client's requests up to the `i`th, the last few of them.
    fn history(&self, i: usize) -> String {
        self.events[i.saturating_sub(7)..=i]
            .iter()
            .map(|e| format!("    {}", e.describe(self.epoch)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One client of the load: rounds of put `c<id>-<n>` under `v`, then get `v`, with its own
/// cookie jar, until told to stop.
async fn client(id: usize, addr: SocketAddr, stop: Arc<AtomicBool>, epoch: Instant) -> ClientLog {
    let http = http();
    let mut token: Option<String> = None;
    let mut events = Vec::new();
    let mut n = 0;
    // Spread the clients over the round, so that some are always sending.
    tokio::time::sleep(THINK * id as u32 / CLIENTS as u32).await;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let path = format!("/put?key=v&value={}", value(id, n));
        let put = request(&http, addr, Op::Put(n), &path, token.as_deref()).await;
        if let Some(t) = &put.token {
            token = Some(t.clone());
        }
        events.push(put);
        let get = request(&http, addr, Op::Get, "/get?key=v", token.as_deref()).await;
        events.push(get);
        tokio::time::sleep(THINK).await;
    }
    ClientLog {
        id,
        events,
        token,
        epoch,
    }
}

/// `/ping` every 50 ms, without a cookie.
async fn pinger(addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<Event> {
    let http = http();
    let mut events = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        events.push(request(&http, addr, Op::Ping, "/ping", None).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    events
}

/// The load: `CLIENTS` clients and a pinger, running until `finish`.
struct Load {
    /// When it started.
    epoch: Instant,
    stop: Arc<AtomicBool>,
    clients: JoinSet<ClientLog>,
    pinger: tokio::task::JoinHandle<Vec<Event>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Self {
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = JoinSet::new();
        for id in 0..CLIENTS {
            clients.spawn(client(id, addr, stop.clone(), epoch));
        }
        let pinger = tokio::spawn(pinger(addr, stop.clone()));
        Load {
            epoch,
            stop,
            clients,
            pinger,
        }
    }

    async fn finish(mut self) -> (Vec<ClientLog>, Vec<Event>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        while let Some(log) = self.clients.join_next().await {
            logs.push(log.expect("a client task panicked"));
        }
        logs.sort_by_key(|l| l.id);
        (logs, self.pinger.await.expect("the pinger panicked"))
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// What a client's log shows.
#[derive(Default)]
struct Verdict {
    /// Puts answered 200.
    acked: usize,
    /// The last put answered 200, and the last put sent.
    last_acked: u64,
    last_sent: u64,
    /// Successful reads that returned an older value than the last acknowledged one (or none).
    stale_reads: usize,
    /// Everything that must not happen, described.
    faults: Vec<String>,
}

/// Replays a client's log: every answer is 200 or 500 within `MAX_LATENCY`; a 500 sets no
/// cookie; the token never changes; every successful read returns the client's own value, no
/// older than its last acknowledged write, and not one it never sent.
fn judge(log: &ClientLog) -> Verdict {
    let mut v = Verdict::default();
    let mut first_token: Option<&str> = None;
    for (i, e) in log.events.iter().enumerate() {
        let what = format!("client {} {:?}", log.id, e.op);
        if let Op::Put(n) = e.op {
            v.last_sent = n;
        }
        if e.slower_than(MAX_LATENCY) {
            v.faults.push(format!("{what}: {}", e.describe(log.epoch)));
        }
        match e.status {
            Some(StatusCode::OK) => {}
            Some(StatusCode::INTERNAL_SERVER_ERROR) => {
                if e.token.is_some() {
                    v.faults.push(format!("{what}: a 500 with a Set-Cookie"));
                }
                continue;
            }
            other => {
                v.faults
                    .push(format!("{what}: {other:?} {:?} {}", e.error, e.body));
                continue;
            }
        }
        match e.op {
            Op::Put(n) => {
                v.acked += 1;
                v.last_acked = n;
                match (first_token, e.token.as_deref()) {
                    (_, None) => v.faults.push(format!("{what}: a 200 without a cookie")),
                    (None, Some(t)) => first_token = Some(t),
                    (Some(first), Some(t)) if first != t => v
                        .faults
                        .push(format!("{what}: the token changed (session lost?)")),
                    _ => {}
                }
            }
            Op::Get => match read_ok(log.id, &e.body, v.last_acked, v.last_sent) {
                Ok(()) => {}
                Err(Fault::Stale(m)) => {
                    v.stale_reads += 1;
                    v.faults.push(format!(
                        "{what}: read {m} after its write {} got a 200; its last requests:\n{}",
                        v.last_acked,
                        log.history(i)
                    ));
                }
                Err(Fault::Other(f)) => v.faults.push(format!("{what}: {f}")),
            },
            Op::Ping => unreachable!("pings are not in the clients' logs"),
        }
    }
    v
}

enum Fault {
    /// Read an older value than the last acknowledged one (or none): an acknowledged write lost.
    Stale(String),
    Other(String),
}

/// A successful read of client `id` returned `body`, after its write `acked` was acknowledged
/// and `sent` was sent.
fn read_ok(id: usize, body: &str, acked: u64, sent: u64) -> Result<(), Fault> {
    if body == NONE {
        return if acked == 0 {
            Ok(())
        } else {
            Err(Fault::Stale(NONE.into()))
        };
    }
    match parse_value(body) {
        None => Err(Fault::Other(format!(
            "read {body:?}, not a value of the test"
        ))),
        Some((other, _)) if other != id => Err(Fault::Other(format!(
            "read {body:?}, client {other}'s value"
        ))),
        Some((_, m)) if m < acked => Err(Fault::Stale(body.into())),
        Some((_, m)) if m > sent => Err(Fault::Other(format!("read {body:?}, never sent"))),
        Some(_) => Ok(()),
    }
}

/// What the load and the checks after it found.
struct Findings {
    /// Puts answered 200, over all clients.
    acked: usize,
    /// Successful reads, during the load, older than the client's last acknowledged write.
    stale_reads: usize,
    /// Clients whose value, read after the load, is older than their last acknowledged write.
    lost: usize,
    /// Everything that must not happen, described.
    faults: Vec<String>,
}

impl Findings {
    fn print(&self) {
        eprintln!(
            "  acknowledged writes: {}; lost: {} at the end, {} stale reads during the load",
            self.acked, self.lost, self.stale_reads
        );
    }

    fn assert_none(&self) {
        assert!(
            self.faults.is_empty(),
            "{} faults:\n{}",
            self.faults.len(),
            self.faults
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Checks the clients' logs (see `judge`) and the pings (all `pong` within `PING_MAX`), then
/// reads each client's value after the load: a put answered 500 may still have been stored, so
/// what is read must lie in `[last acknowledged, last sent]`. Also checks, straight in Redis,
/// that each session holds exactly its client's value with consistent metadata, and that there
/// is no session other than the clients' and the probe's.
async fn examine(
    addr: SocketAddr,
    redis: &RedisServer,
    logs: &[ClientLog],
    pings: &[Event],
    probe_token: &str,
) -> Findings {
    let verdicts: Vec<Verdict> = logs.iter().map(judge).collect();
    let mut found = Findings {
        acked: verdicts.iter().map(|v| v.acked).sum(),
        stale_reads: verdicts.iter().map(|v| v.stale_reads).sum(),
        lost: 0,
        faults: verdicts.iter().flat_map(|v| v.faults.clone()).collect(),
    };

    let ping_max = pings.iter().map(Event::latency).max().unwrap_or_default();
    eprintln!("  /ping: {} sent, max latency {ping_max:?}", pings.len());
    if pings.len() < 20 {
        found.faults.push(format!("only {} pings", pings.len()));
    }
    for p in pings {
        if !p.ok() || p.body != "pong" || p.slower_than(PING_MAX) {
            found
                .faults
                .push(format!("/ping: {}", p.describe(logs[0].epoch)));
        }
    }

    let http = http();
    let inspector = redis.inspector();
    let mut keys = BTreeSet::from([format!("{DEFAULT_PREFIX}{probe_token}")]);
    for (log, v) in logs.iter().zip(&verdicts) {
        let who = format!("client {}", log.id);
        if v.acked == 0 {
            found.faults.push(format!("{who}: no write got a 200"));
        }
        let Some(token) = log.token.as_deref() else {
            found.faults.push(format!("{who}: never got a session"));
            continue;
        };
        let key = format!("{DEFAULT_PREFIX}{token}");
        keys.insert(key.clone());
        let get = request(&http, addr, Op::Get, "/get?key=v", Some(token)).await;
        if !get.ok() {
            found.faults.push(format!("{who}: final read {get:?}"));
            continue;
        }
        match read_ok(log.id, &get.body, v.last_acked, v.last_sent) {
            Ok(()) => {}
            Err(Fault::Stale(m)) => {
                found.lost += 1;
                found.faults.push(format!(
                    "{who}: reads {m} after the load, but its write {} got a 200",
                    v.last_acked
                ));
            }
            Err(Fault::Other(f)) => found.faults.push(format!("{who}: final read: {f}")),
        }
        let session_keys = request(&http, addr, Op::Get, "/keys", Some(token)).await;
        if session_keys.body != "v" {
            found
                .faults
                .push(format!("{who}: session keys {session_keys:?}"));
        }
        let hash = inspector.hgetall(&key).await;
        let fields: BTreeSet<&str> = hash.keys().map(String::as_str).collect();
        let expected = BTreeSet::from(["d", "s", "v:v"]);
        let meta = crate::harness::redis::meta(&hash);
        let consistent = fields == expected
            && hash["v:v"] == format!("{:?}", get.body)
            && meta.get("size") == Some(&(1 + hash["v:v"].len()).to_string());
        if !consistent {
            found.faults.push(format!(
                "{who}: stored {hash:?}, read {:?} through the layer",
                get.body
            ));
        }
    }
    let stored: BTreeSet<String> = inspector.keys().await.into_iter().collect();
    if stored != keys {
        found.faults.push(format!(
            "sessions in Redis: {stored:?}; the clients' and the probe's: {keys:?}"
        ));
    }
    found
}

/// The session requests (puts and gets) of every client.
fn session_events(logs: &[ClientLog]) -> impl Iterator<Item = &Event> {
    logs.iter().flat_map(|l| &l.events)
}

/// The session requests in flight during a window of time.
struct Window {
    count: usize,
    ok: usize,
    failed: usize,
    /// The longest latency.
    max: Duration,
    /// Those slower than `MAX_LATENCY` (starvation aside), described.
    too_slow: Vec<String>,
    /// How long the process was starved during the window.
    starved: Duration,
}

impl Window {
    fn of(logs: &[ClientLog], from: Instant, to: Instant) -> Self {
        let during: Vec<&Event> = session_events(logs)
            .filter(|e| e.overlaps(from, to))
            .collect();
        Window {
            count: during.len(),
            ok: during.iter().filter(|e| e.ok()).count(),
            failed: during
                .iter()
                .filter(|e| e.status == Some(StatusCode::INTERNAL_SERVER_ERROR))
                .count(),
            max: during.iter().map(|e| e.latency()).max().unwrap_or_default(),
            too_slow: during
                .iter()
                .filter(|e| e.slower_than(MAX_LATENCY))
                .map(|e| e.describe(logs[0].epoch))
                .collect(),
            starved: starved(from, to),
        }
    }

    fn print(&self, what: &str) {
        eprintln!(
            "  requests in flight {what}: {} ({} × 200, {} × 500), max latency {:?} (process \
             starved {:?} meanwhile)",
            self.count, self.ok, self.failed, self.max, self.starved
        );
    }
}

/// For each client, how long after `from` it first completed a put answered 200 and then a get
/// answered 200 that reads that put's value, both sent after `from`; `None` if it never did.
fn served_again(logs: &[ClientLog], from: Instant) -> Vec<Option<Duration>> {
    logs.iter()
        .map(|log| {
            log.events.windows(2).find_map(|pair| match pair {
                [put, get] if put.start >= from && put.ok() && get.ok() => match put.op {
                    Op::Put(n) if get.body == value(log.id, n) => Some(get.end - from),
                    _ => None,
                },
                _ => None,
            })
        })
        .collect()
}

/// Asserts that every client was served again within `RECOVERY_LIMIT` of `from` (`what`),
/// starvation aside.
fn assert_all_served(served: &[Option<Duration>], from: Instant, what: &str) {
    let late: Vec<(usize, Option<Duration>)> = served
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, s)| s.is_none_or(|s| s > RECOVERY_LIMIT + starved(from, from + s)))
        .collect();
    assert!(
        late.is_empty(),
        "clients not served again within {RECOVERY_LIMIT:?} of {what}: {late:?}"
    );
}

/// Puts and gets with a fresh client from `from` on, until a put and the get after it both
/// succeed; returns how long after `from` that was, how many rounds failed before, and the
/// probe's session token.
async fn probe(addr: SocketAddr, from: Instant) -> (Duration, usize, String) {
    let http = http();
    let mut failed = 0;
    for n in 1.. {
        let path = format!("/put?key=v&value=probe-{n}");
        let put = request(&http, addr, Op::Put(n), &path, None).await;
        assert!(!put.slower_than(MAX_LATENCY), "probe put: {put:?}");
        if put.ok() {
            let get = request(&http, addr, Op::Get, "/get?key=v", put.token.as_deref()).await;
            assert!(!get.slower_than(MAX_LATENCY), "probe get: {get:?}");
            if get.ok() {
                assert_eq!(get.body, format!("probe-{n}"));
                return (get.end - from, failed, put.token.expect("a cookie"));
            }
        }
        failed += 1;
        assert!(
            from.elapsed() < Duration::from_secs(10),
            "no successful put+get 10 s after Redis returned ({failed} rounds failed)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unreachable!()
}

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

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

/// Seconds since `epoch`, for the figures.
fn at(epoch: Instant, t: Instant) -> String {
    format!("+{:.3}s", (t - epoch).as_secs_f64())
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
