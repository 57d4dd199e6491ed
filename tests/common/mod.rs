//! Test harness for FUSE integration tests: an in-process emulator plus the real `alipanfs`
//! binary mounted through the kernel into a temporary folder. The guard unmounts and stops
//! everything on drop, and a watchdog kills the daemon when a test overruns its deadline, so a
//! request stuck in the kernel fails that one test instead of hanging the suite.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use alipanfs::emulator::{Emulator, EmulatorConfig, Faults};

pub const BIN: &str = env!("CARGO_BIN_EXE_alipanfs");

/// An emulator with test-friendly defaults (no rate limit on the data plane's sake of speed is
/// *not* taken: limits stay as the real service's unless a test says otherwise).
pub fn emulator_with(tweak: impl FnOnce(&mut EmulatorConfig)) -> (Emulator, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut cfg = EmulatorConfig {
        data_dir: data.path().join("emulator"),
        ..Default::default()
    };
    tweak(&mut cfg);
    let emulator = Emulator::start_background(cfg).expect("emulator starts");
    (emulator, data)
}

/// An emulator tweaked and seeded by the test, mounted with extra command-line arguments.
pub fn mount_with(
    tweak: impl FnOnce(&mut EmulatorConfig),
    seed: impl FnOnce(&Emulator),
    args: &[&str],
) -> Mount {
    let (emulator, temp) = emulator_with(tweak);
    seed(&emulator);
    let mut builder = MountBuilder::new(emulator, temp);
    for a in args {
        builder = builder.arg(*a);
    }
    builder.mount()
}

pub struct Mount {
    pub emulator: Emulator,
    args: Vec<String>,
    pub dir: PathBuf,
    pub cache_dir: PathBuf,
    pub token_file: PathBuf,
    child: Arc<Mutex<Option<Child>>>,
    done: Arc<AtomicBool>,
    log_path: PathBuf,
    _temp: tempfile::TempDir,
}

pub struct MountBuilder {
    emulator: Emulator,
    temp: tempfile::TempDir,
    args: Vec<String>,
    deadline: Duration,
}

impl MountBuilder {
    pub fn new(emulator: Emulator, temp: tempfile::TempDir) -> Self {
        MountBuilder {
            emulator,
            temp,
            args: Vec::new(),
            deadline: Duration::from_secs(240),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    pub fn mount(self) -> Mount {
        self.try_mount()
            .unwrap_or_else(|e| panic!("mount failed: {e}"))
    }

    pub fn try_mount(self) -> Result<Mount, String> {
        let dir = self.temp.path().join("mnt");
        let cache_dir = self.temp.path().join("cache");
        let token_file = self.temp.path().join("state/token.json");
        std::fs::create_dir_all(&dir).unwrap();
        let log_path = self.temp.path().join("alipanfs.log");
        let child = spawn_daemon(
            &self.emulator,
            &dir,
            &cache_dir,
            &token_file,
            &log_path,
            &self.args,
        )?;
        let child = Arc::new(Mutex::new(Some(child)));
        let done = Arc::new(AtomicBool::new(false));
        spawn_watchdog(child.clone(), done.clone(), dir.clone(), self.deadline);
        let mount = Mount {
            emulator: self.emulator,
            args: self.args,
            dir,
            cache_dir,
            token_file,
            child,
            done,
            log_path,
            _temp: self.temp,
        };
        mount.wait_mounted()?;
        Ok(mount)
    }
}

fn spawn_daemon(
    emulator: &Emulator,
    dir: &Path,
    cache_dir: &Path,
    token_file: &Path,
    log_path: &Path,
    args: &[String],
) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    Command::new(BIN)
        .arg("--log-level")
        .arg("alipanfs=debug,info")
        .arg("mount")
        .arg("--foreground")
        .arg(dir)
        .args(emulator.mount_args())
        .arg("--token-file")
        .arg(token_file)
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(args)
        // Bootstrap only: after the first run the rotated token in the store is used.
        .env("ALIPANFS_REFRESH_TOKEN", emulator.refresh_token())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {BIN}: {e}"))
}

fn spawn_watchdog(
    child: Arc<Mutex<Option<Child>>>,
    done: Arc<AtomicBool>,
    dir: PathBuf,
    deadline: Duration,
) {
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if done.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "watchdog: test overran {deadline:?}; killing the daemon and unmounting {}",
            dir.display()
        );
        if let Some(c) = child.lock().unwrap().as_mut() {
            let _ = c.kill();
        }
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&dir)
            .status();
    });
}

pub fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

impl Mount {
    fn wait_mounted(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if is_mounted(&self.dir) {
                return Ok(());
            }
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!("alipanfs exited with {status}: {}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("not mounted after 30 s: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Unmount (SIGTERM), then mount again with the same token store, cache dir and options.
    pub fn restart(&self, extra_args: &[&str]) {
        self.unmount();
        assert!(!is_mounted(&self.dir), "still mounted after SIGTERM");
        self.spawn_again(extra_args);
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// SIGKILL the daemon (nothing drains, nothing is flushed), reap it, then lazily unmount the
    /// dead kernel mount (`fusermount3 -u -z`), as an admin would after a crash.
    pub fn kill9(&self) {
        let mut guard = self.child.lock().unwrap();
        if let Some(mut child) = guard.take() {
            // SAFETY: plain kill(2) on our own child (maybe already a zombie: harmless).
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
        drop(guard);
        let status = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.dir)
            .status()
            .expect("fusermount3 runs");
        assert!(status.success(), "fusermount3 -u -z failed: {status}");
        assert!(
            !is_mounted(&self.dir),
            "still mounted after the lazy unmount"
        );
    }

    /// Mount again after `kill9` (or `unmount`) with the same token store, cache dir and
    /// options: what a user does after a crash.
    pub fn mount_again(&self, extra_args: &[&str]) {
        assert!(self.pid().is_none(), "the daemon still runs");
        assert!(!is_mounted(&self.dir), "still mounted");
        self.spawn_again(extra_args);
    }

    /// Unmount (SIGTERM, uploads drain), then mount with the same token store and options but
    /// an empty cache dir of its own: everything read afterwards comes from the drive.
    pub fn remount_with_new_cache(&mut self, extra_args: &[&str]) {
        self.unmount();
        assert!(!is_mounted(&self.dir), "still mounted after SIGTERM");
        let n = (1..)
            .find(|i| !self.cache_dir.with_file_name(format!("cache-{i}")).exists())
            .unwrap();
        self.cache_dir = self.cache_dir.with_file_name(format!("cache-{n}"));
        self.spawn_again(extra_args);
    }

    fn spawn_again(&self, extra_args: &[&str]) {
        let mut args = self.args.clone();
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let child = spawn_daemon(
            &self.emulator,
            &self.dir,
            &self.cache_dir,
            &self.token_file,
            &self.log_path,
            &args,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        *self.child.lock().unwrap() = Some(child);
        self.wait_mounted()
            .unwrap_or_else(|e| panic!("remount failed: {e}"));
    }

    /// A snapshot of the emulator's per-endpoint call counters.
    pub fn calls(&self) -> CallCounts {
        CallCounts(self.emulator.calls())
    }

    /// Live (not trashed) drive entries under `prefix` (a drive path like `/tree`), keyed by
    /// their path relative to it; `None` for folders, the uppercase SHA-1 for files.
    pub fn drive_tree(&self, prefix: &str) -> BTreeMap<String, Option<String>> {
        let prefix = format!("/{}", prefix.trim_matches('/'));
        let prefix = if prefix == "/" { String::new() } else { prefix };
        self.emulator
            .tree()
            .into_iter()
            .filter(|e| !e.trashed)
            .filter_map(|e| {
                let rel = e.path.strip_prefix(&format!("{prefix}/"))?.to_string();
                Some((rel, if e.is_dir { None } else { e.sha1.clone() }))
            })
            .collect()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn full_log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM the daemon and wait for it to unmount and exit.
    pub fn unmount(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.child.lock().unwrap();
        let child = guard.as_mut()?;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        *guard = None;
        status
    }

    /// Poll until `cond` holds, or panic with the daemon's log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- daemon log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The emulator's entry at a path (relative to the drive root), not trashed.
    pub fn remote(&self, path: &str) -> Option<alipanfs::emulator::TreeEntry> {
        let want = format!("/{}", path.trim_start_matches('/'));
        self.emulator
            .entries_at(&want)
            .into_iter()
            .find(|e| !e.trashed)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        self.unmount();
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.dir)
                .status();
        }
    }
}

/// SHA-1 (uppercase hex) of a file read through plain std::fs.
pub fn sha1_of(path: &Path) -> String {
    alipanfs::hashing::sha1_of_reader(std::fs::File::open(path).expect("open")).expect("read")
}

/// Run a shell command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("bash runs");
    if !out.status.success() {
        panic!(
            "command failed: {cmd}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The emulator's call counters at one moment (`Mount::calls`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallCounts(pub BTreeMap<String, u64>);

impl CallCounts {
    /// The calls made since `before` (endpoints with no new call left out).
    pub fn since(&self, before: &CallCounts) -> CallCounts {
        CallCounts(
            self.0
                .iter()
                .filter_map(|(k, v)| {
                    let d = v - before.0.get(k).copied().unwrap_or(0);
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect(),
        )
    }

    pub fn get(&self, endpoint: &str) -> u64 {
        self.0.get(endpoint).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for CallCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} calls:", self.total())?;
        for (k, v) in &self.0 {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// A local tree as `Mount::drive_tree` shows the drive: relative path -> `None` for folders,
/// the uppercase SHA-1 for files.
pub fn local_tree(root: &Path) -> BTreeMap<String, Option<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<String>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if entry.file_type().expect("file type").is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(sha1_of(&path)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Failures collected while a test goes on, so that one run shows every part that fails (the
/// test still fails at the end through `finish`).
#[derive(Default)]
pub struct Checks(Vec<String>);

impl Checks {
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) -> bool {
        if !ok {
            let msg = what();
            eprintln!("CHECK FAILED: {msg}");
            self.0.push(msg);
        }
        ok
    }

    pub fn failed(&self) -> bool {
        !self.0.is_empty()
    }

    pub fn finish(self) {
        if !self.0.is_empty() {
            panic!(
                "{} check(s) failed:\n- {}",
                self.0.len(),
                self.0.join("\n- ")
            );
        }
    }
}

/// Run a shell command; its exit status and combined output, without panicking.
pub fn sh_status(cmd: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("bash runs");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status, text)
}

impl Mount {
    /// `alipanfs sync --timeout T <mount>`: block until every closed file is on the drive;
    /// panics with the command's output and the daemon's log when it does not get there.
    pub fn sync_all(&self, timeout: Duration) {
        let out = Command::new(BIN)
            .arg("sync")
            .arg("--timeout")
            .arg(format!("{}", timeout.as_secs_f64()))
            .arg(&self.dir)
            .output()
            .expect("alipanfs sync runs");
        assert!(
            out.status.success(),
            "sync failed: {}{}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// The daemon's resident set size in KiB (`VmRSS` in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid().expect("daemon runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// How many files the daemon has open.
    pub fn open_fds(&self) -> usize {
        let pid = self.pid().expect("daemon runs");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Drive folders holding two live items with one name: `(parent path, name, count)`.
pub fn drive_duplicates(emulator: &Emulator) -> Vec<(String, String, usize)> {
    let mut seen: BTreeMap<(String, String), (String, usize)> = BTreeMap::new();
    for e in emulator.tree().into_iter().filter(|e| !e.trashed) {
        let parent = e.path.rsplit_once('/').map(|(p, _)| p.to_string());
        let slot = seen
            .entry((e.parent_file_id.clone(), e.name.clone()))
            .or_insert((parent.unwrap_or_default(), 0));
        slot.1 += 1;
    }
    seen.into_iter()
        .filter(|(_, (_, n))| *n > 1)
        .map(|((_, name), (parent, n))| (parent, name, n))
        .collect()
}

/// Polls `cond` every 50 ms until it holds; panics with `what` and `log()` (a daemon's or a
/// server's log) after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    log: impl Fn() -> String,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n--- log ---\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
