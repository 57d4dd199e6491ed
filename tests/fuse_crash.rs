//! Crashes (issue 10): the daemon is killed with SIGKILL while uploads are pending, the dead
//! kernel mount is lazily unmounted, and the mount is started again with the same cache dir and
//! token store. What was closed before the kill must end up on the drive, with the namespace
//! changes made to it (rename, replace, unlink) and nothing else.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alipanfs::emulator::pattern_bytes;
use alipanfs::hashing::sha1_hex;
use common::*;
use rand::{Rng, SeedableRng};

const UPLOAD_WAIT: Duration = Duration::from_secs(120);

fn crash_mount(seed: impl FnOnce(&Emulator), args: &[&str]) -> Mount {
    let (emulator, temp) = emulator_with(|_| {});
    seed(&emulator);
    let mut b = MountBuilder::new(emulator, temp).deadline(Duration::from_secs(600));
    for a in args {
        b = b.arg(*a);
    }
    b.mount()
}

/// Every request to the emulator waits this long: uploads (create, part PUTs, complete) crawl,
/// so what was closed just before the kill is surely still pending.
fn slow(m: &Mount, latency_ms: u64) {
    m.emulator.set_faults(Faults {
        latency: Duration::from_millis(latency_ms),
        ..Faults::default()
    });
}

/// Live drive files (not folders) at the root: name -> SHA-1.
fn live_files(m: &Mount) -> BTreeMap<String, String> {
    m.drive_tree("/")
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

/// The live entries at a root path, as (count, SHA-1 of each).
fn live_at(m: &Mount, name: &str) -> Vec<Option<String>> {
    m.emulator
        .entries_at(&format!("/{name}"))
        .into_iter()
        .filter(|e| !e.trashed)
        .map(|e| e.sha1)
        .collect()
}

/// Wait until the drive holds each expected file (name -> SHA-1) once, with that content;
/// on timeout, name the ones missing or wrong.
fn wait_files_on_drive(m: &Mount, want: &BTreeMap<String, String>, what: &str) {
    let deadline = Instant::now() + UPLOAD_WAIT;
    loop {
        let wrong: Vec<String> = want
            .iter()
            .filter(|(name, sha)| live_at(m, name) != vec![Some((*sha).clone())])
            .map(|(name, _)| format!("{name}: {:?}", live_at(m, name)))
            .collect();
        if wrong.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: {} of {} files not on the drive with their content after {UPLOAD_WAIT:?}: {wrong:?}\n--- daemon log ---\n{}",
                wrong.len(),
                want.len(),
                m.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fifty_files_closed_right_before_kill_9_all_reach_the_drive_after_a_remount() {
    let m = crash_mount(|_| {}, &[]);
    let src = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(50);
    let mut want = BTreeMap::new();
    let mut script = String::from("set -e\n");
    for i in 0..50usize {
        let name = format!("f{i:02}.dat");
        if i % 2 == 1 {
            // A text file written by printf itself.
            let len = rng.gen_range(0..20_000);
            let text: String = (0..len)
                .map(|j| {
                    if j % 61 == 60 {
                        '\n'
                    } else {
                        (b'a' + ((i * 7 + j) % 26) as u8) as char
                    }
                })
                .collect();
            script.push_str(&format!(
                "printf '%s' '{text}' > '{}'\n",
                m.path(&name).display()
            ));
            want.insert(name, sha1_hex(text.as_bytes()));
        } else {
            let size = match i {
                0 => 0,
                _ if i % 10 == 4 => rng.gen_range(1 << 20..4 << 20),
                _ => rng.gen_range(1..300_000),
            };
            let data = pattern_bytes(500 + i as u64, 0, size);
            let local = src.path().join(&name);
            std::fs::write(&local, &data).unwrap();
            script.push_str(&format!(
                "cat '{}' > '{}'\n",
                local.display(),
                m.path(&name).display()
            ));
            want.insert(name, sha1_hex(&data));
        }
    }
    let pid = m.pid().expect("the daemon runs");
    // The kill comes from the same shell, right after the last redirect closed its file.
    script.push_str(&format!("kill -9 {pid}\n"));
    std::fs::write(src.path().join("script.sh"), &script).unwrap();
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 0);
    slow(&m, 1500);
    sh(&format!(
        "bash '{}'",
        src.path().join("script.sh").display()
    ));
    m.kill9();
    let landed = live_files(&m);
    eprintln!(
        "FIGURES at the kill: {} of 50 files on the drive; calls so far: {}",
        landed.len(),
        m.calls()
    );
    assert!(
        landed.len() < 25,
        "the test needs most uploads pending at the kill: {} landed",
        landed.len()
    );
    m.emulator.set_faults(Faults::default());
    m.mount_again(&[]);
    wait_files_on_drive(&m, &want, "after the remount");
    assert_eq!(live_files(&m), want, "the drive holds exactly the 50 files");
    let mut listed: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        want.keys().cloned().collect::<Vec<_>>(),
        "ls of the mount"
    );
    for (name, sha) in &want {
        assert_eq!(
            &sha1_of(&m.path(name)),
            sha,
            "{name} read through the mount"
        );
    }
}

#[test]
fn kill_9_during_the_multipart_upload_of_a_300_mib_file_then_it_resumes_after_a_remount() {
    let m = crash_mount(|_| {}, &["--part-size", "16M"]);
    let src = tempfile::tempdir().unwrap();
    let data = pattern_bytes(300, 0, 300 << 20);
    let sha = sha1_hex(&data);
    let local = src.path().join("big.bin");
    std::fs::write(&local, &data).unwrap();
    drop(data);
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 0);
    slow(&m, 700);
    sh(&format!(
        "cp '{}' '{}'",
        local.display(),
        m.path("big.bin").display()
    ));
    // 19 parts of 16 MiB: kill once a few have arrived (a PUT is counted as it starts).
    m.wait_for("3 parts received", UPLOAD_WAIT, || {
        m.emulator.call_count("data/put") >= 3
    });
    m.kill9();
    let puts_at_kill = m.emulator.call_count("data/put");
    assert!(
        m.remote("big.bin").is_none(),
        "the upload finished before the kill ({puts_at_kill} PUTs): the test proves nothing"
    );
    eprintln!("FIGURES at the kill: {puts_at_kill} part PUTs of 19 received");
    m.emulator.set_faults(Faults::default());
    let before = m.calls();
    m.mount_again(&[]);
    wait_files_on_drive(
        &m,
        &BTreeMap::from([("big.bin".to_string(), sha.clone())]),
        "after the remount",
    );
    let after = m.calls().since(&before);
    eprintln!("FIGURES after the remount until it landed: {after}");
    // The session opened before the kill is continued: the parts the drive holds (all but at
    // most the one in flight at the kill) are not sent again. The server may still count the
    // part in flight at the kill as under way (it has not yet seen that client go) and refuse
    // its first re-send as not sequential: the uploader resyncs and sends it again, so one
    // refused PUT is allowed. A restart would send all 19.
    let refused = u64::from(m.full_log().contains("why=\"PartNotSequential\""));
    assert!(
        after.get("data/put") <= 19 - (puts_at_kill - 1) + refused,
        "{} PUTs after the remount, {puts_at_kill} before the kill: the upload restarted\n{}",
        after.get("data/put"),
        m.log()
    );
    assert!(after.get("openFile/listUploadedParts") >= 1, "{after}");
    assert!(
        m.full_log().contains("resuming the upload session"),
        "{}",
        m.log()
    );
    assert_eq!(
        std::fs::metadata(m.path("big.bin")).unwrap().len(),
        300 << 20
    );
    assert_eq!(sha1_of(&m.path("big.bin")), sha, "read through the mount");
    assert_eq!(live_files(&m).len(), 1, "{:?}", live_files(&m));
}

#[test]
fn kill_9_right_after_renames_replaces_and_unlinks_of_pending_files() {
    let old1 = b"old one, on the drive before the mount".to_vec();
    let old2 = b"old two, on the drive before the mount".to_vec();
    let old3 = b"old three, on the drive before the mount".to_vec();
    let m = crash_mount(
        |e| {
            e.seed_file("root", "r1.txt", &old1);
            e.seed_file("root", "r2.txt", &old2);
            e.seed_file("root", "r3.txt", &old3);
        },
        &[],
    );
    let src = tempfile::tempdir().unwrap();
    let put = |name: &str, seed: u64, len: usize| {
        let data = pattern_bytes(seed, 0, len);
        std::fs::write(src.path().join(name), &data).unwrap();
        sha1_hex(&data)
    };
    // Uploads run two at a time: two blockers queued first keep the others pending.
    let sha_blk1 = put("blk1", 7, 32 << 20);
    let sha_blk2 = put("blk2", 8, 32 << 20);
    let sha_a = put("a", 1, 700_000);
    let sha_c = put("c", 2, 3 << 20);
    let sha_new1 = put("new1", 3, 200_000);
    let sha_new2 = put("new2", 4, 1 << 20);
    put("new3", 5, 50_000);
    put("u", 6, 2 << 20);
    let (sha_old1, sha_old2) = (sha1_hex(&old1), sha1_hex(&old2));
    let s = |n: &str| src.path().join(n).display().to_string();
    let d = |n: &str| m.path(n).display().to_string();
    // Listing the root first, so the seeded files are known before the emulator slows down.
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 3);
    let pid = m.pid().unwrap();
    let script = [
        format!("mkdir '{}'", d("dir")),
        format!("cat '{}' > '{}'", s("blk1"), d("blk1")),
        format!("cat '{}' > '{}'", s("blk2"), d("blk2")),
        // Rename of a pending file, within the root and into a folder.
        format!("cat '{}' > '{}'", s("a"), d("a")),
        format!("mv '{}' '{}'", d("a"), d("b")),
        format!("cat '{}' > '{}'", s("c"), d("c")),
        format!("mv '{}' '{}'", d("c"), d("dir/c2")),
        // Replace in place: a drive file overwritten through the mount.
        format!("cat '{}' > '{}'", s("new1"), d("r1.txt")),
        // Replace by rename: a pending file renamed onto a drive file (what editors, rsync do).
        format!("cat '{}' > '{}'", s("new2"), d("tmp2")),
        format!("mv '{}' '{}'", d("tmp2"), d("r2.txt")),
        // Unlinks of pending files: a new one, and a drive file rewritten then removed.
        format!("cat '{}' > '{}'", s("u"), d("u")),
        format!("rm '{}'", d("u")),
        format!("cat '{}' > '{}'", s("new3"), d("r3.txt")),
        format!("rm '{}'", d("r3.txt")),
        format!("kill -9 {pid}"),
    ]
    .join(" && ");
    slow(&m, 3000);
    sh(&script);
    m.kill9();
    let at_kill = m.drive_tree("/");
    eprintln!("FIGURES at the kill: drive holds {at_kill:?}");
    for name in ["a", "b", "c", "dir/c2", "tmp2", "u"] {
        assert!(
            !at_kill.contains_key(name),
            "{name} was uploaded before the kill: the test proves nothing ({at_kill:?})"
        );
    }
    let mut c = Checks::default();
    // The old content stays on the drive until the new one is verified: at every moment the
    // name holds the old or the new content (both for a moment is fine), never nothing or
    // anything else. Each kind of failure is reported once.
    let mut seen = std::collections::BTreeSet::new();
    let mut good_copy = |m: &Mount, c: &mut Checks, when: &str| {
        for (name, old, new) in [
            ("r1.txt", &sha_old1, &sha_new1),
            ("r2.txt", &sha_old2, &sha_new2),
        ] {
            let live = live_at(m, name);
            let ok = !live.is_empty()
                && live
                    .iter()
                    .all(|s| s.as_ref() == Some(old) || s.as_ref() == Some(new));
            if !ok && seen.insert((name, when.to_string(), live.clone())) {
                c.check(false, || {
                    format!("{when}: {name} on the drive is {live:?}: neither the old nor the new content")
                });
            }
        }
    };
    good_copy(&m, &mut c, "right after the kill");
    m.emulator.set_faults(Faults::default());
    m.mount_again(&[]);
    let want = BTreeMap::from([
        ("b".to_string(), sha_a.clone()),
        ("r1.txt".to_string(), sha_new1.clone()),
        ("r2.txt".to_string(), sha_new2.clone()),
        ("blk1".to_string(), sha_blk1.clone()),
        ("blk2".to_string(), sha_blk2.clone()),
    ]);
    let deadline = Instant::now() + UPLOAD_WAIT;
    loop {
        good_copy(&m, &mut c, "after the remount");
        let done = want
            .iter()
            .all(|(n, sha)| live_at(&m, n) == vec![Some(sha.clone())])
            && m.drive_tree("dir").get("c2") == Some(&Some(sha_c.clone()));
        if done || Instant::now() > deadline {
            c.check(done, || {
                format!(
                    "after {UPLOAD_WAIT:?} the drive holds {:?}, want b, r1.txt, r2.txt, dir/c2, blk1, blk2 with their new content",
                    m.drive_tree("/")
                )
            });
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut listed: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    listed.sort();
    c.check(
        listed == ["b", "blk1", "blk2", "dir", "r1.txt", "r2.txt"],
        || format!("ls of the mount after the remount: {listed:?}"),
    );
    // Drain whatever is still queued, then the drive's final state.
    m.unmount();
    let tree: BTreeMap<String, Option<String>> = m.drive_tree("/");
    let want_tree = BTreeMap::from([
        ("b".to_string(), Some(sha_a)),
        ("blk1".to_string(), Some(sha_blk1)),
        ("blk2".to_string(), Some(sha_blk2)),
        ("dir".to_string(), None),
        ("dir/c2".to_string(), Some(sha_c)),
        ("r1.txt".to_string(), Some(sha_new1)),
        ("r2.txt".to_string(), Some(sha_new2)),
    ]);
    c.check(tree == want_tree, || {
        format!("the drive after the remount drained: {tree:?}, want {want_tree:?}")
    });
    for name in ["a", "c", "tmp2", "u", "r3.txt"] {
        c.check(live_at(&m, name).is_empty(), || {
            format!(
                "{name} is on the drive after the remount: {:?}",
                live_at(&m, name)
            )
        });
    }
    c.finish();
}

/// Files closed before a kill -9 whose uploads are still under way after the remount show in
/// the mount at once, with their bytes, as pending files, and what is done to them then holds:
/// one deleted never reaches the drive, one rewritten ends with its last version only, and one
/// that replaces a drive file hides the old copy until it lands.
#[test]
fn files_pending_at_a_kill_9_show_at_once_after_the_remount_and_obey_later_changes() {
    let old = b"the drive's copy".to_vec();
    let m = crash_mount(
        |e| {
            e.seed_file("root", "old.txt", &old);
        },
        &[],
    );
    assert_eq!(std::fs::read(m.path("old.txt")).unwrap(), old);
    // Part PUTs crawl (64 KiB at 2 KB/s): every upload below is still pending at each step.
    let crawl = || {
        m.emulator.set_faults(Faults {
            upload_bandwidth: Some(2000),
            ..Faults::default()
        })
    };
    crawl();
    let (new, rewritten, gone) = (
        pattern_bytes(61, 0, 64 * 1024),
        pattern_bytes(62, 0, 64 * 1024),
        pattern_bytes(63, 0, 64 * 1024),
    );
    std::fs::write(m.path("new.bin"), &new).unwrap();
    std::fs::write(m.path("old.txt"), &rewritten).unwrap();
    std::fs::write(m.path("gone.bin"), &gone).unwrap();
    m.kill9();
    assert!(live_at(&m, "new.bin").is_empty() && live_at(&m, "gone.bin").is_empty());
    assert_eq!(live_at(&m, "old.txt"), vec![Some(sha1_hex(&old))]);
    m.mount_again(&[]);

    // At once, before any of them has landed: every name, with its bytes.
    let shown = BTreeMap::from([
        ("gone.bin".to_string(), Some(sha1_hex(&gone))),
        ("new.bin".to_string(), Some(sha1_hex(&new))),
        ("old.txt".to_string(), Some(sha1_hex(&rewritten))),
    ]);
    assert_eq!(local_tree(&m.dir), shown, "{}", m.log());
    std::fs::remove_file(m.path("gone.bin")).unwrap();
    let last = pattern_bytes(64, 0, 1000);
    std::fs::write(m.path("old.txt"), &last).unwrap();
    assert!(
        live_at(&m, "new.bin").is_empty(),
        "the test needs the uploads pending until here"
    );

    m.emulator.set_faults(Faults::default());
    let want = BTreeMap::from([
        ("new.bin".to_string(), sha1_hex(&new)),
        ("old.txt".to_string(), sha1_hex(&last)),
    ]);
    wait_files_on_drive(&m, &want, "after the remount");
    m.wait_for("no other file on the drive", UPLOAD_WAIT, || {
        live_files(&m) == want
    });
    // And it stays so once everything has drained and the mount starts again.
    m.restart(&[]);
    assert_eq!(live_files(&m), want);
    assert_eq!(std::fs::read(m.path("old.txt")).unwrap(), last);
    assert!(!m.path("gone.bin").exists());
}
