//! Failures and the exit code each one maps to (documented in `--help` and the README).

use std::{fmt, time::Duration};

use tonic::{Code, Status};

/// Exit codes. Clap exits with 2 by itself on usage errors; [`Exit::Usage`] is the same code
/// for usage errors only found after parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Anything not below.
    Other = 1,
    /// Bad command line or local setup.
    Usage = 2,
    /// The control plane refused the request's content.
    InvalidArgument = 3,
    /// Unauthenticated or permission denied.
    Denied = 4,
    /// No connection, the server or its store is down, or the deadline passed.
    Unavailable = 5,
    /// `--wait`: the rollout did not complete within `--timeout`.
    RolloutIncomplete = 6,
    /// `--wait`: an agent NACKed the revision.
    RolloutFailed = 7,
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The command line or local setup is wrong (no key, unreadable CA file...).
    Usage(String),
    /// No connection to the control plane could be made.
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    /// A connection or call took longer than `--timeout`.
    Timeout { what: String, after: Duration },
    /// The control plane answered a call with an error.
    Rpc {
        method: &'static str,
        status: Status,
    },
    /// The control plane answered something this CLI cannot use.
    BadAnswer(String),
    /// `--wait`: not every selected agent enforced `revision` within `after`.
    RolloutIncomplete {
        revision: i64,
        after: Duration,
        enforcing: usize,
        /// The agents still pending (empty with `total` 0: no agent was selected).
        pending: Vec<String>,
        total: u32,
    },
    /// `--wait`: agents NACKed `revision`: (node, its errors as "bucket: reason").
    RolloutFailed {
        revision: i64,
        failed: Vec<(String, Vec<String>)>,
    },
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) => Exit::Usage,
            Self::Connect { .. } | Self::Timeout { .. } => Exit::Unavailable,
            Self::Rpc { status, .. } if is_transport_failure(status) => Exit::Unavailable,
            Self::Rpc { status, .. } => exit_for_code(status.code()),
            Self::BadAnswer(_) => Exit::Other,
            Self::RolloutIncomplete { .. } => Exit::RolloutIncomplete,
            Self::RolloutFailed { .. } => Exit::RolloutFailed,
        }
    }
}

/// Names listed in one error message, at most (then "and N more").
const NAMES_SHOWN: usize = 20;

fn names(all: &[String]) -> String {
    let mut out = all
        .iter()
        .take(NAMES_SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > NAMES_SHOWN {
        out.push_str(&format!(" and {} more", all.len() - NAMES_SHOWN));
    }
    out
}

/// A call that failed below gRPC (the connection broke, e.g. the server refused this client's
/// certificate after the TLS 1.3 handshake): tonic reports it as `Unknown` with a source, or
/// as `Cancelled` when the connection went away mid-call (the CLI itself never cancels).
fn is_transport_failure(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unknown => std::error::Error::source(status).is_some(),
        Code::Cancelled => true,
        _ => false,
    }
}

fn exit_for_code(code: Code) -> Exit {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            Exit::InvalidArgument
        }
        Code::Unauthenticated | Code::PermissionDenied => Exit::Denied,
        Code::Unavailable | Code::DeadlineExceeded => Exit::Unavailable,
        _ => Exit::Other,
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(msg) => f.write_str(msg),
            Self::Connect { url, source } => {
                write!(
                    f,
                    "cannot connect to the control plane at {url}: {}",
                    chain(source)
                )
            }
            Self::Timeout { what, after } => {
                write!(
                    f,
                    "{what} timed out after {}s (see --timeout)",
                    after.as_secs()
                )
            }
            Self::Rpc { method, status } if is_transport_failure(status) => {
                write!(
                    f,
                    "{method}: connection to the control plane failed: {}",
                    chain(status)
                )
            }
            Self::Rpc { method, status } => {
                let msg = status.message();
                let (what, hint) = match status.code() {
                    Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                        ("refused", "")
                    }
                    Code::Unauthenticated => (
                        "authentication failed",
                        " (check TLSFLEET_ACCESS_KEY_ID/TLSFLEET_ACCESS_KEY_SECRET and this \
                         machine's clock)",
                    ),
                    Code::PermissionDenied => (
                        "permission denied",
                        " (the key lacks the grant for this call)",
                    ),
                    Code::Unavailable => ("control plane unavailable", ""),
                    Code::DeadlineExceeded => ("deadline exceeded", " (see --timeout)"),
                    Code::Unimplemented => (
                        "not implemented by this control plane",
                        " (is it older than the CLI?)",
                    ),
                    _ => ("failed", ""),
                };
                let code = format!("{:?}", status.code());
                if msg.is_empty() {
                    write!(f, "{method}: {what} [{code}]{hint}")
                } else {
                    write!(f, "{method}: {what}: {msg} [{code}]{hint}")
                }
            }
            Self::BadAnswer(msg) => write!(f, "unexpected answer from the control plane: {msg}"),
            Self::RolloutIncomplete {
                revision,
                after,
                total: 0,
                ..
            } => write!(
                f,
                "revision {revision}: no agent matched within {} (see --selector, and \
                 `tlsfleetctl agents`)",
                human_duration(*after)
            ),
            Self::RolloutIncomplete {
                revision,
                after,
                enforcing,
                pending,
                total,
            } => write!(
                f,
                "revision {revision}: {enforcing} of {total} agents enforcing after {}; \
                 still pending: {}",
                human_duration(*after),
                names(pending)
            ),
            Self::RolloutFailed { revision, failed } => {
                write!(f, "revision {revision}: refused (NACKed) by ")?;
                for (i, (node, errors)) in failed.iter().take(NAMES_SHOWN).enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{node} ({})", errors.join(", "))?;
                }
                if failed.len() > NAMES_SHOWN {
                    write!(f, " and {} more", failed.len() - NAMES_SHOWN)?;
                }
                Ok(())
            }
        }
    }
}

/// `12 ms`, `1.5s`, `2m 5s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{} ms", d.as_millis())
    } else if secs >= 60 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect { source, .. } => Some(source),
            Self::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// tonic's transport error says only "transport error"; the cause is further down, and some
/// layers repeat their source's message, printed once here.
fn chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        let msg = e.to_string();
        if parts.last() != Some(&msg) {
            parts.push(msg);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_documented_exit_codes() {
        let exit = |code| {
            CliError::Rpc {
                method: "Put",
                status: Status::new(code, "x"),
            }
            .exit()
        };
        assert_eq!(exit(Code::InvalidArgument), Exit::InvalidArgument);
        assert_eq!(exit(Code::FailedPrecondition), Exit::InvalidArgument);
        assert_eq!(exit(Code::Unauthenticated), Exit::Denied);
        assert_eq!(exit(Code::PermissionDenied), Exit::Denied);
        assert_eq!(exit(Code::Unavailable), Exit::Unavailable);
        assert_eq!(exit(Code::DeadlineExceeded), Exit::Unavailable);
        assert_eq!(exit(Code::Internal), Exit::Other);
        assert_eq!(exit(Code::NotFound), Exit::Other);
        assert_eq!(exit(Code::Cancelled), Exit::Unavailable);
        assert_eq!(CliError::Usage("x".into()).exit() as u8, 2);
        let timeout = CliError::Timeout {
            what: "Get".into(),
            after: Duration::from_secs(3),
        };
        assert_eq!(timeout.exit() as u8, 5);
        assert_eq!(CliError::BadAnswer("x".into()).exit() as u8, 1);
    }

    #[test]
    fn messages_name_the_call_and_the_server_reason() {
        let err = CliError::Rpc {
            method: "Put",
            status: Status::invalid_argument("no cipher suite left for TLSv1.3"),
        };
        assert_eq!(
            err.to_string(),
            "Put: refused: no cipher suite left for TLSv1.3 [InvalidArgument]"
        );
        let err = CliError::Rpc {
            method: "Get",
            status: Status::permission_denied(""),
        };
        assert_eq!(
            err.to_string(),
            "Get: permission denied [PermissionDenied] (the key lacks the grant for this call)"
        );
    }
}
