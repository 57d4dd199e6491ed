//! `alipanfs status` and `alipanfs sync` against a real mount of the emulator, through the
//! control socket.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use alipanfs::hashing::sha1_hex;
use common::*;

/// One runtime directory for this test binary's mounts and clients (kept off /run, and shared
/// so the env var is set once, before any daemon starts).
fn runtime_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("alipanfs-control-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
        dir
    })
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime_dir())
        .output()
        .expect("alipanfs runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn status_json(m: &Mount) -> serde_json::Value {
    let o = cli(&["status", "--json", m.dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

fn sent_of(status: &serde_json::Value, path: &str) -> Option<u64> {
    status["uploads"]
        .as_array()?
        .iter()
        .find(|u| u["path"] == path)
        .and_then(|u| u["sent"].as_u64())
}

#[test]
fn status_shows_the_bytes_sent_of_an_upload_rising() {
    runtime_dir();
    let m = mount_with(
        // 256 MiB at 32 MiB/s: about 8 s on the wire.
        |c| c.faults.upload_bandwidth = Some(32 << 20),
        |_| {},
        &[
            "--part-size",
            "4M",
            "--upload-while-writing",
            "off",
            "--upload-drain-timeout",
            "1",
        ],
    );
    sh(&format!(
        "head -c 256M /dev/urandom > '{}'",
        m.path("big.bin").display()
    ));
    let mut first = 0;
    m.wait_for(
        "the upload to send its first part",
        Duration::from_secs(30),
        || {
            first = sent_of(&status_json(&m), "big.bin").unwrap_or(0);
            first > 0
        },
    );
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    let status = status_json(&m);
    let latency = t.elapsed();
    let second = sent_of(&status, "big.bin").expect("still uploading");
    assert!(second > first, "bytes sent rose: {first} then {second}");
    let up = &status["uploads"][0];
    assert_eq!(up["size"], 256u64 << 20);
    assert_eq!(up["state"], "uploading");
    assert!(status["api"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["endpoint"] == "openFile/create"));
    assert!(status["token_age_secs"].is_u64(), "{status}");
    eprintln!("status latency: {latency:?}");
    // The human table names it too, and `status` with no argument finds this mount.
    let o = cli(&["status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("big.bin") && out.contains("uploading"),
        "{}",
        text(&o)
    );
}

#[test]
fn sync_returns_once_the_drive_holds_the_file() {
    runtime_dir();
    let m = mount_with(
        // 8 MiB at 4 MiB/s: sync has to wait about 2 s.
        |c| c.faults.upload_bandwidth = Some(4 << 20),
        |_| {},
        &["--part-size", "1M", "--upload-drain-timeout", "1"],
    );
    std::fs::create_dir(m.path("photos")).unwrap();
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = std::fs::File::create(m.path("photos/a.jpg")).unwrap();
    f.write_all(&data).unwrap();
    drop(f);
    // A bounded wait gives up naming the file (sync of the folder, from outside it).
    let o = cli(&[
        "sync",
        "--timeout",
        "0.5",
        m.path("photos").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("photos/a.jpg") && err.contains("still uploading"),
        "{}",
        text(&o)
    );
    let t = Instant::now();
    let o = cli(&["sync", m.path("photos/a.jpg").to_str().unwrap()]);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    let remote = m
        .remote("photos/a.jpg")
        .expect("on the drive when sync returns");
    assert_eq!(remote.sha1.as_deref(), Some(sha1_hex(&data).as_str()));
    assert!(
        took > Duration::from_secs(1),
        "sync waited for the upload: {took:?}"
    );
    // Nothing pending: sync of the whole mount (from inside it) returns at once.
    let o = Command::new(BIN)
        .arg("sync")
        .current_dir(m.path("photos"))
        .env("XDG_RUNTIME_DIR", runtime_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn sync_names_a_file_the_full_drive_refuses() {
    runtime_dir();
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_pattern_file("root", "filler.bin", 2 << 20, 1);
        },
        &["--delete-permanently", "--upload-drain-timeout", "1"],
    );
    // Full after mounting: the write goes through (the free-space estimate is older), the
    // upload then fails with a quota error and the queue would retry it forever.
    m.emulator.set_quota(3 << 20);
    std::fs::write(m.path("too-big.bin"), vec![9u8; 2 << 20]).unwrap();
    let o = cli(&[
        "sync",
        "--timeout",
        "60",
        m.path("too-big.bin").to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}\n{}", text(&o), m.full_log());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("too-big.bin"), "{}", text(&o));
    assert!(
        err.to_lowercase().contains("quota") || err.contains("full"),
        "{}",
        text(&o)
    );
    assert_eq!(
        err.lines().count(),
        1,
        "one line per failed file: {}",
        text(&o)
    );
    // status shows why it waits.
    let status = status_json(&m);
    assert_eq!(status["uploads"][0]["state"], "blocked", "{status}");
}

#[test]
fn another_user_cannot_use_the_control_socket() {
    let dir = runtime_dir();
    let m = mount_with(|_| {}, |_| {}, &[]);
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(args)
            .env("XDG_RUNTIME_DIR", dir)
            .output()
            .expect("setpriv runs")
    };
    let mp = m.dir.to_str().unwrap();
    // The runtime directory (0700) keeps others out...
    let o = as_nobody(&["status", mp]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("permission denied"),
        "{}",
        text(&o)
    );
    // ...and so does the socket's mode...
    let sockets = dir.join("alipanfs");
    sh(&format!(
        "chmod 755 '{0}' && chmod 644 '{0}'/*.json",
        sockets.display()
    ));
    let o = as_nobody(&["status", mp]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("permission denied"),
        "{}",
        text(&o)
    );
    // ...and the daemon's check of the peer's uid, should the socket be opened up.
    sh(&format!("chmod 666 '{0}'/*.sock", sockets.display()));
    let o = as_nobody(&["sync", mp]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("permission denied") && err.contains("uid 65534"),
        "{}",
        text(&o)
    );
    assert_eq!(err.lines().count(), 1, "{}", text(&o));
    sh(&format!(
        "chmod 700 '{0}' && chmod 600 '{0}'/*",
        sockets.display()
    ));
    // The owner still gets through, and the daemon survived the refusals.
    assert!(status_json(&m)["mountpoint"] == mp);
    // A bad request gets an error answer, not a dead daemon.
    let index: serde_json::Value = std::fs::read_dir(&sockets)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .find(|v: &serde_json::Value| v["mountpoint"] == mp)
        .expect("an index file names the mount point");
    let socket = PathBuf::from(index["socket"].as_str().unwrap());
    for bad in ["not json\n", "{\"op\":\"format_drive\"}\n"] {
        let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        conn.write_all(bad.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(conn), &mut answer).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["type"], "error", "{answer}");
    }
    assert!(status_json(&m)["mountpoint"] == mp);
    // The socket and its index go at unmount.
    m.unmount();
    assert!(!socket.exists(), "socket removed at unmount");
    let o = cli(&["status", mp]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no alipanfs mount found"),
        "{}",
        text(&o)
    );
}

#[test]
fn errors_are_one_line_when_no_daemon_answers() {
    let dir = runtime_dir();
    let o = cli(&["status", "/nonexistent/mount"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no alipanfs mount found"), "{}", text(&o));
    assert_eq!(err.lines().count(), 1, "{}", text(&o));
    // A dead daemon's leftovers: an index naming a socket nobody listens on.
    let sockets = dir.join("alipanfs");
    std::fs::create_dir_all(&sockets).unwrap();
    let dead = sockets.join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    std::fs::write(
        sockets.join("dead.json"),
        format!(
            r#"{{"mountpoint":"/dead/mount","pid":1,"socket":"{}"}}"#,
            dead.display()
        ),
    )
    .unwrap();
    let o = cli(&["status", "/dead/mount/x"]);
    let _ = std::fs::remove_file(sockets.join("dead.json"));
    let _ = std::fs::remove_file(&dead);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not answering"), "{}", text(&o));
    assert_eq!(err.lines().count(), 1, "{}", text(&o));
    // A daemon killed with SIGKILL: its pid is gone, so its leftovers are removed silently.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    let index = sockets.join("killed.json");
    std::fs::write(
        &index,
        format!(
            r#"{{"mountpoint":"/killed/mount","pid":{pid},"socket":"{}"}}"#,
            dead.display()
        ),
    )
    .unwrap();
    let o = cli(&["status", "/killed/mount/x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no alipanfs mount found"), "{}", text(&o));
    assert!(
        !index.exists() && !dead.exists(),
        "stale index and socket removed"
    );
}

/// The issue's case: a 200 MiB copy uploading while written, at 20 MiB/s (the upload limit).
/// `sent` must rise between calls a second apart, while the file is still written (state
/// `streaming`) and after close while its stream finishes (the job's state).
#[test]
fn status_shows_a_streamed_copy_sending_from_its_first_bytes() {
    runtime_dir();
    let m = mount_with(
        |_| {},
        |_| {},
        &[
            "--bwlimit-upload",
            "20M",
            "--upload-while-writing",
            "8M",
            "--part-size",
            "8M",
            "--upload-drain-timeout",
            "1",
        ],
    );
    let src = m.cache_dir.with_file_name("copy.src");
    sh(&format!("head -c 200M /dev/urandom > '{}'", src.display()));
    let want = sha1_hex(&std::fs::read(&src).unwrap());
    let dst = m.path("copy.bin");
    // A writer slower than a disk copy (about 40 MiB/s), so the first seconds are "while written".
    let writer = std::thread::spawn(move || {
        let data = std::fs::read(&src).unwrap();
        let mut f = std::fs::File::create(&dst).unwrap();
        for chunk in data.chunks(4 << 20) {
            f.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut samples: Vec<(String, u64, u64)> = Vec::new();
    let started = Instant::now();
    while samples.len() < 8 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        let st = status_json(&m);
        if let Some(u) = st["uploads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["path"] == "copy.bin")
        {
            samples.push((
                u["state"].as_str().unwrap().to_string(),
                u["sent"].as_u64().unwrap(),
                u["size"].as_u64().unwrap(),
            ));
        }
    }
    writer.join().unwrap();
    eprintln!("(state, sent, size) once a second: {samples:?}");
    assert!(
        samples.iter().any(|(s, n, _)| s == "streaming" && *n > 0),
        "bytes sent while the file is still written: {samples:?}"
    );
    assert!(samples.len() >= 6, "{samples:?}");
    // While written, the stream can only send whole parts the writer is past (a writer slowed
    // by a busy machine may leave it waiting), and at a part's end it waits for the drive's
    // answer (the emulator hashes the part first; slow in a debug build): one call may see no
    // rise then, never more.
    let stalls: Vec<_> = samples
        .windows(2)
        .filter(|w| w[1].1 <= w[0].1)
        .filter(|w| !(w[1].0 == "streaming" && w[1].2 < w[1].1 + 2 * (8 << 20)))
        .collect();
    assert!(samples[0].1 > 0, "sent from the first call: {samples:?}");
    assert!(stalls.len() <= 1, "sent rises a second later: {samples:?}");
    let o = cli(&[
        "sync",
        "--timeout",
        "60",
        m.path("copy.bin").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let remote = m.remote("copy.bin").expect("on the drive");
    assert_eq!(remote.size, 200 << 20);
    assert_eq!(
        remote.sha1.as_deref().map(str::to_lowercase),
        Some(want.to_lowercase())
    );
}
