//! Stress (issue 19): many threads at once through the kernel against the emulator. Close and
//! reopen while older versions upload, namespace churn in shared folders, bursts of closes, a
//! listing beside a 2 GiB close, and the daemon's memory over 20,000 files. Each test checks the
//! mount and the drive after `alipanfs sync`.

mod common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alipanfs::hashing::sha1_hex;
use common::*;

const SYNC_WAIT: Duration = Duration::from_secs(300);

/// xorshift: reproducible per-thread randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 24) as u8).collect()
    }
}

/// A mount of a fresh emulator with a deadline of `secs` seconds.
/// A mount with the default options, plus those in `ALIPANFS_STRESS_ARGS` (split at spaces;
/// e.g. `--poll-interval 1 --dir-cache-ttl 2` to make a race with the poller likelier).
fn stress_mount(secs: u64) -> Mount {
    let (emulator, temp) = emulator_with(|_| {});
    let extra = std::env::var("ALIPANFS_STRESS_ARGS").unwrap_or_default();
    extra
        .split_whitespace()
        .fold(MountBuilder::new(emulator, temp), |b, a| b.arg(a))
        .deadline(Duration::from_secs(secs))
        .mount()
}

/// A mount whose API calls are not rate-limited (neither by the emulator nor by the client):
/// for tests of thousands of uploads that measure hand-offs and memory, not the rate budget
/// (at the published 15 calls/s, 20,000 uploads take most of an hour).
fn unthrottled_mount(secs: u64) -> Mount {
    let (emulator, temp) = emulator_with(|c| c.rate_other_per_sec = 0.0);
    MountBuilder::new(emulator, temp)
        .deadline(Duration::from_secs(secs))
        .arg("--api-rate")
        .arg("0")
        .mount()
}

fn is_enoent(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound
}

/// A size mix: mostly small, sometimes a few MiB, so that uploads of older versions are still
/// running when newer versions are closed.
fn mixed_len(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0 => 1 + rng.below(3 << 20) as usize,
        1..=3 => rng.below(256 << 10) as usize,
        _ => rng.below(8 << 10) as usize,
    }
}

/// One worker of the close/reopen test: `ops` operations on its own file (write at an offset,
/// truncate), closing and reopening it every 8 operations as `fsx -c 8` does. Returns the bytes
/// the file must hold, and every failed open.
fn close_reopen_worker(path: PathBuf, seed: u64, ops: usize) -> (Vec<u8>, Vec<String>) {
    let mut rng = Rng::new(seed);
    let mut model: Vec<u8> = Vec::new();
    let mut failures = Vec::new();
    std::fs::write(&path, b"").unwrap();
    let mut file = None;
    for op in 0..ops {
        if file.is_none() {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                Ok(f) => file = Some(f),
                Err(e) => {
                    failures.push(format!("{} op {op}: open: {e}", path.display()));
                    if !is_enoent(&e) {
                        continue;
                    }
                    // Go on with what the test wants: the file back, so later ops still run.
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let f = file.as_ref().unwrap();
        if rng.below(6) == 0 {
            let len = mixed_len(&mut rng) as u64;
            f.set_len(len).unwrap();
            model.resize(len as usize, 0);
        } else {
            let len = mixed_len(&mut rng).max(1);
            let at = rng.below(model.len() as u64 + 4096) as usize;
            let data = rng.bytes(len);
            f.write_all_at(&data, at as u64).unwrap();
            if model.len() < at + len {
                model.resize(at + len, 0);
            }
            model[at..at + len].copy_from_slice(&data);
        }
        if op % 8 == 7 {
            file = None;
        }
    }
    drop(file);
    (model, failures)
}

/// Run the close/reopen workers (and, with `churn`, a thread renaming siblings back and forth
/// and a thread listing the folder in a loop, which must always show every worker's file).
fn close_reopen(workers: usize, ops: usize, churn: bool) {
    let m = stress_mount(900);
    std::fs::create_dir(m.path("w")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = (0..workers).map(|i| format!("f{i}")).collect();
    // Every worker's file exists before the listing loop starts looking for it.
    for n in &names {
        std::fs::write(m.path(&format!("w/{n}")), b"").unwrap();
    }
    let mut side = Vec::new();
    if churn {
        for i in 0..3 {
            std::fs::write(m.path(&format!("w/sib{i}.a")), format!("sibling {i}")).unwrap();
        }
        let (dir, stop2) = (m.path("w"), stop.clone());
        side.push(std::thread::spawn(move || {
            let mut errors = Vec::new();
            let mut n = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                let i = n % 3;
                let (a, b) = if (n / 3) % 2 == 0 {
                    ("a", "b")
                } else {
                    ("b", "a")
                };
                let from = dir.join(format!("sib{i}.{a}"));
                let to = dir.join(format!("sib{i}.{b}"));
                if let Err(e) = std::fs::rename(&from, &to) {
                    errors.push(format!(
                        "rename {} -> {}: {e}",
                        from.display(),
                        to.display()
                    ));
                }
                n += 1;
            }
            errors
        }));
        let (dir, stop2, want) = (m.path("w"), stop.clone(), names.clone());
        side.push(std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                match std::fs::read_dir(&dir) {
                    Ok(rd) => {
                        let seen: Vec<String> = rd
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().to_string())
                            .collect();
                        for w in &want {
                            if !seen.contains(w) && errors.len() < 20 {
                                errors.push(format!("readdir missed {w}: {seen:?}"));
                            }
                        }
                    }
                    Err(e) => errors.push(format!("readdir: {e}")),
                }
            }
            errors
        }));
    }
    let started = Instant::now();
    let handles: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let path = m.path(&format!("w/{n}"));
            std::thread::spawn(move || close_reopen_worker(path, 1000 + i as u64, ops))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::SeqCst);
    let side_errors: Vec<String> = side.into_iter().flat_map(|h| h.join().unwrap()).collect();
    eprintln!(
        "{workers} workers x {ops} ops (churn: {churn}) in {:?}",
        started.elapsed()
    );
    let mut checks = Checks::default();
    for (name, (model, failures)) in names.iter().zip(&results) {
        checks.check(failures.is_empty(), || {
            format!("opens failed: {failures:?}")
        });
        let got = std::fs::read(m.path(&format!("w/{name}"))).unwrap();
        checks.check(sha1_hex(&got) == sha1_hex(model), || {
            format!(
                "{name} in the mount: {} bytes, want {}",
                got.len(),
                model.len()
            )
        });
    }
    checks.check(side_errors.is_empty(), || {
        format!("rename/readdir errors: {side_errors:?}")
    });
    m.sync_all(SYNC_WAIT);
    for (name, (model, _)) in names.iter().zip(&results) {
        let live: Vec<_> = m
            .emulator
            .entries_at(&format!("/w/{name}"))
            .into_iter()
            .filter(|e| !e.trashed)
            .collect();
        checks.check(
            live.len() == 1 && live[0].sha1.as_deref() == Some(sha1_hex(model).as_str()),
            || {
                format!(
                    "{name} on the drive after sync: {live:?}, want {} bytes",
                    model.len()
                )
            },
        );
    }
    let dups = drive_duplicates(&m.emulator);
    checks.check(dups.is_empty(), || {
        format!("duplicate names on the drive: {dups:?}")
    });
    checks.finish();
}

/// Failed 2 runs in 2 before writers joined and left a version in one atomic step (an open
/// racing the previous handle's RELEASE wrote into a version already queued: the drive and
/// the mount then held other bytes at the right length).
#[test]
fn files_closed_and_reopened_thousands_of_times_never_vanish() {
    close_reopen(4, 3000, false);
}

#[test]
fn close_reopen_beside_sibling_renames_and_a_listing_loop_never_vanishes() {
    close_reopen(4, 2000, true);
}

/// What one namespace thread does to a folder, mirrored in `model` (relative path -> bytes,
/// `None` for folders) when the folder is the thread's own.
fn namespace_op(
    root: &Path,
    dir: &str,
    rng: &mut Rng,
    model: Option<&mut BTreeMap<String, Option<Vec<u8>>>>,
) {
    let file = |rng: &mut Rng| format!("{dir}/f{}", rng.below(12));
    let sub = |rng: &mut Rng| format!("{dir}/s{}", rng.below(3));
    let any_file = |rng: &mut Rng| {
        if rng.below(3) == 0 {
            format!("{}/g{}", sub(rng), rng.below(4))
        } else {
            file(rng)
        }
    };
    let mut model = model;
    match rng.below(10) {
        0..=3 => {
            let name = any_file(rng);
            let len = rng.below(64 << 10) as usize;
            let data = rng.bytes(len);
            if std::fs::write(root.join(&name), &data).is_ok() {
                if let Some(m) = model.as_mut() {
                    m.insert(name, Some(data));
                }
            }
        }
        4..=5 => {
            let (from, to) = (any_file(rng), any_file(rng));
            if std::fs::rename(root.join(&from), root.join(&to)).is_ok() {
                if let Some(m) = model.as_mut() {
                    if let Some(v) = m.remove(&from) {
                        m.insert(to, v);
                    }
                }
            }
        }
        6..=7 => {
            let name = any_file(rng);
            if std::fs::remove_file(root.join(&name)).is_ok() {
                if let Some(m) = model.as_mut() {
                    m.remove(&name);
                }
            }
        }
        _ => {
            let name = sub(rng);
            if std::fs::create_dir(root.join(&name)).is_ok() {
                if let Some(m) = model.as_mut() {
                    m.insert(name, None);
                }
            }
        }
    }
}

fn sha_tree(model: &BTreeMap<String, Option<Vec<u8>>>) -> BTreeMap<String, Option<String>> {
    model
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().map(|d| sha1_hex(d))))
        .collect()
}

/// Namespace operations per thread: `ALIPANFS_STRESS_OPS` (default 300; 1,000 take about
/// four minutes at the API's rate limits).
fn churn_ops() -> usize {
    std::env::var("ALIPANFS_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Once showed a twin (`shared0/f5 (0560c639)`) the drive no longer held: a listing fetched
/// during an upload named both copies. Listings now merge with the changes made meanwhile
/// (`fs::core::merge`). Once (in CI, the listings' 60 s TTL passing mid-run) lost a name
/// (`own3/f7` on the drive, not in the mount): an edit sent to a listing the cache had
/// replaced. Listings now catch up with the inode table at each use.
#[test]
fn namespace_churn_from_four_threads_leaves_one_item_per_name_and_the_same_tree_after_a_remount() {
    churn(stress_mount(900), churn_ops());
}

/// The same beside a poller looking every second and listings that expire every 2 s: each
/// listing is replaced many times while operations hold it, and the poller sees the mount's
/// own changes come back in the feed. Once set a waiting version aside as a false conflict
/// (`own2/f1 (conflict ...)`): a landed upload did not give its node its content identity.
#[test]
fn namespace_churn_beside_a_poller_every_second_and_two_second_listings_loses_nothing() {
    let (emulator, temp) = emulator_with(|_| {});
    let m = MountBuilder::new(emulator, temp)
        .arg("--poll-interval")
        .arg("1")
        .arg("--dir-cache-ttl")
        .arg("2")
        .deadline(Duration::from_secs(900))
        .mount();
    churn(m, churn_ops() / 2);
}

fn churn(mut m: Mount, ops: usize) {
    for d in ["shared0", "shared1", "own0", "own1", "own2", "own3"] {
        std::fs::create_dir(m.path(d)).unwrap();
    }
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let root = m.dir.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(77 + t);
                // The thread's own folder is deterministic: a model follows it.
                let mut model = BTreeMap::new();
                let own = format!("own{t}");
                model.insert(own.clone(), None);
                for _ in 0..ops {
                    match rng.below(2) {
                        0 => namespace_op(&root, &own, &mut rng, Some(&mut model)),
                        _ => {
                            let shared = format!("shared{}", rng.below(2));
                            namespace_op(&root, &shared, &mut rng, None);
                        }
                    }
                }
                model
            })
        })
        .collect();
    let models: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut checks = Checks::default();
    let before = local_tree(&m.dir);
    m.sync_all(SYNC_WAIT);
    let drive = m.drive_tree("/");
    checks.check(before == drive, || {
        format!(
            "mount and drive differ after sync:\n{}",
            tree_diff(&before, &drive)
        )
    });
    let dups = drive_duplicates(&m.emulator);
    checks.check(dups.is_empty(), || {
        format!("duplicate names on the drive: {dups:?}")
    });
    for (t, model) in models.iter().enumerate() {
        let want = sha_tree(model);
        let own = format!("own{t}");
        let got: BTreeMap<_, _> = before
            .iter()
            .filter(|(k, _)| *k == &own || k.starts_with(&format!("{own}/")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        checks.check(got == want, || {
            format!("{own} differs from the model:\n{}", tree_diff(&got, &want))
        });
    }
    m.remount_with_new_cache(&[]);
    let after = local_tree(&m.dir);
    checks.check(after == drive, || {
        format!(
            "a fresh remount differs from the drive:\n{}",
            tree_diff(&after, &drive)
        )
    });
    eprintln!("tree: {} entries", before.len());
    keep_log_if_failed(&m, &checks, "churn");
    checks.finish();
}

/// A failed stress run keeps the daemon's whole log (the temporary folder goes with the mount).
fn keep_log_if_failed(m: &Mount, checks: &Checks, what: &str) {
    if checks.failed() {
        let kept = std::env::temp_dir().join(format!("alipanfs-{what}-{}.log", std::process::id()));
        let _ = std::fs::write(&kept, m.full_log());
        eprintln!("daemon log kept at {}", kept.display());
    }
}

fn tree_diff(a: &BTreeMap<String, Option<String>>, b: &BTreeMap<String, Option<String>>) -> String {
    let mut out = Vec::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            out.push(format!("  {k}: {v:?} vs {:?}", b.get(k)));
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out.push(format!("  {k}: missing vs {v:?}"));
        }
    }
    out.join("\n")
}

/// Write `count` small files from `threads` threads into `folders` folders under `dir`; returns
/// each file's relative path and SHA-1.
fn write_small_files(
    root: &Path,
    dir: &str,
    threads: usize,
    count: usize,
    folders: usize,
) -> BTreeMap<String, Option<String>> {
    for f in 0..folders {
        std::fs::create_dir_all(root.join(format!("{dir}/d{f}"))).unwrap();
    }
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let root = root.to_path_buf();
            let dir = dir.to_string();
            std::thread::spawn(move || {
                let mut out = BTreeMap::new();
                for i in (t..count).step_by(threads) {
                    let rel = format!("{dir}/d{}/n{i}", i % folders);
                    let data = format!("file {rel} {}", "x".repeat(i % 300));
                    std::fs::write(root.join(&rel), &data).unwrap();
                    out.insert(rel, Some(sha1_hex(data.as_bytes())));
                }
                out
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    all
}

/// Once seemed to show a file not bound to its drive file: the one extra create call was the
/// test's own mkdir of `moved`, counted after the baseline.
#[test]
fn three_thousand_files_closed_in_a_burst_all_land_and_stay_bound_to_their_drive_files() {
    let m = unthrottled_mount(900);
    let t = Instant::now();
    let written = write_small_files(&m.dir, "burst", 8, 3000, 6);
    eprintln!("3,000 files closed in {:?}", t.elapsed());
    m.sync_all(Duration::from_secs(600));
    eprintln!("... and on the drive after {:?}", t.elapsed());
    let mut checks = Checks::default();
    let drive: BTreeMap<_, _> = m
        .drive_tree("/")
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .collect();
    checks.check(drive == written, || {
        format!("drive vs written:\n{}", tree_diff(&drive, &written))
    });
    let mount: BTreeMap<_, _> = local_tree(&m.dir)
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .collect();
    checks.check(mount == written, || {
        format!("mount vs written:\n{}", tree_diff(&mount, &written))
    });
    // Each node must point at its drive file: a move of every file in d0 is a move on the
    // drive of the same file_id, with no upload.
    // The folder first: its own openFile/create is not a file's upload.
    std::fs::create_dir(m.path("moved")).unwrap();
    let puts = m.emulator.call_count("data/put") + m.emulator.call_count("openFile/create");
    let mut ids = BTreeMap::new();
    for rel in written.keys().filter(|k| k.starts_with("burst/d0/")) {
        let id = m.remote(rel).map(|e| e.file_id);
        let name = rel.rsplit('/').next().unwrap().to_string();
        std::fs::rename(m.path(rel), m.path(&format!("moved/{name}"))).unwrap();
        ids.insert(name, id);
    }
    m.sync_all(SYNC_WAIT);
    for (name, id) in &ids {
        let now = m.remote(&format!("moved/{name}")).map(|e| e.file_id);
        checks.check(now.is_some() && &now == id, || {
            format!("moved/{name}: drive file_id {now:?}, before the move {id:?}")
        });
    }
    let puts_after = m.emulator.call_count("data/put") + m.emulator.call_count("openFile/create");
    checks.check(puts_after == puts, || {
        format!("moves uploaded again: {puts} -> {puts_after} create/put calls")
    });
    keep_log_if_failed(&m, &checks, "burst");
    checks.finish();
}

#[test]
fn listing_thirty_new_folders_while_a_2_gib_file_closes_takes_under_half_a_second_each() {
    let m = mount_with(
        |_| {},
        |e| {
            for i in 0..30 {
                let id = e.seed_folder("root", &format!("fresh{i}"));
                e.seed_file(&id, "inside.txt", format!("folder {i}").as_bytes());
            }
        },
        &[],
    );
    let closing = Arc::new(AtomicBool::new(false));
    let path = m.path("big.bin");
    let flag = closing.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0x5au8; 1 << 20];
        for i in 0..2048u64 {
            // dd-like sequential writes; a cheap per-block tag keeps blocks distinct.
            let mut b = block.clone();
            b[..8].copy_from_slice(&i.to_le_bytes());
            std::io::Write::write_all(&mut f, &b).unwrap();
        }
        flag.store(true, Ordering::SeqCst);
        let t = Instant::now();
        drop(f);
        t.elapsed()
    });
    while !closing.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut timings = Vec::new();
    for i in 0..30 {
        let t = Instant::now();
        let names: Vec<_> = std::fs::read_dir(m.path(&format!("fresh{i}")))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        timings.push(t.elapsed());
        assert_eq!(names, vec![std::ffi::OsString::from("inside.txt")]);
    }
    let close_took = writer.join().unwrap();
    eprintln!("close of 2 GiB took {close_took:?}; ls timings: {timings:?}");
    let slowest = timings.iter().max().unwrap();
    // Calls reached the drive: each folder was never listed before.
    assert!(
        m.emulator.call_count("openFile/list") >= 30,
        "{:?}",
        m.emulator.calls()
    );
    assert!(
        *slowest < Duration::from_millis(500),
        "an ls took {slowest:?} while a 2 GiB file closed: {timings:?}"
    );
    assert_eq!(std::fs::metadata(m.path("big.bin")).unwrap().len(), 2 << 30);
}

#[test]
#[ignore = "slow (3 minutes with its build): 20,000 files; measured +16 MiB over the second 10,000 (target 20), +20 MiB a round on average over four; run with --ignored"]
fn the_daemon_rss_after_the_second_ten_thousand_files_stays_within_20_mib_of_the_first() {
    let m = unthrottled_mount(1800);
    let t = Instant::now();
    let first = write_small_files(&m.dir, "h1", 8, 10_000, 20);
    m.sync_all(SYNC_WAIT);
    let rss1 = m.rss_kib();
    eprintln!(
        "first 10,000 files synced after {:?}: VmRSS {rss1} KiB, {} open files",
        t.elapsed(),
        m.open_fds()
    );
    let second = write_small_files(&m.dir, "h2", 8, 10_000, 20);
    m.sync_all(SYNC_WAIT);
    let rss2 = m.rss_kib();
    eprintln!(
        "second 10,000 files synced after {:?}: VmRSS {rss2} KiB, {} open files",
        t.elapsed(),
        m.open_fds()
    );
    // More rounds on request (`ALIPANFS_RSS_ROUNDS`, printed only): does it level off?
    let rounds: usize = std::env::var("ALIPANFS_RSS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for round in 3..=rounds {
        write_small_files(&m.dir, &format!("h{round}"), 8, 10_000, 20);
        m.sync_all(SYNC_WAIT);
        eprintln!(
            "round {round}: VmRSS {} KiB, {} open files",
            m.rss_kib(),
            m.open_fds()
        );
    }
    let drive = m.drive_tree("/");
    let landed = first
        .iter()
        .chain(second.iter())
        .filter(|(k, v)| drive.get(*k) == Some(*v))
        .count();
    assert_eq!(landed, 20_000, "files on the drive with the right bytes");
    assert!(
        rss2 <= rss1 + 20 * 1024,
        "RSS grew by {} KiB over the second 10,000 files ({rss1} -> {rss2} KiB)",
        rss2.saturating_sub(rss1)
    );
}
