//! `--log-format`: how the servers write their logs (to stderr, filtered by `RUST_LOG`,
//! `info` by default).
//!
//! Lines are handed to a writer thread through a queue of [`QUEUE_LINES`] lines, so that a
//! request never waits on stderr; when the queue is full (stderr stopped reading) further
//! lines are dropped and counted, not waited for. The thread writes the lines it finds queued
//! together (up to [`WRITE_BUFFER_BYTES`]) and flushes when the queue is empty, so a line is
//! never held back waiting for others. The returned guard flushes what is queued when the
//! binary drops it on the way out.

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

/// Lines queued for the writer thread, at most.
pub const QUEUE_LINES: usize = 65_536;

/// Bytes of queued lines the writer thread gathers into one write to stderr, at most.
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Flushes the queued lines when dropped: hold it until the binary exits.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// Installs the process's log writer. Call once, before anything logs.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUE_LINES)
        .lossy(true)
        .thread_name("tlsfleet-log-writer")
        // The writer thread writes every line it finds queued, then flushes: one write for
        // a burst of lines, not one each (a write per request line was 7 % of the control
        // server's CPU at 20,000 GETs a second); a line alone is still written at once.
        .finish(std::io::BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            std::io::stderr(),
        ));
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
