//! The agent's certificate: loaded from `--cert`/`--key` PEM files, served to every
//! `ServerConfig` through one shared resolver, and reloaded when the files change.
//!
//! Every per-policy `ServerConfig` holds the same [`CertResolver`], so a reload swaps one
//! pointer: no config is rebuilt, live connections keep the key they handshook with, and
//! the next handshake of any bucket presents the new certificate.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni},
    sign::CertifiedKey,
    SignatureAlgorithm,
};
use tokio_util::sync::CancellationToken;

use tlsfleet_policy::CertKeyType;

/// Why a certificate/key pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Pem { what: &'static str, message: String },
    #[error("no certificate in the certificate file")]
    NoCertificate,
    #[error("the private key does not fit the certificate: {0}")]
    Key(rustls::Error),
    #[error("the certificate does not cover {name}: {source}")]
    NameNotCovered { name: String, source: rustls::Error },
    #[error("unsupported key algorithm {0:?}: expected ECDSA, Ed25519 or RSA")]
    UnsupportedKey(SignatureAlgorithm),
}

/// The signature family of a key, which decides the TLS 1.2 suites it can serve (TLS 1.3
/// suites do not depend on it): ECDSA or Ed25519 serve `ECDHE-ECDSA-*`, RSA `ECDHE-RSA-*`.
fn key_type(key: &CertifiedKey) -> Result<CertKeyType, CertError> {
    match key.key.algorithm() {
        SignatureAlgorithm::ECDSA | SignatureAlgorithm::ED25519 => Ok(CertKeyType::Ecdsa),
        SignatureAlgorithm::RSA => Ok(CertKeyType::Rsa),
        other => Err(CertError::UnsupportedKey(other)),
    }
}

struct Loaded {
    key: Arc<CertifiedKey>,
    kind: CertKeyType,
    /// The end-entity certificate's notAfter (Unix seconds; 0 if it does not parse as X.509).
    not_after: i64,
}

/// Serves the current certificate for every handshake (one lock-free pointer load).
pub struct CertResolver {
    current: ArcSwap<Loaded>,
    domains: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("kind", &self.key_kind())
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Parses a PEM chain (end-entity first) and a PEM private key (PKCS#8, PKCS#1 or SEC1),
    /// checks that they match and that the chain covers each domain and `*.<domain>`.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        domains: &[String],
    ) -> Result<Self, CertError> {
        let provider = Arc::new(tlsfleet_policy::tls::provider());
        let loaded = parse(cert_pem, key_pem, domains, &provider)?;
        Ok(Self {
            current: ArcSwap::from_pointee(loaded),
            domains: domains.to_vec(),
            provider,
        })
    }

    /// [`CertResolver::from_pem`] on the contents of two files.
    pub fn from_files(cert: &Path, key: &Path, domains: &[String]) -> Result<Self, CertError> {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        Self::from_pem(&cert_pem, &key_pem, domains)
    }

    /// Replaces the served certificate if the new pair passes every check of
    /// [`CertResolver::from_pem`]; on error the current one stays.
    pub fn replace_from_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), CertError> {
        let loaded = parse(cert_pem, key_pem, &self.domains, &self.provider)?;
        let previous = self.key_kind();
        if loaded.kind != previous {
            // Configs were checked against the old kind; the table re-checks at the next apply.
            tracing::warn!(
                from = previous.as_str(),
                to = loaded.kind.as_str(),
                "certificate key type changed: TLS 1.2 policies limited to the old type's \
                 suites can no longer be negotiated"
            );
        }
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// The certificate currently served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load().key.clone()
    }

    /// The signature family of the current key.
    pub fn key_kind(&self) -> CertKeyType {
        self.current.load().kind
    }

    /// When the served certificate expires (its notAfter, Unix seconds).
    pub fn not_after_unix(&self) -> i64 {
        self.current.load().not_after
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse(
    cert_pem: &[u8],
    key_pem: &[u8],
    domains: &[String],
    provider: &CryptoProvider,
) -> Result<Loaded, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what: "certificate file",
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::Pem {
        what: "key file",
        message: e.to_string(),
    })?;
    let not_after = chain
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map_or(0, |(_, cert)| cert.validity().not_after.timestamp());
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(CertError::Key)?;
    let kind = key_type(&certified)?;
    for domain in domains {
        for name in [domain.clone(), format!("tlsfleet-probe.{domain}")] {
            // rustls' own SNI resolver checks the end-entity certificate's names on `add`.
            ResolvesServerCertUsingSni::new()
                .add(&name, certified.clone())
                .map_err(|source| CertError::NameNotCovered {
                    name: if name == *domain {
                        name
                    } else {
                        format!("*.{domain}")
                    },
                    source,
                })?;
        }
    }
    Ok(Loaded {
        key: Arc::new(certified),
        kind,
        not_after,
    })
}

/// The stamps (modification time, length) of the certificate and key files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamps(Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

impl FileStamps {
    /// The files' stamps now.
    pub async fn of(cert: &Path, key: &Path) -> Self {
        Self(stamp(cert).await, stamp(key).await)
    }
}

/// Polls the files' metadata every `interval` and reloads the resolver when either differs
/// from `loaded` (the stamps of what is served); a broken new pair is logged and the served
/// certificate kept. Ends on `shutdown`.
pub async fn watch(
    resolver: Arc<CertResolver>,
    cert: PathBuf,
    key: PathBuf,
    loaded: FileStamps,
    interval: Duration,
    on_reload: impl Fn(bool) + Send,
    shutdown: CancellationToken,
) {
    let mut seen = loaded;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = FileStamps::of(&cert, &key).await;
        if now == seen {
            continue;
        }
        // Remember the stamps even when the reload fails: a half-written pair is retried at
        // the next change of either file instead of being logged every tick.
        seen = now;
        let result = match (tokio::fs::read(&cert).await, tokio::fs::read(&key).await) {
            (Ok(c), Ok(k)) => resolver.replace_from_pem(&c, &k),
            (Err(source), _) => Err(CertError::Read {
                path: cert.clone(),
                source,
            }),
            (_, Err(source)) => Err(CertError::Read {
                path: key.clone(),
                source,
            }),
        };
        on_reload(result.is_ok());
        match result {
            Ok(()) => tracing::info!(cert = %cert.display(), "certificate reloaded"),
            Err(e) => tracing::warn!(
                cert = %cert.display(),
                error = %e,
                "certificate files changed but cannot be loaded; still serving the previous one"
            ),
        }
    }
}

/// What identifies a file version without reading it: modification time and length.
async fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
