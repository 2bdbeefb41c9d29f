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
    procs::{bin, eventually, http_get, Proc, START_ATTEMPTS},
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
        let tls = loopback(free_port());
        let admin = loopback(free_port());
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

    /// Waits until `/readyz` says 200. An agent that exits because another process took one
    /// of its ports meanwhile is started again on fresh ones; any other exit, or 30 s without
    /// readiness, fails with what the agent printed.
    pub fn wait_ready(&mut self) {
        for _ in 0..START_ATTEMPTS {
            let admin = self.admin;
            let proc = &mut self.proc;
            eventually(crate::procs::ready_timeout(), || {
                !proc.is_running() || matches!(http_get(admin, "/readyz"), Ok((200, _)))
            });
            if self.proc.exited_on_a_taken_port() {
                self.move_to_fresh_ports();
                continue;
            }
            assert!(
                self.proc.is_running() && matches!(http_get(admin, "/readyz"), Ok((200, _))),
                "agent {} did not become ready within {:?} (running: {}); it printed:\n{}",
                self.node_id,
                crate::procs::ready_timeout(),
                self.proc.is_running(),
                self.proc.log_tail()
            );
            return;
        }
        panic!(
            "agent {} found its ports taken {START_ATTEMPTS} times; last log:\n{}",
            self.node_id,
            self.proc.log_tail()
        );
    }

    /// Starts the agent again with new listen and admin ports.
    fn move_to_fresh_ports(&mut self) {
        self.tls = loopback(free_port());
        self.admin = loopback(free_port());
        set_flag(&mut self.args, "--listen", &self.tls.to_string());
        set_flag(&mut self.args, "--admin-listen", &self.admin.to_string());
        self.restart();
    }

    /// The process, for its pid and memory.
    pub fn process(&self) -> &Proc {
        &self.proc
    }

    /// What the agent has printed so far (the tail of its log).
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// Waits until the agent reports `revision` applied (from /metrics).
    pub fn wait_revision(&self, revision: i64, timeout: Duration) -> bool {
        eventually(timeout, || self.applied_revision() >= Some(revision))
    }

    /// Waits until the agent's last-known-good cache holds `revision` or later (the cache is
    /// written beside the sync path, just after the revision applies): before killing an agent
    /// that is to come back from its cache.
    pub fn wait_cached(&self, revision: i64, timeout: Duration) -> bool {
        eventually(timeout, || {
            self.metric("cache_revision")
                .is_some_and(|r| r as i64 >= revision)
        })
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

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Replaces the value after `flag` in `args`.
fn set_flag(args: &mut [String], flag: &str, value: &str) {
    if let Some(i) = args.iter().position(|a| a == flag) {
        if let Some(v) = args.get_mut(i + 1) {
            *v = value.to_owned();
        }
    }
}
