//! The markdown report the bench prints on stdout (the format of BENCHMARKS.md): the machine
//! and the load, the table of medians, the per-round ratios, every round's figures, each
//! variant's Redis command mix, and the first failed check of each variant, if any.

use std::fmt::Write as _;

use crate::{
    Settings,
    measure::{Run, median},
    redis::in_script,
    servers::Variant,
};

/// The rounds the medians are taken over. A round is quiet when, in each of its three runs,
/// other processes used at most `BENCH_MAX_OTHER` cores; medians use the quiet rounds when
/// there are at least 3 of them, every round otherwise. (`--live` takes its medians the same
/// way, its "variants" being each server on each population.)
pub struct Rounds<'a> {
    /// Every run of variant `i` in `runs[i]`, one a round.
    pub runs: &'a [Vec<Run>],
    count: usize,
    pub quiet: Vec<usize>,
    pub used: Vec<usize>,
}

impl<'a> Rounds<'a> {
    pub fn new(s: &Settings, runs: &'a [Vec<Run>]) -> Self {
        let count = runs.first().map_or(0, Vec::len);
        let quiet: Vec<usize> = (0..count)
            .filter(|&r| Self::busiest(runs, r) <= s.max_other)
            .collect();
        let used = if quiet.len() >= 3 {
            quiet.clone()
        } else {
            (0..count).collect()
        };
        Rounds {
            runs,
            count,
            quiet,
            used,
        }
    }

    /// The most CPU other processes used during a run of round `r`, in cores.
    fn busiest(runs: &[Vec<Run>], r: usize) -> f64 {
        runs.iter().map(|v| v[r].other_cores).fold(0.0, f64::max)
    }

    /// The median of `f` over the rounds used, for variant `i`.
    pub fn median(&self, i: usize, f: fn(&Run) -> f64) -> f64 {
        median(self.used.iter().map(|&r| f(&self.runs[i][r])).collect())
    }

    /// Ratios of `f` within each round (its three runs are adjacent in time), then their median.
    pub fn paired(&self, a: usize, b: usize, f: fn(&Run) -> f64) -> f64 {
        median(self.per_round(a, b, f))
    }

    /// The ratio of `f` of variant `a` to variant `b` in each round used.
    pub fn per_round(&self, a: usize, b: usize, f: fn(&Run) -> f64) -> Vec<f64> {
        self.used
            .iter()
            .map(|&r| f(&self.runs[a][r]) / f(&self.runs[b][r]))
            .collect()
    }

    /// The round in which other processes used the least CPU.
    fn calmest(&self) -> usize {
        (0..self.count)
            .min_by(|&a, &b| Self::busiest(self.runs, a).total_cmp(&Self::busiest(self.runs, b)))
            .unwrap_or(0)
    }
}

/// Prints the report on stdout.
pub fn report(
    s: &Settings,
    runs: &[Vec<Run>],
    races: &[Option<usize>],
    redis_version: &str,
    load_before: &str,
) {
    let rounds = Rounds::new(s, runs);
    let mut out = String::new();
    header(&mut out, s, &rounds, redis_version, load_before);
    table(&mut out, s, &rounds, races);
    every_round(&mut out, s, &rounds);
    command_mix(&mut out, s, &rounds);
    for (i, v) in s.variants.iter().enumerate() {
        if let Some(f) = runs[i].iter().find_map(|r| r.first_failure.as_ref()) {
            let _ = writeln!(out, "\nFirst check failure of {}: {f}", v.label());
        }
    }
    println!("{out}");
}

/// The title, the machine, the load and which rounds the medians cover.
fn header(out: &mut String, s: &Settings, rounds: &Rounds, redis_version: &str, load: &str) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let count = rounds.count;
    let _ = writeln!(out, "\n### tower-scs comparison — {}\n", today());
    let _ = writeln!(
        out,
        "Machine: {cores} × {}, Linux {}; {redis_version}; load average {load} before, \
         {} after.",
        cpu_model(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        loadavg()
    );
    let _ = writeln!(
        out,
        "Load: {} users, {}% writes; one unmeasured pass over every server, then {count} rounds of \
         them all (order rotating: A, B, C; B, C, A; C, A, B; …), each run {} s warm-up + {} s measured. Race: {} sessions × {} \
         concurrent requests, {} ms handler delay between read and write.",
        s.users,
        s.write_pct,
        s.warmup_secs,
        s.secs,
        s.race_sessions,
        s.race_requests,
        s.race_delay_ms
    );
    let which = if rounds.used.len() == count {
        format!("all {count} rounds")
    } else {
        let list: Vec<String> = rounds.used.iter().map(|r| (r + 1).to_string()).collect();
        let used = rounds.used.len();
        format!("{used} quiet rounds of {count} ({})", list.join(", "))
    };
    let _ = writeln!(
        out,
        "Medians over {which}; a round is quiet when other processes used at most {} cores \
         during each of its runs ({} of {count} were).\n",
        s.max_other,
        rounds.quiet.len()
    );
}

/// The table of medians, one row a variant, and the ratios between variants.
fn table(out: &mut String, s: &Settings, rounds: &Rounds, races: &[Option<usize>]) {
    let _ = writeln!(
        out,
        "| variant | req/s | p50 ms | p99 ms | server CPU µs/req | Redis cmds/req (executed) \
         | Redis cmds/req (sent) | Redis CPU µs/req | check failures | lost updates (race) |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let race_total = s.race_sessions * s.race_requests;
    let med = |i, f| rounds.median(i, f);
    for (i, v) in s.variants.iter().enumerate() {
        // Failures are counted over every round, quiet or not.
        let failures: u64 = rounds.runs[i].iter().map(|r| r.failures).sum();
        let lost = match races[i] {
            Some(l) => format!("{l} / {race_total}"),
            None => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.1} | {failures} | {lost} |",
            v.label(),
            med(i, |r| r.rps),
            med(i, |r| r.p50_ms),
            med(i, |r| r.p99_ms),
            med(i, |r| r.server_cpu_us),
            med(i, |r| r.commands.executed),
            med(i, |r| r.commands.sent),
            med(i, |r| r.redis_cpu_us),
        );
    }
    ratios(out, s, rounds);
}

/// The median per-round ratios between the variants that ran: tower-scs, and tower-scs with the
/// local cache, against each other server; each tower-scs option against plain tower-scs; and
/// the share of reads the local cache served.
fn ratios(out: &mut String, s: &Settings, rounds: &Rounds) {
    let at = |v: Variant| s.variants.iter().position(|&x| x == v);
    let mut pairs = Vec::new();
    for ours in [Variant::Scs, Variant::ScsCache] {
        for other in [Variant::Ts, Variant::Floor, Variant::Ceiling] {
            pairs.push((ours, other));
        }
    }
    for option in [Variant::ScsSigned, Variant::ScsHeader, Variant::ScsCache] {
        pairs.push((option, Variant::Scs));
    }
    pairs.push((Variant::Ceiling, Variant::Floor));
    let pairs: Vec<(usize, usize)> = pairs
        .into_iter()
        .filter_map(|(a, b)| Some((at(a)?, at(b)?)))
        .collect();
    if !pairs.is_empty() {
        let _ = writeln!(out, "\nMedian of per-round ratios:");
    }
    for (a, b) in pairs {
        let _ = writeln!(
            out,
            "- {} / {}: req/s {:.2}×, p50 {:.2}×, server CPU per request {:.2}×",
            s.variants[a].label(),
            s.variants[b].label(),
            rounds.paired(a, b, |r| r.rps),
            rounds.paired(a, b, |r| r.p50_ms),
            rounds.paired(a, b, |r| r.server_cpu_us),
        );
    }
    if let Some(c) = at(Variant::ScsCache) {
        // Every read the cache does not serve is one HGETALL; each write's script (an EVALSHA)
        // runs one too, to hand the cache what it wrote, and Redis counts both alike.
        let hits = |r: &Run| {
            let count = |name: &str| r.commands.mix.get(name).map_or(0.0, |&(n, _)| n);
            let misses = (count("hgetall") - count("evalsha")).max(0.0);
            1.0 - misses / r.read_share
        };
        let _ = writeln!(
            out,
            "\n{}: reads served from the local cache (1 − (HGETALL − EVALSHA) per read), median {:.1}%",
            s.variants[c].label(),
            100.0 * rounds.median(c, hits)
        );
    }
}

/// Every run's headline figures, quiet or not.
fn every_round(out: &mut String, s: &Settings, rounds: &Rounds) {
    let _ = writeln!(
        out,
        "\nEvery round: req/s · server CPU µs/req · client CPU µs/req · CPU used by other \
         processes (cores); * = not quiet:\n"
    );
    for (i, v) in s.variants.iter().enumerate() {
        let line: Vec<String> = rounds.runs[i]
            .iter()
            .enumerate()
            .map(|(r, run)| {
                let mark = if rounds.quiet.contains(&r) { "" } else { "*" };
                format!(
                    "{:.0} · {:.1} · {:.1} · {:.2}{mark}",
                    run.rps, run.server_cpu_us, run.client_cpu_us, run.other_cores
                )
            })
            .collect();
        let _ = writeln!(out, "- {}: {}", v.label(), line.join("; "));
    }
}

/// Each variant's Redis commands per request, in the quietest round.
fn command_mix(out: &mut String, s: &Settings, rounds: &Rounds) {
    let calmest = rounds.calmest();
    let _ = writeln!(
        out,
        "\nRedis commands per request, with Redis's own time per call (`INFO commandstats`, wall \
         clock inside Redis), in the quietest round ({}); \"in script\" = run by tower-scs's \
         commit script, not sent by the server:\n",
        calmest + 1
    );
    for (i, v) in s.variants.iter().enumerate() {
        let mix: Vec<String> = rounds.runs[i][calmest]
            .commands
            .mix
            .iter()
            .map(|(c, (n, us))| {
                let inside = if in_script(c) { " in script" } else { "" };
                format!("{}{inside} {n:.3} ({us:.2} µs)", c.to_uppercase())
            })
            .collect();
        let _ = writeln!(out, "- {}: {}", v.label(), mix.join(", "));
    }
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn today() -> String {
    let date = time::OffsetDateTime::now_utc().date();
    let (year, month, day) = (date.year(), u8::from(date.month()), date.day());
    format!("{year:04}-{month:02}-{day:02}")
}
