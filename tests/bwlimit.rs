//! Bandwidth limits through the kernel against the emulator: `--bwlimit-download` and
//! `--bwlimit-upload` hold the rate across the mount's connections, `alipanfs set` changes them
//! on the running mount, and `status` shows them (and the bytes received per open file).
//! The bounds are the (a 100 MiB read under 20M at ≤ 21 MiB/s); figures are printed.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

const MIB: f64 = (1 << 20) as f64;

fn runtime_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("alipanfs-bwlimit-test-{}", std::process::id()));
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

fn set(m: &Mount, kv: &str) -> String {
    let o = cli(&["set", m.dir.to_str().unwrap(), kv]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn status_json(m: &Mount) -> serde_json::Value {
    let o = cli(&["status", "--json", m.dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

/// Reads the whole file; MiB/s.
fn read_rate(path: &Path, size: u64) -> f64 {
    let started = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, size, "{} read whole", path.display());
    size as f64 / MIB / started.elapsed().as_secs_f64()
}

#[test]
fn download_limit_holds_and_set_changes_it_on_the_running_mount() {
    runtime_dir();
    let mut sizes = Vec::new();
    let m = mount_with(
        |_| {},
        |e| {
            for (i, mib) in [100u64, 100, 30].into_iter().enumerate() {
                e.seed_pattern_file("root", &format!("f{i}.bin"), mib << 20, 11 + i as u64);
                sizes.push(mib << 20);
            }
        },
        &["--bwlimit-download", "20M", "--cache-size", "0"],
    );
    let st = status_json(&m);
    assert_eq!(st["bwlimit_download"], 20u64 << 20, "{st}");
    assert_eq!(st["bwlimit_upload"], 0, "{st}");
    let table = cli(&["status", m.dir.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&table.stdout);
    assert!(
        out.contains("limits: download 20 MiB/s, upload off"),
        "{out}"
    );

    // Limited, with `status` looking at the bytes received while it reads.
    let path = m.path("f0.bin");
    let size = sizes[0];
    let reader = std::thread::spawn(move || read_rate(&path, size));
    let mut received = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1200));
        let st = status_json(&m);
        if let Some(d) = st["downloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == "f0.bin")
        {
            received.push(d["received"].as_u64().unwrap());
        }
    }
    let limited = reader.join().unwrap();
    eprintln!("100 MiB read under --bwlimit-download 20M: {limited:.2} MiB/s; received seen by status: {received:?}");
    assert!(limited <= 21.0, "{limited:.2} MiB/s under a 20 MiB/s limit");
    assert!(
        received.len() >= 2 && received.windows(2).all(|w| w[1] > w[0]) && received[0] > 0,
        "bytes received per open file rise: {received:?}"
    );

    // Lifted on the running mount: faster.
    assert!(set(&m, "bwlimit-download=0").ends_with("bwlimit-download=off"));
    let unlimited = read_rate(&m.path("f1.bin"), sizes[1]);
    eprintln!("100 MiB read unlimited: {unlimited:.2} MiB/s");
    assert!(
        unlimited > limited * 1.2,
        "unlimited {unlimited:.2} MiB/s vs limited {limited:.2} MiB/s"
    );

    // Lowered on the running mount: the new limit holds.
    assert!(set(&m, "bwlimit-download=10M").ends_with("bwlimit-download=10 MiB/s"));
    assert_eq!(status_json(&m)["bwlimit_download"], 10u64 << 20);
    let lowered = read_rate(&m.path("f2.bin"), sizes[2]);
    eprintln!("30 MiB read after `set bwlimit-download=10M`: {lowered:.2} MiB/s");
    assert!(lowered <= 10.5, "{lowered:.2} MiB/s under a 10 MiB/s limit");
}

/// Writes `mib` MiB of random bytes to `name` and waits (`alipanfs sync`) until the emulator
/// holds them; MiB/s from close to verified on the drive.
fn upload_rate(m: &Mount, name: &str, mib: u64) -> f64 {
    let src = m.cache_dir.with_file_name(format!("{name}.src"));
    sh(&format!(
        "head -c {mib}M /dev/urandom > '{}'",
        src.display()
    ));
    let want = sha1_of(&src);
    std::fs::copy(&src, m.path(name)).unwrap();
    let started = Instant::now();
    let o = cli(&["sync", "--timeout", "120", m.path(name).to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let took = started.elapsed().as_secs_f64();
    let remote = m.remote(name).expect("on the drive");
    assert_eq!(remote.size, mib << 20);
    assert_eq!(
        remote.sha1.as_deref().map(str::to_lowercase),
        Some(want.to_lowercase()),
        "the drive holds the bytes written"
    );
    mib as f64 / took
}

#[test]
fn upload_limit_holds_at_the_emulator_and_set_changes_it() {
    runtime_dir();
    let m = mount_with(
        |_| {},
        |_| {},
        &[
            "--upload-while-writing",
            "off",
            "--part-size",
            "1M",
            "--upload-drain-timeout",
            "1",
        ],
    );
    // A limit well under what a debug build on a busy machine uploads, so "faster" holds there.
    let unlimited = upload_rate(&m, "a.bin", 8);
    assert!(set(&m, "bwlimit-upload=1M").ends_with("bwlimit-upload=1 MiB/s"));
    assert_eq!(status_json(&m)["bwlimit_upload"], 1u64 << 20);
    let limited = upload_rate(&m, "b.bin", 8);
    eprintln!("8 MiB upload: unlimited {unlimited:.2} MiB/s, under `set bwlimit-upload=1M` {limited:.2} MiB/s");
    assert!(limited <= 1.05, "{limited:.2} MiB/s under a 1 MiB/s limit");
    assert!(
        unlimited > limited * 1.2,
        "unlimited {unlimited:.2} vs limited {limited:.2}"
    );
}

#[test]
fn set_refuses_unknown_keys_and_bad_rates_with_one_line() {
    runtime_dir();
    let m = mount_with(|_| {}, |_| {}, &["--bwlimit-upload", "1M"]);
    let mp = m.dir.to_str().unwrap();
    for (kv, expect) in [
        ("speed=1M", "unknown setting"),
        ("bwlimit-upload=fast", "bad rate"),
        ("bwlimit-upload", "not KEY=VALUE"),
        ("log-level=[[[", "bad log level"),
    ] {
        let o = cli(&["set", mp, kv]);
        assert_eq!(o.status.code(), Some(1), "{kv}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{kv}: {err}");
        assert!(err.contains(expect), "{kv}: {err}");
    }
    // Nothing changed, and the log level can be changed.
    assert_eq!(status_json(&m)["bwlimit_upload"], 1u64 << 20);
    assert!(set(&m, "log-level=debug").ends_with("log-level=debug"));
    assert_eq!(status_json(&m)["log_level"], "debug");
}
