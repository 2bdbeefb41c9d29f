//! A real `tlsfleet-agent` process.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    control::{keys, DOMAIN},
    ports::free_port,
    procs::{bin, eventually, http_get, Proc},
};

pub struct Agent {
    proc: Proc,
    args: Vec<String>,
    key: (String, String),
    pub node_id: String,
    pub tls: SocketAddr,
    pub admin: SocketAddr,
}

impl Agent {
    /// Starts an agent following `controls`, serving `cert`/`key`, caching in `cache_dir`;
    /// does not wait for readiness (see [`Agent::wait_ready`]).
    pub fn spawn(
        node_id: &str,
        controls: &[String],
        cert: &Path,
        key: &Path,
        cache_dir: Option<PathBuf>,
    ) -> Self {
        Self::spawn_with(node_id, controls, cert, key, cache_dir, &[])
    }

    /// Like [`Agent::spawn`], with extra flags.
    pub fn spawn_with(
        node_id: &str,
        controls: &[String],
        cert: &Path,
        key: &Path,
        cache_dir: Option<PathBuf>,
        extra: &[String],
    ) -> Self {
        Self::spawn_full(node_id, controls, cert, key, cache_dir, keys::AGENT, extra)
    }

    /// Like [`Agent::spawn`], signing with `access_key` instead of the shared agent key.
    pub fn spawn_with_key(
        node_id: &str,
        controls: &[String],
        cert: &Path,
        key: &Path,
        access_key: (&str, &str),
        extra: &[String],
    ) -> Self {
        Self::spawn_full(node_id, controls, cert, key, None, access_key, extra)
    }

    fn spawn_full(
        node_id: &str,
        controls: &[String],
        cert: &Path,
        key: &Path,
        cache_dir: Option<PathBuf>,
        access_key: (&str, &str),
        extra: &[String],
    ) -> Self {
        let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut args = vec![
            "--listen".to_owned(),
            tls.to_string(),
            "--admin-listen".to_owned(),
            admin.to_string(),
            "--domain".to_owned(),
            DOMAIN.to_owned(),
            "--cert".to_owned(),
            cert.display().to_string(),
            "--key".to_owned(),
            key.display().to_string(),
            "--node-id".to_owned(),
            node_id.to_owned(),
        ];
        for c in controls {
            args.push("--control".to_owned());
            args.push(c.clone());
        }
        if let Some(dir) = cache_dir {
            args.push("--cache-dir".to_owned());
            args.push(dir.display().to_string());
        }
        args.extend(extra.iter().cloned());
        let access_key = (access_key.0.to_owned(), access_key.1.to_owned());
        let proc = spawn(&args, &access_key);
        Self {
            proc,
            args,
            key: access_key,
            node_id: node_id.to_owned(),
            tls,
            admin,
        }
    }

    /// Waits until `/readyz` says 200.
    pub fn wait_ready(&mut self) {
        let admin = self.admin;
        let ok = eventually(Duration::from_secs(30), || {
            matches!(http_get(admin, "/readyz"), Ok((200, _)))
        });
        assert!(
            ok && self.proc.is_running(),
            "agent {} did not become ready",
            self.node_id
        );
    }

    /// Waits until the agent reports `revision` applied (from /metrics).
    pub fn wait_revision(&self, revision: i64, timeout: Duration) -> bool {
        eventually(timeout, || self.applied_revision() >= Some(revision))
    }

    /// The `tlsfleet_agent_applied_revision` gauge.
    pub fn applied_revision(&self) -> Option<i64> {
        self.metric("applied_revision").map(|v| v as i64)
    }

    /// The value of the first metric sample whose name ends with `suffix` (no labels).
    pub fn metric(&self, suffix: &str) -> Option<f64> {
        let (_, text) = http_get(self.admin, "/metrics").ok()?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .find(|(name, _)| name.ends_with(suffix))
            .and_then(|(_, v)| v.trim().parse().ok())
    }

    pub fn metrics_text(&self) -> String {
        http_get(self.admin, "/metrics")
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    pub fn readyz(&self) -> Option<(u16, String)> {
        http_get(self.admin, "/readyz").ok()
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts again with the same flags (ports, cache).
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = spawn(&self.args, &self.key);
    }
}

fn spawn(args: &[String], key: &(String, String)) -> Proc {
    Proc::spawn(
        "tlsfleet-agent",
        Command::new(bin("tlsfleet-agent"))
            .args(args)
            .env("TLSFLEET_ACCESS_KEY_ID", &key.0)
            .env("TLSFLEET_ACCESS_KEY_SECRET", &key.1),
    )
}
