//! Policy swaps during a measurement: one bucket's policy is flipped through the control
//! plane at a fixed interval, so the agent publishes a new table each time while the client
//! resumes its sessions on other buckets (whose policies do not change).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use tlsfleet_proto::{
    signer::{signed_request, AccessKey, Signer},
    v1::{https_config_service_client::HttpsConfigServiceClient, PutRequest},
};
use tlsfleet_testkit::{agent::Agent, control::keys};
use tonic::transport::Channel;

/// How often the swapped bucket's policy changes.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// A thread flipping `bucket` between TLS 1.3 only and TLS 1.2 + 1.3 every [`INTERVAL`].
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<u64>>,
}

impl Swapper {
    fn start(url: &str, bucket: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let url = url.to_owned();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(flip(&url, &bucket, &stop))
            })
        };
        Self { stop, thread }
    }

    /// Stops flipping; how many PUTs were answered.
    fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the swapper thread panicked"))?
    }
}

/// Runs `during` while `bucket` is flipped, then waits until `agent` has applied every flip;
/// what `during` returned and how many flips there were.
pub fn applied_during<T>(
    agent: &Agent,
    url: &str,
    bucket: &str,
    during: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, u64)> {
    let before = agent.applied_revision().unwrap_or(0);
    let swapper = Swapper::start(url, bucket.to_owned());
    let value = during();
    let puts = swapper.stop()?;
    let value = value?;
    let swapped_to = i64::try_from(puts)
        .unwrap_or(i64::MAX)
        .saturating_add(before);
    anyhow::ensure!(
        puts > 0 && agent.wait_revision(swapped_to, Duration::from_secs(10)),
        "the agent did not apply the {puts} swaps (at revision {:?}, from {before})",
        agent.applied_revision()
    );
    Ok((value, puts))
}

async fn flip(url: &str, bucket: &str, stop: &AtomicBool) -> anyhow::Result<u64> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let signer = Signer::new(AccessKey::new(keys::ADMIN.0, keys::ADMIN.1)?);
    let mut admin = HttpsConfigServiceClient::with_interceptor(channel, signer);
    let mut tick = tokio::time::interval(INTERVAL);
    let mut puts = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let versions: &[&str] = if puts.is_multiple_of(2) {
            &["TLSv1.3"]
        } else {
            &["TLSv1.2", "TLSv1.3"]
        };
        admin
            .put(signed_request(PutRequest {
                bucket: bucket.to_owned(),
                config: Some(tlsfleet_testkit::grpc::https_config(versions, &[], &[])),
                allow_downgrade: true,
                ..Default::default()
            }))
            .await
            .with_context(|| format!("PUT {bucket}"))?;
        puts += 1;
    }
    Ok(puts)
}
