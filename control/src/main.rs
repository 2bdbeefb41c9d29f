//! `tlsfleet-control`: read the settings (flags, environment, `--config` file), start, stop
//! on SIGINT/SIGTERM.

use anyhow::Context;
use tlsfleet_control::{config::ControlArgs, server::ControlServer};
use tokio_util::sync::CancellationToken;

/// mimalloc: every request allocates and frees many small buffers (HTTP, XML, JSON, etcd
/// messages), and the system allocator spent about a quarter of the server's CPU on them
/// under concurrent PUTs (BENCHMARKS.md, "Control plane against raw etcd").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let sources = tlsfleet_settings::Sources {
        config_env: "TLSFLEET_CONTROL_CONFIG",
        default_file: None,
        print_config: true,
    };
    let Some((args, _logs)) = tlsfleet_settings::start::<ControlArgs>(&sources, |a| a.log_format)
    else {
        return std::process::ExitCode::SUCCESS;
    };
    let _ = tlsfleet_policy::tls::provider().install_default();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // In the log's own format (a JSON line with --log-format json).
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: ControlArgs) -> anyhow::Result<()> {
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
