//! Drives the `tonic_grpc` example binary over TCP with a tonic client: the session token
//! travels in gRPC metadata (`x-session-token`, both ways; no cookie anywhere), sessions live in
//! a private Redis, and a store failure is a gRPC status, not a crash.

use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use tonic::{Code, Status, client::Grpc, transport::Channel};
use tonic_prost::ProstCodec;

use crate::harness::{RedisServer, assert_valid_token, example::Example};

/// The example's messages, as a client generated from the same `counter.proto` would have them
/// (see the doc comment of `examples/tonic_grpc.rs`).
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetRequest {
        #[prost(string, tag = "1")]
        pub key: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetReply {
        #[prost(string, optional, tag = "1")]
        pub value: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IncrReply {
        #[prost(int64, tag = "1")]
        pub count: i64,
    }
}

use proto::{GetReply, GetRequest, IncrReply, PutRequest};

/// The metadata entry the example carries the token in, both ways.
const TOKEN: &str = "x-session-token";

/// A `counter.Counter` client that keeps its session token: it sends `x-session-token: <token>`
/// as request metadata, and takes the `x-session-token` of the response metadata.
struct Client {
    grpc: Grpc<Channel>,
    token: Option<String>,
    /// The `x-session-token` of the last successful call, if it had one.
    answered: Option<String>,
    /// Send the token as `cookie: session=<token>` instead, to show that a cookie is ignored.
    as_cookie: bool,
}

impl Client {
    /// A client on its own HTTP/2 connection, without a token.
    async fn connect(example: &Example) -> Self {
        let channel = Channel::from_shared(format!("http://{}", example.addr))
            .expect("endpoint URI")
            .connect()
            .await
            .expect("connect to the example");
        Client {
            grpc: Grpc::new(channel),
            token: None,
            answered: None,
            as_cookie: false,
        }
    }

    async fn call<Req, Reply>(
        &mut self,
        method: &'static str,
        message: Req,
    ) -> Result<Reply, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Reply: prost::Message + Default + Send + Sync + 'static,
    {
        self.answered = None;
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            let (name, value) = if self.as_cookie {
                ("cookie", format!("session={token}"))
            } else {
                (TOKEN, token.clone())
            };
            let value = value.parse().expect("ASCII metadata");
            request.metadata_mut().insert(name, value);
        }
        self.grpc.ready().await.expect("channel ready");
        let path = PathAndQuery::from_static(method);
        let response = self
            .grpc
            .unary(request, path, ProstCodec::<Req, Reply>::default())
            .await?;
        let metadata = response.metadata();
        assert!(metadata.get("set-cookie").is_none(), "{metadata:?}");
        self.answered = (metadata.get(TOKEN)).map(|v| v.to_str().expect("ASCII token").to_owned());
        if let Some(token) = &self.answered {
            self.token = Some(token.clone()).filter(|t| !t.is_empty());
        }
        Ok(response.into_inner())
    }

    async fn put(&mut self, key: &str, value: &str) -> Result<(), Status> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.call("/counter.Counter/Put", PutRequest { key, value })
            .await
    }

    async fn get(&mut self, key: &str) -> Result<Option<String>, Status> {
        let key = key.to_owned();
        let reply: GetReply = self
            .call("/counter.Counter/Get", GetRequest { key })
            .await?;
        Ok(reply.value)
    }

    async fn incr(&mut self) -> Result<i64, Status> {
        let reply: IncrReply = self.call("/counter.Counter/Incr", ()).await?;
        Ok(reply.count)
    }
}

#[tokio::test]
async fn the_token_in_metadata_carries_the_session_across_calls() {
    let redis = RedisServer::start().await;
    let example = Example::on_redis("tonic_grpc", &redis);
    let mut alice = Client::connect(&example).await;

    alice.put("greeting", "hello").await.unwrap();
    let token = (alice.answered.clone()).expect("Put sends x-session-token metadata");
    assert_valid_token(&token);
    assert_eq!(alice.token.as_deref(), Some(token.as_str()));
    let stored = redis
        .inspector()
        .hgetall(&format!("scs:session:{token}"))
        .await;
    assert_eq!(stored["v:greeting"], r#""hello""#);

    assert_eq!(
        alice.get("greeting").await.unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(alice.answered, None, "a read-only call sends no token");
    assert_eq!(alice.get("missing").await.unwrap(), None);

    // The token as a cookie is no session: the cookie is not a carrier here.
    let mut cookie = Client::connect(&example).await;
    (cookie.token, cookie.as_cookie) = (Some(token.clone()), true);
    assert_eq!(cookie.get("greeting").await.unwrap(), None);
    assert_eq!(cookie.answered, None);

    // Another client, without the token, sees nothing of alice's session.
    let mut bob = Client::connect(&example).await;
    assert_eq!(bob.get("greeting").await.unwrap(), None);
    assert_eq!(bob.token, None, "a read of no session creates none");

    // Increments count per session.
    assert_eq!(alice.incr().await.unwrap(), 1);
    assert_eq!(alice.incr().await.unwrap(), 2);
    assert_eq!(bob.incr().await.unwrap(), 1);
    let bob_token = bob.token.clone().expect("Incr creates bob's session");
    assert_ne!(bob_token, token);
    assert_eq!(alice.incr().await.unwrap(), 3);
    assert_eq!(bob.incr().await.unwrap(), 2);
    assert_eq!(alice.token.as_deref(), Some(token.as_str()), "token kept");
    assert_eq!(alice.get("count").await.unwrap().as_deref(), Some("3"));
    assert_eq!(bob.get("greeting").await.unwrap(), None);

    // The same token from a new connection is the same session.
    let mut alice_again = Client::connect(&example).await;
    alice_again.token = Some(token.clone());
    assert_eq!(
        alice_again.get("greeting").await.unwrap().as_deref(),
        Some("hello")
    );

    // A made-up token is not adopted: the write goes into a new session.
    let mut mallory = Client::connect(&example).await;
    mallory.token = Some(crate::harness::made_up_token("mallory"));
    assert_eq!(mallory.incr().await.unwrap(), 1);
    let issued = mallory.token.clone().unwrap();
    assert_ne!(issued, crate::harness::made_up_token("mallory"));
    assert_valid_token(&issued);

    let status = alice
        .call::<(), ()>("/counter.Counter/Nope", ())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_store_failure_is_unavailable_and_the_server_recovers() {
    let mut redis = RedisServer::start().await;
    let mut example = Example::on_redis("tonic_grpc", &redis);
    let mut client = Client::connect(&example).await;
    assert_eq!(client.incr().await.unwrap(), 1);
    let token = client.token.clone().unwrap();

    redis.stop();
    // A read fails (load), and so does a blind write (commit): the layer's error handler turns
    // both into UNAVAILABLE.
    let read = client.get("count").await.unwrap_err();
    assert_eq!(read.code(), Code::Unavailable, "{read:?}");
    let write = client.put("k", "v").await.unwrap_err();
    assert_eq!(write.code(), Code::Unavailable, "{write:?}");
    assert!(
        example.is_running(),
        "the example died: {}",
        example.stderr()
    );
    assert_eq!(client.token.as_deref(), Some(token.as_str()));

    // A new, empty Redis on the same port: the store reconnects, the old session is gone, and
    // the next write starts a new session.
    redis.restart().await;
    let until = Instant::now() + Duration::from_secs(10);
    let count = loop {
        match client.incr().await {
            Ok(count) => break count,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("the store did not recover: {status:?}"),
        }
    };
    assert_eq!(count, 1);
    assert_ne!(client.token.as_deref(), Some(token.as_str()));
}

#[tokio::test]
async fn without_redis_url_the_example_uses_memory() {
    let example = Example::start("tonic_grpc", &[]);
    assert!(
        example.stdout().contains("store: MemoryStore"),
        "{}",
        example.stdout()
    );
    let mut client = Client::connect(&example).await;
    assert_eq!(client.incr().await.unwrap(), 1);
    assert_eq!(client.incr().await.unwrap(), 2);
    assert_eq!(Client::connect(&example).await.incr().await.unwrap(), 1);
}
