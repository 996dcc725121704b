//! `--live`'s client: a population of sessions created before the runs (their tokens, and per
//! server what each session should hold), and users that each request a session drawn uniformly
//! among those they own, so that every request touches a random one of the N live sessions and
//! every read can still be checked exactly.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU32, Ordering},
    },
    time::Instant,
};

use axum::http::StatusCode;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;

use crate::{
    Result,
    client::{Conn, Jar, Rng, STOP, UserStats, Users},
};

/// The value every session of the population is created with, under the key `v`.
pub const VALUE: &str = "hello, session";

/// Tokens as the crate makes them (32 random bytes, base64url without padding: 43 characters),
/// one after the other in one buffer, so that a million of them take 43 MB and no more.
pub struct Tokens(Vec<u8>);

const TOKEN_LEN: usize = 43;

impl Tokens {
    pub fn generate(n: usize) -> Tokens {
        let mut buf = Vec::with_capacity(n * TOKEN_LEN);
        let mut bytes = [0u8; 32];
        let mut rng = rand::rng();
        for _ in 0..n {
            rng.fill_bytes(&mut bytes);
            buf.extend_from_slice(URL_SAFE_NO_PAD.encode(bytes).as_bytes());
        }
        Tokens(buf)
    }

    pub fn get(&self, i: usize) -> &str {
        let bytes = &self.0[i * TOKEN_LEN..(i + 1) * TOKEN_LEN];
        std::str::from_utf8(bytes).expect("base64url is ASCII")
    }
}

/// A session's last write is unknown (a `/put` that failed): its reads are not checked.
const UNKNOWN: u32 = u32::MAX;

/// The first `n` tokens as one server's sessions: the cookie that carries them, and per session
/// the sequence number of its last write (0: still `VALUE`), which only its owner user touches.
pub struct Live {
    tokens: Arc<Tokens>,
    n: usize,
    cookie: &'static str,
    last: Vec<AtomicU32>,
}

impl Live {
    pub fn new(tokens: Arc<Tokens>, n: usize, cookie: &'static str) -> Live {
        let last = (0..n).map(|_| AtomicU32::new(0)).collect();
        Live {
            tokens,
            n,
            cookie,
            last,
        }
    }

    /// How many sessions.
    pub fn sessions(&self) -> usize {
        self.n
    }

    /// The value session `i` holds after its write number `seq`.
    fn value(i: usize, seq: u32) -> String {
        match seq {
            0 => VALUE.to_owned(),
            _ => format!("p{i}s{seq}"),
        }
    }

    /// `users` users (`id` owns the sessions `i` with `i % users == id`), until `phase` is STOP.
    pub fn spawn(
        self: &Arc<Self>,
        users: usize,
        addr: SocketAddr,
        write_pct: u64,
        phase: &Arc<AtomicU8>,
    ) -> Users {
        let tasks = (0..users)
            .map(|id| {
                let user = LiveUser {
                    live: self.clone(),
                    id,
                    users,
                    rng: Rng::for_user(id),
                };
                tokio::spawn(user.run(addr, write_pct, phase.clone()))
            })
            .collect();
        Users::from_tasks(tasks)
    }
}

/// One user of a population.
struct LiveUser {
    live: Arc<Live>,
    id: usize,
    users: usize,
    rng: Rng,
}

impl LiveUser {
    async fn run(
        mut self,
        addr: SocketAddr,
        write_pct: u64,
        phase: Arc<AtomicU8>,
    ) -> Result<UserStats> {
        let owned = self.live.n.saturating_sub(self.id).div_ceil(self.users);
        if owned == 0 {
            return Err(format!(
                "user {} owns no session: fewer sessions than users",
                self.id
            )
            .into());
        }
        let mut conn = Conn::open(addr).await?;
        let mut stats = UserStats::default();
        loop {
            let started_in = phase.load(Ordering::Acquire);
            if started_in == STOP {
                break;
            }
            let roll = self.rng.roll();
            let i = self.id + (roll >> 8) as usize % owned * self.users;
            let write = roll % 100 < write_pct;
            let start = Instant::now();
            let failure = self.step(&mut conn, i, write).await?;
            stats.record((started_in, &phase), start.elapsed(), !write, failure);
        }
        Ok(stats)
    }

    /// `/put?v=<its next value>` or `/get` of session `i`, checked; the failed check, if any.
    async fn step(&mut self, conn: &mut Conn, i: usize, write: bool) -> Result<Option<String>> {
        let live = &self.live;
        let mut jar = Jar::with_cookie(live.cookie, live.tokens.get(i));
        let last = live.last[i].load(Ordering::Relaxed);
        if write {
            let seq = if last >= UNKNOWN - 1 { 1 } else { last + 1 };
            let v = Live::value(i, seq);
            let (status, body) = conn.get(&format!("/put?v={v}"), &mut jar).await?;
            let ok = status == StatusCode::OK;
            live.last[i].store(if ok { seq } else { UNKNOWN }, Ordering::Relaxed);
            return Ok((!ok).then(|| format!("/put of session {i} answered {status}: {body:?}")));
        }
        let (status, body) = conn.get("/get", &mut jar).await?;
        if status != StatusCode::OK {
            return Ok(Some(format!(
                "/get of session {i} answered {status}: {body:?}"
            )));
        }
        let want = (last != UNKNOWN).then(|| Live::value(i, last));
        Ok(want
            .filter(|v| body != v.as_bytes())
            .map(|v| format!("/get of session {i} returned {body:?}, expected {v:?}")))
    }
}
