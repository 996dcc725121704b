//! Soak: a million requests through the `put_get` example's app on Redis, watching the server's
//! memory.
//!
//! ```sh
//! cargo bench --bench soak                       # 1,000,000 requests
//! SOAK_REQUESTS=200000 cargo bench --bench soak  # shorter
//! ```
//!
//! It starts its own `redis-server` on a free loopback port, serves the example's routes in a
//! child process (this binary re-executed with `--serve`), and drives it with 64 keep-alive
//! clients: 10% `/put`, 90% `/get` checked against the client's last write, and every client
//! starts a new session (drops its cookie) every 500 requests, so sessions keep being created.
//! It prints the server's resident memory (VmRSS) every tenth of the run.

#[allow(dead_code)]
#[path = "../examples/put_get.rs"]
mod put_get;

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
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
use tower_scs::{RedisStore, SessionLayer};

const USERS: u64 = 64;
const NEW_SESSION_EVERY: u64 = 500;

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

fn wait_for(addr: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{addr} never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server not found on PATH: install it (apt-get install redis-server)");
    wait_for(&format!("127.0.0.1:{port}"));
    (Proc(child), port)
}

/// Kilobytes of resident memory of `pid`.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn redis_info(port: u16, field: &str) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "memory"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

fn redis_dbsize(port: u16) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "dbsize"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The server side: the example's app on Redis, until killed.
async fn serve(redis_url: &str, addr: &str) {
    let store = RedisStore::from_url(redis_url)
        .await
        .expect("connect Redis");
    let layer = SessionLayer::new(store).secure(false);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    axum::serve(listener, put_get::app(layer))
        .await
        .expect("serve");
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One user: its own cookie, a put every tenth request, reads checked against its last write.
async fn user(
    id: u64,
    http: HttpClient,
    base: String,
    next: Arc<AtomicU64>,
    total: u64,
    failures: Arc<AtomicU64>,
) {
    let (mut cookie, mut last): (Option<String>, Option<String>) = (None, None);
    let mut mine = 0u64;
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return;
        }
        mine += 1;
        if mine % NEW_SESSION_EVERY == 0 {
            cookie = None;
            last = None;
        }
        let write = last.is_none() || mine % 10 == 0;
        let value = format!("u{id}-{mine}");
        let path = if write {
            format!("/put?message={value}")
        } else {
            "/get".to_owned()
        };
        let mut req = Request::get(format!("{base}{path}"));
        if let Some(c) = &cookie {
            req = req.header(header::COOKIE, c.as_str());
        }
        let res = match http.request(req.body(Empty::new()).unwrap()).await {
            Ok(res) => res,
            Err(_) => {
                failures.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let ok = res.status() == StatusCode::OK;
        if let Some(set) = res.headers().get(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            cookie = Some(pair);
        }
        let body = res.into_body().collect().await.map(|b| b.to_bytes());
        match (ok, write, body) {
            (true, true, Ok(_)) => last = Some(value),
            (true, false, Ok(body)) if last.as_deref().map(str::as_bytes) == Some(&body[..]) => {}
            _ => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        serve(&args[i + 1], &args[i + 2]).await;
        return;
    }
    let total: u64 = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (_redis, redis_port) = start_redis();
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Proc(
        Command::new(std::env::current_exe().unwrap())
            .args(["--serve", &redis_url, &addr])
            .spawn()
            .expect("start the server process"),
    );
    wait_for(&addr);
    let pid = server.0.id();
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..USERS {
        let base = format!("http://{addr}");
        let (http, next, failures) = (http.clone(), next.clone(), failures.clone());
        tasks.spawn(user(id, http, base, next, total, failures));
    }
    println!("| requests | elapsed | server VmRSS | Redis used_memory | Redis keys |");
    println!("|---:|---:|---:|---:|---:|");
    let step = total / 10;
    let mut mark = 0;
    let mut samples = Vec::new();
    while !tasks.is_empty() {
        tokio::select! {
            _ = tasks.join_next() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let done = next.load(Ordering::Relaxed).min(total);
        if done >= mark {
            let rss = rss_kb(pid);
            samples.push(rss);
            println!(
                "| {done} | {:.1} s | {:.1} MiB | {} | {} |",
                start.elapsed().as_secs_f64(),
                rss as f64 / 1024.0,
                redis_info(redis_port, "used_memory_human"),
                redis_dbsize(redis_port),
            );
            mark += step.max(1);
        }
    }
    let elapsed = start.elapsed();
    let rss = rss_kb(pid);
    println!(
        "| {total} (end) | {:.1} s | {:.1} MiB | {} | {} |",
        elapsed.as_secs_f64(),
        rss as f64 / 1024.0,
        redis_info(redis_port, "used_memory_human"),
        redis_dbsize(redis_port),
    );
    let warm = samples.get(1).copied().unwrap_or(rss);
    println!(
        "\n{total} requests in {:.1} s ({:.0} req/s), {} failed checks; server VmRSS {:.1} MiB \
         after the first tenth, {:.1} MiB at the end ({:+.1} MiB)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        failures.load(Ordering::Relaxed),
        warm as f64 / 1024.0,
        rss as f64 / 1024.0,
        (rss as f64 - warm as f64) / 1024.0,
    );
}
