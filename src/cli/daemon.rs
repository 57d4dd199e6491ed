//! Daemon mode: `alipanfs mount` without `--foreground` starts itself again in the background
//! and returns only once the mount is up (exit 0) or has failed (exit 1, with the reason), as
//! sshfs and mount(8) helpers do. The child reports through a pipe named by an environment
//! variable; its logs go to a file in the state folder.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

const READY_FD_ENV: &str = "ALIPANFS_READY_FD";

/// Start the mount in a detached child (running `args`, argv without argv[0], plus
/// `--foreground`) and wait for its verdict.
pub fn detach(mountpoint: &Path, mut args: Vec<std::ffi::OsString>) -> Result<()> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two new descriptors into the array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_cloexec(&read_end, true);
    set_cloexec(&write_end, false);
    let log_dir = crate::cli::options::state_dir();
    std::fs::create_dir_all(&log_dir)?;
    let log_path = log_dir.join("alipanfs.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    args.push("--foreground".into());
    let write_fd = write_end.into_raw_fd();
    let mut child = Command::new(std::env::current_exe()?);
    child
        .args(&args)
        .env(READY_FD_ENV, write_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: setsid is async-signal-safe; it detaches the child from our terminal and session.
    unsafe {
        child.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let spawned = child.spawn();
    // SAFETY: our copy of the write end; the child has its own.
    unsafe { libc::close(write_fd) };
    let mut child = spawned?;
    let mut verdict = String::new();
    File::from(read_end).read_to_string(&mut verdict)?;
    match verdict.lines().next() {
        Some("ready") => {
            // Not println!: it panics when stdout is closed; the mount is up either way.
            let _ = writeln!(
                std::io::stdout(),
                "mounted {} (pid {}, log {})",
                mountpoint.display(),
                child.id(),
                log_path.display()
            );
            Ok(())
        }
        Some(line) => Err(Error::Config(
            line.trim_start_matches("error: ").to_string(),
        )),
        None => {
            let status = child.wait()?;
            Err(Error::Config(format!(
                "the mount process exited ({status}) before the mount was up; see {}",
                log_path.display()
            )))
        }
    }
}

fn set_cloexec(fd: &OwnedFd, on: bool) {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFD/F_SETFD on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags);
    }
}

fn report(line: &str) {
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    std::env::remove_var(READY_FD_ENV);
    // SAFETY: the parent handed us this descriptor for exactly this one message.
    let mut pipe = unsafe { File::from_raw_fd(fd) };
    let _ = writeln!(pipe, "{line}");
}

/// Tell a waiting parent that the mount is up.
pub fn report_ready() {
    report("ready");
}

/// Tell a waiting parent why the mount failed.
pub fn report_failure(e: &Error) {
    report(&format!("error: {e}"));
}
