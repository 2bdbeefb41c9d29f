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
//! StringToSign = "TLSFLEET-HMAC-SHA256" "\n" Date "\n" Nonce "\n" MethodPath
//! Signature    = hex(HMAC-SHA256(secret, StringToSign))
//! ```
//!
//! `MethodPath` is the gRPC path, e.g. `/tlsfleet.v1.HttpsConfigService/Put`, so a signature
//! for one method is worthless for another. The server accepts a `Date` within 15 minutes
//! of its clock and refuses a nonce it has already seen in that window.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The algorithm tag, first word of the header.
pub const ALGORITHM: &str = "TLSFLEET-HMAC-SHA256";
/// The metadata key.
pub const METADATA_KEY: &str = "authorization";

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

/// The string the signature covers.
pub fn string_to_sign(date: &str, nonce: &str, method_path: &str) -> String {
    format!("{ALGORITHM}\n{date}\n{nonce}\n{method_path}")
}

/// hex(HMAC-SHA256(secret, string_to_sign(..))).
pub fn signature(secret: &str, date: &str, nonce: &str, method_path: &str) -> String {
    // HMAC accepts keys of any length: new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(string_to_sign(date, nonce, method_path).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time comparison of a presented signature with the expected one.
pub fn verify(secret: &str, header: &SignedHeader, method_path: &str) -> bool {
    let Ok(presented) = hex::decode(&header.signature) else {
        return false;
    };
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(string_to_sign(&header.date, &header.nonce, method_path).as_bytes());
    mac.verify_slice(&presented).is_ok()
}

impl SignedHeader {
    /// Signs a call: `date` is `YYYYMMDDTHHMMSSZ` (UTC), `nonce` a fresh random hex string.
    pub fn sign(
        access_key_id: &str,
        secret: &str,
        date: &str,
        nonce: &str,
        method_path: &str,
    ) -> Self {
        Self {
            access_key_id: access_key_id.to_owned(),
            date: date.to_owned(),
            nonce: nonce.to_owned(),
            signature: signature(secret, date, nonce, method_path),
        }
    }

    /// Parses `TLSFLEET-HMAC-SHA256 Credential=…, Date=…, Nonce=…, Signature=…`
    /// (fields in any order, blanks around commas ignored).
    pub fn parse(value: &str) -> Result<Self, MalformedHeader> {
        let rest = value
            .trim()
            .strip_prefix(ALGORITHM)
            .ok_or(MalformedHeader("expected the TLSFLEET-HMAC-SHA256 scheme"))?;
        let (mut id, mut date, mut nonce, mut sig) = (None, None, None, None);
        for field in rest.split(',') {
            let field = field.trim();
            if field.is_empty() {
                continue;
            }
            let (k, v) = field
                .split_once('=')
                .ok_or(MalformedHeader("field without '='"))?;
            let v = v.trim().to_owned();
            match k.trim() {
                "Credential" => id = Some(v),
                "Date" => date = Some(v),
                "Nonce" => nonce = Some(v),
                "Signature" => sig = Some(v),
                _ => return Err(MalformedHeader("unknown field")),
            }
        }
        let header = Self {
            access_key_id: id.ok_or(MalformedHeader("missing Credential"))?,
            date: date.ok_or(MalformedHeader("missing Date"))?,
            nonce: nonce.ok_or(MalformedHeader("missing Nonce"))?,
            signature: sig.ok_or(MalformedHeader("missing Signature"))?,
        };
        if header.access_key_id.is_empty() || header.nonce.is_empty() || header.nonce.len() > 64 {
            return Err(MalformedHeader("empty Credential or bad Nonce"));
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

    #[test]
    fn sign_parse_verify_round_trip() {
        let h = SignedHeader::sign(
            "AK",
            "secret",
            "20261128T210715Z",
            "00ff",
            "/tlsfleet.v1.HttpsConfigService/Put",
        );
        let parsed = SignedHeader::parse(&h.to_header_value()).expect("parses");
        assert_eq!(parsed, h);
        assert!(verify(
            "secret",
            &parsed,
            "/tlsfleet.v1.HttpsConfigService/Put"
        ));
        assert!(!verify(
            "other",
            &parsed,
            "/tlsfleet.v1.HttpsConfigService/Put"
        ));
        assert!(!verify(
            "secret",
            &parsed,
            "/tlsfleet.v1.HttpsConfigService/Delete"
        ));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Bearer x",
            "TLSFLEET-HMAC-SHA256 Credential=AK",
            "TLSFLEET-HMAC-SHA256 Credential=AK, Date=d, Nonce=n, Signature=s, X=1",
        ] {
            assert!(SignedHeader::parse(bad).is_err(), "{bad}");
        }
    }
}
