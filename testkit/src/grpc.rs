//! Signed gRPC clients for tests (the same scheme tlsfleetctl and agents use).

use tlsfleet_proto::{
    auth::message_digest,
    signer::{AccessKey, Signer},
    v1::{
        fleet_service_client::FleetServiceClient,
        https_config_service_client::HttpsConfigServiceClient,
    },
    v1::{CipherSuiteConfig, HttpsConfig, TlsConfig},
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// A client whose every call is signed with `key` by the one signer of tlsfleetctl and the
/// agents (build requests with `tlsfleet_proto::signer::signed_request`).
pub async fn admin_as(
    url: &str,
    key: (&str, &str),
) -> HttpsConfigServiceClient<InterceptedService<Channel, Signer>> {
    let channel = Channel::from_shared(url.to_owned())
        .expect("a gRPC URL")
        .connect()
        .await
        .expect("connect to the control gRPC");
    let key = AccessKey::new(key.0, key.1).expect("a printable test key");
    HttpsConfigServiceClient::with_interceptor(channel, Signer::new(key))
}

/// A request signed with `key` for `method` (a path of `tlsfleet_proto::v1::methods`): the
/// signature covers the method and the message. Naming the method lets a test sign for
/// another one than it calls; [`admin_as`] signs for the one called.
pub fn signed<T: prost::Message>(msg: T, method: &str, key: (&str, &str)) -> tonic::Request<T> {
    let key = AccessKey::new(key.0, key.1).expect("a printable test key");
    let header = key.header_value(method, &message_digest(&msg));
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", header.parse().expect("ascii header"));
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
