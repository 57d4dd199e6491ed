//! Logging that never takes the daemon down: the tracing subscriber, its writer, and the panic
//! hook.
//!
//! The daemon logs to stderr, which in daemon mode (and in the tests) is a file in the state or
//! cache folder. When that disk fills up, a log write fails. tracing-subscriber then reports the
//! failure with `eprintln!` to the same full stderr, which panics ("failed printing to stderr");
//! a panic inside the panic hook (which logs too) aborts the process: that was the SIGABRT seen
//! under fsstress on a full disk. So here:
//! - [`LogWriter`] swallows failed writes: the line is dropped and counted, and the first write
//!   that works again is preceded by one line saying how many were lost;
//! - tracing-subscriber's own error reporting (`log_internal_errors`) is off;
//! - the panic hook logs through tracing only (never `eprintln!`), so it cannot panic itself.
//!
//! No locks: the drop count is an atomic.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// Log lines lost to failed writes since the last write that worked.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Log lines lost over the process's life (for `dropped_total`).
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Set up the tracing subscriber: `level` (an EnvFilter directive; `RUST_LOG` wins) to stderr,
/// behind a reload handle so `alipanfs set MOUNTPOINT log-level=debug` can change it.
pub fn init(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| LogWriter(io::stderr()))
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .log_internal_errors(false);
    if tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .is_ok()
    {
        let shown = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
        crate::control::loglevel::install(
            &shown,
            Box::new(move |spec| {
                let f = tracing_subscriber::EnvFilter::try_new(spec)
                    .map_err(|e| format!("bad log level {spec:?}: {e}"))?;
                handle.reload(f).map_err(|e| e.to_string())
            }),
        );
    }
    install_panic_hook();
}

/// Log lines dropped because the log could not be written, over the process's life.
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(Ordering::Relaxed)
}

/// A writer that never fails: a write that fails is dropped and counted (see the module doc).
pub struct LogWriter<W: Write>(pub W);

impl<W: Write> Write for LogWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let lost = DROPPED.load(Ordering::Relaxed);
        if lost > 0 {
            let note = format!(
                "WARN alipanfs::logging: {lost} log line(s) were dropped: the log could not be written (disk full?)\n"
            );
            if self.0.write_all(note.as_bytes()).is_ok() {
                DROPPED.fetch_sub(lost, Ordering::Relaxed);
            }
        }
        if self.0.write_all(buf).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Every panic, on any thread, reaches the log once with its backtrace (the FUSE adapter then
/// answers the operation with EIO; elsewhere the task or thread ends). Installed once.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let backtrace = std::backtrace::Backtrace::force_capture();
            let thread = std::thread::current();
            let thread = thread.name().unwrap_or("unnamed");
            tracing::error!("panic on thread {thread}: {info}\n{backtrace}");
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails while `full` is set, like a file on a full disk.
    struct Disk {
        full: bool,
        text: Vec<u8>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.full {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.text.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_writes_are_dropped_counted_and_reported_once_writing_works() {
        let before = dropped_total();
        let mut w = LogWriter(Disk {
            full: true,
            text: Vec::new(),
        });
        for _ in 0..3 {
            w.write_all(b"lost line\n").expect("never fails");
        }
        assert!(dropped_total() - before >= 3);
        w.0.full = false;
        w.write_all(b"kept line\n").unwrap();
        w.write_all(b"next line\n").unwrap();
        let text = String::from_utf8(w.0.text.clone()).unwrap();
        assert!(text.contains("log line(s) were dropped"), "{text}");
        assert_eq!(text.matches("were dropped").count(), 1, "{text}");
        assert!(text.ends_with("kept line\nnext line\n"), "{text}");
        assert!(!text.contains("lost line"));
    }
}
