//! Redis over TLS (the `tls` feature): a server that speaks TLS only, with certificates the test
//! made (`harness::tls`). The behaviour suite runs over it as `redis_tls::*` (`both_stores!`);
//! here, what a client that does not trust the server's certificate gets: a clear error, soon,
//! never a hang and never a plain-text fallback; mutual TLS with a client certificate; and the
//! local cache over TLS.

use fred::prelude::Config;
use http::StatusCode;
use tower_scs::SessionLayer;

use crate::harness::{
    Client, RedisServer, app, assert_refused, cached,
    redis::{connect, connect_on, info_field},
    tls,
};

/// Whether an error's text says the server's certificate was issued by a CA the client does
/// not trust (rustls: `InvalidCertificate(UnknownIssuer)`, as fred and `Error::Store` show it).
fn names_the_certificate(error: &str) -> bool {
    error.contains("InvalidCertificate(UnknownIssuer)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_refused_with_a_clear_error() {
    let server = RedisServer::start_tls().await;
    let certs = server.certs().expect("a TLS server");
    let mut wrong = server.config();
    wrong.tls = Some(tls::trusting(&certs.other_ca_file()));

    let e = connect_on(wrong.clone())
        .await
        .expect_err("a client trusting another CA connects");
    assert!(names_the_certificate(&e.to_string()), "{e}");
    assert_refused(wrong, names_the_certificate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_only_the_system_roots_is_refused() {
    let server = RedisServer::start_tls().await;
    // The system's roots do not include the test CA.
    let config = Config::from_url(&server.url()).expect("a rediss:// URL");
    assert!(config.tls.is_some(), "rediss:// turns TLS on");
    assert_refused(config, names_the_certificate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_server_has_no_plain_text_port() {
    let server = RedisServer::start_tls().await;
    assert!(
        connect(server.port()).await.is_err(),
        "plain text on the TLS port"
    );
    // The trusted config works.
    let client = connect_on(server.config())
        .await
        .expect("TLS with the test CA");
    let pong: String = fred::interfaces::ClientLike::ping(&client, None)
        .await
        .expect("PING over TLS");
    assert_eq!(pong, "PONG");
}

/// The local cache over TLS (its subscriber speaks TLS too): a repeated read is served from
/// memory, and each write through another store is seen by the very next read here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cache_over_tls_hits_and_hears_every_write() {
    let server = RedisServer::start_tls().await;
    let here = app(SessionLayer::new(cached(server.store().await, 100).await));
    let there = app(SessionLayer::new(cached(server.store().await, 100).await));
    let mut writer = Client::new(&there);
    writer.get("/put?key=k&value=0").await;
    let mut reader = Client::with_token(&here, writer.token.as_deref().expect("a session"));
    assert_eq!(reader.get("/get?key=k").await.body, "0");
    let loads = hgetalls(&server).await;
    assert_eq!(reader.get("/get?key=k").await.body, "0");
    assert_eq!(
        hgetalls(&server).await,
        loads,
        "a hit loads nothing from Redis"
    );
    for i in 1..=50 {
        writer.get(&format!("/put?key=k&value={i}")).await;
        assert_eq!(reader.get("/get?key=k").await.body, i.to_string());
    }
}

/// How many `HGETALL`s the server has run.
async fn hgetalls(server: &RedisServer) -> u64 {
    let stats = server.inspector().command("INFO", &["commandstats"]).await;
    let stats = stats.as_str().expect("INFO text").into_owned();
    let calls = info_field(&stats, "cmdstat_hgetall").unwrap_or("calls=0,");
    let calls = calls
        .strip_prefix("calls=")
        .and_then(|c| c.split(',').next());
    calls
        .and_then(|c| c.parse().ok())
        .expect("cmdstat_hgetall calls")
}

/// Mutual TLS (`--tls-auth-clients yes`), as `RedisStore::from_config`'s rustdoc shows it:
/// with the client certificate the store serves sessions; without one it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_with_the_client_certificate_and_refuses_without() {
    let server = RedisServer::start_mutual_tls().await;
    let app = app(SessionLayer::new(server.store().await));
    let mut c = Client::new(&app);
    assert_eq!(c.get("/put?key=k&value=v").await.status, StatusCode::OK);
    assert_eq!(c.get("/get?key=k").await.body, "v");

    let certs = server.certs().expect("a TLS server");
    let mut anonymous = server.config();
    anonymous.tls = Some(tls::trusting(&certs.ca_file()));
    let required = |e: &str| e.contains("AlertReceived(CertificateRequired)");
    let e = (connect_on(anonymous.clone()).await).expect_err("a client without a certificate");
    assert!(required(&e.to_string()), "{e}");
    assert_refused(anonymous, required).await;
}
