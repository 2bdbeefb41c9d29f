//! The in-memory index over a real (embedded) store: loading, following, subscriptions that
//! start with a snapshot or a delta, and resumption after a restart.

use std::{sync::Arc, time::Duration};

use tlsfleet_control::{
    audit::{Change, Via},
    index::{Index, Start, Subscription, Update},
    service::Policies,
    store::{embedded::EmbeddedStore, Store},
};
use tlsfleet_policy::{BucketName, HttpsConfig, TlsConfig, TlsVersion};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

fn tls13() -> HttpsConfig {
    HttpsConfig {
        tls: TlsConfig {
            enable: true,
            tls_versions: vec![TlsVersion::Tls13],
        },
        cipher_suite: None,
    }
}

/// A change by a test, which may downgrade (these tests are about the index, not the guard).
fn change() -> Change {
    Change {
        actor: "test".into(),
        peer: None,
        request_id: "test".into(),
        via: Via::Grpc,
        allow_downgrade: true,
    }
}

fn bucket(s: &str) -> BucketName {
    s.parse().expect("bucket name")
}

async fn next(sub: &mut Subscription) -> Arc<Update> {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an update in time")
        .expect("no resync")
}

fn names(u: &Update) -> (Vec<String>, Vec<String>) {
    (
        u.upserts.iter().map(|e| e.bucket.to_string()).collect(),
        u.deletes.clone(),
    )
}

#[tokio::test]
async fn loads_follows_and_starts_subscribers_without_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    let shutdown = CancellationToken::new();
    let (index, task) = Index::spawn(store.clone(), shutdown.clone());
    let policies = Policies::new(store.clone(), index.clone());

    let r1 = policies
        .put(&bucket("aaa"), tls13(), &change())
        .await
        .expect("put")
        .revision;
    let r2 = policies
        .put(&bucket("bbb"), tls13(), &change())
        .await
        .expect("put")
        .revision;
    let view = index.ready_view(WAIT).await.expect("loaded");
    assert_eq!(
        view.revision(),
        r2,
        "a write is visible to its own server at once"
    );
    assert_eq!(view.len(), 2);

    // From nothing: a snapshot, then every later change in order.
    let (fresh_start, mut fresh) = index.subscribe(0).await.expect("subscribe");
    match &fresh_start {
        Start::Snapshot(v) => assert_eq!((v.revision(), v.len()), (r2, 2)),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    // From r1: only what changed since.
    let (resumed_start, _resumed) = index.subscribe(r1).await.expect("subscribe");
    match &resumed_start {
        Start::Delta(u) => {
            assert_eq!((u.from_revision, u.revision), (r1, r2));
            assert_eq!(names(u), (vec!["bbb".to_owned()], vec![]));
        }
        other => panic!("expected a delta, got {other:?}"),
    }

    let r3 = policies
        .put(&bucket("ccc"), tls13(), &change())
        .await
        .expect("put")
        .revision;
    let (r4, existed) = policies
        .delete(&bucket("aaa"), &change())
        .await
        .map(|o| (o.revision, o.existed))
        .expect("delete");
    assert!(existed);
    let u = next(&mut fresh).await;
    assert_eq!((u.from_revision, u.revision), (r2, r3));
    assert_eq!(names(&u), (vec!["ccc".to_owned()], vec![]));
    let u = next(&mut fresh).await;
    assert_eq!((u.from_revision, u.revision), (r3, r4));
    assert_eq!(names(&u), (vec![], vec!["aaa".to_owned()]));

    // A subscriber from before the delete learns of it from the tombstone.
    let (late_start, _late) = index.subscribe(r2).await.expect("subscribe");
    match &late_start {
        Start::Delta(u) => assert_eq!(names(u), (vec!["ccc".to_owned()], vec!["aaa".to_owned()])),
        other => panic!("expected a delta, got {other:?}"),
    }
    // A subscriber from the future (another store) gets a snapshot.
    let (ahead_start, _ahead) = index.subscribe(r4 + 100).await.expect("subscribe");
    assert!(matches!(ahead_start, Start::Snapshot(_)));

    // Paged reads by prefix.
    let page = policies.list("", None, 1).await.expect("list");
    assert_eq!(page.entries.len(), 1);
    assert!(page.more);
    let rest = policies
        .list("", Some(page.entries[0].bucket.as_str()), 10)
        .await
        .expect("list");
    assert_eq!(rest.entries.len(), 1);
    assert!(!rest.more);

    shutdown.cancel();
    task.await.expect("index task ends on shutdown");
}

#[tokio::test]
async fn a_restarted_server_answers_an_old_revision_with_a_delta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (r1, r3) = {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let shutdown = CancellationToken::new();
        let (index, task) = Index::spawn(store.clone(), shutdown.clone());
        let policies = Policies::new(store.clone(), index);
        policies
            .put(&bucket("gone"), tls13(), &change())
            .await
            .expect("put");
        let r1 = policies
            .put(&bucket("keep"), tls13(), &change())
            .await
            .expect("put")
            .revision;
        policies
            .put(&bucket("new1"), tls13(), &change())
            .await
            .expect("put");
        let (r3, _) = policies
            .delete(&bucket("gone"), &change())
            .await
            .map(|o| (o.revision, o.existed))
            .expect("delete");
        shutdown.cancel();
        task.await.expect("stopped");
        (r1, r3)
    };
    // Same data directory, new process state: the index's memory starts at r3.
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("reopen"));
    let shutdown = CancellationToken::new();
    let (index, task) = Index::spawn(store, shutdown.clone());
    let (sub_start, _sub) = index.subscribe(r1).await.expect("subscribe");
    match &sub_start {
        Start::Delta(u) => {
            assert_eq!((u.from_revision, u.revision), (r1, r3));
            assert_eq!(names(u), (vec!["new1".to_owned()], vec!["gone".to_owned()]));
        }
        other => panic!("expected a delta from the store's history, got {other:?}"),
    }
    shutdown.cancel();
    task.await.expect("stopped");
}
