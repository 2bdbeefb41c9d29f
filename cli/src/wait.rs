//! Waiting for a rollout: poll `GetRolloutStatus` until every selected agent enforces the
//! revision, an agent refuses it, or the deadline passes. Progress goes to stderr (a bar on a
//! terminal, a line per change otherwise); the result is the command's outcome on stdout.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use tlsfleet_proto::v1::{GetRolloutStatusRequest, GetRolloutStatusResponse};

use crate::{
    client::Client,
    error::{CliError, Exit},
};

/// Time between two polls.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// How a wait ended well.
#[derive(Clone, Debug, PartialEq)]
pub struct Waited {
    pub status: GetRolloutStatusResponse,
    /// From the start of the wait to the poll that saw every agent enforcing.
    pub elapsed: Duration,
}

impl Waited {
    /// From the write committed (`committed_unix_ms`, the control server's clock) to the last
    /// agent's acknowledgement (its control server's clock); `None` if either is unknown.
    pub fn write_to_last_ack(&self, committed_unix_ms: i64) -> Option<Duration> {
        let ms = self
            .status
            .last_ack_unix_ms
            .checked_sub(committed_unix_ms)?;
        (committed_unix_ms > 0 && self.status.last_ack_unix_ms > 0)
            .then(|| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }
}

/// Waits for `revision` at the agents `selector` picks, for at most `timeout`.
pub async fn until_enforced(
    client: &Client,
    revision: i64,
    selector: &[(String, String)],
    timeout: Duration,
) -> Result<Waited, CliError> {
    let request = GetRolloutStatusRequest {
        revision,
        selector: selector.iter().cloned().collect(),
        ..Default::default()
    };
    until(client, request, timeout).await
}

/// [`until_enforced`] when `asked` (`--wait`), else nothing.
pub async fn if_asked(
    asked: bool,
    client: &Client,
    revision: i64,
    selector: &[(String, String)],
    timeout: Duration,
) -> Result<Option<Waited>, CliError> {
    if !asked {
        return Ok(None);
    }
    until_enforced(client, revision, selector, timeout)
        .await
        .map(Some)
}

/// Waits until the rollout `request` asks about is complete, for at most `timeout`.
pub async fn until(
    client: &Client,
    mut request: GetRolloutStatusRequest,
    timeout: Duration,
) -> Result<Waited, CliError> {
    let start = Instant::now();
    let mut progress = Progress::new(request.revision);
    let mut last: Option<GetRolloutStatusResponse> = None;
    loop {
        match client.rollout_status(request.clone()).await {
            Ok(status) => {
                // "The current revision" is fixed at the first answer: later writes do not
                // move the goal.
                request.revision = status.revision;
                progress.show(&status);
                if !status.failed.is_empty() {
                    progress.finish();
                    return Err(refused(&status));
                }
                if status.agents_total > 0 && status.enforcing.len() == status.agents_total as usize
                {
                    progress.finish();
                    return Ok(Waited {
                        status,
                        elapsed: start.elapsed(),
                    });
                }
                last = Some(status);
            }
            // A control server restarting, or failing over: ask again until the deadline.
            Err(e) if e.exit() == Exit::Unavailable => progress.note(&e.to_string()),
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        }
        if start.elapsed() + POLL_EVERY > timeout {
            progress.finish();
            let last = last.unwrap_or_default();
            return Err(CliError::RolloutIncomplete {
                revision: request.revision,
                after: start.elapsed(),
                enforcing: last.enforcing.len(),
                pending: last.pending,
                total: last.agents_total,
            });
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn refused(status: &GetRolloutStatusResponse) -> CliError {
    let mut failed: Vec<(String, Vec<String>)> = status
        .failures
        .iter()
        .map(|a| {
            let errors = a
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.bucket, e.reason))
                .collect();
            (a.node_id.clone(), errors)
        })
        .collect();
    // Beyond the agents the server detailed, the rest by name.
    failed.extend(
        status
            .failed
            .iter()
            .filter(|n| !status.failures.iter().any(|a| &a.node_id == *n))
            .map(|n| (n.clone(), vec![])),
    );
    CliError::RolloutFailed {
        revision: status.revision,
        failed,
    }
}

/// Progress on stderr.
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines {
        revision: i64,
        last: Option<(usize, usize, usize, u32)>,
    },
}

impl Progress {
    fn new(revision: i64) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} enforcing {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(if revision == 0 {
                "current revision".to_owned()
            } else {
                format!("revision {revision}")
            });
            bar.enable_steady_tick(Duration::from_millis(200));
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                revision,
                last: None,
            }
        }
    }

    fn show(&mut self, s: &GetRolloutStatusResponse) {
        let counts = (
            s.enforcing.len(),
            s.pending.len(),
            s.failed.len(),
            s.agents_total,
        );
        match self {
            Progress::Bar(bar) => {
                bar.set_prefix(format!("revision {}", s.revision));
                bar.set_length(u64::from(s.agents_total));
                bar.set_position(counts.0 as u64);
                bar.set_message(format!("· {} pending · {} failed", counts.1, counts.2));
            }
            Progress::Lines { revision, last } => {
                *revision = s.revision;
                if *last != Some(counts) {
                    eprintln!(
                        "revision {}: {} of {} agents enforcing, {} pending, {} failed",
                        s.revision, counts.0, counts.3, counts.1, counts.2
                    );
                    *last = Some(counts);
                }
            }
        }
    }

    fn note(&mut self, what: &str) {
        match self {
            Progress::Bar(bar) => bar.set_message(format!("· retrying: {what}")),
            Progress::Lines { revision, .. } => {
                eprintln!("revision {revision}: {what}; retrying");
            }
        }
    }

    fn finish(&mut self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
