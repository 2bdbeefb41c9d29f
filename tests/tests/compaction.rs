//! Compaction past an agent's revision: the control server compacts the store's history on
//! its schedule (`--compaction-interval`; the embedded store also by `--embedded-history`); an
//! agent that was away while its revision was compacted, resuming after the control server
//! restarted, gets a snapshot and converges (a deleted bucket gone, a changed one enforced).

use std::time::Duration;

use tlsfleet_control::store::{etcd::EtcdStore, PolicyStore, StoreError};
use tlsfleet_testkit::{
    agent::Agent,
    control::{admin_ctl_ok as ctl_ok, Control, DOMAIN},
    etcd::Etcd,
    eventually::until,
    tls::{s_client, KeyKind, TestCert},
};

const WAIT: Duration = Duration::from_secs(20);

fn put(url: &str, bucket: &str, versions: &str) -> i64 {
    let v = ctl_ok(
        url,
        &[
            "put",
            "--bucket",
            bucket,
            "--tls-versions",
            versions,
            "--allow-downgrade",
        ],
    );
    v["revision"].as_i64().expect("revision")
}

fn tls12(a: &Agent, bucket: &str) -> bool {
    s_client(a.tls, &format!("{bucket}.{DOMAIN}"), &["-tls1_2"]).0
}

/// The away-and-back story, against `control` (restartable) and a way to tell that the
/// history up to `revision` is gone.
async fn an_agent_away_past_compaction_gets_a_snapshot<F, Fut>(mut control: Control, gone: F)
where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let url = control.grpc_url();
    let mut agent = Agent::spawn(
        "edge-away",
        std::slice::from_ref(&url),
        &cert.cert,
        &cert.key,
        Some(dir.path().join("cache")),
    );
    agent.wait_ready();
    put(&url, "keep", "TLSv1.2,TLSv1.3");
    let away_at = put(&url, "doomed", "TLSv1.3");
    ctl_ok(&url, &["rollout", "status", "--wait", "--timeout", "20s"]);
    assert!(
        agent.wait_cached(away_at, WAIT),
        "revision {away_at} never cached"
    );
    agent.kill();

    // While it is away: a change, a delete, and enough writes for the history to go.
    put(&url, "keep", "TLSv1.3");
    ctl_ok(&url, &["delete", "--bucket", "doomed", "--allow-downgrade"]);
    for i in 0..5 {
        put(&url, &format!("filler-{i}"), "TLSv1.3");
    }
    assert!(
        until(WAIT, || gone(away_at)).await,
        "the history after revision {away_at} was never compacted"
    );
    // A restarted control server no longer remembers the changes in memory either.
    control.restart();

    agent.restart();
    agent.wait_ready();
    ctl_ok(&url, &["rollout", "status", "--wait", "--timeout", "20s"]);
    assert_eq!(
        agent.metric("sync_snapshots_total"),
        Some(1.0),
        "resumed from a compacted revision with a snapshot"
    );
    assert!(
        !tls12(&agent, "keep"),
        "the change made while away is enforced"
    );
    assert!(
        tls12(&agent, "doomed"),
        "the bucket deleted while away is back to the default policy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd() {
    let etcd = Etcd::start();
    let control = Control::on_etcd_with(
        &etcd.endpoint(),
        &["--compaction-interval".to_owned(), "300ms".to_owned()],
    );
    let store = EtcdStore::connect(&[etcd.endpoint()], "/tlsfleet/")
        .await
        .expect("connect");
    an_agent_away_past_compaction_gets_a_snapshot(control, |after| {
        let store = store.clone();
        async move {
            matches!(
                store.changes_since(after).await,
                Err(StoreError::Compacted { .. })
            )
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_store() {
    let control = Control::embedded_with(
        &[
            "--embedded-history".to_owned(),
            "3".to_owned(),
            "--compaction-interval".to_owned(),
            "300ms".to_owned(),
        ],
        false,
    );
    // The embedded store is the server's own: its history is gone when the server says so
    // (its metrics show the revision moved past; compaction keeps at most 3 revisions).
    let http = control.http;
    an_agent_away_past_compaction_gets_a_snapshot(control, |after| async move {
        let text = tlsfleet_testkit::procs::http_get(http, "/-/metrics")
            .map(|(_, t)| t)
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("tlsfleet_control_index_revision "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .is_some_and(|now| now > after + 3)
    })
    .await;
}
