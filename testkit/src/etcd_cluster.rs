//! A real multi-member etcd cluster on loopback (the Debian `etcd-server` binary; members
//! started like the single one of `etcd`, election timeout 100 ms), for tests of what the
//! control plane does when a member, or the leader, dies.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::ports::free_port;

const ETCD: &str = "/usr/bin/etcd";
const READY_DEADLINE: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// The running cluster, killed on drop.
pub struct EtcdCluster {
    dir: TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
}

impl EtcdCluster {
    /// Starts `n` members (heartbeat 10 ms, election timeout 100 ms) and waits until each
    /// reports healthy.
    pub fn start(n: usize) -> Self {
        assert!(
            std::path::Path::new(ETCD).exists(),
            "etcd not found: install it with `apt-get install -y etcd-server` (or run tests/run.sh)"
        );
        let dir = tempfile::Builder::new()
            .prefix("tlsfleet-etcd-cluster-")
            .tempdir()
            .expect("temporary directory");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            token: format!("t-{}", dir.path().display()),
            dir,
            members,
            initial_cluster,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let state = if data.exists() { "existing" } else { "new" };
        let child = crate::etcd::member(
            &m.name,
            &data,
            &self.log_path(i),
            m.client_port,
            m.peer_port,
            &self.initial_cluster,
        )
        .args(["--initial-cluster-state", state])
        .args(["--initial-cluster-token", &self.token])
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {ETCD}: {e}"));
        self.members[i].child = Some(child);
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(Ok(Some(status))) = self.members[i].child.as_mut().map(Child::try_wait) {
                panic!(
                    "etcd member {i} exited ({status}); log:\n{}",
                    fs::read_to_string(self.log_path(i)).unwrap_or_default()
                );
            }
            let health = http(self.members[i].client_port, "GET", "/health", "");
            if health.is_some_and(|b| b.contains(r#""health":"true""#)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {i} not healthy within {READY_DEADLINE:?}; log:\n{}",
                fs::read_to_string(self.log_path(i)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every member's client endpoint, `127.0.0.1:PORT`, comma-separated (what
    /// `--store etcd://` takes).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// The index of the member that leads now, asked of the running members.
    pub fn leader(&self) -> Option<usize> {
        let ids: Vec<Option<(String, String)>> = self
            .members
            .iter()
            .map(|m| {
                m.child.as_ref()?;
                let body = http(m.client_port, "POST", "/v3/maintenance/status", "{}")?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                let own = v["header"]["member_id"].as_str()?.to_owned();
                let leader = v["leader"].as_str()?.to_owned();
                Some((own, leader))
            })
            .collect();
        let leader = ids.iter().flatten().map(|(_, l)| l.clone()).next()?;
        ids.iter()
            .position(|id| id.as_ref().is_some_and(|(own, _)| *own == leader))
    }

    /// SIGKILL one member.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again on its ports and data, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let headers = [("Content-Type".to_owned(), "application/json".to_owned())];
    match crate::rest::request(addr, method, path, &headers, body.as_bytes()) {
        Ok(r) if r.status == 200 => Some(r.body),
        _ => None,
    }
}
