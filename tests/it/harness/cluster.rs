//! A private Redis Cluster, or a primary/replica pair behind a Sentinel, per test: real
//! `redis-server` processes on free loopback ports, killed (and their directories removed) on
//! drop. Tests look inside through plain (centralized) fred connections, straight to the node
//! that holds a key, so nothing in the harness goes through fred's cluster routing; a new
//! connection for each question, since a failover closes clients' connections (a sentinel
//! kills those of the replica it promotes).
//! [`Traffic`] drives users through a failover and records what they saw.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    clients::Client,
    interfaces::ClientLike,
    prelude::Error,
    types::{FromValue, Value},
};
use http::StatusCode;
use tokio::task::JoinSet;

use super::{
    Client as HttpClient, Resp, free_port,
    redis::{self, command, connect, info_field, key_of_name, require},
    sleep_ms, wait_for,
};

/// How long a node may stay unreachable before the cluster counts it as failed. Short, so that a
/// failover happens within a few seconds.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1_000;
/// How long the sentinel waits before it counts the primary as down.
pub const SENTINEL_DOWN_AFTER_MS: u64 = 1_000;
/// The service name the sentinel monitors.
pub const SENTINEL_SERVICE: &str = "tower-scs";

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, removed by its owner's drop.
fn temp_root(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tower-scs-{kind}-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the redis temp dir");
    dir
}

/// One `redis-server` process, and the arguments that (re)start it.
struct Node {
    port: u16,
    child: Option<Child>,
    args: Vec<String>,
    /// Stopped with `SIGSTOP` ([`Node::hang`]): running, but answering nothing.
    hung: bool,
}

impl Node {
    /// Starts `redis-server` in a new directory under `root`, on a free port, with `args(port,
    /// dir)` (whatever comes after an optional config file, `--port` excluded). Retries with
    /// other ports if another process took the port first.
    async fn spawn(root: &Path, name: &str, args: impl Fn(u16, &Path) -> Vec<String>) -> Node {
        for attempt in 0..5 {
            let port = free_port();
            let dir = root.join(format!("{name}-{attempt}"));
            std::fs::create_dir_all(&dir).expect("create the node dir");
            let mut node = Node {
                port,
                child: None,
                args: args(port, &dir),
                hung: false,
            };
            if node.run().await {
                return node;
            }
        }
        panic!("redis-server ({name}) did not start after 5 attempts");
    }

    /// Starts the node's process on its port with its arguments; false (and no process) if it
    /// did not come up.
    async fn run(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        if let Some(client) = redis::wait_ready(&mut self.child, self.port).await {
            let _ = client.quit().await;
            return true;
        }
        self.kill();
        false
    }

    /// Running and not hung: a node the harness can ask.
    fn alive(&self) -> bool {
        self.child.is_some() && !self.hung
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the node with `SIGSTOP`: it hangs, its connections stay open and answer nothing,
    /// as behind a silent partition (killed on drop all the same).
    fn hang(&mut self) {
        let pid = self.child.as_ref().expect("a running node").id();
        let stopped = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("run kill -STOP");
        assert!(stopped.success(), "kill -STOP {pid}");
        self.hung = true;
    }
}

/// A node as `CLUSTER NODES` shows it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub port: u16,
    pub primary: bool,
    /// Flagged `fail` or `fail?`.
    pub failed: bool,
    /// Owns at least one slot.
    pub has_slots: bool,
}

/// One command on the node on `port`, on a connection of its own; the reply converted to `R`
/// (an error reply is an `Err`).
async fn ask<R: FromValue>(port: u16, name: &'static str, args: &[&str]) -> Result<R, Error> {
    let client = connect(port).await?;
    let reply = command(&client, name, args).await;
    let _ = client.quit().await;
    reply
}

/// `INFO replication` of the node on `port`, or what went wrong.
async fn replication(port: u16) -> Result<String, String> {
    ask(port, "INFO", &["replication"])
        .await
        .map_err(|e| format!("INFO replication on {port}: {e}"))
}

async fn cluster_nodes(node: &Client) -> Result<Vec<ClusterNode>, Error> {
    let text: String = command(node, "CLUSTER", &["NODES"]).await?;
    Ok(text
        .lines()
        .filter_map(|line| {
            // <id> <ip:port@cport> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = f.get(1)?.split(['@', ',']).next()?.rsplit(':').next()?;
            let flags: Vec<&str> = f.get(2)?.split(',').collect();
            Some(ClusterNode {
                port: port.parse().ok()?,
                primary: flags.contains(&"master"),
                failed: flags.contains(&"fail") || flags.contains(&"fail?"),
                has_slots: f.len() > 8,
            })
        })
        .collect())
}

/// The port that serves `slot` in a `CLUSTER SLOTS` reply: an array of `[start, end,
/// [host, port, id], replicas...]`.
fn slot_owner(slots: &[Value], slot: i64) -> Option<u16> {
    slots.iter().find_map(|range| {
        let Value::Array(r) = range else { return None };
        let (start, end) = (r.first()?.as_i64()?, r.get(1)?.as_i64()?);
        let Value::Array(primary) = r.get(2)? else {
            return None;
        };
        (start..=end)
            .contains(&slot)
            .then(|| u16::try_from(primary.get(1)?.as_i64()?).ok())
            .flatten()
    })
}

/// A Redis Cluster of `redis-server` processes started by the test (persistence off, short node
/// timeout), formed with `redis-cli --cluster create`. Everything is killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// The primaries right after creation, for the URL.
    seeds: Vec<u16>,
    root: PathBuf,
}

impl RedisCluster {
    /// Starts `primaries × (1 + replicas_per_primary)` nodes, creates the cluster and waits until
    /// every node sees all 16384 slots served and every replica is in sync with its primary.
    pub async fn start(primaries: usize, replicas_per_primary: usize) -> Self {
        require("redis-server");
        require("redis-cli");
        assert!(
            primaries >= 3,
            "redis-cli --cluster create needs 3 primaries"
        );
        let root = temp_root("cluster");
        let total = primaries * (1 + replicas_per_primary);
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(total),
            seeds: Vec::new(),
            root,
        };
        for i in 0..total {
            let node = Node::spawn(&cluster.root, &format!("node{i}"), |_, dir| {
                let bus_port = free_port().to_string();
                let config_file = dir.join("nodes.conf").display().to_string();
                let timeout = CLUSTER_NODE_TIMEOUT_MS.to_string();
                let dir = dir.display().to_string();
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config_file,
                    "--cluster-node-timeout",
                    &timeout,
                    "--cluster-port",
                    &bus_port,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &dir,
                ]
                .map(String::from)
                .to_vec()
            })
            .await;
            cluster.nodes.push(node);
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas_per_primary.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_healthy(Duration::from_secs(20)).await;
        cluster.seeds = cluster.primaries().await;
        assert_eq!(cluster.seeds.len(), primaries, "primaries after create");
        cluster
    }

    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=…`, the primaries at creation.
    pub fn url(&self) -> String {
        let (first, rest) = self.seeds.split_first().expect("a created cluster");
        let nodes: Vec<String> = rest.iter().map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", nodes.join("&"))
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.alive())
    }

    /// The first live node: the one the harness asks about the cluster.
    fn first_live(&self) -> u16 {
        self.live().next().expect("a live node").port
    }

    /// The cluster as the first live node sees it.
    pub async fn nodes(&self) -> Vec<ClusterNode> {
        let client = connect(self.first_live()).await.expect("connect");
        let nodes = cluster_nodes(&client).await.expect("CLUSTER NODES");
        let _ = client.quit().await;
        nodes
    }

    /// The ports of the primaries that serve slots and are not failed, sorted.
    pub async fn primaries(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .nodes()
            .await
            .into_iter()
            .filter(|n| n.primary && !n.failed && n.has_slots)
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The port of the primary serving `key`'s slot, as the first live node sees it.
    pub async fn primary_of(&self, key: &str) -> u16 {
        let slot = i64::from(fred::util::redis_keyslot(key_of_name(key).as_bytes()));
        let slots: Vec<Value> = ask(self.first_live(), "CLUSTER", &["SLOTS"])
            .await
            .expect("CLUSTER SLOTS");
        slot_owner(&slots, slot).unwrap_or_else(|| panic!("no node serves slot {slot}: {slots:?}"))
    }

    /// `DBSIZE` of every primary, as (port, keys).
    pub async fn key_counts(&self) -> Vec<(u16, i64)> {
        let mut counts = Vec::new();
        for port in self.primaries().await {
            let n = ask(port, "DBSIZE", &[])
                .await
                .unwrap_or_else(|e| panic!("DBSIZE on {port}: {e}"));
            counts.push((port, n));
        }
        counts
    }

    /// Any command on the primary that serves `key`, e.g. `("PTTL", &[key])`.
    pub async fn key_command<R: FromValue>(
        &self,
        key: &str,
        name: &'static str,
        args: &[&str],
    ) -> R {
        let port = self.primary_of(key).await;
        ask(port, name, args)
            .await
            .unwrap_or_else(|e| panic!("{name} {args:?} on {port}: {e}"))
    }

    /// Whether `key` exists (asked of the primary serving its slot).
    pub async fn exists(&self, key: &str) -> bool {
        self.key_command::<i64>(key, "EXISTS", &[key]).await == 1
    }

    /// Whether `key` holds a session record (a hash with a deadline, `d`), not a replaced
    /// token's marker.
    pub async fn is_session(&self, key: &str) -> bool {
        self.key_command::<i64>(key, "HEXISTS", &[key, "d"]).await == 1
    }

    /// The successor a replaced token's marker at `key` points to, if it is one.
    pub async fn moved_to(&self, key: &str) -> Option<String> {
        self.key_command(key, "HGET", &[key, "moved"]).await
    }

    /// `PTTL` of `key` in milliseconds (asked of the primary serving its slot).
    pub async fn pttl(&self, key: &str) -> i64 {
        self.key_command(key, "PTTL", &[key]).await
    }

    /// The node of the serving primary listening on `port` (panics if there is none).
    async fn serving_primary(&mut self, port: u16) -> &mut Node {
        assert!(
            self.primaries().await.contains(&port),
            "{port} is not a primary: {:?}",
            self.nodes().await
        );
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// Kills the primary listening on `port` (panics if it is not a serving primary).
    pub async fn kill_primary(&mut self, port: u16) {
        self.serving_primary(port).await.kill();
    }

    /// Stops the primary listening on `port` with `SIGSTOP` (panics if it is not a serving
    /// primary): it hangs, its connections stay open and answer nothing, as behind a silent
    /// partition; the harness no longer asks it (killed on drop all the same).
    pub async fn hang_primary(&mut self, port: u16) {
        self.serving_primary(port).await.hang();
    }

    /// Starts again the node on `port` that [`kill_primary`](Self::kill_primary) killed: same
    /// port, arguments and `nodes.conf`, so it rejoins the cluster with the slots it had (and no
    /// data: persistence is off).
    pub async fn restart_node(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        assert!(!node.alive(), "node {port} is running");
        assert!(node.run().await, "node {port} did not restart");
    }

    /// Waits until every live node reports `cluster_state:ok` with all slots served, every
    /// serving primary is live, and every live replica is in sync with its primary; returns the
    /// time it took. After a failover that means a replica has taken over the dead primary's
    /// slots.
    pub async fn wait_healthy(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        let live: Vec<u16> = self.live().map(|n| n.port).collect();
        let live = &live;
        wait_for(limit, "a healthy cluster", move || async move {
            for &port in live {
                let client = connect(port).await.map_err(|e| format!("{port}: {e}"))?;
                let healthy = self.node_healthy(&client, port, live).await;
                let _ = client.quit().await;
                healthy?;
            }
            Ok(())
        })
        .await;
        started.elapsed()
    }

    /// Whether the node on `port` (through `client`) sees the cluster healthy, with `live` the
    /// ports of the nodes still running; what it sees otherwise.
    async fn node_healthy(&self, client: &Client, port: u16, live: &[u16]) -> Result<(), String> {
        let info: String = command(client, "CLUSTER", &["INFO"])
            .await
            .map_err(|e| format!("{port}: {e}"))?;
        let ok = info_field(&info, "cluster_state") == Some("ok")
            && info_field(&info, "cluster_slots_ok") == Some("16384");
        if !ok {
            return Err(format!("{port}: {info}"));
        }
        let nodes = cluster_nodes(client).await.map_err(|e| e.to_string())?;
        if nodes.len() != self.nodes.len() {
            return Err(format!("{port} knows {} nodes", nodes.len()));
        }
        for n in nodes.iter().filter(|n| n.primary && n.has_slots) {
            if n.failed || !live.contains(&n.port) {
                return Err(format!("{port} sees {} serving, failed or dead", n.port));
            }
        }
        let role: String = command(client, "INFO", &["replication"])
            .await
            .map_err(|e| e.to_string())?;
        if info_field(&role, "role") == Some("slave")
            && info_field(&role, "master_link_status") != Some("up")
        {
            return Err(format!("replica {port} not in sync: {role}"));
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// One primary, one replica of it, and one Sentinel monitoring them (quorum 1, short
/// `down-after-milliseconds` and `failover-timeout`), all started by the test and killed on drop.
pub struct RedisSentinel {
    primary: Node,
    replica: Node,
    sentinel: Node,
    root: PathBuf,
}

impl RedisSentinel {
    pub async fn start() -> Self {
        require("redis-server");
        let root = temp_root("sentinel");
        let data = |_: u16, dir: &Path| {
            ["--save", "", "--appendonly", "no", "--dir"]
                .map(String::from)
                .into_iter()
                .chain([dir.display().to_string()])
                .collect::<Vec<_>>()
        };
        let primary = Node::spawn(&root, "primary", data).await;
        let primary_port = primary.port.to_string();
        let replica = Node::spawn(&root, "replica", |port, dir| {
            let mut args = data(port, dir);
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary_port.clone(),
            ]);
            args
        })
        .await;
        let sentinel = Node::spawn(&root, "sentinel", |port, dir| {
            // Sentinel rewrites its config file, so each attempt gets its own.
            let conf = dir.join("sentinel.conf");
            let text = format!(
                "port {port}\n\
                 dir {dir}\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} {SENTINEL_DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                 sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                dir = dir.display()
            );
            std::fs::write(&conf, text).expect("write sentinel.conf");
            vec![conf.display().to_string(), "--sentinel".into()]
        })
        .await;
        let setup = RedisSentinel {
            primary,
            replica,
            sentinel,
            root,
        };
        setup.wait_ready(Duration::from_secs(15)).await;
        setup
    }

    /// `redis-sentinel://127.0.0.1:<sentinel port>?sentinelServiceName=<service>`: fred asks the
    /// sentinel for the primary, and asks again whenever it reconnects.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={SENTINEL_SERVICE}",
            self.sentinel.port
        )
    }

    pub fn primary_port(&self) -> u16 {
        self.primary.port
    }

    pub fn replica_port(&self) -> u16 {
        self.replica.port
    }

    /// The primary's address as the sentinel reports it.
    pub async fn reported_primary(&self) -> Option<u16> {
        let args = ["GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE];
        let addr: Vec<String> = ask(self.sentinel.port, "SENTINEL", &args).await.ok()?;
        addr.get(1)?.parse().ok()
    }

    /// Waits until the replica is in sync and the sentinel knows it (it can then promote it).
    async fn wait_ready(&self, limit: Duration) {
        let replica = self.replica.port;
        wait_for(
            limit,
            "replica in sync and known to the sentinel",
            move || async move {
                let info = replication(replica).await?;
                if info_field(&info, "master_link_status") != Some("up") {
                    return Err(info);
                }
                let args = ["REPLICAS", SENTINEL_SERVICE];
                let replicas: Vec<Vec<String>> = ask(self.sentinel.port, "SENTINEL", &args)
                    .await
                    .map_err(|e| e.to_string())?;
                let known = replicas.iter().any(|fields| {
                    let value = |k: &str| {
                        fields
                            .chunks(2)
                            .find(|kv| kv[0] == k)
                            .and_then(|kv| kv.get(1).map(String::as_str))
                    };
                    value("port") == Some(&replica.to_string()) && value("flags") == Some("slave")
                });
                if known {
                    Ok(())
                } else {
                    Err(format!("sentinel replicas: {replicas:?}"))
                }
            },
        )
        .await;
    }

    /// Kills the primary.
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// Stops the primary with `SIGSTOP`: it hangs, its connections stay open and answer
    /// nothing, as behind a silent partition (killed on drop all the same).
    pub fn hang_primary(&mut self) {
        self.primary.hang();
    }

    /// Waits until the sentinel reports the replica as the primary and the replica says it is
    /// one; returns the time it took.
    pub async fn wait_promoted(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        let replica = self.replica.port;
        wait_for(
            limit,
            "the sentinel promoting the replica",
            move || async move {
                let role = replication(replica).await?;
                match (self.reported_primary().await, info_field(&role, "role")) {
                    (Some(p), Some("master")) if p == replica => Ok(()),
                    state => Err(format!("{state:?}")),
                }
            },
        )
        .await;
        started.elapsed()
    }

    /// Any command on the node at `port` (primary or replica), its reply converted to `R`.
    pub async fn command<R: FromValue>(&self, port: u16, name: &'static str, args: &[&str]) -> R {
        assert!(
            [self.primary.port, self.replica.port].contains(&port),
            "{port} is neither the primary nor the replica"
        );
        ask(port, name, args)
            .await
            .unwrap_or_else(|e| panic!("{name} {args:?} on {port}: {e}"))
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.sentinel.kill();
        self.replica.kill();
        self.primary.kill();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What one user of a failover test saw.
#[derive(Debug, Default)]
pub struct UserLog {
    /// Acknowledged writes (200) that a later read did not find: the write was on the dead
    /// primary and had not reached its replica.
    pub lost_acked: u64,
    /// Requests answered 500 (the store failed or timed out).
    pub errors: u64,
    /// Rounds (write, then read back) that fully succeeded.
    pub rounds: u64,
    /// Time from the kill to the end of the first round that started after it and succeeded.
    pub back_after: Option<Duration>,
    /// The slowest request.
    pub slowest: Duration,
    /// Reads that returned a value this user never wrote.
    pub mixups: Vec<String>,
    /// The session was lost entirely: a write found no record and went into a new session.
    pub session_lost: bool,
}

/// Users that each write `u<n>-<seq>` under the key `v` of their own session and read it back,
/// in a loop, while the test kills a Redis node; each keeps a [`UserLog`].
pub struct Traffic {
    shared: Arc<Shared>,
    users: JoinSet<(usize, UserLog)>,
    count: usize,
}

/// What the users and the test share.
#[derive(Default)]
struct Shared {
    /// When the node was killed.
    killed: OnceLock<Instant>,
    /// How many users have completed a round.
    flowing: AtomicUsize,
    /// How many users have completed a round that started after the kill.
    resumed: AtomicUsize,
    stop: AtomicBool,
}

impl Traffic {
    /// Starts one loop per client; each client must already hold a session.
    pub fn start(clients: Vec<HttpClient>) -> Self {
        let shared = Arc::<Shared>::default();
        let mut users = JoinSet::new();
        let count = clients.len();
        for (u, client) in clients.into_iter().enumerate() {
            let user = run_user(u, client, shared.clone());
            users.spawn(async move { (u, user.await) });
        }
        Traffic {
            shared,
            users,
            count,
        }
    }

    /// Waits until every user has completed a round: the traffic flows, a kill now hits it.
    pub async fn wait_flowing(&self, limit: Duration) {
        let this = self;
        wait_for(limit, "every user completing a round", move || async move {
            match this.shared.flowing.load(Ordering::SeqCst) {
                n if n == this.count => Ok(()),
                n => Err(format!("{n} of {} users did", this.count)),
            }
        })
        .await;
    }

    /// Records that the node was killed now.
    pub fn killed_now(&self) {
        self.shared
            .killed
            .set(Instant::now())
            .expect("one kill per test");
    }

    /// Waits until every user has completed a round that started after the kill, for at most
    /// `limit` (the users' logs say which did not).
    pub async fn wait_resumed(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.shared.resumed.load(Ordering::SeqCst) < self.count && Instant::now() < until {
            sleep_ms(20).await;
        }
    }

    /// Stops the users and returns their logs, in the order of the clients.
    pub async fn stop(mut self) -> Vec<UserLog> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut logs: Vec<(usize, UserLog)> = Vec::new();
        while let Some(done) = self.users.join_next().await {
            logs.push(done.expect("user task"));
        }
        logs.sort_by_key(|(u, _)| *u);
        logs.into_iter().map(|(_, log)| log).collect()
    }
}

/// One request: a 200 or a 500, timed.
async fn timed(client: &mut HttpClient, uri: &str, log: &mut UserLog) -> Resp {
    let started = Instant::now();
    let res = client.get(uri).await;
    log.slowest = log.slowest.max(started.elapsed());
    match res.status {
        StatusCode::OK => {}
        StatusCode::INTERNAL_SERVER_ERROR => log.errors += 1,
        _ => panic!("neither 200 nor 500: {res:?}"),
    }
    res
}

async fn run_user(u: usize, mut client: HttpClient, shared: Arc<Shared>) -> UserLog {
    let token = client.token.clone().expect("a session");
    let prefix = format!("u{u}-");
    let mut log = UserLog::default();
    let (mut seq, mut acked) = (0u64, 0u64);
    while !shared.stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        seq += 1;
        let put = timed(
            &mut client,
            &format!("/put?key=v&value={prefix}{seq}"),
            &mut log,
        )
        .await;
        if put.status == StatusCode::OK {
            acked = seq;
        }
        if client.token.as_deref() != Some(token.as_str()) {
            log.session_lost = true;
            break;
        }
        let got = timed(&mut client, "/get?key=v", &mut log).await;
        if got.status != StatusCode::OK {
            continue;
        }
        let Some(read) = got.body.strip_prefix(&prefix).and_then(|n| n.parse().ok()) else {
            log.mixups.push(got.body);
            continue;
        };
        if read < acked {
            log.lost_acked += acked - read;
            acked = read;
        }
        if put.status == StatusCode::OK && read == seq {
            log.rounds += 1;
            if log.rounds == 1 {
                shared.flowing.fetch_add(1, Ordering::SeqCst);
            }
            match shared.killed.get() {
                Some(&at) if started > at && log.back_after.is_none() => {
                    log.back_after = Some(at.elapsed());
                    shared.resumed.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        sleep_ms(5).await;
    }
    log
}

/// Prints what the users of a failover test saw, and asserts what must hold whatever Redis
/// lost: nobody saw another user's data, no request outlived the store timeout by much, and
/// every user was served again within `resume_limit` of the kill.
pub fn report_and_check(what: &str, logs: &[UserLog], resume_limit: Duration) {
    let mut back: Vec<u128> = logs
        .iter()
        .map(|l| l.back_after.map_or(u128::MAX, |d| d.as_millis()))
        .collect();
    back.sort_unstable();
    println!("{what}: back after (ms, per user, sorted) {back:?}");
    println!(
        "{what}: 500s {}, successful rounds {}, acknowledged writes lost {}, sessions lost {}, \
         slowest request {:?}",
        logs.iter().map(|l| l.errors).sum::<u64>(),
        logs.iter().map(|l| l.rounds).sum::<u64>(),
        logs.iter().map(|l| l.lost_acked).sum::<u64>(),
        logs.iter().filter(|l| l.session_lost).count(),
        logs.iter().map(|l| l.slowest).max().unwrap_or_default(),
    );
    for (u, log) in logs.iter().enumerate() {
        assert!(log.mixups.is_empty(), "user {u} read {:?}", log.mixups);
        assert!(
            log.slowest < Duration::from_millis(2_500),
            "user {u}: a request took {:?} (store timeout 1 s)",
            log.slowest
        );
        let back = log
            .back_after
            .unwrap_or_else(|| panic!("user {u} not served again within {resume_limit:?}"));
        assert!(back < resume_limit, "user {u} served again after {back:?}");
    }
}
