//! Command-line configuration of `tlsfleet-control`.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::Parser;
use tlsfleet_net::parse_duration;
use tlsfleet_settings::LogFormat;

/// Where policies are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `etcd://HOST:PORT[,HOST:PORT…]`
    Etcd(Vec<String>),
    /// `file:DIR`: the embedded single-node store.
    File(PathBuf),
}

impl FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("etcd://") {
            let endpoints: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect();
            if endpoints.is_empty() {
                return Err("etcd:// needs at least one HOST:PORT".into());
            }
            Ok(StoreUrl::Etcd(endpoints))
        } else if let Some(dir) = s.strip_prefix("file:") {
            if dir.is_empty() {
                return Err("file: needs a directory, e.g. file:./tlsfleet-data".into());
            }
            Ok(StoreUrl::File(PathBuf::from(dir)))
        } else {
            Err(format!(
                "unknown store {s:?}: use etcd://HOST:PORT[,HOST:PORT…] or file:DIR"
            ))
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Etcd(e) => write!(f, "etcd://{}", e.join(",")),
            StoreUrl::File(d) => write!(f, "file:{}", d.display()),
        }
    }
}

/// The tlsfleet control plane: serves the HttpsConfig API (OSS-compatible REST and gRPC),
/// stores policies in etcd or an embedded store, and streams them to agents.
#[derive(Parser, Debug, Clone)]
#[command(name = "tlsfleet-control", version)]
pub struct ControlArgs {
    /// Policy store: `etcd://HOST:PORT[,HOST:PORT…]` or `file:DIR` (embedded, single node).
    #[arg(
        long,
        env = "TLSFLEET_STORE",
        value_name = "URL",
        default_value = "file:./tlsfleet-data"
    )]
    pub store: StoreUrl,

    /// Log lines as text (for people) or JSON (one object per line, for log pipelines).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Key prefix of tlsfleet's data in etcd.
    #[arg(long, value_name = "PREFIX", default_value = "/tlsfleet/")]
    pub etcd_prefix: String,

    /// Address of the OSS-compatible REST API (`PUT/GET /?httpsConfig`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7080")]
    pub http_listen: SocketAddr,

    /// Address of the gRPC API (HttpsConfigService, FleetService, health, reflection).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
    pub grpc_listen: SocketAddr,

    /// Endpoint domain for virtual-hosted requests (`<bucket>.<domain>`); repeatable.
    #[arg(long = "domain", value_name = "SUFFIX")]
    pub domains: Vec<String>,

    /// Access keys and their grants (TOML, `[[key]] id, secret, allow, buckets`).
    #[arg(long, env = "TLSFLEET_CREDENTIALS", value_name = "FILE")]
    pub credentials: PathBuf,

    /// PEM certificate chain for TLS on the gRPC listener (with --grpc-tls-key).
    #[arg(long, value_name = "FILE", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<PathBuf>,

    /// PEM private key for TLS on the gRPC listener.
    #[arg(long, value_name = "FILE", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<PathBuf>,

    /// PEM CA bundle: require gRPC clients (agents) to present a certificate it signed (mTLS).
    #[arg(long, value_name = "FILE", requires = "grpc_tls_cert")]
    pub grpc_tls_client_ca: Option<PathBuf>,

    /// This server's name in the agent registry [default: the gRPC listen address].
    #[arg(long, value_name = "NAME")]
    pub control_id: Option<String>,

    // `<...>` is help text for clap, not HTML.
    #[allow(rustdoc::invalid_html_tags)]
    /// The gRPC URL other control servers reach this one at, for fleet-wide usage answers
    /// [default: http(s)://<the gRPC listen address>].
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,

    /// Access key this server signs its questions to the other control servers with (fleet-wide
    /// usage, dry runs and a canary's refusals); it needs `tlsfleet:GetUsage` and
    /// `tlsfleet:GetRolloutStatus`. Without it, answers cover this server's agents only, and
    /// say so.
    #[arg(
        long,
        env = "TLSFLEET_PEER_ACCESS_KEY_ID",
        value_name = "ID",
        requires = "peer_access_key_secret"
    )]
    pub peer_access_key_id: Option<String>,

    /// Secret of --peer-access-key-id (prefer the environment variable).
    #[arg(
        long,
        env = "TLSFLEET_PEER_ACCESS_KEY_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        requires = "peer_access_key_id"
    )]
    pub peer_access_key_secret: Option<String>,

    /// PEM CA the other control servers' gRPC certificates chain to (https:// peers).
    #[arg(long, value_name = "FILE")]
    pub peer_ca: Option<PathBuf>,

    /// Allow plaintext gRPC on a non-loopback --grpc-listen address. Without TLS anyone on
    /// the path can read and change the agents' policy stream: use only on a network that is
    /// otherwise protected.
    #[arg(long)]
    pub insecure: bool,

    /// PEM certificate chain for TLS on the REST listener (with --http-tls-key).
    #[arg(long, value_name = "FILE", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,

    /// PEM private key for TLS on the REST listener.
    #[arg(long, value_name = "FILE", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,

    /// Accept a REST PUT only when its signature covers the body: Content-MD5 (V1, V4) or a
    /// hex x-oss-content-sha256 (V4). The v2 SDKs send Content-MD5; oss2 does not.
    #[arg(long)]
    pub require_signed_body: bool,

    /// Whether a REST PUT may downgrade a bucket (let in a version or suite its policy keeps
    /// out, add TLSv1.0/1.1, turn management off). The OSS API cannot ask for it, so the
    /// server decides: `refuse` answers `403 AccessDenied` (use tlsfleetctl --allow-downgrade),
    /// `allow` applies it (audited as a downgrade).
    #[arg(
        long,
        value_enum,
        value_name = "allow|refuse",
        default_value = "refuse"
    )]
    pub rest_downgrades: crate::rest::RestDowngrades,

    /// Which requests get their log line (target `tlsfleet::request`): `all`, or `changes`:
    /// the requests that change something or fail, not the successful reads (GETs, lists,
    /// status polls, health checks). Metrics count every request either way.
    #[arg(long, value_enum, value_name = "all|changes", default_value = "all")]
    pub request_log: crate::request_log::RequestLog,

    /// How long the audit trail keeps its records (trimmed every ten minutes).
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_duration)]
    pub audit_retention: Duration,

    /// Open REST connections at most; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub http_max_connections: usize,

    /// Open REST connections from one source address at most.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub http_max_connections_per_source: usize,

    /// Bound on receiving a request's headers, from the connection's start or the previous
    /// response (also bounds the TLS handshake).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// A REST read or write that makes no progress for this long fails its connection.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,

    /// Open gRPC connections at most; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub grpc_max_connections: usize,

    /// Open gRPC connections from one source address at most (agents behind one NAT share it).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub grpc_max_connections_per_source: usize,

    /// Agent Sync streams open at once, all keys together.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_sync_streams: usize,

    /// Agent Sync streams open at once with one access key.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_sync_streams_per_key: usize,

    /// A Sync stream whose agent has not taken a message for this long is dropped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub sync_send_timeout: Duration,

    /// Signatures remembered per access key to refuse replays (gRPC nonces, one each; REST
    /// PUTs, two each); at least 2.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub replay_cache_per_key: usize,

    /// Revisions of history the embedded store keeps for agents resuming with a delta; older
    /// ones are compacted (agents from before get a snapshot).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub embedded_history: u64,

    /// How often the store's history is compacted, keeping at least one interval of it
    /// (agents resuming from a revision older than that, after a control server restart, get
    /// a snapshot); `off` leaves compaction to etcd's own `--auto-compaction-*`.
    #[arg(long, value_name = "DURATION|off", default_value = "10m", value_parser = parse_compaction)]
    pub compaction_interval: Compaction,
}

/// `--compaction-interval`: every this long, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction(pub Option<Duration>);

fn parse_compaction(s: &str) -> Result<Compaction, String> {
    match s {
        "off" => Ok(Compaction(None)),
        _ => parse_duration(s).map(|d| Compaction(Some(d))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        assert_eq!(
            "etcd://a:1,b:2".parse::<StoreUrl>(),
            Ok(StoreUrl::Etcd(vec!["a:1".into(), "b:2".into()]))
        );
        assert_eq!(
            "file:/x".parse::<StoreUrl>(),
            Ok(StoreUrl::File("/x".into()))
        );
        assert!("etcd://".parse::<StoreUrl>().is_err());
        assert!("file:".parse::<StoreUrl>().is_err());
        assert!("redis://x".parse::<StoreUrl>().is_err());
    }
}
