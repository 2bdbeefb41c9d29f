//! nginx and HAProxy applying one name's change among many: the configuration rewritten, the
//! server reloaded, and the time from the signal to the first handshake the change refuses
//! (part of the convergence benchmark, [`crate::convergence`]).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rustls::pki_types::CertificateDer;
use tlsfleet_testkit::{
    control::DOMAIN,
    procs::Proc,
    tls::{handshake, ClientOffer, TestCa, TestCert},
};

use crate::peers;

/// A peer's figures, in milliseconds: signal to the first handshake that sees the change.
#[derive(Debug, Clone)]
pub struct Reload {
    pub server: String,
    pub names: usize,
    pub samples: Vec<f64>,
}

/// Longest wait for a reload to show: a peer re-reads every name's configuration (nginx
/// builds one SSL context per server block), minutes at 10,000 names.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(900);

/// Milliseconds from `since` until a handshake with `sni` at `addr` offering `offer` is
/// refused (`what` it offers names it in the error after `timeout`).
pub async fn refused_after(
    addr: SocketAddr,
    sni: &str,
    ca: &CertificateDer<'static>,
    (offer, what): (&ClientOffer, &str),
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let deadline = since + timeout;
    loop {
        if handshake(addr, sni, ca, offer).await.is_err() {
            return Ok(since.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{sni}: {what} still served after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The time from `since` until bucket `i`'s name refuses a TLS 1.2 handshake offering only
/// [`OTHER_TLS12_SUITE`] ([`refused_after`], within [`RELOAD_TIMEOUT`]): a reload's change seen.
fn other_suite_refused(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    i: usize,
    ca: &CertificateDer<'static>,
    since: Instant,
) -> anyhow::Result<f64> {
    let sni = format!("{}.{DOMAIN}", crate::data::bucket(i));
    let offer = ClientOffer::tls12().with_suites(&[OTHER_TLS12_SUITE]);
    runtime.block_on(refused_after(
        addr,
        &sni,
        ca,
        (&offer, "the suite is"),
        since,
        RELOAD_TIMEOUT,
    ))
}

/// `text` with its `old` (which must be there: `what` names it otherwise) replaced by `new`.
fn rewrite(text: &str, old: &str, new: &str, what: &str) -> anyhow::Result<String> {
    anyhow::ensure!(text.contains(old), "no {what}");
    Ok(text.replace(old, new))
}

/// ECDHE-ECDSA-AES256-GCM-SHA384: a TLS 1.2 suite every name serves until its ciphers are
/// restricted to [`crate::data::CUSTOM_TLS12_SUITE`].
const OTHER_TLS12_SUITE: u16 = 0xc02c;

/// Bucket `i` whose rule a reload changes: one of the plain ones (both versions, every
/// suite), restricted to the custom TLS 1.2 suite by rewriting its lines.
fn reload_target(names: usize, round: usize) -> usize {
    // i % 20 == 0 is always a plain bucket in the mix (`data::rule`).
    (round * 20 + 20) % names.max(20) / 20 * 20
}

fn wait_listening(addr: SocketAddr) -> bool {
    tlsfleet_testkit::procs::eventually(Duration::from_secs(300), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
}

/// nginx's master process, stopped with SIGTERM on drop (and waited for): it takes its
/// workers down with it, where the SIGKILL a [`Proc`] gets on drop would leave them running
/// with no parent.
struct Master(Proc);

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(pid) = self.0.pid() {
            if tlsfleet_testkit::procs::signal(pid, "TERM").is_ok() {
                let _ = self.0.wait_exit(MASTER_EXIT);
            }
        }
    }
}

/// How long nginx's master may take to stop its workers and exit.
const MASTER_EXIT: Duration = Duration::from_secs(10);

/// nginx (a master and one worker) with `peer_names` server blocks: for each reload, one
/// name's `ssl_ciphers` restricted in the file, then SIGHUP.
pub fn nginx(
    dir: &Path,
    cert: &TestCert,
    ca: &TestCa,
    names: usize,
    reloads: usize,
) -> anyhow::Result<Reload> {
    let dir = dir.join("nginx-reload");
    std::fs::create_dir_all(&dir)?;
    let addr: SocketAddr = ([127, 0, 0, 1], tlsfleet_testkit::ports::free_port()).into();
    let n = names;
    let peer = peers::nginx(&dir, addr, &cert.cert, &cert.key, n)?;
    let conf = dir.join("nginx.conf");
    // A reload needs the master process.
    let with_master = |text: String| text.replace("master_process off;", "master_process on;");
    let base = std::fs::read_to_string(&conf)?;
    std::fs::write(&conf, with_master(base.clone()))?;
    let mut command = peer.command;
    let proc = Master(Proc::spawn("nginx", &mut command));
    anyhow::ensure!(
        wait_listening(addr),
        "nginx did not listen: {}",
        proc.0.log_tail()
    );
    let master = proc.0.pid().context("nginx exited")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut samples = Vec::new();
    let mut text = with_master(base);
    for round in 0..reloads {
        let i = reload_target(n, round);
        let line = format!(
            "server_name {}.{DOMAIN}; ssl_protocols TLSv1.2 TLSv1.3;",
            crate::data::bucket(i)
        );
        let restricted = format!("{line} ssl_ciphers {};", crate::data::CUSTOM_TLS12_SUITE);
        text = rewrite(
            &text,
            &line,
            &restricted,
            &format!("server block for bucket {i}"),
        )?;
        let since = Instant::now();
        std::fs::write(&conf, &text)?;
        tlsfleet_testkit::procs::signal(master, "HUP")?;
        let seen = other_suite_refused(&runtime, addr, i, &ca.der(), since);
        samples.push(seen.with_context(|| {
            format!(
                "nginx reload; its error log:\n{}",
                std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
            )
        })?);
    }
    Ok(Reload {
        server: format!("nginx {} (SIGHUP)", version_word(&peer.version)),
        names: n,
        samples,
    })
}

/// HAProxy with `peer_names` crt-list lines: for each reload, one line restricted to the
/// custom suite, then a new process started with `-sf` (the classic soft reload: it binds
/// beside the old one, which finishes its connections and exits).
pub fn haproxy(
    dir: &Path,
    cert: &TestCert,
    ca: &TestCa,
    names: usize,
    reloads: usize,
) -> anyhow::Result<Reload> {
    let dir = dir.join("haproxy-reload");
    std::fs::create_dir_all(&dir)?;
    let addr: SocketAddr = ([127, 0, 0, 1], tlsfleet_testkit::ports::free_port()).into();
    let n = names;
    let peer = peers::haproxy(&dir, addr, &cert.cert, &cert.key, n)?;
    let list: PathBuf = dir.join("crt-list.txt");
    let binary = peers::which("haproxy").context("haproxy is not installed")?;
    let start = |previous: Option<u32>| {
        let mut command = Command::new(&binary);
        command.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
        if let Some(pid) = previous {
            command.arg("-sf").arg(pid.to_string());
        }
        Proc::spawn("haproxy", &mut command)
    };
    let mut procs = vec![start(None)];
    anyhow::ensure!(
        wait_listening(addr),
        "haproxy did not listen: {}",
        procs[0].log_tail()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let mut samples = Vec::new();
    let mut text = std::fs::read_to_string(&list)?;
    for round in 0..reloads {
        let i = reload_target(n, round);
        let old = format!(
            "[ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3] {}.{DOMAIN}\n",
            crate::data::bucket(i)
        );
        let restricted = format!(
            "[ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3 ciphers {}] {}.{DOMAIN}\n",
            crate::data::CUSTOM_TLS12_SUITE,
            crate::data::bucket(i)
        );
        text = rewrite(
            &text,
            &old,
            &restricted,
            &format!("crt-list line for bucket {i}"),
        )?;
        let since = Instant::now();
        std::fs::write(&list, &text)?;
        let previous = procs.last().and_then(Proc::pid);
        procs.push(start(previous));
        let seen = other_suite_refused(&runtime, addr, i, &ca.der(), since);
        let last = procs.last().map(Proc::log_tail).unwrap_or_default();
        samples.push(seen.with_context(|| format!("haproxy reload; it printed:\n{last}"))?);
    }
    Ok(Reload {
        server: format!("HAProxy {} (new process, -sf)", version_word(&peer.version)),
        names: n,
        samples,
    })
}

/// The version in a `-v` line ("nginx version: nginx/1.22.1" → "1.22.1").
fn version_word(line: &str) -> String {
    line.split_whitespace()
        .map(|w| w.rsplit('/').next().unwrap_or(w))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(line)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_words() {
        assert_eq!(version_word("nginx version: nginx/1.22.1"), "1.22.1");
        assert_eq!(
            version_word("HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"),
            "2.6.12-1+deb12u4"
        );
    }

    #[test]
    fn reload_targets_are_plain_buckets_in_range() {
        for round in 0..50 {
            let i = reload_target(200, round);
            assert!(i < 200 && i.is_multiple_of(20), "{i}");
            let r = crate::data::rule(i);
            assert!(r.tls12 && r.tls13 && !r.custom_tls12_suite);
        }
    }
}
