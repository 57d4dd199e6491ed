//! A panic in any FUSE operation fails that operation with EIO, is logged with its backtrace,
//! and the mount serves the next operations. The panics are injected into the real daemon with
//! `ALIPANFS_FAULT_PANIC` (src/fault.rs): each named operation panics on its first call.

mod common;

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use alipanfs::hashing::sha1_hex;
use common::*;

/// Operations answered on the FUSE thread or the blocking pool (the guarded ones), and lookup
/// for the async path.
const PANICKING: &str = "lookup,write,flush,release,readdir,readdirplus";

fn is_eio(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

#[test]
fn a_panicking_operation_answers_eio_and_the_mount_serves_the_next_ones() {
    // This test binary holds this one test, so the variable reaches only this daemon.
    std::env::set_var(alipanfs::fault::PANIC_ENV, PANICKING);
    let m = mount_with(
        |_| {},
        |emu| {
            emu.seed_file("root", "seed.txt", b"seeded content\n");
        },
        &[],
    );
    let mut checks = Checks::default();
    let pid = m.pid().expect("daemon pid");
    // fuser starts its request threads one after another once mounted: count them when the
    // number has held for half a second (CI once counted 1 of the 5 here).
    let mut threads_before = fuse_threads(pid);
    let settle = Instant::now();
    let mut same_since = Instant::now();
    while settle.elapsed() < Duration::from_secs(10)
        && same_since.elapsed() < Duration::from_millis(500)
    {
        std::thread::sleep(Duration::from_millis(50));
        let now = fuse_threads(pid);
        if now != threads_before {
            threads_before = now;
            same_since = Instant::now();
        }
    }
    assert!(threads_before > 0, "no fuser-* thread in the daemon");

    // lookup (async path): the first fails with EIO, the next works.
    let first = std::fs::metadata(m.path("seed.txt"));
    checks.check(matches!(&first, Err(e) if is_eio(e)), || {
        format!("first lookup: want EIO, got {first:?}")
    });
    let meta = std::fs::metadata(m.path("seed.txt")).expect("second lookup works");
    assert_eq!(meta.len(), 15);

    // write on the FUSE thread: the first write fails with EIO, the next works; flush (blocking
    // pool) panics once, so that close reports EIO; release panics once (close ignores it).
    let mut a = std::fs::File::create(m.path("a.txt")).expect("create");
    let w1 = a.write_all(b"first");
    checks.check(matches!(&w1, Err(e) if is_eio(e)), || {
        format!("first write: want EIO, got {w1:?}")
    });
    a.write_all(b"second").expect("the next write works");
    let closed = close(a);
    checks.check(matches!(&closed, Err(e) if is_eio(e)), || {
        format!("first close (flush panicked): want EIO, got {closed:?}")
    });

    // Every operation works now: a new file lands on the drive exact.
    let content = b"written after the panics\n";
    std::fs::write(m.path("b.txt"), content).expect("write b.txt");
    let sha = sha1_hex(content);
    m.wait_for("b.txt uploaded", Duration::from_secs(60), || {
        m.remote("b.txt").and_then(|e| e.sha1) == Some(sha.clone())
    });

    // readdir/readdirplus: the listing that panicked fails with EIO, then listings work.
    let mut listings = Vec::new();
    for _ in 0..3 {
        let listed = std::fs::read_dir(&m.dir).and_then(|d| {
            d.map(|e| e.map(|e| e.file_name().to_string_lossy().to_string()))
                .collect::<Result<Vec<_>, _>>()
        });
        let ok = listed.is_ok();
        listings.push(listed);
        if ok {
            break;
        }
    }
    checks.check(
        matches!(listings.first(), Some(Err(e)) if is_eio(e)),
        || format!("first listing: want EIO, got {:?}", listings.first()),
    );
    let names = match listings.last() {
        Some(Ok(names)) => names.clone(),
        other => panic!("no listing worked after the panic: {other:?}"),
    };
    for want in ["seed.txt", "b.txt"] {
        checks.check(names.iter().any(|n| n == want), || {
            format!("{want} missing from {names:?}")
        });
    }
    assert_eq!(
        std::fs::read(m.path("seed.txt")).expect("read seed.txt"),
        b"seeded content\n"
    );
    assert_eq!(std::fs::read(m.path("b.txt")).expect("read b.txt"), content);

    // The daemon is the same process, still mounted, with every FUSE thread alive (an unguarded
    // panic ends its thread: with the last one, the mount), and logged each panic with a
    // backtrace.
    checks.check(m.pid() == Some(pid) && is_mounted(&m.dir), || {
        "the daemon is gone".to_string()
    });
    let threads_after = fuse_threads(pid);
    println!("FUSE threads: {threads_before} before the panics, {threads_after} after");
    checks.check(threads_after == threads_before, || {
        format!("FUSE threads: {threads_before} before the panics, {threads_after} after")
    });
    let log = m.full_log();
    for op in ["lookup", "write", "flush", "release"] {
        let line = format!("fault injected by ALIPANFS_FAULT_PANIC: {op} panics");
        checks.check(log.contains(&line), || format!("log lacks {line:?}"));
    }
    checks.check(
        log.contains("readdir panics") || log.contains("readdirplus panics"),
        || "log lacks the listing's panic".to_string(),
    );
    checks.check(log.contains("fs op panicked"), || {
        "log lacks the EIO answer line".to_string()
    });
    // A frame of the backtrace ("  7: panic_point" with line tables only, the full path with
    // full debug info).
    let frame = log.lines().any(|l| {
        l.trim_start()
            .split_once(": ")
            .is_some_and(|(n, f)| n.parse::<u32>().is_ok() && f.trim_end().ends_with("panic_point"))
    });
    checks.check(frame, || "log lacks a backtrace".to_string());
    checks.check(!log.contains("drive is full"), || {
        "a panic is not a full drive".to_string()
    });
    // Shown only when the test fails (the harness captures a passing test's output).
    eprintln!("--- daemon log ---\n{log}");
    checks.finish();
}

/// Close a file and return close(2)'s own result (std's drop ignores it).
fn close(f: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: fd was just taken from the File, which no longer owns it.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        if e.kind() == ErrorKind::Interrupted {
            return Ok(());
        }
        Err(e)
    }
}

/// The daemon's FUSE session threads (fuser names them `fuser-N`).
fn fuse_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the daemon's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("fuser-"))
        .count()
}
