//! One conformance suite for the storage port, run against both adapters: the embedded store
//! (redb in a temporary directory) and the etcd store (a real etcd per test). Each case in
//! `suite` is instantiated once per adapter by `conformance!`; the cases only an adapter can
//! have (reopen, file lock, etcd killed) follow at the end.

use std::{collections::BTreeSet, future::Future, sync::Arc, time::Duration};

use tempfile::TempDir;
use tlsfleet_control::store::{
    embedded::EmbeddedStore, etcd::EtcdStore, AgentLeases, Event, KeyValue, PolicyStore, Revision,
    Store, StoreError, WatchStream,
};
use tlsfleet_testkit::etcd::Etcd;
use tokio::time::{timeout, Instant};
// `futures` is not a dependency of this crate; tonic re-exports tokio-stream.
use futures::StreamExt;

/// Keys per page of the etcd fixture's full reads, so that lists span pages.
const TEST_PAGE_KEYS: usize = 50;

/// Longest wait for something that should happen promptly (an event, an expiry).
const WAIT: Duration = Duration::from_secs(10);

/// A store under test and what must outlive it.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
    _etcd: Option<Etcd>,
}

fn embedded() -> Fixture {
    let dir = TempDir::new().expect("temporary directory");
    let store = EmbeddedStore::open(dir.path())
        .expect("open the embedded store")
        .with_page_keys(TEST_PAGE_KEYS);
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
        _etcd: None,
    }
}

async fn etcd() -> Fixture {
    let etcd = Etcd::start();
    let store = EtcdStore::connect(&[etcd.endpoint()], "/tlsfleet/")
        .await
        .expect("connect to etcd")
        .with_page_keys(TEST_PAGE_KEYS as i64);
    Fixture {
        store: Arc::new(store),
        _dir: None,
        _etcd: Some(etcd),
    }
}

macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        mod embedded_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::embedded();
                    super::suite::$case(fixture.store.clone()).await;
                }
            )+
        }
        mod etcd_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::etcd().await;
                    super::suite::$case(fixture.store.clone()).await;
                }
            )+
        }
    };
}

conformance!(
    put_returns_increasing_revisions,
    get_reflects_puts_and_deletes,
    delete_of_a_missing_key_keeps_the_revision,
    list_is_sorted_and_at_one_revision,
    a_list_of_many_pages_is_at_one_revision_under_writes,
    watch_from_zero_replays_everything_then_follows,
    watch_from_a_middle_revision_replays_only_the_missed_events,
    watch_sees_a_put_made_after_it_started,
    watch_is_seamless_under_concurrent_writes,
    watch_skips_replayed_events_at_the_seam,
    slow_watcher_misses_nothing,
    compaction_hides_history,
    changes_since_reports_net_changes,
    agents_register_list_and_remove,
    agents_expire_after_their_ttl,
    agents_live_while_kept_alive_then_expire,
    conditional_agent_writes_make_an_absent_entry_and_update_a_held_one,
    concurrent_puts_are_each_visible_at_their_revision,
    conditional_writes_happen_only_on_the_revision_expected,
    audit_records_list_in_key_order_page_and_trim,
    audit_records_are_not_policies,
    a_recorded_put_stores_its_record_with_it_or_neither,
);

/// The cases, each over any `Store`.
mod suite {
    use super::*;

    pub async fn put_returns_increasing_revisions(store: Arc<dyn Store>) {
        let r0 = store.revision().await.expect("revision");
        let r1 = put(&store, "a", "1").await;
        let r2 = put(&store, "b", "1").await;
        let r3 = put(&store, "a", "2").await;
        assert!(r0 < r1 && r1 < r2 && r2 < r3, "{r0} < {r1} < {r2} < {r3}");
        assert_eq!(store.revision().await.expect("revision"), r3);
    }

    pub async fn get_reflects_puts_and_deletes(store: Arc<dyn Store>) {
        assert_eq!(store.get("a").await.expect("get"), None);
        let r1 = put(&store, "a", "v1").await;
        assert_eq!(
            store.get("a").await.expect("get"),
            Some(kv("a", "v1", r1, r1))
        );
        let r2 = put(&store, "a", "v2").await;
        assert_eq!(
            store.get("a").await.expect("get"),
            Some(kv("a", "v2", r1, r2))
        );
        let (r3, existed) = store.delete("a").await.expect("delete");
        assert!(existed);
        assert!(r3 > r2);
        assert_eq!(store.get("a").await.expect("get"), None);
        // A new generation of the key starts a new create revision.
        let r4 = put(&store, "a", "v3").await;
        assert_eq!(
            store.get("a").await.expect("get"),
            Some(kv("a", "v3", r4, r4))
        );
    }

    pub async fn delete_of_a_missing_key_keeps_the_revision(store: Arc<dyn Store>) {
        let r1 = put(&store, "present", "x").await;
        assert_eq!(store.delete("absent").await.expect("delete"), (r1, false));
        assert_eq!(store.revision().await.expect("revision"), r1);
        let r2 = put(&store, "later", "x").await;
        assert!(r2 > r1);
    }

    pub async fn list_is_sorted_and_at_one_revision(store: Arc<dyn Store>) {
        for key in ["c", "a", "b", "e"] {
            put(&store, key, key).await;
        }
        store.delete("b").await.expect("delete");
        let last = put(&store, "d", "d").await;
        let snapshot = store.list().await.expect("list");
        let keys: Vec<&str> = snapshot.items.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["a", "c", "d", "e"]);
        assert_eq!(snapshot.revision, last);
        assert_eq!(snapshot.revision, store.revision().await.expect("revision"));
        for item in &snapshot.items {
            assert_eq!(
                store.get(&item.key).await.expect("get").as_ref(),
                Some(item)
            );
            assert!(item.mod_revision <= snapshot.revision);
        }
    }

    /// More policies than two pages of the etcd fixture, listed while a writer adds and
    /// overwrites: each list holds exactly what stood at its revision.
    pub async fn a_list_of_many_pages_is_at_one_revision_under_writes(store: Arc<dyn Store>) {
        // The etcd fixture reads pages of TEST_PAGE_KEYS keys.
        let n = 2 * TEST_PAGE_KEYS + 7;
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in (w..n).step_by(8) {
                        put(&store, &format!("k{i:05}"), "0").await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer task");
        }
        // The writer overwrites early keys and adds late ones while lists run.
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..60 {
                    let key = if i % 2 == 0 {
                        format!("k{i:05}")
                    } else {
                        format!("z{i:05}")
                    };
                    written.push((key.clone(), put(&store, &key, &i.to_string()).await));
                }
                written
            })
        };
        // Whole lists and paged ones, alternately.
        let mut lists = Vec::new();
        let mut paged = 0;
        while !writer.is_finished() || paged == 0 {
            if lists.len() % 2 == 0 {
                lists.push(store.list().await.expect("list"));
            } else {
                let mut items = Vec::new();
                let mut pages = 0;
                let revision = store
                    .list_pages(&mut |page| {
                        assert!(
                            !page.is_empty() && page.len() <= TEST_PAGE_KEYS,
                            "a page of {} keys",
                            page.len()
                        );
                        pages += 1;
                        items.extend(page);
                    })
                    .await
                    .expect("list pages");
                assert!(pages > 2, "{} keys in {pages} pages", items.len());
                lists.push(tlsfleet_control::store::Snapshot { revision, items });
                paged += 1;
            }
        }
        let written = writer.await.expect("writer task");
        assert!(!lists.is_empty());
        for snapshot in lists {
            let keys: Vec<&str> = snapshot.items.iter().map(|kv| kv.key.as_str()).collect();
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "sorted, no duplicates"
            );
            let late = written
                .iter()
                .filter(|(k, r)| k.starts_with('z') && *r <= snapshot.revision)
                .count();
            assert_eq!(snapshot.items.len(), n + late, "at {}", snapshot.revision);
            for item in &snapshot.items {
                assert!(item.mod_revision <= snapshot.revision);
                // The newest write at or below the snapshot's revision, if the writer made one.
                let expected = written
                    .iter()
                    .rev()
                    .find(|(k, r)| *k == item.key && *r <= snapshot.revision);
                if let Some((_, r)) = expected {
                    assert_eq!(
                        item.mod_revision, *r,
                        "{} at {}",
                        item.key, snapshot.revision
                    );
                }
            }
        }
    }

    pub async fn watch_from_zero_replays_everything_then_follows(store: Arc<dyn Store>) {
        let history = write_history(&store).await;
        let mut watch = store.watch(0).await.expect("watch");
        assert_eq!(next_events(&mut watch, history.len()).await, history);
        let live = put(&store, "live", "1").await;
        assert_eq!(
            next_events(&mut watch, 1).await,
            [put_event("live", "1", live, live)]
        );
    }

    pub async fn watch_from_a_middle_revision_replays_only_the_missed_events(
        store: Arc<dyn Store>,
    ) {
        let history = write_history(&store).await;
        let middle = history[1].revision();
        let mut watch = store.watch(middle).await.expect("watch");
        assert_eq!(
            next_events(&mut watch, history.len() - 2).await,
            history[2..]
        );
        // Nothing extra came between the replay and this live event.
        let (live, _) = store.delete("b").await.expect("delete");
        assert_eq!(next_events(&mut watch, 1).await, [delete_event("b", live)]);
    }

    pub async fn watch_sees_a_put_made_after_it_started(store: Arc<dyn Store>) {
        put(&store, "before", "1").await;
        let now = store.revision().await.expect("revision");
        let mut watch = store.watch(now).await.expect("watch");
        let r = put(&store, "after", "2").await;
        assert_eq!(
            next_events(&mut watch, 1).await,
            [put_event("after", "2", r, r)]
        );
    }

    pub async fn watch_is_seamless_under_concurrent_writes(store: Arc<dyn Store>) {
        const WRITES: usize = 120;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let writer = tokio::spawn({
            let store = store.clone();
            async move {
                let mut started = Some(started_tx);
                let mut revisions = Vec::new();
                for i in 0..WRITES {
                    revisions.push(put(&store, &format!("k{}", i % 7), &i.to_string()).await);
                    if i == WRITES / 4 {
                        let _ = started.take().map(|tx| tx.send(()));
                    }
                }
                revisions
            }
        });
        // Start watching from the beginning while the writer is busy: the replay and the
        // live events meet somewhere in the middle of its writes.
        started_rx.await.expect("writer started");
        let mut watch = store.watch(0).await.expect("watch");
        let events = next_events(&mut watch, WRITES).await;
        let revisions = writer.await.expect("writer");
        let seen: Vec<Revision> = events.iter().map(Event::revision).collect();
        assert_eq!(seen, revisions, "each write exactly once, in order");
        nothing_else_then_a_sentinel(&store, &mut watch).await;
    }

    pub async fn watch_skips_replayed_events_at_the_seam(store: Arc<dyn Store>) {
        let mut revisions = Vec::new();
        for i in 0..10 {
            revisions.push(put(&store, &format!("k{}", i % 3), &i.to_string()).await);
        }
        let mut watch = store.watch(0).await.expect("watch");
        // Written after the watch started but before it first read anything: both in its
        // replay and among its live events.
        for i in 10..20 {
            revisions.push(put(&store, &format!("k{}", i % 3), &i.to_string()).await);
        }
        let events = next_events(&mut watch, revisions.len()).await;
        let seen: Vec<Revision> = events.iter().map(Event::revision).collect();
        assert_eq!(seen, revisions);
        nothing_else_then_a_sentinel(&store, &mut watch).await;
    }

    pub async fn slow_watcher_misses_nothing(store: Arc<dyn Store>) {
        // More events than the embedded store buffers per watcher, written while a watch that
        // was following live events is not polled.
        const WRITERS: usize = 8;
        const EACH: usize = 50;
        let start = store.revision().await.expect("revision");
        let mut watch = store.watch(start).await.expect("watch");
        let first = put(&store, "first", "1").await;
        assert_eq!(next_events(&mut watch, 1).await[0].revision(), first);
        // Caught up: the watch now waits for live events (and there is no duplicate).
        let quiet = timeout(Duration::from_millis(300), watch.next()).await;
        assert!(quiet.is_err(), "unexpected: {quiet:?}");
        let mut revisions = concurrently(&store, WRITERS, EACH).await;
        revisions.sort_unstable();
        let events = next_events(&mut watch, WRITERS * EACH).await;
        let seen: Vec<Revision> = events.iter().map(Event::revision).collect();
        assert_eq!(seen, revisions);
        nothing_else_then_a_sentinel(&store, &mut watch).await;
    }

    pub async fn compaction_hides_history(store: Arc<dyn Store>) {
        let mut revisions = Vec::new();
        for i in 1..=5 {
            revisions.push(put(&store, &format!("k{i}"), "v").await);
        }
        let at = revisions[2];
        store.compact(at).await.expect("compact");
        for after in [revisions[0], at - 1] {
            assert_eq!(expect_compacted(&store, after).await, (after, at));
        }
        // The compacted revision itself is still a valid starting point.
        let mut watch = store.watch(at).await.expect("watch");
        let events = next_events(&mut watch, 2).await;
        assert_eq!(
            events.iter().map(Event::revision).collect::<Vec<_>>(),
            revisions[3..]
        );
        // Compacting again at or below is a no-op; above the current revision is refused.
        store.compact(revisions[1]).await.expect("compact below");
        store.compact(at).await.expect("compact again");
        let current = store.revision().await.expect("revision");
        assert!(store.compact(current + 100).await.is_err());
        match store.changes_since(revisions[0]).await {
            Err(StoreError::Compacted {
                requested,
                compact_revision,
            }) => assert_eq!((requested, compact_revision), (revisions[0], at)),
            other => panic!("changes_since a compacted revision: {other:?}"),
        }
        let (now, keys) = store.changes_since(at).await.expect("changes since");
        assert_eq!((now, keys), (current, strings(&["k4", "k5"])));
    }

    pub async fn changes_since_reports_net_changes(store: Arc<dyn Store>) {
        for key in ["a", "b", "c"] {
            put(&store, key, "1").await;
        }
        let mark = store.revision().await.expect("revision");
        put(&store, "a", "2").await; // changed
        store.delete("b").await.expect("delete"); // deleted
        put(&store, "d", "1").await; // created
        put(&store, "e", "1").await; // created and deleted again: no net change
        store.delete("e").await.expect("delete");
        let current = store.revision().await.expect("revision");
        let since_mark = store.changes_since(mark).await.expect("changes since");
        assert_eq!(since_mark, (current, strings(&["a", "b", "d"])));
        let since_zero = store.changes_since(0).await.expect("changes since 0");
        assert_eq!(since_zero, (current, strings(&["a", "c", "d"])));
        assert_eq!(
            store.changes_since(current).await.expect("nothing"),
            (current, vec![])
        );
        // A revision this store never reached: the asker must relist.
        let future = store.changes_since(current + 10).await;
        assert!(
            matches!(future, Err(StoreError::Compacted { .. })),
            "{future:?}"
        );
    }

    pub async fn agents_register_list_and_remove(store: Arc<dyn Store>) {
        let ttl = Duration::from_secs(60);
        for id in ["n2", "n1", "n3"] {
            store
                .put_agent(id, id.into(), ttl)
                .await
                .expect("put_agent");
        }
        store
            .put_agent("n1", b"n1 again".to_vec(), ttl)
            .await
            .expect("put_agent");
        assert_eq!(
            store.list_agents().await.expect("list_agents"),
            [
                agent("n1", "n1 again"),
                agent("n2", "n2"),
                agent("n3", "n3")
            ]
        );
        store.remove_agent("n2").await.expect("remove_agent");
        store
            .remove_agent("never-registered")
            .await
            .expect("remove_agent");
        assert_eq!(
            store.list_agents().await.expect("list_agents"),
            [agent("n1", "n1 again"), agent("n3", "n3")]
        );
        // The registry is not part of the policies.
        assert!(store.list().await.expect("list").items.is_empty());
    }

    pub async fn agents_expire_after_their_ttl(store: Arc<dyn Store>) {
        // etcd's minimum lease TTL with the harness's 10 ms heartbeat is below 1 s.
        let short = Duration::from_secs(1);
        store
            .put_agent("short", b"s".to_vec(), short)
            .await
            .expect("put_agent");
        store
            .put_agent("long", b"l".to_vec(), Duration::from_secs(60))
            .await
            .expect("put_agent");
        let listed = store.list_agents().await.expect("list_agents");
        assert_eq!(listed, [agent("long", "l"), agent("short", "s")]);
        eventually("the short-lived agent expires", || async {
            store.list_agents().await.expect("list_agents") == [agent("long", "l")]
        })
        .await;
    }

    pub async fn agents_live_while_kept_alive_then_expire(store: Arc<dyn Store>) {
        let ttl = Duration::from_secs(2);
        store
            .put_agent("n", b"1".to_vec(), ttl)
            .await
            .expect("put_agent");
        let start = Instant::now();
        // Kept alive for twice the TTL: still there.
        while start.elapsed() < ttl * 2 {
            assert!(store.keep_agents_alive().await.expect("keep alive"));
            assert_eq!(
                store.list_agents().await.expect("list_agents"),
                [agent("n", "1")]
            );
            tokio::time::sleep(ttl / 4).await;
        }
        eventually("the agent expires once no longer kept alive", || async {
            store.list_agents().await.expect("list_agents").is_empty()
        })
        .await;
        // The loss is reported, and a new put makes a live entry again.
        assert!(!store.keep_agents_alive().await.expect("keep alive"));
        store
            .put_agent("n", b"2".to_vec(), ttl)
            .await
            .expect("put_agent after the lease expired");
        assert_eq!(
            store.list_agents().await.expect("list_agents"),
            [agent("n", "2")]
        );
    }

    pub async fn conditional_agent_writes_make_an_absent_entry_and_update_a_held_one(
        store: Arc<dyn Store>,
    ) {
        let ttl = Duration::from_secs(60);
        assert!(store
            .put_agent_unless_taken("absent", b"x".to_vec(), ttl)
            .await
            .expect("put_agent_unless_taken"));
        assert_eq!(
            store.list_agents().await.expect("list_agents"),
            [agent("absent", "x")]
        );
        store
            .put_agent("n", b"1".to_vec(), ttl)
            .await
            .expect("put_agent");
        assert!(store
            .put_agent_unless_taken("n", b"2".to_vec(), ttl)
            .await
            .expect("put_agent_unless_taken"));
        assert_eq!(
            store.list_agents().await.expect("list_agents"),
            [agent("absent", "x"), agent("n", "2")]
        );
    }

    pub async fn conditional_writes_happen_only_on_the_revision_expected(store: Arc<dyn Store>) {
        let r1 = store
            .put_if("cas", b"v1".to_vec(), 0)
            .await
            .expect("create");
        match store.put_if("cas", b"v2".to_vec(), 0).await {
            Err(StoreError::Conflict { current }) => assert_eq!(current, r1),
            other => panic!("a create over an existing key: {other:?}"),
        }
        let r2 = store
            .put_if("cas", b"v2".to_vec(), r1)
            .await
            .expect("update");
        assert!(r2 > r1);
        assert!(matches!(
            store.delete_if("cas", r1).await,
            Err(StoreError::Conflict { current }) if current == r2
        ));
        let kv = store.get("cas").await.expect("get").expect("still there");
        assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"v2"[..], r2));
        let (r3, existed) = store.delete_if("cas", r2).await.expect("delete");
        assert!(existed && r3 > r2);
        assert!(store.get("cas").await.expect("get").is_none());
        assert!(matches!(
            store.put_if("cas", b"v3".to_vec(), r2).await,
            Err(StoreError::Conflict { current: 0 })
        ));
    }

    pub async fn audit_records_list_in_key_order_page_and_trim(store: Arc<dyn Store>) {
        // One record alone, then three in one write.
        store
            .append_audit(vec![("0003-c".into(), b"0003-c".to_vec())])
            .await
            .expect("append");
        let batch = ["0001-a", "0002-b", "0004-d"].map(|k| (k.to_owned(), k.as_bytes().to_vec()));
        store.append_audit(batch.to_vec()).await.expect("append");
        // More than one write holds is refused whole.
        let too_many: Vec<(String, Vec<u8>)> = (0..=tlsfleet_control::store::AUDIT_BATCH)
            .map(|i| (format!("0009-{i:04}"), b"{}".to_vec()))
            .collect();
        assert!(store.append_audit(too_many).await.is_err());
        let keys = |page: Vec<tlsfleet_control::store::AuditEntry>| -> Vec<String> {
            page.into_iter()
                .map(|e| {
                    assert_eq!(e.key.as_bytes(), e.value.as_slice(), "value of {}", e.key);
                    e.key
                })
                .collect()
        };
        let all = store.list_audit("", None, 100).await.expect("list");
        assert_eq!(keys(all), ["0001-a", "0002-b", "0003-c", "0004-d"]);
        // From a time on, after a page's last key, bounded.
        let page = store.list_audit("0002", None, 2).await.expect("list");
        assert_eq!(keys(page), ["0002-b", "0003-c"]);
        let next = store
            .list_audit("0002", Some("0003-c"), 2)
            .await
            .expect("list");
        assert_eq!(keys(next), ["0004-d"]);
        assert_eq!(store.trim_audit("0003").await.expect("trim"), 2);
        let left = store.list_audit("", None, 100).await.expect("list");
        assert_eq!(keys(left), ["0003-c", "0004-d"]);
    }

    pub async fn a_recorded_put_stores_its_record_with_it_or_neither(store: Arc<dyn Store>) {
        use tlsfleet_control::store::AuditWrite;
        let record = |key: &str| AuditWrite {
            key: key.to_owned(),
            value: Box::new(|revision| format!("rev={revision}").into_bytes()),
        };
        let r1 = store
            .put_if_recorded("rec", b"v1".to_vec(), 0, record("0001-applied"))
            .await
            .expect("put");
        assert_eq!(
            store.get("rec").await.expect("get").expect("stored").value,
            b"v1"
        );
        // A conflict writes neither the change nor its record.
        assert!(matches!(
            store
                .put_if_recorded("rec", b"v2".to_vec(), 0, record("0002-conflict"))
                .await,
            Err(StoreError::Conflict { current }) if current == r1
        ));
        assert_eq!(
            store.get("rec").await.expect("get").expect("stored").value,
            b"v1"
        );
        let trail = store.list_audit("", None, 10).await.expect("list");
        assert_eq!(trail.len(), 1, "{trail:?}");
        let entry = &trail[0];
        assert_eq!(entry.key, "0001-applied");
        // The record learns its change's revision: in its value (a store that knows it
        // before committing), or from the store when read back (etcd).
        let in_value = entry.value == format!("rev={r1}").into_bytes();
        let from_store = entry.value == b"rev=0" && entry.revision == r1;
        assert!(in_value || from_store, "{entry:?} for revision {r1}");
    }

    pub async fn audit_records_are_not_policies(store: Arc<dyn Store>) {
        let before = store.list().await.expect("list");
        store
            .append_audit(vec![("0001-x".into(), b"{}".to_vec())])
            .await
            .expect("append");
        let after = store.list().await.expect("list");
        // No policy appears (etcd's cluster revision does move on: revisions are compared,
        // never counted).
        assert_eq!(before.items, after.items);
    }

    /// Concurrent writes of distinct keys may share a revision (etcd commits writes queued
    /// together in one transaction: `store/etcd/batch.rs`); each is stored at the revision it
    /// was answered with, and the store is at the newest.
    pub async fn concurrent_puts_are_each_visible_at_their_revision(store: Arc<dyn Store>) {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { (i, put(&store, &format!("key{i}"), "v").await) })
            })
            .collect();
        let mut revisions = BTreeSet::new();
        for task in tasks {
            let (i, revision) = task.await.expect("put task");
            revisions.insert(revision);
            let stored = store
                .get(&format!("key{i}"))
                .await
                .expect("get")
                .expect("stored");
            assert_eq!(stored.mod_revision, revision);
        }
        assert!(!revisions.is_empty() && revisions.len() <= 20);
        let last = revisions.last().copied();
        assert_eq!(Some(store.revision().await.expect("revision")), last);
    }
}

/// Puts, deletes and overwrites; returns the events they should produce, in order.
async fn write_history(store: &Arc<dyn Store>) -> Vec<Event> {
    let a1 = put(store, "a", "1").await;
    let b1 = put(store, "b", "1").await;
    let a2 = put(store, "a", "2").await;
    let (a3, _) = store.delete("a").await.expect("delete");
    let c1 = put(store, "c", "1").await;
    vec![
        put_event("a", "1", a1, a1),
        put_event("b", "1", b1, b1),
        put_event("a", "2", a1, a2),
        delete_event("a", a3),
        put_event("c", "1", c1, c1),
    ]
}

/// `writers` tasks putting `each` values at once; every revision returned.
async fn concurrently(store: &Arc<dyn Store>, writers: usize, each: usize) -> Vec<Revision> {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut revisions = Vec::with_capacity(each);
                for i in 0..each {
                    revisions.push(put(&store, &format!("w{w}"), &i.to_string()).await);
                }
                revisions
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    all
}

async fn put(store: &Arc<dyn Store>, key: &str, value: &str) -> Revision {
    store.put(key, value.into()).await.expect("put")
}

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision,
        mod_revision,
    }
}

fn put_event(key: &str, value: &str, create: Revision, modified: Revision) -> Event {
    Event::Put(kv(key, value, create, modified))
}

fn delete_event(key: &str, mod_revision: Revision) -> Event {
    Event::Delete {
        key: key.into(),
        mod_revision,
    }
}

fn agent(id: &str, value: &str) -> (String, Vec<u8>) {
    (id.into(), value.into())
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// Exactly the next `n` events of `watch` (skipping progress-only batches), checking each
/// batch's invariants on the way.
async fn next_events(watch: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    while events.len() < n {
        let batch = match timeout(WAIT, watch.next()).await {
            Ok(Some(Ok(batch))) => batch,
            Ok(Some(Err(e))) => panic!("watch failed after {} of {n} events: {e}", events.len()),
            Ok(None) => panic!("watch ended after {} of {n} events", events.len()),
            Err(_) => panic!("no event within {WAIT:?} after {} of {n}", events.len()),
        };
        if let Some(last) = batch.events.last() {
            assert_eq!(
                batch.revision,
                last.revision(),
                "a batch's revision is its last event's"
            );
        }
        // Revisions grow; writes committed together share one, and a revision is never
        // split over two batches.
        let before = events.last().map(Event::revision);
        for (i, event) in batch.events.iter().enumerate() {
            if let Some(before) = before {
                assert!(
                    event.revision() > before,
                    "out of order or split: {event:?}"
                );
            }
            if i > 0 {
                assert!(
                    event.revision() >= batch.events[i - 1].revision(),
                    "out of order: {event:?}"
                );
            }
        }
        events.extend(batch.events);
    }
    assert_eq!(events.len(), n, "more events than expected: {events:?}");
    events
}

/// Checks that the watch has nothing more to say (which also makes a replaying watch switch
/// to live events and drain what it buffered meanwhile), then that a new put is its very
/// next event: no duplicate and no stray event was left.
async fn nothing_else_then_a_sentinel(store: &Arc<dyn Store>, watch: &mut WatchStream) {
    let quiet = timeout(Duration::from_millis(300), watch.next()).await;
    assert!(quiet.is_err(), "unexpected: {quiet:?}");
    let r = put(store, "sentinel", "s").await;
    let created = store
        .get("sentinel")
        .await
        .expect("get")
        .expect("sentinel")
        .create_revision;
    assert_eq!(
        next_events(watch, 1).await,
        [put_event("sentinel", "s", created, r)]
    );
}

/// Watches from `after`, which must be compacted; returns (requested, compact_revision).
async fn expect_compacted(store: &Arc<dyn Store>, after: Revision) -> (Revision, Revision) {
    let outcome = match store.watch(after).await {
        Ok(mut watch) => match timeout(WAIT, watch.next()).await {
            Ok(Some(outcome)) => outcome.map(|batch| format!("{batch:?}")),
            other => panic!("watch from compacted {after}: {other:?}"),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => (requested, compact_revision),
        other => panic!("watch from compacted revision {after}: {other:?}"),
    }
}

/// Polls `check` until it holds, failing the test after [`WAIT`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tlsfleet_testkit::eventually::eventually(what, WAIT, check).await
}

/// Cases only the embedded store has.
mod embedded_only {
    use super::*;

    #[tokio::test]
    async fn a_bounded_history_is_compacted_as_writes_go_on() {
        let dir = TempDir::new().expect("temporary directory");
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(dir.path())
                .expect("open")
                .with_history(16),
        );
        let mut last = 0;
        for i in 0..100 {
            last = put(&store, &format!("k{}", i % 7), "v").await;
        }
        // At most the kept history plus the slack remains.
        let (_, compact_revision) = expect_compacted(&store, 1).await;
        assert!(
            compact_revision >= last - 16 - 2 && compact_revision <= last - 16,
            "compacted at {compact_revision}, last revision {last}"
        );
        assert!(matches!(
            store.changes_since(10).await,
            Err(StoreError::Compacted { .. })
        ));
        // The recent history is still there for resuming agents.
        let (now, keys) = store
            .changes_since(last - 10)
            .await
            .expect("recent history");
        assert_eq!(now, last);
        assert!(!keys.is_empty());
        // The same directory opened again keeps compacting from where it was.
        drop(store);
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(dir.path())
                .expect("reopen")
                .with_history(16),
        );
        for _ in 0..40 {
            last = put(&store, "k0", "w").await;
        }
        let (_, again) = expect_compacted(&store, 1).await;
        assert!(again >= last - 16 - 2, "compacted at {again}, last {last}");
    }

    #[tokio::test]
    async fn the_identity_is_made_once_and_kept() {
        let dir = TempDir::new().expect("temporary directory");
        let first = EmbeddedStore::open(dir.path()).expect("open");
        let id = first.identity().await.expect("identity");
        assert!(id.starts_with("file-"), "{id}");
        drop(first);
        let again = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(again.identity().await.expect("identity"), id);
        let other = TempDir::new().expect("temporary directory");
        let fresh = EmbeddedStore::open(other.path()).expect("open");
        assert_ne!(fresh.identity().await.expect("identity"), id);
    }

    #[tokio::test]
    async fn survives_reopen_with_the_same_data_and_revision() {
        let dir = TempDir::new().expect("temporary directory");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let history = write_history(&store).await;
        let compacted_at = history[1].revision();
        store.compact(compacted_at).await.expect("compact");
        store
            .put_agent("n1", b"x".to_vec(), Duration::from_secs(60))
            .await
            .expect("agent");
        let before = store.list().await.expect("list");
        drop(store);

        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("reopen"));
        assert_eq!(store.list().await.expect("list"), before);
        assert_eq!(store.revision().await.expect("revision"), before.revision);
        // The log and the compaction survive too.
        let mut watch = store.watch(compacted_at).await.expect("watch");
        assert_eq!(next_events(&mut watch, 3).await, history[2..]);
        let (requested, at) = expect_compacted(&store, compacted_at - 1).await;
        assert_eq!((requested, at), (compacted_at - 1, compacted_at));
        // Revisions continue where they stopped.
        assert_eq!(put(&store, "z", "1").await, before.revision + 1);
        // The agent registry is memory only: agents register again when they reconnect.
        assert!(store.list_agents().await.expect("list_agents").is_empty());
    }

    #[tokio::test]
    async fn a_second_open_of_the_directory_fails_at_once() {
        let dir = TempDir::new().expect("temporary directory");
        let first = EmbeddedStore::open(dir.path()).expect("open");
        let path = dir.path().to_owned();
        let second = timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || EmbeddedStore::open(&path).err()),
        )
        .await
        .expect("the second open returns instead of waiting")
        .expect("open task");
        match second {
            Some(StoreError::Other(message)) => {
                assert!(message.contains("already open"), "{message}")
            }
            other => panic!("second open: {other:?}"),
        }
        drop(first);
        EmbeddedStore::open(dir.path()).expect("open after the first owner closed it");
    }

    #[tokio::test]
    async fn watch_ends_when_the_store_is_dropped() {
        let fixture = embedded();
        let mut watch = fixture.store.watch(0).await.expect("watch");
        drop(fixture);
        match timeout(WAIT, watch.next()).await {
            Ok(None) => {}
            other => panic!("expected the end of the watch: {other:?}"),
        }
    }
}

/// Cases only the etcd store has.
mod etcd_only {
    use super::*;

    #[tokio::test]
    async fn the_identity_is_made_once_and_shared() {
        let etcd = Etcd::start();
        let a = EtcdStore::connect(&[etcd.endpoint()], "/tlsfleet/")
            .await
            .expect("connect");
        let b = EtcdStore::connect(&[etcd.endpoint()], "/tlsfleet/")
            .await
            .expect("connect");
        let id = a.identity().await.expect("identity");
        assert!(id.starts_with("etcd-"), "{id}");
        assert_eq!(b.identity().await.expect("identity"), id);
        let other = EtcdStore::connect(&[etcd.endpoint()], "/other/")
            .await
            .expect("connect");
        assert_ne!(other.identity().await.expect("identity"), id);
    }

    /// Two control servers: an agent taken over by the second is neither overwritten nor
    /// removed by the first, and the second's entries outlive the first's lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agent_taken_over_by_another_server_stays_with_it() {
        let etcd = Etcd::start();
        let (a, b) = (connect(&etcd).await, connect(&etcd).await);
        let ttl = Duration::from_secs(2);
        a.put_agent("moved", b"on a".to_vec(), ttl)
            .await
            .expect("put");
        a.put_agent("stays", b"on a".to_vec(), ttl)
            .await
            .expect("put");
        b.put_agent("moved", b"on b".to_vec(), ttl)
            .await
            .expect("put");
        assert!(!a
            .put_agent_unless_taken("moved", b"disconnected from a".to_vec(), ttl)
            .await
            .expect("conditional put"));
        a.remove_agent("moved").await.expect("remove");
        assert_eq!(
            a.list_agents().await.expect("list"),
            [agent("moved", "on b"), agent("stays", "on a")]
        );
        // a dies (stops keeping its lease alive); b lives on.
        let start = Instant::now();
        eventually("a's agents end with its lease", || async {
            assert!(b.keep_agents_alive().await.expect("keep alive"));
            b.list_agents().await.expect("list") == [agent("moved", "on b")]
        })
        .await;
        assert!(start.elapsed() < ttl * 3, "took {:?}", start.elapsed());
    }

    async fn connect(etcd: &Etcd) -> Arc<dyn Store> {
        let store = EtcdStore::connect(&[etcd.endpoint()], "/tlsfleet/")
            .await
            .expect("connect");
        Arc::new(store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_while_etcd_is_down_then_recovers() {
        let mut etcd = Etcd::start();
        let store = connect(&etcd).await;
        let before = put(&store, "a", "1").await;
        etcd.kill();

        let started = Instant::now();
        let (put_b, delete_a, list) = tokio::join!(
            store.put("b", b"1".to_vec()),
            store.delete("a"),
            store.list()
        );
        let elapsed = started.elapsed();
        assert!(
            matches!(put_b, Err(StoreError::Unavailable(_))),
            "put: {put_b:?}"
        );
        assert!(
            matches!(delete_a, Err(StoreError::Unavailable(_))),
            "delete: {delete_a:?}"
        );
        assert!(
            matches!(list, Err(StoreError::Unavailable(_))),
            "list: {list:?}"
        );
        assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");

        etcd.restart();
        let after = put(&store, "c", "1").await;
        // Nothing was written while etcd was down.
        assert_eq!(after, before + 1);
        let keys: Vec<String> = store
            .list()
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, ["a", "c"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_reports_unavailable_when_etcd_dies() {
        let mut etcd = Etcd::start();
        let store = connect(&etcd).await;
        let mut watch = store.watch(0).await.expect("watch");
        etcd.kill();
        match timeout(WAIT, watch.next()).await {
            Ok(Some(Err(StoreError::Unavailable(_)))) => {}
            other => panic!("expected Unavailable: {other:?}"),
        }
        assert!(
            matches!(timeout(WAIT, watch.next()).await, Ok(None)),
            "ends after the error"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_watch_cancels_it_in_etcd() {
        const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";
        let etcd = Etcd::start();
        let store = connect(&etcd).await;
        assert_eq!(etcd.metric(WATCHERS), Some(0.0), "etcd exposes {WATCHERS}");
        let watch = store.watch(0).await.expect("watch");
        eventually("etcd counts the watcher", || async {
            etcd.metric(WATCHERS) == Some(1.0)
        })
        .await;
        drop(watch);
        eventually("etcd drops the watcher", || async {
            etcd.metric(WATCHERS) == Some(0.0)
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_under_different_prefixes_do_not_see_each_other() {
        let etcd = Etcd::start();
        let one = EtcdStore::connect(&[etcd.endpoint()], "/one/")
            .await
            .expect("connect");
        let two = EtcdStore::connect(&[etcd.endpoint()], "/two/")
            .await
            .expect("connect");
        one.put("a", b"1".to_vec()).await.expect("put");
        one.put_agent("n", b"1".to_vec(), Duration::from_secs(60))
            .await
            .expect("agent");
        assert!(two.list().await.expect("list").items.is_empty());
        assert!(two.list_agents().await.expect("agents").is_empty());
        assert_eq!(one.list().await.expect("list").items.len(), 1);
    }
}
