//! Both servers' settings from a TOML file (`--config`), the environment (`TLSFLEET_<FLAG>`)
//! and the command line, in that order of precedence, with the real binaries; `--print-config`;
//! `--log-format json`, and the one log line of every REST and gRPC request.

use std::{
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use tlsfleet_testkit::{
    control::{admin_ctl_ok, keys, write_credentials, Control, DOMAIN},
    ports::free_port,
    procs::{bin, eventually, http_get, ready_timeout, Proc},
    tls::{KeyKind, TestCert},
};

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write the config file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run the binary")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A control server's settings file in `dir`, listening on `http` and `grpc`.
fn control_file(dir: &Path, http: SocketAddr, grpc: SocketAddr) -> PathBuf {
    let creds = write_credentials(dir);
    let path = dir.join("control.toml");
    write(
        &path,
        &format!(
            "store = \"file:{}\"\ncredentials = \"{}\"\ndomain = [\"{DOMAIN}\"]\n\
             http_listen = \"{http}\"\ngrpc-listen = \"{grpc}\"\nlog-format = \"json\"\n\
             peer-access-key-id = \"{}\"\npeer-access-key-secret = \"{}\"\n",
            dir.join("data").display(),
            creds.display(),
            keys::ADMIN.0,
            keys::ADMIN.1,
        ),
        0o600,
    );
    path
}

#[test]
fn control_takes_the_command_line_over_the_environment_over_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [file_http, env_http, file_grpc, env_grpc, cli_grpc] =
        [(); 5].map(|()| loopback(free_port()));
    let config = control_file(dir.path(), file_http, file_grpc);
    let control = |extra: &[&str]| {
        let mut cmd = Command::new(bin("tlsfleet-control"));
        cmd.env("TLSFLEET_CONTROL_CONFIG", &config)
            .env("TLSFLEET_HTTP_LISTEN", env_http.to_string())
            .env("TLSFLEET_GRPC_LISTEN", env_grpc.to_string())
            .arg("--grpc-listen")
            .arg(cli_grpc.to_string())
            .args(extra);
        cmd
    };

    // What --print-config says, with where each setting came from, the secret masked.
    let out = run(&mut control(&["--print-config"]));
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    for line in [
        format!("http-listen = \"{env_http}\"  # environment"),
        format!("grpc-listen = \"{cli_grpc}\"  # command line"),
        format!("domain = [\"{DOMAIN}\"]  # file"),
        "log-format = \"json\"  # file".to_owned(),
        "peer-access-key-secret = \"<masked>\"  # file".to_owned(),
        "http-max-connections = 4096  # default".to_owned(),
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no {line:?} in:\n{printed}"
        );
    }
    assert!(!printed.contains(keys::ADMIN.1), "{printed}");

    // And the server does what it said.
    let server = Proc::spawn_logged("tlsfleet-control", &mut control(&[]));
    let ready = eventually(ready_timeout(), || {
        matches!(http_get(env_http, "/-/readyz"), Ok((200, _)))
    });
    assert!(
        ready,
        "not ready on the environment's address:\n{}",
        server.log_text()
    );
    assert!(
        TcpStream::connect(cli_grpc).is_ok(),
        "gRPC not on the flag's address"
    );
    for unused in [file_http, file_grpc, env_grpc] {
        assert!(
            TcpStream::connect_timeout(&unused, Duration::from_secs(1)).is_err(),
            "something listens on {unused}"
        );
    }
    // log-format = "json" from the file: every line is one JSON object.
    eventually(Duration::from_secs(10), || {
        server.log_text().contains("tlsfleet-control serving")
    });
    let log = server.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("tlsfleet-control serving")),
        "{log}"
    );
}

#[test]
fn unknown_settings_and_bad_values_stop_both_servers_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    write(&bad, "listen-adress = \"127.0.0.1:1\"\n", 0o600);
    for binary in ["tlsfleet-control", "tlsfleet-agent"] {
        let out = run(Command::new(bin(binary)).arg("--config").arg(&bad));
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{binary}: {said}");
        assert!(
            said.contains("unknown setting \"listen-adress\"")
                && said.contains(&bad.display().to_string()),
            "{binary}: {said}"
        );
    }
    // A value from the environment gets the flag's own check.
    let out = run(Command::new(bin("tlsfleet-control"))
        .env("TLSFLEET_HTTP_LISTEN", "not-an-address")
        .arg("--credentials")
        .arg("/nonexistent"));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("--http-listen"), "{said}");
    // A switch in the file takes a boolean.
    write(&bad, "insecure = \"yes\"\n", 0o600);
    let out = run(Command::new(bin("tlsfleet-agent"))
        .arg("--config")
        .arg(&bad));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("\"insecure\"") && said.contains("true or false"),
        "{said}"
    );
}

#[test]
fn agent_runs_from_a_file_with_the_environment_over_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = Control::embedded();
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let [tls, file_admin, env_admin] = [(); 3].map(|()| loopback(free_port()));
    let config = dir.path().join("agent.toml");
    // Readable by others, with a secret in it: the agent says so.
    write(
        &config,
        &format!(
            "control = [\"{}\"]\ndomain = [\"{DOMAIN}\"]\ncert = \"{}\"\nkey = \"{}\"\n\
             listen = \"{tls}\"\nadmin-listen = \"{file_admin}\"\nnode-id = \"edge-from-file\"\n\
             label = [\"zone=eu-1\", \"tier=canary\"]\n\
             access-key-id = \"{}\"\naccess-key-secret = \"{}\"\n",
            control.grpc_url(),
            cert.cert.display(),
            cert.key.display(),
            keys::AGENT.0,
            keys::AGENT.1,
        ),
        0o644,
    );
    let printed = run(Command::new(bin("tlsfleet-agent"))
        .env("TLSFLEET_AGENT_CONFIG", &config)
        .env("TLSFLEET_ADMIN_LISTEN", env_admin.to_string())
        .arg("--print-config"));
    let said = text(&printed);
    assert!(printed.status.success(), "{said}");
    assert!(
        said.contains("label = [\"zone=eu-1\", \"tier=canary\"]  # file")
            && said.contains(&format!("admin-listen = \"{env_admin}\"  # environment"))
            && !said.contains(keys::AGENT.1),
        "{said}"
    );

    let agent = Proc::spawn_logged(
        "tlsfleet-agent",
        Command::new(bin("tlsfleet-agent"))
            .env("TLSFLEET_AGENT_CONFIG", &config)
            .env("TLSFLEET_ADMIN_LISTEN", env_admin.to_string()),
    );
    let ready = eventually(ready_timeout(), || {
        matches!(http_get(env_admin, "/readyz"), Ok((200, _)))
    });
    assert!(ready, "agent not ready:\n{}", agent.log_text());
    assert!(
        TcpStream::connect_timeout(&file_admin, Duration::from_secs(1)).is_err(),
        "the file's admin address is in use"
    );
    // (The log writer runs beside the server: wait for the line.)
    let warned = eventually(Duration::from_secs(10), || {
        agent
            .log_text()
            .contains("holds a secret and others can read it")
    });
    assert!(
        warned,
        "no warning about a world-readable secret:\n{}",
        agent.log_text()
    );
    // It registered with the control plane under the file's node id and labels.
    let agents = admin_ctl_ok(&control.grpc_url(), &["agents"]).to_string();
    assert!(
        agents.contains("edge-from-file") && agents.contains("eu-1"),
        "{agents}"
    );
}

/// Whether `log` has the audit line (its message: the record, a JSON document) of request `id`.
fn audited(log: &str, id: &str) -> bool {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "tlsfleet::audit")
        .filter_map(|v| serde_json::from_str::<serde_json::Value>(v["message"].as_str()?).ok())
        .any(|record| record["request_id"] == id)
}

/// The JSON log lines of `log` whose `request_id` is `id`.
fn lines_of(log: &str, id: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["request_id"] == id)
        .collect()
}

/// The request line (target `tlsfleet::request`) of request `id`, once it is written.
fn request_line(server: &Proc, id: &str) -> serde_json::Value {
    let mut found = None;
    eventually(Duration::from_secs(10), || {
        found = lines_of(&server.log_text(), id)
            .into_iter()
            .find(|v| v["target"] == "tlsfleet::request");
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no request line for {id}:\n{}", server.log_text()))
}

#[tokio::test]
async fn every_request_logs_one_json_line_with_the_request_id_it_answered() {
    use tlsfleet_proto::{
        signer::signed_request,
        v1::{methods, GetRequest, PutRequest},
    };
    use tlsfleet_testkit::{
        grpc::{admin_as, https_config, signed},
        rest::oss,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let [http, grpc] = [(); 2].map(|()| loopback(free_port()));
    let config = control_file(dir.path(), http, grpc);
    let server = Proc::spawn_logged(
        "tlsfleet-control",
        Command::new(bin("tlsfleet-control"))
            .arg("--config")
            .arg(&config),
    );
    let ready = eventually(ready_timeout(), || {
        matches!(http_get(http, "/-/readyz"), Ok((200, _)))
    });
    assert!(ready, "not ready:\n{}", server.log_text());

    // REST: the x-oss-request-id answered is the one logged, with who, what and how it went.
    let xml = "<HttpsConfiguration><TLS><Enable>true</Enable><TLSVersion>TLSv1.3</TLSVersion>\
               </TLS></HttpsConfiguration>";
    let put = oss(http, "PUT", "logs-bucket", xml, keys::ADMIN).expect("REST PUT");
    assert_eq!(put.status, 200, "{}", put.body);
    let id = put
        .header("x-oss-request-id")
        .expect("request id")
        .to_owned();
    let line = request_line(&server, &id);
    assert_eq!(line["via"], "rest", "{line}");
    assert_eq!(line["key"], keys::ADMIN.0, "{line}");
    assert_eq!(line["method"], "PUT", "{line}");
    assert_eq!(line["bucket"], "logs-bucket", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert!(
        line["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert!(
        line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{line}"
    );
    // The change's audit line has the same id.
    assert!(audited(&server.log_text(), &id), "no audit line for {id}");
    // A refused request: its status and OSS code, and no key (the signature is wrong).
    let bad = oss(http, "GET", "logs-bucket", "", (keys::ADMIN.0, "wrong")).expect("REST GET");
    assert_eq!(bad.status, 403);
    let id = bad
        .header("x-oss-request-id")
        .expect("request id")
        .to_owned();
    let line = request_line(&server, &id);
    assert_eq!(
        (line["status"].clone(), line["key"].clone()),
        (403.into(), "-".into()),
        "{line}"
    );
    assert_eq!(line["code"], "SignatureDoesNotMatch", "{line}");

    // gRPC: the response's x-tlsfleet-request-id is the one logged.
    let url = format!("http://{grpc}");
    let mut admin = admin_as(&url, keys::ADMIN).await;
    let req = PutRequest {
        bucket: "grpc-bucket".into(),
        config: Some(https_config(&["TLSv1.3"], &[], &[])),
        ..Default::default()
    };
    let answer = admin.put(signed_request(req)).await.expect("gRPC put");
    let id = answer
        .metadata()
        .get("x-tlsfleet-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_owned();
    let line = request_line(&server, &id);
    assert_eq!(line["via"], "grpc", "{line}");
    assert_eq!(line["method"], methods::HTTPS_CONFIG_SERVICE_PUT, "{line}");
    assert_eq!(line["key"], keys::ADMIN.0, "{line}");
    assert_eq!(line["bucket"], "grpc-bucket", "{line}");
    assert_eq!(line["status"], "Ok", "{line}");
    assert!(audited(&server.log_text(), &id), "no audit line for {id}");
    // A call signed with a wrong secret: Unauthenticated, no key, its id answered all the same.
    let mut plain =
        tlsfleet_proto::v1::https_config_service_client::HttpsConfigServiceClient::connect(
            url.clone(),
        )
        .await
        .expect("connect");
    let refused = plain
        .get(signed(
            GetRequest {
                bucket: "grpc-bucket".into(),
            },
            methods::HTTPS_CONFIG_SERVICE_GET,
            (keys::ADMIN.0, "wrong"),
        ))
        .await
        .expect_err("a wrong signature is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let id = refused
        .metadata()
        .get("x-tlsfleet-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id on a refusal")
        .to_owned();
    let line = request_line(&server, &id);
    assert_eq!(
        (
            line["status"].clone(),
            line["key"].clone(),
            line["bucket"].clone()
        ),
        ("Unauthenticated".into(), "-".into(), "-".into()),
        "{line}"
    );
}

#[tokio::test]
async fn request_log_changes_leaves_out_only_the_successful_reads() {
    use tlsfleet_proto::{
        signer::signed_request,
        v1::{GetRequest, PutRequest},
    };
    use tlsfleet_testkit::{
        grpc::{admin_as, https_config},
        rest::oss,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let [http, grpc] = [(); 2].map(|()| loopback(free_port()));
    let config = control_file(dir.path(), http, grpc);
    let server = Proc::spawn_logged(
        "tlsfleet-control",
        Command::new(bin("tlsfleet-control"))
            .arg("--config")
            .arg(&config)
            .args(["--request-log", "changes"]),
    );
    let ready = eventually(ready_timeout(), || {
        matches!(http_get(http, "/-/readyz"), Ok((200, _)))
    });
    assert!(ready, "not ready:\n{}", server.log_text());
    let rest_id = |r: &tlsfleet_testkit::rest::Response| {
        r.header("x-oss-request-id").expect("request id").to_owned()
    };
    let grpc_id = |m: &tonic::metadata::MetadataMap| {
        m.get("x-tlsfleet-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("request id")
            .to_owned()
    };

    // In this order: a read, a change, a refused read; the same through gRPC.
    let xml = "<HttpsConfiguration><TLS><Enable>true</Enable><TLSVersion>TLSv1.3</TLSVersion>\
               </TLS></HttpsConfiguration>";
    let read = oss(http, "GET", "quiet-bucket", "", keys::ADMIN).expect("REST GET");
    assert_eq!(read.status, 200, "{}", read.body);
    let put = oss(http, "PUT", "quiet-bucket", xml, keys::ADMIN).expect("REST PUT");
    assert_eq!(put.status, 200, "{}", put.body);
    let refused = oss(http, "GET", "quiet-bucket", "", (keys::ADMIN.0, "wrong")).expect("GET");
    assert_eq!(refused.status, 403);
    let mut admin = admin_as(&format!("http://{grpc}"), keys::ADMIN).await;
    let got = admin
        .get(signed_request(GetRequest {
            bucket: "quiet-bucket".into(),
        }))
        .await
        .expect("gRPC get");
    let changed = admin
        .put(signed_request(PutRequest {
            bucket: "quiet-grpc".into(),
            config: Some(https_config(&["TLSv1.3"], &[], &[])),
            ..Default::default()
        }))
        .await
        .expect("gRPC put");

    // Lines are written in order: once the last one is there, every earlier one would be.
    let last = request_line(&server, &grpc_id(changed.metadata()));
    assert_eq!(last["status"], "Ok", "{last}");
    assert_eq!(request_line(&server, &rest_id(&put))["method"], "PUT");
    assert_eq!(request_line(&server, &rest_id(&refused))["status"], 403);
    let log = server.log_text();
    for (what, id) in [
        ("the REST GET", rest_id(&read)),
        ("the gRPC Get", grpc_id(got.metadata())),
    ] {
        assert!(
            lines_of(&log, &id)
                .iter()
                .all(|v| v["target"] != "tlsfleet::request"),
            "{what} was logged:\n{log}"
        );
    }
}
