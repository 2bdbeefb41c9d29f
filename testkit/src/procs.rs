//! Real processes of ours: control servers and agents, on free loopback ports, killed on drop.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

/// `target/debug` (or wherever this test binary's profile directory is).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TLSFLEET_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/debug/deps/<test> -> target/debug
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of one of our binaries; panics with how to build it when missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (tests/run.sh does this)",
        path.display()
    );
    path
}

/// A plain-HTTP GET (the one raw client, [`crate::rest::request`]): (status, body). For
/// readiness probes and admin endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let r = crate::rest::request(addr, "GET", path, &[], b"")?;
    Ok((r.status, r.body))
}

/// Polls `probe` until it returns true or `timeout` passes (see [`crate::eventually`]).
pub fn eventually(timeout: Duration, probe: impl FnMut() -> bool) -> bool {
    crate::eventually::until_blocking(timeout, probe)
}

/// How much of a process's output a failure message quotes.
const LOG_TAIL: u64 = 6_000;

/// How long a started server may take to become ready: 30 s, or `TLSFLEET_TEST_READY_SECS`
/// (the scale benchmark loads a million policies first).
pub fn ready_timeout() -> Duration {
    let secs = std::env::var("TLSFLEET_TEST_READY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Sends signal `name` (`HUP`, `STOP`, `CONT`, ...) to process `pid` with kill(1).
pub fn signal(pid: u32, name: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill -{name} {pid} failed")))
    }
}

/// Starts tried when a server exits because a port it was given was taken meanwhile.
pub const START_ATTEMPTS: usize = 3;

/// A child process killed (SIGKILL) and reaped on drop. What it prints goes to a temporary
/// log file (quoted by [`Proc::log_tail`] when a test fails), or to the test's own output
/// when `TLSFLEET_TEST_LOGS` is set.
pub struct Proc {
    child: Option<Child>,
    name: String,
    log: Option<tempfile::NamedTempFile>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let quiet = std::env::var_os("TLSFLEET_TEST_LOGS").is_none();
        Self::spawn_logging(name, cmd, quiet)
    }

    /// [`Proc::spawn`], logging to the file even with `TLSFLEET_TEST_LOGS`: for tests that
    /// read what the process wrote ([`Proc::log_text`]).
    pub fn spawn_logged(name: &str, cmd: &mut Command) -> Self {
        Self::spawn_logging(name, cmd, true)
    }

    fn spawn_logging(name: &str, cmd: &mut Command, to_file: bool) -> Self {
        let log = if to_file {
            let log = tempfile::Builder::new()
                .prefix(&format!("tlsfleet-{name}-"))
                .suffix(".log")
                .tempfile()
                .expect("create a log file");
            let out = log.as_file().try_clone().expect("log file handle");
            let err = log.as_file().try_clone().expect("log file handle");
            cmd.stdout(out).stderr(err);
            Some(log)
        } else {
            None
        };
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child: Some(child),
            name: name.to_owned(),
            log,
        }
    }

    /// Sends signal `name` (`HUP`, `STOP`, `CONT`, ...) to the process with kill(1).
    pub fn signal(&self, name: &str) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other(format!("{} has exited", self.name)))?;
        signal(pid, name)
    }

    /// Everything the process printed so far (empty when it does not log to a file).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log.path()).ok())
            .unwrap_or_default()
    }

    /// The last few kilobytes the process printed (empty when `TLSFLEET_TEST_LOGS` sends
    /// them to the test's output instead), for failure messages.
    pub fn log_tail(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Some(log) = &self.log else {
            return "(printed above: TLSFLEET_TEST_LOGS is set)".to_owned();
        };
        let Ok(mut f) = std::fs::File::open(log.path()) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Whether the process has exited because a port it was given was taken meanwhile
    /// (another test bound it between [`crate::ports::free_port`] and the process's bind).
    pub fn exited_on_a_taken_port(&mut self) -> bool {
        !self.is_running() && {
            let tail = self.log_tail();
            tail.contains("os error 98") || tail.contains("Address already in use")
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status success.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = signal(c.id(), "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// Waits (up to `timeout`) for the process to exit (what it printed: [`Proc::log_tail`]).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
