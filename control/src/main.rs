//! `tlsfleet-control`: parse flags, start, stop on SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use tlsfleet_control::{config::ControlArgs, server::ControlServer};
use tokio_util::sync::CancellationToken;

/// mimalloc: every request allocates and frees many small buffers (HTTP, XML, JSON, etcd
/// messages), and the system allocator spent about a quarter of the server's CPU on them
/// under concurrent PUTs (BENCHMARKS.md, "Control plane against raw etcd").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = tlsfleet_policy::tls::provider().install_default();
    let args = ControlArgs::parse();
    let server = ControlServer::bind(args)
        .await
        .context("starting tlsfleet-control")?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            shutdown.cancel();
        }
    });
    server
        .run(shutdown)
        .await
        .context("tlsfleet-control stopped with an error")
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
