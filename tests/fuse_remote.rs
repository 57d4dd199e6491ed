//! Changes made on the drive by another device show in the mount by themselves (issue 20),
//! through the kernel: `--poll-interval`, kernel invalidation, `alipanfs refresh` and
//! `--on-change`. Mounts use a long `--attr-timeout` and `--dir-cache-ttl`, so nothing but the
//! poller (and its invalidations) can make a change visible in time.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Caches that would hide a change for far longer than any deadline here.
const LONG_CACHES: [&str; 4] = ["--attr-timeout", "60", "--dir-cache-ttl", "600"];

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `ls`, `stat` and `cat` of everything in `dir`: the kernel and the mount cache it all.
fn use_folder(dir: &Path) {
    for name in names(dir) {
        let p = dir.join(&name);
        let meta = std::fs::metadata(&p).expect("stat");
        if meta.is_file() {
            std::fs::read(&p).expect("read");
        }
    }
}

/// Polls `visible` until it holds; the time it took, or None after `limit`.
fn time_until(limit: Duration, mut visible: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if visible() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn mount_polling(delta: bool, extra: &[&str]) -> Mount {
    let (emulator, temp) = emulator_with(|c| c.delta_feed = delta);
    let shared = emulator.seed_folder("root", "shared");
    emulator.seed_folder("root", "other");
    for i in 0..40 {
        emulator.seed_file(
            &shared,
            &format!("f{i:02}.txt"),
            format!("old {i}").as_bytes(),
        );
    }
    let mut b = MountBuilder::new(emulator, temp).deadline(Duration::from_secs(400));
    for a in LONG_CACHES.iter().chain(extra) {
        b = b.arg(*a);
    }
    let m = b.mount();
    m.wait_for("the poller to start", Duration::from_secs(20), || {
        m.full_log()
            .contains("looking for changes made on the drive")
    });
    m
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Makes each of the seven kinds of change three times as another device, to folders that
/// were listed, stat'ed and read before; checks each shows within its limit; prints the times.
fn seven_kinds(delta: bool) {
    let m = mount_polling(delta, &["--poll-interval", "2"]);
    let (shared, other) = (m.path("shared"), m.path("other"));
    let emu = &m.emulator;
    let sid = m.remote("shared").unwrap().file_id;
    let oid = m.remote("other").unwrap().file_id;
    let fid = |name: &str| m.remote(&format!("shared/{name}")).unwrap().file_id;
    let removal_limit = Duration::from_secs(if delta { 6 } else { 30 });
    let quick = Duration::from_secs(6);
    let mut times: Vec<(&str, Duration)> = Vec::new();
    let mut failures = Vec::new();
    // Each change lands at another moment of the poll cycle (0 to 2 s after the last check),
    // so the times are not all measured from just after a poll.
    let mut seq = 0u64;
    let mut pause = || {
        seq += 1;
        std::thread::sleep(Duration::from_millis(seq * 733 % 2000));
    };
    for round in 0..3 {
        use_folder(&shared);
        use_folder(&other);
        let f = |i: usize| format!("f{:02}.txt", round * 10 + i);
        let mut check =
            |kind: &'static str, limit: Duration, ok: &mut dyn FnMut() -> bool| match time_until(
                limit, ok,
            ) {
                Some(t) => times.push((kind, t)),
                None => failures.push(format!(
                    "round {round}: {kind} not visible within {limit:?}"
                )),
            };
        // A new file.
        let new = format!("new{round}.txt");
        pause();
        emu.device(
            "create",
            json!({"parent_file_id": sid, "name": new, "content": "brand new"}),
        )
        .unwrap();
        check("new file", quick, &mut || {
            names(&shared).contains(&new)
                && std::fs::read_to_string(shared.join(&new)).ok().as_deref() == Some("brand new")
        });
        // A new folder.
        let dir = format!("dir{round}");
        pause();
        emu.device("mkdir", json!({"parent_file_id": sid, "name": dir}))
            .unwrap();
        check("new folder", quick, &mut || {
            names(&shared).contains(&dir) && shared.join(&dir).is_dir()
        });
        // A new revision, same file_id.
        let (rev, content) = (f(0), format!("revision {round}, longer than before"));
        pause();
        emu.device(
            "overwrite",
            json!({"file_id": fid(&rev), "content": content}),
        )
        .unwrap();
        check("new revision", quick, &mut || {
            std::fs::metadata(shared.join(&rev)).map(|m| m.len()).ok() == Some(content.len() as u64)
                && std::fs::read_to_string(shared.join(&rev)).ok().as_deref()
                    == Some(content.as_str())
        });
        // A rename.
        let (from, to) = (f(1), format!("renamed{round}.txt"));
        pause();
        emu.device("rename", json!({"file_id": fid(&from), "name": to}))
            .unwrap();
        check("rename", quick, &mut || {
            let n = names(&shared);
            n.contains(&to) && !n.contains(&from) && std::fs::metadata(shared.join(&from)).is_err()
        });
        // A move to another listed folder.
        let moved = f(2);
        pause();
        emu.device(
            "move",
            json!({"file_id": fid(&moved), "to_parent_file_id": oid}),
        )
        .unwrap();
        check("move", quick, &mut || {
            !names(&shared).contains(&moved)
                && names(&other).contains(&moved)
                && std::fs::read(other.join(&moved)).is_ok()
        });
        // Trash and permanent delete.
        for (op, kind, i) in [("trash", "trash", 3), ("delete", "delete", 4)] {
            let victim = f(i);
            pause();
            emu.device(op, json!({"file_id": fid(&victim)})).unwrap();
            check(kind, removal_limit, &mut || {
                !names(&shared).contains(&victim)
                    && std::fs::metadata(shared.join(&victim)).is_err()
            });
        }
    }
    report(if delta { "delta feed" } else { "search feed" }, &mut times);
    assert!(
        failures.is_empty(),
        "{failures:#?}\n--- log ---\n{}",
        m.log()
    );
}

fn report(feed: &str, times: &mut [(&str, Duration)]) {
    let mut all: Vec<Duration> = times.iter().map(|(_, t)| *t).collect();
    let worst = all.iter().max().copied().unwrap_or_default();
    println!(
        "{feed}: {} remote changes, change to visible: median {:?}, worst {:?}",
        all.len(),
        median(&mut all),
        worst
    );
    for kind in [
        "new file",
        "new folder",
        "new revision",
        "rename",
        "move",
        "trash",
        "delete",
    ] {
        let mut v: Vec<Duration> = times
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, t)| *t)
            .collect();
        if !v.is_empty() {
            let worst = *v.iter().max().unwrap();
            println!("  {kind:<12} median {:?} worst {worst:?}", median(&mut v));
        }
    }
}

#[test]
fn each_kind_of_remote_change_shows_through_the_kernel_with_the_delta_feed() {
    seven_kinds(true);
}

#[test]
fn each_kind_of_remote_change_shows_through_the_kernel_with_search_only() {
    seven_kinds(false);
}

#[test]
fn refresh_shows_a_change_at_once_with_polling_off() {
    let m = mount_polling_off();
    let shared = m.path("shared");
    use_folder(&shared);
    let sid = m.remote("shared").unwrap().file_id;
    m.emulator
        .device(
            "create",
            json!({"parent_file_id": sid, "name": "late.txt", "content": "x"}),
        )
        .unwrap();
    let victim = m.remote("shared/f00.txt").unwrap().file_id;
    m.emulator
        .device("trash", json!({"file_id": victim}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !names(&shared).contains(&"late.txt".to_string()),
        "visible before refresh: the caches are not long enough for this test"
    );
    let (status, out) = sh_status(&format!("{BIN} refresh {}", shared.display()));
    assert!(status.success(), "refresh failed: {out}\n{}", m.log());
    let n = names(&shared);
    assert!(n.contains(&"late.txt".to_string()), "{n:?}");
    assert!(!n.contains(&"f00.txt".to_string()), "{n:?}");
    assert_eq!(
        std::fs::read_to_string(shared.join("late.txt")).unwrap(),
        "x"
    );
    // A path that is not there: exit 1 with one line.
    let (status, out) = sh_status(&format!("{BIN} refresh {}/nowhere/deeper", m.dir.display()));
    assert!(
        !status.success(),
        "refresh of a missing folder succeeded: {out}"
    );
    assert_eq!(out.trim().lines().count(), 1, "{out}");
}

fn mount_polling_off() -> Mount {
    let (emulator, temp) = emulator_with(|_| {});
    let shared = emulator.seed_folder("root", "shared");
    for i in 0..5 {
        emulator.seed_file(&shared, &format!("f{i:02}.txt"), b"old");
    }
    let mut b = MountBuilder::new(emulator, temp).deadline(Duration::from_secs(120));
    for a in LONG_CACHES.iter().chain(&["--poll-interval", "0"]) {
        b = b.arg(*a);
    }
    b.mount()
}

#[test]
fn on_change_runs_once_per_poll_with_the_changed_folders() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("hook.log");
    let cmd = format!(
        "{{ echo \"run $ALIPANFS_MOUNTPOINT\"; cat; }} >> {}",
        out.display()
    );
    let m = mount_polling(true, &["--poll-interval", "3", "--on-change", cmd.as_str()]);
    let (shared, other) = (m.path("shared"), m.path("other"));
    use_folder(&shared);
    use_folder(&other);
    let sid = m.remote("shared").unwrap().file_id;
    let oid = m.remote("other").unwrap().file_id;
    // Three changes in two folders, in one poll interval.
    for (parent, name) in [(&sid, "a.txt"), (&sid, "b.txt"), (&oid, "c.txt")] {
        m.emulator
            .device(
                "create",
                json!({"parent_file_id": parent, "name": name, "content": "1"}),
            )
            .unwrap();
    }
    m.wait_for("the hook to run", Duration::from_secs(15), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("other") && t.contains("shared"))
    });
    // Let a few idle polls pass: they run nothing.
    std::thread::sleep(Duration::from_secs(7));
    let text = std::fs::read_to_string(&out).unwrap();
    let runs: Vec<&str> = text.lines().filter(|l| l.starts_with("run ")).collect();
    assert_eq!(runs, vec![format!("run {}", m.dir.display())], "{text}");
    let mut folders: Vec<&str> = text.lines().filter(|l| !l.starts_with("run ")).collect();
    folders.sort();
    assert_eq!(folders, vec!["other", "shared"], "{text}");
}

#[test]
fn an_idle_poll_on_a_ten_thousand_entry_tree_costs_at_most_three_calls() {
    let (emulator, temp) = emulator_with(|_| {});
    for d in 0..20 {
        let folder = emulator.seed_folder("root", &format!("d{d:02}"));
        for f in 0..499 {
            emulator.seed_file(&folder, &format!("f{f:04}"), b"");
        }
    }
    let mut b = MountBuilder::new(emulator, temp).deadline(Duration::from_secs(300));
    for a in ["--poll-interval", "1", "--dir-cache-ttl", "600"] {
        b = b.arg(a);
    }
    let m = b.mount();
    m.wait_for("the poller to start", Duration::from_secs(20), || {
        m.full_log()
            .contains("looking for changes made on the drive")
    });
    // The root alone is listed.
    assert_eq!(names(&m.dir).len(), 20);
    std::thread::sleep(Duration::from_millis(1500));
    let (polls0, before) = (polls(&m), m.calls());
    std::thread::sleep(Duration::from_secs(10));
    let (spent, polls1) = (m.calls().since(&before), polls(&m));
    // Read right after each other: at most one poll apart.
    let n = polls1 - polls0;
    println!(
        "{n} idle polls on 10,000 entries (root listed): {} calls ({:.2} per poll): {spent:?}",
        spent.total(),
        spent.total() as f64 / n as f64
    );
    assert!(n >= 8, "only {n} polls in 10 s");
    let text = sh(&format!("{BIN} status {}", m.dir.display()));
    assert!(
        text.contains("changes elsewhere: every 1s by search+revalidation; last poll"),
        "{text}"
    );
    assert!(spent.total() <= 3 * (n + 1), "{spent:?} for {n} polls");
}

/// Polls the mount has made (`alipanfs status --json`).
fn polls(m: &Mount) -> u64 {
    let text = sh(&format!("{BIN} status --json {}", m.dir.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("status JSON");
    v["poll"]["polls"]
        .as_u64()
        .unwrap_or_else(|| panic!("no poll count in {text}"))
}

#[test]
fn a_file_changed_on_the_drive_while_its_local_version_waits_keeps_both_versions() {
    use std::io::Write;
    let m = mount_polling(true, &["--poll-interval", "2"]);
    let shared = m.path("shared");
    use_folder(&shared);
    let fid = |name: &str| m.remote(&format!("shared/{name}")).unwrap().file_id;
    // The drive's change is the later one: it keeps the name.
    let mut early = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(shared.join("f00.txt"))
        .unwrap();
    early.write_all(b"local, earlier").unwrap();
    early.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    m.emulator
        .device(
            "overwrite",
            json!({"file_id": fid("f00.txt"), "content": "drive, later"}),
        )
        .unwrap();
    // The local version is the later one: it keeps the name.
    let mut late = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(shared.join("f01.txt"))
        .unwrap();
    m.emulator
        .device(
            "overwrite",
            json!({"file_id": fid("f01.txt"), "content": "drive, earlier"}),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    late.write_all(b"local, later").unwrap();
    late.flush().unwrap();
    let conflicts = |stem: &str| -> Vec<String> {
        names(&shared)
            .into_iter()
            .filter(|n| n.starts_with(&format!("{stem} (conflict ")) && n.ends_with(").txt"))
            .collect()
    };
    m.wait_for("both conflicts to show", Duration::from_secs(10), || {
        conflicts("f00").len() == 1 && conflicts("f01").len() == 1
    });
    drop(early);
    drop(late);
    let (c0, c1) = (conflicts("f00").remove(0), conflicts("f01").remove(0));
    let read = |n: &str| std::fs::read_to_string(shared.join(n)).unwrap();
    assert_eq!(read("f00.txt"), "drive, later");
    assert_eq!(read(&c0), "local, earlier");
    assert_eq!(read("f01.txt"), "local, later");
    assert_eq!(read(&c1), "drive, earlier");
    let sha = |s: &str| Some(alipanfs::hashing::sha1_hex(s.as_bytes()).to_uppercase());
    m.wait_for(
        "both versions of both files on the drive",
        Duration::from_secs(30),
        || {
            let t = m.drive_tree("shared");
            t.get("f00.txt") == Some(&sha("drive, later"))
                && t.get(&c0) == Some(&sha("local, earlier"))
                && t.get("f01.txt") == Some(&sha("local, later"))
                && t.get(&c1) == Some(&sha("drive, earlier"))
        },
    );
    let log = m.full_log();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("conflict"))
        .collect();
    assert_eq!(warns.len(), 2, "one WARN line each: {warns:#?}");
}

/// A kill -9 (changes the last poll did not see, and changes made while no mount ran) and a
/// remount within `--dir-cache-ttl`: the mount shows the drive's state, not the listings the
/// killed mount stored.
fn remount_shows_the_drive(delta: bool) {
    let m = mount_polling(delta, &["--poll-interval", "2"]);
    let shared = m.path("shared");
    use_folder(&shared);
    let fid = |name: &str| m.remote(&format!("shared/{name}")).unwrap().file_id;
    let sid = m.remote("shared").unwrap().file_id;
    let emu = &m.emulator;
    // Seen and applied before the kill.
    emu.device(
        "rename",
        json!({"file_id": fid("f00.txt"), "name": "seen.txt"}),
    )
    .unwrap();
    m.wait_for("the rename to show", Duration::from_secs(6), || {
        names(&shared).contains(&"seen.txt".to_string())
    });
    // A folder no other change touches, holding a file trashed while no mount runs.
    let other = m.path("other");
    let oid = m.remote("other").unwrap().file_id;
    emu.device(
        "create",
        json!({"parent_file_id": oid, "name": "o.txt", "content": "o"}),
    )
    .unwrap();
    m.wait_for("o.txt to show", Duration::from_secs(6), || {
        names(&other).contains(&"o.txt".to_string())
    });
    use_folder(&shared);
    use_folder(&other);
    // Made right before the kill, and while no mount runs.
    emu.device(
        "create",
        json!({"parent_file_id": sid, "name": "late.txt", "content": "late"}),
    )
    .unwrap();
    m.kill9();
    emu.device(
        "rename",
        json!({"file_id": fid("f05.txt"), "name": "down.txt"}),
    )
    .unwrap();
    emu.device(
        "overwrite",
        json!({"file_id": fid("f06.txt"), "content": "new while down"}),
    )
    .unwrap();
    emu.device("trash", json!({"file_id": fid("f07.txt")}))
        .unwrap();
    let o = m.remote("other/o.txt").unwrap().file_id;
    emu.device("trash", json!({"file_id": o})).unwrap();
    m.mount_again(&[]);
    let n = names(&shared);
    for want in ["seen.txt", "late.txt", "down.txt"] {
        assert!(
            n.contains(&want.to_string()),
            "{want} missing: {n:?}\n{}",
            m.log()
        );
    }
    for gone in ["f00.txt", "f05.txt"] {
        assert!(!n.contains(&gone.to_string()), "{gone} still shown: {n:?}");
    }
    assert!(
        !n.contains(&"f07.txt".to_string()),
        "trashed f07.txt still shown: {n:?}"
    );
    if delta {
        assert_eq!(names(&other), Vec::<String>::new());
    } else {
        // Search sees no trash: the folder, listed from the store, is recounted by a poll.
        m.wait_for("the trash made while down", Duration::from_secs(10), || {
            names(&other).is_empty()
        });
    }
    assert_eq!(
        std::fs::read_to_string(shared.join("f06.txt")).unwrap(),
        "new while down"
    );
}

#[test]
fn after_a_kill_and_a_remount_the_drive_state_shows_with_the_delta_feed() {
    remount_shows_the_drive(true);
}

#[test]
fn after_a_kill_and_a_remount_the_drive_state_shows_with_search_only() {
    remount_shows_the_drive(false);
}

/// A folder trashed elsewhere while a file in it (two levels down) is being written: the file
/// lands in `lost+found` with its bytes, in the mount and on the drive.
fn orphan_goes_to_lost_and_found(delta: bool) {
    use std::io::Write;
    let m = mount_polling(delta, &["--poll-interval", "2"]);
    std::fs::create_dir_all(m.path("proj/deep")).unwrap();
    use_folder(&m.dir);
    let mut draft = std::fs::File::create(m.path("proj/deep/draft.txt")).unwrap();
    draft.write_all(b"the only copy").unwrap();
    draft.flush().unwrap();
    let proj = m.remote("proj").unwrap().file_id;
    m.emulator
        .device("trash", json!({"file_id": proj}))
        .unwrap();
    let limit = Duration::from_secs(if delta { 6 } else { 30 });
    m.wait_for("the draft in lost+found", limit, || {
        m.path("lost+found/draft.txt").exists() && !m.path("proj").exists()
    });
    draft.write_all(b", and more").unwrap();
    drop(draft);
    assert_eq!(
        std::fs::read_to_string(m.path("lost+found/draft.txt")).unwrap(),
        "the only copy, and more"
    );
    let sha = alipanfs::hashing::sha1_hex(b"the only copy, and more").to_uppercase();
    m.wait_for("the draft on the drive", Duration::from_secs(30), || {
        m.drive_tree("lost+found").get("draft.txt") == Some(&Some(sha.clone()))
    });
    let log = m.full_log();
    let warns = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("lost+found"))
        .count();
    assert_eq!(warns, 1, "one WARN line:\n{}", m.log());
}

#[test]
fn a_file_waiting_in_a_folder_deleted_elsewhere_lands_in_lost_and_found_with_the_delta_feed() {
    orphan_goes_to_lost_and_found(true);
}

#[test]
fn a_file_waiting_in_a_folder_deleted_elsewhere_lands_in_lost_and_found_with_search_only() {
    orphan_goes_to_lost_and_found(false);
}

/// The local version is closed and queued, but its upload cannot land (the drive is full):
/// the drive's later change keeps the name; the queued upload goes to the conflict name and
/// lands there once it can.
#[test]
fn a_queued_upload_whose_file_changed_on_the_drive_lands_beside_it() {
    let m = mount_polling(true, &["--poll-interval", "2"]);
    let shared = m.path("shared");
    use_folder(&shared);
    let id = m.remote("shared/f09.txt").unwrap().file_id;
    m.emulator.set_quota(1);
    std::fs::write(shared.join("f09.txt"), b"queued local version").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    m.emulator
        .device(
            "overwrite",
            json!({"file_id": id, "content": "drive version"}),
        )
        .unwrap();
    let conflict = || -> Option<String> {
        names(&shared)
            .into_iter()
            .find(|n| n.starts_with("f09 (conflict ") && n.ends_with(").txt"))
    };
    m.wait_for("the conflict copy", Duration::from_secs(10), || {
        conflict().is_some()
    });
    let c = conflict().unwrap();
    m.emulator.set_quota(u64::MAX / 2);
    let sha = |s: &str| Some(alipanfs::hashing::sha1_hex(s.as_bytes()).to_uppercase());
    m.wait_for(
        "both versions on the drive",
        Duration::from_secs(60),
        || {
            let t = m.drive_tree("shared");
            t.get("f09.txt") == Some(&sha("drive version"))
                && t.get(&c) == Some(&sha("queued local version"))
        },
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("f09.txt")).unwrap(),
        "drive version"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join(&c)).unwrap(),
        "queued local version"
    );
}

/// A file open for writing (not truncated, not written yet) when another device changes it:
/// what is written afterwards was based on the old content, so it goes beside the drive's
/// change as a conflict copy instead of replacing it.
#[test]
fn a_file_changed_on_the_drive_while_open_and_written_after_keeps_both_versions() {
    use std::io::{Seek, Write};
    let m = mount_polling(true, &["--poll-interval", "2"]);
    let shared = m.path("shared");
    use_folder(&shared);
    let file_id = m.remote("shared/f02.txt").unwrap().file_id;
    let mut open = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shared.join("f02.txt"))
        .unwrap();
    let polls_before = polls(&m);
    m.emulator
        .device(
            "overwrite",
            json!({"file_id": file_id, "content": "drive, while open"}),
        )
        .unwrap();
    m.wait_for(
        "two polls after the change",
        Duration::from_secs(20),
        || polls(&m) >= polls_before + 2,
    );
    open.rewind().unwrap();
    open.write_all(b"written after").unwrap();
    drop(open);
    let conflict = || {
        names(&shared)
            .into_iter()
            .find(|n| n.starts_with("f02 (conflict ") && n.ends_with(").txt"))
    };
    m.wait_for("the conflict copy", Duration::from_secs(10), || {
        conflict().is_some()
    });
    let aside = conflict().unwrap();
    assert_eq!(
        std::fs::read_to_string(shared.join(&aside)).unwrap(),
        "written after"
    );
    let sha = |s: &str| Some(alipanfs::hashing::sha1_hex(s.as_bytes()).to_uppercase());
    m.wait_for(
        "both versions on the drive",
        Duration::from_secs(30),
        || {
            let t = m.drive_tree("shared");
            t.get("f02.txt") == Some(&sha("drive, while open"))
                && t.get(&aside) == Some(&sha("written after"))
        },
    );
    m.wait_for(
        "the drive's version under the name",
        Duration::from_secs(10),
        || std::fs::read_to_string(shared.join("f02.txt")).is_ok_and(|t| t == "drive, while open"),
    );
    let warned = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("conflict"))
            .count()
    };
    m.wait_for("the WARN line in the log", Duration::from_secs(10), || {
        warned(&m.full_log()) > 0
    });
    assert_eq!(warned(&m.full_log()), 1, "one WARN line");
}
