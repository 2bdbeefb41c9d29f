//! The last-known-good cache on a real filesystem.

#![allow(clippy::unwrap_used)] // a test may panic: that is how it fails

use std::fs;

use tlsfleet_agent::cache::{Cache, CacheError, CachedSnapshot, FORMAT_VERSION};
use tlsfleet_policy::{BucketName, CipherSuiteConfig, HttpsConfig, TlsConfig, TlsVersion};

fn bucket(name: &str) -> BucketName {
    name.parse().unwrap()
}

fn tls13_only() -> HttpsConfig {
    HttpsConfig {
        tls: TlsConfig {
            enable: true,
            tls_versions: vec![TlsVersion::Tls13],
        },
        cipher_suite: None,
    }
}

fn custom_suites() -> HttpsConfig {
    HttpsConfig {
        tls: TlsConfig {
            enable: true,
            tls_versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
        },
        cipher_suite: Some(CipherSuiteConfig {
            enable: Some(true),
            strong_cipher_suite: Some(false),
            custom_cipher_suites: vec!["ECDHE-ECDSA-AES128-GCM-SHA256".into()],
            tls13_custom_cipher_suites: vec!["TLS_AES_256_GCM_SHA384".into()],
        }),
    }
}

fn snapshot(revision: i64) -> CachedSnapshot {
    CachedSnapshot {
        revision,
        policies: vec![
            (bucket("bucket-a"), tls13_only()),
            (bucket("bucket-b"), custom_suites()),
            (bucket("bucket-c"), HttpsConfig::default()),
        ],
        ..CachedSnapshot::default()
    }
}

#[test]
fn nothing_stored_loads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        Cache::new(dir.path().join("never-created")).load().unwrap(),
        None
    );
}

#[test]
fn round_trip_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    // The directory is created by the first store.
    let cache = Cache::new(dir.path().join("cache"));
    cache.store(&snapshot(7)).unwrap();
    assert_eq!(cache.load().unwrap(), Some(snapshot(7)));

    let smaller = CachedSnapshot {
        revision: 9,
        policies: vec![(bucket("bucket-z"), tls13_only())],
        ..CachedSnapshot::default()
    };
    cache.store(&smaller).unwrap();
    assert_eq!(cache.load().unwrap(), Some(smaller));
    // Only the snapshot remains: the temporary file was renamed away.
    let names: Vec<_> = fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["snapshot.json"]);
}

#[test]
fn empty_table_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let empty = CachedSnapshot {
        revision: 1,
        policies: vec![],
        ..CachedSnapshot::default()
    };
    cache.store(&empty).unwrap();
    assert_eq!(cache.load().unwrap(), Some(empty));
}

#[test]
fn a_temp_file_left_by_a_crash_is_ignored_then_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    cache.store(&snapshot(3)).unwrap();
    // A crash between writing the temporary file and the rename.
    fs::write(
        dir.path().join("snapshot.json.tmp"),
        b"{\"format\": 1, \"revis",
    )
    .unwrap();
    assert_eq!(cache.load().unwrap(), Some(snapshot(3)));
    cache.store(&snapshot(4)).unwrap();
    assert_eq!(cache.load().unwrap(), Some(snapshot(4)));
    assert!(!dir.path().join("snapshot.json.tmp").exists());
}

#[test]
fn a_corrupt_cache_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    cache.store(&snapshot(5)).unwrap();
    let good = fs::read(cache.path()).unwrap();

    let truncated = &good[..good.len() / 2];
    let bad_bucket = String::from_utf8(good.clone())
        .unwrap()
        .replace("bucket-a", "Bucket_A");
    let bad_version = String::from_utf8(good.clone())
        .unwrap()
        .replace("TLSv1.3", "TLSv9");
    let cases: [(&str, &[u8]); 6] = [
        ("empty", b""),
        ("truncated", truncated),
        ("not json", b"\x00\xffgarbage"),
        ("invalid bucket name", bad_bucket.as_bytes()),
        ("unknown TLS version", bad_version.as_bytes()),
        (
            "wrong shape",
            br#"{"format": 1, "revision": "seven", "policies": []}"#,
        ),
    ];
    for (what, bytes) in cases {
        fs::write(cache.path(), bytes).unwrap();
        match cache.load() {
            Err(CacheError::Corrupt { .. }) => {}
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }

    fs::write(
        cache.path(),
        br#"{"format": 1, "revision": -4, "policies": []}"#,
    )
    .unwrap();
    assert!(matches!(
        cache.load(),
        Err(CacheError::BadRevision { revision: -4, .. })
    ));

    // Recovery: the next store replaces the corrupt file.
    cache.store(&snapshot(6)).unwrap();
    assert_eq!(cache.load().unwrap(), Some(snapshot(6)));
}

#[test]
fn a_future_format_is_refused_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let future = FORMAT_VERSION + 1;
    fs::write(
        cache.path(),
        format!(r#"{{"format": {future}, "entirely": "different"}}"#),
    )
    .unwrap();
    match cache.load() {
        Err(CacheError::UnsupportedFormat { found, .. }) => assert_eq!(found, future),
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

#[test]
fn unwritable_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let err = Cache::new(&file).store(&snapshot(1)).unwrap_err();
    assert!(matches!(err, CacheError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("a-file"), "{err}");
}

#[test]
fn store_identity_and_refused_buckets_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let full = CachedSnapshot {
        store_id: Some("etcd-0123".into()),
        refused: vec![bucket("bucket-r")],
        ..snapshot(11)
    };
    cache.store(&full).unwrap();
    assert_eq!(cache.load().unwrap(), Some(full));
    // A file written before these fields existed reads as "unknown store, nothing refused".
    fs::write(cache.path(), br#"{"format":1,"revision":3,"policies":[]}"#).unwrap();
    let old = cache.load().unwrap().unwrap();
    assert_eq!((old.revision, old.store_id, old.refused), (3, None, vec![]));
}
