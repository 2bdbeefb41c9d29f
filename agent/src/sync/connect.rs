//! Reaching a control server: one tonic endpoint per `--control` URL, and the signed
//! `authorization` metadata every Sync call carries (see `tlsfleet_proto::auth`).

use std::{fmt, time::Duration};

use tlsfleet_proto::auth::{message_digest, SignedHeader, METADATA_KEY};
use tonic::{
    metadata::{AsciiMetadataValue, MetadataMap},
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity},
};

use super::SyncError;

/// The gRPC path the signature covers.
pub(super) const SYNC_METHOD: &str = "/tlsfleet.v1.FleetService/Sync";

/// An access key allowed `tlsfleet:Sync` (and, by design, nothing that writes).
#[derive(Clone)]
pub struct Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The access key secret.
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// How the agent authenticates control servers over `https` (and itself, for mTLS).
#[derive(Clone, Default)]
pub struct ControlTls {
    /// PEM CA bundle the control servers' certificates must chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and key presented to control servers that ask for one.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Allow `http://` control servers off loopback (`--insecure`): anyone on the path could
    /// then feed the agent any policy, or none.
    pub insecure: bool,
}

impl fmt::Debug for ControlTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_identity", &self.client_identity.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// Connection settings shared by every endpoint.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

/// One `--control` URL, ready to connect.
#[derive(Clone, Debug)]
pub(super) struct ControlEndpoint {
    pub url: String,
    pub endpoint: Endpoint,
}

pub(super) fn endpoint(
    url: &str,
    tls: &ControlTls,
    timeouts: Timeouts,
) -> Result<ControlEndpoint, SyncError> {
    let invalid = |reason: String| SyncError::InvalidEndpoint {
        url: url.to_owned(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| invalid(e.to_string()))?
        .user_agent(concat!("tlsfleet-agent/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(timeouts.connect)
        .tcp_nodelay(true)
        // A control server that vanished without a FIN (power loss, partition) is noticed
        // by the missing PINGs rather than never.
        .http2_keep_alive_interval(timeouts.keepalive_interval)
        .keep_alive_timeout(timeouts.keepalive_timeout)
        .keep_alive_while_idle(true);
    match endpoint.uri().scheme_str() {
        Some("http")
            if tls.insecure
                || endpoint
                    .uri()
                    .host()
                    .is_some_and(tlsfleet_policy::names::is_loopback_host) => {}
        Some("http") => {
            return Err(invalid(
                "plaintext http:// to a control server off loopback: anyone on the path could \
                 change the policies this agent enforces; use https:// with --control-ca, or \
                 pass --insecure"
                    .to_owned(),
            ))
        }
        Some("https") => {
            let Some(ca) = &tls.ca_pem else {
                return Err(invalid(
                    "an https control endpoint needs --control-ca (this build has no system roots)"
                        .to_owned(),
                ));
            };
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &tls.client_identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| invalid(e.to_string()))?;
        }
        _ => return Err(invalid("the scheme must be http or https".to_owned())),
    }
    if endpoint.uri().host().is_none() {
        return Err(invalid("no host".to_owned()));
    }
    Ok(ControlEndpoint {
        url: url.to_owned(),
        endpoint,
    })
}

/// Adds a fresh signature (new date and nonce: the server refuses a replayed nonce) over the
/// stream's first message, the `hello`, to a call.
pub(super) fn sign(
    metadata: &mut MetadataMap,
    creds: &Credentials,
    hello: &tlsfleet_proto::v1::AgentMessage,
) -> Result<(), SyncError> {
    let header = SignedHeader::sign_now(
        &creds.access_key_id,
        &creds.secret,
        SYNC_METHOD,
        &message_digest(hello),
    );
    let value = AsciiMetadataValue::try_from(header.to_header_value())
        .map_err(|_| SyncError::Sign("the access key id is not printable ASCII".to_owned()))?;
    metadata.insert(METADATA_KEY, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        let s = Duration::from_secs(1);
        Timeouts {
            connect: s,
            keepalive_interval: s,
            keepalive_timeout: s,
        }
    }

    fn hello(node: &str) -> tlsfleet_proto::v1::AgentMessage {
        tlsfleet_proto::v1::AgentMessage {
            kind: Some(tlsfleet_proto::v1::agent_message::Kind::Hello(
                tlsfleet_proto::v1::AgentHello {
                    node_id: node.into(),
                    ..Default::default()
                },
            )),
        }
    }

    #[test]
    fn signature_verifies_for_sync_and_this_hello_only() {
        let creds = Credentials {
            access_key_id: "AK1".into(),
            secret: "s3cret".into(),
        };
        let mut md = MetadataMap::new();
        sign(&mut md, &creds, &hello("edge-1")).unwrap();
        let value = md.get(METADATA_KEY).unwrap().to_str().unwrap();
        let parsed = SignedHeader::parse(value).unwrap();
        assert_eq!(parsed.access_key_id, "AK1");
        assert_eq!(parsed.date.len(), "20261128T210715Z".len());
        assert_eq!(parsed.nonce.len(), 32);
        let digest = message_digest(&hello("edge-1"));
        assert!(tlsfleet_proto::auth::verify(
            "s3cret",
            &parsed,
            SYNC_METHOD,
            &digest
        ));
        assert!(!tlsfleet_proto::auth::verify(
            "s3cret",
            &parsed,
            "/tlsfleet.v1.FleetService/ListAgents",
            &digest
        ));
        let other = message_digest(&hello("edge-2"));
        assert!(!tlsfleet_proto::auth::verify(
            "s3cret",
            &parsed,
            SYNC_METHOD,
            &other
        ));
    }

    #[test]
    fn nonces_differ_between_calls() {
        let creds = Credentials {
            access_key_id: "AK1".into(),
            secret: "s".into(),
        };
        let nonce = || {
            let mut md = MetadataMap::new();
            sign(&mut md, &creds, &hello("n")).unwrap();
            SignedHeader::parse(md.get(METADATA_KEY).unwrap().to_str().unwrap())
                .unwrap()
                .nonce
        };
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn non_ascii_key_id_is_an_error() {
        let creds = Credentials {
            access_key_id: "ключ\n".into(),
            secret: "s".into(),
        };
        assert!(sign(&mut MetadataMap::new(), &creds, &hello("n")).is_err());
    }

    #[test]
    fn endpoints_are_checked() {
        let none = ControlTls::default();
        assert!(endpoint("http://127.0.0.1:7443", &none, timeouts()).is_ok());
        assert!(endpoint("https://control.example:7443", &none, timeouts()).is_err());
        assert!(endpoint("ftp://127.0.0.1:1", &none, timeouts()).is_err());
        // Plaintext only to this machine, unless told otherwise.
        assert!(endpoint("http://[::1]:7443", &none, timeouts()).is_ok());
        assert!(endpoint("http://localhost:7443", &none, timeouts()).is_ok());
        assert!(endpoint("http://10.0.0.1:7443", &none, timeouts()).is_err());
        assert!(endpoint("http://control.internal:7443", &none, timeouts()).is_err());
        let insecure = ControlTls {
            insecure: true,
            ..ControlTls::default()
        };
        assert!(endpoint("http://10.0.0.1:7443", &insecure, timeouts()).is_ok());
        assert!(endpoint("not a url", &none, timeouts()).is_err());
        assert!(format!(
            "{:?}",
            Credentials {
                access_key_id: "a".into(),
                secret: "hidden".into()
            }
        )
        .contains("redacted"));
    }
}
