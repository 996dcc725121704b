//! The closed-loop client: users, each with one keep-alive HTTP/1.1 connection and one cookie
//! jar (which also keeps a token sent in the `x-session-token` header), writing `/put?v=X` or reading `/get` and checking every read against their last write;
//! and the race, which counts the updates a variant loses to concurrent requests.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use axum::http::{StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes};
use hyper_util::{
    client::legacy::Client as PooledClient,
    rt::{TokioExecutor, TokioIo},
};
use tokio::task::JoinHandle;

use crate::{
    BoxError, Result, Settings,
    servers::{TOKEN_HEADER, race_key},
};

/// A user's cookies, by name, and the token the header carrier answered with, if any.
#[derive(Default)]
pub struct Jar(BTreeMap<String, String>, Option<String>);

impl Jar {
    /// A jar holding one cookie (a session of `--live`'s population).
    pub fn with_cookie(name: &str, value: &str) -> Jar {
        Jar(BTreeMap::from([(name.to_owned(), value.to_owned())]), None)
    }

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
        if let Some(token) = headers.get(TOKEN_HEADER).and_then(|t| t.to_str().ok()) {
            self.1 = Some(token.to_owned()).filter(|t| !t.is_empty());
        }
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
    if let Some(token) = &jar.1 {
        req = req.header(TOKEN_HEADER, token);
    }
    Ok(req.body(Empty::new())?)
}

/// One user's keep-alive HTTP/1.1 connection.
pub struct Conn(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn(sender))
    }

    /// Sends `GET path` with the jar's cookies, updates the jar; returns status and body.
    pub async fn get(&mut self, path: &str, jar: &mut Jar) -> Result<(StatusCode, Bytes)> {
        self.0.ready().await?;
        let res = self.0.send_request(request(path, jar)?).await?;
        jar.update(res.headers());
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// The phases of a run, as the users see them: requests before `MEASURE` and after `STOP` are
/// not measured, and users stop at `STOP`.
pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const STOP: u8 = 2;

/// What users measured: latencies of the requests sent and answered within the measured phase,
/// and the failed checks among them.
#[derive(Default)]
pub struct UserStats {
    pub latencies_us: Vec<u32>,
    /// How many of them were reads (`/get`).
    pub reads: u64,
    pub failures: u64,
    pub first_failure: Option<String>,
}

impl UserStats {
    fn fail(&mut self, what: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(what);
    }

    /// Counts one request that took `elapsed`, if it began in the measured phase
    /// (`started_in`) and the phase is still that: warm-up and stop are left out.
    pub fn record(
        &mut self,
        (started_in, phase): (u8, &AtomicU8),
        elapsed: Duration,
        read: bool,
        failure: Option<String>,
    ) {
        if started_in != MEASURE || phase.load(Ordering::Acquire) != MEASURE {
            return;
        }
        self.latencies_us
            .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
        self.reads += u64::from(read);
        if let Some(f) = failure {
            self.fail(f);
        }
    }
}

/// The users of one run, each a task.
pub struct Users(Vec<JoinHandle<Result<UserStats>>>);

impl Users {
    /// `n` users of the server at `addr`, running until `phase` is `STOP`.
    pub fn spawn(n: usize, addr: SocketAddr, write_pct: u64, phase: &Arc<AtomicU8>) -> Users {
        Users(
            (0..n)
                .map(|id| tokio::spawn(user(id, addr, write_pct, phase.clone())))
                .collect(),
        )
    }

    /// Users already spawned as tasks (`--live`'s, which share a population of sessions).
    pub fn from_tasks(tasks: Vec<JoinHandle<Result<UserStats>>>) -> Users {
        Users(tasks)
    }

    /// Waits for every user to stop; their stats together, latencies sorted.
    pub async fn join(self) -> Result<UserStats> {
        let mut all = UserStats::default();
        for u in self.0 {
            let st = u.await??;
            all.latencies_us.extend(st.latencies_us);
            all.reads += st.reads;
            all.failures += st.failures;
            all.first_failure = all.first_failure.or(st.first_failure);
        }
        all.latencies_us.sort_unstable();
        Ok(all)
    }
}

/// A user's xorshift64 generator, seeded from its id: the same sequence every run.
pub struct Rng(u64);

impl Rng {
    pub fn for_user(id: usize) -> Rng {
        Rng(0x9E37_79B9_7F4A_7C15_u64 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn roll(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One user's state: the connection, the cookies, what it wrote last.
struct User {
    id: usize,
    conn: Conn,
    jar: Jar,
    rng: Rng,
    seq: u64,
    last: Option<String>,
}

impl User {
    /// `/put?v=<a new value>`; the failed check, if any.
    async fn put(&mut self) -> Result<Option<String>> {
        self.seq += 1;
        let v = format!("u{}s{}", self.id, self.seq);
        match self.conn.get(&format!("/put?v={v}"), &mut self.jar).await {
            Ok((StatusCode::OK, _)) => {
                self.last = Some(v);
                Ok(None)
            }
            Ok((status, body)) => {
                self.last = None; // unknown whether it was stored
                Ok(Some(format!("/put answered {status}: {body:?}")))
            }
            Err(e) => Err(format!("user {}: /put: {e}", self.id).into()),
        }
    }

    /// `/get`, checked against the last write; the failed check, if any.
    async fn get(&mut self) -> Result<Option<String>> {
        match self.conn.get("/get", &mut self.jar).await {
            Ok((StatusCode::OK, body)) => Ok(match &self.last {
                Some(v) if body != v.as_bytes() => {
                    Some(format!("/get returned {body:?}, last write was {v:?}"))
                }
                _ => None,
            }),
            Ok((status, body)) => Ok(Some(format!("/get answered {status}: {body:?}"))),
            Err(e) => Err(format!("user {}: /get: {e}", self.id).into()),
        }
    }
}

impl User {
    async fn open(id: usize, addr: SocketAddr) -> Result<Self> {
        Ok(User {
            id,
            conn: Conn::open(addr).await?,
            jar: Jar::default(),
            rng: Rng::for_user(id),
            seq: 0,
            last: None,
        })
    }

    /// One request of the mix: a write `write_pct`% of the time (and always the first, so that
    /// the session exists), a read otherwise; whether it was a read, and the failed check, if
    /// any.
    async fn step(&mut self, write_pct: u64) -> Result<(bool, Option<String>)> {
        let roll = self.rng.roll();
        if self.seq == 0 || roll % 100 < write_pct {
            Ok((false, self.put().await?))
        } else {
            Ok((true, self.get().await?))
        }
    }
}

/// One closed-loop user: the mix, until `phase` is `STOP`.
async fn user(
    id: usize,
    addr: SocketAddr,
    write_pct: u64,
    phase: Arc<AtomicU8>,
) -> Result<UserStats> {
    let mut u = User::open(id, addr).await?;
    let mut stats = UserStats::default();
    loop {
        let started_in = phase.load(Ordering::Acquire);
        if started_in == STOP {
            break;
        }
        let start = Instant::now();
        let (read, failure) = u.step(write_pct).await?;
        stats.record((started_in, &phase), start.elapsed(), read, failure);
    }
    Ok(stats)
}

/// `--drive`: exactly `requests` requests of the mix, shared among `users` users, against a
/// server already running (say, under callgrind); an error on the first failed check.
pub async fn drive(addr: SocketAddr, requests: u64, users: usize, write_pct: u64) -> Result<()> {
    let per_user = requests / users as u64;
    let extra = requests % users as u64;
    let tasks: Vec<_> = (0..users)
        .map(|id| {
            let n = per_user + u64::from((id as u64) < extra);
            tokio::spawn(async move {
                let mut u = User::open(id, addr).await?;
                for _ in 0..n {
                    if let (_, Some(failure)) = u.step(write_pct).await? {
                        return Err(format!("user {id}: {failure}").into());
                    }
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The race: per session, `requests` concurrent `/race?k=rI` (read, wait, write a distinct key),
/// then count the keys that survived. Returns the number of lost updates.
pub async fn race(s: &Settings, port: u16) -> Result<usize> {
    let client = PooledClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let base = format!("http://127.0.0.1:{port}");
    let mut lost = 0;
    for _ in 0..s.race_sessions {
        let found = race_session(&client, &base, s.race_requests).await?;
        lost += s.race_requests.saturating_sub(found);
    }
    Ok(lost)
}

type Pooled = PooledClient<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// One session of the race: creates it, sends the `requests` at once, and returns how many of
/// their keys it holds afterwards.
async fn race_session(client: &Pooled, base: &str, requests: usize) -> Result<usize> {
    let mut jar = Jar::default();
    let res = client
        .request(request(&format!("{base}/put?v=init"), &jar)?)
        .await?;
    jar.update(res.headers());
    if res.status() != StatusCode::OK || (jar.0.is_empty() && jar.1.is_none()) {
        return Err(format!("race: creating a session answered {}", res.status()).into());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(requests));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..requests {
        let (client, barrier) = (client.clone(), barrier.clone());
        let req = request(&format!("{base}/race?k={}", race_key(i)), &jar)?;
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
        .request(request(&format!("{base}/count?n={requests}"), &jar)?)
        .await?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(std::str::from_utf8(&body)?.trim().parse()?)
}
