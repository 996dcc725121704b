//! The SCS put/get example on plain hyper 1 (no axum): `SessionLayer` in a `tower::ServiceBuilder`
//! over a `service_fn`, served by a hyper-util connection loop.
//!
//! ```sh
//! cargo run --example hyper_server                                   # MemoryStore
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example hyper_server  # RedisStore
//! ```
//!
//! Environment: `ADDR` (default `127.0.0.1:4001`), `REDIS_URL` (any URL fred accepts; without it
//! the in-memory store is used). The cookie's `Secure` flag is off because this serves plain
//! http. Then `curl -c jar -b jar 'localhost:4001/put?message=hi'` and
//! `curl -b jar localhost:4001/get`.
//!
//! Routes (all `GET`):
//! - `/put?message=X` stores X (default `Hello from a session!`), empty body;
//! - `/get` returns it, or an empty body;
//! - `/ping` returns `pong` without touching the session;
//! - anything else is a `404`.
//!
//! The handler finds the session in the request extensions. A store failure answers with the
//! layer's error response (an empty `500`), never with a panic.

use std::{convert::Infallible, env, time::Duration};

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tower_scs::{MemoryStore, RedisStore, Session, SessionLayer};

const DEFAULT_MESSAGE: &str = "Hello from a session!";

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res
}

/// The `message` query parameter, percent-decoded.
fn message_param(req: &Request<Incoming>) -> Option<String> {
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "message")
        .map(|(_, value)| value.into_owned())
}

async fn handler(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET {
        return Ok(respond(StatusCode::METHOD_NOT_ALLOWED, ""));
    }
    if req.uri().path() == "/ping" {
        return Ok(respond(StatusCode::OK, "pong"));
    }
    let Some(session) = req.extensions().get::<Session>().cloned() else {
        return Ok(respond(StatusCode::INTERNAL_SERVER_ERROR, "no session"));
    };
    Ok(match req.uri().path() {
        "/put" => {
            let message = message_param(&req).unwrap_or_else(|| DEFAULT_MESSAGE.into());
            session.insert("message", message);
            respond(StatusCode::OK, "")
        }
        // After a store error the layer replaces this response with its error response.
        "/get" => match session.get::<String>("message").await {
            Ok(message) => respond(StatusCode::OK, message.unwrap_or_default()),
            Err(_) => respond(StatusCode::INTERNAL_SERVER_ERROR, ""),
        },
        _ => respond(StatusCode::NOT_FOUND, ""),
    })
}

#[tokio::main]
async fn main() {
    let addr = env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:4001".into());
    let layer = match env::var("REDIS_URL") {
        Ok(url) => match RedisStore::from_url(&url).await {
            Ok(store) => {
                println!(
                    "store: RedisStore (REDIS_URL), key prefix {}",
                    store.prefix()
                );
                SessionLayer::new(store)
            }
            Err(e) => {
                eprintln!("cannot use REDIS_URL: {e}");
                std::process::exit(1);
            }
        },
        Err(_) => {
            println!("store: MemoryStore (set REDIS_URL to use Redis)");
            SessionLayer::new(MemoryStore::new())
        }
    };
    let service = tower::ServiceBuilder::new()
        .layer(layer.secure(false))
        .service_fn(handler);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on http://{addr}");

    // HTTP/1.1 and HTTP/2; on Ctrl-C, stop accepting and let open connections finish.
    let server = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    eprintln!("accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let connection = server.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("connection error: {e}");
            }
        });
    }
    graceful.shutdown().await;
}
