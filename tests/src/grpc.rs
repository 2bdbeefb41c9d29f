//! Signed gRPC clients for tests (the same scheme tlsfleetctl and agents use).

use tlsfleet_proto::{
    auth::SignedHeader,
    v1::{
        fleet_service_client::FleetServiceClient,
        https_config_service_client::HttpsConfigServiceClient,
    },
    v1::{CipherSuiteConfig, HttpsConfig, TlsConfig},
};
use tonic::transport::Channel;

/// A request for `method` (e.g. "/tlsfleet.v1.HttpsConfigService/Put") signed with `key`.
pub fn signed<T>(msg: T, method: &str, key: (&str, &str)) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let date = utc_now();
    let nonce = format!("{:032x}", rand_u128());
    let header = SignedHeader::sign(key.0, key.1, &date, &nonce, method);
    req.metadata_mut().insert(
        "authorization",
        header.to_header_value().parse().expect("ascii header"),
    );
    req
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let a = h.finish() as u128;
    let mut h2 = std::collections::hash_map::RandomState::new().build_hasher();
    h2.write_u64(a as u64);
    (a << 64) | h2.finish() as u128
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
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
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
