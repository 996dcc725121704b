//! A private `redis-server` per test, and tools to look inside it. The harness talks to Redis
//! through fred only: a plain client per server or node, and `fred::monitor` for MONITOR.

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::TcpListener,
    path::PathBuf,
    pin::Pin,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use fred::{
    clients::Client,
    cmd,
    interfaces::{ClientLike, HashesInterface, KeysInterface},
    monitor::MonitorCommand,
    prelude::{Builder, Config, Error, Options, ServerConfig},
    types::{FromValue, Key, Value},
};
use futures_util::{Stream, StreamExt};
use tower_scs::RedisStore;

use super::tls::{self, Certs};

/// How long the harness waits for a connection to a test server, or for its answer to one
/// command.
const HARNESS_TIMEOUT: Duration = Duration::from_secs(2);

/// A `redis-server` started by the test on a free loopback port, with persistence off. It is
/// killed, and its directory removed, on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Extra command-line arguments, after the harness's own (see `start_with`).
    args: Vec<String>,
    /// The connection that found the server ready, kept for the inspector.
    client: Option<Client>,
    /// With certificates, the server listens for TLS only (`--port 0 --tls-port <port>`).
    tls: Option<Certs>,
    /// The restricted user the stores log in as (`start_as`), `name:password`; the harness's
    /// own connections stay the default user.
    user: Option<String>,
}

/// The ACL a store needs, with the default prefix `scs:session:`: `docs/guarantees.md`
/// ("Least privilege") documents exactly this text, which `acl::` checks.
pub const STORE_ACL: &str = "resetkeys ~scs:session:* resetchannels -@all +hgetall +evalsha \
    +eval +scan +zrange +del +exists +hdel +hkeys +hmget +hset +hstrlen +pexpire +type +zadd +zrem \
    +zremrangebyscore +client|id +info +ping";

/// What the local cache needs on top of [`STORE_ACL`] (documented with it).
pub const CACHE_ACL: &str = "&__redis__:invalidate +subscribe +client|tracking";

/// The Redis key of session `id` (a token, or its hash) under the default prefix, as the store
/// writes it: the prefix, then the 32 bytes the id encodes.
pub fn session_key(id: &str) -> Key {
    let raw = URL_SAFE_NO_PAD
        .decode(id)
        .expect("a session id is base64url");
    assert_eq!(raw.len(), 32, "a session id encodes 32 bytes");
    Key::from(
        [RedisStore::DEFAULT_PREFIX.as_bytes(), &raw]
            .concat()
            .into_boxed_slice(),
    )
}

/// How the tests name a key: a session's (a prefix of the tests', `…session:` or `x:`, then 32
/// bytes) as `scs:session:<id>`, with the id's text, so that tests compare keys with the tokens
/// they hold; any other key as its text.
pub fn key_name(key: &[u8]) -> String {
    let (head, raw) = key.split_at(key.len().saturating_sub(32));
    match std::str::from_utf8(head) {
        Ok(prefix) if is_session_prefix(prefix) => {
            format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw))
        }
        _ => String::from_utf8(key.to_vec()).expect("a test key is text or a session's"),
    }
}

/// The key a name stands for ([`key_name`]'s inverse): `scs:session:<token>` (or another test
/// prefix's) is that session's key; anything else is itself.
pub fn key_of_name(name: &str) -> Key {
    let split = name
        .len()
        .checked_sub(43)
        .filter(|&i| name.is_char_boundary(i));
    let Some((head, id)) = split.map(|i| name.split_at(i)) else {
        return Key::from(name);
    };
    match URL_SAFE_NO_PAD.decode(id) {
        Ok(raw) if raw.len() == 32 && is_session_prefix(head) => {
            Key::from([head.as_bytes(), &raw].concat().into_boxed_slice())
        }
        _ => Key::from(name),
    }
}

/// Whether the tests' session keys go under `prefix`: `scs:session:` and others ending in
/// `session:`, or `x:`.
fn is_session_prefix(prefix: &str) -> bool {
    prefix.ends_with("session:") || prefix == "x:"
}

/// The restricted user of [`RedisServer::start_as`].
pub const USER: (&str, &str) = ("sessions", "s3ss10ns-pw");

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like `start`, with `args` added to the command line after the harness's own defaults,
    /// which they override (a later option wins): `["--appendonly", "yes"]` turns AOF on in the
    /// server's own temp dir. `restart` keeps the same arguments, port and dir, so a server that
    /// persists comes back with its data.
    pub async fn start_with(args: &[&str]) -> Self {
        Self::start_on(args, None).await
    }

    /// A server that speaks TLS only, with a certificate for `127.0.0.1` signed by a CA made
    /// for it (see [`Certs`]): [`config`](Self::config) trusts that CA, [`url`](Self::url) is
    /// `rediss://`.
    pub async fn start_tls() -> Self {
        Self::start_on(&[], Some(Certs::generate())).await
    }

    /// Like [`start_tls`](Self::start_tls), the server also wanting a client certificate
    /// signed by its CA (`--tls-auth-clients yes`), which [`config`](Self::config) has.
    pub async fn start_mutual_tls() -> Self {
        let args = ["--tls-auth-clients", "yes"];
        Self::start_on(&args, Some(Certs::generate())).await
    }

    /// A server whose stores log in as the user [`USER`], allowed `rules` (an ACL, e.g.
    /// [`STORE_ACL`]) and also the keys under `admin:session:` (the second prefix of
    /// `layers::`): [`store_url`](Self::store_url) and [`store`](Self::store) carry its name and
    /// password, the inspector and MONITOR stay the default user.
    pub async fn start_as(rules: &str) -> Self {
        let (name, password) = USER;
        let mut user = vec!["--user", name, "on"];
        let password = format!(">{password}");
        user.push(&password);
        user.extend(rules.split_whitespace());
        user.push("~admin:session:*");
        let mut server = Self::start_with(&user).await;
        server.user = Some(format!("{name}:{}", USER.1));
        server
    }

    async fn start_on(args: &[&str], mut tls: Option<Certs>) -> Self {
        require("redis-server");
        for attempt in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "tower-scs-redis-{}-{port}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("create the redis temp dir");
            let mut server = RedisServer {
                child: None,
                port,
                dir,
                args: args.iter().map(|a| a.to_string()).collect(),
                client: None,
                tls: tls.take(),
                user: None,
            };
            if server.spawn().await {
                return server;
            }
            tls = server.tls.take();
            // Dropping `server` kills the child and removes its directory; try another port.
        }
        panic!("redis-server did not start after 5 attempts");
    }

    /// Starts redis-server on `self.port`; false if it did not come up.
    async fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(certs) => {
                (command.args(["--port", "0", "--tls-port", &port])).args(certs.server_args())
            }
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let config = self.config();
        self.client = wait_ready_on(&mut self.child, config).await;
        self.client.is_some()
    }

    /// Kills the server and starts a new one on the same port, with the same arguments and dir:
    /// empty, unless `start_with` turned persistence on (then it comes back with its data).
    pub async fn restart(&mut self) {
        self.stop();
        for _ in 0..5 {
            if self.spawn().await {
                return;
            }
            self.stop();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own directory (its `--dir`: AOF and RDB files, when persistence is on).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://…` for a TLS server (which a client trusting
    /// only the system's roots refuses: use [`config`](Self::config)).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// fred's config for this server: [`url`](Self::url)'s, trusting the test CA when the
    /// server speaks TLS, with the client certificate for a server that asks for one (rustls
    /// shows it only then).
    pub fn config(&self) -> Config {
        let mut config = Config::from_url(&self.url()).expect("the test server's URL");
        if let Some(certs) = &self.tls {
            config.tls = Some(tls::with_client_cert(&certs.ca_file(), certs));
        }
        config
    }

    /// The URL the stores use: [`url`](Self::url), with the restricted user's name and
    /// password when the server has one (`start_as`).
    pub fn store_url(&self) -> String {
        match &self.user {
            None => self.url(),
            Some(user) => self.url().replacen("://", &format!("://{user}@"), 1),
        }
    }

    /// fred's config for a store on this server: [`store_url`](Self::store_url)'s, trusting
    /// the test CA when the server speaks TLS.
    pub fn store_config(&self) -> Config {
        let mut config = Config::from_url(&self.store_url()).expect("the test server's URL");
        config.tls = self.config().tls;
        config
    }

    /// A store on this server: `RedisStore::from_config(self.store_config())`.
    pub async fn store(&self) -> RedisStore {
        RedisStore::from_config(self.store_config())
            .await
            .expect("RedisStore::from_config on the test server")
    }

    /// The certificates of a TLS server.
    pub fn certs(&self) -> Option<&Certs> {
        self.tls.as_ref()
    }

    /// Kills the server (to make the store fail).
    pub fn stop(&mut self) {
        self.client = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The harness's own fred connection to the server, for looking at (and planting) what
    /// the store wrote; binary-safe through `custom` with `Value` arguments.
    pub fn client(&self) -> Client {
        self.client
            .clone()
            .unwrap_or_else(|| panic!("redis-server on port {} is stopped", self.port))
    }

    /// Reads and queries the server through [`client`](Self::client).
    pub fn inspector(&self) -> Inspector {
        Inspector(self.client())
    }

    /// Sends `DEBUG SLEEP <secs>` on a connection of its own: the server answers nobody until it
    /// has slept. Returns when the reply comes, that is when the sleep is over; the sleep
    /// started at least `secs` before that.
    pub async fn debug_sleep(&self, secs: u64) -> Instant {
        let client = (connect_on(self.config()).await).expect("connect for DEBUG SLEEP");
        // The reply comes after the sleep: wait for it longer than the harness usually does.
        let patient = Options {
            timeout: Some(HARNESS_TIMEOUT + Duration::from_secs(secs)),
            ..Options::default()
        };
        let reply: String = client
            .with_options(&patient)
            .custom(cmd!("DEBUG"), vec!["SLEEP".to_owned(), secs.to_string()])
            .await
            .expect("DEBUG SLEEP");
        let ended = Instant::now();
        assert_eq!(reply, "OK", "DEBUG SLEEP");
        let _ = client.quit().await;
        ended
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nobody listens on now (the OS's choice of a free one; another process may
/// take it before the caller binds it, which the callers retry on).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A fred client connected to `127.0.0.1:port`: one connection, never re-established, the
/// connection and every command bounded by `HARNESS_TIMEOUT`.
pub async fn connect(port: u16) -> Result<Client, Error> {
    connect_on(plain(port)).await
}

/// Like [`connect`], to the server (and with the TLS settings) of `config`.
pub async fn connect_on(config: Config) -> Result<Client, Error> {
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = HARNESS_TIMEOUT;
            c.internal_command_timeout = HARNESS_TIMEOUT;
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| p.default_command_timeout = HARNESS_TIMEOUT)
        .build()?;
    client.init().await?;
    Ok(client)
}

/// One command on `client`, its reply converted to `R` (an error reply is an `Err`). An
/// argument naming a session's key as [`key_name`] does goes as that key.
pub async fn command<R: FromValue>(
    client: &Client,
    name: &'static str,
    args: &[&str],
) -> Result<R, Error> {
    let args: Vec<Value> = args.iter().map(|a| key_of_name(a).into()).collect();
    client.custom(cmd!(name), args).await
}

/// `field:value` from an `INFO`-style or `CLUSTER INFO` text.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// Waits until the redis-server on `port` answers `PING` (which also waits out loading an AOF),
/// and checks that the one answering is `child` (another test may have raced us for the port):
/// the connection that checked, or `None` if the child exited, another process answers, or
/// nothing answered within 10 s.
pub async fn wait_ready(child: &mut Option<Child>, port: u16) -> Option<Client> {
    wait_ready_on(child, plain(port)).await
}

/// fred's config for a plain (not TLS) server on `127.0.0.1:port`.
fn plain(port: u16) -> Config {
    Config {
        server: ServerConfig::new_centralized("127.0.0.1", port),
        ..Config::default()
    }
}

/// Like [`wait_ready`], for the server (and with the TLS settings) of `config`.
pub async fn wait_ready_on(child: &mut Option<Child>, config: Config) -> Option<Client> {
    let pid = child
        .as_ref()
        .map(Child::id)
        .unwrap_or_default()
        .to_string();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Some(child) = child {
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
        }
        if let Ok(client) = connect_on(config.clone()).await {
            let pong: Result<String, _> = client.ping(None).await;
            if pong.is_ok_and(|p| p == "PONG") {
                let info: Result<String, _> = client.custom(cmd!("INFO"), vec!["server"]).await;
                if info.is_ok_and(|i| info_field(&i, "process_id") == Some(pid.as_str())) {
                    return Some(client);
                }
                let _ = client.quit().await;
                return None;
            }
            let _ = client.quit().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The metadata fields of a session hash, by name: `d` as `deadline`, `s` as `size`, `e` as
/// `expiry`, `r` as `remember`, `c` as `created`, `l` as `seen` (empty when it has none).
pub fn meta(hash: &HashMap<String, String>) -> HashMap<String, String> {
    let names = [
        ("d", "deadline"),
        ("s", "size"),
        ("e", "expiry"),
        ("r", "remember"),
        ("c", "created"),
        ("l", "seen"),
    ];
    (names.iter())
        .filter_map(|(field, name)| Some(((*name).to_owned(), hash.get(*field)?.clone())))
        .collect()
}

/// Reads and queries the test's own Redis server.
pub struct Inspector(Client);

impl Inspector {
    /// Every key, named as [`key_name`] says, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.raw_keys().await.iter().map(|k| key_name(k)).collect();
        keys.sort();
        keys
    }

    /// Every key as Redis holds it (session keys in their binary form), sorted.
    pub async fn raw_keys(&self) -> Vec<Vec<u8>> {
        let keys: Vec<Key> = self.0.custom(cmd!("KEYS"), vec!["*"]).await.expect("KEYS");
        let mut keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        keys.sort();
        keys
    }

    /// `MEMORY USAGE` of the key of exactly these bytes.
    pub async fn memory_usage(&self, key: &[u8]) -> i64 {
        let args = vec![Value::from("USAGE"), Value::from(key)];
        self.0
            .custom(cmd!("MEMORY"), args)
            .await
            .expect("MEMORY USAGE")
    }

    /// Whether `key` holds a session record (a hash with a deadline, `d`), not a renewed
    /// token's marker.
    pub async fn is_session(&self, key: &str) -> bool {
        self.0
            .hexists(key_of_name(key), "d")
            .await
            .expect("HEXISTS")
    }

    /// The keys that hold session records, sorted.
    pub async fn sessions(&self) -> Vec<String> {
        let mut sessions = Vec::new();
        for key in self.keys().await {
            if self.is_session(&key).await {
                sessions.push(key);
            }
        }
        sessions
    }

    pub async fn exists(&self, key: &str) -> bool {
        let n: i64 = self.0.exists(key_of_name(key)).await.expect("EXISTS");
        n == 1
    }

    pub async fn pttl(&self, key: &str) -> i64 {
        self.0.pttl(key_of_name(key)).await.expect("PTTL")
    }

    pub async fn hgetall(&self, key: &str) -> HashMap<String, String> {
        self.0.hgetall(key_of_name(key)).await.expect("HGETALL")
    }

    /// `INFO <section>`, as text.
    pub async fn info(&self, section: &str) -> String {
        command(&self.0, "INFO", &[section])
            .await
            .unwrap_or_else(|e| panic!("INFO {section}: {e}"))
    }

    /// `total_commands_processed` from `INFO stats`. The INFO command itself is counted only
    /// after it ran, so two INFOs in a row differ by exactly 1.
    pub async fn total_commands_processed(&self) -> u64 {
        let info = self.info("stats").await;
        info_field(&info, "total_commands_processed")
            .and_then(|n| n.parse().ok())
            .expect("total_commands_processed in INFO stats")
    }

    /// Any command, e.g. to plant foreign data under a session key (an argument naming a key as
    /// [`key_name`] does goes as that key); panics on an error reply.
    pub async fn command(&self, name: &'static str, args: &[&str]) -> Value {
        command(&self.0, name, args)
            .await
            .unwrap_or_else(|e| panic!("{name} {args:?}: {e}"))
    }

    /// Any command whose reply is `OK`, e.g. `CLIENT PAUSE 800 ALL`; panics on another reply.
    pub async fn ok(&self, name: &'static str, args: &[&str]) {
        let reply = self.command(name, args).await;
        assert_eq!(reply.as_str().as_deref(), Some("OK"), "{name} {args:?}");
    }

    async fn echo(&self, text: &str) {
        let _: String = self.0.custom(cmd!("ECHO"), vec![text]).await.expect("ECHO");
    }
}

/// A `MONITOR` connection: sees every command the server runs, in order.
pub struct Monitor {
    commands: Pin<Box<dyn Stream<Item = MonitorCommand> + Send>>,
}

static MARKERS: AtomicU64 = AtomicU64::new(0);

impl Monitor {
    pub async fn start(server: &RedisServer) -> Self {
        let commands = fred::monitor::run(server.config()).await.expect("MONITOR");
        Monitor {
            commands: Box::pin(commands),
        }
    }

    /// The names of the commands that clients sent since the previous call, in order.
    /// Commands a Lua script ran (`[0 lua]` in MONITOR's output) are left out: they are part of
    /// the one EVAL/EVALSHA the client sent. The end is found with an `ECHO` marker sent through
    /// `inspector` after the commands to be counted.
    ///
    /// Names only: `fred::monitor` parses a command's name and origin from every line, but
    /// drops the arguments from the first one MONITOR escapes on (a backslash, a non-ASCII or
    /// control byte).
    pub async fn client_commands(&mut self, inspector: &Inspector) -> Vec<String> {
        let marker = format!("marker-{}", MARKERS.fetch_add(1, Ordering::Relaxed));
        inspector.echo(&marker).await;
        let mut commands = Vec::new();
        loop {
            let command = tokio::time::timeout(Duration::from_secs(5), self.commands.next())
                .await
                .expect("MONITOR output")
                .expect("MONITOR connection open");
            let name = command.command.to_ascii_lowercase();
            if name == "echo"
                && command.args.first().and_then(Value::as_str).as_deref() == Some(marker.as_str())
            {
                return commands;
            }
            if command.client != "lua" {
                commands.push(name);
            }
        }
    }
}

/// Panics with an install hint when `bin` (a Redis binary) is not on PATH.
pub fn require(bin: &str) {
    match Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{bin} not found on PATH: install it (apt-get install redis-server)")
        }
        Err(e) => panic!("cannot run {bin}: {e}"),
        Ok(_) => {}
    }
}
