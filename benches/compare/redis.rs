//! The private `redis-server` the three servers share: started on a free loopback port under a
//! guard process, polled until it answers, and read for its counters (`INFO stats
//! commandstats`), which say how many commands, and which, each variant cost per request. The
//! bench talks to it through one fred client.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use tower_scs::fred::{
    clients::Client,
    interfaces::ClientLike,
    prelude::{Builder, Config},
    types::{ClusterHash, CustomCommand},
};

use crate::{
    Result,
    procs::{Proc, free_port},
};

/// The bench's own `redis-server`, stopped (through its guard) on drop.
pub struct Redis {
    _guard: Proc,
    client: Client,
    port: u16,
    pid: u32,
    version: String,
}

impl Redis {
    /// Starts a private `redis-server` on a free loopback port, under a guard process (this
    /// binary with `--guard`), and waits until it answers `PING`.
    pub async fn start(bin: &str) -> Result<Redis> {
        let version = version(bin)?;
        for attempt in 1..=5 {
            let port = free_port()?;
            let port_arg = port.to_string();
            let mut args = vec!["--guard", bin, "--port", &port_arg];
            args.extend(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
            args.extend(["--daemonize", "no", "--loglevel", "warning"]);
            let name = format!("redis-server guard :{port}");
            let (mut guard, pid) = Proc::spawn_self(name, &args, "PID ")?;
            let pid = pid.ok_or("could not start redis-server")?;
            match answers(&mut guard, port).await? {
                Some(client) => {
                    let _guard = guard;
                    return Ok(Redis {
                        _guard,
                        client,
                        port,
                        pid,
                        version,
                    });
                }
                // The guard printed Redis's output. A port taken meanwhile: try another.
                None if attempt < 5 => {}
                None => return Err("redis-server did not start (its output is above)".into()),
            }
        }
        Err("redis-server did not start".into())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What `redis-server --version` printed.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub async fn used_memory(&self) -> Result<u64> {
        let info = CustomCommand::new_static("INFO", ClusterHash::FirstKey, false);
        let info: String = self.client.custom(info, vec!["memory"]).await?;
        let line = info.lines().find_map(|l| l.strip_prefix("used_memory:"));
        Ok(line
            .ok_or("no used_memory in INFO memory")?
            .trim()
            .parse()?)
    }

    /// Empties this private server (never another).
    pub async fn flushall(&self) -> Result<()> {
        let flush = CustomCommand::new_static("FLUSHALL", ClusterHash::FirstKey, false);
        let _: String = self.client.custom(flush, Vec::<String>::new()).await?;
        Ok(())
    }

    /// The counters now.
    pub async fn counters(&self) -> Result<Counters> {
        let info = CustomCommand::new_static("INFO", ClusterHash::FirstKey, false);
        let info: String = self
            .client
            .custom(info, vec!["stats", "commandstats"])
            .await?;
        Counters::parse(&info)
    }
}

/// `bin --version`, or why it cannot run.
fn version(bin: &str) -> Result<String> {
    match Command::new(bin).arg("--version").output() {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Ok(out) => Err(format!("`{bin} --version` failed: {}", out.status).into()),
        Err(e) => Err(format!(
            "cannot run `{bin}` ({e}). The bench starts its own Redis: install it \
             (e.g. `apt-get install redis-server`) or set REDIS_SERVER to its path."
        )
        .into()),
    }
}

/// Polls a new server until it answers `PING` (its client), or its guard exits (`None`).
async fn answers(guard: &mut Proc, port: u16) -> Result<Option<Client>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if guard.exited()? {
            return Ok(None);
        }
        if let Ok(client) = connect(port).await {
            return Ok(Some(client));
        }
        if Instant::now() > deadline {
            return Err("redis-server did not answer PING within 5 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fred client connected to the server on `port`, once it answers `PING` with `PONG`. No
/// reconnection: a server not up yet fails the connection, and the caller tries again.
async fn connect(port: u16) -> Result<Client> {
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}"))?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        .build()?;
    client.init().await?;
    let pong: String = client.ping(None).await?;
    if pong != "PONG" {
        return Err(format!("PING answered {pong:?}").into());
    }
    Ok(client)
}

/// Redis counters at one instant: `total_commands_processed`, and per command its calls and the
/// microseconds Redis spent in them.
#[derive(Default)]
pub struct Counters {
    total: u64,
    calls: BTreeMap<String, (u64, u64)>,
}

/// What Redis ran between two readings of its counters, per request served in between.
pub struct Commands {
    /// `total_commands_processed` per request (script-internal commands included).
    pub executed: f64,
    /// Commands the server sent per request (script-internal commands excluded).
    pub sent: f64,
    /// Per command Redis executed: calls per request, and Redis's own µs per call.
    pub mix: BTreeMap<String, (f64, f64)>,
}

impl Counters {
    fn parse(info: &str) -> Result<Counters> {
        let mut c = Counters::default();
        for line in info.lines() {
            if let Some(v) = line.strip_prefix("total_commands_processed:") {
                c.total = v.trim().parse()?;
            } else if let Some(rest) = line.strip_prefix("cmdstat_") {
                if let Some((name, stats)) = rest.split_once(':') {
                    let field = |key: &str| -> Result<u64> {
                        let v = stats
                            .split(',')
                            .find_map(|kv| kv.strip_prefix(key))
                            .ok_or_else(|| format!("cmdstat line without {key}"))?;
                        Ok(v.parse()?)
                    };
                    c.calls
                        .insert(name.to_owned(), (field("calls=")?, field("usec=")?));
                }
            }
        }
        Ok(c)
    }

    /// The commands run since `before`, over `requests` requests; the bench's own left out.
    pub fn since(&self, before: &Counters, requests: f64) -> Commands {
        let delta = |name: &str| {
            let (calls1, usec1) = self.calls.get(name).copied().unwrap_or_default();
            let (calls0, usec0) = before.calls.get(name).copied().unwrap_or_default();
            ((calls1 - calls0) as f64, (usec1 - usec0) as f64)
        };
        let own: f64 = BENCH_OWN.iter().map(|c| delta(c).0).sum();
        let script: f64 = self
            .calls
            .keys()
            .filter(|c| in_script(c))
            .map(|c| delta(c).0)
            .sum();
        let executed = (self.total - before.total) as f64 - own;
        let mix = self
            .calls
            .keys()
            .filter(|k| !BENCH_OWN.contains(&k.as_str()))
            .filter_map(|k| {
                let (calls, usec) = delta(k);
                (calls > 0.0).then(|| (k.clone(), (calls / requests, usec / calls)))
            })
            .collect();
        Commands {
            executed: executed / requests,
            sent: (executed - script) / requests,
            mix,
        }
    }
}

/// Every command a server of this bench may send Redis itself: tower-scs's `RedisStore` sends
/// `HGETALL`, `EVALSHA` (`EVAL` after a script-cache flush), and `DEL`/`SCAN`/`ZRANGE` on routes
/// this bench does not use, and with the local cache `CLIENT` (`ID`, `TRACKING`) and
/// `SUBSCRIBE` to set up tracking; tower-sessions' store `GET`, `SET`, `DEL`; the floor `GET`,
/// `SET`.
/// Any other command Redis counts was run by a Lua script (tower-scs's commit script runs
/// `HMGET`, `HSTRLEN`, `HSET`, `PEXPIREAT`, …), and is reported as such.
const TOP_LEVEL: [&str; 10] = [
    "get",
    "set",
    "hgetall",
    "evalsha",
    "eval",
    "del",
    "scan",
    "zrange",
    "client",
    "subscribe",
];

/// Whether Redis ran `command` inside a script rather than as sent by a server.
pub fn in_script(command: &str) -> bool {
    !TOP_LEVEL.contains(&command) && !BENCH_OWN.contains(&command)
}

/// Commands the bench itself sends to Redis, not counted against any variant.
const BENCH_OWN: [&str; 2] = ["info", "ping"];
