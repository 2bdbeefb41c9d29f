//! The Grafana dashboards (`deploy/grafana/*.json`) and the alert rules
//! (`deploy/prometheus/tlsfleet-alerts.yml`) query only metrics and labels that a running
//! control server (on etcd) and agent export: a renamed metric or label fails here, not on an
//! operator's screen. Every dashboard query is also checked by `promtool`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tlsfleet_proto::{signer::signed_request, v1::PutRequest};
use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, Control, DOMAIN},
    etcd::Etcd,
    grpc::{admin_as, https_config},
    procs::http_get,
    rest::oss,
    tls::{handshake, http1, ClientOffer, KeyKind, TestCert},
};

const WAIT: Duration = Duration::from_secs(20);

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Metric name -> the label names its series carry, from a Prometheus text exposition.
fn exposed(text: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = into.entry(line[..name_end].to_owned()).or_default();
        if line[name_end..].starts_with('{') {
            let Some(close) = line.find('}') else {
                continue;
            };
            for pair in line[name_end + 1..close].split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_owned());
                }
            }
        }
    }
}

/// Every PromQL expression of the dashboards, with where it is.
fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in ["tlsfleet-fleet.json", "tlsfleet-control.json"] {
        let path = repo().join("deploy/grafana").join(file);
        let text = std::fs::read_to_string(&path).expect("dashboard");
        let board: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        let panels = board["panels"].as_array().expect("panels");
        for p in panels.iter().filter(|p| p["type"] != "row") {
            let targets = p["targets"].as_array().expect("targets");
            assert!(
                !targets.is_empty(),
                "{file}: panel {} has no query",
                p["title"]
            );
            for t in targets {
                let expr = t["expr"].as_str().expect("expr").to_owned();
                out.push((format!("{file}: {}", p["title"]), expr));
            }
        }
    }
    out
}

/// Every `expr:` of the alert rules (plain or folded `>-`).
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/tlsfleet-alerts.yml"))
        .expect("alert rules");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_owned();
        }
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let expr = if value.trim() == ">-" {
            lines[i + 1..]
                .iter()
                .take_while(|l| l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            value.trim().to_owned()
        };
        out.push((format!("alert {alert}"), expr));
    }
    out
}

/// The tlsfleet metrics an expression reads, each with the label names its matchers use; and
/// the labels of its `by (...)` / `on (...)` clauses.
fn references(expr: &str) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let bytes = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut metrics = Vec::new();
    let mut grouping = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        let word = &expr[start..i];
        let rest = expr[i..].trim_start();
        if word.starts_with("tlsfleet_") {
            let mut labels = Vec::new();
            if let Some(body) = rest.strip_prefix('{') {
                let body = &body[..body.find('}').expect("closed matcher")];
                for m in body.split(',') {
                    let name: String = m.trim().chars().take_while(|c| ident(*c as u8)).collect();
                    labels.push(name);
                }
            }
            metrics.push((word.to_owned(), labels));
        } else if matches!(word, "by" | "on" | "without" | "ignoring") {
            if let Some(body) = rest.strip_prefix('(') {
                let body = &body[..body.find(')').expect("closed grouping")];
                grouping.extend(body.split(',').map(|l| l.trim().to_owned()));
            }
        }
    }
    (metrics, grouping)
}

async fn traffic(control: &Control, agent: &Agent, cert: &TestCert) {
    // REST: a PUT, a GET, a refused GET.
    let xml = "<HttpsConfiguration><TLS><Enable>true</Enable><TLSVersion>TLSv1.3</TLSVersion>\
               </TLS></HttpsConfiguration>";
    let put = oss(control.http, "PUT", "strict", xml, keys::ADMIN).expect("REST PUT");
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        oss(control.http, "GET", "strict", "", keys::ADMIN)
            .expect("GET")
            .status,
        200
    );
    let refused = oss(control.http, "GET", "strict", "", (keys::ADMIN.0, "x")).expect("GET");
    assert_eq!(refused.status, 403);
    // gRPC: a PUT.
    let mut admin = admin_as(&control.grpc_url(), keys::ADMIN).await;
    let revision = admin
        .put(signed_request(PutRequest {
            bucket: "open".into(),
            config: Some(https_config(&["TLSv1.2", "TLSv1.3"], &[], &[])),
            ..Default::default()
        }))
        .await
        .expect("gRPC put")
        .into_inner()
        .revision;
    assert!(
        agent.wait_revision(revision, WAIT),
        "agent never applied {revision}"
    );
    // The agent: a handshake and a served request, a refused request, a refused connection.
    let mut s = handshake(
        agent.tls,
        &format!("open.{DOMAIN}"),
        &cert.ca_der,
        &ClientOffer::tls13(),
    )
    .await
    .expect("handshake");
    let (status, _) = http1(&mut s, &format!("open.{DOMAIN}"), "/obj")
        .await
        .expect("request");
    assert_eq!(status, 200);
    let mut s = handshake(agent.tls, DOMAIN, &cert.ca_der, &ClientOffer::tls12())
        .await
        .expect("handshake on the bare domain");
    let (status, _) = http1(&mut s, DOMAIN, "/strict/obj").await.expect("request");
    assert_eq!(status, 403);
    assert!(handshake(
        agent.tls,
        "elsewhere.test",
        &cert.ca_der,
        &ClientOffer::any()
    )
    .await
    .is_err());
}

#[tokio::test]
async fn every_metric_and_label_the_dashboards_and_alerts_query_is_exported() {
    let etcd = Etcd::start();
    let control = Control::on_etcd(&etcd.endpoint());
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let mut agent = Agent::spawn(
        "edge-dash",
        &[control.grpc_url()],
        &cert.cert,
        &cert.key,
        Some(dir.path().join("cache")),
    );
    agent.wait_ready();
    traffic(&control, &agent, &cert).await;

    let mut metrics = BTreeMap::new();
    let (code, text) = http_get(control.http, "/-/metrics").expect("control metrics");
    assert_eq!(code, 200);
    exposed(&text, &mut metrics);
    exposed(&agent.metrics_text(), &mut metrics);

    // What the new series say is what happened: two changes reached the one agent, and the
    // expiry is the served certificate's notAfter (as openssl reads it).
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let converged = value(&text, "tlsfleet_control_convergence_seconds_count");
    assert!(converged >= 2.0, "{converged} changes measured");
    let agent_text = agent.metrics_text();
    let not_after = value(
        &agent_text,
        "tlsfleet_agent_certificate_not_after_timestamp_seconds",
    );
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(&cert.cert)
        .output()
        .expect("openssl");
    let end = String::from_utf8_lossy(&openssl.stdout).into_owned();
    let day = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", not_after as i64),
            "+notAfter=%Y-%m-%d %H:%M:%SZ",
        ])
        .output()
        .expect("date");
    assert_eq!(
        String::from_utf8_lossy(&day.stdout),
        end,
        "notAfter {not_after}"
    );
    assert!(value(&text, "tlsfleet_control_sync_streams") >= 1.0);

    let mut problems = Vec::new();
    let queries: Vec<_> = dashboard_exprs().into_iter().chain(alert_exprs()).collect();
    assert!(queries.len() > 40, "only {} queries found", queries.len());
    for (where_, expr) in &queries {
        let (used, grouping) = references(expr);
        if used.is_empty() {
            problems.push(format!("{where_}: no tlsfleet metric in {expr}"));
        }
        let mut labels_here: BTreeSet<String> =
            TARGET_LABELS.iter().map(|l| (*l).to_owned()).collect();
        for (name, matchers) in &used {
            let Some(have) = metrics.get(name) else {
                problems.push(format!("{where_}: {name} is not exported"));
                continue;
            };
            labels_here.extend(have.iter().cloned());
            for l in matchers {
                if !have.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                    problems.push(format!(
                        "{where_}: {name} has no label {l:?} (has {have:?})"
                    ));
                }
            }
        }
        for l in &grouping {
            if !labels_here.contains(l) {
                problems.push(format!(
                    "{where_}: groups by {l:?}, which none of its metrics has"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn promtool_accepts_every_dashboard_query_and_the_alert_rules() {
    let Ok(out) = Command::new("promtool").arg("--version").output() else {
        panic!("promtool is missing: apt-get install prometheus (tests/run.sh installs it)");
    };
    assert!(out.status.success());
    // Each dashboard query as a recording rule: promtool parses and type-checks it.
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("dashboards.yml");
    let mut text = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, (_, expr)) in dashboard_exprs().iter().enumerate() {
        let quoted = serde_json::to_string(expr).expect("a JSON string is a YAML string");
        text.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {quoted}\n"
        ));
    }
    std::fs::write(&rules, text).expect("write rules");
    let alerts = repo().join("deploy/prometheus/tlsfleet-alerts.yml");
    let mut check = Command::new("promtool");
    check.arg("check").arg("rules").arg(&rules).arg(&alerts);
    promtool_passes(&mut check);
    let mut test = Command::new("promtool");
    test.current_dir(repo().join("deploy/prometheus")).args([
        "test",
        "rules",
        "tlsfleet-alerts.test.yml",
    ]);
    promtool_passes(&mut test);
}

fn promtool_passes(cmd: &mut Command) {
    let out = cmd.output().expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_committed_dashboards_are_what_their_generator_writes() {
    let out = Command::new("python3")
        .arg(repo().join("deploy/grafana/generate.py"))
        .arg("--check")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_references_of_a_query_are_read_as_prometheus_reads_them() {
    let (m, g) = references(
        r#"histogram_quantile(0.99, sum by (le, endpoint) (rate(tlsfleet_control_store_call_duration_seconds_bucket{op="get", endpoint!~"x"}[5m])))"#,
    );
    assert_eq!(
        m,
        [(
            "tlsfleet_control_store_call_duration_seconds_bucket".to_owned(),
            vec!["op".to_owned(), "endpoint".to_owned()]
        )]
    );
    assert_eq!(g, ["le", "endpoint"]);
    let mut have = BTreeMap::new();
    exposed("# HELP x\nx_total{a=\"1\",b=\"2\"} 3\ny 1\n", &mut have);
    assert_eq!(have["x_total"], ["a".to_owned(), "b".to_owned()].into());
    assert!(have["y"].is_empty());
}
