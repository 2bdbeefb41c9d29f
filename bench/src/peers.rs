//! The peers the agent is measured against, configured from the same policy mix: nginx with
//! one `server` block per bucket (`ssl_protocols`, `ssl_ciphers`), HAProxy with a crt-list
//! line per bucket (`ssl-min-ver`/`ssl-max-ver`, `ciphers`). Both from Debian, one worker
//! process / one thread, the same certificate, session cache and tickets on. Installed from
//! the Debian packages when missing; the harness starts them (`handshakes`).

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::data::{bucket, rule, CUSTOM_TLS12_SUITE};

/// The path of `binary`, installing `packages` with apt-get first when it is missing.
pub fn installed(binary: &str, packages: &[&str]) -> anyhow::Result<PathBuf> {
    if let Some(path) = which(binary) {
        return Ok(path);
    }
    eprintln!("bench: installing {} (for {binary})", packages.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd: Vec<&str> = sudo.to_vec();
        cmd.extend_from_slice(args);
        let status = Command::new(cmd[0])
            .args(&cmd[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "{} failed", cmd.join(" "));
        Ok(())
    };
    apt(&["apt-get", "update", "-qq"])?;
    let mut install = vec!["apt-get", "install", "-y", "-qq"];
    install.extend_from_slice(packages);
    apt(&install)?;
    which(binary).ok_or_else(|| {
        anyhow::anyhow!(
            "{binary} still missing after installing {}",
            packages.join(" ")
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

/// The path of `binary` in PATH or the sbin directories.
pub fn which(binary: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file());
    found
}

fn version_of(binary: &Path, flag: &str) -> String {
    Command::new(binary)
        .arg(flag)
        .output()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The nginx configuration for buckets `0..n` on `addr`.
pub fn nginx_config(dir: &Path, addr: SocketAddr, cert: &Path, key: &Path, n: usize) -> String {
    let mut c = String::new();
    let d = dir.display();
    let _ = write!(
        c,
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log error;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-body;\n  \
         proxy_temp_path {d}/nginx-proxy;\n  fastcgi_temp_path {d}/nginx-fastcgi;\n  \
         uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n  \
         server_names_hash_max_size {};\n  server_names_hash_bucket_size 128;\n  \
         ssl_certificate {};\n  ssl_certificate_key {};\n  \
         ssl_session_cache shared:bench:64m;\n  ssl_session_tickets on;\n  \
         ssl_prefer_server_ciphers off;\n  \
         server {{ listen {addr} ssl default_server; server_name _; \
         ssl_protocols TLSv1.2 TLSv1.3; return 421; }}\n",
        (2 * n).next_power_of_two().max(512),
        cert.display(),
        key.display(),
    );
    for i in 0..n {
        let r = rule(i);
        let protocols = match (r.tls12, r.tls13) {
            (true, true) => "TLSv1.2 TLSv1.3",
            (false, true) => "TLSv1.3",
            _ => "TLSv1.2",
        };
        let ciphers = if r.custom_tls12_suite {
            format!(" ssl_ciphers {CUSTOM_TLS12_SUITE};")
        } else {
            String::new()
        };
        let _ = writeln!(
            c,
            "  server {{ listen {addr} ssl; server_name {}.{}; ssl_protocols {protocols};{ciphers} return 200; }}",
            bucket(i),
            tlsfleet_testkit::control::DOMAIN
        );
    }
    c.push_str("}\n");
    c
}

/// The HAProxy configuration and crt-list for buckets `0..n` on `addr`; `pem` holds the
/// certificate chain and key.
pub fn haproxy_config(dir: &Path, addr: SocketAddr, pem: &Path, n: usize) -> (String, String) {
    let list = dir.join("crt-list.txt");
    let cfg = format!(
        "global\n  nbthread 1\n  maxconn 8192\n  tune.ssl.cachesize 200000\n\
         defaults\n  mode http\n  timeout client 10s\n  timeout connect 5s\n  timeout server 10s\n\
         frontend bench\n  bind {addr} ssl crt-list {}\n  http-request return status 200\n",
        list.display()
    );
    let pem = pem.display();
    let mut crt = format!("{pem} [ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3]\n");
    for i in 0..n {
        let r = rule(i);
        let min = if r.tls12 { "TLSv1.2" } else { "TLSv1.3" };
        let max = if r.tls13 { "TLSv1.3" } else { "TLSv1.2" };
        let ciphers = if r.custom_tls12_suite {
            format!(" ciphers {CUSTOM_TLS12_SUITE}")
        } else {
            String::new()
        };
        let _ = writeln!(
            crt,
            "{pem} [ssl-min-ver {min} ssl-max-ver {max}{ciphers}] {}.{}",
            bucket(i),
            tlsfleet_testkit::control::DOMAIN
        );
    }
    (cfg, crt)
}

/// A peer ready to start: its command (configuration written), and its version.
pub struct Peer {
    pub command: Command,
    pub version: String,
}

/// nginx for buckets `0..n`, configured in `dir`.
pub fn nginx(
    dir: &Path,
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
    n: usize,
) -> anyhow::Result<Peer> {
    let binary = installed("nginx", &["nginx"])?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir, addr, cert, key, n))?;
    let mut command = Command::new(&binary);
    command.arg("-c").arg(&conf).arg("-p").arg(dir);
    Ok(Peer {
        command,
        version: version_of(&binary, "-v"),
    })
}

/// HAProxy for buckets `0..n`, configured in `dir`.
pub fn haproxy(
    dir: &Path,
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
    n: usize,
) -> anyhow::Result<Peer> {
    let binary = installed("haproxy", &["haproxy"])?;
    let pem = dir.join("haproxy.pem");
    let mut both = std::fs::read(cert)?;
    both.extend(std::fs::read(key)?);
    std::fs::write(&pem, both)?;
    let (cfg, crt) = haproxy_config(dir, addr, &pem, n);
    std::fs::write(dir.join("crt-list.txt"), crt)?;
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, cfg)?;
    let mut command = Command::new(&binary);
    command.arg("-db").arg("-f").arg(&conf);
    Ok(Peer {
        command,
        version: version_of(&binary, "-v"),
    })
}
