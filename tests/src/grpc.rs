//! Signed gRPC clients for tests (the same scheme tlsfleetctl and agents use).

use tlsfleet_proto::{
    auth::{message_digest, SignedHeader},
    v1::{
        fleet_service_client::FleetServiceClient,
        https_config_service_client::HttpsConfigServiceClient,
    },
    v1::{CipherSuiteConfig, HttpsConfig, TlsConfig},
};
use tonic::transport::Channel;

/// A request for `method` (e.g. "/tlsfleet.v1.HttpsConfigService/Put") signed with `key`: the
/// signature covers the method and the message.
pub fn signed<T: prost::Message>(msg: T, method: &str, key: (&str, &str)) -> tonic::Request<T> {
    let header = SignedHeader::sign_now(key.0, key.1, method, &message_digest(&msg));
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        header.to_header_value().parse().expect("ascii header"),
    );
    req
}

/// `YYYYMMDDTHHMMSSZ` now, UTC.
pub fn utc_now() -> String {
    utc_at(std::time::SystemTime::now())
}

/// `YYYYMMDDTHHMMSSZ` at `t`, UTC.
pub fn utc_at(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    tlsfleet_proto::auth::format_date(secs)
}

pub async fn admin(url: &str) -> HttpsConfigServiceClient<Channel> {
    HttpsConfigServiceClient::connect(url.to_owned())
        .await
        .expect("connect to the control gRPC")
}

pub async fn fleet(url: &str) -> FleetServiceClient<Channel> {
    FleetServiceClient::connect(url.to_owned())
        .await
        .expect("connect to the control gRPC")
}

/// A wire policy: management enabled with `versions`; a custom `<CipherSuite>` section when
/// either suite list is non-empty.
pub fn https_config(versions: &[&str], tls12: &[&str], tls13: &[&str]) -> HttpsConfig {
    let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    HttpsConfig {
        tls: Some(TlsConfig {
            enable: true,
            tls_versions: owned(versions),
        }),
        cipher_suite: (!tls12.is_empty() || !tls13.is_empty()).then(|| CipherSuiteConfig {
            enable: Some(true),
            strong_cipher_suite: Some(false),
            custom_cipher_suites: owned(tls12),
            tls13_custom_cipher_suites: owned(tls13),
        }),
    }
}
