//! A full local disk: the cache folder (staging, data cache) and the daemon's log sit on a small
//! tmpfs. Writing until it is full gives the writer ENOSPC (not EIO), the daemon stays up, earlier
//! files stay exact on the drive and readable, the log says the local disk is full (not the
//! drive's quota), and once space returns a new write works and lands, with no restart. A full
//! drive (the emulator's quota) is told apart: the writer gets ENOSPC too, and the log says quota.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use alipanfs::hashing::sha1_hex;
use common::*;

const UPLOAD_WAIT: Duration = Duration::from_secs(120);
const SMALL_FS_MIB: u64 = 48;

/// A tmpfs of `SMALL_FS_MIB` mounted on a temporary folder; unmounted (lazily) on drop, after
/// the FUSE mount on top of it (declare it first).
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn new(temp: &tempfile::TempDir) -> SmallFs {
        let dir = temp.path().to_path_buf();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={SMALL_FS_MIB}m"))
            .arg("tmpfs")
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount a tmpfs (run as root)");
        SmallFs { dir }
    }

    fn free_bytes(&self) -> u64 {
        let st = nix_statvfs(&self.dir);
        st.0 * st.1
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// (available blocks, block size) of the filesystem holding `path`.
fn nix_statvfs(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills the struct it is given; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    (st.f_bavail, st.f_frsize)
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn wait_landed(m: &Mount, name: &str, sha: &str) {
    m.wait_for(&format!("{name} on the drive"), UPLOAD_WAIT, || {
        m.remote(name).and_then(|e| e.sha1).as_deref() == Some(sha)
    });
}

/// Write `data` to `path` in 256 KiB chunks, then close it; the first error (write or close).
fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let mut f = std::fs::File::create(path)?;
    for chunk in data.chunks(256 << 10) {
        f.write_all(chunk)?;
    }
    let fd = f.into_raw_fd();
    // SAFETY: fd was just taken from the File, which no longer owns it.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn a_full_local_disk_gives_enospc_keeps_serving_and_recovers_when_space_returns() {
    let (emulator, _emulator_data) = emulator_with(|_| {});
    let small_temp = tempfile::tempdir().expect("temp dir");
    let small = SmallFs::new(&small_temp);
    // Mount folder, cache (staging + data cache), token store and log all on the small fs.
    let m = MountBuilder::new(emulator, small_temp).mount();
    let mut checks = Checks::default();

    // Earlier files: written, closed and landed before the disk fills.
    let earlier: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("earlier{i}.bin"), bytes(2 << 20, 10 + i)))
        .collect();
    for (name, data) in &earlier {
        write_file(&m.path(name), data).expect("write an earlier file");
    }
    for (name, data) in &earlier {
        wait_landed(&m, name, &sha1_hex(data));
    }

    // Fill the small fs but 4 MiB, then write a 16 MiB file through the mount.
    let filler = small.dir.join("filler");
    let fill = small.free_bytes().saturating_sub(4 << 20);
    std::fs::write(&filler, vec![0u8; fill as usize]).expect("write the filler");
    let big = bytes(16 << 20, 99);
    let started = Instant::now();
    let full = write_file(&m.path("big.bin"), &big);
    let errno = full.as_ref().err().and_then(|e| e.raw_os_error());
    println!(
        "disk full: the writer saw {full:?} after {:?}",
        started.elapsed()
    );
    checks.check(errno == Some(libc::ENOSPC), || {
        format!("writing on a full disk: want ENOSPC, got {full:?}")
    });

    // The daemon is alive and serves the earlier files (reads and listings) while full.
    checks.check(m.pid().is_some() && is_mounted(&m.dir), || {
        "the daemon died on a full disk".to_string()
    });
    for (name, data) in &earlier {
        let read = std::fs::read(m.path(name));
        checks.check(read.as_ref().map(|r| r == data).unwrap_or(false), || {
            format!("reading {name} on a full disk: {:?}", read.map(|r| r.len()))
        });
    }
    let listed = std::fs::read_dir(&m.dir).map(|d| d.count());
    checks.check(listed.is_ok(), || {
        format!("listing on a full disk: {listed:?}")
    });
    // More refused writes, each logged, until the log itself cannot be written: the daemon
    // must outlive its log (this was a SIGABRT).
    for i in 0..40 {
        let more = write_file(&m.path(&format!("more{i}.bin")), &bytes(64 << 10, i));
        checks.check(
            more.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::ENOSPC),
            || format!("write {i} on a full disk: want ENOSPC, got {more:?}"),
        );
    }
    checks.check(m.pid().is_some() && is_mounted(&m.dir), || {
        "the daemon died when its log could not be written".to_string()
    });
    for i in 0..40 {
        let _ = std::fs::remove_file(m.path(&format!("more{i}.bin")));
    }
    let _ = std::fs::remove_file(m.path("big.bin"));

    // Space returns: a new write works without a restart, and lands.
    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    let after = bytes(1 << 20, 7);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match write_file(&m.path("after.bin"), &after) {
            Ok(()) => break,
            Err(e) if freed.elapsed() < Duration::from_secs(30) => {
                println!("write after freeing space: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("no write works 30 s after space returned: {e}"),
        }
    }
    println!(
        "recovered: a write worked {:?} after space returned ({attempts} attempt(s))",
        freed.elapsed()
    );
    wait_landed(&m, "after.bin", &sha1_hex(&after));
    assert_eq!(std::fs::read(m.path("after.bin")).unwrap(), after);

    // The earlier files are still exact on the drive; the log told the right story.
    for (name, data) in &earlier {
        let sha = sha1_hex(data);
        checks.check(
            m.remote(name).and_then(|e| e.sha1).as_deref() == Some(sha.as_str()),
            || format!("{name} not exact on the drive"),
        );
    }
    checks.check(m.pid().is_some() && is_mounted(&m.dir), || {
        "the daemon died after the disk was full".to_string()
    });
    let log = m.full_log();
    checks.check(log.contains("local disk is full"), || {
        "the log does not say the local disk is full".to_string()
    });
    checks.check(!log.contains("quota"), || {
        "the log blames the drive's quota for a local disk full".to_string()
    });
    checks.check(log.contains("log line(s) were dropped"), || {
        "the log does not say that lines were dropped while it was full".to_string()
    });
    for line in log.lines().filter(|l| {
        l.contains("local disk is full") || l.contains("were dropped") || l.contains("panic")
    }) {
        println!("log: {}", &line[..line.len().min(300)]);
    }
    checks.check(!log.contains("panic"), || "the daemon panicked".to_string());
    eprintln!("--- daemon log (tail) ---\n{}", m.log());
    checks.finish();
}

/// Failed when the write came before the mount's first look at the drive's free space (the
/// write was accepted, then its upload retried at the quota's pace); the mount now reads it
/// before it serves.
#[test]
fn a_full_drive_is_reported_as_the_drive_quota_not_the_local_disk() {
    let m = mount_with(|_| {}, |emu| emu.set_quota(1 << 20), &[]);
    let data = bytes(3 << 20, 5);
    // The local disk has room; the drive has not: the writer gets ENOSPC as for a full disk.
    let refused = write_file(&m.path("too-big.bin"), &data);
    assert_eq!(
        refused.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::ENOSPC),
        "writing past the drive's quota: {refused:?}"
    );
    m.wait_for("the quota logged", Duration::from_secs(10), || {
        m.full_log().contains("drive is full (quota exhausted)")
    });
    let log = m.full_log();
    assert!(log.contains("layer=Api"), "{log}");
    assert!(
        !log.contains("local disk is full"),
        "a full drive is not a full local disk:\n{log}"
    );
    assert!(m.remote("too-big.bin").and_then(|e| e.sha1) != Some(sha1_hex(&data)));
    assert!(
        m.pid().is_some() && is_mounted(&m.dir),
        "the daemon is gone"
    );
}
