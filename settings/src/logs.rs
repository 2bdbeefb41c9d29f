//! `--log-format`: how the servers write their logs (to stderr, filtered by `RUST_LOG`,
//! `info` by default).
//!
//! Lines gather in a bounded buffer that a thread of its own writes to stderr a few
//! milliseconds after a batch's first line ([`writer`]): a request never waits on stderr nor
//! makes a system call for its line; when stderr stops taking lines (a full pipe), further
//! lines are dropped and counted, not waited for. The returned guard writes what waits when
//! the binary drops it on the way out.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, colored on a terminal.
    #[default]
    Text,
    /// For pipelines: one JSON object per line (`timestamp`, `level`, `target`, `message`
    /// and the event's fields at the top level, `span` and `spans` for its context).
    Json,
}

pub mod writer;

/// Writes the waiting lines when dropped: hold it until the binary exits.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] writer::Flusher<std::io::Stderr>);

/// Installs the process's log writer. Call once, before anything logs.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = writer::spawn(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    LogGuard(guard)
}
