//! Observability (issue 14): the `tracing` spans around loads and commits, captured from a real
//! subscriber, hold what they promise and never a token; the `metrics` counters and histograms,
//! read from a real Prometheus recorder, move by exactly what a create, load, write, renew and
//! destroy do, on every store.
//!
//! Both capture per thread (`tracing::subscriber::set_default`, `metrics`'s local recorder):
//! the requests run on the test's own thread (the router is called in place, never spawned),
//! so tests running side by side in one process do not see each other's output.

use http::StatusCode;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::fmt::format::FmtSpan;

use crate::{
    both_stores,
    harness::{Backend, Captured, Client, hashed},
};

/// What a client's session goes through, each step a request: create, load, write, renew,
/// destroy, then a load with Redis stopped. Returns every token it was given.
async fn lifecycle(backend: &mut Backend, hash_ids: bool) -> Vec<String> {
    let app = backend.app(|l| l.hash_token_in_store(hash_ids)).await;
    let mut client = Client::new(&app);
    let mut tokens = Vec::new();
    client.get("/put?key=k&value=v").await;
    tokens.extend(client.token.clone());
    assert_eq!(client.get("/get?key=k").await.body, "v");
    client.get("/put?key=k2&value=w").await;
    client.get("/renew").await;
    tokens.extend(client.token.clone());
    client.get("/destroy").await;
    assert_eq!(client.token, None, "destroyed");
    client.get("/put?key=k&value=v").await;
    tokens.extend(client.token.clone());
    backend.break_store();
    let failed = client.get("/get?key=k").await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    tokens
}

/// At TRACE, with span closes shown: the spans are there with their fields, for every step
/// (the Redis store stopped included, and loads the local cache answers), and no token, hashed or not, no store id and no Redis
/// key is anywhere in the output.
#[tokio::test]
async fn tracing_spans_have_their_fields_and_never_a_token() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut tokens = lifecycle(&mut Backend::redis().await, false).await;
    tokens.extend(lifecycle(&mut Backend::redis().await, true).await);
    let uncached = captured.text();
    tokens.extend(lifecycle(&mut Backend::redis_cached().await, false).await);
    let text = captured.text();

    assert_eq!(tokens.len(), 9, "{tokens:?}");
    // A load the local cache answers is a load still, in its span, with no Redis command.
    let cached_load = |t: &str| {
        t.lines().any(|l| {
            l.contains("session_load{")
                && l.contains(r#"outcome="found""#)
                && l.contains("store_calls=1")
                && l.contains("redis_commands=0")
        })
    };
    assert!(!cached_load(&uncached), "{uncached}");
    assert!(cached_load(&text), "no cached load in:\n{text}");
    for needle in [
        "session_load{",
        "session_commit{",
        r#"outcome="found""#,
        r#"outcome="stored""#,
        r#"outcome="cleared""#,
        r#"op="create""#,
        r#"op="update""#,
        r#"op="renew""#,
        r#"op="destroy""#,
        "store_calls=1",
        "store_calls=2",
        "redis_commands=1",
        "redis_commands=3",
        "duration_us=",
        "session error; sending the error response",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    assert!(
        text.contains(r#"outcome="store""#) || text.contains(r#"outcome="timeout""#),
        "the load with Redis stopped is not in the spans:\n{text}"
    );
    for token in &tokens {
        let hash = hashed(token);
        for secret in [token, &hash] {
            let leaks: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(secret.as_str()))
                .collect();
            assert!(
                leaks.is_empty(),
                "{secret} in the output:\n{}",
                leaks.join("\n")
            );
        }
    }
    assert!(!text.contains("scs:session:"), "a Redis key in:\n{text}");
}

/// A Prometheus recorder for the current thread, while the guard lives.
fn recorder() -> (
    metrics_exporter_prometheus::PrometheusRecorder,
    PrometheusHandle,
) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    (recorder, handle)
}

/// The value of the sample `series` (a name, with its labels as rendered) in Prometheus text,
/// 0 when absent.
pub(crate) fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// The sum of the samples of `name` over all its labels.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The counters move by exactly what each step does; the histograms see every store call.
async fn metrics_count_each_step(mut backend: Backend) {
    let (recorder, handle) = recorder();
    let _guard = metrics::set_default_local_recorder(&recorder);
    lifecycle(&mut backend, false).await;
    let text = handle.render();
    let counts = [
        // The /get, the renew's read, the /get with the store down (which failed).
        ("tower_scs_loads_total", 3.0),
        // Create, write, renew, destroy, create.
        ("tower_scs_commits_total", 5.0),
        ("tower_scs_creates_total", 2.0),
        ("tower_scs_renewals_total", 1.0),
        ("tower_scs_destroys_total", 1.0),
        (r#"tower_scs_store_seconds_count{op="load"}"#, 3.0),
        (r#"tower_scs_store_seconds_count{op="commit"}"#, 4.0),
        (r#"tower_scs_store_seconds_count{op="replace"}"#, 1.0),
        (r#"tower_scs_store_seconds_count{op="delete"}"#, 1.0),
        ("tower_scs_session_bytes_count", 2.0),
    ];
    for (series, expected) in counts {
        assert_eq!(sample(&text, series), expected, "{series} in:\n{text}");
    }
    assert_eq!(
        sum(&text, "tower_scs_errors_total"),
        1.0,
        "the one failed load:\n{text}"
    );
    let kind = match backend.redis_server() {
        None => "store",
        Some(_) if text.contains(r#"kind="timeout""#) => "timeout",
        Some(_) => "store",
    };
    let error = format!(r#"tower_scs_errors_total{{kind="{kind}",op="load"}}"#);
    assert_eq!(sample(&text, &error), 1.0, "{error} in:\n{text}");
    let (hits, misses) = (
        sample(&text, "tower_scs_cache_hits_total"),
        sample(&text, "tower_scs_cache_misses_total"),
    );
    match backend.cache {
        // Each load asked the cache first.
        Some(_) => assert_eq!(hits + misses, 3.0, "{text}"),
        None => assert_eq!((hits, misses), (0.0, 0.0), "{text}"),
    }
}

both_stores!(metrics_count_each_step);

/// A write the session refuses (over the size limit) is one error, `too_large` on `commit`,
/// and no commit: nothing went to the store.
#[tokio::test]
async fn a_refused_write_counts_one_error_and_no_commit() {
    let (recorder, handle) = recorder();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let backend = Backend::memory();
    let app = backend.app(|l| l.max_session_bytes(Some(8))).await;
    let refused = Client::new(&app)
        .get("/put?key=k&value=far-too-long-for-eight-bytes")
        .await;
    assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
    let text = handle.render();
    let too_large = r#"tower_scs_errors_total{kind="too_large",op="commit"}"#;
    assert_eq!(sample(&text, too_large), 1.0, "{text}");
    assert_eq!(sum(&text, "tower_scs_errors_total"), 1.0, "{text}");
    assert_eq!(sample(&text, "tower_scs_commits_total"), 0.0, "{text}");
    assert_eq!(sample(&text, "tower_scs_creates_total"), 0.0, "{text}");
}
