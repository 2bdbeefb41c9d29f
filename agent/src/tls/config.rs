//! Building one rustls `ServerConfig` per distinct [`PolicyKey`].

use std::sync::Arc;

use rustls::{
    crypto::CryptoProvider,
    server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions},
    ServerConfig,
};
use tlsfleet_policy::{tls, PolicyKey, ServedVersion};

use tlsfleet_policy::CertKeyType;

use super::cert::CertResolver;

/// ALPN protocols offered by every config, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// TLS 1.2 sessions kept for resumption, shared by every config.
const SESSION_CACHE_SIZE: usize = 4096;

/// A policy this agent cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The policy's TLS 1.2 suites all need the other key type, and it enables no other version.
    #[error(
        "TLS 1.2 with only {needed} suites cannot be served with this agent's {have} certificate"
    )]
    KeyTypeMismatch {
        needed: &'static str,
        have: &'static str,
    },
    /// The key allows no suite of an allowed version.
    #[error("the policy allows no cipher suite for any of its TLS versions")]
    Empty,
    /// rustls refused the combination.
    #[error("rustls refused the policy: {0}")]
    Rustls(String),
}

/// Builds `ServerConfig`s that share one certificate resolver, one session cache and one
/// ticketer, so a bucket moving between configs, or a certificate reload, costs nothing at
/// the connection level.
pub struct ConfigFactory {
    resolver: Arc<CertResolver>,
    base: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
    endpoint: Arc<ServerConfig>,
}

impl std::fmt::Debug for ConfigFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFactory")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl ConfigFactory {
    /// A factory over `resolver`, with the endpoint config ([`PolicyKey::ALL`]) built.
    pub fn new(resolver: Arc<CertResolver>) -> Result<Self, ConfigError> {
        let ticketer =
            tlsfleet_policy::tls::ticketer().map_err(|e| ConfigError::Rustls(e.to_string()))?;
        let base = Arc::new(tlsfleet_policy::tls::provider());
        let sessions: Arc<dyn StoresServerSessions> =
            ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        let endpoint = build(&resolver, &base, &sessions, &ticketer, PolicyKey::ALL)?;
        Ok(Self {
            resolver,
            base,
            sessions,
            ticketer,
            endpoint,
        })
    }

    /// The config for the bare domain, a missing SNI and buckets without a policy.
    pub fn endpoint(&self) -> &Arc<ServerConfig> {
        &self.endpoint
    }

    /// The shared certificate resolver.
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.resolver
    }

    /// Whether the current certificate can serve `key`. rustls would accept such a config and
    /// only fail each handshake, so this is checked here, explicitly.
    ///
    /// A key whose TLS 1.2 part needs the other key type but which also enables TLS 1.3 is
    /// accepted: what is served (TLS 1.3 only) is tighter than the policy, never looser.
    pub fn check(&self, key: PolicyKey) -> Result<(), ConfigError> {
        if !key.serves_anything() {
            return Err(ConfigError::Empty);
        }
        if key.allows_version(ServedVersion::Tls13)
            && key
                .suites()
                .iter()
                .any(|s| s.version() == ServedVersion::Tls13)
        {
            return Ok(());
        }
        let have = self.resolver.key_kind();
        let tls12: Vec<_> = key
            .suites()
            .into_iter()
            .filter(|s| s.version() == ServedVersion::Tls12)
            .collect();
        let usable = tls12.iter().any(|s| match s.requires_ecdsa() {
            Some(ecdsa) => ecdsa == (have == CertKeyType::Ecdsa),
            None => true,
        });
        if usable {
            Ok(())
        } else {
            let needed = match have {
                CertKeyType::Ecdsa => "ECDHE-RSA",
                CertKeyType::Rsa => "ECDHE-ECDSA",
            };
            Err(ConfigError::KeyTypeMismatch {
                needed,
                have: have.as_str(),
            })
        }
    }

    /// A new config for `key` after [`ConfigFactory::check`]; callers share it per key.
    pub fn build(&self, key: PolicyKey) -> Result<Arc<ServerConfig>, ConfigError> {
        self.check(key)?;
        if key == PolicyKey::ALL {
            return Ok(self.endpoint.clone());
        }
        build(
            &self.resolver,
            &self.base,
            &self.sessions,
            &self.ticketer,
            key,
        )
    }
}

fn build(
    resolver: &Arc<CertResolver>,
    base: &CryptoProvider,
    sessions: &Arc<dyn StoresServerSessions>,
    ticketer: &Arc<dyn ProducesTickets>,
    key: PolicyKey,
) -> Result<Arc<ServerConfig>, ConfigError> {
    // Invariant 2 (nothing older than TLS 1.2, only AEAD suites) holds by construction: the
    // provider serves nothing else, and the key narrows it further.
    let provider = Arc::new(tls::narrowed_provider(key, base));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&tls::protocol_versions(key))
        .map_err(|e| ConfigError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.session_storage = sessions.clone();
    config.ticketer = ticketer.clone();
    Ok(Arc::new(config))
}
