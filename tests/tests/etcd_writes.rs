//! The etcd adapter's writes when an answer is lost: a put that may have committed is never
//! retried blindly over a newer write another control server acknowledged meanwhile.
//!
//! A TCP proxy between the store and a real etcd drops etcd's answers: the request commits,
//! the store hears nothing and retries. Another writer (a second store on etcd directly, as a
//! second control server would be) writes in between.

use std::{net::SocketAddr, time::Duration};

use tlsfleet_control::store::{etcd::EtcdStore, PolicyStore, StoreError};
use tlsfleet_testkit::{etcd::Etcd, procs::eventually, proxy::Proxy};

const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    /// Through the proxy.
    store: EtcdStore,
    /// Straight to etcd: "another control server".
    other: EtcdStore,
    proxy: Proxy,
    _etcd: Etcd,
}

async fn rig() -> Rig {
    let etcd = Etcd::start();
    let addr: SocketAddr = etcd.endpoint().parse().expect("etcd address");
    let proxy = Proxy::start(addr);
    let store = EtcdStore::connect(&[proxy.addr.to_string()], "/tlsfleet/")
        .await
        .expect("connect through the proxy");
    let other = EtcdStore::connect(&[etcd.endpoint()], "/tlsfleet/")
        .await
        .expect("connect");
    Rig {
        store,
        other,
        proxy,
        _etcd: etcd,
    }
}

/// Polls etcd (directly) until `key` holds `value`.
async fn committed(other: &EtcdStore, key: &str, value: &[u8]) -> bool {
    tlsfleet_testkit::eventually::until(WAIT, || async {
        matches!(other.get(key).await, Ok(Some(kv)) if kv.value == value)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_then_another_write_is_outcome_unknown_and_never_overwritten() {
    let r = rig().await;
    r.store
        .put("vault", b"v0".to_vec())
        .await
        .expect("first put");

    // The answer to the write itself (the only request carrying the value) is lost.
    r.proxy.blackhole_from(b"mine-marker");
    let store = r.store.clone();
    let pending = tokio::spawn(async move { store.put("vault", b"mine-marker".to_vec()).await });
    assert!(
        committed(&r.other, "vault", b"mine-marker").await,
        "the put never reached etcd"
    );
    // Another control server writes, and acknowledges, a newer policy.
    let newer = r
        .other
        .put("vault", b"newer".to_vec())
        .await
        .expect("newer put");
    r.proxy.reset();

    let outcome = pending.await.expect("task");
    assert!(
        matches!(outcome, Err(StoreError::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    let kv = r.other.get("vault").await.expect("get").expect("present");
    assert_eq!(
        kv.value, b"newer",
        "the acknowledged newer write was overwritten"
    );
    assert_eq!(kv.mod_revision, newer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_alone_is_recognised_as_our_own_commit() {
    let r = rig().await;
    r.store
        .put("vault", b"v0".to_vec())
        .await
        .expect("first put");
    let before = r.other.revision().await.expect("revision");

    // The answer to the write itself (the only request carrying the value) is lost.
    r.proxy.blackhole_from(b"mine-marker");
    let store = r.store.clone();
    let pending = tokio::spawn(async move { store.put("vault", b"mine-marker".to_vec()).await });
    assert!(committed(&r.other, "vault", b"mine-marker").await);
    r.proxy.reset();

    let revision = pending
        .await
        .expect("task")
        .expect("the put is acknowledged");
    let kv = r.other.get("vault").await.expect("get").expect("present");
    assert_eq!(kv.value, b"mine-marker");
    // Written once: the revision acknowledged is the commit's, and nothing wrote after it.
    assert_eq!(kv.mod_revision, revision);
    assert_eq!(r.other.revision().await.expect("revision"), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_answer_is_lost_is_recognised_too() {
    let r = rig().await;
    r.store.put("vault", b"v0".to_vec()).await.expect("put");
    // The delete reads the key's revision, then sends its transaction: lose the answers from
    // the second request naming the key on.
    r.proxy.blackhole_from_nth(b"/tlsfleet/policies/vault", 2);
    let store = r.store.clone();
    let pending = tokio::spawn(async move { store.delete("vault").await });
    assert!(
        eventually(WAIT, || {
            let other = r.other.clone();
            futures::executor::block_on(async move { other.get("vault").await })
                .is_ok_and(|kv| kv.is_none())
        }),
        "the delete never reached etcd"
    );
    r.proxy.reset();
    let (_, existed) = pending.await.expect("task").expect("delete acknowledged");
    assert!(existed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_never_brings_back_a_key_deleted_since() {
    let r = rig().await;
    // A new key: its write is conditional on "absent", which is true again after a delete.
    r.proxy.blackhole_from(b"created-marker");
    let store = r.store.clone();
    let pending = tokio::spawn(async move { store.put("fresh", b"created-marker".to_vec()).await });
    assert!(committed(&r.other, "fresh", b"created-marker").await);
    // Another control server deletes it, and acknowledges the delete.
    let (_, existed) = r.other.delete("fresh").await.expect("delete");
    assert!(existed);
    r.proxy.reset();
    let outcome = pending.await.expect("task");
    assert!(
        matches!(outcome, Err(StoreError::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    assert_eq!(
        r.other.get("fresh").await.expect("get"),
        None,
        "the acknowledged delete was undone"
    );
}
