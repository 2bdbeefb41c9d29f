//! A real single-node etcd (`/usr/bin/etcd`) for tests: free loopback ports, a temporary
//! data directory, readiness by polling `/health`, SIGKILL to stop (a node without quorum
//! takes seconds to stop on SIGTERM), and restart on the same ports and data.
//!
//! Everything here is synchronous (std processes and sockets), so it works from plain
//! `#[test]`s and from `#[tokio::test]`s alike; a start takes about 100-200 ms.

use std::{
    fs::{self, File},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::ports::free_port;

const ETCD: &str = "/usr/bin/etcd";
const NOT_FOUND: &str =
    "etcd not found: install it with `apt-get install -y etcd-server` (or run tests/run.sh which installs it)";
/// Longest wait for a started etcd to report healthy.
const READY_DEADLINE: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Fresh ports tried when etcd cannot bind the ones it was given (another process took them
/// between `free_port` and etcd's bind).
const START_ATTEMPTS: usize = 3;

/// A running etcd, killed on drop.
pub struct Etcd {
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// Why a start did not reach "healthy".
enum StartFailure {
    Exited(String),
    NotReady(String),
}

impl Etcd {
    /// Starts etcd on free loopback ports in a new temporary data directory and waits until
    /// it is healthy. Panics if etcd is not installed or does not become healthy.
    pub fn start() -> Etcd {
        assert!(Path::new(ETCD).exists(), "{NOT_FOUND}");
        let dir = tempfile::Builder::new()
            .prefix("tlsfleet-etcd-")
            .tempdir()
            .expect("create a temporary directory for etcd");
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let (client_port, peer_port) = (free_port(), free_port());
            match launch(dir.path(), client_port, peer_port) {
                Ok(child) => {
                    return Etcd {
                        client_port,
                        peer_port,
                        dir,
                        child: Some(child),
                    }
                }
                Err(StartFailure::Exited(log)) => {
                    // A half-initialised member would remember the old peer URL.
                    let _ = fs::remove_dir_all(data_dir(dir.path()));
                    last_failure = log;
                }
                Err(StartFailure::NotReady(log)) => {
                    panic!("etcd did not become healthy within {READY_DEADLINE:?}; log:\n{log}")
                }
            }
        }
        panic!("etcd exited at start {START_ATTEMPTS} times; last log:\n{last_failure}")
    }

    /// The client endpoint as `127.0.0.1:PORT` (what `EtcdStore::connect` takes).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    /// etcd's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills etcd with SIGKILL and reaps it. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix; an error means it has already exited.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory (killing it first if it runs)
    /// and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        match launch(self.dir.path(), self.client_port, self.peer_port) {
            Ok(child) => self.child = Some(child),
            Err(StartFailure::Exited(log)) => panic!("etcd exited at restart; log:\n{log}"),
            Err(StartFailure::NotReady(log)) => {
                panic!("etcd did not become healthy again within {READY_DEADLINE:?}; log:\n{log}")
            }
        }
    }

    /// The value of an unlabelled metric from etcd's `/metrics` (e.g.
    /// `etcd_debugging_mvcc_watcher_total`), if etcd answers and has it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.client_port, "/metrics")?;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// What etcd logged so far (warnings and errors).
    pub fn log(&self) -> String {
        fs::read_to_string(log_path(self.dir.path())).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("etcd.log")
}

/// The command line of one etcd member (docs/STACK.md) on loopback ports, heartbeat 10 ms and
/// election timeout 100 ms, logging warnings to `log` (appended); a cluster adds its state and
/// token.
pub(crate) fn member(
    name: &str,
    data: &Path,
    log: &Path,
    client_port: u16,
    peer_port: u16,
    initial_cluster: &str,
) -> Command {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the etcd log file");
    let mut cmd = Command::new(ETCD);
    cmd.args(["--name", name])
        .arg("--data-dir")
        .arg(data)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", initial_cluster])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .args(["--logger", "zap", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the etcd log file handle"))
        .stderr(log);
    cmd
}

/// Spawns etcd (command line from docs/STACK.md) and waits until it is healthy.
fn launch(dir: &Path, client_port: u16, peer_port: u16) -> Result<Child, StartFailure> {
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut child = member(
        "n1",
        &data_dir(dir),
        &log_path(dir),
        client_port,
        peer_port,
        &format!("n1={peer}"),
    )
    .spawn()
    .unwrap_or_else(|e| panic!("cannot run {ETCD}: {e}"));
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(log_path(dir)).unwrap_or_default();
            return Err(StartFailure::Exited(format!("({status})\n{log}")));
        }
        if http_get(client_port, "/health").is_some_and(|body| body.contains(r#""health":"true""#))
        {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StartFailure::NotReady(
                fs::read_to_string(log_path(dir)).unwrap_or_default(),
            ));
        }
        thread::sleep(POLL_EVERY);
    }
}

/// A minimal HTTP GET on 127.0.0.1:`port`; the body of a 200 answer, or `None`. HTTP/1.0,
/// so the server closes the connection after a plain (not chunked) body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match crate::procs::http_get(addr, path) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}
