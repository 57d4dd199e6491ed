//! The service restarts under a mount: `alipanfs emulator --data DIR` runs as a child process, the
//! real binary mounts it through the kernel, files are written with plain std::fs, the emulator is
//! SIGKILLed while a part upload is in flight and started again on the same port and DIR. The mount
//! must ride out the gap and finish the upload; the restarted drive must hold every file with the
//! right SHA-1, and a remount must list the same tree.
//!
//! Its own small harness (not tests/common): both processes are children here, a watchdog kills
//! them and lazily unmounts when the test overruns, and a Drop guard cleans up after a panic.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use alipanfs::emulator::{pattern_bytes, EmulatorConfig};
use common::is_mounted;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_alipanfs");
/// The whole test, restart included, normally takes well under a minute.
const DEADLINE: Duration = Duration::from_secs(240);

/// The children, shared with the watchdog.
#[derive(Default)]
struct Procs {
    emulator: Option<Child>,
    daemon: Option<Child>,
}

struct Harness {
    temp: tempfile::TempDir,
    port: u16,
    procs: Arc<Mutex<Procs>>,
    done: Arc<AtomicBool>,
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn lazy_unmount(dir: &Path) {
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(dir)
        .status();
}

impl Harness {
    fn new() -> Harness {
        // A free port, reused by the restarted emulator.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let temp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(temp.path().join("mnt")).unwrap();
        let h = Harness {
            temp,
            port,
            procs: Arc::new(Mutex::new(Procs::default())),
            done: Arc::new(AtomicBool::new(false)),
        };
        h.spawn_watchdog();
        h
    }

    fn mnt(&self) -> PathBuf {
        self.temp.path().join("mnt")
    }

    fn log(&self) -> String {
        let read = |name: &str| {
            let text = std::fs::read_to_string(self.temp.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- daemon log ---\n{}\n--- emulator log ---\n{}",
            read("daemon.log"),
            read("emulator.log")
        )
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.temp.path().join("daemon.log")).unwrap_or_default()
    }

    fn spawn_watchdog(&self) {
        let (procs, done, dir) = (self.procs.clone(), self.done.clone(), self.mnt());
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < DEADLINE {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("watchdog: test overran {DEADLINE:?}; killing both processes, unmounting");
            let mut p = procs.lock().unwrap();
            kill(&mut p.daemon);
            lazy_unmount(&dir);
            kill(&mut p.emulator);
        });
    }

    /// Starts `alipanfs emulator` on the harness's port and data dir; returns the refresh token
    /// it prints (the current one after a restart).
    fn start_emulator(&self, extra: &[&str]) -> String {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.temp.path().join("emulator.log"))
            .unwrap();
        let mut child = Command::new(BIN)
            .arg("emulator")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data")
            .arg(self.temp.path().join("drive"))
            // The service's limits would only slow the test; the restart is what it is about.
            .args([
                "--list-rate",
                "0",
                "--download-url-rate",
                "0",
                "--api-rate",
                "0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("emulator starts");
        let stdout = child.stdout.take().unwrap();
        self.procs.lock().unwrap().emulator = Some(child);
        // Read the banner on a thread, so a silent emulator fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(t) = line.strip_prefix("refresh token: ") {
                    let _ = tx.send(t.to_string());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("emulator printed no refresh token\n{}", self.log()))
    }

    /// SIGKILL: no chance to save anything.
    fn kill_emulator(&self) {
        kill(&mut self.procs.lock().unwrap().emulator);
    }

    fn mount(&self, refresh_token: &str) {
        let cfg = EmulatorConfig::default();
        // An empty config file, so no user config on this machine takes part.
        std::fs::write(self.temp.path().join("none.toml"), "").unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.temp.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args([
                "--log-level",
                "alipanfs=debug,info",
                "mount",
                "--foreground",
            ])
            .arg(self.mnt())
            .arg("--api-url")
            .arg(format!("http://127.0.0.1:{}", self.port))
            .args([
                "--client-id",
                &cfg.client_id,
                "--client-secret",
                &cfg.client_secret,
            ])
            .arg("--token-file")
            .arg(self.temp.path().join("state/token.json"))
            .arg("--cache-dir")
            .arg(self.temp.path().join("cache"))
            // Bootstrap only: after the first run the rotated token in the store is used.
            .env("ALIPANFS_REFRESH_TOKEN", refresh_token)
            .env("ALIPANFS_CONFIG", self.temp.path().join("none.toml"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("alipanfs mount starts");
        self.procs.lock().unwrap().daemon = Some(child);
        // A FUSE test that cannot mount fails; it never skips.
        common::wait_until(
            "the mount",
            Duration::from_secs(30),
            || self.log(),
            || {
                let exited = self
                    .procs
                    .lock()
                    .unwrap()
                    .daemon
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    panic!("alipanfs exited with {status}\n{}", self.log());
                }
                is_mounted(&self.mnt())
            },
        );
    }

    /// SIGTERM the daemon (a clean unmount) and wait for it.
    fn unmount(&self) {
        let mut p = self.procs.lock().unwrap();
        let Some(mut child) = p.daemon.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(!is_mounted(&self.mnt()), "still mounted after SIGTERM");
    }

    /// GET on the emulator's control API; `None` while it is down.
    fn admin_get(&self, path: &str) -> Option<Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET /__emulator/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200")
            .then(|| serde_json::from_str(body).ok())
            .flatten()
    }

    /// path -> SHA-1 of every live file on the emulated drive.
    fn remote_files(&self) -> Option<BTreeMap<String, String>> {
        let tree = self.admin_get("tree")?;
        Some(
            tree.as_array()?
                .iter()
                .filter(|e| e["is_dir"] == false && e["trashed"] == false)
                .map(|e| {
                    (
                        e["path"].as_str().unwrap_or("").to_string(),
                        e["sha1"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
        )
    }

    fn data_puts(&self) -> u64 {
        self.admin_get("calls")
            .and_then(|c| c["data/put"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let mut p = self.procs.lock().unwrap();
        kill(&mut p.daemon);
        if is_mounted(&self.mnt()) {
            lazy_unmount(&self.mnt());
        }
        kill(&mut p.emulator);
    }
}

fn sha1_hex(data: &[u8]) -> String {
    alipanfs::hashing::sha1_of_reader(data).unwrap()
}

/// Relative path -> (size, SHA-1) of every file below `root`, read through the mount.
fn local_tree(root: &Path) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                let data = std::fs::read(&p).unwrap();
                out.insert(format!("/{rel}"), (data.len() as u64, sha1_hex(&data)));
            }
        }
    }
    out
}

#[test]
fn a_mount_rides_out_an_emulator_killed_mid_upload() {
    let started = Instant::now();
    let h = Harness::new();
    // Part PUTs at 4 MB/s: the 40 MiB file's upload takes seconds, so the kill lands in it.
    let token = h.start_emulator(&["--upload-bandwidth", "4M"]);
    h.mount(&token);
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    let small: Vec<(&str, Vec<u8>)> = vec![
        ("a.txt", b"hello across a restart\n".to_vec()),
        ("docs/b.bin", pattern_bytes(1, 0, 300 << 10)),
        ("docs/deep/c.bin", pattern_bytes(2, 0, 3 << 20)),
    ];
    std::fs::create_dir_all(h.mnt().join("docs/deep")).unwrap();
    for (rel, data) in &small {
        std::fs::write(h.mnt().join(rel), data).unwrap();
        want.insert(format!("/{rel}"), sha1_hex(data));
    }
    common::wait_until(
        "the small files on the drive",
        Duration::from_secs(60),
        || h.log(),
        || {
            h.remote_files()
                .is_some_and(|f| want.iter().all(|(p, s)| f.get(p) == Some(s)))
        },
    );
    let big = pattern_bytes(3, 0, 40 << 20);
    want.insert("/big.bin".into(), sha1_hex(&big));
    let puts_before = h.data_puts();
    // close() may wait for the upload: write on a thread, the watchdog bounds it.
    let path = h.mnt().join("big.bin");
    let writer = std::thread::spawn(move || std::fs::write(path, &big));
    common::wait_until(
        "a part upload of big.bin",
        Duration::from_secs(60),
        || h.log(),
        || h.data_puts() > puts_before,
    );
    // In flight: created, a part arriving, not completed.
    assert!(
        h.remote_files()
            .is_some_and(|f| !f.contains_key("/big.bin")),
        "big.bin completed before the kill"
    );
    h.kill_emulator();
    let killed = Instant::now();
    assert!(
        h.remote_files().is_none(),
        "the emulator still answers after SIGKILL"
    );
    // Stay down until the mount has retried the part against the dead port at least once (its
    // first failure is the broken transfer itself), so the test covers a real outage.
    common::wait_until(
        "the mount to retry into the outage",
        Duration::from_secs(30),
        || h.log(),
        || h.daemon_log().matches("part upload failed").count() >= 2,
    );
    let outage = killed.elapsed();
    // Same port and data dir; no throttle this time.
    let current = h.start_emulator(&[]);
    // It offers the refresh token the client holds (rotated at mount time), not a new one.
    let store: Value = serde_json::from_str(
        &std::fs::read_to_string(h.temp.path().join("state/token.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(store["refresh_token"], current.as_str());
    assert_ne!(current, token);
    let restarted = killed.elapsed();
    common::wait_until(
        "every file with its SHA-1 on the restarted drive",
        Duration::from_secs(120),
        || format!("{:?}\n{}", h.remote_files(), h.log()),
        || h.remote_files().as_ref() == Some(&want),
    );
    let healed = killed.elapsed();
    writer
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("writing big.bin through the mount failed: {e}\n{}", h.log()));
    let before = local_tree(&h.mnt());
    assert_eq!(
        before
            .iter()
            .map(|(p, (_, s))| (p.clone(), s.clone()))
            .collect::<BTreeMap<_, _>>(),
        want
    );
    // A fresh mount (the token store holds the rotated token) sees the same tree.
    h.unmount();
    h.mount(&token);
    assert_eq!(local_tree(&h.mnt()), before);
    eprintln!(
        "restart test: emulator down {outage:?}, back after {restarted:?}, drive complete \
         {healed:?} after the kill, {:?} in all",
        started.elapsed()
    );
    if std::env::var_os("RESTART_TEST_LOG").is_some() {
        eprintln!("{}", h.daemon_log());
    }
}
