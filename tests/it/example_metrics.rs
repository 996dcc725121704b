//! The `put_get` example's `METRICS=1`: the layer's metrics in the Prometheus text format at
//! `/metrics`, counting what the requests did; without it there is no `/metrics`.

use http::{StatusCode, header};

use crate::{
    example_put_get::run_to_exit,
    harness::{
        RedisServer,
        example::{Example, get, http_client, token_of},
    },
    observability::sample,
};

/// A put, a get, a renew and a destroy, on Redis, then a scrape: each counter says what they
/// did, and the scrape itself (outside the session layer) moves none.
#[tokio::test]
async fn metrics_on_serve_prometheus_text_that_counts_the_requests() {
    let redis = RedisServer::start().await;
    let example = Example::on_redis_with("put_get", &redis, &[("METRICS", "1")]);
    assert!(
        example
            .stdout()
            .contains("metrics: Prometheus text at /metrics")
    );
    let (http, a) = (http_client(), example.addr.as_str());

    let put = get(&http, a, "/put?message=hi", None).await;
    let token = token_of(put.set_cookie.as_deref().expect("a session cookie"));
    assert_eq!(get(&http, a, "/get", Some(&token)).await.body, "hi");
    let renewed = get(&http, a, "/renew", Some(&token)).await;
    let token = token_of(renewed.set_cookie.as_deref().expect("a renewed cookie"));
    get(&http, a, "/destroy", Some(&token)).await;

    for scrape in 0..2 {
        let metrics = get(&http, a, "/metrics", None).await;
        assert_eq!(metrics.status, StatusCode::OK);
        assert!(metrics.set_cookie.is_none(), "a scrape touches no session");
        assert_eq!(
            metrics.headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4"
        );
        let text = metrics.body;
        let counts = [
            // The get's and the renew's.
            ("tower_scs_loads_total", 2.0),
            // The put, the renew, the destroy.
            ("tower_scs_commits_total", 3.0),
            ("tower_scs_creates_total", 1.0),
            ("tower_scs_renewals_total", 1.0),
            ("tower_scs_destroys_total", 1.0),
            ("tower_scs_session_bytes_count", 2.0),
            (r#"tower_scs_store_seconds_count{op="load"}"#, 2.0),
            (r#"tower_scs_store_seconds_count{op="commit"}"#, 2.0),
        ];
        for (series, expected) in counts {
            assert_eq!(
                sample(&text, series),
                expected,
                "scrape {scrape}: {series} in:\n{text}"
            );
        }
        assert!(
            text.contains("# TYPE tower_scs_loads_total counter"),
            "{text}"
        );
        let help = "# HELP tower_scs_loads_total Session loads from the store.";
        assert!(text.contains(help), "{text}");
        assert!(!text.contains("tower_scs_errors_total"), "{text}");
        assert!(!text.contains(&token), "{text}");
    }
}

#[tokio::test]
async fn without_metrics_there_is_no_metrics_route() {
    let example = Example::start("put_get", &[]);
    let http = http_client();
    get(&http, &example.addr, "/put", None).await;
    let metrics = get(&http, &example.addr, "/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::NOT_FOUND);
    assert!(
        !example.stdout().contains("metrics:"),
        "{}",
        example.stdout()
    );
}

#[test]
fn metrics_takes_1_or_0_and_refuses_anything_else() {
    for value in ["yes", "true", "2", ""] {
        let (code, stderr) = run_to_exit(&[("METRICS", value)]);
        assert_eq!(code, Some(2), "METRICS={value:?}: {stderr}");
        let says = format!("METRICS={value:?} is not valid: expected 1, or 0 for off");
        assert!(stderr.starts_with(&says), "{stderr}");
        assert!(stderr.contains("[METRICS=1]"), "{stderr}");
    }
    for value in ["0", "1"] {
        // Exit code 1 from the unbindable address: the setting was taken.
        let (code, stderr) = run_to_exit(&[("METRICS", value)]);
        assert_eq!(code, Some(1), "METRICS={value:?}: {stderr}");
    }
}
