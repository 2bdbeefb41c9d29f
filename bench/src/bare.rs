//! The bare server the agent is measured against: tokio-rustls with one static config (every
//! version, the provider's suites, the same session cache and ticketer as the agent), one
//! fixed answer per connection. What a handshake costs with nothing of tlsfleet around it.
//! Built twice: in `tlsfleet-bench` with the workspace's provider, and with ring in
//! `bench/bare-ring` (a workspace of its own, so that the main one keeps one provider).

use std::{net::SocketAddr, path::Path, sync::Arc};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ProducesTickets, ServerSessionMemoryCache},
    ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

/// Sessions the server remembers (as the agent).
const SESSIONS: usize = 20_000;

/// The static config for `cert` (chain) and `key`, with `provider` and its `ticketer`.
pub fn config(
    cert: &Path,
    key: &Path,
    provider: CryptoProvider,
    ticketer: Arc<dyn ProducesTickets>,
) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.session_storage = ServerSessionMemoryCache::new(SESSIONS);
    cfg.ticketer = ticketer;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serves on `listen` until the process is killed: a handshake, then one fixed answer to
/// whatever request comes (none: the client just closes).
pub async fn serve(listen: SocketAddr, cfg: ServerConfig) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut buf = [0u8; 4096];
            if matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            }
        });
    }
}
