//! The log writer: lines are appended to a bounded buffer in memory, and a thread of its own
//! writes what gathered to stderr, a few milliseconds after the first line of a batch (as
//! nginx's `access_log ... buffer= flush=`).
//!
//! A request's thread never makes a system call for its line: it takes an uncontended mutex,
//! copies the line, and wakes the writer only when its line is the first of a batch. With a
//! queue handed to a thread per line (tracing-appender's, before), each line cost a wake-up
//! of the writer thread, its spinning and a `write` of a few lines: a tenth of the control
//! server's CPU at 40,000 logged GETs a second.
//!
//! * At most [`BUFFER_BYTES`] wait; if the sink stops taking them (a full pipe), further
//!   lines are dropped, not waited for, and a line saying how many follows when it drains.
//! * A line waits at most [`FLUSH_DELAY`] (more only while the sink blocks); a batch is
//!   written early when it reaches [`HIGH_WATER_BYTES`].
//! * Idle, the thread sleeps until a line comes: no timer.
//! * Dropping the [`Flusher`] writes what waits (for at most [`CLOSE_TIMEOUT`]); lines after
//!   that are written directly.

use std::{
    io::Write,
    sync::{mpsc, Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Bytes of lines waiting at most; beyond, lines are dropped and counted.
pub const BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// How long the first line of a batch waits for others, at most.
pub const FLUSH_DELAY: Duration = Duration::from_millis(5);
/// A batch this large is written without waiting for [`FLUSH_DELAY`].
pub const HIGH_WATER_BYTES: usize = 256 * 1024;
/// How long dropping the [`Flusher`] waits for the last lines to be written.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    dropped: u64,
    closed: bool,
}

struct Shared<W> {
    state: Mutex<State>,
    wake: Condvar,
    /// The sink, for lines written after close (and by the writer thread).
    sink: Mutex<W>,
}

impl<W> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writing side (a `MakeWriter`; each event writes through a reference, nothing cloned).
pub struct Buffered<W> {
    shared: Arc<Shared<W>>,
}

impl<W> Clone for Buffered<W> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// Writes the waiting lines and stops the writer thread when dropped.
pub struct Flusher<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    done: Option<mpsc::Receiver<()>>,
}

/// A writer of lines to `sink` and the guard that flushes it. If the thread cannot be
/// started, lines are written directly as they come.
pub fn spawn<W: Write + Send + 'static>(sink: W) -> (Buffered<W>, Flusher<W>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        sink: Mutex::new(sink),
    });
    let (done_tx, done) = mpsc::channel();
    let thread_shared = shared.clone();
    let started = std::thread::Builder::new()
        .name("tlsfleet-log-writer".into())
        .spawn(move || {
            run(&thread_shared);
            let _ = done_tx.send(());
        });
    if started.is_err() {
        shared.lock().closed = true;
    }
    (
        Buffered {
            shared: shared.clone(),
        },
        Flusher {
            shared,
            done: started.is_ok().then_some(done),
        },
    )
}

fn run<W: Write>(shared: &Shared<W>) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.lines.is_empty() && state.dropped == 0 && !state.closed {
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        // Give the batch's first line company, unless closing or the batch is large.
        let deadline = Instant::now() + FLUSH_DELAY;
        while !state.closed && state.lines.len() < HIGH_WATER_BYTES {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = shared
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        std::mem::swap(&mut batch, &mut state.lines);
        let dropped = std::mem::take(&mut state.dropped);
        let closed = state.closed;
        drop(state);
        let mut sink = shared.sink.lock().unwrap_or_else(|p| p.into_inner());
        // A sink that fails (stderr closed) loses the batch: there is nowhere to say so.
        let _ = sink.write_all(&batch);
        if dropped > 0 {
            let _ = writeln!(
                sink,
                "tlsfleet: {dropped} log lines dropped: the log output did not keep up"
            );
        }
        let _ = sink.flush();
        drop(sink);
        batch.clear();
        if batch.capacity() > 4 * HIGH_WATER_BYTES {
            batch.shrink_to(HIGH_WATER_BYTES);
        }
        if closed {
            return;
        }
    }
}

impl<W: Write> Write for &Buffered<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        if state.closed {
            drop(state);
            let mut sink = self.shared.sink.lock().unwrap_or_else(|p| p.into_inner());
            return sink.write_all(line).map(|()| line.len());
        }
        let before = state.lines.len();
        if before + line.len() > BUFFER_BYTES {
            state.dropped += 1;
            return Ok(line.len());
        }
        state.lines.extend_from_slice(line);
        let after = state.lines.len();
        drop(state);
        // The writer waits for a batch's first line, then for the delay or the high water.
        if before == 0 || (before < HIGH_WATER_BYTES && after >= HIGH_WATER_BYTES) {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Write for Buffered<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        (&*self).write(line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'static> tracing_subscriber::fmt::MakeWriter<'a> for Buffered<W> {
    type Writer = &'a Buffered<W>;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl<W: Write + Send + 'static> Drop for Flusher<W> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(CLOSE_TIMEOUT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, and block.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap_or_else(|p| p.into_inner());
            self.bytes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.bytes.lock().unwrap_or_else(|p| p.into_inner()))
                .into_owned()
        }
    }

    fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let sink = Sink::default();
        let (mut w, _flusher) = spawn(sink.clone());
        w.write_all(b"one\n").expect("write");
        eventually("the line", || sink.text() == "one\n");
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_each_threads_order() {
        let sink = Sink::default();
        let (w, flusher) = spawn(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        w.write_all(format!("t{t} line {i}\n").as_bytes())
                            .expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer");
        }
        drop(flusher);
        let text = sink.text();
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let expected: Vec<String> = (0..5_000).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, expected, "thread {t}'s lines");
        }
        assert_eq!(text.lines().count(), 20_000);
    }

    #[test]
    fn a_stuck_sink_drops_lines_beyond_the_bound_and_says_so() {
        let sink = Sink::default();
        let gate = sink.gate.lock().unwrap_or_else(|p| p.into_inner());
        let (mut w, flusher) = spawn(sink.clone());
        // The first batch is taken by the writer, which then blocks on the sink.
        w.write_all(b"first\n").expect("write");
        eventually("the writer to take the first batch", || {
            w.shared.lock().lines.is_empty()
        });
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let fits = BUFFER_BYTES / line.len();
        for _ in 0..fits + 10 {
            w.write_all(&line).expect("write");
        }
        assert_eq!(w.shared.lock().lines.len(), fits * line.len());
        assert_eq!(
            w.shared.lock().dropped,
            10,
            "the lines beyond the bound are dropped"
        );
        drop(gate);
        drop(flusher);
        let text = sink.text();
        assert!(text.starts_with("first\n"));
        assert!(
            text.contains("log lines dropped: the log output did not keep up"),
            "the drop is reported"
        );
        assert!(
            text.contains("tlsfleet: 10 log lines dropped"),
            "the count is reported"
        );
        let kept = text.lines().filter(|l| l.starts_with('x')).count();
        assert_eq!(kept, fits, "every line within the bound is written");
    }

    #[test]
    fn lines_after_the_flusher_is_dropped_are_written_directly() {
        let sink = Sink::default();
        let (mut w, flusher) = spawn(sink.clone());
        w.write_all(b"before\n").expect("write");
        drop(flusher);
        assert_eq!(sink.text(), "before\n");
        w.write_all(b"after\n").expect("write");
        assert_eq!(sink.text(), "before\nafter\n");
    }
}
