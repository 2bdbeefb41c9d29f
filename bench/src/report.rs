//! The markdown tables of a handshake run (what BENCHMARKS.md shows).

use std::fmt::Write as _;

use crate::handshakes::{Results, Sample, CASES};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median of one field over a cell's samples.
fn cell(samples: &[Sample], f: fn(&Sample) -> f64) -> f64 {
    median(samples.iter().map(f).collect())
}

/// The tables: full handshakes, resumed ones, and what each server enforced.
pub fn markdown(r: &Results) -> String {
    let s = &r.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} policies at the agent, {} names at the peers; {} rounds of {} s a case (after {} s of \
         warm-up), {} connections at a time; medians. Server on core 0, client on core {}.\n",
        s.policies,
        s.peer_names.min(s.policies),
        s.rounds,
        s.seconds,
        s.warmup_seconds,
        s.concurrency,
        crate::cpu::cores().saturating_sub(1)
    );
    // Ratios against the bare server (index 1) and nginx (index 2, when run).
    let cpu = |si: usize, ci: usize| cell(&r.samples[si][ci], |x| x.cpu_us);
    let ratio = |si: usize, base: usize, ci: usize| {
        if base < r.servers.len() {
            format!("{:.2}x", cpu(si, ci) / cpu(base, ci))
        } else {
            "–".into()
        }
    };
    out.push_str(
        "| server | TLS 1.3 µs CPU / handshake | TLS 1.3 handshakes/s | TLS 1.2 µs CPU / handshake | \
         TLS 1.2 handshakes/s | vs bare rustls (1.3 / 1.2) | vs nginx (1.3 / 1.2) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (si, server) in r.servers.iter().enumerate() {
        let rate = |ci: usize| cell(&r.samples[si][ci], |x| x.rate);
        let _ = writeln!(
            out,
            "| {}{} | {:.0} | {:.0} | {:.0} | {:.0} | {} / {} | {} / {} |",
            server.name,
            if server.version.is_empty() {
                String::new()
            } else {
                format!(" ({})", server.version)
            },
            cpu(si, 0),
            rate(0),
            cpu(si, 1),
            rate(1),
            ratio(si, 1, 0),
            ratio(si, 1, 1),
            ratio(si, 2, 0),
            ratio(si, 2, 1),
        );
    }
    out.push_str(
        "\n| server | TLS 1.3 resumed µs CPU | resumed share | vs its full | TLS 1.2 resumed µs CPU | \
         resumed share | vs its full |\n|---|---|---|---|---|---|---|\n",
    );
    for (si, server) in r.servers.iter().enumerate() {
        let share = |ci: usize| cell(&r.samples[si][ci], |x| x.resumed_share) * 100.0;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} % | {:.2}x | {:.0} | {:.0} % | {:.2}x |",
            server.name,
            cpu(si, 2),
            share(2),
            cpu(si, 2) / cpu(si, 0),
            cpu(si, 3),
            share(3),
            cpu(si, 3) / cpu(si, 1),
        );
    }
    out.push_str(
        "\n| server | TLS 1.2 refused to a TLS 1.3-only bucket | other TLS 1.2 suites refused to a \
         custom-suite bucket | TLS 1.2 served where allowed |\n|---|---|---|---|\n",
    );
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    for (server, e) in r.servers.iter().zip(&r.enforced) {
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} |",
            server.name,
            if server.per_name {
                ""
            } else {
                " (not per name)"
            },
            yes(e.tls13_only),
            yes(e.custom_suites),
            yes(e.tls12_allowed),
        );
    }
    debug_assert_eq!(CASES.len(), 4);
    out
}
