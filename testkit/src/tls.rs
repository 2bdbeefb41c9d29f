//! Test certificates (a CA and a leaf for `DOMAIN` and `*.DOMAIN`) and real TLS clients:
//! rustls (in process) and `openssl s_client` (a separate process).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

/// Key algorithm of the agent's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

/// A CA and a leaf signed by it, written as PEM files.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_der: CertificateDer<'static>,
}

impl TestCert {
    /// Writes `tls.crt` (leaf + CA) and `tls.key` into `dir`, for `domain` and `*.domain`.
    pub fn generate(dir: &Path, domain: &str, kind: KeyKind) -> Self {
        TestCa::new().issue(
            dir,
            "tls",
            &[domain.to_owned(), format!("*.{domain}")],
            kind,
        )
    }
}

/// The test CA: one for every test crate, issuing leaves for servers and mTLS clients.
pub struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A leaf in memory: its certificate, its key, and its DER.
#[derive(Clone)]
pub struct Leaf {
    /// The leaf certificate alone (PEM).
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tlsfleet test CA");
        let cert = params.self_signed(&key).expect("ca cert");
        Self { params, key, cert }
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate (DER), for a root store.
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A root store trusting only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der()).expect("the test CA is a valid root");
        roots
    }

    /// Writes the CA certificate as `<dir>/ca.crt`.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.crt");
        std::fs::write(&path, self.cert.pem()).expect("write ca");
        path
    }

    /// A leaf for `names` (DNS names or IPs), with a fresh key of `kind`.
    pub fn leaf(&self, names: &[&str], kind: KeyKind) -> Leaf {
        let leaf_key = match kind {
            KeyKind::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyKind::Rsa2048 => rsa_key_pair(),
        }
        .expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf_params = rcgen::CertificateParams::new(names.clone()).expect("leaf params");
        if let Some(first) = names.first() {
            leaf_params
                .distinguished_name
                .push(rcgen::DnType::CommonName, first.as_str());
        }
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");
        Leaf {
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            der: leaf.der().clone(),
        }
    }

    /// Issues `<name>.crt` (leaf + CA) and `<name>.key` for `names` (DNS names or IPs).
    pub fn issue(&self, dir: &Path, name: &str, names: &[String], kind: KeyKind) -> TestCert {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let leaf = self.leaf(&names, kind);
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, format!("{}{}", leaf.cert_pem, self.cert.pem())).expect("write cert");
        std::fs::write(&key, &leaf.key_pem).expect("write key");
        TestCert {
            cert,
            key,
            ca_der: self.der(),
        }
    }
}

/// rcgen does not generate RSA keys here; the openssl CLI does.
fn rsa_key_pair() -> Result<rcgen::KeyPair, rcgen::Error> {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("the openssl CLI is needed for RSA test keys: apt-get install -y openssl");
    let pem = String::from_utf8(out.stdout).expect("pem");
    rcgen::KeyPair::from_pem(&pem)
}

/// What a rustls test client offers.
#[derive(Clone, Debug)]
pub struct ClientOffer {
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// IANA suite ids to offer; empty = all of the provider's.
    pub suites: Vec<u16>,
    pub alpn: Vec<Vec<u8>>,
}

impl ClientOffer {
    pub fn tls12() -> Self {
        Self {
            versions: vec![&rustls::version::TLS12],
            suites: vec![],
            alpn: vec![b"http/1.1".to_vec()],
        }
    }
    pub fn tls13() -> Self {
        Self {
            versions: vec![&rustls::version::TLS13],
            suites: vec![],
            alpn: vec![b"http/1.1".to_vec()],
        }
    }
    pub fn any() -> Self {
        Self {
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            suites: vec![],
            alpn: vec![b"http/1.1".to_vec()],
        }
    }
    pub fn with_suites(mut self, ids: &[u16]) -> Self {
        self.suites = ids.to_vec();
        self
    }
    pub fn h2(mut self) -> Self {
        self.alpn = vec![b"h2".to_vec()];
        self
    }
}

/// A rustls client connector trusting `ca`.
pub fn connector(ca: &CertificateDer<'static>, offer: &ClientOffer) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("ca");
    let mut provider = tlsfleet_policy::tls::provider();
    if !offer.suites.is_empty() {
        provider
            .cipher_suites
            .retain(|s| offer.suites.contains(&u16::from(s.suite())));
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&offer.versions)
        .expect("client versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = offer.alpn.clone();
    TlsConnector::from(Arc::new(cfg))
}

/// Connects and handshakes with SNI `sni`.
pub async fn handshake(
    addr: std::net::SocketAddr,
    sni: &str,
    ca: &CertificateDer<'static>,
    offer: &ClientOffer,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    connector(ca, offer).connect(name, tcp).await
}

/// [`handshake`] from the local address `from` (e.g. 127.0.0.2: a client of another network
/// as the agent counts them is 127.0.x.0/24 with another x).
pub async fn handshake_from(
    from: std::net::IpAddr,
    addr: std::net::SocketAddr,
    sni: &str,
    ca: &CertificateDer<'static>,
    offer: &ClientOffer,
) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = match from {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(std::net::SocketAddr::new(from, 0))?;
    let tcp = socket.connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    connector(ca, offer).connect(name, tcp).await
}

/// One HTTP/1.1 request on an open (keep-alive) TLS stream: (status, body).
pub async fn http1(
    stream: &mut TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    http1_with(stream, host, path, "").await
}

/// [`http1`] with extra header lines (`"User-Agent: x\r\n"`).
pub async fn http1_with(
    stream: &mut TlsStream<TcpStream>,
    host: &str,
    path: &str,
    headers: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n").as_bytes())
        .await?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `openssl s_client` against `addr` with SNI `sni` and extra flags (e.g. `-tls1_2`,
/// `-cipher X`): whether the handshake completed, and what it printed.
pub fn s_client(addr: std::net::SocketAddr, sni: &str, flags: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-servername")
        .arg(sni)
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client (apt-get install -y openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A completed handshake prints the negotiated cipher; a refused one prints "Cipher is (NONE)"
    // or no session at all.
    let ok = text.contains("New, TLSv1.") && !text.contains("Cipher is (NONE)");
    (ok, text)
}
