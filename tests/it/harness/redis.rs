//! A private `redis-server` per test, and tools to look inside it.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use fred::{
    clients::Client,
    cmd,
    interfaces::{ClientLike, HashesInterface, KeysInterface},
    prelude::{Builder, Config},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt},
    sync::mpsc,
};

/// A `redis-server` started by the test on a free loopback port, with persistence off. It is
/// killed, and its directory removed, on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Extra command-line arguments, after the harness's own (see `start_with`).
    args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like `start`, with `args` added to the command line after the harness's own defaults,
    /// which they override (a later option wins): `["--appendonly", "yes"]` turns AOF on in the
    /// server's own temp dir. `restart` keeps the same arguments, port and dir, so a server that
    /// persists comes back with its data.
    pub fn start_with(args: &[&str]) -> Self {
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
            };
            if server.spawn() {
                return server;
            }
            // Dropping `server` kills the child and removes its directory; try another port.
        }
        panic!("redis-server did not start after 5 attempts");
    }

    /// Starts redis-server on `self.port`; false if it did not come up.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        self.wait_ready()
    }

    /// Kills the server and starts a new one on the same port, with the same arguments and dir:
    /// empty, unless `start_with` turned persistence on (then it comes back with its data).
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..5 {
            if self.spawn() {
                return;
            }
            self.stop();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    fn wait_ready(&mut self) -> bool {
        wait_ready(&mut self.child, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own directory (its `--dir`: AOF and RDB files, when persistence is on).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (to make the store fail).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one inline command (e.g. `CLIENT PAUSE 2500 ALL`, `INFO persistence`) on a new
    /// connection and returns the reply; panics on an error reply.
    pub fn inline(&self, command: &str) -> String {
        raw_command(self.port, command).unwrap_or_else(|e| panic!("{command}: {e}"))
    }

    /// Sends one inline command that blocks the server (e.g. `DEBUG SLEEP 2`) from a thread,
    /// and returns once it is sent; the thread waits for the reply and ends with it.
    pub fn inline_in_background(&self, command: &str) -> std::thread::JoinHandle<String> {
        let (port, command) = (self.port, command.to_owned());
        let (sent, is_sent) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream
                .write_all(format!("{command}\r\n").as_bytes())
                .expect("send");
            let _ = sent.send(());
            let mut reply = String::new();
            BufReader::new(stream)
                .read_line(&mut reply)
                .unwrap_or_else(|e| panic!("{command}: {e}"));
            reply
        });
        is_sent.recv().expect("the command could not be sent");
        thread
    }

    /// A separate fred connection for looking at what the store wrote.
    pub async fn inspector(&self) -> Inspector {
        let config = Config::from_url(&self.url()).expect("redis url");
        let client = Builder::from_config(config).build().expect("fred client");
        client.init().await.expect("connect the inspector");
        Inspector(client)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Waits until the redis-server on `port` answers (`PING`, which also waits out loading an AOF),
/// and checks that the one answering is `child` (another test may have raced us for the port).
pub fn wait_ready(child: &mut Option<Child>, port: u16) -> bool {
    let pid = child.as_ref().map(Child::id).unwrap_or_default();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Some(child) = child {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
        }
        if raw_command(port, "PING").is_ok_and(|r| r == "+PONG\r\n") {
            return raw_command(port, "INFO server")
                .is_ok_and(|info| info.contains(&format!("process_id:{pid}\r\n")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends one inline command and returns its reply (status, error, integer or bulk string).
fn raw_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    match line.strip_prefix('$') {
        Some(len) => {
            let len: usize = len.trim().parse().map_err(std::io::Error::other)?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            Ok(String::from_utf8_lossy(&body[..len]).into_owned())
        }
        None if line.starts_with('-') => Err(std::io::Error::other(line)),
        None => Ok(line),
    }
}

/// The `name=value` pairs of a session hash's `meta` field (empty when it has none).
pub fn meta(hash: &HashMap<String, String>) -> HashMap<String, String> {
    hash.get("meta").map(|m| meta_pairs(m)).unwrap_or_default()
}

/// The `name=value` pairs of a `meta` field's value.
pub fn meta_pairs(meta: &str) -> HashMap<String, String> {
    meta.split(' ')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Reads and queries the test's own Redis server.
pub struct Inspector(Client);

impl Inspector {
    /// Every key, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.0.custom(cmd!("KEYS"), vec!["*"]).await.expect("KEYS");
        keys.sort();
        keys
    }

    /// Whether `key` holds a session record (a hash with `meta`), not a renewed token's marker.
    pub async fn is_session(&self, key: &str) -> bool {
        self.0.hexists(key, "meta").await.expect("HEXISTS")
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
        let n: i64 = self.0.exists(key).await.expect("EXISTS");
        n == 1
    }

    pub async fn pttl(&self, key: &str) -> i64 {
        self.0.pttl(key).await.expect("PTTL")
    }

    pub async fn hgetall(&self, key: &str) -> HashMap<String, String> {
        self.0.hgetall(key).await.expect("HGETALL")
    }

    /// `total_commands_processed` from `INFO stats`. The INFO command itself is counted only
    /// after it ran, so two INFOs in a row differ by exactly 1.
    pub async fn total_commands_processed(&self) -> u64 {
        let info: String = self
            .0
            .custom(cmd!("INFO"), vec!["stats"])
            .await
            .expect("INFO stats");
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_commands_processed in INFO stats")
    }

    /// Any command, e.g. to plant foreign data under a session key.
    pub async fn command(&self, name: &'static str, args: &[&str]) -> fred::types::Value {
        self.0
            .custom(cmd!(name), args.to_vec())
            .await
            .unwrap_or_else(|e| panic!("{name} {args:?}: {e}"))
    }

    async fn echo(&self, text: &str) {
        let _: String = self.0.custom(cmd!("ECHO"), vec![text]).await.expect("ECHO");
    }
}

/// A `MONITOR` connection: sees every command the server runs, in order.
pub struct Monitor {
    lines: mpsc::UnboundedReceiver<String>,
}

static MARKERS: AtomicU64 = AtomicU64::new(0);

impl Monitor {
    pub async fn start(server: &RedisServer) -> Self {
        Monitor {
            lines: monitor_lines(server).await,
        }
    }

    /// The names of the commands that clients sent since the previous call, in order.
    /// Commands a Lua script ran (`[0 lua]` in MONITOR's output) are left out: they are part of
    /// the one EVAL/EVALSHA the client sent. The end is found with an `ECHO` marker sent through
    /// `inspector` after the commands to be counted.
    pub async fn client_commands(&mut self, inspector: &Inspector) -> Vec<String> {
        let marker = format!("marker-{}", MARKERS.fetch_add(1, Ordering::Relaxed));
        inspector.echo(&marker).await;
        let mut commands = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.recv())
                .await
                .expect("MONITOR output")
                .expect("MONITOR connection open");
            if line.contains(&marker) {
                return commands;
            }
            // +1700000000.123456 [0 127.0.0.1:40000] "hgetall" "scs:session:..."
            let Some((origin, rest)) = line.split_once("] ") else {
                continue;
            };
            if origin.ends_with(" lua") {
                continue;
            }
            let name = rest.trim_start_matches('"').split('"').next().unwrap_or("");
            commands.push(name.to_ascii_lowercase());
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

/// Opens a `MONITOR` connection to `server`: every line the server prints, in order.
pub async fn monitor_lines(server: &RedisServer) -> mpsc::UnboundedReceiver<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .expect("connect MONITOR");
    stream.write_all(b"MONITOR\r\n").await.expect("MONITOR");
    let mut reader = tokio::io::BufReader::new(stream);
    let mut ok = String::new();
    reader.read_line(&mut ok).await.expect("MONITOR reply");
    assert_eq!(ok, "+OK\r\n");
    let (tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut line = String::new();
        while reader.read_line(&mut line).await.is_ok_and(|n| n > 0) {
            if tx.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });
    lines
}
