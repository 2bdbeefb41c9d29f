//! The command line of `tlsfleet-agent`, and its translation into the data-plane and sync
//! configurations. Parsing only: nothing here listens or connects.

use std::{collections::BTreeMap, fs, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use crate::{
    http::proxy::UpstreamLimits,
    server::{ConnectionLimits, DataPlaneConfig},
    sync::{ControlTls, Credentials, SyncConfig},
};

/// The flags. Not `Debug`: it holds the access key secret.
#[derive(Clone, Parser)]
#[command(
    name = "tlsfleet-agent",
    version,
    about = "tlsfleet edge agent: follows the control plane and enforces per-bucket TLS policies"
)]
pub struct Args {
    /// Log lines as text (for people) or JSON (one object per line, for log pipelines).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = tlsfleet_settings::LogFormat::Text)]
    pub log_format: tlsfleet_settings::LogFormat,

    /// Control server URL (http://HOST:PORT, or https://HOST:PORT with --control-ca);
    /// repeat for several. The agent stays connected to one at a time, starting at a
    /// random one and moving to the next when the stream fails.
    #[arg(long = "control", value_name = "URL", required = true)]
    pub control: Vec<String>,

    /// Address of the TLS listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,

    /// Endpoint domain: SNI `<bucket>.<SUFFIX>` selects the bucket's policy; repeat for
    /// several.
    #[arg(long = "domain", value_name = "SUFFIX", required = true, value_parser = parse_domain)]
    pub domains: Vec<String>,

    /// PEM certificate chain covering every domain and its wildcard; reloaded on change.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,

    /// PEM private key of --cert; reloaded on change.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Storage service to proxy allowed requests to (http://HOST:PORT). Without it a built-in
    /// responder describes each allowed request in JSON.
    #[arg(long, value_name = "URL", value_parser = parse_upstream)]
    pub upstream: Option<http::Uri>,

    /// The control plane's REST API (http://HOST:PORT): `?httpsConfig` requests (GET and PUT
    /// of a bucket's policy, as the OSS SDKs send them to the storage endpoint) go there,
    /// signature untouched, instead of to --upstream, so an SDK pointed at this agent manages
    /// its buckets' policies. Without it they go to --upstream like any request.
    #[arg(long, value_name = "URL", value_parser = parse_upstream)]
    pub control_rest: Option<http::Uri>,

    /// Directory of the last-known-good cache: every applied revision is written there, and
    /// an agent started while the control plane is unreachable serves from it. Without it,
    /// such an agent refuses TLS until its first snapshot.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// This agent's id in the control plane's registry. Default: the host name (from
    /// /proc/sys/kernel/hostname), else a random `agent-<hex>` that changes on every start.
    /// Agents sharing a host need distinct ids.
    #[arg(long, value_name = "ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// A label reported to the control plane (KEY=VALUE); repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Address of the admin endpoint (/healthz, /readyz, /metrics); none without it.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Bound on a whole TLS handshake, from accept to the last handshake byte.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Open connections on the TLS listener at most; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Open connections from one source address at most; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_source: u32,

    /// A connection with no request in flight for this long is closed (before its first
    /// request, between requests, and while a request's headers trickle in).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// A connection whose client has taken none of its responses for this long is closed
    /// (a client that stops reading, or an HTTP/2 client that opens no window).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub send_timeout: Duration,

    /// Bound on the upstream's response head.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// Bound on connecting to the upstream.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Requests forwarded to the upstream at once (a request counts until its response body
    /// is sent); more get 503 SlowDown.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub upstream_max_in_flight: u32,

    /// Requests from one client address forwarded at once; more get 503 SlowDown.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub upstream_max_in_flight_per_source: u32,

    // `<...>` is help text for clap, not HTML.
    #[allow(rustdoc::invalid_html_tags)]
    /// Forward virtual-hosted requests in path style (Host: <domain>, /<bucket>/<key>), for
    /// an upstream that routes by the path alone or does not know the --domain names.
    #[arg(long)]
    pub upstream_path_style: bool,

    /// Idle connections kept open to the upstream for reuse.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub upstream_max_idle: u32,

    /// Access key id the Sync calls are signed with (needs only the tlsfleet:Sync grant).
    #[arg(
        long,
        value_name = "ID",
        env = "TLSFLEET_ACCESS_KEY_ID",
        requires = "access_key_secret"
    )]
    pub access_key_id: Option<String>,

    /// Access key secret. Prefer the environment: a flag shows in the process list.
    #[arg(
        long,
        value_name = "SECRET",
        env = "TLSFLEET_ACCESS_KEY_SECRET",
        hide_env_values = true,
        requires = "access_key_id"
    )]
    pub access_key_secret: Option<String>,

    /// Allow plaintext http:// control servers off loopback. Without TLS anyone on the path
    /// can change (or empty) the policies this agent enforces.
    #[arg(long)]
    pub insecure: bool,

    /// PEM CA bundle that https control servers' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub control_ca: Option<PathBuf>,

    /// PEM client certificate presented to https control servers (mTLS).
    #[arg(long, value_name = "FILE", requires = "control_client_key")]
    pub control_client_cert: Option<PathBuf>,

    /// PEM key of --control-client-cert.
    #[arg(long, value_name = "FILE", requires = "control_client_cert")]
    pub control_client_key: Option<PathBuf>,

    /// First reconnect delay ceiling (the delay is jittered below it and doubles per failure).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub reconnect_min: Duration,

    /// Largest reconnect delay ceiling.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub reconnect_max: Duration,

    /// How often the per-bucket TLS usage counted here is reported to the control plane (one
    /// window each time).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub usage_interval: Duration,

    /// Bound on connecting to a control server and on it accepting the Sync call.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub control_connect_timeout: Duration,
}

/// A file named by a flag could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {source}", path.display())]
pub struct ConfigError {
    pub flag: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Args {
    /// The data plane's part.
    pub fn data_plane(&self) -> DataPlaneConfig {
        DataPlaneConfig {
            listen: self.listen,
            domains: self.domains.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            upstream: self.upstream.clone(),
            control_rest: self.control_rest.clone(),
            admin_listen: self.admin_listen,
            handshake_timeout: self.handshake_timeout,
            connections: ConnectionLimits {
                max_connections: self.max_connections as usize,
                max_per_source: self.max_connections_per_source as usize,
                idle_timeout: self.idle_timeout,
                send_timeout: self.send_timeout,
            },
            upstream_limits: UpstreamLimits {
                connect_timeout: self.upstream_connect_timeout,
                response_timeout: self.upstream_timeout,
                max_in_flight: self.upstream_max_in_flight as usize,
                max_in_flight_per_source: self.upstream_max_in_flight_per_source as usize,
                max_idle: self.upstream_max_idle as usize,
                path_style: self.upstream_path_style,
            },
        }
    }

    /// The sync client's part; reads the control TLS files.
    pub fn sync(&self) -> Result<SyncConfig, ConfigError> {
        let mut cfg = SyncConfig::new(self.control.clone(), self.node_id());
        cfg.labels = self.labels.iter().cloned().collect::<BTreeMap<_, _>>();
        cfg.credentials = match (&self.access_key_id, &self.access_key_secret) {
            (Some(id), Some(secret)) => Some(Credentials {
                access_key_id: id.clone(),
                secret: secret.clone(),
            }),
            // clap's `requires` makes them come in pairs.
            _ => None,
        };
        cfg.tls = ControlTls {
            ca_pem: self
                .control_ca
                .as_ref()
                .map(|p| read("--control-ca", p))
                .transpose()?,
            client_identity: match (&self.control_client_cert, &self.control_client_key) {
                (Some(cert), Some(key)) => Some((
                    read("--control-client-cert", cert)?,
                    read("--control-client-key", key)?,
                )),
                _ => None,
            },
            insecure: self.insecure,
        };
        cfg.backoff_min = self.reconnect_min;
        cfg.backoff_max = self.reconnect_max;
        cfg.usage_every = self.usage_interval;
        cfg.connect_timeout = self.control_connect_timeout;
        Ok(cfg)
    }

    /// `--node-id`, or its default (see the flag's help).
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .and_then(|h| parse_node_id(h.trim()).ok())
            .unwrap_or_else(|| format!("agent-{}", hex::encode(rand::random::<[u8; 4]>())))
    }
}

fn read(flag: &'static str, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    fs::read(path).map_err(|source| ConfigError {
        flag,
        path: path.clone(),
        source,
    })
}

pub use tlsfleet_net::parse_duration;

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("{s:?}: empty key"));
    }
    Ok((k.to_owned(), v.trim().to_owned()))
}

/// Lowercased, without a leading or trailing dot: SNI comparisons are case-insensitive.
fn parse_domain(s: &str) -> Result<String, String> {
    let d = s
        .trim()
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.is_empty() || d.len() > 253 || !d.split('.').all(valid_label) {
        return Err(format!("{s:?} is not a DNS name"));
    }
    Ok(d)
}

fn parse_upstream(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!("{s:?}: expected http://HOST:PORT"));
    }
    Ok(uri)
}

fn parse_node_id(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 253 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{s:?}: expected 1 to 253 printable ASCII characters, no spaces"
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = [
            "tlsfleet-agent",
            "--control",
            "http://127.0.0.1:7443",
            "--domain",
            "oss.test",
        ];
        let base = base.iter().chain(&["--cert", "c.pem", "--key", "k.pem"]);
        Args::try_parse_from(base.chain(extra))
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(a.handshake_timeout, Duration::from_secs(10));
        assert!(a.cache_dir.is_none() && a.admin_listen.is_none() && a.upstream.is_none());
        assert!(!a.node_id().is_empty());
        let s = a.sync().unwrap();
        assert_eq!(s.endpoints, ["http://127.0.0.1:7443"]);
        assert_eq!(s.backoff_min, Duration::from_millis(100));
    }

    #[test]
    fn repeatable_flags_and_labels() {
        let a = parse(&[
            "--control",
            "http://127.0.0.1:7444",
            "--domain",
            ".Other.Test.",
            "--label",
            "zone=a",
            "--label",
            "rack = r1",
            "--node-id",
            "edge-1",
        ])
        .unwrap();
        assert_eq!(a.control.len(), 2);
        assert_eq!(a.domains, ["oss.test", "other.test"]);
        let s = a.sync().unwrap();
        assert_eq!(s.node_id, "edge-1");
        assert_eq!(s.labels.get("rack").map(String::as_str), Some("r1"));
        assert_eq!(s.labels.get("zone").map(String::as_str), Some("a"));
    }

    #[test]
    fn access_keys_come_in_pairs() {
        assert!(parse(&["--access-key-id", "AK"]).is_err());
        let a = parse(&["--access-key-id", "AK", "--access-key-secret", "S"]).unwrap();
        let creds = a.sync().unwrap().credentials.unwrap();
        assert_eq!(
            (creds.access_key_id.as_str(), creds.secret.as_str()),
            ("AK", "S")
        );
    }

    #[test]
    fn required_and_bad_values_are_refused() {
        let no_control = [
            "tlsfleet-agent",
            "--domain",
            "d.test",
            "--cert",
            "c",
            "--key",
            "k",
        ];
        assert!(Args::try_parse_from(no_control).is_err());
        for bad in [
            &["--handshake-timeout", "0s"][..],
            &["--handshake-timeout", "10"],
            &["--upstream", "https://x:1"],
            &["--domain", "bad domain"],
            &["--label", "novalue"],
            &["--node-id", "has space"],
            &["--listen", "nowhere"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_ca_file_is_an_error() {
        let a = parse(&["--control-ca", "/nonexistent/ca.pem"]).unwrap();
        assert!(a.sync().unwrap_err().to_string().contains("--control-ca"));
    }
}
