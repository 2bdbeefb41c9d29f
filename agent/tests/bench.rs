//! The design's table targets, measured: one change at 1,000,000 policies applies in under
//! 1 ms, and the table stays under 256 bytes a policy. A benchmark, so ignored by default:
//!
//! `cargo test -p tlsfleet-agent --release --test bench -- --ignored --nocapture`

#![allow(clippy::unwrap_used)] // tests may unwrap (STYLE: only what peers control may not)

mod common;

use std::time::{Duration, Instant};

use common::*;
use tlsfleet_policy::{HttpsConfig, TlsVersion};

const POLICIES: usize = 1_000_000;
const CHUNK: usize = 10_000;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc is needed");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn policy(i: usize) -> HttpsConfig {
    // A few distinct policies, as in a real fleet.
    match i % 4 {
        0 => tls13_only(),
        1 => tls12_and_13(),
        2 => versions(&[TlsVersion::Tls12]),
        _ => custom(
            &[TlsVersion::Tls12, TlsVersion::Tls13],
            &["ECDHE-ECDSA-AES128-GCM-SHA256"],
            &[],
        ),
    }
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn one_change_at_a_million_policies() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Ecdsa));
    table.apply_snapshot(0, vec![]);
    let before = resident_bytes();
    let load = Instant::now();
    let mut revision = 0;
    for start in (0..POLICIES).step_by(CHUNK) {
        let chunk = (start..start + CHUNK)
            .map(|i| (bucket(&format!("bucket-{i:08}")), policy(i)))
            .collect();
        revision += 1;
        assert!(table.apply_delta(revision, chunk, vec![]).is_ack());
    }
    let load = load.elapsed();
    let per_policy = (resident_bytes() - before) / POLICIES;
    assert_eq!(table.snapshot().len(), POLICIES);
    assert_eq!(table.snapshot().distinct_configs(), 4);

    let mut samples: Vec<Duration> = (0..2_000)
        .map(|n| {
            let i = (n * 7919) % POLICIES;
            let change = vec![(bucket(&format!("bucket-{i:08}")), policy(i + 1))];
            revision += 1;
            let t = Instant::now();
            let outcome = table.apply_delta(revision, change, vec![]);
            let elapsed = t.elapsed();
            assert!(outcome.is_ack());
            elapsed
        })
        .collect();
    samples.sort();
    let (p50, p99) = (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    );
    println!(
        "load {POLICIES} policies: {load:?}; resident {per_policy} B/policy; \
         one change: p50 {p50:?}, p99 {p99:?}"
    );
    assert!(
        p50 < Duration::from_millis(1),
        "one change took {p50:?} (p50)"
    );
    assert!(per_policy < 256, "{per_policy} bytes a policy");
}
