//! The control plane on a three-member etcd cluster (election timeout 100 ms) while the
//! leader is SIGKILLed: a client PUTting through REST without pause loses no acknowledged
//! write, is never left without an answer for more than about a second, and the agents
//! converge.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, tlsfleetctl, Control, DOMAIN},
    etcd_cluster::EtcdCluster,
    eventually::until_blocking,
    procs::http_get,
    rest,
    tls::{KeyKind, TestCert},
};

/// The longest a client may wait between two answers while the leader dies.
const MAX_GAP: Duration = Duration::from_millis(1_500);

fn xml(versions: &[&str]) -> String {
    let v: String = versions
        .iter()
        .map(|v| format!("<TLSVersion>{v}</TLSVersion>"))
        .collect();
    format!("<HttpsConfiguration><TLS><Enable>true</Enable>{v}</TLS></HttpsConfiguration>")
}

/// One PUT of the stream: its bucket, the versions sent, when it was answered and how.
struct Answer {
    bucket: String,
    versions: &'static [&'static str],
    at: Instant,
    status: u16,
}

#[test]
fn the_leader_dies_mid_stream_and_nothing_acknowledged_is_lost_nor_stalled() {
    let mut cluster = EtcdCluster::start(3);
    let controls = [
        Control::on_etcd(&cluster.endpoints()),
        Control::on_etcd(&cluster.endpoints()),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let urls: Vec<String> = controls.iter().map(Control::grpc_url).collect();
    let agents: Vec<Agent> = (0..3)
        .map(|i| {
            let mut a = Agent::spawn(&format!("edge-{i}"), &urls, &cert.cert, &cert.key, None);
            a.wait_ready();
            a
        })
        .collect();

    // The client: PUT after PUT to the first server, each to a new bucket.
    let stop = Arc::new(AtomicBool::new(false));
    let http = controls[0].http;
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let versions: &'static [&'static str] = if n.is_multiple_of(2) {
                    &["TLSv1.3"]
                } else {
                    &["TLSv1.2", "TLSv1.3"]
                };
                let bucket = format!("stream-{n:06}");
                let status = rest::oss(http, "PUT", &bucket, &xml(versions), keys::ADMIN)
                    .map_or(0, |r| r.status);
                answers.push(Answer {
                    bucket,
                    versions,
                    at: Instant::now(),
                    status,
                });
                n += 1;
            }
            answers
        })
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let leader = cluster.leader().expect("a leader");
    let killed_at = Instant::now();
    cluster.kill(leader);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    let answers = client.join().expect("client thread");

    // Rates before and after, for the record.
    let rate = |from: Instant, to: Instant| {
        let n = answers
            .iter()
            .filter(|a| a.status == 200 && a.at >= from && a.at < to)
            .count();
        n as f64 / (to - from).as_secs_f64()
    };
    let before = rate(started + Duration::from_millis(500), killed_at);
    let after = rate(
        killed_at + Duration::from_secs(2),
        killed_at + Duration::from_secs(4),
    );
    let (longest, gap_end) = answers
        .windows(2)
        .map(|w| (w[1].at - w[0].at, w[1].at))
        .max()
        .unwrap_or((Duration::ZERO, killed_at));
    eprintln!(
        "the longest gap ended {:?} after the kill",
        gap_end.saturating_duration_since(killed_at)
    );
    let ok = answers.iter().filter(|a| a.status == 200).count();
    eprintln!(
        "{} PUTs answered ({ok} with 200); {before:.0}/s before the kill, {after:.0}/s from 2 s \
         after it; longest gap between answers {longest:?}",
        answers.len()
    );
    assert!(ok > 20, "the stream made progress");
    assert!(
        longest <= MAX_GAP,
        "no answer for {longest:?} (at most {MAX_GAP:?})"
    );

    // The server the client used moved off the dead member, and says so.
    let dead = cluster.endpoint(leader);
    let (code, metrics) = http_get(controls[0].http, "/-/metrics").expect("metrics");
    assert_eq!(code, 200);
    let in_use: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tlsfleet_control_store_member_in_use{") && l.ends_with(" 1"))
        .collect();
    assert_eq!(in_use.len(), 1, "{metrics}");
    assert!(
        !in_use[0].contains(&dead),
        "calls still go to the dead member: {metrics}"
    );
    assert_eq!(
        metrics.matches("tlsfleet_control_store_member_up{").count(),
        3,
        "{metrics}"
    );
    let (code, ready) = http_get(controls[0].http, "/-/readyz").expect("readyz");
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready.matches("store member ").count(), 3, "{ready}");

    // Every PUT answered 200 is there, with its content, at the other server.
    for a in answers.iter().filter(|a| a.status == 200) {
        let got = rest::oss(controls[1].http, "GET", &a.bucket, "", keys::ADMIN).expect("get");
        assert_eq!(got.status, 200, "{} was acknowledged but is gone", a.bucket);
        for v in ["TLSv1.2", "TLSv1.3"] {
            assert_eq!(
                got.body.contains(&format!("<TLSVersion>{v}</TLSVersion>")),
                a.versions.contains(&v),
                "{}: {}",
                a.bucket,
                got.body
            );
        }
    }

    // The agents converge, as both servers say.
    for url in &urls {
        let out = tlsfleetctl(
            url,
            keys::ADMIN,
            &["rollout", "status", "--wait", "--timeout", "20s"],
        );
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(until_blocking(Duration::from_secs(5), || agents
        .iter()
        .all(|a| a.readyz().is_some_and(|(c, _)| c == 200))));
}
