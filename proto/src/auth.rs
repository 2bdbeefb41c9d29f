//! The gRPC request-signing scheme, shared by the clients that sign (tlsfleetctl, agents) and
//! the control plane that verifies. It is part of the wire contract, like the messages.
//!
//! Every call carries one metadata entry:
//!
//! ```text
//! authorization: TLSFLEET-HMAC-SHA256 Credential=<AccessKeyId>, Date=<YYYYMMDDTHHMMSSZ>, Nonce=<hex>, Signature=<hex>
//! ```
//!
//! ```text
//! StringToSign = "TLSFLEET-HMAC-SHA256" "\n" Date "\n" Nonce "\n" MethodPath "\n" hex(SHA256(Message))
//! Signature    = hex(HMAC-SHA256(secret, StringToSign))
//! ```
//!
//! `MethodPath` is the gRPC path, e.g. `/tlsfleet.v1.HttpsConfigService/Put`, so a signature
//! for one method is worthless for another. `Message` is the protobuf encoding of the request
//! message (of the first message, the hello, for the `Sync` stream), so the bucket and the
//! policy of a `Put` are signed: changing either on the way breaks the signature. Maps are
//! encoded in key order (the generated code uses ordered maps), so both ends compute the same
//! digest. The server accepts a `Date` up to 15 minutes old and a few minutes ahead of its
//! clock, and refuses a nonce the same key used in that window.

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

/// The algorithm tag, first word of the header.
pub const ALGORITHM: &str = "TLSFLEET-HMAC-SHA256";
/// The metadata key.
pub const METADATA_KEY: &str = "authorization";

/// SHA-256 of a request message's encoding.
pub type Digest = [u8; 32];

/// The digest of `message` as signed: SHA-256 of its protobuf encoding.
pub fn message_digest<M: prost::Message>(message: &M) -> Digest {
    Sha256::digest(message.encode_to_vec()).into()
}

/// The parts of an `authorization` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeader {
    pub access_key_id: String,
    /// `YYYYMMDDTHHMMSSZ`, UTC.
    pub date: String,
    pub nonce: String,
    /// Lowercase hex.
    pub signature: String,
}

/// Why an `authorization` value cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedHeader(pub &'static str);

impl std::fmt::Display for MalformedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed authorization metadata: {}", self.0)
    }
}

impl std::error::Error for MalformedHeader {}

/// The longest `authorization` value accepted.
pub const MAX_HEADER: usize = 1024;

/// The string the signature covers.
pub fn string_to_sign(date: &str, nonce: &str, method_path: &str, digest: &Digest) -> String {
    format!(
        "{ALGORITHM}\n{date}\n{nonce}\n{method_path}\n{}",
        hex::encode(digest)
    )
}

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: new_from_slice cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// hex(HMAC-SHA256(secret, string_to_sign(..))).
pub fn signature(
    secret: &str,
    date: &str,
    nonce: &str,
    method_path: &str,
    digest: &Digest,
) -> String {
    let mut mac = mac(secret);
    mac.update(string_to_sign(date, nonce, method_path, digest).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time comparison of a presented signature with the expected one.
pub fn verify(secret: &str, header: &SignedHeader, method_path: &str, digest: &Digest) -> bool {
    let Ok(presented) = hex::decode(&header.signature) else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(string_to_sign(&header.date, &header.nonce, method_path, digest).as_bytes());
    mac.verify_slice(&presented).is_ok()
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time (UTC); empty for times before 1970 or after 9999.
pub fn format_date(unix_secs: u64) -> String {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(i64::MAX);
    let secs = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(1970..=9999).contains(&year) {
        return String::new();
    }
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

impl SignedHeader {
    /// Signs a call: `date` is `YYYYMMDDTHHMMSSZ` (UTC), `nonce` a fresh random hex string,
    /// `digest` the [`message_digest`] of the request message.
    pub fn sign(
        access_key_id: &str,
        secret: &str,
        date: &str,
        nonce: &str,
        method_path: &str,
        digest: &Digest,
    ) -> Self {
        Self {
            access_key_id: access_key_id.to_owned(),
            date: date.to_owned(),
            nonce: nonce.to_owned(),
            signature: signature(secret, date, nonce, method_path, digest),
        }
    }

    /// Signs a call now, with a fresh 128-bit nonce: what every client sends.
    pub fn sign_now(access_key_id: &str, secret: &str, method_path: &str, digest: &Digest) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        Self::sign(
            access_key_id,
            secret,
            &format_date(now),
            &nonce,
            method_path,
            digest,
        )
    }

    /// Parses `TLSFLEET-HMAC-SHA256 Credential=…, Date=…, Nonce=…, Signature=…`
    /// (fields in any order, each once, blanks around commas ignored).
    pub fn parse(value: &str) -> Result<Self, MalformedHeader> {
        if value.len() > MAX_HEADER {
            return Err(MalformedHeader("too long"));
        }
        let rest = value
            .trim()
            .strip_prefix(ALGORITHM)
            .ok_or(MalformedHeader("expected the TLSFLEET-HMAC-SHA256 scheme"))?;
        if !rest.starts_with(' ') {
            return Err(MalformedHeader("expected a blank after the scheme"));
        }
        let (mut id, mut date, mut nonce, mut sig) = (None, None, None, None);
        for field in rest.split(',') {
            let field = field.trim();
            if field.is_empty() {
                continue;
            }
            let (k, v) = field
                .split_once('=')
                .ok_or(MalformedHeader("field without '='"))?;
            let v = Some(v.trim().to_owned());
            let slot = match k.trim() {
                "Credential" => &mut id,
                "Date" => &mut date,
                "Nonce" => &mut nonce,
                "Signature" => &mut sig,
                _ => return Err(MalformedHeader("unknown field")),
            };
            if slot.is_some() {
                return Err(MalformedHeader("a field appears twice"));
            }
            *slot = v;
        }
        let header = Self {
            access_key_id: id.ok_or(MalformedHeader("missing Credential"))?,
            date: date.ok_or(MalformedHeader("missing Date"))?,
            nonce: nonce.ok_or(MalformedHeader("missing Nonce"))?,
            signature: sig.ok_or(MalformedHeader("missing Signature"))?,
        };
        if header.access_key_id.is_empty()
            || header.nonce.is_empty()
            || header.nonce.len() > 64
            || !header.nonce.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(MalformedHeader(
                "empty Credential, or a Nonce that is not 1 to 64 letters and digits",
            ));
        }
        Ok(header)
    }

    /// The metadata value.
    pub fn to_header_value(&self) -> String {
        format!(
            "{ALGORITHM} Credential={}, Date={}, Nonce={}, Signature={}",
            self.access_key_id, self.date, self.nonce, self.signature
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    const PUT: &str = "/tlsfleet.v1.HttpsConfigService/Put";

    fn put(bucket: &str) -> v1::PutRequest {
        v1::PutRequest {
            bucket: bucket.into(),
            config: Some(v1::HttpsConfig {
                tls: Some(v1::TlsConfig {
                    enable: true,
                    tls_versions: vec!["TLSv1.3".into()],
                }),
                cipher_suite: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sign_parse_verify_round_trip() {
        let digest = message_digest(&put("vault"));
        let h = SignedHeader::sign("AK", "secret", "20261128T210715Z", "00ff00ff", PUT, &digest);
        let parsed = SignedHeader::parse(&h.to_header_value()).expect("parses");
        assert_eq!(parsed, h);
        assert!(verify("secret", &parsed, PUT, &digest));
        assert!(!verify("other", &parsed, PUT, &digest));
        assert!(!verify(
            "secret",
            &parsed,
            "/tlsfleet.v1.HttpsConfigService/Delete",
            &digest
        ));
        // Another bucket or another policy: another digest, the signature no longer holds.
        assert!(!verify(
            "secret",
            &parsed,
            PUT,
            &message_digest(&put("other"))
        ));
        let mut weaker = put("vault");
        weaker
            .config
            .as_mut()
            .unwrap()
            .tls
            .as_mut()
            .unwrap()
            .tls_versions = vec!["TLSv1.2".into()];
        assert!(!verify("secret", &parsed, PUT, &message_digest(&weaker)));
    }

    #[test]
    fn maps_encode_in_key_order() {
        let hello = |pairs: &[(&str, &str)]| v1::AgentHello {
            node_id: "n".into(),
            labels: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        };
        let a = hello(&[("zone", "a"), ("rack", "r"), ("az", "1")]);
        let b = hello(&[("az", "1"), ("zone", "a"), ("rack", "r")]);
        assert_eq!(message_digest(&a), message_digest(&b));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Bearer x",
            "TLSFLEET-HMAC-SHA256 Credential=AK",
            "TLSFLEET-HMAC-SHA256Credential=AK, Date=d, Nonce=00ff00ff, Signature=s",
            "TLSFLEET-HMAC-SHA256 Credential=AK, Date=d, Nonce=00ff00ff, Signature=s, X=1",
            "TLSFLEET-HMAC-SHA256 Credential=AK, Credential=BK, Date=d, Nonce=00ff00ff, Signature=s",
            "TLSFLEET-HMAC-SHA256 Credential=AK, Date=d, Nonce=, Signature=s",
            "TLSFLEET-HMAC-SHA256 Credential=AK, Date=d, Nonce=not-alnum!, Signature=s",
        ] {
            assert!(SignedHeader::parse(bad).is_err(), "{bad}");
        }
        assert!(SignedHeader::parse(&"x".repeat(MAX_HEADER + 1)).is_err());
    }

    #[test]
    fn dates_format_as_compact_utc() {
        assert_eq!(format_date(1_795_900_035), "20261128T210715Z");
        assert_eq!(format_date(0), "19700101T000000Z");
        assert_eq!(format_date(951_782_400), "20000229T000000Z");
        assert_eq!(format_date(u64::MAX), "");
        let fresh = SignedHeader::sign_now("AK", "s", PUT, &[0; 32]);
        assert_ne!(
            fresh.nonce,
            SignedHeader::sign_now("AK", "s", PUT, &[0; 32]).nonce
        );
        assert!(verify("s", &fresh, PUT, &[0; 32]));
    }
}
