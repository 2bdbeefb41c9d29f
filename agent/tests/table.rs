//! The policy table without sockets: sharing, incremental deltas, NACKs, readiness.

#![allow(clippy::unwrap_used)] // tests may unwrap (STYLE: only what peers control may not)

mod common;

use std::sync::Arc;

use common::*;
use tlsfleet_agent::table::Lookup;
use tlsfleet_policy::{PolicyKey, ServedVersion, TlsVersion};

#[test]
fn not_ready_and_revisionless_until_the_first_snapshot() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Ecdsa));
    assert!(!table.snapshot().is_ready());
    assert_eq!(table.snapshot().revision(), None);
    // A delta alone does not make the table ready: it may hold only part of the policies.
    let outcome = table.apply_delta(3, vec![(bucket("abc"), tls13_only())], vec![]);
    assert!(outcome.is_ack());
    assert!(!table.snapshot().is_ready());
    assert_eq!(table.snapshot().revision(), Some(3));
    table.apply_snapshot(4, vec![]);
    assert!(table.snapshot().is_ready());
    assert_eq!(
        (table.snapshot().revision(), table.snapshot().len()),
        (Some(4), 0)
    );
}

#[test]
fn equal_policies_share_one_server_config() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Ecdsa));
    let outcome = table.apply_snapshot(
        7,
        vec![
            (bucket("aaa"), tls13_only()),
            (bucket("bbb"), tls13_only()),
            // Stored differently (the duplicate 1.3), same effective policy.
            (
                bucket("ccc"),
                versions(&[TlsVersion::Tls13, TlsVersion::Tls10]),
            ),
            (bucket("ddd"), tls12_and_13()),
        ],
    );
    assert_eq!(outcome.errors, vec![]);
    assert_eq!(outcome.revision, 7);
    let (a, b, c, d) = (
        table.snapshot().server_config("aaa").cloned().unwrap(),
        table.snapshot().server_config("bbb").cloned().unwrap(),
        table.snapshot().server_config("ccc").cloned().unwrap(),
        table.snapshot().server_config("ddd").cloned().unwrap(),
    );
    assert!(Arc::ptr_eq(&a, &b));
    assert!(Arc::ptr_eq(&a, &c));
    assert!(!Arc::ptr_eq(&a, &d));
    // TLS 1.2 + 1.3 with every suite is the endpoint policy: its config is the endpoint's.
    assert!(Arc::ptr_eq(&d, table.snapshot().endpoint()));
    assert_eq!(table.snapshot().len(), 4);
    assert_eq!(table.snapshot().distinct_configs(), 2);
    assert_eq!(
        table.snapshot().policy_key("aaa").versions(),
        vec![ServedVersion::Tls13]
    );
    assert_eq!(table.snapshot().policy_key("nopolicy"), PolicyKey::ALL);
}

#[test]
fn a_delta_touches_only_its_buckets_and_drops_unused_configs() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Ecdsa));
    let tls12_one = custom(
        &[TlsVersion::Tls12],
        &["ECDHE-ECDSA-AES128-GCM-SHA256"],
        &[],
    );
    table.apply_snapshot(
        1,
        vec![
            (bucket("aaa"), tls13_only()),
            (bucket("bbb"), tls12_one.clone()),
            (bucket("ccc"), tls12_one.clone()),
        ],
    );
    assert_eq!(table.snapshot().distinct_configs(), 2);
    let before_a: *const _ = table.snapshot().config("aaa").unwrap();
    let before_b = table.snapshot().server_config("bbb").cloned().unwrap();

    let outcome = table.apply_delta(
        2,
        vec![
            (bucket("ccc"), tls13_only()),
            (bucket("ddd"), tls12_one.clone()),
        ],
        vec![bucket("bbb"), bucket("zzz")],
    );
    assert!(outcome.is_ack(), "{outcome:?}");
    let snap = table.snapshot();
    assert_eq!(snap.revision(), Some(2));
    // Untouched: the very same stored config and ServerConfig.
    assert!(std::ptr::eq(snap.config("aaa").unwrap(), before_a));
    assert!(snap.server_config("bbb").is_none());
    assert!(Arc::ptr_eq(
        snap.server_config("ccc").unwrap(),
        snap.server_config("aaa").unwrap()
    ));
    // `ddd` reuses the config `bbb` had: it was still in use by `ddd`'s key when `bbb` left.
    assert!(Arc::ptr_eq(snap.server_config("ddd").unwrap(), &before_b));
    assert_eq!(snap.len(), 3);
    drop(snap);

    table.apply_delta(3, vec![], vec![bucket("ddd")]);
    assert_eq!(
        table.snapshot().distinct_configs(),
        1,
        "the TLS 1.2 config is no longer used"
    );
    let mut names: Vec<_> = table
        .snapshot()
        .policies()
        .into_iter()
        .map(|(b, _)| b.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["aaa", "ccc"]);
    assert_eq!(
        table
            .snapshot()
            .policies()
            .iter()
            .find(|(b, _)| b.as_str() == "aaa")
            .unwrap()
            .1,
        tls13_only()
    );
}

#[test]
fn a_snapshot_replaces_the_table() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Ecdsa));
    table.apply_snapshot(
        1,
        vec![(bucket("aaa"), tls13_only()), (bucket("bbb"), tls13_only())],
    );
    let a = table.snapshot().server_config("aaa").cloned().unwrap();
    table.apply_snapshot(
        2,
        vec![
            (bucket("aaa"), tls13_only()),
            (bucket("ccc"), tls12_and_13()),
        ],
    );
    assert!(
        Arc::ptr_eq(&table.snapshot().server_config("aaa").cloned().unwrap(), &a),
        "unchanged bucket kept"
    );
    assert!(table.snapshot().server_config("bbb").is_none());
    assert_eq!(table.snapshot().len(), 2);
    assert_eq!(table.snapshot().revision(), Some(2));
}

#[test]
fn a_large_snapshot_keeps_every_bucket_in_order_and_each_distinct_policy_once() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Ecdsa));
    // More buckets than one block of the received snapshot holds, three distinct policies,
    // and a bucket sent twice: the later one stands, as in a delta.
    let kinds = [tls13_only(), tls12_and_13(), versions(&[TlsVersion::Tls12])];
    let mut policies: Vec<_> = (0..10_000)
        .map(|i| (bucket(&format!("bucket-{i:05}")), kinds[i % 3].clone()))
        .collect();
    policies.push((bucket("bucket-00000"), kinds[1].clone()));
    let received: tlsfleet_agent::table::Policies = policies.into_iter().collect();
    assert_eq!((received.len(), received.distinct()), (10_001, 3));
    let outcome = table.apply_snapshot(9, received);
    assert!(outcome.is_ack(), "{outcome:?}");
    let snap = table.snapshot();
    assert_eq!((snap.len(), snap.distinct_configs()), (10_000, 3));
    assert_eq!(snap.config("bucket-00000"), Some(&kinds[1]));
    for i in [1, 4095, 4096, 4097, 9_999] {
        let name = format!("bucket-{i:05}");
        assert_eq!(snap.config(&name), Some(&kinds[i % 3]), "{name}");
    }
    // Equal policies are one stored value, whichever block their buckets arrived in.
    assert!(std::ptr::eq(
        snap.config("bucket-00003").unwrap(),
        snap.config("bucket-09999").unwrap()
    ));
}

#[test]
fn the_cache_written_from_the_table_loads_back_as_the_table() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Ecdsa));
    let dir = tempfile::tempdir().unwrap();
    let cache = tlsfleet_agent::cache::Cache::new(dir.path());
    // Nothing applied yet: nothing to write.
    assert_eq!(cache.store_table(&table.snapshot(), None).unwrap(), None);
    table.apply_snapshot(
        5,
        vec![
            (bucket("aaa"), tls13_only()),
            (bucket("bbb"), tls12_and_13()),
            (bucket("ccc"), tls13_only()),
        ],
    );
    let written = cache
        .store_table(&table.snapshot(), Some("store-1"))
        .unwrap();
    assert_eq!(written, Some(5));
    let loaded = cache.load().unwrap().unwrap();
    let mut policies = loaded.policies.clone();
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = table.snapshot().policies();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(policies, expected);
    assert_eq!(
        (loaded.revision, loaded.store_id.as_deref()),
        (5, Some("store-1"))
    );
    assert!(loaded.refused.is_empty() && loaded.default.is_none());
}

#[test]
fn an_unservable_policy_is_nacked_and_its_bucket_refused_never_served_looser() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Ecdsa));
    table.apply_snapshot(1, vec![(bucket("aaa"), tls13_only())]);
    let before = table.snapshot().server_config("aaa").cloned().unwrap();
    let rsa_only = custom(
        &[TlsVersion::Tls12],
        &["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"],
        &[],
    );
    let outcome = table.apply_delta(
        2,
        vec![
            (bucket("aaa"), rsa_only.clone()),
            (bucket("bbb"), rsa_only.clone()),
            (bucket("ccc"), tls13_only()),
        ],
        vec![],
    );
    assert_eq!(outcome.revision, 2);
    let mut errors = outcome.errors.clone();
    errors.sort_by(|x, y| x.bucket.cmp(&y.bucket));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].bucket, "aaa");
    assert_eq!(errors[1].bucket, "bbb");
    assert!(
        errors[0].reason.starts_with(
            "TLS 1.2 with only ECDHE-RSA suites cannot be served with this agent's ECDSA \
             certificate; "
        ),
        "{}",
        errors[0].reason
    );
    // Neither keeps an older, looser config (aaa was TLS 1.3; bbb had none, i.e. everything):
    // nothing both policies allow can be served, so both are refused. The rest of the
    // revision is applied.
    let snap = table.snapshot();
    for refused in ["aaa", "bbb"] {
        assert!(matches!(snap.lookup(refused), Lookup::Refused), "{refused}");
        assert_eq!(snap.policy_key(refused), PolicyKey::NONE);
    }
    drop(snap);
    assert!(table.snapshot().server_config("aaa").is_none());
    drop(before);
    assert!(table.snapshot().server_config("ccc").is_some());
    assert_eq!(table.snapshot().revision(), Some(2));

    // With TLS 1.3 also enabled, the policy is servable (TLS 1.3 only, never looser).
    let mixed = custom(
        &[TlsVersion::Tls12, TlsVersion::Tls13],
        &["ECDHE-RSA-AES128-GCM-SHA256"],
        &[],
    );
    assert!(table
        .apply_delta(3, vec![(bucket("aaa"), mixed)], vec![])
        .is_ack());
}

#[test]
fn an_rsa_certificate_refuses_ecdsa_only_tls12_policies() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Rsa));
    let outcome = table.apply_snapshot(
        1,
        vec![
            (
                bucket("ecd"),
                custom(
                    &[TlsVersion::Tls12],
                    &["ECDHE-ECDSA-AES128-GCM-SHA256"],
                    &[],
                ),
            ),
            (
                bucket("rsa"),
                custom(&[TlsVersion::Tls12], &["ECDHE-RSA-AES128-GCM-SHA256"], &[]),
            ),
        ],
    );
    assert_eq!(outcome.errors.len(), 1, "{outcome:?}");
    assert_eq!(outcome.errors[0].bucket, "ecd");
    assert!(
        outcome.errors[0].reason.contains("ECDHE-ECDSA"),
        "{}",
        outcome.errors[0].reason
    );
    assert!(table.snapshot().is_ready());
}

#[test]
fn an_invalid_policy_is_nacked() {
    let pki = Pki::new();
    let table = table_for(&pki.leaf(KeyType::Ecdsa));
    let outcome = table.apply_snapshot(
        1,
        vec![
            (bucket("aaa"), versions(&[])),
            (bucket("bbb"), versions(&[TlsVersion::Tls10])),
            (bucket("ccc"), tls13_only()),
        ],
    );
    let failed: Vec<_> = outcome.errors.iter().map(|e| e.bucket.as_str()).collect();
    assert_eq!(failed, ["aaa", "bbb"]);
    assert!(outcome
        .errors
        .iter()
        .all(|e| e.reason.starts_with("invalid policy: ")));
    // Both are refused (fail closed), not left to the endpoint's everything-goes config.
    assert_eq!(table.snapshot().len(), 3);
    for refused in ["aaa", "bbb"] {
        assert!(matches!(table.snapshot().lookup(refused), Lookup::Refused));
    }
}
