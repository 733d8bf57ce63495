//! The command line's log writer: lines are formatted where they are logged and appended to a
//! buffer; a thread of its own writes the buffer out, a batch at a time. A hub logs one line per
//! request, and waking a writer thread for each line (a futex wake, a context switch and a
//! `write` per request) cost a busy hub a tenth of its CPU and put a third thread on the cores
//! every request's path runs on. Here the writer is woken only when the buffer goes from empty to
//! not empty; it then waits [`GATHER`] for more lines before it writes them all at once, so the
//! lines of a busy second go out in a few writes, and an idle hub's writer sleeps.
//!
//! A reader that falls behind (a paused terminal, a stuck pipe) never holds up a request: up to
//! `limit` lines wait for it, and past that the newest are dropped and counted
//! ([`LogFlush::finish`]). Dropping the [`LogFlush`] writes out what is still waiting
//! (waiting at most a second for a stuck reader).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long the writer gathers lines after the first one of a batch arrives.
pub const GATHER: Duration = Duration::from_millis(20);
/// How long dropping the [`LogFlush`] waits for the last lines to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    /// No more lines will come: write what is left and stop.
    closing: bool,
    /// The writer has written everything and stopped.
    finished: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer (a first line, or closing).
    wake: Condvar,
    /// Tells the one dropping the [`LogFlush`] that the writer finished.
    done: Condvar,
    limit: usize,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while appending leaves at worst a half line: still worth writing.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        if pending.closing {
            return;
        }
        if pending.lines >= self.limit {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        pending.lines += 1;
        drop(pending);
        if first {
            self.wake.notify_one();
        }
    }
}

/// Hands out writers of the shared buffer (one per log line, as `tracing_subscriber` asks).
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// What one log line is written through: the line is formatted whole, then appended at once.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared }
    }
}

/// Owns the writer thread; dropping it writes out what is left.
pub struct LogFlush {
    shared: Arc<Shared>,
}

impl LogFlush {
    /// Lines dropped because the reader fell `limit` lines behind.
    #[cfg(test)]
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes out what is left (see `Drop`) and returns how many lines were dropped because the reader fell
    /// `limit` lines behind.
    pub fn finish(self) -> u64 {
        let shared = self.shared.clone();
        drop(self);
        shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.closing = true;
        self.shared.wake.notify_one();
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        while !pending.finished {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            pending = self.shared.done.wait_timeout(pending, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// A writer of `out` from a thread named `name`, holding at most `limit` lines for it.
pub fn batched<W: Write + Send + 'static>(
    out: W,
    limit: usize,
    name: &str,
) -> std::io::Result<(BatchedWriter, LogFlush)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending { bytes: Vec::new(), lines: 0, closing: false, finished: false }),
        wake: Condvar::new(),
        done: Condvar::new(),
        limit: limit.max(1),
        dropped: AtomicU64::new(0),
    });
    let thread_shared = shared.clone();
    std::thread::Builder::new().name(name.to_string()).spawn(move || write_batches(&thread_shared, out))?;
    Ok((BatchedWriter { shared: shared.clone() }, LogFlush { shared }))
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && !pending.closing {
            pending = shared.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
        if !pending.closing {
            // Gather the lines that follow the first one, then take them all.
            drop(pending);
            std::thread::sleep(GATHER);
            pending = shared.lock();
        }
        std::mem::swap(&mut batch, &mut pending.bytes);
        pending.lines = 0;
        let closing = pending.closing;
        drop(pending);
        // A write error (stderr closed) loses these lines, as any unreadable log would.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closing {
            let mut pending = shared.lock();
            pending.finished = true;
            shared.done.notify_all();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter as _;

    /// A sink the test can read, that can be made to block like a stuck pipe.
    #[derive(Clone, Default)]
    struct Sink {
        out: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicU64>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.out.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(writer: &BatchedWriter, text: &str) {
        writer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_come_out_in_order_in_few_writes_and_all_at_the_end() {
        let sink = Sink::default();
        let (writer, flush) = batched(sink.clone(), 1000, "test-log").unwrap();
        for i in 0..500 {
            line(&writer, &format!("line {i}\n"));
        }
        std::thread::sleep(GATHER * 5);
        // A burst of lines is one batch (or two, if the writer woke in the middle of it).
        assert!(sink.writes.load(Ordering::Relaxed) <= 2, "{} writes", sink.writes.load(Ordering::Relaxed));
        line(&writer, "last\n");
        drop(flush);
        let out = String::from_utf8(sink.out.lock().unwrap().clone()).unwrap();
        let expected: String = (0..500).map(|i| format!("line {i}\n")).chain(["last\n".to_string()]).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn a_stuck_reader_holds_up_nothing_and_the_newest_lines_past_the_limit_are_counted() {
        let sink = Sink::default();
        let stuck = sink.gate.lock().unwrap();
        let (writer, flush) = batched(sink.clone(), 10, "test-log").unwrap();
        line(&writer, "first\n");
        // The writer takes the first line and blocks writing it; ten more wait, the rest drop.
        std::thread::sleep(GATHER * 5);
        let started = std::time::Instant::now();
        for i in 0..25 {
            line(&writer, &format!("more {i}\n"));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "logging waited on the reader");
        assert_eq!(flush.dropped_lines(), 15);
        drop(stuck);
        drop(flush);
        let out = String::from_utf8(sink.out.lock().unwrap().clone()).unwrap();
        let expected: String =
            ["first\n".to_string()].into_iter().chain((0..10).map(|i| format!("more {i}\n"))).collect();
        assert_eq!(out, expected);
    }
}
