//! `tlsfleet-agent`: parse the flags, install the crypto provider, start the data plane and the
//! sync client, run until SIGINT or SIGTERM, map the outcome to an exit code.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context;
use tlsfleet_agent::{
    cache::Cache,
    config::Args,
    metrics::Metrics,
    readiness::{Readiness, SyncState},
    server::DataPlane,
    sync::SyncClient,
    table::PolicyTable,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// mimalloc: a handshake allocates and frees a few dozen small buffers, and the system
/// allocator spent about 9 % of the agent's CPU on them (BENCHMARKS.md, "Handshakes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let sources = tlsfleet_settings::Sources {
        config_env: "TLSFLEET_AGENT_CONFIG",
        default_file: None,
        print_config: true,
    };
    let Some((args, _logs)) = tlsfleet_settings::start::<Args>(&sources, |a| a.log_format) else {
        return ExitCode::SUCCESS;
    };
    // Fails only if a provider is already installed, which is then the one in use.
    let _ = tlsfleet_policy::tls::provider().install_default();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let sync_config = args.sync()?;
    let metrics = Arc::new(Metrics::new());
    let plane = DataPlane::bind(args.data_plane(), metrics.clone())
        .await
        .context("starting the data plane")?;
    let table = plane.table();
    let readiness = plane.readiness();
    let sync = SyncClient::new(
        sync_config,
        table.clone(),
        metrics.clone(),
        readiness.clone(),
    )?
    .with_usage(plane.usage());
    let cache = args.cache_dir.map(Cache::new);
    if let Some(cache) = &cache {
        // Before the listener runs, so no handshake is refused for want of a table we have.
        let (cache, table, metrics) = (cache.clone(), table.clone(), metrics.clone());
        let readiness = readiness.clone();
        tokio::task::spawn_blocking(move || restore(&cache, &table, &metrics, &readiness)).await?;
    }
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let admin = plane
        .admin_addr()
        .map_or_else(|| "none".to_owned(), |a| a.to_string());
    info!(
        "tlsfleet-agent listening on {} (admin {admin})",
        plane.local_addr()
    );

    let shutdown = CancellationToken::new();
    let sync = tokio::spawn(sync.run(cache, shutdown.clone()));
    let signals = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = sigterm.recv() => info!("SIGTERM: shutting down"),
                _ = sigint.recv() => info!("SIGINT: shutting down"),
                _ = shutdown.cancelled() => {}
            }
            shutdown.cancel();
        }
    });
    let served = plane.run(shutdown.clone()).await;
    // The data plane also returns on its own errors: stop the rest either way.
    shutdown.cancel();
    let (synced, signalled) = tokio::join!(sync, signals);
    served.context("data plane")?;
    synced.context("sync task")?;
    signalled.context("signal task")?;
    info!("stopped");
    Ok(())
}

/// Applies the last-known-good cache, if any. A cache that cannot be read is reported and
/// ignored: the agent then waits for its first snapshot, refusing TLS until then.
fn restore(cache: &Cache, table: &PolicyTable, metrics: &Metrics, readiness: &Readiness) {
    let snapshot = match cache.load() {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => {
            info!(dir = %cache.dir().display(), "no last-known-good cache yet");
            return;
        }
        Err(e) => {
            error!(error = %e, "ignoring the last-known-good cache");
            return;
        }
    };
    let (revision, count) = (snapshot.revision, snapshot.policies.len());
    let refused: Vec<tlsfleet_agent::table::BucketError> = snapshot
        .refused
        .iter()
        .map(|b| tlsfleet_agent::table::BucketError {
            bucket: b.to_string(),
            reason: "refused when cached".to_owned(),
        })
        .collect();
    let default = snapshot.default.map_or(
        tlsfleet_agent::table::DefaultChange::Clear,
        tlsfleet_agent::table::DefaultChange::Set,
    );
    let outcome = table.apply_snapshot_refusing(revision, snapshot.policies, &refused, default);
    table.set_store_id(snapshot.store_id.unwrap_or_default());
    for e in &outcome.errors {
        warn!(bucket = %e.bucket, reason = %e.reason, "cached policy cannot be served");
    }
    metrics.set_applied_revision(revision);
    readiness.set_sync_state(SyncState::ServingFromCache);
    info!(
        revision,
        policies = count,
        "serving from cache at revision {revision}"
    );
}
