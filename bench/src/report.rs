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
    // Ratios against the bare server (index 1) and nginx: the median of each round's ratio
    // (the two ran a few seconds apart in a round; rounds drift more than that).
    let cpu = |si: usize, ci: usize| cell(&r.samples[si][ci], |x| x.cpu_us);
    let nginx = r.servers.iter().position(|s| s.name.starts_with("nginx"));
    let ratio_to = |si: usize, bases: &[usize], ci: usize| {
        if bases.is_empty() {
            return "–".to_owned();
        }
        let per_round: Vec<f64> = (0..r.samples[si][ci].len())
            .map(|round| {
                let base = bases
                    .iter()
                    .filter_map(|b| r.samples[*b][ci].get(round))
                    .map(|x| x.cpu_us)
                    .fold(f64::INFINITY, f64::min);
                r.samples[si][ci][round].cpu_us / base
            })
            .collect();
        format!("{:.2}x", median(per_round))
    };
    // The fastest bare server of each round (one per provider).
    let bare: Vec<usize> = (0..r.servers.len())
        .filter(|i| !r.servers[*i].per_name)
        .collect();
    let nginx: Vec<usize> = nginx.into_iter().collect();
    let ratio = |si: usize, base: Option<usize>, ci: usize| match base {
        Some(_) => ratio_to(si, &bare, ci),
        None => ratio_to(si, &nginx, ci),
    };
    out.push_str(
        "| server | TLS 1.3 µs CPU / handshake | TLS 1.3 handshakes/s | TLS 1.2 µs CPU / handshake | \
         TLS 1.2 handshakes/s | vs the fastest bare rustls (1.3 / 1.2) | vs nginx (1.3 / 1.2) |\n\
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
            ratio(si, Some(1), 0),
            ratio(si, Some(1), 1),
            ratio(si, None, 0),
            ratio(si, None, 1),
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
    // The agent's resumptions while its table is swapped, against its own without swaps
    // (the same round's sample: the median of the per-round ratios).
    let agent = 0;
    let against_unswapped = |ci: usize| {
        let per_round: Vec<f64> = r.swapped[ci]
            .iter()
            .zip(&r.samples[agent][ci])
            .map(|(swapped, plain)| swapped.cpu_us / plain.cpu_us)
            .collect();
        median(per_round)
    };
    let swapped = |ci: usize, f: fn(&Sample) -> f64| cell(&r.swapped[ci], f);
    let _ = writeln!(
        out,
        "\n| {}, its table swapped every {} ms | TLS 1.3 resumed µs CPU | resumed share | vs \
         without swaps | TLS 1.2 resumed µs CPU | resumed share | vs without swaps |\n\
         |---|---|---|---|---|---|---|",
        r.servers.get(agent).map_or("agent", |s| s.name.as_str()),
        crate::swaps::INTERVAL.as_millis()
    );
    let _ = writeln!(
        out,
        "| a PUT to another bucket each time | {:.0} | {:.0} % | {:.2}x | {:.0} | {:.0} % | {:.2}x |",
        swapped(2, |x| x.cpu_us),
        swapped(2, |x| x.resumed_share) * 100.0,
        against_unswapped(2),
        swapped(3, |x| x.cpu_us),
        swapped(3, |x| x.resumed_share) * 100.0,
        against_unswapped(3),
    );
    let _ = writeln!(
        out,
        "\nOne swap with no client connected: {:.0} µs of the agent's CPU (the delta received, \
         applied and acknowledged).",
        r.swap_cpu_us
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshakes::{Enforcement, Server, Settings};

    fn sample(cpu_us: f64) -> Sample {
        Sample {
            rate: 1000.0,
            cpu_us,
            resumed_share: 1.0,
        }
    }

    #[test]
    fn medians_and_ratios_come_from_the_samples() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(vec![]).is_nan());
        let server = |name: &str| Server {
            name: name.into(),
            version: String::new(),
            addr: ([127, 0, 0, 1], 1).into(),
            pids: vec![],
            per_name: true,
        };
        let cells = |base: f64| {
            (0..4)
                .map(|_| vec![sample(base), sample(base * 3.0), sample(base * 2.0)])
                .collect()
        };
        let yes = Enforcement {
            tls13_only: true,
            custom_suites: true,
            tls12_allowed: true,
        };
        let r = Results {
            servers: vec![
                server("agent"),
                Server {
                    per_name: false,
                    ..server("bare")
                },
                server("nginx"),
            ],
            samples: vec![cells(110.0), cells(100.0), cells(200.0)],
            swapped: vec![
                vec![],
                vec![],
                vec![sample(121.0), sample(363.0), sample(242.0)],
                vec![sample(110.0); 3],
            ],
            swap_cpu_us: 50.0,
            enforced: vec![yes; 3],
            settings: Settings {
                policies: 10,
                peer_names: 10,
                seconds: 1.0,
                warmup_seconds: 0.0,
                rounds: 3,
                concurrency: 1,
                peers: true,
                ring: false,
            },
        };
        let md = markdown(&r);
        assert!(
            md.contains("| agent | 220 | 1000 | 220 | 1000 | 1.10x / 1.10x | 0.55x / 0.55x |"),
            "{md}"
        );
        assert!(md.contains("| nginx | yes | yes | yes |"), "{md}");
        // Under swaps, each round against the agent's own round: 1.1x in every round of
        // TLS 1.3; TLS 1.2's rounds give 1.0, 0.33 and 0.5.
        assert!(
            md.contains(
                "| a PUT to another bucket each time | 242 | 100 % | 1.10x | 110 | 100 % | 0.50x |"
            ),
            "{md}"
        );
    }
}
