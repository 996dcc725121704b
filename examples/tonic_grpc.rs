//! A tonic gRPC server whose calls share a session: `SessionLayer` on a `tonic` server.
//!
//! ```sh
//! cargo run --example tonic_grpc                                   # MemoryStore
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example tonic_grpc  # RedisStore
//! ```
//!
//! Environment: `ADDR` (default `127.0.0.1:50051`), `REDIS_URL` (any URL fred accepts; without
//! it the in-memory store is used). The server speaks plaintext HTTP/2 (h2c).
//!
//! The session token travels in gRPC metadata, which is HTTP/2 headers, through the layer's
//! header carrier (`Carrier::header("x-session-token")`), not a cookie: a client sends
//! `x-session-token: <token>` as request metadata, and finds `x-session-token: <token>` in the
//! response metadata (the initial headers) of the call that created or changed its session
//! (an empty value would mean the session is gone). A call whose session did not change sends
//! nothing back; the client keeps the token it has.
//!
//! The service, `counter.Counter`, has no `.proto` file in this crate (the crate builds without
//! `protoc`): its messages are `prost` derives and the service is written by hand as
//! `tonic-build` would generate it. It matches this definition, which `grpcurl` can use:
//!
//! ```proto
//! syntax = "proto3";
//! package counter;
//!
//! service Counter {
//!   rpc Put(PutRequest) returns (Empty);    // stores value under key in the session
//!   rpc Get(GetRequest) returns (GetReply); // the value under key (absent if none)
//!   rpc Incr(Empty) returns (IncrReply);    // adds 1 to the session's counter
//! }
//! message PutRequest { string key = 1; string value = 2; }
//! message GetRequest { string key = 1; }
//! message GetReply { optional string value = 1; }
//! message IncrReply { int64 count = 1; }
//! message Empty {}
//! ```
//!
//! ```sh
//! grpcurl -plaintext -proto counter.proto -v -d '{"key":"a","value":"b"}' \
//!     127.0.0.1:50051 counter.Counter/Put            # prints x-session-token: <token>
//! grpcurl -plaintext -proto counter.proto -H 'x-session-token: <token>' -d '{"key":"a"}' \
//!     127.0.0.1:50051 counter.Counter/Get
//! ```
//!
//! `Incr` reads the counter and writes it back: two concurrent `Incr` calls of one session may
//! both return the same count (the last commit wins, see the README). A store failure answers
//! the call with `UNAVAILABLE` (a trailers-only gRPC response, built by the layer's
//! `error_handler`), never with a panic.

use std::{
    convert::Infallible,
    env,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{
    Request, Response, Status,
    body::Body,
    server::{Grpc, NamedService},
    transport::{Server, server::TcpIncoming},
};
use tonic_prost::ProstCodec;
use tower::Service;
use tower_scs::{Carrier, Error, MemoryStore, RedisStore, Session, SessionLayer};

/// The messages of `counter.proto`, as `prost-build` would generate them.
mod proto {
    /// `Put` request: store `value` under `key`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `Get` request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetRequest {
        #[prost(string, tag = "1")]
        pub key: String,
    }

    /// `Get` reply: the value, absent when the session holds none under the key.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetReply {
        #[prost(string, optional, tag = "1")]
        pub value: Option<String>,
    }

    /// `Incr` reply: the session's counter after the increment.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IncrReply {
        #[prost(int64, tag = "1")]
        pub count: i64,
    }
}

use proto::{GetReply, GetRequest, IncrReply, PutRequest};

/// The metadata entry (HTTP/2 header) the session token travels in, both ways.
const TOKEN_HEADER: &str = "x-session-token";

/// The session key `Incr` counts under.
const COUNT_KEY: &str = "count";

/// The session the layer put in the request's extensions (tonic keeps the HTTP request's
/// extensions in `tonic::Request`).
fn session_of<T>(req: &Request<T>) -> Result<Session, Status> {
    req.extensions()
        .get::<Session>()
        .cloned()
        .ok_or_else(|| Status::internal("no session: the service is not behind a SessionLayer"))
}

/// A session error as a gRPC status. (After a store error the layer answers with its own error
/// response anyway, see `main`.)
fn status(e: Error) -> Status {
    match e {
        Error::Store(_) | Error::Timeout(_) => Status::unavailable("session store unavailable"),
        Error::Value { .. } => Status::failed_precondition(e.to_string()),
        _ => Status::internal("session error"),
    }
}

/// A stored value as text: strings as they are, anything else (the counter) as JSON.
fn text(value: serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

async fn put(req: Request<PutRequest>) -> Result<Response<()>, Status> {
    let session = session_of(&req)?;
    let PutRequest { key, value } = req.into_inner();
    session.insert(key, value);
    Ok(Response::new(()))
}

async fn get(req: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
    let session = session_of(&req)?;
    let value = session.get(&req.get_ref().key).await.map_err(status)?;
    Ok(Response::new(GetReply {
        value: value.map(text),
    }))
}

async fn incr(req: Request<()>) -> Result<Response<IncrReply>, Status> {
    let session = session_of(&req)?;
    let count = session.get::<i64>(COUNT_KEY).await.map_err(status)?;
    let count = count.unwrap_or(0) + 1;
    session.insert(COUNT_KEY, count);
    Ok(Response::new(IncrReply { count }))
}

/// Decodes one request message, runs `handler`, encodes its reply: what generated code does for
/// a unary method.
async fn unary<Req, Reply, F, Fut>(
    req: http::Request<Body>,
    handler: F,
) -> Result<http::Response<Body>, Infallible>
where
    Req: prost::Message + Default + Send + 'static,
    Reply: prost::Message + Send + 'static,
    F: FnMut(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Reply>, Status>>,
{
    let mut grpc = Grpc::new(ProstCodec::<Reply, Req>::default());
    Ok(grpc.unary(tower::service_fn(handler), req).await)
}

/// The `counter.Counter` service, written by hand as `tonic-build` would generate it.
#[derive(Clone, Copy, Debug, Default)]
struct CounterServer;

impl NamedService for CounterServer {
    const NAME: &'static str = "counter.Counter";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl Service<http::Request<Body>> for CounterServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match req.uri().path() {
            "/counter.Counter/Put" => Box::pin(unary(req, put)),
            "/counter.Counter/Get" => Box::pin(unary(req, get)),
            "/counter.Counter/Incr" => Box::pin(unary(req, incr)),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

#[tokio::main]
async fn main() {
    let addr = env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
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
    // The layer's default error response is an HTTP 500, which gRPC clients report as UNKNOWN;
    // answer with a proper gRPC status instead (HTTP 200, `grpc-status` in the headers).
    // The token in its own metadata entry, in and out: gRPC clients keep no cookie jar.
    let layer = layer.carriers([Carrier::header(TOKEN_HEADER)]);
    let layer = layer.error_handler(|e| {
        eprintln!("session error: {e}");
        match e {
            Error::Store(_) | Error::Timeout(_) => {
                Status::unavailable("session store unavailable").into_http()
            }
            _ => Status::internal("session error").into_http(),
        }
    });
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on http://{addr} (gRPC, service counter.Counter)");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = Server::builder()
        .layer(layer)
        .add_service(CounterServer)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
    {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
