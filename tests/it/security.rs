//! Security properties, one test each, through the real layer:
//!
//! - tokens are 256 bits from a CSPRNG;
//! - a cookie value is validated before any store call (no key injection: Redis sees nothing);
//! - hash-token-in-store keeps raw tokens out of Redis entirely (keys, values, commands);
//! - tokens never appear in logs (a `tracing` subscriber captures everything, `log` records of
//!   fred included) nor in `Debug` output (`Session`, `SessionLayer`, `SessionService`,
//!   `RedisStore`, `MemoryStore`, `Error`, `Record`, `Change`, `Committed`);
//! - renewing the token at login defeats session fixation;
//! - a destroyed session cannot come back, even with a slow request of it still in flight.
//!
//! Also security properties, tested elsewhere: `__Host-`/`__Secure-` cookie names
//! (`limits.rs`), unknown tokens never adopted (`behaviour.rs`), malformed cookies fuzzed
//! (`fuzz.rs`).

use std::{
    collections::{HashMap, HashSet},
    io,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::Query, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::TryStreamExt;
use http::{HeaderValue, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tower::Layer;
use tracing_subscriber::{
    filter::LevelFilter,
    layer::{Layer as _, SubscriberExt as _},
    util::SubscriberInitExt as _,
};

use crate::harness::{
    Backend, Captured, Client, Gate, Inspector, Kind, NONE, RedisServer, Resp, app,
    assert_valid_token, get_with_cookie_header, hashed, made_up_token, monitor, sleep_ms,
};
use tower_scs::store::{Change, Committed, Record, SessionStore};
use tower_scs::{Error, MemoryStore, RedisStore, Session, SessionLayer};

// ---------------------------------------------------------------------------------------------
// Routes of these tests, next to the harness's app
// ---------------------------------------------------------------------------------------------

/// The harness's app plus `/login`, `/whoami`, `/tokens`, `/debug` and `/unserializable`,
/// behind `layer`.
fn full_app(layer: SessionLayer) -> Router {
    let extra = Router::new()
        .route("/login", get(login))
        .route("/whoami", get(whoami))
        .route("/tokens", get(tokens))
        .route("/debug", get(debug))
        .route("/unserializable", get(unserializable))
        .layer(layer.clone());
    app(layer).merge(extra)
}

/// A login as it should be written: renew the token, then record the user.
async fn login(s: Session) -> Result<&'static str, Error> {
    s.renew_token().await?;
    s.insert("user", "victim");
    Ok("ok")
}

async fn whoami(s: Session) -> Result<String, Error> {
    Ok(s.get::<String>("user")
        .await?
        .unwrap_or_else(|| NONE.into()))
}

/// A value JSON cannot represent (a map with non-string keys): the response is the error one.
async fn unserializable(s: Session) -> &'static str {
    s.insert("map", std::collections::HashMap::from([((1u8, 2u8), 3u8)]));
    "ok"
}

/// `n` fresh tokens, comma-separated: `renew_token` draws a new one from the generator each
/// time, as a new session does.
async fn tokens(s: Session, Query(q): Query<HashMap<String, usize>>) -> Result<String, Error> {
    let n = q.get("n").copied().unwrap_or(1);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        s.renew_token().await?;
        out.push(s.token().await?.expect("a renewed session has a token"));
    }
    Ok(out.join(","))
}

/// The session's `Debug` output at each stage of a request that reads, writes, renews and
/// destroys it, and the tokens it had: JSON `[debugs, tokens]`.
async fn debug(s: Session) -> Result<String, Error> {
    let mut debugs = vec![format!("{s:?}"), format!("{s:#?}")];
    let mut tokens = Vec::new();
    s.keys().await?;
    tokens.extend(s.token().await?);
    debugs.push(format!("{s:?}"));
    s.insert("k", "v");
    debugs.push(format!("{s:#?}"));
    s.renew_token().await?;
    tokens.extend(s.token().await?);
    debugs.push(format!("{s:?}"));
    s.destroy();
    debugs.push(format!("{s:#?}"));
    Ok(serde_json::to_string(&(debugs, tokens)).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Tokens are 256-bit CSPRNG output
// ---------------------------------------------------------------------------------------------

/// 10,000 tokens (1,000 of them from new sessions' `Set-Cookie`, 9,000 from `renew_token`,
/// the same generator): all distinct, even in their first 8 bytes; each 43 base64url characters,
/// the canonical encoding of 32 bytes; every one of the 256 bit positions set in 50% ± 6σ of
/// them; byte values uniform (χ² with 255 degrees of freedom under 400, p < 10⁻⁸ for a real
/// CSPRNG). A counter, a timestamp, a short seed or a biased byte would fail one of these.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_256_bit_csprng_output() {
    let backend = Backend::memory();
    let app = full_app(backend.layer().await);
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let app = app.clone();
        tasks.spawn(async move {
            let mut tokens = Vec::new();
            for _ in 0..250 {
                let res = Client::new(&app).get("/put?key=a&value=1").await;
                tokens.push(res.new_token());
            }
            for _ in 0..5 {
                let body = Client::new(&app).get("/tokens?n=450").await.body;
                tokens.extend(body.split(',').map(str::to_owned));
            }
            tokens
        });
    }
    let tokens: Vec<String> = tasks.join_all().await.concat();
    assert_eq!(tokens.len(), 10_000);

    let mut prefixes = HashSet::new();
    let mut ones = [0u32; 256];
    let mut byte_counts = [0u32; 256];
    for token in &tokens {
        assert_valid_token(token);
        let bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(&bytes), *token, "canonical");
        assert!(
            prefixes.insert(bytes[..8].to_vec()),
            "two tokens share their first 64 bits"
        );
        for (i, byte) in bytes.iter().enumerate() {
            byte_counts[usize::from(*byte)] += 1;
            for bit in 0..8 {
                ones[i * 8 + bit] += u32::from((byte >> bit) & 1);
            }
        }
    }
    // Per bit: binomial(10,000, 1/2), σ = 50.
    for (bit, &n) in ones.iter().enumerate() {
        assert!(
            (4_700..=5_300).contains(&n),
            "bit {bit} set in {n} of 10,000"
        );
    }
    // All bits: binomial(2,560,000, 1/2), σ = 800.
    let total: u32 = ones.iter().sum();
    assert!((1_275_200..=1_284_800).contains(&total), "{total} ones");
    // Byte values: 320,000 bytes, 1,250 expected per value.
    let chi2: f64 = byte_counts
        .iter()
        .map(|&n| (f64::from(n) - 1_250.0).powi(2) / 1_250.0)
        .sum();
    assert!(chi2 < 400.0, "byte values are not uniform: χ² = {chi2:.1}");
}

// ---------------------------------------------------------------------------------------------
// No key injection through the cookie
// ---------------------------------------------------------------------------------------------

/// Cookie values that would be dangerous in a key or a command — globs, the key prefix, CR/LF
/// (percent-encoded or escaped: raw CR/LF cannot be in an `http::HeaderValue`, and hyper answers
/// 400 to it), very long values, near-miss tokens — make no store call: MONITOR on the test's
/// own Redis shows no command at all for requests that read, remove, clear or destroy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_cookies_reach_no_redis_command() {
    let backend = Backend::redis().await;
    let app = backend.app(|l| l).await;
    let valid = made_up_token("injection");
    let mut monitor = monitor(&backend).await;
    let before = backend.calls.get();

    assert!(
        HeaderValue::from_bytes(b"session=a\r\nFLUSHALL").is_err()
            && HeaderValue::from_bytes(b"session=a\nFLUSHALL").is_err()
            && HeaderValue::from_bytes(b"session=a\0").is_err(),
        "raw CR, LF or NUL never reach a layer"
    );
    let mut headers: Vec<Vec<u8>> = [
        "session=*".to_owned(),
        "session=?".to_owned(),
        "session=[a-z]*".to_owned(),
        "session=\\*".to_owned(),
        "session=scs:session:*".to_owned(),
        format!("session=scs:session:{valid}"),
        format!("session={}*", &valid[..42]),
        format!("session={}?", &valid[..42]),
        format!("session={}", "*".repeat(43)),
        format!("session=*{}", &valid[1..]),
        format!("session={valid}*"),
        "session=*/../../scs:session:*aaaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
        "session=%0D%0AFLUSHALL%0D%0A".to_owned(),
        format!("session={valid}%0D%0AFLUSHALL"),
        format!("session={}%0D%0A", &valid[..37]),
        "session=\\r\\nFLUSHALL\\r\\n".to_owned(),
        format!("session={}", "A".repeat(100_000)),
        format!("session={}", "scs:session:*".repeat(5_000)),
        format!("session=\"{valid}\""),
        format!("session={valid}="),
        format!("session=+{}", &valid[1..]),
        format!("session={}/", &valid[..42]),
        "session={scs}".to_owned(),
        "session=\t*\t".to_owned(),
        format!("session=%{valid}"),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    headers.push([&b"session="[..], &valid.as_bytes()[..40], b"\xff\xfe*"].concat());
    headers.push(b"session=\xc3\xa9*".to_vec());

    for header in &headers {
        let value = HeaderValue::from_bytes(header).unwrap();
        for uri in [
            "/get?key=a",
            "/keys",
            "/contains?key=a",
            "/pop?key=a",
            "/remove?key=a",
            "/clear",
        ] {
            let res = get_with_cookie_header(&app, uri, value.clone()).await;
            assert_eq!(res.status, StatusCode::OK, "{uri}");
            assert!(res.set_cookie_headers().is_empty(), "{uri}");
        }
        let res = get_with_cookie_header(&app, "/destroy", value).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.set_cookie().unwrap().value(), "", "an expiring cookie");
    }
    assert_eq!(
        backend.calls.get(),
        before,
        "store calls for malformed cookies"
    );
    let (m, i) = monitor.as_mut().unwrap();
    assert_eq!(
        m.client_commands(i).await,
        Vec::<String>::new(),
        "Redis commands"
    );
    // The control: a well-formed token is looked up, with one command.
    let res = Client::with_token(&app, &valid).get("/get?key=a").await;
    assert_eq!(res.body, NONE);
    assert_eq!(m.client_commands(i).await, ["hgetall"]);
}

// ---------------------------------------------------------------------------------------------
// Hash-token-in-store keeps raw tokens out of Redis
// ---------------------------------------------------------------------------------------------

/// A TCP proxy in front of the test's Redis that keeps every byte its clients send: all that
/// a store connected through it says to Redis, in full. (MONITOR, read through fred, gives each
/// command's name but drops its arguments from the first one MONITOR escapes, such as a JSON
/// value with a `\"` or an `é`: a raw token after it would go unseen.)
struct Wiretap {
    url: String,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Wiretap {
    async fn start(server: &RedisServer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the wiretap");
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let sent = Arc::<Mutex<Vec<u8>>>::default();
        let (redis, tap) = (server.port(), sent.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(("127.0.0.1", redis))
                    .await
                    .expect("the wiretap connects to Redis");
                tokio::spawn(relay(client, server, tap.clone()));
            }
        });
        Wiretap { url, sent }
    }

    /// Everything sent to Redis so far (every reply a client got was sent after its command
    /// was recorded).
    fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }
}

/// Relays bytes both ways between `client` and `server`, recording what the client sends.
async fn relay(client: TcpStream, server: TcpStream, tap: Arc<Mutex<Vec<u8>>>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let upstream = async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                return to_server.shutdown().await;
            }
            tap.lock().unwrap().extend_from_slice(&buf[..n]);
            to_server.write_all(&buf[..n]).await?;
        }
    };
    let downstream = tokio::io::copy(&mut from_server, &mut to_client);
    let _ = tokio::join!(upstream, downstream);
}

/// Everything Redis holds, as text: every key, and every field, value, member and score.
async fn redis_dump(inspector: &Inspector) -> String {
    let mut out = String::new();
    for key in inspector.keys().await {
        out.push_str(&key);
        out.push('\n');
        let kind = inspector.command("TYPE", &[&key]).await;
        let items = match kind.as_str().as_deref() {
            Some("hash") => inspector.command("HGETALL", &[&key]).await,
            Some("zset") => {
                inspector
                    .command("ZRANGE", &[&key, "0", "-1", "WITHSCORES"])
                    .await
            }
            Some("string") => inspector.command("GET", &[&key]).await,
            other => panic!("unexpected key type {other:?} for {key}"),
        };
        out.push_str(&format!("{items:?}\n"));
    }
    out
}

/// With `hash_token_in_store`, against a real Redis, through create, write, remember-me, owner,
/// renew, merge and destroy: no raw token is in any key, field, value or member, nor in any
/// byte the store sent Redis (recorded by a [`Wiretap`]), while the hashed ids are; and the
/// sessions work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_token_in_store_keeps_raw_tokens_out_of_redis() {
    let server = RedisServer::start().await;
    let wiretap = Wiretap::start(&server).await;
    let store = RedisStore::from_url(&wiretap.url).await.unwrap();
    let app = full_app(SessionLayer::new(store).hash_token_in_store(true));
    let inspector = server.inspector();
    let mut tokens = Vec::new();

    let mut alice = Client::new(&app);
    alice.get("/put?key=name&value=alice").await;
    tokens.extend(alice.token.clone());
    alice.get("/put_typed").await;
    alice.get("/remember?on=true").await;
    alice.get("/set_owner?value=alice").await;
    alice.get("/login").await; // renews
    tokens.extend(alice.token.clone());
    let mut bob = Client::new(&app);
    bob.get("/put?key=cart&value=3").await;
    let bob_token = bob.token.clone().unwrap();
    tokens.push(bob_token.clone());
    alice.get(&format!("/merge?token={bob_token}")).await;
    tokens.extend(alice.token.clone());
    let mut carol = Client::new(&app);
    carol.get("/put?key=x&value=y").await;
    tokens.extend(carol.token.clone());
    carol.get("/destroy").await;

    // The sessions work end to end.
    assert_eq!(alice.get("/get?key=name").await.body, "alice");
    assert_eq!(alice.get("/get?key=cart").await.body, "3");
    assert_eq!(alice.get("/whoami").await.body, "victim");
    assert_eq!(alice.get("/owner").await.body, "alice");
    assert_eq!(
        Client::with_token(&app, &tokens[0]).get("/keys").await.body,
        ""
    );

    let lines = wiretap.sent();
    let dump = redis_dump(&inspector).await;
    let current = alice.token.clone().unwrap();
    assert!(
        lines.contains(&hashed(&current)) && dump.contains(&hashed(&current)),
        "the hashed id is what Redis sees"
    );
    assert!(dump.contains("\"alice\""), "{dump}");
    for token in &tokens {
        assert_valid_token(token);
        assert!(
            !dump.contains(token.as_str()),
            "{token} stored in Redis:\n{dump}"
        );
        assert!(
            !lines.contains(token.as_str()),
            "{token} sent to Redis:\n{lines}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens never appear in logs or Debug output
// ---------------------------------------------------------------------------------------------

/// Installs, once, a global subscriber that writes every event, at every level (and, through
/// `tracing-log`, every `log` record, such as fred's), into a buffer.
fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(captured.clone())
            .with_filter(LevelFilter::TRACE);
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .expect("install the capturing subscriber");
        captured
    })
}

/// A store wrapper that keeps the `Debug` output of everything that crosses the store seam
/// (records, changes, commit results, errors), and fails every call on demand.
#[derive(Clone)]
struct Recording<S> {
    inner: S,
    seen: Arc<Mutex<Vec<String>>>,
    fail: Arc<AtomicBool>,
}

impl<S> Recording<S> {
    fn keep<T: std::fmt::Debug>(&self, what: &str, value: &T) {
        let mut seen = self.seen.lock().unwrap();
        seen.push(format!("{what}: {value:?}"));
        seen.push(format!("{what}: {value:#?}"));
    }

    fn check(&self) -> Result<(), Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::store(io::Error::other("injected failure")));
        }
        Ok(())
    }
}

impl<S: SessionStore> SessionStore for Recording<S> {
    async fn load(&self, id: &str) -> Result<Option<Record>, Error> {
        self.check()?;
        let result = self.inner.load(id).await;
        self.keep("load", &result);
        result
    }

    async fn commit(&self, id: &str, change: &Change) -> Result<Option<Committed>, Error> {
        self.keep("change", change);
        self.check()?;
        let result = self.inner.commit(id, change).await;
        self.keep("commit", &result);
        result
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.check()?;
        let result = self.inner.delete(id).await;
        self.keep("delete", &result);
        result
    }

    async fn replace(&self, id: &str, successor: &str) -> Result<bool, Error> {
        self.check()?;
        let result = self.inner.replace(id, successor).await;
        self.keep("replace", &result);
        result
    }

    async fn take(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        self.check()?;
        let result = self.inner.take(id, key).await;
        self.keep("take", &result);
        result
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, Error> {
        self.check()?;
        let result = self.inner.delete_owner(owner).await;
        self.keep("delete_owner", &result);
        result
    }
}

/// What a tour of the session life cycle and its failures left behind.
struct Tour {
    /// Every token a client sent or received, or a handler saw.
    tokens: HashSet<String>,
    /// `Debug` output: sessions, stores, records, changes, commit results, errors.
    debugs: Vec<String>,
}

impl Tour {
    fn note(&mut self, client: &Client, res: &Resp) {
        self.tokens.extend(client.token.clone());
        for value in res.set_cookie_headers() {
            let cookie = cookie::Cookie::parse(value).unwrap();
            if !cookie.value().is_empty() {
                self.tokens.insert(cookie.value().to_owned());
            }
        }
    }

    async fn get(&mut self, client: &mut Client, uri: &str) -> Resp {
        self.tokens.extend(client.token.clone());
        let res = client.get(uri).await;
        self.note(client, &res);
        res
    }
}

/// Creates, reads, writes, renews, merges and destroys sessions on a real Redis, then makes
/// every kind of error happen: a malformed record, a wrong type, a value of the wrong type, a
/// session too large (checked by the layer and by the store), a store timeout, an injected
/// store failure, and Redis down.
async fn tour() -> Tour {
    let mut server = RedisServer::start().await;
    let inspector = server.inspector();
    let redis = RedisStore::from_url(&server.url()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(AtomicBool::new(false));
    let store = Recording {
        inner: redis.clone(),
        seen: seen.clone(),
        fail: fail.clone(),
    };
    let errors = seen.clone();
    let layer = SessionLayer::new(store)
        .max_session_bytes(Some(6_000))
        .store_timeout(Duration::from_millis(300))
        .error_handler(move |e: &Error| {
            let mut errors = errors.lock().unwrap();
            errors.push(format!("error: {e:?}"));
            errors.push(format!("error: {e:#?}"));
            errors.push(format!("error: {e}"));
            http::Response::builder().status(500).body(()).unwrap()
        });
    let mut tour = Tour {
        tokens: HashSet::new(),
        debugs: vec![
            format!("{layer:?}"),
            format!("{layer:#?}"),
            format!("{redis:?}"),
        ],
    };
    let app = full_app(layer.clone());
    let service = layer.layer(tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    }));
    tour.debugs.push(format!("{service:?}"));

    // The life cycle.
    let mut alice = Client::new(&app);
    tour.get(&mut alice, "/put?key=a&value=1").await;
    tour.get(&mut alice, "/get?key=a").await;
    tour.get(&mut alice, "/put_typed").await;
    tour.get(&mut alice, "/get_typed").await;
    tour.get(&mut alice, "/remember?on=true").await;
    tour.get(&mut alice, "/set_owner?value=alice").await;
    tour.get(&mut alice, "/login").await;
    let mut bob = Client::new(&app);
    tour.get(&mut bob, "/put?key=b&value=2").await;
    let bob_token = bob.token.clone().unwrap();
    tour.get(&mut alice, &format!("/merge?token={bob_token}"))
        .await;
    let res = tour.get(&mut alice, "/debug").await;
    let (debugs, tokens): (Vec<String>, Vec<String>) = serde_json::from_str(&res.body).unwrap();
    assert_eq!(tokens.len(), 2, "{res:?}");
    tour.debugs.extend(debugs);
    tour.tokens.extend(tokens);
    tour.get(&mut bob, "/renew").await;
    let mut old_bob = Client::with_token(&app, &bob_token);
    tour.get(&mut old_bob, "/get?key=b").await;
    tour.get(&mut bob, "/destroy_owner?value=nobody").await;
    tour.get(&mut bob, "/destroy").await;

    // Errors.
    let mut errors = Vec::new();
    let planted = made_up_token("tour: planted");
    tour.tokens.insert(planted.clone());
    let key = format!("scs:session:{planted}");
    let mut victim = Client::with_token(&app, &planted);
    inspector
        .command("HSET", &[&key, "meta", "deadline=soon"])
        .await;
    errors.push(tour.get(&mut victim, "/get?key=a").await); // Malformed
    inspector.command("DEL", &[&key]).await;
    inspector.command("SET", &[&key, "x"]).await;
    errors.push(tour.get(&mut victim, "/get?key=a").await); // WRONGTYPE
    errors.push(tour.get(&mut victim, "/put?key=a&value=1").await); // WRONGTYPE in the script
    let mut carol = Client::new(&app);
    tour.get(&mut carol, "/put?key=user&value=x").await;
    errors.push(tour.get(&mut carol, "/get_typed").await); // Value: "x" is not a User
    errors.push(tour.get(&mut carol, "/unserializable").await); // Value, at insert
    let big = "x".repeat(4_000);
    errors.push(
        tour.get(&mut carol, &format!("/put?key=big&value={big}{big}"))
            .await,
    ); // layer
    tour.get(&mut carol, &format!("/put?key=b1&value={big}"))
        .await;
    errors.push(
        tour.get(&mut carol, &format!("/put?key=b2&value={big}"))
            .await,
    ); // store
    inspector.ok("CLIENT", &["PAUSE", "800", "ALL"]).await;
    errors.push(tour.get(&mut carol, "/get?key=user").await); // Timeout
    sleep_ms(900).await;
    fail.store(true, Ordering::SeqCst);
    errors.push(tour.get(&mut carol, "/get?key=user").await); // injected
    errors.push(tour.get(&mut carol, "/renew").await);
    fail.store(false, Ordering::SeqCst);
    server.stop();
    for uri in ["/get?key=a", "/put?key=c&value=3", "/renew", "/destroy"] {
        errors.push(tour.get(&mut carol, uri).await); // Redis down
    }
    let mut dave = Client::new(&app);
    errors.push(tour.get(&mut dave, "/put?key=a&value=1").await);
    for (i, res) in errors.iter().enumerate() {
        assert_eq!(
            res.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "error {i}: {res:?}"
        );
    }

    let seen = seen.lock().unwrap().clone();
    let kinds = [
        "Malformed",
        "Store",
        "Value",
        "TooLarge",
        "Timeout",
        "Committed",
        "Record",
    ];
    for kind in kinds {
        assert!(
            seen.iter().any(|s| s.contains(kind)),
            "the tour produced no {kind}: {seen:#?}"
        );
    }
    tour.debugs.extend(seen);
    tour.tokens.retain(|t| !t.is_empty());
    assert!(tour.tokens.len() >= 7, "{:?}", tour.tokens);
    tour
}

/// Through the whole tour (create, renew, merge, destroy; malformed and foreign records, wrong
/// types, too large, timeout, injected failure, Redis down), at TRACE level for every target
/// (the crate's events and fred's `log` records): no token is in the logs, though the errors are.
///
/// The tour runs in a process of its own (this test binary, started again on this test alone):
/// `tracing` caches each call site's interest when it first fires, so a call site that another
/// test fires while the subscriber is being installed can stay switched off for good, and the
/// capture would miss it.
#[test]
fn tokens_never_appear_in_logs() {
    const CHILD: &str = "TOWER_SCS_LOG_TOUR";
    if std::env::var_os(CHILD).is_none() {
        let name = concat!(module_path!(), "::tokens_never_appear_in_logs");
        let name = name.split_once("::").expect("a module path").1;
        let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("start the tour's process");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the tour's process failed:\n{text}");
        assert!(text.contains("1 passed"), "the tour did not run:\n{text}");
        return;
    }
    let logs = captured_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tour's runtime");
    let tour = runtime.block_on(tour());
    let text = logs.text();
    assert!(
        text.contains("session error; sending the error response")
            && text.contains("session error")
            && text.contains("is not a time in Unix milliseconds")
            && text.contains("did not answer within"),
        "the capture missed the errors:\n{text}"
    );
    assert!(
        text.contains("TRACE fred::") && text.contains("Connection closed"),
        "the capture missed fred's log records:\n{text}"
    );
    for token in &tour.tokens {
        assert!(
            !text.contains(token.as_str()),
            "token {token} in the logs:\n{}",
            text.lines()
                .filter(|l| l.contains(token.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The `Debug` output (`{:?}` and `{:#?}`) of everything a token passes near holds none:
/// `Session` at every stage of a request (loaded, written, renewed, destroyed), `SessionLayer`,
/// `SessionService`, `RedisStore`, `MemoryStore`, `Error` of every kind (also its `Display`),
/// and the `Record`, `Change` and `Committed` values that cross the store seam.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_debug_output() {
    let mut tour = tour().await;

    // The memory store, holding sessions.
    let memory = MemoryStore::new();
    let app = full_app(SessionLayer::new(memory.clone()));
    let mut client = Client::new(&app);
    tour.get(&mut client, "/put?key=a&value=1").await;
    let res = tour.get(&mut client, "/debug").await;
    let (debugs, tokens): (Vec<String>, Vec<String>) = serde_json::from_str(&res.body).unwrap();
    tour.debugs.extend(debugs);
    tour.tokens.extend(tokens);
    tour.get(&mut client, "/put?key=a&value=1").await;
    tour.debugs.push(format!("{memory:?}"));
    tour.debugs.push(format!("{memory:#?}"));
    let ids: Vec<String> = memory.ids().try_collect().await.unwrap();
    for id in ids {
        tour.debugs.push(format!("{:?}", memory.load(&id).await));
    }

    assert!(tour.debugs.iter().any(|d| d.starts_with("Session")));
    assert!(tour.debugs.iter().any(|d| d.starts_with("SessionLayer")));
    assert!(tour.debugs.iter().any(|d| d.starts_with("SessionService")));
    assert!(tour.debugs.iter().any(|d| d.starts_with("RedisStore")));
    assert!(tour.debugs.iter().any(|d| d.starts_with("MemoryStore")));
    assert!(tour.debugs.iter().any(|d| d.starts_with("change: Change")));
    for debug in &tour.debugs {
        for token in &tour.tokens {
            assert!(
                !debug.contains(token.as_str()),
                "token {token} in Debug output: {debug}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session fixation
// ---------------------------------------------------------------------------------------------

/// An attacker gets a real session token (visiting the site), plants it in the victim's
/// browser, and waits. The victim logs in, and the login renews the token: the attacker's token
/// then gives nothing — no user, no data, no way back in by writing with it — even with a slow
/// request of the attacker's in flight across the login. A token the site never issued is not
/// adopted either (see also `unknown_token_is_never_adopted` in `behaviour.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_at_login_defeats_session_fixation() {
    for backend in [Backend::memory(), Backend::redis().await] {
        let app = full_app(backend.layer().await);
        let mut attacker = Client::new(&app);
        attacker.get("/put?key=visitor&value=attacker").await;
        let planted = attacker.token.clone().unwrap();

        // The attacker's slow request: it loads the session before the login and writes after.
        let mut slow = Client::with_token(&app, &planted);
        let gate = Gate::new();
        let uri = format!("/read_put?key=user&value=attacker&gate={}", gate.name());
        let slow = tokio::spawn(async move {
            let res = slow.get(&uri).await;
            (res, slow)
        });
        gate.arrived(1).await; // loaded

        let mut victim = Client::with_token(&app, &planted);
        let res = victim.get("/login").await;
        assert_eq!(res.status, StatusCode::OK);
        let victim_token = res.new_token();
        assert_ne!(victim_token, planted, "the login kept the planted token");
        assert!(
            !backend.stored(&planted).await,
            "the planted session lives on"
        );
        assert_eq!(victim.get("/whoami").await.body, "victim");

        gate.open();
        let (res, mut slow) = slow.await.unwrap();
        assert_eq!(res.status, StatusCode::OK);
        let slow_token = res.new_token();
        assert!(slow_token != planted && slow_token != victim_token);
        assert_eq!(slow.get("/keys").await.body, "user", "only its own write");
        assert_eq!(slow.get("/whoami").await.body, "attacker");

        // The planted token, replayed: nothing, and writing with it starts a new session.
        for uri in ["/whoami", "/keys", "/get?key=user"] {
            let res = Client::with_token(&app, &planted).get(uri).await;
            assert!(res.body == NONE || res.body.is_empty(), "{uri}: {res:?}");
            assert!(res.set_cookie_headers().is_empty(), "{uri}: {res:?}");
        }
        let res = Client::with_token(&app, &planted)
            .get("/put?key=user&value=attacker")
            .await;
        let token = res.new_token();
        assert!(token != planted && token != victim_token);
        assert!(!backend.stored(&planted).await);
        assert_eq!(victim.get("/whoami").await.body, "victim", "untouched");
        assert_eq!(victim.token.as_deref(), Some(victim_token.as_str()));

        // A made-up token planted: the login issues a new one too.
        let made_up = made_up_token("fixation");
        let mut victim = Client::with_token(&app, &made_up);
        let token = victim.get("/login").await.new_token();
        assert_ne!(token, made_up);
        assert!(!backend.stored(&made_up).await);
        assert_eq!(
            Client::with_token(&app, &made_up).get("/whoami").await.body,
            NONE
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A destroyed session cannot come back
// ---------------------------------------------------------------------------------------------

/// Every value stored in the backend, as text (to find a destroyed session's data).
async fn all_values(backend: &Backend) -> String {
    match &backend.kind {
        Kind::Memory(store) => {
            let ids: Vec<String> = store.ids().try_collect().await.unwrap();
            let mut out = String::new();
            for id in ids {
                if let Some(record) = store.load(&id).await.unwrap() {
                    out.push_str(&format!("{:?}\n", record.values));
                }
            }
            out
        }
        Kind::Redis(server) => redis_dump(&server.inspector()).await,
    }
}

/// After `destroy`, the old cookie replayed — by requests that read, write, renew, clear,
/// remove, set remember-me or a deadline, merge it, destroy it again, while a request of the
/// session that loaded before the destroy (and one that clears without loading) commits after
/// it — never brings the session or its data back: the old token is never stored again nor
/// sent back, and every write lands in a new session under a new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_session_cannot_come_back() {
    for backend in [Backend::memory(), Backend::redis().await] {
        let app = full_app(backend.layer().await);
        let mut owner = Client::new(&app);
        owner.get("/put?key=secret&value=s3cr3t").await;
        owner.get("/put?key=other&value=kept").await;
        let token = owner.token.clone().unwrap();

        // Requests of the session from before the destroy, held at a gate until it is done:
        // one has loaded the session, the other is about to clear it without loading.
        let gate = Gate::new();
        let mut held = JoinSet::new();
        for uri in ["/read_put?key=late&value=1", "/clear?"] {
            let uri = format!("{uri}&gate={}", gate.name());
            let mut c = Client::with_token(&app, &token);
            held.spawn(async move {
                let res = c.get(&uri).await;
                (uri, res)
            });
        }
        gate.arrived(2).await;
        let res = owner.get("/destroy").await;
        assert_eq!(res.set_cookie().unwrap().value(), "");
        assert!(!backend.stored(&token).await);

        let replays = [
            "/get?key=secret",
            "/keys",
            "/contains?key=secret",
            "/pop?key=secret",
            "/put?key=new&value=1",
            "/read_put?key=new&value=2",
            "/renew",
            "/login",
            "/clear",
            "/remove?key=secret",
            "/remember?on=true",
            "/set_deadline?secs=3600",
            "/set_owner?value=mallory",
            "/destroy",
        ];
        let mut answers = Vec::new();
        let mut inflight = JoinSet::new();
        for round in 0..3 {
            for uri in replays {
                let mut c = Client::with_token(&app, &token);
                inflight.spawn(async move { (uri.to_owned(), c.get(uri).await) });
            }
            let mut merger = Client::new(&app);
            let uri = format!("/merge?token={token}");
            let res = merger.get(&uri).await;
            assert_eq!(res.status, StatusCode::OK);
            assert_eq!(
                merger.get("/keys").await.body,
                "",
                "merge of a destroyed session"
            );
            if round == 0 {
                // The held requests commit now, while the first replays are in flight.
                gate.open();
                while let Some(done) = held.join_next().await {
                    answers.push(done.expect("a held request"));
                }
            }
        }
        answers.extend(inflight.join_all().await);
        for (uri, res) in answers {
            assert_eq!(res.status, StatusCode::OK, "{uri}: {res:?}");
            assert!(
                !["s3cr3t", "kept", "true"].contains(&res.body.as_str()),
                "{uri} read the destroyed session: {res:?}"
            );
            for value in res.set_cookie_headers() {
                assert!(!value.contains(&token), "{uri} sent the old token back");
            }
        }
        assert!(
            !backend.stored(&token).await,
            "the destroyed session is back"
        );
        let values = all_values(&backend).await;
        assert!(
            !values.contains("s3cr3t") && !values.contains("kept"),
            "the destroyed session's data is back:\n{values}"
        );
        assert_eq!(Client::with_token(&app, &token).get("/keys").await.body, "");
    }
}
