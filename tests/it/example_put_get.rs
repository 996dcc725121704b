//! Drives the `put_get` example binary over TCP: its routes on Redis, and two server processes
//! sharing one Redis without losing concurrent writes; and checks how it takes its settings.
//!
//! `cargo test` (and `cargo nextest run`) build the examples before running tests; the binary is
//! found next to this test's own executable (see `crate::harness::example`).

use std::process::{Command, Stdio};

use http::StatusCode;
use tokio::task::JoinSet;

use crate::harness::{
    RedisServer,
    example::{self, Example, get, http_client, token_of},
};

#[tokio::test]
async fn routes_answer_as_scs_on_redis() {
    let redis = RedisServer::start().await;
    let example = Example::on_redis("put_get", &redis);
    let http = http_client();
    let a = example.addr.as_str();

    let ping = get(&http, a, "/ping", None).await;
    assert_eq!((ping.status, ping.body.as_str()), (StatusCode::OK, "pong"));
    assert!(ping.set_cookie.is_none());

    let put = get(&http, a, "/put", None).await;
    assert_eq!((put.status, put.body.as_str()), (StatusCode::OK, ""));
    let token = token_of(put.set_cookie.as_deref().expect("a session cookie"));
    let t = Some(token.as_str());
    let got = get(&http, a, "/get", t).await;
    assert_eq!(got.body, "Hello from a session!");
    assert!(got.set_cookie.is_none());

    get(&http, a, "/put?message=X&key=K", t).await;
    assert_eq!(get(&http, a, "/pop?key=K", t).await.body, "X");
    assert_eq!(get(&http, a, "/get?key=K", t).await.body, "");

    let renewed = get(&http, a, "/renew", t).await;
    let new = token_of(renewed.set_cookie.as_deref().expect("renew sends a cookie"));
    assert_ne!(new, token);
    assert_eq!(
        get(&http, a, "/get", t).await.body,
        "",
        "old token still works"
    );
    let n = Some(new.as_str());
    assert_eq!(get(&http, a, "/get", n).await.body, "Hello from a session!");

    let remember = get(&http, a, "/remember?on=true", n).await;
    assert!(remember.set_cookie.unwrap().contains("Max-Age="));

    let destroyed = get(&http, a, "/destroy", n).await;
    let cookie = destroyed.set_cookie.expect("an expiring cookie");
    assert!(cookie.starts_with("session=;"), "{cookie}");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    assert_eq!(get(&http, a, "/get", n).await.body, "");
    // No session is left; the renewed token's marker (pointing at the destroyed session) lives
    // out its few seconds.
    let inspector = redis.inspector();
    assert!(inspector.sessions().await.is_empty());
    for key in inspector.keys().await {
        assert!(inspector.hgetall(&key).await.contains_key("moved"), "{key}");
    }
}

/// 50 sessions × 8 concurrent writers of different keys, the writers of each session spread
/// over two example processes that share one Redis: nothing lost.
#[tokio::test]
async fn two_processes_sharing_redis_lose_no_concurrent_write() {
    let redis = RedisServer::start().await;
    let servers = [
        Example::on_redis("put_get", &redis),
        Example::on_redis("put_get", &redis),
    ];
    let http = http_client();
    let mut tokens = Vec::new();
    for s in 0..50 {
        let res = get(&http, &servers[s % 2].addr, "/put?key=base&message=0", None).await;
        tokens.push(token_of(&res.set_cookie.expect("a session cookie")));
    }
    let mut set = JoinSet::new();
    for token in &tokens {
        for w in 0..8 {
            let (http, addr, token) = (http.clone(), servers[w % 2].addr.clone(), token.clone());
            set.spawn(async move {
                let path = format!("/put?key=k{w}&message=v{w}");
                let res = get(&http, &addr, &path, Some(&token)).await;
                assert_eq!(res.status, StatusCode::OK);
                assert!(
                    res.set_cookie.is_some_and(|c| token_of(&c) == token),
                    "the write moved to another session"
                );
            });
        }
    }
    while let Some(done) = set.join_next().await {
        done.expect("writer task");
    }
    let mut lost = 0;
    for (s, token) in tokens.iter().enumerate() {
        for w in 0..8 {
            let addr = &servers[(s + w) % 2].addr;
            let got = get(&http, addr, &format!("/get?key=k{w}"), Some(token)).await;
            lost += usize::from(got.body != format!("v{w}"));
        }
    }
    assert_eq!(lost, 0, "{lost} of 400 writes lost");
}

/// An `ADDR` no listener can bind (the port does not parse; no DNS lookup is made): an example
/// that accepted its settings exits at once as well ("cannot listen", code 1), never hangs.
const UNBINDABLE: &str = "127.0.0.1:99999";

/// Runs the `put_get` example to its exit with `env` (and `ADDR` = [`UNBINDABLE`]; the other
/// variables it reads unset): its exit code and stderr.
fn run_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let bin = example::binary("put_get");
    let mut command = Command::new(&bin);
    for var in ["REDIS_URL", "LIFETIME_SECS", "IDLE_TIMEOUT_SECS"] {
        command.env_remove(var);
    }
    let output = command
        .envs(env.iter().copied())
        .env("ADDR", UNBINDABLE)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} (cargo build --examples): {e}", bin.display()));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[test]
fn out_of_range_durations_exit_with_a_usage_message() {
    let lifetimes = ["inf", "-inf", "NaN", "1e20", "-1", "abc", "", "0", "0.0009"];
    let idle_timeouts = ["inf", "1e20", "-1", "abc", "0.0009", "-0.5"];
    let cases = (lifetimes.iter().map(|v| ("LIFETIME_SECS", *v)))
        .chain(idle_timeouts.iter().map(|v| ("IDLE_TIMEOUT_SECS", *v)));
    for (name, value) in cases {
        let (code, stderr) = run_to_exit(&[(name, value)]);
        assert_eq!(code, Some(2), "{name}={value:?}: {stderr}");
        let says = format!("{name}={value:?} is not valid: expected seconds from 0.001 to 1e19");
        assert!(stderr.starts_with(&says), "{name}={value:?}: {stderr}");
        assert!(stderr.contains("\nusage: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn edge_durations_and_an_idle_timeout_of_zero_are_taken() {
    let cases = [
        [("LIFETIME_SECS", "0.001"), ("IDLE_TIMEOUT_SECS", "0.001")],
        [("LIFETIME_SECS", "1e19"), ("IDLE_TIMEOUT_SECS", "1e19")],
        [("LIFETIME_SECS", "60"), ("IDLE_TIMEOUT_SECS", "0")],
    ];
    for env in cases {
        // Exit code 1 from the unbindable address: the settings were taken.
        let (code, stderr) = run_to_exit(&env);
        assert_eq!(code, Some(1), "{env:?}: {stderr}");
        assert!(stderr.starts_with("cannot listen on "), "{env:?}: {stderr}");
    }
}

/// `IDLE_TIMEOUT_SECS=0` is no idle timeout: the cookie lives the whole lifetime, where an idle
/// timeout of 1 s makes it live about a second (`Max-Age` is rounded up).
#[tokio::test]
async fn an_idle_timeout_of_zero_is_none() {
    let http = http_client();
    for (idle, max_age) in [("0", 3599..=3601), ("1", 1..=2)] {
        let env = [("LIFETIME_SECS", "3600"), ("IDLE_TIMEOUT_SECS", idle)];
        let example = Example::start("put_get", &env);
        let put = get(&http, &example.addr, "/put", None).await;
        let cookie = put.set_cookie.expect("a session cookie");
        let secs: u64 = (cookie.split("; ").find_map(|a| a.strip_prefix("Max-Age=")))
            .and_then(|secs| secs.parse().ok())
            .unwrap_or_else(|| panic!("no Max-Age: {cookie}"));
        assert!(
            max_age.contains(&secs),
            "IDLE_TIMEOUT_SECS={idle}: {cookie}"
        );
    }
}
