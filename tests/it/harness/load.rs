//! The load that the outage and fault tests put on a real server: the test app over
//! `RedisStore::from_url`, served by axum on its own runtime ([`AppServer`]), driven by
//! `CLIENTS` concurrent clients, each with its own cookie, putting unique values and reading
//! them back, plus a `/ping` probe ([`Load`]); and the checks of what they saw ([`examine`],
//! [`Window`], [`served_again`], [`probe`]), with the time the process was starved excused
//! from every latency bound.

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

use super::{NONE, RedisServer, app};

const DEFAULT_PREFIX: &str = RedisStore::DEFAULT_PREFIX;

/// The layer's store timeout (its default).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest any request may take, whatever Redis does: the store timeout and a margin for
/// scheduling on a busy machine.
pub const MAX_LATENCY: Duration = Duration::from_millis(1_500);
/// The longest `/ping` (no session) may take, whatever Redis does.
pub const PING_MAX: Duration = Duration::from_millis(250);
/// How soon after Redis answers again a put and a get must both succeed.
pub const RECOVERY_LIMIT: Duration = Duration::from_millis(1_500);
/// How many concurrent clients make the load.
pub const CLIENTS: usize = 16;
/// A client's pause between two put+get rounds, to keep the load fair to a shared machine.
pub const THINK: Duration = Duration::from_millis(40);
/// How long a client waits for an answer before it counts the request as hung.
pub const HANG: Duration = Duration::from_secs(5);

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
pub fn starved(from: Instant, to: Instant) -> Duration {
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
pub struct AppServer {
    pub addr: SocketAddr,
    pub name: &'static str,
    pub stop: Option<oneshot::Sender<()>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl AppServer {
    pub fn start(name: &'static str, redis: &RedisServer) -> Self {
        Self::start_on(name, redis.url())
    }

    /// [`AppServer::start`] on the Redis at `url` (a fault proxy's, say).
    pub fn start_on(name: &'static str, url: String) -> Self {
        record_panics();
        late_ticks();
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
    pub fn assert_alive(&self) {
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
pub enum Op {
    /// `/put?key=v&value=c<client>-<n>`
    Put(u64),
    /// `/get?key=v`
    Get,
    /// `/ping`, without a cookie
    Ping,
}

/// One request, timed.
#[derive(Debug)]
pub struct Event {
    pub op: Op,
    pub start: Instant,
    pub end: Instant,
    /// `None`: no answer (connection error, or nothing within `HANG`).
    pub status: Option<StatusCode>,
    pub body: String,
    /// The session token the response's `Set-Cookie` carries.
    pub token: Option<String>,
    pub error: Option<String>,
}

impl Event {
    pub fn latency(&self) -> Duration {
        self.end - self.start
    }

    /// It took longer than `bound`, not counting the time the process was starved meanwhile.
    pub fn slower_than(&self, bound: Duration) -> bool {
        self.latency() > bound + starved(self.start, self.end)
    }

    pub fn ok(&self) -> bool {
        self.status == Some(StatusCode::OK)
    }

    /// `+<start> <op> → <status> in <latency> <body>`, times from `epoch`.
    pub fn describe(&self, epoch: Instant) -> String {
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
    pub fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.start <= to && self.end >= from
    }
}

/// GET `path`, with `session=<token>` when given, timed.
pub async fn request(
    http: &Http,
    addr: SocketAddr,
    op: Op,
    path: &str,
    token: Option<&str>,
) -> Event {
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

pub fn value(client: usize, n: u64) -> String {
    format!("c{client}-{n}")
}

/// `c<client>-<n>` → (client, n).
pub fn parse_value(v: &str) -> Option<(usize, u64)> {
    let (client, n) = v.strip_prefix('c')?.split_once('-')?;
    Some((client.parse().ok()?, n.parse().ok()?))
}

/// What one client did: its requests in order, and its session token at the end.
pub struct ClientLog {
    pub id: usize,
    pub events: Vec<Event>,
    pub token: Option<String>,
    /// When the load started.
    pub epoch: Instant,
}

impl ClientLog {
    /// The client's requests up to the `i`th, the last few of them.
    pub fn history(&self, i: usize) -> String {
        self.events[i.saturating_sub(7)..=i]
            .iter()
            .map(|e| format!("    {}", e.describe(self.epoch)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One client of the load: rounds of put `c<id>-<n>` under `v`, then get `v`, with its own
/// cookie jar, until told to stop.
pub async fn client(
    id: usize,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    epoch: Instant,
) -> ClientLog {
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
pub async fn pinger(addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<Event> {
    let http = http();
    let mut events = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        events.push(request(&http, addr, Op::Ping, "/ping", None).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    events
}

/// The load: `CLIENTS` clients and a pinger, running until `finish`.
pub struct Load {
    /// When it started.
    pub epoch: Instant,
    pub stop: Arc<AtomicBool>,
    pub clients: JoinSet<ClientLog>,
    pub pinger: tokio::task::JoinHandle<Vec<Event>>,
}

impl Load {
    pub fn start(addr: SocketAddr) -> Self {
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

    pub async fn finish(mut self) -> (Vec<ClientLog>, Vec<Event>) {
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
pub struct Verdict {
    /// Puts answered 200.
    pub acked: usize,
    /// The last put answered 200, and the last put sent.
    pub last_acked: u64,
    pub last_sent: u64,
    /// Successful reads that returned an older value than the last acknowledged one (or none).
    pub stale_reads: usize,
    /// Everything that must not happen, described.
    pub faults: Vec<String>,
}

/// Replays a client's log: every answer is 200 or 500 within `MAX_LATENCY`; a 500 sets no
/// cookie; the token never changes; every successful read returns the client's own value, no
/// older than its last acknowledged write, and not one it never sent.
pub fn judge(log: &ClientLog) -> Verdict {
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

pub enum Fault {
    /// Read an older value than the last acknowledged one (or none): an acknowledged write lost.
    Stale(String),
    Other(String),
}

/// A successful read of client `id` returned `body`, after its write `acked` was acknowledged
/// and `sent` was sent.
pub fn read_ok(id: usize, body: &str, acked: u64, sent: u64) -> Result<(), Fault> {
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
pub struct Findings {
    /// Puts answered 200, over all clients.
    pub acked: usize,
    /// Successful reads, during the load, older than the client's last acknowledged write.
    pub stale_reads: usize,
    /// Clients whose value, read after the load, is older than their last acknowledged write.
    pub lost: usize,
    /// Everything that must not happen, described.
    pub faults: Vec<String>,
}

impl Findings {
    pub fn print(&self) {
        eprintln!(
            "  acknowledged writes: {}; lost: {} at the end, {} stale reads during the load",
            self.acked, self.lost, self.stale_reads
        );
    }

    pub fn assert_none(&self) {
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
/// is no session other than the clients', the probe's, and those of probe rounds answered 500.
pub async fn examine(
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
    // A probe round answered 500 may still land later, as a session of its own that no client
    // holds: only such sessions may be in Redis besides the clients' and the probe's.
    let mut orphans = Vec::new();
    for key in stored.difference(&keys) {
        let value = inspector
            .hgetall(key)
            .await
            .remove("v:v")
            .unwrap_or_default();
        if !value.starts_with("\"probe-") {
            orphans.push(key.clone());
        }
    }
    if !keys.is_subset(&stored) || !orphans.is_empty() {
        found.faults.push(format!(
            "sessions in Redis: {stored:?}; the clients' and the probe's: {keys:?}"
        ));
    }
    found
}

/// The session requests (puts and gets) of every client.
pub fn session_events(logs: &[ClientLog]) -> impl Iterator<Item = &Event> {
    logs.iter().flat_map(|l| &l.events)
}

/// The session requests in flight during a window of time.
pub struct Window {
    pub count: usize,
    pub ok: usize,
    pub failed: usize,
    /// The longest latency.
    pub max: Duration,
    /// Those slower than `MAX_LATENCY` (starvation aside), described.
    pub too_slow: Vec<String>,
    /// How long the process was starved during the window.
    pub starved: Duration,
}

impl Window {
    pub fn of(logs: &[ClientLog], from: Instant, to: Instant) -> Self {
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

    pub fn print(&self, what: &str) {
        eprintln!(
            "  requests in flight {what}: {} ({} × 200, {} × 500), max latency {:?} (process \
             starved {:?} meanwhile)",
            self.count, self.ok, self.failed, self.max, self.starved
        );
    }
}

/// For each client, how long after `from` it first completed a put answered 200 and then a get
/// answered 200 that reads that put's value, both sent after `from`; `None` if it never did.
pub fn served_again(logs: &[ClientLog], from: Instant) -> Vec<Option<Duration>> {
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
pub fn assert_all_served(served: &[Option<Duration>], from: Instant, what: &str) {
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
pub async fn probe(addr: SocketAddr, from: Instant) -> (Duration, usize, String) {
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

pub async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Seconds since `epoch`, for the figures.
pub fn at(epoch: Instant, t: Instant) -> String {
    format!("+{:.3}s", (t - epoch).as_secs_f64())
}
