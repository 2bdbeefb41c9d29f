//! Command-line configuration of `tlsfleet-control`.

use std::{net::SocketAddr, path::PathBuf, str::FromStr};

use clap::Parser;

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
