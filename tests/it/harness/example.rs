//! An example binary run as a real process, for the tests that drive the examples over TCP.
//!
//! `cargo test` and `cargo nextest run` build the examples before running tests; the binaries
//! are found next to the test's own executable (`target/<profile>/examples/<name>`).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest},
};

use super::redis::free_port;

/// The environment variables the examples read; a test sets the ones it wants, the others are
/// removed so that the developer's own environment does not leak in.
pub const EXAMPLE_VARS: [&str; 9] = [
    "ADDR",
    "REDIS_URL",
    "REDIS_CA_FILE",
    "LIFETIME_SECS",
    "IDLE_TIMEOUT_SECS",
    "SESSION_HEADER",
    "SESSION_SIGNING_KEYS",
    "LOCAL_CACHE",
    "METRICS",
];

/// What the examples print once their listener is bound.
const LISTENING: &str = "listening on ";

/// A running example process, listening on `addr`; killed on drop.
pub struct Example {
    child: Child,
    /// `127.0.0.1:<port>`, the address the example listens on.
    pub addr: String,
    output: Output,
}

impl Example {
    /// Starts the example `name` with `REDIS_URL` pointing at `redis`, and checks that it says
    /// it uses the Redis store.
    pub fn on_redis(name: &str, redis: &super::redis::RedisServer) -> Self {
        Self::on_redis_with(name, redis, &[])
    }

    /// [`Example::on_redis`], with more of the environment.
    pub fn on_redis_with(
        name: &str,
        redis: &super::redis::RedisServer,
        env: &[(&str, &str)],
    ) -> Self {
        let url = redis.store_url();
        let env: Vec<(&str, &str)> = [("REDIS_URL", url.as_str())]
            .into_iter()
            .chain(env.iter().copied())
            .collect();
        let example = Self::start(name, &env);
        assert!(
            example.stdout().contains("store: RedisStore"),
            "{}",
            example.stdout()
        );
        example
    }

    /// Starts the example `name` with `ADDR` set to a free loopback port and the given
    /// environment, and waits until it says it is listening. A start that lost its port to
    /// another process is retried on another port.
    pub fn start(name: &str, env: &[(&str, &str)]) -> Self {
        let bin = binary(name);
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut command = Command::new(&bin);
            for var in EXAMPLE_VARS {
                command.env_remove(var);
            }
            let mut child = command
                .envs(env.iter().copied())
                .env("ADDR", &addr)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn the {name} example: {e}"));
            let output = Output::capture(&mut child);
            let mut example = Example {
                child,
                addr,
                output,
            };
            match example.wait_listening() {
                Ok(()) => return example,
                // The port was taken meanwhile: try another one.
                Err(_) if example.stderr().contains("cannot listen") => {}
                Err(status) => panic!(
                    "the {name} example exited ({status}) before listening on {}\n{}",
                    example.addr,
                    example.output.dump()
                ),
            }
        }
        panic!("the {name} example found no free port in 5 attempts");
    }

    /// Waits for the example's "listening on" line (printed once its listener is bound, so a
    /// connection can only reach this process); `Err` if the process exited first.
    fn wait_listening(&mut self) -> Result<(), ExitStatus> {
        let started = Instant::now();
        loop {
            if self.stdout().contains(LISTENING) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().expect("poll the example process") {
                self.output.finish();
                return Err(status);
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the example did not listen on {} within 10 s\n{}",
                self.addr,
                self.output.dump()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the example printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.output.stdout.lock().unwrap().clone()
    }

    /// Everything the example printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.output.stderr.lock().unwrap().clone()
    }

    /// Whether the process is still running (it did not exit or crash).
    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("poll the example process")
            .is_none()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/examples/<name>`, next to the test executable's `deps` directory; panics
/// with how to build it when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| {
            dir.join("examples")
                .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
        })
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test` or `cargo nextest run`, which build \
         the examples (or run `cargo build --example {name}` first)",
        bin.display()
    );
    bin
}

/// The example's stdout and stderr, read by two threads as the process writes them (so that a
/// chatty process never blocks on a full pipe).
struct Output {
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Output {
    fn capture(child: &mut Child) -> Self {
        let stdout = Arc::<Mutex<String>>::default();
        let stderr = Arc::<Mutex<String>>::default();
        let readers = vec![
            drain(child.stdout.take().expect("piped stdout"), stdout.clone()),
            drain(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        Output {
            stdout,
            stderr,
            readers,
        }
    }

    /// Waits until both streams are read to the end (after the process exited).
    fn finish(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    fn dump(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }
}

fn drain(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut lines = BufReader::new(stream);
        let mut line = String::new();
        while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
            into.lock().unwrap().push_str(&line);
            line.clear();
        }
    })
}

/// An HTTP client for driving example processes.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Where a test puts the token on its requests to an example, and finds it in the answers:
/// the `session` cookie, or the header the example's `SESSION_HEADER` names.
#[derive(Clone, Copy, Debug)]
pub enum Carry {
    Cookie,
    Header(&'static str),
}

impl Carry {
    /// Puts `token` on a request's headers.
    fn put_on(self, headers: &mut HeaderMap, token: &str) {
        let (name, value) = match self {
            Carry::Cookie => (header::COOKIE.as_str(), format!("session={token}")),
            Carry::Header(name) => (name, token.to_owned()),
        };
        let value = HeaderValue::try_from(value).expect("a token is a header value");
        headers.insert(http::HeaderName::from_static(name), value);
    }

    /// What a response says about the token on this carrier: `None` when it says nothing,
    /// `Some("")` when the client is to forget it (an expiring cookie, an empty header).
    pub fn token_in(self, headers: &HeaderMap) -> Option<String> {
        let name = match self {
            Carry::Cookie => header::SET_COOKIE.as_str(),
            Carry::Header(name) => name,
        };
        let mut values = headers.get_all(name).iter();
        let value = values.next()?.to_str().expect("ASCII").to_owned();
        assert!(values.next().is_none(), "{name} sent twice");
        Some(match self {
            Carry::Cookie => token_of(&value),
            Carry::Header(_) => value,
        })
    }
}

/// What a GET to an example answered.
pub struct Reply {
    pub status: StatusCode,
    pub set_cookie: Option<String>,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// What the reply says about the token on `carry` (see [`Carry::token_in`]).
    pub fn token(&self, carry: Carry) -> Option<String> {
        carry.token_in(&self.headers)
    }
}

/// An HTTP/1.1 keep-alive client.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` on `addr`, with `session=<token>` when given.
pub async fn get(http: &HttpClient, addr: &str, path: &str, token: Option<&str>) -> Reply {
    get_via(http, addr, path, Carry::Cookie, token).await
}

/// GET `path` on `addr`, with the token on `carry` when given.
pub async fn get_via(
    http: &HttpClient,
    addr: &str,
    path: &str,
    carry: Carry,
    token: Option<&str>,
) -> Reply {
    let mut req = Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    if let Some(token) = token {
        carry.put_on(req.headers_mut(), token);
    }
    let res = http.request(req).await.expect("request to the example");
    let (parts, body) = res.into_parts();
    let set_cookie =
        (parts.headers.get(header::SET_COOKIE)).map(|v| v.to_str().unwrap().to_owned());
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        set_cookie,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// The token a `Set-Cookie` value carries (empty for an expiring cookie).
pub fn token_of(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    pair.strip_prefix("session=").unwrap().to_owned()
}

/// A WebSocket client on an example's `/ws`.
pub struct Socket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The headers of the upgrade's `101 Switching Protocols`.
    pub upgrade_headers: HeaderMap,
}

/// How long a test waits for an answer on a socket before it fails.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

impl Socket {
    /// Opens `/ws` on `addr`, with the token on `carry` when given; panics unless the upgrade
    /// succeeds.
    pub async fn open(addr: &str, carry: Carry, token: Option<&str>) -> Self {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        if let Some(token) = token {
            carry.put_on(req.headers_mut(), token);
        }
        let (stream, res) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("the WebSocket upgrade on {addr}: {e}"));
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        Socket {
            stream,
            upgrade_headers: res.headers().clone(),
        }
    }

    /// Sends the text message `text` and returns the answer.
    pub async fn say(&mut self, text: &str) -> String {
        self.send(Message::text(text)).await
    }

    /// Sends `message` and returns the answer, the next text message (pings and pongs skipped);
    /// panics when the socket closes first, or after [`ANSWER_WITHIN`].
    pub async fn send(&mut self, message: Message) -> String {
        self.stream.send(message).await.expect("send on the socket");
        let answer = async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("no answer on the socket: {other:?}"),
                }
            }
        };
        tokio::time::timeout(ANSWER_WITHIN, answer)
            .await
            .expect("an answer on the socket in time")
    }

    /// Closes the socket, and waits until the example has closed its end too.
    pub async fn close(mut self) {
        self.stream.close(None).await.expect("close the socket");
        while let Some(Ok(_)) = self.stream.next().await {}
    }
}

/// A client of an example with a cookie jar, as `curl -b jar -c jar` is: it sends the cookies
/// it holds, keeps what `Set-Cookie` says (an empty value or `Max-Age=0` drops a cookie), posts
/// forms, and follows no redirect. One jar is one device.
pub struct Jar {
    http: Client<HttpConnector, Full<Bytes>>,
    addr: String,
    /// The `User-Agent` header it sends, if any.
    pub user_agent: Option<String>,
    cookies: BTreeMap<String, String>,
}

impl Jar {
    /// An empty jar for the example on `addr`, sending `user_agent`.
    pub fn new(addr: &str, user_agent: &str) -> Self {
        Jar {
            http: Client::builder(TokioExecutor::new()).build_http(),
            addr: addr.to_owned(),
            user_agent: Some(user_agent.to_owned()),
            cookies: BTreeMap::new(),
        }
    }

    /// The value of the cookie `name` in the jar.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// Puts the cookie `name=value` in the jar (say, a token kept from another jar, replayed).
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.to_owned(), value.to_owned());
    }

    /// GET `path`.
    pub async fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, None, "").await
    }

    /// POST `path` with `fields`, as a browser submits a form.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let form = "application/x-www-form-urlencoded";
        self.send("POST", path, Some(form), &body).await
    }

    /// Sends `method path` with `body`, and a `Content-Type` when given.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(content_type) = content_type {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(agent) = &self.user_agent {
            req = req.header(header::USER_AGENT, agent);
        }
        if !self.cookies.is_empty() {
            let pairs: Vec<String> = (self.cookies.iter())
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            req = req.header(header::COOKIE, pairs.join("; "));
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let res = self
            .http
            .request(req)
            .await
            .expect("request to the example");
        let (parts, body) = res.into_parts();
        for value in parts.headers.get_all(header::SET_COOKIE) {
            let cookie = cookie::Cookie::parse(value.to_str().expect("ASCII").to_owned())
                .expect("Set-Cookie parses");
            let expired = cookie.max_age() == Some(time::Duration::ZERO);
            if expired || cookie.value().is_empty() {
                self.cookies.remove(cookie.name());
            } else {
                (self.cookies).insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
        let set_cookie =
            (parts.headers.get(header::SET_COOKIE)).map(|v| v.to_str().unwrap().to_owned());
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            set_cookie,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }
}
