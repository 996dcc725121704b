//! Redis over TLS (the `tls` feature): a server that speaks TLS only, with certificates the test
//! made (`harness::tls`). The behaviour suite runs over it as `redis_tls::*` (`both_stores!`);
//! here, what a client that does not trust the server's certificate gets: a clear error, soon,
//! never a hang and never a plain-text fallback; mutual TLS with a client certificate; and the
//! local cache's known limit over TLS.

use fred::prelude::Config;
use http::StatusCode;
use tower_scs::SessionLayer;

use crate::harness::{
    Client, RedisServer, app, assert_refused, cache_refused,
    redis::{connect, connect_on},
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

/// A known limit: the local cache's subscriber is a plain socket of ours (not fred's, see
/// `src/redis/cache/socket.rs`), which cannot speak TLS. Over TLS its tracking never comes on,
/// it says so, and every read goes to Redis, right.
#[tokio::test]
async fn the_local_cache_over_tls_stays_off_says_so_and_reads_stay_right() {
    let server = RedisServer::start_tls().await;
    // Redis drops the connection on a first byte that is no TLS handshake.
    cache_refused(&server, "error=IO Error: ").await;
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
