//! What `RedisStore` leaves in Redis: keys, prefixes, hashes, TTLs, and its constructors. Each
//! test runs its own redis-server.

use std::time::Duration;

use fred::{
    interfaces::ClientLike,
    prelude::{Builder, Config},
};
use http::StatusCode;
use tower_scs::{RedisStore, SessionLayer};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::TryStreamExt;

use crate::harness::{
    Client, NONE, RedisServer, app, assert_near, free_port, hashed, now_ms, redis::session_key,
};

const DEFAULT_PREFIX: &str = RedisStore::DEFAULT_PREFIX;

type Configure = fn(SessionLayer) -> SessionLayer;

async fn default_app(server: &RedisServer, configure: Configure) -> axum::Router {
    let store = RedisStore::from_url(&server.url()).await.expect("from_url");
    app(configure(SessionLayer::new(store)))
}

#[tokio::test]
async fn key_is_prefix_and_tokens_bytes_and_hash_is_readable() {
    let server = RedisServer::start().await;
    let app = default_app(&server, |l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=name&value=alice").await;
    client.get("/put_typed").await;
    client.get("/remember?on=true").await;
    let token = client.token.clone().unwrap();
    let key = format!("scs:session:{token}");
    let inspector = server.inspector();
    assert_eq!(inspector.keys().await, std::slice::from_ref(&key));
    let raw = [
        b"scs:session:".as_slice(),
        &URL_SAFE_NO_PAD.decode(&token).unwrap(),
    ]
    .concat();
    assert_eq!(raw.len(), 44);
    assert_eq!(inspector.raw_keys().await, [raw]);

    let hash = inspector.hgetall(&key).await;
    let mut fields: Vec<&str> = hash.keys().map(String::as_str).collect();
    fields.sort();
    let expected = ["d", "r", "s", "v:name", "v:number", "v:text", "v:user"];
    assert_eq!(fields, expected);
    let meta = crate::harness::redis::meta(&hash);
    let mut names: Vec<&str> = meta.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["deadline", "remember", "size"], "{hash:?}");
    let values: usize = hash
        .iter()
        .filter_map(|(f, v)| Some(f.strip_prefix("v:")?.len() + v.len()))
        .sum();
    assert_eq!(
        meta["size"],
        values.to_string(),
        "size = bytes of keys and values"
    );
    assert_eq!(hash["v:name"], r#""alice""#, "values are JSON text");
    assert_eq!(hash["v:number"], "-42");
    let user: crate::harness::app::User = serde_json::from_str(&hash["v:user"]).unwrap();
    assert_eq!(user, crate::harness::app::typed_values().2);
    assert_eq!(meta["remember"], "1");
    let deadline: i64 = meta["deadline"].parse().unwrap();
    assert_near(deadline, now_ms() + 86_400_000, 3_000, "deadline (Unix ms)");
    assert!(
        !meta.contains_key("expiry"),
        "no idle timeout: the expiry is the deadline, not stored twice"
    );
    // Remember-me off: the pair goes away rather than reading "0".
    client.get("/remember?on=false").await;
    let meta = crate::harness::redis::meta(&inspector.hgetall(&key).await);
    assert!(!meta.contains_key("remember"), "{meta:?}");
    assert_eq!(meta["deadline"], deadline.to_string());
}

/// A session tied to an owner keeps, in its metadata, when it was tied (`c`, created) and when
/// it was last seen (`l`, each commit), for the owner's device list; a pop keeps them; a session
/// without an owner stores neither.
#[tokio::test]
async fn an_owned_session_keeps_created_and_seen_in_its_meta() {
    let server = RedisServer::start().await;
    let app = default_app(&server, |l| l).await;
    let mut client = Client::new(&app);
    client.get("/put?key=a&value=1").await;
    let key = format!("{DEFAULT_PREFIX}{}", client.token.clone().unwrap());
    let inspector = server.inspector();
    let meta = crate::harness::redis::meta(&inspector.hgetall(&key).await);
    assert!(
        !meta.contains_key("created") && !meta.contains_key("seen"),
        "{meta:?}"
    );

    client.get("/set_owner?value=alice").await;
    let meta = crate::harness::redis::meta(&inspector.hgetall(&key).await);
    let created: i64 = meta["created"].parse().unwrap();
    assert_near(created, now_ms(), 3_000, "created (Unix ms)");
    assert_eq!(meta["seen"], meta["created"], "{meta:?}");
    let first_seen = created;
    // The next commit moves `seen` (never back), not `created`; a pop rewrites meta and keeps both.
    client.get("/put?key=b&value=2").await;
    client.get("/pop?key=b").await;
    let meta = crate::harness::redis::meta(&inspector.hgetall(&key).await);
    assert_eq!(meta["created"], created.to_string(), "{meta:?}");
    let seen: i64 = meta["seen"].parse().unwrap();
    assert!(seen >= first_seen, "{meta:?}");
    assert_eq!(client.get("/owner").await.body, "alice");
}

#[tokio::test]
async fn pttl_follows_lifetime_and_idle_timeout() {
    let server = RedisServer::start().await;
    let inspector = server.inspector();
    let cases: [(Configure, i64); 3] = [
        (|l| l, 86_400_000),
        // Idle timeout shorter than the lifetime: the key lives 1.1 × idle.
        (
            |l| {
                l.lifetime(Duration::from_secs(3600))
                    .idle_timeout(Duration::from_secs(10))
            },
            11_000,
        ),
        // Idle timeout longer than the lifetime: the lifetime wins.
        (
            |l| {
                l.lifetime(Duration::from_secs(60))
                    .idle_timeout(Duration::from_secs(7200))
            },
            60_000,
        ),
    ];
    for (configure, ttl) in cases {
        let app = default_app(&server, configure).await;
        let mut client = Client::new(&app);
        client.get("/put?key=a&value=1").await;
        let key = format!("scs:session:{}", client.token.clone().unwrap());
        assert_near(inspector.pttl(&key).await, ttl, 1_000, "PTTL");
        let meta = crate::harness::redis::meta(&inspector.hgetall(&key).await);
        // Stored only when it differs from the deadline.
        let expiry: i64 = meta
            .get("expiry")
            .unwrap_or(&meta["deadline"])
            .parse()
            .unwrap();
        assert_near(expiry, now_ms() + ttl, 1_000, "expiry field");
        // A later write keeps an expiry on the key.
        client.get("/put?key=b&value=2").await;
        assert_near(inspector.pttl(&key).await, ttl, 1_000, "PTTL after update");
    }
}

#[tokio::test]
async fn custom_prefix_over_a_fred_client() {
    let server = RedisServer::start().await;
    let client = Builder::from_config(Config::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let store = RedisStore::new(client).with_prefix("x:");
    assert_eq!(store.prefix(), "x:");
    let app = app(SessionLayer::new(store));
    let mut c = Client::new(&app);
    c.get("/put?key=a&value=1").await;
    let token = c.token.clone().unwrap();
    let inspector = server.inspector();
    assert_eq!(inspector.keys().await, [format!("x:{token}")]);
    assert_eq!(c.get("/get?key=a").await.body, "1");

    // A layer with the default prefix on the same Redis does not see it.
    let other = default_app(&server, |l| l).await;
    assert_eq!(
        Client::with_token(&other, &token)
            .get("/get?key=a")
            .await
            .body,
        NONE
    );

    c.get("/destroy").await;
    assert!(inspector.keys().await.is_empty());
}

/// With `with_text_keys` a session is stored under the token's text, as before binary keys: each
/// store reads its own form only, `ids()` lists both, and the binary key costs Redis 16 bytes less
/// (a 44-byte key in jemalloc's 48-byte class, the 55-byte text in the 64-byte one).
#[tokio::test]
async fn text_keys_hold_the_token_text_and_binary_keys_cost_16_bytes_less() {
    let server = RedisServer::start().await;
    let binary = default_app(&server, |l| l).await;
    let text_store = RedisStore::from_url(&server.url()).await.unwrap();
    let text = app(SessionLayer::new(text_store.with_text_keys()));
    let mut a = Client::new(&binary);
    a.get("/put?key=k&value=1").await;
    let mut b = Client::new(&text);
    b.get("/put?key=k&value=2").await;
    let (ta, tb) = (a.token.clone().unwrap(), b.token.clone().unwrap());
    let (key_a, key_b) = (
        session_key(&ta).as_bytes().to_vec(),
        format!("{DEFAULT_PREFIX}{tb}").into_bytes(),
    );
    let mut expected = vec![key_a.clone(), key_b.clone()];
    expected.sort();
    let inspector = server.inspector();
    assert_eq!(inspector.raw_keys().await, expected);
    assert_eq!(a.get("/get?key=k").await.body, "1");
    assert_eq!(b.get("/get?key=k").await.body, "2");
    let crossed = Client::with_token(&text, &ta).get("/get?key=k").await;
    assert_eq!(
        crossed.body, NONE,
        "a text-key store does not read a binary key"
    );
    let crossed = Client::with_token(&binary, &tb).get("/get?key=k").await;
    assert_eq!(
        crossed.body, NONE,
        "a binary-key store does not read a text key"
    );

    let (usage_a, usage_b) = (
        inspector.memory_usage(&key_a).await,
        inspector.memory_usage(&key_b).await,
    );
    assert_eq!(
        usage_b - usage_a,
        16,
        "MEMORY USAGE {usage_a} binary, {usage_b} text"
    );

    let store = RedisStore::from_url(&server.url()).await.unwrap();
    let mut ids: Vec<String> = store.ids().try_collect().await.unwrap();
    ids.sort();
    let mut both = vec![ta, tb];
    both.sort();
    assert_eq!(ids, both, "ids() lists sessions under either form of key");
}

#[tokio::test]
async fn hashed_token_never_appears_in_a_key() {
    let server = RedisServer::start().await;
    let app = default_app(&server, |l| l.hash_token_in_store(true)).await;
    let inspector = server.inspector();
    let mut tokens = Vec::new();
    for i in 0..3 {
        let mut c = Client::new(&app);
        c.get(&format!("/put?key=k&value={i}")).await;
        tokens.push(c.token.unwrap());
    }
    let keys = inspector.keys().await;
    let mut expected: Vec<String> = tokens
        .iter()
        .map(|t| format!("{DEFAULT_PREFIX}{}", hashed(t)))
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
    for token in &tokens {
        assert!(keys.iter().all(|k| !k.contains(token.as_str())));
        let bytes = session_key(token).as_bytes()[DEFAULT_PREFIX.len()..].to_vec();
        let raw = inspector.raw_keys().await;
        assert!(
            raw.iter().all(|k| !k.ends_with(&bytes)),
            "a token's bytes in a key"
        );
    }
    let hash = inspector.hgetall(&expected[0]).await;
    assert!(hash.contains_key("v:k") && hash.contains_key("d"));
}

#[tokio::test]
async fn from_url_works_and_fails_cleanly() {
    let server = RedisServer::start().await;
    let store = RedisStore::from_url(&server.url()).await.expect("from_url");
    assert_eq!(store.prefix(), DEFAULT_PREFIX);
    let app = app(SessionLayer::new(store));
    let mut c = Client::new(&app);
    c.get("/put?key=a&value=1").await;
    assert_eq!(c.get("/get?key=a").await.body, "1");

    assert!(RedisStore::from_url("not a url").await.is_err());
    // An unreachable Redis is no error at start (the store dials lazily, see `startup`), but
    // `ready` says so.
    let url = format!("redis://127.0.0.1:{}", free_port());
    let res = tokio::time::timeout(Duration::from_secs(10), RedisStore::from_url(&url)).await;
    let unreachable = res.expect("from_url returns").expect("from_url is lazy");
    assert!(unreachable.ready().await.is_err());
}

#[tokio::test]
async fn foreign_data_under_a_session_key_is_an_error_not_a_panic() {
    let server = RedisServer::start().await;
    let app = default_app(&server, |l| l).await;
    let inspector = server.inspector();
    let token = crate::harness::made_up_token("foreign");
    let key = format!("scs:session:{token}");

    // A hash without a deadline.
    inspector.command("HSET", &[&key, "foo", "bar"]).await;
    let res = Client::with_token(&app, &token).get("/get?key=foo").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    // A string, not a hash (WRONGTYPE).
    inspector.command("DEL", &[&key]).await;
    inspector.command("SET", &[&key, "x"]).await;
    let res = Client::with_token(&app, &token).get("/get?key=foo").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    let res = Client::with_token(&app, &token)
        .get("/put?key=a&value=1")
        .await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.set_cookie_headers().is_empty());
}

#[tokio::test]
async fn survives_a_script_cache_flush_and_a_restart() {
    let mut server = RedisServer::start().await;
    let app = default_app(&server, |l| l).await;
    let mut c = Client::new(&app);
    c.get("/put?key=a&value=1").await;

    // The commit script is gone from the cache (as after a restart): EVAL reloads it.
    server.inspector().command("SCRIPT", &["FLUSH"]).await;
    let res = c.get("/put?key=b&value=2").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(c.get("/keys").await.body, "a,b");

    // A restart empties this Redis (no persistence); the store reconnects on its own.
    server.restart().await;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let res = loop {
        let res = c.get("/put?key=c&value=3").await;
        if res.status == StatusCode::OK || std::time::Instant::now() > until {
            break res;
        }
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(res.status, StatusCode::OK, "the store did not reconnect");
    assert_eq!(
        c.get("/keys").await.body,
        "c",
        "a new session after the data loss"
    );
}

/// `from_url`'s pool bounds each command by 900 ms, so the store bounds its own loads (one
/// command each) and reports a stalled load as the layer would: `Error::Timeout`.
#[tokio::test]
async fn a_stalled_load_times_out_by_the_store_itself() {
    use tower_scs::Error;
    use tower_scs::store::SessionStore;

    let server = RedisServer::start().await;
    let store = RedisStore::from_url(&server.url()).await.expect("from_url");
    assert_eq!(store.load_timeout(), Some(Duration::from_millis(900)));
    let id = "A".repeat(43);
    assert!(matches!(store.load(&id).await, Ok(None)));

    server
        .inspector()
        .ok("CLIENT", &["PAUSE", "1500", "ALL"])
        .await;
    let start = std::time::Instant::now();
    let load = store.load(&id).await;
    let took = start.elapsed();
    assert!(
        matches!(load, Err(Error::Timeout(d)) if d == Duration::from_millis(900)),
        "{load:?}"
    );
    assert!(took < Duration::from_millis(1_200), "took {took:?}");

    // A fred client without a command timeout leaves the bound to the layer.
    let client = Builder::from_config(Config::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    assert_eq!(RedisStore::new(client).load_timeout(), None);
}

/// Over RESP3, `HGETALL` answers a map instead of a flat array: the same session reads back,
/// metadata and owner included, and a foreign type still fails cleanly.
#[tokio::test]
async fn resp3_clients_read_the_same_sessions() {
    let server = RedisServer::start().await;
    let mut config = Config::from_url(&server.url()).unwrap();
    config.version = fred::types::RespVersion::RESP3;
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    let app = app(SessionLayer::new(RedisStore::new(client)).idle_timeout(Duration::from_secs(60)));
    let mut c = Client::new(&app);
    c.get("/put?key=a&value=1").await;
    c.get("/put?key=b&value=2").await;
    c.get("/set_owner?value=alice").await;
    c.get("/remember?on=true").await;
    assert_eq!(c.get("/keys").await.body, "a,b");
    assert_eq!(c.get("/get?key=b").await.body, "2");
    assert_eq!(c.get("/owner").await.body, "alice");
    let meta = crate::harness::redis::meta(
        &server
            .inspector()
            .hgetall(&format!("{DEFAULT_PREFIX}{}", c.token.clone().unwrap()))
            .await,
    );
    assert!(
        meta.contains_key("expiry") && meta["remember"] == "1",
        "{meta:?}"
    );

    let token = crate::harness::made_up_token("resp3 foreign");
    let inspector = server.inspector();
    inspector
        .command("SET", &[&format!("{DEFAULT_PREFIX}{token}"), "x"])
        .await;
    let res = Client::with_token(&app, &token).get("/get?key=a").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
}

/// A record of the earlier shape (its metadata in one `meta` text) still reads back, and its
/// next write rewrites it in the current shape, its values, owner and times kept.
#[tokio::test]
async fn a_record_of_the_old_shape_reads_and_is_rewritten_at_its_next_write() {
    let server = RedisServer::start().await;
    let app = default_app(&server, |l| l).await;
    let token = crate::harness::made_up_token("old shape");
    let key = format!("{DEFAULT_PREFIX}{token}");
    let (deadline, created) = (now_ms() + 3_600_000, now_ms() - 60_000);
    let meta = format!("deadline={deadline} size=4 remember=1 created={created} seen={created}");
    let inspector = server.inspector();
    let fields = ["meta", &meta, "owner", "alice", "v:a", "\"1\""];
    inspector
        .command("HSET", &[&[key.as_str()][..], &fields].concat())
        .await;
    inspector.command("PEXPIRE", &[&key, "3600000"]).await;
    let mut client = Client::with_token(&app, &token);
    assert_eq!(client.get("/get?key=a").await.body, "1");
    assert_eq!(client.get("/owner").await.body, "alice");

    client.get("/put?key=b&value=2").await;
    assert_eq!(
        client.token.as_deref(),
        Some(token.as_str()),
        "the same session"
    );
    let hash = inspector.hgetall(&key).await;
    let mut names: Vec<&str> = hash.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["c", "d", "l", "owner", "r", "s", "v:a", "v:b"]);
    assert_eq!(hash["d"], deadline.to_string());
    assert_eq!(hash["c"], created.to_string());
    assert_eq!(hash["s"], "8", "size carried over and grown by b");
    assert_eq!(client.get("/get?key=a").await.body, "1");
}
