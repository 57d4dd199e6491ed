//! Logging that never takes the daemon down: the tracing subscriber, its writer, and the panic
//! hook.
//!
//! The daemon logs to stderr, which in daemon mode (and in the tests) is a file in the state or
//! cache folder. When that disk fills up, a log write fails. tracing-subscriber then reports the
//! failure with `eprintln!` to the same full stderr, which panics ("failed printing to stderr");
//! a panic inside the panic hook (which logs too) aborts the process: that was the SIGABRT seen
//! under fsstress on a full disk. So here:
//! - [`LogWriter`] swallows failed writes: the line is dropped and counted, and the first write
//!   that works again is preceded by one line saying how many were lost, then the last 20
//!   warnings and errors that were dropped (so the line saying the disk is full survives it);
//! - tracing-subscriber's own error reporting (`log_internal_errors`) is off;
//! - the panic hook logs through tracing only (never `eprintln!`), so it cannot panic itself.
//!
//! Locks: `log.kept` ([`Level::LOG`], above every other lock since any code may log while
//! holding its own), taken only once a write has failed.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;

use crate::sync::{Level, Mutex};

/// Log lines lost to failed writes since the last write that worked.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Log lines lost over the process's life (for `dropped_total`).
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);
/// The last warnings and errors that could not be written, written once the log works again,
/// so the message that explains a full disk is not lost with it. Bounded.
static KEPT: Mutex<VecDeque<Vec<u8>>> = Mutex::new(Level::LOG, "log.kept", VecDeque::new());
const KEPT_LINES: usize = 20;
const KEPT_LINE_BYTES: usize = 4096;

/// Set up the tracing subscriber: `level` (a level, or `target=level` directives separated by
/// commas; `RUST_LOG` wins) to stderr, behind a reload handle so
/// `alipanfs set MOUNTPOINT log-level=debug` can change it.
///
/// The filter is `Targets`, not `EnvFilter`: the same directives without span and field
/// filters, and without the regex engine they need (a tenth of the release build's time).
pub fn init(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| parse_filter(&spec).ok())
        .or_else(|| parse_filter(level).ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(Stderr)
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
                let f = parse_filter(spec)?;
                handle.reload(f).map_err(|e| e.to_string())
            }),
        );
    }
    install_panic_hook();
}

/// Parses a log level, or directives `LEVEL` and `TARGET=LEVEL` separated by commas (a target
/// is a module path such as `alipanfs::write`). A bare word that is not a level is refused,
/// rather than read as a target enabled at every level (as `EnvFilter` would read `debg`).
pub fn parse_filter(spec: &str) -> Result<Targets, String> {
    let bad = |why: &str| {
        format!("bad log level {spec:?}: {why} (use error, warn, info, debug, trace, off, or TARGET=LEVEL,...)")
    };
    let is_level = |word: &str| {
        word.parse::<tracing_subscriber::filter::LevelFilter>()
            .is_ok()
    };
    let is_target = |word: &str| {
        !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
    };
    let directives: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(bad("empty"));
    }
    for directive in &directives {
        let ok = match directive.split_once('=') {
            Some((target, level)) => is_target(target) && is_level(level),
            None => is_level(directive),
        };
        if !ok {
            return Err(bad(&format!(
                "{directive:?} is not a level or TARGET=LEVEL"
            )));
        }
    }
    directives
        .join(",")
        .parse::<Targets>()
        .map_err(|e| bad(&e.to_string()))
}

/// Log lines dropped because the log could not be written, over the process's life.
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(Ordering::Relaxed)
}

/// Makes the [`LogWriter`] on stderr for each event; warnings and errors are kept back when
/// dropped.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LogWriter<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter::new(io::stderr(), true)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        LogWriter::new(io::stderr(), *meta.level() <= tracing::Level::WARN)
    }
}

/// A writer that never fails: a write that fails is dropped and counted (see the module doc).
pub struct LogWriter<W: Write> {
    out: W,
    /// Keep this line back if it cannot be written (a warning or an error).
    keep: bool,
}

impl<W: Write> LogWriter<W> {
    pub fn new(out: W, keep: bool) -> Self {
        LogWriter { out, keep }
    }

    /// After lines were dropped: one line saying how many, then the kept-back ones.
    fn catch_up(&mut self) {
        let mut kept = KEPT.lock();
        let lost = DROPPED.load(Ordering::Relaxed);
        if lost == 0 {
            return;
        }
        let note = format!(
            // A leading newline ends a line the failed write may have left half-written.
            "\nWARN alipanfs::logging: {lost} log line(s) were dropped: the log could not be written (disk full?); the last {} warning(s) follow\n",
            kept.len()
        );
        if self.out.write_all(note.as_bytes()).is_err() {
            return;
        }
        for line in kept.drain(..) {
            let _ = self.out.write_all(&line);
        }
        DROPPED.fetch_sub(lost, Ordering::Relaxed);
    }

    fn drop_line(&mut self, buf: &[u8]) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
        if self.keep {
            let mut kept = KEPT.lock();
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            let mut line = buf[..buf.len().min(KEPT_LINE_BYTES)].to_vec();
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            kept.push_back(line);
        }
    }
}

impl<W: Write> Write for LogWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if DROPPED.load(Ordering::Relaxed) > 0 {
            self.catch_up();
        }
        if self.out.write_all(buf).is_err() {
            self.drop_line(buf);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.out.flush();
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

    #[test]
    fn log_levels_and_target_directives_parse_and_typos_are_refused() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "alipanfs=debug",
            "warn,alipanfs::write=trace",
            " info , hyper=warn ",
        ] {
            assert!(parse_filter(good).is_ok(), "{good}");
        }
        for bad in ["", "debg", "[[[", "alipanfs=loud", "a=b=c", "x[{y}]=info"] {
            let e = parse_filter(bad).unwrap_err();
            assert!(e.starts_with("bad log level"), "{bad}: {e}");
        }
        let f = parse_filter("warn,alipanfs::write=debug").unwrap();
        assert!(f.would_enable("alipanfs::write::upload", &tracing::Level::DEBUG));
        assert!(!f.would_enable("alipanfs::read", &tracing::Level::INFO));
        assert!(f.would_enable("alipanfs::read", &tracing::Level::WARN));
    }

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
        let disk = Disk {
            full: true,
            text: Vec::new(),
        };
        let mut info = LogWriter::new(disk, false);
        for _ in 0..3 {
            info.write_all(b"lost info line\n").expect("never fails");
        }
        let mut warn = LogWriter::new(info.out, true);
        warn.write_all(b"WARN local disk is full\n").unwrap();
        assert!(dropped_total() - before >= 4);
        warn.out.full = false;
        warn.write_all(b"written line\n").unwrap();
        warn.write_all(b"next line\n").unwrap();
        let text = String::from_utf8(warn.out.text.clone()).unwrap();
        assert!(text.contains("4 log line(s) were dropped"), "{text}");
        assert_eq!(text.matches("were dropped").count(), 1, "{text}");
        assert!(
            text.ends_with("follow\nWARN local disk is full\nwritten line\nnext line\n"),
            "{text}"
        );
        assert!(!text.contains("lost info line"));
    }
}
