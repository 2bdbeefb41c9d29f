//! The index's one writer: read the store's identity, list, watch from the listed revision,
//! and relist when the history it needs was compacted or resume when the watch broke
//! (kube-rs' watcher, in small). Retries wait on a jittered backoff.

use std::time::Duration;

use futures::StreamExt;
use tlsfleet_net::Backoff;
use tracing::{info, warn};

use super::Inner;
use crate::store::{Revision, StoreError};

/// Retry delays: from 50 ms doubling to 2 s, jittered, never under [`MIN_RETRY`].
fn backoff() -> Backoff {
    Backoff::new(MIN_RETRY, Duration::from_secs(2))
}

const MIN_RETRY: Duration = Duration::from_millis(50);

async fn wait(backoff: &mut Backoff) {
    tokio::time::sleep(backoff.next_delay().max(MIN_RETRY)).await;
}

async fn list(inner: &Inner) -> Result<(Revision, super::state::Listing), StoreError> {
    let mut listing = super::state::Listing::default();
    let revision = inner
        .store
        .list_pages(&mut |page| listing.add(&page))
        .await?;
    Ok((revision, listing))
}

/// Runs until the future is dropped (the index's shutdown).
pub(super) async fn run(inner: &Inner) {
    let mut backoff = backoff();
    while inner.store_id.get().is_none() {
        match inner.store.identity().await {
            Ok(id) => {
                info!(store_id = %id, "store identity");
                let _ = inner.store_id.set(id);
            }
            Err(e) => {
                warn!(error = %e, "reading the store identity failed; retrying");
                wait(&mut backoff).await;
            }
        }
    }
    backoff.reset();
    let mut resume: Option<Revision> = None;
    loop {
        let revision = match resume {
            Some(rev) => rev,
            // Decoded page by page: a million raw values are never held at once.
            None => match list(inner).await {
                Ok((revision, listing)) => {
                    inner.replace_all(revision, listing);
                    revision
                }
                Err(e) => {
                    warn!(error = %e, "listing policies failed; retrying");
                    wait(&mut backoff).await;
                    continue;
                }
            },
        };
        let mut stream = match inner.store.watch(revision).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "watching policies failed; relisting");
                resume = None;
                wait(&mut backoff).await;
                continue;
            }
        };
        backoff.reset();
        let mut relist = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(batch) => inner.apply(batch.revision, batch.events),
                Err(StoreError::Compacted { .. }) => {
                    info!("watch history compacted; relisting");
                    relist = true;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "policy watch broke; resuming");
                    break;
                }
            }
        }
        resume = if relist {
            None
        } else {
            Some(inner.lock().view().revision())
        };
        wait(&mut backoff).await;
    }
}
