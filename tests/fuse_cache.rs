//! The data cache on disk and kernel passthrough, through the kernel: files changed on the
//! drive, kill -9 during a fill, re-reads after a remount, passthrough opens under eviction
//! pressure, and `--cache-size 0`.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use alipanfs::cache::store::{self, Index, BLOCK};
use alipanfs::emulator::pattern_bytes;
use common::*;

const MIB: u64 = 1 << 20;

/// The control sockets of these mounts live in a folder of this test process.
fn runtime_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("alipanfs-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
        dir
    })
}

fn mount(seed: impl FnOnce(&Emulator), args: &[&str]) -> Mount {
    runtime_dir();
    mount_with(|_| {}, seed, args)
}

fn status(m: &Mount) -> serde_json::Value {
    let o = Command::new(BIN)
        .args(["status", "--json", m.dir.to_str().unwrap()])
        .env("XDG_RUNTIME_DIR", runtime_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn cached_blocks(m: &Mount) -> u64 {
    status(m)["cache"]["blocks"].as_u64().unwrap_or(0)
}

/// The one drive namespace folder under `<cache-dir>/data`.
fn ns_dir(m: &Mount) -> PathBuf {
    let data = m.cache_dir.join("data");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap_or_else(|e| panic!("{}: {e}", data.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

/// The cache key of the drive file at `path` as the emulator holds it now.
fn key_of(m: &Mount, path: &str) -> String {
    let e = m.remote(path).unwrap();
    store::key_of(&e.file_id, &format!("sha1:{}", e.sha1.unwrap()))
}

/// `alipanfs_NAME` summed over the series whose labels include `labels`, from the mount's
/// `/metrics` (mounted with `--metrics-listen 127.0.0.1:0`).
fn metric(m: &Mount, name: &str, labels: &str) -> f64 {
    let log = m.full_log();
    let url = log
        .lines()
        .find_map(|l| {
            let at = l.find("metrics on http://")?;
            Some(
                l[at + "metrics on ".len()..]
                    .split_whitespace()
                    .next()?
                    .to_string(),
            )
        })
        .expect("metrics address in the log");
    sh(&format!("curl -sf {url}"))
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

#[test]
fn a_file_changed_on_the_drive_is_read_new_never_from_old_blocks() {
    let size = 3 * MIB + 77;
    let mut id = String::new();
    let m = mount(
        |e| id = e.seed_pattern_file("root", "c.bin", size, 1),
        &["--dir-cache-ttl", "1", "--attr-timeout", "0"],
    );
    let path = m.path("c.bin");
    let old_sha = m.remote("c.bin").unwrap().sha1.unwrap();
    assert_eq!(sha1_of(&path), old_sha);
    m.wait_for("the file cached", Duration::from_secs(20), || {
        cached_blocks(&m) >= 4
    });
    let old_key = key_of(&m, "c.bin");
    assert!(store::data_path(&ns_dir(&m), &old_key).exists());

    let new_body = pattern_bytes(2, 0, size as usize);
    m.emulator.replace_content(&id, &new_body);
    let new_sha = m.remote("c.bin").unwrap().sha1.unwrap();
    assert_ne!(new_sha, old_sha);
    // Until the listing is refreshed the mount may show the old version; then only the new.
    m.wait_for("the new content", Duration::from_secs(30), || {
        let got = sha1_of(&path);
        assert!(got == old_sha || got == new_sha, "neither version: {got}");
        got == new_sha
    });
    for _ in 0..3 {
        assert_eq!(sha1_of(&path), new_sha);
        assert_eq!(
            read_at(&path, MIB - 5, 10),
            new_body[MIB as usize - 5..][..10]
        );
    }
    m.wait_for(
        "the old version's files removed",
        Duration::from_secs(10),
        || {
            !store::data_path(&ns_dir(&m), &old_key).exists()
                && !store::idx_path(&ns_dir(&m), &old_key).exists()
        },
    );
}

#[test]
fn kill9_during_a_fill_then_a_remount_is_byte_exact_and_a_torn_block_is_fetched_again() {
    let size = 24 * MIB + 3;
    let names = ["k0.bin", "k1.bin", "k2.bin"];
    let (emulator, temp) = emulator_with(|c| {
        // Slow enough that the fill is still going when the daemon is killed.
        c.faults.bandwidth_per_conn = Some(8 * MIB);
    });
    for (i, n) in names.iter().enumerate() {
        emulator.seed_pattern_file("root", n, size, 10 + i as u64);
    }
    runtime_dir();
    let m = MountBuilder::new(emulator, temp).mount();
    let readers: Vec<_> = names
        .iter()
        .map(|n| {
            let p = m.path(n);
            std::thread::spawn(move || {
                // Ends with an error when the daemon dies.
                let _ = std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut std::io::sink());
            })
        })
        .collect();
    // Blocks are recorded after a periodic sync: wait for 12 recorded (more are written).
    let recorded_blocks = || -> usize {
        let data = m.cache_dir.join("data");
        let Ok(dirs) = std::fs::read_dir(&data) else {
            return 0;
        };
        let ns: Vec<PathBuf> = dirs.filter_map(|e| Some(e.ok()?.path())).collect();
        let Some(ns) = ns.first() else { return 0 };
        names
            .iter()
            .filter_map(|n| Index::load(&store::idx_path(ns, &key_of(&m, n))).ok()?)
            .map(|l| l.blocks.len())
            .sum()
    };
    m.wait_for("12 blocks recorded", Duration::from_secs(60), || {
        recorded_blocks() >= 12
    });
    m.kill9();
    for r in readers {
        r.join().unwrap();
    }
    // Every block recorded before the kill is whole on disk: its bytes match its checksum.
    let ns = ns_dir(&m);
    let mut checked = 0;
    for n in names {
        let key = key_of(&m, n);
        let Ok(Some(loaded)) = Index::load(&store::idx_path(&ns, &key)) else {
            continue;
        };
        let data = std::fs::File::open(store::data_path(&ns, &key)).unwrap();
        for (b, rec) in &loaded.blocks {
            let bytes = store::read_exact_at(&data, b * BLOCK, rec.len as usize).unwrap();
            assert_eq!(store::crc(&bytes), rec.crc, "{n}: recorded block {b} torn");
            checked += 1;
        }
    }
    assert!(checked > 0, "no block recorded before the kill");

    // A recorded block of one file, corrupted by hand (as a bad disk would).
    let mut recorded = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let key = key_of(&m, n);
        if let Ok(Some(loaded)) = Index::load(&store::idx_path(&ns, &key)) {
            let present: Vec<u64> = loaded.blocks.keys().copied().collect();
            eprintln!("{n}: recorded blocks {present:?}");
            recorded.push((i, key, present));
        }
    }
    let torn = recorded
        .iter()
        .find(|(_, _, p)| p.len() >= 2)
        .map(|(i, key, p)| (*i, key.clone(), p[1]));
    // An intact block followed by two more, so that the read-ahead a read of it may start is
    // served from the cache too: any data GET then means the block was not used.
    let intact = recorded.iter().find_map(|(i, _, p)| {
        p.iter()
            .copied()
            .filter(|&b| torn.as_ref().is_none_or(|t| t.0 != *i || b > t.2))
            .find(|&b| p.contains(&(b + 1)) && p.contains(&(b + 2)))
            .map(|b| (*i, b))
    });
    let (ti, tkey, tblock) = torn.expect("a file with two recorded blocks");
    let data_file = std::fs::OpenOptions::new()
        .write(true)
        .open(store::data_path(&ns, &tkey))
        .unwrap();
    data_file
        .write_all_at(&[0xAB; 4096], tblock * BLOCK + 4096)
        .unwrap();
    drop(data_file);

    // The daemon reads this file itself (passthrough off), so it checks the block.
    m.mount_again(&["--passthrough", "off"]);
    let seed = |i: usize| 10 + i as u64;
    let (ii, iblock) = intact.expect("three recorded blocks in a row, past the torn one");
    let before = m.calls();
    let got = read_at(&m.path(names[ii]), iblock * BLOCK, 64 * 1024);
    assert_eq!(got, pattern_bytes(seed(ii), iblock * BLOCK, 64 * 1024));
    let d = m.calls().since(&before);
    assert_eq!(
        d.get("data/get"),
        0,
        "an intact cached block was fetched: {d}"
    );

    let before = m.calls();
    let off = tblock * BLOCK + 4096;
    let got = read_at(&m.path(names[ti]), off, 64 * 1024);
    assert_eq!(
        got,
        pattern_bytes(seed(ti), off, 64 * 1024),
        "torn block served"
    );
    let d = m.calls().since(&before);
    assert!(
        d.get("data/get") >= 1,
        "the torn block was not fetched again: {d}"
    );
    assert!(m.full_log().contains("fails its checksum"), "{}", m.log());

    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            sha1_of(&m.path(n)),
            m.remote(n).unwrap().sha1.unwrap(),
            "{n}"
        );
        for k in 0..8u64 {
            let off = (k * 7_919_993 + i as u64 * 104_729) % (size - 300_000);
            let len = 1 + (k * 37_813 % 300_000) as usize;
            assert_eq!(
                read_at(&m.path(n), off, len),
                pattern_bytes(seed(i), off, len),
                "{n} at {off}+{len}"
            );
        }
    }
}

#[test]
fn a_full_read_then_a_remount_rereads_with_no_data_get() {
    let sizes = [5 * MIB + 3, 9 * MIB];
    let m = mount(
        |e| {
            e.seed_pattern_file("root", "r0.bin", sizes[0], 20);
            e.seed_pattern_file("root", "r1.bin", sizes[1], 21);
        },
        &[],
    );
    for n in ["r0.bin", "r1.bin"] {
        assert_eq!(sha1_of(&m.path(n)), m.remote(n).unwrap().sha1.unwrap());
    }
    m.wait_for("both files cached", Duration::from_secs(30), || {
        cached_blocks(&m) >= 6 + 9
    });
    m.restart(&[]);
    let before = m.calls();
    for n in ["r0.bin", "r1.bin"] {
        assert_eq!(sha1_of(&m.path(n)), m.remote(n).unwrap().sha1.unwrap());
    }
    let d = m.calls().since(&before);
    assert_eq!(d.get("data/get"), 0, "{d}");
    assert_eq!(d.get("openFile/getDownloadUrl"), 0, "{d}");
    let st = status(&m);
    assert!(
        st["cache"]["hit_blocks"].as_u64().unwrap()
            + st["cache"]["passthrough_opens"].as_u64().unwrap()
            > 0,
        "{st}"
    );
}

#[test]
fn a_passthrough_open_reads_right_with_no_fuse_read_and_survives_eviction_pressure() {
    let (a, b) = (6 * MIB + 5, 14 * MIB);
    let m = mount(
        |e| {
            e.seed_pattern_file("root", "a.bin", a, 31);
            e.seed_pattern_file("root", "b.bin", b, 32);
        },
        &["--cache-size", "12M", "--metrics-listen", "127.0.0.1:0"],
    );
    assert_eq!(
        sha1_of(&m.path("a.bin")),
        m.remote("a.bin").unwrap().sha1.unwrap()
    );
    m.wait_for("a.bin cached", Duration::from_secs(20), || {
        cached_blocks(&m) >= 7
    });

    let opens = metric(&m, "alipanfs_passthrough_opens", "");
    let reads = metric(&m, "alipanfs_fuse_ops_total", "op=\"read\"");
    let f = std::fs::File::open(m.path("a.bin")).unwrap();
    assert_eq!(metric(&m, "alipanfs_passthrough_opens", ""), opens + 1.0);
    let mut whole = Vec::new();
    std::io::Read::read_to_end(&mut &f, &mut whole).unwrap();
    assert_eq!(whole, pattern_bytes(31, 0, a as usize));
    assert_eq!(
        metric(&m, "alipanfs_fuse_ops_total", "op=\"read\""),
        reads,
        "reads reached the daemon"
    );
    assert!(m.full_log().contains("passthrough open"), "{}", m.log());

    // b.bin does not fit beside the pinned a.bin: the cache evicts what it may, a.bin stays.
    let before = m.calls();
    assert_eq!(
        sha1_of(&m.path("b.bin")),
        m.remote("b.bin").unwrap().sha1.unwrap()
    );
    assert!(m.calls().since(&before).get("data/get") > 0);
    for k in 0..20u64 {
        let off = k * 313_131 % (a - 70_000);
        let mut buf = vec![0u8; 65_536];
        f.read_exact_at(&mut buf, off).unwrap();
        assert_eq!(buf, pattern_bytes(31, off, buf.len()), "at {off}");
    }
    let key = key_of(&m, "a.bin");
    assert!(store::data_path(&ns_dir(&m), &key).exists());
    let used = alipanfs::cache::disk_usage(&m.cache_dir.join("data"));
    assert!(
        used <= 12 * MIB + BLOCK,
        "{used} bytes on disk over 12M + a block"
    );
    drop(f);
}

#[test]
fn cache_size_0_behaves_as_without_a_cache() {
    let size = 3 * MIB + 1;
    let m = mount(
        |e| {
            e.seed_pattern_file("root", "z.bin", size, 40);
        },
        &["--cache-size", "0"],
    );
    let sha = m.remote("z.bin").unwrap().sha1.unwrap();
    assert_eq!(sha1_of(&m.path("z.bin")), sha);
    let before = m.calls();
    assert_eq!(sha1_of(&m.path("z.bin")), sha);
    assert!(
        m.calls().since(&before).get("data/get") > 0,
        "served from a cache"
    );
    assert!(status(&m)["cache"].is_null());
    let data = m.cache_dir.join("data");
    assert!(
        !data.exists() || std::fs::read_dir(&data).unwrap().next().is_none(),
        "files under {}",
        data.display()
    );
}

/// The cache's block count once the writer has settled (blocks are recorded after a periodic
/// sync): the same figure twice, 1.5 s apart.
fn settled_blocks(m: &Mount) -> u64 {
    let mut last = cached_blocks(m);
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(1500));
        let now = cached_blocks(m);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the cache writer never settled");
}

#[test]
fn a_first_read_with_the_cache_on_is_byte_exact_and_leaves_the_file_fully_cached() {
    let size = 40 * MIB + 5;
    let blocks = size.div_ceil(BLOCK);
    let (emulator, temp) = emulator_with(|c| {
        // A link the local disk keeps up with.
        c.faults.bandwidth_per_conn = Some(32 * MIB);
    });
    emulator.seed_pattern_file("root", "first.bin", size, 50);
    runtime_dir();
    let m = MountBuilder::new(emulator, temp).mount();
    let sha = m.remote("first.bin").unwrap().sha1.unwrap();
    assert_eq!(sha1_of(&m.path("first.bin")), sha);
    m.wait_for("every block cached", Duration::from_secs(30), || {
        cached_blocks(&m) == blocks
    });
    // Every block on disk and recorded: a remount re-reads it with no data GET.
    m.restart(&["--passthrough", "off"]);
    let before = m.calls();
    assert_eq!(sha1_of(&m.path("first.bin")), sha);
    let d = m.calls().since(&before);
    assert_eq!(d.get("data/get"), 0, "{d}");
}

#[test]
fn a_second_pass_fills_what_the_first_skipped() {
    let size = 96 * MIB;
    let blocks = size / BLOCK;
    // The smallest memory budget: bytes the writer has no room for are skipped, not waited for.
    let m = mount(
        |e| {
            e.seed_pattern_file("root", "two.bin", size, 60);
        },
        &[
            "--memory-limit",
            "8M",
            "--passthrough",
            "off",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let sha = m.remote("two.bin").unwrap().sha1.unwrap();
    let mut passes = 0;
    let mut after = Vec::new();
    loop {
        let cached = settled_blocks(&m);
        after.push(cached);
        if cached == blocks {
            break;
        }
        passes += 1;
        assert!(passes <= 6, "passes never filled the cache: {after:?}");
        let hits_before = metric(&m, "alipanfs_cache_hits", "");
        assert_eq!(sha1_of(&m.path("two.bin")), sha, "pass {passes}");
        // A pass reads what earlier ones cached from the cache, and fetches the rest.
        let hits = metric(&m, "alipanfs_cache_hits", "") - hits_before;
        assert!(
            hits >= cached as f64,
            "pass {passes}: {hits} block hits with {cached} blocks cached before it"
        );
    }
    // What the passes did not cache is counted, the same in status and in the metrics.
    let skipped = status(&m)["cache"]["skipped_bytes"].as_u64().unwrap();
    assert_eq!(
        skipped as f64,
        metric(&m, "alipanfs_cache_skipped_bytes", "")
    );
    eprintln!("blocks cached after each pass: {after:?}; skipped {skipped} bytes");
    if skipped > 0 {
        let text = Command::new(BIN)
            .args(["status", m.dir.to_str().unwrap()])
            .env("XDG_RUNTIME_DIR", runtime_dir())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("; skipped "), "{text}");
    }
    assert!(passes >= 1);
    let before = m.calls();
    assert_eq!(sha1_of(&m.path("two.bin")), sha);
    assert_eq!(m.calls().since(&before).get("data/get"), 0);
}
