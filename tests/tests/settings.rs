//! Both servers' settings from a TOML file (`--config`), the environment (`TLSFLEET_<FLAG>`)
//! and the command line, in that order of precedence, with the real binaries; `--print-config`
//! and `--log-format json`.

use std::{
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use tlsfleet_testkit::{
    control::{admin_ctl_ok, keys, write_credentials, Control, DOMAIN},
    ports::free_port,
    procs::{bin, eventually, http_get, ready_timeout},
    tls::{KeyKind, TestCert},
};

/// A server started by a test, killed on drop; its stderr goes to `log`.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the server");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let server = Server::spawn(&mut control(&[]), dir.path().join("control.log"));
    let ready = eventually(ready_timeout(), || {
        matches!(http_get(env_http, "/-/readyz"), Ok((200, _)))
    });
    assert!(
        ready,
        "not ready on the environment's address:\n{}",
        server.log()
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
    let log = server.log();
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

    let agent = Server::spawn(
        Command::new(bin("tlsfleet-agent"))
            .env("TLSFLEET_AGENT_CONFIG", &config)
            .env("TLSFLEET_ADMIN_LISTEN", env_admin.to_string()),
        dir.path().join("agent.log"),
    );
    let ready = eventually(ready_timeout(), || {
        matches!(http_get(env_admin, "/readyz"), Ok((200, _)))
    });
    assert!(ready, "agent not ready:\n{}", agent.log());
    assert!(
        TcpStream::connect_timeout(&file_admin, Duration::from_secs(1)).is_err(),
        "the file's admin address is in use"
    );
    let log = agent.log();
    assert!(
        log.contains("holds a secret and others can read it"),
        "no warning about a world-readable secret:\n{log}"
    );
    // It registered with the control plane under the file's node id and labels.
    let agents = admin_ctl_ok(&control.grpc_url(), &["agents"]).to_string();
    assert!(
        agents.contains("edge-from-file") && agents.contains("eu-1"),
        "{agents}"
    );
}
