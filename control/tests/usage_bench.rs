//! The control server's usage store at the scale of the issue: 10,000 buckets (of a million)
//! seeing traffic, reported every minute for the hour kept, each window with full top lists.
//! A benchmark, so ignored by default:
//!
//! `cargo test -p tlsfleet-control --release --test usage_bench -- --ignored --nocapture`

#![allow(clippy::unwrap_used)] // a benchmark may panic: that is how it fails

/// The control server's allocator (`src/main.rs`): its resident size is the server's only
/// with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tlsfleet_control::usage::FleetUsage;
use tlsfleet_policy::{usage::Usage, ServedSuite};

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc is needed");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn an_hour_of_usage_for_ten_thousand_active_buckets() {
    const ACTIVE: usize = 10_000;
    const WINDOWS: i64 = 60;
    let mut usage = Usage::default();
    for c in 0..20u8 {
        let ip = std::net::IpAddr::from([10, c, 0, 1]);
        usage.handshake(ServedSuite::Tls13Aes256GcmSha384);
        usage.request(
            ServedSuite::Tls13Aes256GcmSha384,
            ip,
            Some(&format!("client-{c}/1.0")),
        );
        usage.request(
            ServedSuite::EcdheEcdsaAes128GcmSha256,
            ip,
            Some(&format!("old-{c}/0.9")),
        );
    }
    let store = FleetUsage::default();
    let now = 1_800_000_000;
    let before = resident_bytes();
    for w in 0..WINDOWS {
        let start = now - (WINDOWS - w) * 60;
        for i in 0..ACTIVE {
            store.record(&format!("bucket-{:08}", i * 100), start, &usage, now);
        }
    }
    let grown = resident_bytes().saturating_sub(before);
    assert_eq!(store.len(), ACTIVE);
    let merged = store.query("bucket-00000000", None, now);
    assert_eq!(merged.windows as i64, WINDOWS);
    let per_window = grown / (ACTIVE * WINDOWS as usize);
    println!(
        "control usage store: {ACTIVE} buckets x {WINDOWS} windows: {} MiB resident ({per_window} bytes per bucket-window)",
        grown >> 20
    );
    // The bound BENCHMARKS.md states: 512 bytes per bucket and window (300 MiB here).
    assert!(per_window < 512, "{per_window} bytes per bucket-window");
}
