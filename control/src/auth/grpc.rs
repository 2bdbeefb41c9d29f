//! gRPC call authentication: the `TLSFLEET-HMAC-SHA256` metadata of `tlsfleet_proto::auth`,
//! a 15-minute window on its `Date`, and a replay cache of the nonces seen in that window.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Mutex,
};

use tlsfleet_proto::auth::{verify as verify_signature, SignedHeader, METADATA_KEY};

use super::{bounded, clock, AuthError, Credentials, Principal};

/// At most this many nonces are remembered (about 10 MB). A signed call within its window
/// only gets through once; beyond this many calls per window, the oldest entries make room
/// and calls dated at or before them are refused (fail closed) until they age out.
pub const MAX_REPLAY_ENTRIES: usize = 100_000;

pub(super) fn verify(
    creds: &Credentials,
    replay: &ReplayCache,
    metadata: &tonic::metadata::MetadataMap,
    method_path: &str,
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
    if !verify_signature(key.secret(), &header, method_path) {
        return Err(AuthError::SignatureDoesNotMatch);
    }
    clock::check_skew(date, now)?;
    // Only verified calls reach the cache, so nobody without a key can fill it.
    replay.check_and_insert(&key.id, &header.nonce, date, now)?;
    Ok(Principal { key })
}

/// Nonces seen, each remembered until its call's date falls out of the skew window.
pub(super) struct ReplayCache {
    inner: Mutex<Replay>,
}

struct Replay {
    capacity: usize,
    /// `key id \0 nonce`.
    seen: HashSet<String>,
    /// (expiry, entry), to evict in expiry order.
    by_expiry: BTreeSet<(i64, String)>,
    /// Calls that expire at or before this were evicted early: refuse them.
    floor: i64,
}

impl ReplayCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Replay {
                capacity: capacity.max(1),
                seen: HashSet::new(),
                by_expiry: BTreeSet::new(),
                floor: i64::MIN,
            }),
        }
    }

    /// `Err(Replayed)` when this key and nonce were seen within the window, or when the
    /// call is too old for the cache to vouch for it.
    pub(super) fn check_and_insert(
        &self,
        key_id: &str,
        nonce: &str,
        date: i64,
        now: i64,
    ) -> Result<(), AuthError> {
        // A poisoned lock only means another thread panicked mid-update; the sets are
        // still consistent enough to keep refusing replays.
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((expiry, _)) = r.by_expiry.first() {
            if *expiry > now {
                break;
            }
            if let Some((_, entry)) = r.by_expiry.pop_first() {
                r.seen.remove(&entry);
            }
        }
        let expiry = date.saturating_add(i64::try_from(clock::MAX_SKEW.as_secs()).unwrap_or(0));
        let entry = format!("{key_id}\0{nonce}");
        if expiry <= r.floor || r.seen.contains(&entry) {
            return Err(AuthError::Replayed);
        }
        if r.seen.len() >= r.capacity {
            if let Some((oldest, evicted)) = r.by_expiry.pop_first() {
                r.seen.remove(&evicted);
                r.floor = r.floor.max(oldest);
            }
            if expiry <= r.floor {
                return Err(AuthError::Replayed);
            }
        }
        r.seen.insert(entry.clone());
        r.by_expiry.insert((expiry, entry));
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|r| r.seen.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use tonic::metadata::{MetadataMap, MetadataValue};

    use super::*;
    use crate::auth::Authenticator;

    const T: u64 = 1_795_900_035; // 2026-11-28T21:07:15Z
    const PUT: &str = "/tlsfleet.v1.HttpsConfigService/Put";

    fn authenticator() -> Authenticator {
        Authenticator::new(
            Credentials::parse(
                "[[key]]\nid='AKCTL'\nsecret='ctl-secret'\nallow=['oss:*','tlsfleet:*']\nbuckets=['*']\n",
            )
            .unwrap(),
        )
    }

    fn md(id: &str, secret: &str, date: &str, nonce: &str, path: &str) -> MetadataMap {
        let h = SignedHeader::sign(id, secret, date, nonce, path);
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
        let who = auth.grpc_at(&m, PUT, at(T)).unwrap();
        assert_eq!(who.key.id, "AKCTL");
        assert_eq!(
            auth.grpc_at(&m, PUT, at(T + 1)).unwrap_err(),
            AuthError::Replayed
        );
        let fresh = md("AKCTL", "ctl-secret", "20261128T210715Z", "n2", PUT);
        assert!(auth.grpc_at(&fresh, PUT, at(T + 1)).is_ok());
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
                    "/tlsfleet.v1.HttpsConfigService/Get",
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
            (
                md("AKCTL", "ctl-secret", "20261128T212216Z", "e", PUT),
                AuthError::RequestTimeTooSkewed,
            ),
        ];
        for (m, want) in cases {
            assert_eq!(auth.grpc_at(&m, PUT, at(T)).unwrap_err(), want);
        }
        let bad_date = md("AKCTL", "ctl-secret", "2026-11-28T21:07:15Z", "f", PUT);
        assert!(matches!(
            auth.grpc_at(&bad_date, PUT, at(T)),
            Err(AuthError::Malformed(_))
        ));
        let mut garbage = MetadataMap::new();
        garbage.insert(METADATA_KEY, MetadataValue::from_static("Bearer abc"));
        assert!(matches!(
            auth.grpc_at(&garbage, PUT, at(T)),
            Err(AuthError::Malformed(_))
        ));
        // The edges of the window are accepted.
        for (date, nonce) in [("20261128T205215Z", "g"), ("20261128T212215Z", "h")] {
            assert!(auth
                .grpc_at(&md("AKCTL", "ctl-secret", date, nonce, PUT), PUT, at(T))
                .is_ok());
        }
    }

    #[test]
    fn unverified_calls_do_not_fill_the_cache() {
        let auth = authenticator();
        for i in 0..10 {
            let m = md("AKCTL", "wrong", "20261128T210715Z", &format!("x{i}"), PUT);
            assert!(auth.grpc_at(&m, PUT, at(T)).is_err());
        }
        assert_eq!(auth.replay.len(), 0);
    }

    #[test]
    fn cache_is_bounded_and_fails_closed_for_evicted_dates() {
        let cache = ReplayCache::new(3);
        let now = 9_500;
        for (i, date) in [9_000, 9_100, 9_200].into_iter().enumerate() {
            cache
                .check_and_insert("k", &format!("n{i}"), date, now)
                .unwrap();
        }
        // Full: the entry dated 9000 makes room, so calls dated <= 9000 are refused now.
        cache.check_and_insert("k", "n3", 9_300, now).unwrap();
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.check_and_insert("k", "n0", 9_000, now),
            Err(AuthError::Replayed)
        );
        assert_eq!(
            cache.check_and_insert("k", "other", 8_999, now),
            Err(AuthError::Replayed)
        );
        // Still remembered ones are still refused; newer ones pass.
        assert_eq!(
            cache.check_and_insert("k", "n2", 9_200, now),
            Err(AuthError::Replayed)
        );
        assert!(cache.check_and_insert("k2", "n2", 9_400, now).is_ok());
        // Once the window has passed, expired entries go and the cache empties.
        cache
            .check_and_insert("k", "late", 11_000, 11_000 + 899)
            .unwrap();
        assert_eq!(cache.len(), 1);
        // Same nonce, another key: not a replay.
        let c = ReplayCache::new(10);
        c.check_and_insert("a", "n", now, now).unwrap();
        c.check_and_insert("b", "n", now, now).unwrap();
    }
}
