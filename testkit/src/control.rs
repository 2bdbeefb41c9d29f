//! A real `tlsfleet-control` process.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    ports::free_port,
    procs::{bin, eventually, http_get, Proc, START_ATTEMPTS},
};

/// Access keys every test credentials file holds.
pub mod keys {
    /// Every grant on every bucket.
    pub const ADMIN: (&str, &str) = ("AKIDADMIN", "admin-secret");
    /// Get only.
    pub const READER: (&str, &str) = ("AKIDREADER", "reader-secret");
    /// Put and Get on `logs-*` only.
    pub const LOGS: (&str, &str) = ("AKIDLOGS", "logs-secret");
    /// `tlsfleet:Sync` only, for every node id: a key the whole test fleet shares.
    pub const AGENT: (&str, &str) = ("AKIDAGENT", "agent-secret");
    /// `tlsfleet:Sync` only, for node `edge-1` alone: one agent's own key.
    pub const EDGE1: (&str, &str) = ("AKIDEDGE1", "edge1-secret");
}

/// Writes the standard test credentials file into `dir`.
pub fn write_credentials(dir: &Path) -> PathBuf {
    let path = dir.join("credentials.toml");
    let toml = format!(
        r#"
[[key]]
id = "{}"
secret = "{}"
allow = ["oss:*", "tlsfleet:*"]
buckets = ["*"]

[[key]]
id = "{}"
secret = "{}"
allow = ["oss:GetBucketHttpsConfig"]
buckets = ["*"]

[[key]]
id = "{}"
secret = "{}"
allow = ["oss:PutBucketHttpsConfig", "oss:GetTLSVersion", "tlsfleet:ListBucketHttpsConfigs"]
buckets = ["logs-*"]

[[key]]
id = "{}"
secret = "{}"
allow = ["tlsfleet:Sync"]
nodes = ["*"]

[[key]]
id = "{}"
secret = "{}"
allow = ["tlsfleet:Sync"]
nodes = ["edge-1"]
"#,
        keys::ADMIN.0,
        keys::ADMIN.1,
        keys::READER.0,
        keys::READER.1,
        keys::LOGS.0,
        keys::LOGS.1,
        keys::AGENT.0,
        keys::AGENT.1,
        keys::EDGE1.0,
        keys::EDGE1.1
    );
    std::fs::write(&path, toml).expect("write credentials");
    path
}

/// The domain every test uses.
pub const DOMAIN: &str = "oss.test";

/// A running control server.
pub struct Control {
    proc: Proc,
    store: String,
    credentials: PathBuf,
    /// Extra flags (e.g. gRPC TLS).
    extra: Vec<String>,
    scheme: &'static str,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

impl Control {
    /// On the embedded store in a fresh temp dir.
    pub fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = format!("file:{}", dir.path().join("data").display());
        let creds = write_credentials(dir.path());
        Self::start(store, creds, Some(dir))
    }

    /// On etcd at `endpoint` (HOST:PORT).
    pub fn on_etcd(endpoint: &str) -> Self {
        Self::on_etcd_with(endpoint, &[])
    }

    /// On etcd at `endpoint`, with extra flags.
    pub fn on_etcd_with(endpoint: &str, extra: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = write_credentials(dir.path());
        Self::start_with(
            format!("etcd://{endpoint}"),
            creds,
            Some(dir),
            extra.to_vec(),
            "http",
        )
    }

    /// On the embedded store with extra flags; `https` when they turn on gRPC TLS.
    pub fn embedded_with(extra: &[String], https: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = format!("file:{}", dir.path().join("data").display());
        let creds = write_credentials(dir.path());
        let scheme = if https { "https" } else { "http" };
        Self::start_with(store, creds, Some(dir), extra.to_vec(), scheme)
    }

    fn start(store: String, credentials: PathBuf, dir: Option<tempfile::TempDir>) -> Self {
        Self::start_with(store, credentials, dir, vec![], "http")
    }

    fn start_with(
        store: String,
        credentials: PathBuf,
        dir: Option<tempfile::TempDir>,
        extra: Vec<String>,
        scheme: &'static str,
    ) -> Self {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let proc = spawn(&store, &credentials, http, grpc, &extra);
        let mut c = Self {
            proc,
            store,
            credentials,
            extra,
            scheme,
            http,
            grpc,
            _dir: dir,
        };
        c.wait_first_ready();
        c
    }

    pub fn grpc_url(&self) -> String {
        format!("{}://{}", self.scheme, self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Waits for `/-/readyz`; fails with what the server printed.
    fn wait_ready(&mut self) {
        assert!(
            self.become_ready(),
            "tlsfleet-control did not become ready on {} (running: {}); it printed:\n{}",
            self.http,
            self.proc.is_running(),
            self.proc.log_tail()
        );
    }

    /// A first start: a server that exits because another process took one of its ports
    /// meanwhile is started again on fresh ones (restarts keep their ports: agents follow
    /// them).
    fn wait_first_ready(&mut self) {
        for _ in 1..START_ATTEMPTS {
            if self.become_ready() || !self.proc.exited_on_a_taken_port() {
                break;
            }
            self.http = SocketAddr::from(([127, 0, 0, 1], free_port()));
            self.grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
            self.proc = spawn(
                &self.store,
                &self.credentials,
                self.http,
                self.grpc,
                &self.extra,
            );
        }
        self.wait_ready();
    }

    fn become_ready(&mut self) -> bool {
        let http = self.http;
        let proc = &mut self.proc;
        eventually(crate::procs::ready_timeout(), || {
            !proc.is_running() || matches!(http_get(http, "/-/readyz"), Ok((200, _)))
        });
        self.proc.is_running() && matches!(http_get(http, "/-/readyz"), Ok((200, _)))
    }

    /// What the server has printed so far (the tail of its log).
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// The process, for its pid and memory.
    pub fn process(&self) -> &Proc {
        &self.proc
    }

    /// Kills the server, deletes its embedded store (a store lost and made anew), and starts
    /// it again on the same ports: it then has a new, empty history.
    pub fn wipe_store_and_restart(&mut self) {
        self.proc.kill();
        let dir = self
            .store
            .strip_prefix("file:")
            .expect("an embedded store")
            .to_owned();
        std::fs::remove_dir_all(&dir).expect("remove the store");
        self.restart();
    }

    /// SIGTERM; asserts a clean exit.
    pub fn stop(&mut self) {
        assert!(
            self.proc.terminate(Duration::from_secs(10)),
            "tlsfleet-control exited with an error"
        );
    }

    /// Starts again on the same ports and store.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = spawn(
            &self.store,
            &self.credentials,
            self.http,
            self.grpc,
            &self.extra,
        );
        self.wait_ready();
    }
}

fn spawn(store: &str, creds: &Path, http: SocketAddr, grpc: SocketAddr, extra: &[String]) -> Proc {
    Proc::spawn(
        "tlsfleet-control",
        Command::new(bin("tlsfleet-control"))
            .arg("--store")
            .arg(store)
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--grpc-listen")
            .arg(grpc.to_string())
            .arg("--domain")
            .arg(DOMAIN)
            .arg("--credentials")
            .arg(creds)
            .args(extra),
    )
}

/// The flags that let a control server ask the other control servers (fleet-wide usage,
/// canary refusals), signed with the admin key.
pub fn peer_key_flags() -> [String; 4] {
    [
        "--peer-access-key-id".to_owned(),
        keys::ADMIN.0.to_owned(),
        "--peer-access-key-secret".to_owned(),
        keys::ADMIN.1.to_owned(),
    ]
}

/// [`tlsfleetctl`] as admin: (exit code, the JSON it printed (`Null` if none), stderr).
pub fn admin_ctl(url: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = tlsfleetctl(url, keys::ADMIN, args);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`admin_ctl`], which must succeed: the JSON it printed.
pub fn admin_ctl_ok(url: &str, args: &[&str]) -> serde_json::Value {
    let (code, json, err) = admin_ctl(url, args);
    assert_eq!(code, 0, "tlsfleetctl {args:?}: {err}");
    json
}

/// Runs `tlsfleetctl --control URL --output json ARGS…` signed with `key`.
pub fn tlsfleetctl(url: &str, key: (&str, &str), args: &[&str]) -> std::process::Output {
    Command::new(bin("tlsfleetctl"))
        .args(["--control", url, "--output", "json"])
        .args(args)
        .env("TLSFLEET_ACCESS_KEY_ID", key.0)
        .env("TLSFLEET_ACCESS_KEY_SECRET", key.1)
        .env_remove("TLSFLEET_CONTROL")
        .output()
        .expect("run tlsfleetctl")
}
