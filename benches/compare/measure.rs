//! One measured run of one variant, and the arithmetic around it: CPU time from `/proc` (the
//! server's, Redis's, this client's and the whole machine's), the Redis counters before and
//! after, latency percentiles, and the median the report takes over rounds.

use std::{
    net::SocketAddr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    Result, Settings,
    client::{MEASURE, STOP, Users, WARMUP},
    redis::{Commands, Redis},
};

/// What one measured run of one variant gave.
pub struct Run {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub server_cpu_us: f64,
    pub redis_cpu_us: f64,
    pub client_cpu_us: f64,
    /// CPU used by other processes during the window, in cores (noise indicator).
    pub other_cores: f64,
    /// What Redis ran for the requests, per request.
    pub commands: Commands,
    /// The share of the requests that were reads (`/get`).
    pub read_share: f64,
    pub failures: u64,
    pub first_failure: Option<String>,
}

impl Run {
    /// The run in one line, for the bench's progress on stderr.
    pub fn summary(&self) -> String {
        format!(
            "{:>6.0} req/s  p50 {:.2} ms  p99 {:.2} ms  CPU µs/req: server {:.1}, Redis {:.1}, \
             client {:.1}  other load {:.2} cores  failures {}",
            self.rps,
            self.p50_ms,
            self.p99_ms,
            self.server_cpu_us,
            self.redis_cpu_us,
            self.client_cpu_us,
            self.other_cores,
            self.failures
        )
    }
}

/// What every run measures against: the private Redis, and the length of a clock tick.
pub struct Ctx<'a> {
    redis: &'a Redis,
    ticks_per_sec: f64,
}

impl<'a> Ctx<'a> {
    pub fn new(redis: &'a Redis) -> Self {
        Ctx {
            redis,
            ticks_per_sec: clock_ticks_per_sec() as f64,
        }
    }

    /// One run: `users` closed-loop users for `warmup` unmeasured, then `secs` measured.
    pub async fn load_run(
        &self,
        s: &Settings,
        timing: (f64, f64),
        port: u16,
        server_pid: u32,
    ) -> Result<Run> {
        let users = |addr, phase: &Arc<AtomicU8>| Users::spawn(s.users, addr, s.write_pct, phase);
        self.load_run_with(timing, port, server_pid, users).await
    }

    /// One run of the users `spawn` starts (given the server's address and the phase they
    /// follow): `warmup` s unmeasured, then `secs` measured.
    pub async fn load_run_with(
        &self,
        (warmup, secs): (f64, f64),
        port: u16,
        server_pid: u32,
        spawn: impl FnOnce(SocketAddr, &Arc<AtomicU8>) -> Users,
    ) -> Result<Run> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let users = spawn(addr, &phase);
        tokio::time::sleep(Duration::from_secs_f64(warmup)).await;

        let cpu0 = CpuSnapshot::take(server_pid, self.redis.pid())?;
        let c0 = self.redis.counters().await?;
        phase.store(MEASURE, Ordering::Release);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        phase.store(STOP, Ordering::Release);
        let window = t0.elapsed().as_secs_f64();
        let cpu1 = CpuSnapshot::take(server_pid, self.redis.pid())?;
        let c1 = self.redis.counters().await?;

        let stats = users.join().await?;
        let latencies = stats.latencies_us;
        let n = latencies.len() as f64;
        if latencies.is_empty() {
            return Err("no request completed in the measured window".into());
        }
        let us_per_tick = 1e6 / self.ticks_per_sec;
        let per_request = |ticks: u64| ticks as f64 * us_per_tick / n;
        Ok(Run {
            rps: n / window,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            server_cpu_us: per_request(cpu1.server - cpu0.server),
            redis_cpu_us: per_request(cpu1.redis - cpu0.redis),
            client_cpu_us: per_request(cpu1.client - cpu0.client),
            other_cores: cpu1.others_since(&cpu0) as f64 / self.ticks_per_sec / window,
            commands: c1.since(&c0, n),
            read_share: stats.reads as f64 / n,
            failures: stats.failures,
            first_failure: stats.first_failure,
        })
    }
}

/// CPU ticks of the machine, the server, Redis and this process (the client), at one instant.
struct CpuSnapshot {
    machine: u64,
    server: u64,
    redis: u64,
    client: u64,
}

impl CpuSnapshot {
    fn take(server_pid: u32, redis_pid: u32) -> Result<CpuSnapshot> {
        Ok(CpuSnapshot {
            machine: machine_busy_ticks()?,
            server: cpu_ticks(server_pid)?,
            redis: cpu_ticks(redis_pid)?,
            client: cpu_ticks(std::process::id())?,
        })
    }

    /// Busy CPU of everything else on the machine since `before`, in ticks.
    fn others_since(&self, before: &CpuSnapshot) -> u64 {
        let ours = (self.server + self.redis + self.client)
            .saturating_sub(before.server + before.redis + before.client);
        (self.machine - before.machine).saturating_sub(ours)
    }
}

/// CPU time (user + system, all threads) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').ok_or("bad /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 here (0-based 11, 12).
    let utime: u64 = fields.get(11).ok_or("bad /proc stat")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("bad /proc stat")?.parse()?;
    Ok(utime + stime)
}

/// Busy CPU time of the whole machine (all cores, everything but idle and iowait), in ticks.
fn machine_busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok(total - idle)
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The `p` quantile of sorted microseconds, in milliseconds.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
