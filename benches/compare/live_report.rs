//! `--live`'s markdown report: the populations (creation, Redis memory, the drain of `ids()`),
//! the table of medians per variant and population, the per-round ratios of each population
//! to the first, and every run.

use std::fmt::Write as _;

use crate::{
    Settings,
    live::{Population, Target},
    measure::Run,
    report::{Rounds, cpu_model, loadavg, today},
};

pub fn report(
    s: &Settings,
    pops: &[Population],
    targets: &[Target],
    runs: &[Vec<Run>],
    redis_version: &str,
    load_before: &str,
) {
    let rounds = Rounds::new(s, runs);
    let (used, quiet) = (rounds.used.len(), rounds.quiet.len());
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        out,
        "\n### tower-scs with live sessions in Redis — {}\n",
        today()
    );
    let _ = writeln!(
        out,
        "Machine: {cores} × {}; {redis_version}; load average {load_before} before, {} after.",
        cpu_model(),
        loadavg()
    );
    let _ = writeln!(
        out,
        "Load: {} users, {}% writes, each request on a session drawn uniformly among the N live \
         ones (every read checked); one unmeasured pass, then {} rounds alternating between the \
         populations (order rotating), each run {} s warm-up + {} s measured. Medians over {} \
         rounds ({quiet} of {} quiet: other processes at most {} cores).\n",
        s.users, s.write_pct, s.rounds, s.warmup_secs, s.secs, used, s.rounds, s.max_other
    );
    populations(&mut out, pops);
    table(&mut out, pops, targets, &rounds);
    ratios(&mut out, pops, targets, &rounds);
    every_run(&mut out, pops, targets, runs);
    println!("{out}");
}

/// Creation, memory and iteration of each population.
fn populations(out: &mut String, pops: &[Population]) {
    let _ = writeln!(
        out,
        "| live sessions | created in (256 commits in flight) | used_memory | used_memory growth \
         per session | ids() drained in | ids/s | peak RSS growth over the drain |"
    );
    let _ = writeln!(out, "|--:|--:|--:|--:|--:|--:|--:|");
    for p in pops {
        let it = &p.iterated;
        let created = p.created.as_secs_f64();
        let growth = p.used_full.saturating_sub(p.used_empty) as f64 / p.n as f64;
        let reset = if it.peak_reset {
            ""
        } else {
            " (peak not reset)"
        };
        let _ = writeln!(
            out,
            "| {} | {created:.1} s ({} /s) | {} | {growth:.0} B | {:.3} s | {} | {} KiB{reset} |",
            thousands(p.n as u64),
            thousands((p.n as f64 / created) as u64),
            thousands(p.used_full),
            it.took.as_secs_f64(),
            thousands((it.ids as f64 / it.took.as_secs_f64()) as u64),
            thousands(it.rss_growth_kib),
        );
    }
}

/// Medians per variant and population.
fn table(out: &mut String, pops: &[Population], targets: &[Target], rounds: &Rounds) {
    let _ = writeln!(
        out,
        "\n| variant | live sessions | req/s | p50 ms | p99 ms | server CPU µs/req | Redis CPU \
         µs/req | check failures |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|");
    for (i, t) in targets.iter().enumerate() {
        let med = |f: fn(&Run) -> f64| rounds.median(i, f);
        let failures: u64 = rounds.runs[i].iter().map(|r| r.failures).sum();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {failures} |",
            t.variant.label(),
            thousands(pops[t.pop].n as u64),
            med(|r| r.rps),
            med(|r| r.p50_ms),
            med(|r| r.p99_ms),
            med(|r| r.server_cpu_us),
            med(|r| r.redis_cpu_us),
        );
    }
}

/// Per variant, each population against the first, by the median of per-round ratios.
fn ratios(out: &mut String, pops: &[Population], targets: &[Target], rounds: &Rounds) {
    let _ = writeln!(
        out,
        "\nMedian of per-round ratios (runs of one round are adjacent in time):"
    );
    for (b, base) in targets.iter().enumerate().filter(|(_, t)| t.pop == 0) {
        for (a, t) in targets.iter().enumerate() {
            if t.variant != base.variant || t.pop == 0 {
                continue;
            }
            let ratio = |f: fn(&Run) -> f64| rounds.paired(a, b, f);
            let each: Vec<String> = (rounds.per_round(a, b, |r| r.rps).iter())
                .map(|x| format!("{:.1}%", 100.0 * x))
                .collect();
            let _ = writeln!(
                out,
                "- {}, {} / {} sessions: req/s **{:.1}%** (per round: {}), p50 {:.2}×, p99 {:.2}×, \
                 Redis CPU per request {:.2}×",
                t.variant.label(),
                thousands(pops[t.pop].n as u64),
                thousands(pops[0].n as u64),
                100.0 * ratio(|r| r.rps),
                each.join(", "),
                ratio(|r| r.p50_ms),
                ratio(|r| r.p99_ms),
                ratio(|r| r.redis_cpu_us),
            );
        }
    }
}

/// Every run's req/s, p50, p99 and the other processes' CPU; then the first failed check.
fn every_run(out: &mut String, pops: &[Population], targets: &[Target], runs: &[Vec<Run>]) {
    let _ = writeln!(
        out,
        "\nEvery round: req/s · p50 ms · p99 ms · CPU of other processes (cores):\n"
    );
    for (i, t) in targets.iter().enumerate() {
        let line: Vec<String> = runs[i]
            .iter()
            .map(|r| {
                format!(
                    "{:.0} · {:.2} · {:.2} · {:.2}",
                    r.rps, r.p50_ms, r.p99_ms, r.other_cores
                )
            })
            .collect();
        let n = thousands(pops[t.pop].n as u64);
        let _ = writeln!(out, "- {}, {n}: {}", t.variant.label(), line.join("; "));
    }
    for (i, t) in targets.iter().enumerate() {
        if let Some(f) = runs[i].iter().find_map(|r| r.first_failure.as_ref()) {
            let _ = writeln!(out, "\nFirst check failure of {}: {f}", t.variant.label());
        }
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
