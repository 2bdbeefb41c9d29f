//! gRPC call authentication: the `TLSFLEET-HMAC-SHA256` metadata of `tlsfleet_proto::auth`
//! (signature over the method and the request message's digest), a window on its `Date` (15
//! minutes back, [`MAX_FUTURE_SKEW`] ahead), and the per-key replay cache of nonces.

use tlsfleet_proto::auth::{verify as verify_signature, Digest, SignedHeader, METADATA_KEY};

use super::{bounded, clock, replay::ReplayCache, AuthError, Credentials, Principal};

/// How far ahead of the server's clock a gRPC call may be dated. Small: a date far ahead
/// would keep its nonce in the cache (and its signature valid) for longer.
pub const MAX_FUTURE_SKEW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

pub(super) fn verify(
    creds: &Credentials,
    replay: &ReplayCache,
    metadata: &tonic::metadata::MetadataMap,
    method_path: &str,
    digest: &Digest,
    now: i64,
) -> Result<Principal, AuthError> {
    let value = metadata.get(METADATA_KEY).ok_or(AuthError::Missing)?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("authorization metadata is not ASCII".into()))?;
    let header = SignedHeader::parse(value).map_err(|e| AuthError::Malformed(e.0.to_owned()))?;
    let key = creds
        .get_arc(&header.access_key_id)
        .ok_or_else(|| AuthError::InvalidAccessKeyId(bounded(&header.access_key_id)))?;
    let date = clock::parse_iso_basic(&header.date)
        .ok_or_else(|| AuthError::Malformed("Date is not YYYYMMDDTHHMMSSZ".into()))?;
    if !verify_signature(key.secret(), &header, method_path, digest) {
        return Err(AuthError::SignatureDoesNotMatch);
    }
    clock::check_window(date, now, clock::MAX_SKEW, MAX_FUTURE_SKEW)?;
    // Only verified calls reach the cache, so nobody without a key can fill it; each key has
    // its own, so no key can fill another's.
    replay.check_and_insert(&key.id, &header.nonce, clock::expiry(date), now)?;
    Ok(Principal { key })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use tonic::metadata::{MetadataMap, MetadataValue};

    use super::*;
    use crate::auth::Authenticator;

    const T: u64 = 1_795_900_035; // 2026-11-28T21:07:15Z
    const PUT: &str = tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_PUT;
    const BODY: Digest = [7; 32];

    fn authenticator() -> Authenticator {
        Authenticator::new(
            Credentials::parse(
                "[[key]]\nid='AKCTL'\nsecret='ctl-secret'\nallow=['oss:*','tlsfleet:*']\nbuckets=['*']\n\
                 [[key]]\nid='AKAGENT'\nsecret='agent-secret'\nallow=['tlsfleet:Sync']\nnodes=['*']\n",
            )
            .unwrap(),
        )
    }

    fn md(id: &str, secret: &str, date: &str, nonce: &str, path: &str) -> MetadataMap {
        md_for(id, secret, date, nonce, path, &BODY)
    }

    fn md_for(
        id: &str,
        secret: &str,
        date: &str,
        nonce: &str,
        path: &str,
        digest: &Digest,
    ) -> MetadataMap {
        let h = SignedHeader::sign(id, secret, date, nonce, path, digest);
        let mut m = MetadataMap::new();
        m.insert(
            METADATA_KEY,
            MetadataValue::try_from(h.to_header_value()).unwrap(),
        );
        m
    }

    fn at(unix: u64) -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    #[test]
    fn accepts_once_then_refuses_the_replay() {
        let auth = authenticator();
        let m = md("AKCTL", "ctl-secret", "20261128T210715Z", "n1", PUT);
        let who = auth.grpc_at(&m, PUT, &BODY, at(T)).unwrap();
        assert_eq!(who.key.id, "AKCTL");
        assert_eq!(
            auth.grpc_at(&m, PUT, &BODY, at(T + 1)).unwrap_err(),
            AuthError::Replayed
        );
        let fresh = md("AKCTL", "ctl-secret", "20261128T210715Z", "n2", PUT);
        assert!(auth.grpc_at(&fresh, PUT, &BODY, at(T + 1)).is_ok());
    }

    #[test]
    fn the_signature_covers_the_message() {
        let auth = authenticator();
        let m = md("AKCTL", "ctl-secret", "20261128T210715Z", "n1", PUT);
        // The same header with another message (a bucket or a policy changed on the way).
        assert_eq!(
            auth.grpc_at(&m, PUT, &[8; 32], at(T)).unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );
        assert!(auth.grpc_at(&m, PUT, &BODY, at(T)).is_ok());
    }

    #[test]
    fn refuses_what_it_must() {
        let auth = authenticator();
        let date = "20261128T210715Z";
        let cases = [
            (MetadataMap::new(), AuthError::Missing),
            (
                md("AKCTL", "wrong", date, "a", PUT),
                AuthError::SignatureDoesNotMatch,
            ),
            // A signature for another method is worthless here.
            (
                md(
                    "AKCTL",
                    "ctl-secret",
                    date,
                    "b",
                    tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_GET,
                ),
                AuthError::SignatureDoesNotMatch,
            ),
            (
                md("AKNOPE", "ctl-secret", date, "c", PUT),
                AuthError::InvalidAccessKeyId("AKNOPE".into()),
            ),
            (
                md("AKCTL", "ctl-secret", "20261128T205214Z", "d", PUT),
                AuthError::RequestTimeTooSkewed,
            ),
            // Ahead of the server's clock by more than the small future tolerance.
            (
                md("AKCTL", "ctl-secret", "20261128T211216Z", "e", PUT),
                AuthError::RequestTimeTooSkewed,
            ),
        ];
        for (m, want) in cases {
            assert_eq!(auth.grpc_at(&m, PUT, &BODY, at(T)).unwrap_err(), want);
        }
        let bad_date = md("AKCTL", "ctl-secret", "2026-11-28T21:07:15Z", "f", PUT);
        assert!(matches!(
            auth.grpc_at(&bad_date, PUT, &BODY, at(T)),
            Err(AuthError::Malformed(_))
        ));
        let mut garbage = MetadataMap::new();
        garbage.insert(METADATA_KEY, MetadataValue::from_static("Bearer abc"));
        assert!(matches!(
            auth.grpc_at(&garbage, PUT, &BODY, at(T)),
            Err(AuthError::Malformed(_))
        ));
        // The edges of the window are accepted: 15 minutes back, 5 minutes ahead.
        for (date, nonce) in [("20261128T205215Z", "g"), ("20261128T211215Z", "h")] {
            assert!(auth
                .grpc_at(
                    &md("AKCTL", "ctl-secret", date, nonce, PUT),
                    PUT,
                    &BODY,
                    at(T)
                )
                .is_ok());
        }
    }

    #[test]
    fn unverified_calls_do_not_fill_the_cache() {
        let auth = authenticator();
        for i in 0..10 {
            let m = md("AKCTL", "wrong", "20261128T210715Z", &format!("x{i}"), PUT);
            assert!(auth.grpc_at(&m, PUT, &BODY, at(T)).is_err());
        }
        assert_eq!(auth.replay.len("AKCTL"), 0);
    }

    #[test]
    fn a_replay_flood_of_one_key_does_not_lock_out_another() {
        let auth = Authenticator::with_replay_capacity(
            Credentials::parse(
                "[[key]]\nid='AKCTL'\nsecret='ctl-secret'\nallow=['oss:*','tlsfleet:*']\nbuckets=['*']\n\
                 [[key]]\nid='AKAGENT'\nsecret='agent-secret'\nallow=['tlsfleet:Sync']\nnodes=['*']\n",
            )
            .unwrap(),
            100,
        );
        const SYNC: &str = tlsfleet_proto::v1::methods::FLEET_SERVICE_SYNC;
        // The review's attack: calls dated as far ahead as accepted, more than the cache holds.
        let ahead = "20261128T211215Z";
        for i in 0..250 {
            let m = md("AKAGENT", "agent-secret", ahead, &format!("f{i}"), SYNC);
            let _ = auth.grpc_at(&m, SYNC, &BODY, at(T));
        }
        for i in 0..100 {
            let m = md(
                "AKCTL",
                "ctl-secret",
                "20261128T210715Z",
                &format!("a{i}"),
                PUT,
            );
            assert!(
                auth.grpc_at(&m, PUT, &BODY, at(T)).is_ok(),
                "admin call {i}"
            );
        }
    }
}
