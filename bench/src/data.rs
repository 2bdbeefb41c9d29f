//! The policy mix every benchmark and scale test loads, written straight into etcd (the REST
//! API is too slow for a million): most buckets allow TLS 1.2 and 1.3, a quarter TLS 1.3
//! only, some restrict TLS 1.2 suites, a few turned management off. Peers are configured
//! from the same mix ([`rule`]).

use etcd_client::{Client, Txn, TxnOp};
use tlsfleet_control::store::StoredPolicy;
use tlsfleet_policy::{CipherSuiteConfig, HttpsConfig, TlsConfig, TlsVersion};

/// etcd's default limit of operations in one transaction.
const OPS_PER_TXN: usize = 128;

/// The TLS 1.2 suite the custom-suite buckets keep (OpenSSL name).
pub const CUSTOM_TLS12_SUITE: &str = "ECDHE-ECDSA-AES128-GCM-SHA256";

/// What bucket `i` allows, as a peer's configuration says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub tls12: bool,
    pub tls13: bool,
    /// TLS 1.2 restricted to [`CUSTOM_TLS12_SUITE`].
    pub custom_tls12_suite: bool,
}

/// Bucket `i`'s rule (the same mix as [`policy`]).
pub fn rule(i: usize) -> Rule {
    match i % 20 {
        11..=15 => Rule {
            tls12: false,
            tls13: true,
            custom_tls12_suite: false,
        },
        16..=18 => Rule {
            tls12: true,
            tls13: true,
            custom_tls12_suite: true,
        },
        // Both versions; management off also serves both.
        _ => Rule {
            tls12: true,
            tls13: true,
            custom_tls12_suite: false,
        },
    }
}

/// Bucket `i`'s policy.
pub fn policy(i: usize) -> HttpsConfig {
    let versions = |v: &[TlsVersion]| TlsConfig {
        enable: true,
        tls_versions: v.to_vec(),
    };
    match i % 20 {
        0..=10 => HttpsConfig {
            tls: versions(&[TlsVersion::Tls12, TlsVersion::Tls13]),
            cipher_suite: None,
        },
        11..=15 => HttpsConfig {
            tls: versions(&[TlsVersion::Tls13]),
            cipher_suite: None,
        },
        16..=18 => HttpsConfig {
            tls: versions(&[TlsVersion::Tls12, TlsVersion::Tls13]),
            cipher_suite: Some(CipherSuiteConfig {
                enable: Some(true),
                custom_cipher_suites: vec![CUSTOM_TLS12_SUITE.into()],
                ..Default::default()
            }),
        },
        _ => HttpsConfig::disabled(),
    }
}

/// Bucket `i`'s name.
pub fn bucket(i: usize) -> String {
    format!("bucket-{i:08}")
}

/// Writes policies `0..n` into etcd under `/tlsfleet/` (the control server's default prefix),
/// `OPS_PER_TXN` per transaction, eight transactions at a time.
pub async fn write_policies(endpoint: &str, n: usize) -> Result<(), etcd_client::Error> {
    let client = Client::connect([endpoint], None).await?;
    let batches: Vec<(usize, usize)> = (0..n)
        .step_by(OPS_PER_TXN)
        .map(|s| (s, (s + OPS_PER_TXN).min(n)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in batches.chunks(batches.len().div_ceil(8).max(1)) {
        let (chunk, mut kv) = (chunk.to_vec(), client.kv_client());
        tasks.spawn(async move {
            for (start, end) in chunk {
                let ops: Vec<TxnOp> = (start..end)
                    .map(|i| {
                        let stored = StoredPolicy {
                            config: policy(i),
                            updated_by: "bench".into(),
                            updated_at_unix_ms: 0,
                            ..Default::default()
                        };
                        // A StoredPolicy always encodes (plain data to JSON).
                        let value = stored.encode().unwrap_or_default();
                        TxnOp::put(format!("/tlsfleet/policies/{}", bucket(i)), value, None)
                    })
                    .collect();
                kv.txn(Txn::new().and_then(ops)).await?;
            }
            Ok::<_, etcd_client::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| etcd_client::Error::IoError(std::io::Error::other(e)))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_rules_say_what_the_policies_allow() {
        for i in 0..40 {
            let key = policy(i).effective().expect("valid").key;
            let r = rule(i);
            assert_eq!(key.versions & 1 != 0, r.tls12, "bucket {i} TLS 1.2");
            assert_eq!(key.versions & 2 != 0, r.tls13, "bucket {i} TLS 1.3");
        }
    }
}
