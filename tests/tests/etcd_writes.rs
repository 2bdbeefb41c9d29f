//! The etcd adapter's writes when an answer is lost: a put that may have committed is never
//! retried blindly over a newer write another control server acknowledged meanwhile.
//!
//! A TCP proxy between the store and a real etcd drops etcd's answers: the request commits,
//! the store hears nothing and retries. Another writer (a second store on etcd directly, as a
//! second control server would be) writes in between.

use std::{net::SocketAddr, time::Duration};

use tlsfleet_control::store::{etcd::EtcdStore, PolicyStore, Revision, StoreError};
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

/// Sends `write` (of "mine-marker" to "vault") with etcd's answer to it lost, and once it has
/// committed, has the other server write and acknowledge "newer" over it; then lets answers
/// through again. Returns what `write` answered and the newer write's revision.
async fn lost_answer_then_newer<F>(r: &Rig, write: F) -> (Result<Revision, StoreError>, Revision)
where
    F: std::future::Future<Output = Result<Revision, StoreError>> + Send + 'static,
{
    // The answer to the write itself (the only request carrying the value) is lost.
    r.proxy.blackhole_from(b"mine-marker");
    let pending = tokio::spawn(write);
    assert!(
        committed(&r.other, "vault", b"mine-marker").await,
        "the write never reached etcd"
    );
    // Another control server writes, and acknowledges, a newer policy.
    let newer = r
        .other
        .put("vault", b"newer".to_vec())
        .await
        .expect("newer put");
    r.proxy.reset();
    (pending.await.expect("task"), newer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_recognised_by_its_guard_and_a_newer_write_is_never_overwritten() {
    let r = rig().await;
    r.store
        .put("vault", b"v0".to_vec())
        .await
        .expect("first put");

    let store = r.store.clone();
    let (ours, newer) = lost_answer_then_newer(&r, async move {
        store.put("vault", b"mine-marker".to_vec()).await
    })
    .await;
    // The lost write did commit (its guard says so), before the newer one: acknowledged at
    // its own revision, and not written again over the newer one.
    let ours = ours.expect("our put is acknowledged");
    assert!(ours < newer, "{ours} < {newer}");
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
    let (deleted_at, existed) = r.other.delete("fresh").await.expect("delete");
    assert!(existed);
    r.proxy.reset();
    // The create committed (its guard says so) before the delete; it is not sent again.
    let created_at = pending
        .await
        .expect("task")
        .expect("the create is acknowledged");
    assert!(created_at < deleted_at);
    assert_eq!(
        r.other.get("fresh").await.expect("get"),
        None,
        "the acknowledged delete was undone"
    );
}

/// A write that gets no answer at all for a while (every answer lost, then the connection
/// healed) is sent again, attempt after attempt, and commits once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_answers_is_sent_again_and_commits_once() {
    let r = rig().await;
    r.store.put("warm", b"x".to_vec()).await.expect("warm up");
    let before = r.other.revision().await.expect("revision");
    r.proxy.set_blackhole(true);
    let store = r.store.clone();
    let pending = tokio::spawn(async move { store.put("stalled", b"v1".to_vec()).await });
    // Each attempt waits at most the write attempt timeout; heal after two of them.
    tokio::time::sleep(2 * tlsfleet_control::store::etcd::WRITE_ATTEMPT_TIMEOUT).await;
    r.proxy.reset();
    let revision = pending.await.expect("task").expect("put acknowledged");
    let kv = r.other.get("stalled").await.expect("get").expect("present");
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"v1"[..], revision)
    );
    // One commit of the put (the revision moved by one).
    assert_eq!(r.other.revision().await.expect("revision"), before + 1);
}

/// An audit record for `put_if_recorded`, with `value` as its bytes.
fn record(key: &str, value: &'static [u8]) -> tlsfleet_control::store::AuditWrite {
    tlsfleet_control::store::AuditWrite {
        key: key.to_owned(),
        value: Box::new(move |_| value.to_vec()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_of_an_audited_write_is_recognised_by_its_record() {
    use tlsfleet_control::store::AuditLog;
    let r = rig().await;
    let base = r
        .store
        .put("vault", b"v0".to_vec())
        .await
        .expect("first put");

    let store = r.store.clone();
    let (ours, newer) = lost_answer_then_newer(&r, async move {
        store
            .put_if_recorded(
                "vault",
                b"mine-marker".to_vec(),
                base,
                record("0000000000001-MINE", b"mine"),
            )
            .await
    })
    .await;
    // The record says the lost attempt committed: acknowledged at its own revision (not a
    // conflict with the newer write), the newer write kept, the record written once.
    let ours = ours.expect("our audited put is acknowledged");
    assert!(ours < newer, "{ours} < {newer}");
    let kv = r.other.get("vault").await.expect("get").expect("present");
    assert_eq!(kv.value, b"newer");
    let trail = r.other.list_audit("", None, 10).await.expect("audit");
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(
        (trail[0].value.as_slice(), trail[0].revision),
        (&b"mine"[..], ours)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writes_record_under_the_same_key_is_not_taken_for_this_writes_commit() {
    use tlsfleet_control::store::AuditLog;
    let r = rig().await;
    let base = r
        .store
        .put("vault", b"v0".to_vec())
        .await
        .expect("first put");
    r.other
        .append_audit(vec![("0000000000001-SAME".into(), b"theirs".to_vec())])
        .await
        .expect("their record");

    let answer = r
        .store
        .put_if_recorded(
            "vault",
            b"mine".to_vec(),
            base,
            record("0000000000001-SAME", b"mine"),
        )
        .await;
    assert!(
        answer.is_err(),
        "acknowledged without committing: {answer:?}"
    );
    let kv = r.other.get("vault").await.expect("get").expect("present");
    assert_eq!(kv.value, b"v0", "the write applied after all");
}
