//! Reaching a control server: one tonic endpoint per `--control` URL. Calls are signed by
//! `tlsfleet_proto::signer`.

use std::{fmt, time::Duration};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::SyncError;

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
