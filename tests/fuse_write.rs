//! Writing through the kernel: staging, upload on release, rapid upload, namespace changes,
//! failures. Every test checks the mount and what the emulator holds.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use alipanfs::emulator::pattern_bytes;
use alipanfs::hashing::sha1_hex;
use common::*;

const UPLOAD_WAIT: Duration = Duration::from_secs(120);

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
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

/// Wait until the emulator holds exactly one live file at `path` with content `sha1`.
fn wait_uploaded(m: &Mount, path: &str, sha1: &str) {
    m.wait_for(&format!("{path} uploaded"), UPLOAD_WAIT, || {
        let want = format!("/{path}");
        let live: Vec<_> = m
            .emulator
            .entries_at(&want)
            .into_iter()
            .filter(|e| !e.trashed)
            .collect();
        live.len() == 1 && live[0].sha1.as_deref() == Some(sha1)
    });
}

#[test]
fn a_100_mib_copy_lands_intact_and_a_second_copy_is_a_rapid_upload() {
    let m = mount_with(|_| {}, |_| {}, &[]);
    let local = tempfile::NamedTempFile::new().unwrap();
    let data = random_bytes(100 << 20, 77);
    std::fs::write(local.path(), &data).unwrap();
    let sha = sha1_hex(&data);
    sh(&format!(
        "cp '{}' '{}'",
        local.path().display(),
        m.path("copy1.bin").display()
    ));
    // Readable at once (from the staging file), then uploaded.
    assert_eq!(sha1_of(&m.path("copy1.bin")), sha);
    wait_uploaded(&m, "copy1.bin", &sha);
    let puts = m.emulator.call_count("data/put");
    assert!(puts >= 1);
    sh(&format!(
        "cp '{}' '{}'",
        local.path().display(),
        m.path("copy2.bin").display()
    ));
    wait_uploaded(&m, "copy2.bin", &sha);
    assert_eq!(
        m.emulator.call_count("data/put"),
        puts,
        "the second copy sent part bytes: {:?}",
        m.emulator.calls()
    );
    assert_eq!(sha1_of(&m.path("copy2.bin")), sha);
}

#[test]
fn a_file_written_in_order_uploads_while_it_is_written() {
    let m = mount_with(
        |_| {},
        |_| {},
        &["--part-size", "1M", "--upload-while-writing", "4M"],
    );
    let data = random_bytes((17 << 20) + 123, 91);
    let sha = sha1_hex(&data);
    let mut f = std::fs::File::create(m.path("rec.bin")).unwrap();
    f.write_all(&data[..12 << 20]).unwrap();
    // Still open: the parts the writer has passed are already on the drive.
    m.wait_for("parts sent before close", UPLOAD_WAIT, || {
        m.emulator.call_count("data/put") >= 12
    });
    assert!(m.remote("rec.bin").is_none(), "not visible before close");
    f.write_all(&data[12 << 20..]).unwrap();
    drop(f);
    assert_eq!(sha1_of(&m.path("rec.bin")), sha);
    wait_uploaded(&m, "rec.bin", &sha);
    // 18 parts, each sent once: the upload after close did not start over.
    assert_eq!(
        m.emulator.call_count("data/put"),
        18,
        "{:?}",
        m.emulator.calls()
    );
    assert_eq!(sha1_of(&m.path("rec.bin")), sha);
}

#[test]
fn overwriting_a_file_does_not_download_its_old_content() {
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_pattern_file("root", "old.bin", 24 << 20, 4);
        },
        &[],
    );
    assert_eq!(
        std::fs::metadata(m.path("old.bin")).unwrap().len(),
        24 << 20
    );
    m.emulator.reset_calls();
    let new = random_bytes(3 << 20, 12);
    // open(O_WRONLY|O_CREAT|O_TRUNC): the truncate comes with the open.
    std::fs::write(m.path("old.bin"), &new).unwrap();
    wait_uploaded(&m, "old.bin", &sha1_hex(&new));
    assert_eq!(
        m.emulator.call_count("data/get"),
        0,
        "{:?}",
        m.emulator.calls()
    );
}

#[test]
fn a_multipart_upload_survives_expiring_part_urls() {
    let m = mount_with(
        |c| {
            c.upload_url_ttl = Duration::from_secs(1);
            c.faults.latency = Duration::from_millis(300);
        },
        |_| {},
        &["--part-size", "256K"],
    );
    let data = random_bytes(1300 * 1024, 3);
    std::fs::write(m.path("parts.bin"), &data).unwrap();
    wait_uploaded(&m, "parts.bin", &sha1_hex(&data));
    assert!(
        m.emulator.call_count("data/put") >= 6,
        "{:?}",
        m.emulator.calls()
    );
    assert!(
        m.emulator.call_count("openFile/getUploadUrl") >= 1,
        "part URLs must have been renewed: {:?}",
        m.emulator.calls()
    );
}

#[test]
fn random_writes_into_an_existing_20_mib_file() {
    let size = 20usize << 20;
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_pattern_file("root", "big.bin", size as u64, 11);
        },
        &[],
    );
    let mut model = pattern_bytes(11, 0, size);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("big.bin"))
        .unwrap();
    for (i, offset) in [5usize, 1 << 20, 7_777_777, size - 10, 12 << 20]
        .into_iter()
        .enumerate()
    {
        let patch = random_bytes(4096 + i * 1000, i as u64 + 1);
        file.write_all_at(&patch, offset as u64).unwrap();
        let end = (offset + patch.len()).min(model.len());
        model.splice(offset..end, patch.iter().copied());
    }
    // Reads of our own writes while open.
    let mut back = vec![0u8; 4096];
    file.read_exact_at(&mut back, 1 << 20).unwrap();
    assert_eq!(&back[..], &model[1 << 20..(1 << 20) + 4096]);
    drop(file);
    assert_eq!(
        std::fs::read(m.path("big.bin")).unwrap(),
        model,
        "after close"
    );
    wait_uploaded(&m, "big.bin", &sha1_hex(&model));
    assert_eq!(
        m.emulator
            .tree()
            .iter()
            .filter(|e| e.path == "/big.bin" && e.trashed)
            .count(),
        1,
        "old copy trashed"
    );
}

#[test]
fn truncate_up_and_down_and_append() {
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_file("root", "t.txt", &vec![b'a'; 1000]);
        },
        &[],
    );
    let path = m.path("t.txt");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(100).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 100);
    f.set_len(5000).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 5000);
    drop(f);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    let mut model = vec![b'a'; 100];
    model.resize(5000, 0);
    model.extend_from_slice(b"tail");
    assert_eq!(std::fs::read(&path).unwrap(), model);
    wait_uploaded(&m, "t.txt", &sha1_hex(&model));
    // truncate(2) by path, no open handle.
    sh(&format!("truncate -s 10 '{}'", path.display()));
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'a'; 10]);
    wait_uploaded(&m, "t.txt", &sha1_hex(&[b'a'; 10]));
    // O_TRUNC rewrite.
    std::fs::write(&path, b"fresh").unwrap();
    wait_uploaded(&m, "t.txt", &sha1_hex(b"fresh"));
}

#[test]
fn tar_x_of_500_files_then_diff_r_against_the_source() {
    let m = mount_with(
        |c| {
            c.rate_other_per_sec = 0.0;
            c.rate_list_per_sec = 0.0;
        },
        |_| {},
        &["--api-rate", "0", "--list-rate", "0"],
    );
    let src = tempfile::tempdir().unwrap();
    for i in 0..500 {
        let dir = src.path().join(format!("tree/d{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("file{i}.txt")),
            random_bytes(100 + i * 13, i as u64 + 5),
        )
        .unwrap();
    }
    sh(&format!(
        "tar -C '{}' -cf '{}/t.tar' tree",
        src.path().display(),
        src.path().display()
    ));
    sh(&format!(
        "tar -C '{}' -xf '{}/t.tar'",
        m.dir.display(),
        src.path().display()
    ));
    sh(&format!(
        "diff -r '{}/tree' '{}'",
        src.path().display(),
        m.path("tree").display()
    ));
    m.wait_for("500 uploads", UPLOAD_WAIT, || {
        m.emulator
            .tree()
            .iter()
            .filter(|e| !e.is_dir && !e.trashed && e.path.starts_with("/tree/"))
            .count()
            == 500
    });
    for e in m
        .emulator
        .tree()
        .into_iter()
        .filter(|e| !e.is_dir && !e.trashed)
    {
        let local = std::fs::read(src.path().join(e.path.trim_start_matches('/'))).unwrap();
        assert_eq!(
            e.sha1.as_deref(),
            Some(sha1_hex(&local).as_str()),
            "{}",
            e.path
        );
    }
}

#[test]
fn git_init_add_commit_inside_the_mount() {
    let m = mount_with(|_| {}, |_| {}, &[]);
    let repo = m.path("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &str| {
        sh(&format!(
            "cd '{}' && git -c user.name=t -c user.email=t@example.com {args}",
            repo.display()
        ))
    };
    git("init -q .");
    std::fs::write(repo.join("a.txt"), "first\n").unwrap();
    git("add a.txt");
    git("commit -qm first");
    std::fs::write(repo.join("a.txt"), "second\n").unwrap();
    git("commit -qam second");
    let log = git("log --format=%s");
    assert_eq!(log.lines().collect::<Vec<_>>(), vec!["second", "first"]);
    git("fsck --strict");
    // The drive ends up with git's final names: no lock files, no temporary objects.
    m.wait_for("git files uploaded", UPLOAD_WAIT, || {
        let tree = m.emulator.tree();
        let live: Vec<_> = tree
            .iter()
            .filter(|e| !e.trashed && e.path.starts_with("/repo/"))
            .collect();
        live.iter().any(|e| e.path == "/repo/.git/HEAD")
            && live.iter().any(|e| {
                e.path == "/repo/.git/refs/heads/master" || e.path == "/repo/.git/refs/heads/main"
            })
            && !live
                .iter()
                .any(|e| e.path.ends_with(".lock") || e.path.contains("tmp_obj_"))
            && live.iter().any(|e| {
                e.path == "/repo/a.txt" && e.sha1.as_deref() == Some(&sha1_hex(b"second\n"))
            })
    });
}

#[test]
fn rename_move_unlink_rmdir_reach_the_drive_and_deletes_go_to_the_recycle_bin() {
    let m = mount_with(
        |_| {},
        |e| {
            let a = e.seed_folder("root", "a");
            e.seed_folder("root", "b");
            e.seed_file(&a, "one.txt", b"one");
            e.seed_file(&a, "two.txt", b"two");
            e.seed_file("root", "victim.txt", b"victim");
            e.seed_file("root", "gone.txt", b"gone");
            let full = e.seed_folder("root", "full");
            e.seed_file(&full, "x", b"x");
        },
        &[],
    );
    std::fs::rename(m.path("a/one.txt"), m.path("a/uno.txt")).unwrap();
    std::fs::rename(m.path("a/two.txt"), m.path("b/dos.txt")).unwrap();
    std::fs::rename(m.path("a/uno.txt"), m.path("victim.txt")).unwrap(); // replaces
    std::fs::remove_file(m.path("gone.txt")).unwrap();
    assert_eq!(
        std::fs::remove_dir(m.path("full"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    std::fs::rename(m.path("b"), m.path("a/b-moved")).unwrap();
    std::fs::remove_dir(m.path("a/b-moved")).unwrap_err();
    std::fs::remove_file(m.path("a/b-moved/dos.txt")).unwrap();
    std::fs::remove_dir(m.path("a/b-moved")).unwrap();
    assert_eq!(
        std::fs::create_dir(m.path("a")).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );

    assert_eq!(
        std::fs::read_to_string(m.path("victim.txt")).unwrap(),
        "one"
    );
    let tree = m.emulator.tree();
    let live = |p: &str| tree.iter().find(|e| e.path == p && !e.trashed);
    let trashed = |p: &str| tree.iter().any(|e| e.path == p && e.trashed);
    assert_eq!(
        live("/victim.txt").and_then(|e| e.sha1.clone()),
        Some(sha1_hex(b"one"))
    );
    assert!(
        trashed("/victim.txt"),
        "the replaced file goes to the recycle bin"
    );
    assert!(
        live("/a/one.txt").is_none()
            && live("/a/uno.txt").is_none()
            && live("/a/two.txt").is_none()
    );
    assert!(trashed("/gone.txt") && live("/gone.txt").is_none());
    assert!(live("/full/x").is_some());
    assert!(live("/b").is_none() && live("/a/b-moved").is_none() && trashed("/a/b-moved"));
    assert!(trashed("/a/b-moved/dos.txt") || trashed("/b/dos.txt"));
}

#[test]
fn delete_permanently_removes_from_the_drive() {
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_file("root", "bye.txt", b"bye");
            e.seed_folder("root", "empty");
        },
        &["--delete-permanently"],
    );
    std::fs::remove_file(m.path("bye.txt")).unwrap();
    std::fs::remove_dir(m.path("empty")).unwrap();
    let tree = m.emulator.tree();
    assert!(
        !tree
            .iter()
            .any(|e| e.path == "/bye.txt" || e.path == "/empty"),
        "{tree:?}"
    );
}

#[test]
fn a_file_replaced_under_20_percent_failures_ends_new_with_a_good_copy_at_every_step() {
    let old = b"old content, version one".to_vec();
    let new = random_bytes(3 << 20, 8);
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_file("root", "doc.bin", &old);
        },
        // The new version streams while it is written (O_TRUNC of an existing file), so the
        // stream's failures and its fallback are under test too.
        &["--part-size", "512K", "--upload-while-writing", "1M"],
    );
    assert_eq!(std::fs::read(m.path("doc.bin")).unwrap(), old);
    m.emulator.set_faults(Faults {
        failure_rate: 0.2,
        ..Faults::default()
    });
    std::fs::write(m.path("doc.bin"), &new).unwrap();
    assert_eq!(
        std::fs::read(m.path("doc.bin")).unwrap(),
        new,
        "the mount shows the new content at once"
    );
    let (old_sha, new_sha) = (sha1_hex(&old), sha1_hex(&new));
    m.wait_for("the new content on the drive", UPLOAD_WAIT, || {
        let tree = m.emulator.tree();
        let live: Vec<_> = tree.iter().filter(|e| e.path == "/doc.bin" && !e.trashed).collect();
        assert!(
            live.iter().any(|e| e.sha1.as_deref() == Some(&old_sha) || e.sha1.as_deref() == Some(&new_sha)),
            "a moment without a good copy: {live:?}"
        );
        live.len() == 1 && live[0].sha1.as_deref() == Some(&new_sha)
    });
    m.emulator.set_faults(Faults::default());
    assert_eq!(sha1_of(&m.path("doc.bin")), new_sha);
    assert!(
        m.full_log().contains("uploading while writing"),
        "the new version streamed"
    );
}

#[test]
fn a_full_drive_gives_enospc_and_keeps_what_was_there() {
    let m = mount_with(
        |c| c.quota_bytes = 3 << 20,
        |e| {
            e.seed_pattern_file("root", "filler.bin", 2 << 20, 1);
        },
        // Trashed files still count against the quota: delete the partial file for real.
        &["--delete-permanently", "--upload-drain-timeout", "10"],
    );
    // statfs primes the free-space estimate the write path checks.
    sh(&format!("df '{}' >/dev/null", m.dir.display()));
    let mut f = std::fs::File::create(m.path("too-big.bin")).unwrap();
    let err = f.write_all(&vec![7u8; 4 << 20]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    assert!(m.log().contains("quota"), "a clear log line: {}", m.log());
    // What cp does after ENOSPC: remove the partial file (its queued upload is cancelled).
    std::fs::remove_file(m.path("too-big.bin")).unwrap();
    assert_eq!(
        std::fs::metadata(m.path("filler.bin")).unwrap().len(),
        2 << 20
    );
    // mkdir on a full drive still works (folders take no space); a small file fits.
    std::fs::write(m.path("small.txt"), b"fits").unwrap();
    wait_uploaded(&m, "small.txt", &sha1_hex(b"fits"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("small.txt"))
        .unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"FITS").unwrap();
    drop(f);
    wait_uploaded(&m, "small.txt", &sha1_hex(b"FITS"));
}

#[test]
fn what_the_drive_cannot_store_is_refused_with_the_right_errno() {
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_file("root", "f.txt", b"f");
        },
        &[],
    );
    let errno = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(
        errno(std::os::unix::fs::symlink("f.txt", m.path("link"))),
        Some(libc::EPERM)
    );
    assert_eq!(
        errno(std::fs::hard_link(m.path("f.txt"), m.path("hard"))),
        Some(libc::EPERM)
    );
    let out = std::process::Command::new("mkfifo")
        .arg(m.path("fifo"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let name_too_long = "n".repeat(1100);
    assert_eq!(
        errno(std::fs::write(m.path(&name_too_long), b"x")),
        Some(libc::ENAMETOOLONG)
    );
    // In lookup too (stat, open for reading), not ENOENT.
    assert_eq!(
        std::fs::metadata(m.path(&name_too_long))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(std::fs::read_to_string(m.path("f.txt")).unwrap(), "f");
}

#[test]
fn modes_and_owners_set_through_the_mount_last_as_long_as_the_mount() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_file("root", "f.txt", b"f");
        },
        &[],
    );
    let mode = |p: &str| std::fs::metadata(m.path(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("f.txt"), 0o644);
    std::fs::set_permissions(m.path("f.txt"), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(mode("f.txt"), 0o700);
    std::os::unix::fs::chown(m.path("f.txt"), Some(1234), Some(4321)).unwrap();
    let meta = std::fs::metadata(m.path("f.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
    // A file created with a mode keeps it; rsync's fchmod of its open temporary file works.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path(".tmp.x"))
        .unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap();
    drop(f);
    assert_eq!(mode(".tmp.x"), 0o600);
    std::fs::create_dir(m.path("d")).unwrap();
    std::fs::set_permissions(m.path("d"), std::fs::Permissions::from_mode(0o750)).unwrap();
    assert_eq!(mode("d"), 0o750);
    // The drive stores none of it: a remount shows the defaults again.
    m.restart(&[]);
    assert_eq!(mode("f.txt"), 0o644);
    assert_eq!(std::fs::metadata(m.path("f.txt")).unwrap().uid(), unsafe {
        libc::getuid()
    });
    // --strict-permissions refuses a change, and accepts the values shown.
    m.restart(&["--strict-permissions"]);
    let refused = std::fs::set_permissions(m.path("f.txt"), std::fs::Permissions::from_mode(0o700));
    assert_eq!(refused.unwrap_err().raw_os_error(), Some(libc::ENOTSUP));
    std::fs::set_permissions(m.path("f.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn unlinked_open_files_and_folder_times_follow_posix() {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::MetadataExt;
    let m = mount_with(|_| {}, |_| {}, &[]);
    std::fs::create_dir(m.path("d")).unwrap();
    let before = std::fs::metadata(m.path("d")).unwrap().mtime_nsec();
    let dir_mtime = || std::fs::metadata(m.path("d")).unwrap().modified().unwrap();
    let t0 = dir_mtime();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.path("d/open"))
        .unwrap();
    let t1 = dir_mtime();
    assert!(t1 > t0, "create moves the folder's mtime ({before})");
    f.write_all(b"still here").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::remove_file(m.path("d/open")).unwrap();
    assert!(dir_mtime() > t1, "unlink moves the folder's mtime");
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    // The open handle keeps working; nothing reaches the drive.
    f.write_all(b", written after unlink").unwrap();
    f.rewind().unwrap();
    let mut back = String::new();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, "still here, written after unlink");
    drop(f);
    std::fs::write(m.path("d/landed"), b"x").unwrap();
    m.wait_for(
        "d/landed uploaded",
        std::time::Duration::from_secs(20),
        || m.remote("d/landed").is_some(),
    );
    assert!(m.remote("d/open").is_none());
    assert_eq!(
        std::fs::read_dir(m.path("d")).unwrap().count(),
        1,
        "only d/landed is listed"
    );
}

#[test]
fn an_upload_cut_short_by_unmount_resumes_at_the_next_mount() {
    let m = mount_with(|_| {}, |_| {}, &["--upload-drain-timeout", "1"]);
    // List the root first: with every request failing, only the upload should be affected.
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 0);
    m.emulator.set_faults(Faults {
        failure_rate: 1.0,
        ..Faults::default()
    });
    let data = random_bytes(300_000, 21);
    std::fs::write(m.path("late.bin"), &data).unwrap();
    m.unmount();
    assert!(
        m.full_log().contains("uploads still pending at unmount"),
        "{}",
        m.log()
    );
    assert!(m.remote("late.bin").is_none());
    m.emulator.set_faults(Faults::default());
    m.restart(&[]);
    // The staged file and its journal survived: the new mount uploads it by itself.
    wait_uploaded(&m, "late.bin", &sha1_hex(&data));
    m.wait_for(
        "the resumed file in the mount",
        Duration::from_secs(90),
        || std::fs::read(m.path("late.bin")).is_ok_and(|b| b == data),
    );
}

/// Content already on the drive: by default a rapid upload sends no part; with
/// `--rapid-upload off` no hash is offered and the parts are sent.
#[test]
fn rapid_upload_off_sends_the_parts_of_content_the_drive_already_has() {
    let content = random_bytes(3 << 20, 77);
    for (args, want_parts) in [(&[][..], false), (&["--rapid-upload=off"][..], true)] {
        let seeded = content.clone();
        let m = mount_with(
            |_| {},
            move |e| {
                e.seed_file("root", "have.bin", &seeded);
            },
            args,
        );
        m.emulator.reset_calls();
        std::fs::write(m.path("copy.bin"), &content).unwrap();
        wait_uploaded(&m, "copy.bin", &sha1_hex(&content));
        let puts = m.emulator.call_count("data/put");
        assert_eq!(puts > 0, want_parts, "{args:?}: {:?}", m.emulator.calls());
        assert_eq!(sha1_of(&m.path("copy.bin")), sha1_hex(&content));
    }
}

#[test]
fn internal_upload_sends_every_part_to_the_internal_host() {
    let (emulator, temp) = emulator_with(|c| c.internal_endpoint = true);
    let internal = emulator.internal_url().expect("second listener");
    let m = MountBuilder::new(emulator, temp)
        .arg("--internal-upload")
        .arg("--internal-upload-url")
        .arg(internal)
        .arg("--part-size")
        .arg("1M")
        .mount();
    let data = random_bytes((3 << 20) + 12345, 5);
    let sha = sha1_hex(&data);
    std::fs::write(m.path("internal.bin"), &data).unwrap();
    wait_uploaded(&m, "internal.bin", &sha);
    let calls = m.emulator.calls();
    assert_eq!(
        calls.get("internal/data/put").copied(),
        Some(4),
        "{calls:?}"
    );
    assert_eq!(calls.get("data/put"), None, "{calls:?}");
    assert_eq!(sha1_of(&m.path("internal.bin")), sha);
}
