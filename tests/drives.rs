//! `--drive all` through the kernel: each drive of the account is a top-level folder with its
//! own files, writes land in the drive of their folder, `df` shows the account's space, and a
//! move between drives is EXDEV so `mv` copies (the file ends on the target drive, gone from
//! the source).

mod common;

use std::time::Duration;

use common::*;

const RESOURCE: &str = "资源库";
const BACKUP: &str = "备份盘";

/// A mount of both emulator drives under renamed folders, each seeded with a file.
fn mount_all() -> Mount {
    let quota = 3u64 << 40;
    mount_with(
        |cfg| cfg.quota_bytes = quota,
        |e| {
            e.seed_file_in("resource", "root", "r.txt", b"kept in the resource drive");
            let docs = e.seed_folder_in("resource", "root", "docs");
            e.seed_file_in("resource", &docs, "inside.txt", b"nested");
            e.seed_file_in("backup", "root", "b.txt", b"kept in the backup drive");
        },
        &[
            "--drive",
            "all",
            "--drive-names",
            &format!("resource={RESOURCE},backup={BACKUP}"),
        ],
    )
}

/// The live entry of `drive` (`resource` or `backup`) at `path` in the emulator.
fn entry(m: &Mount, drive: &str, path: &str) -> Option<alipanfs::emulator::TreeEntry> {
    let drive_id = m.emulator.drive_id(drive).expect("emulator drive");
    m.emulator
        .tree()
        .into_iter()
        .find(|e| !e.trashed && e.drive_id == drive_id && e.path == path)
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn each_drive_is_a_folder_with_its_own_files_and_writes_land_in_its_drive() {
    let m = mount_all();
    assert_ne!(
        m.emulator.drive_id("resource"),
        m.emulator.drive_id("backup")
    );
    let mut want = vec![BACKUP.to_string(), RESOURCE.to_string()];
    want.sort();
    assert_eq!(names(&m.dir), want);
    let res = m.path(RESOURCE);
    let bak = m.path(BACKUP);
    assert_eq!(names(&res), ["docs", "r.txt"]);
    assert_eq!(names(&bak), ["b.txt"]);
    assert_eq!(
        std::fs::read(res.join("r.txt")).unwrap(),
        b"kept in the resource drive"
    );
    assert_eq!(
        std::fs::read(res.join("docs/inside.txt")).unwrap(),
        b"nested"
    );
    assert_eq!(
        std::fs::read(bak.join("b.txt")).unwrap(),
        b"kept in the backup drive"
    );

    std::fs::write(res.join("new-r.txt"), b"written into resource").unwrap();
    std::fs::create_dir(bak.join("made")).unwrap();
    std::fs::write(bak.join("made/new-b.txt"), b"written into backup").unwrap();
    m.wait_for("both uploads", Duration::from_secs(60), || {
        entry(&m, "resource", "/new-r.txt").is_some()
            && entry(&m, "backup", "/made/new-b.txt").is_some()
    });
    let sha = |b: &[u8]| alipanfs::hashing::sha1_hex(b);
    assert_eq!(
        entry(&m, "resource", "/new-r.txt").unwrap().sha1,
        Some(sha(b"written into resource"))
    );
    assert_eq!(
        entry(&m, "backup", "/made/new-b.txt").unwrap().sha1,
        Some(sha(b"written into backup"))
    );
    assert!(entry(&m, "backup", "/new-r.txt").is_none());
    assert!(entry(&m, "resource", "/made").is_none());

    // The top level holds only the drives (EROFS); the drives themselves stay.
    for err in [
        std::fs::write(m.path("stray.txt"), b"x").unwrap_err(),
        std::fs::create_dir(m.path("stray")).unwrap_err(),
        std::fs::remove_dir(&bak).unwrap_err(),
        std::fs::rename(&res, m.path("elsewhere")).unwrap_err(),
        std::fs::rename(res.join("r.txt"), m.path("r.txt")).unwrap_err(),
    ] {
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
    assert_eq!(names(&m.dir), want);

    // df shows the account's space, the same from every folder.
    let df = |p: &std::path::Path| sh(&format!("df -B1 --output=size '{}' | tail -1", p.display()));
    let total: u64 = df(&m.dir).trim().parse().unwrap();
    assert_eq!(total, 3u64 << 40, "df: {total}");
    assert_eq!(df(&res), df(&bak));
}

#[test]
fn a_move_between_drives_is_exdev_and_mv_copies_to_the_target_drive() {
    let m = mount_all();
    let res = m.path(RESOURCE);
    let bak = m.path(BACKUP);
    // rename(2) itself: EXDEV, nothing moved.
    let err = std::fs::rename(res.join("r.txt"), bak.join("r.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    assert!(entry(&m, "resource", "/r.txt").is_some());
    assert!(res.join("r.txt").exists() && !bak.join("r.txt").exists());

    // mv copies a file and a folder across, then removes the sources.
    sh(&format!(
        "mv '{0}/r.txt' '{1}/' && mv '{0}/docs' '{1}/'",
        res.display(),
        bak.display()
    ));
    assert_eq!(
        std::fs::read(bak.join("r.txt")).unwrap(),
        b"kept in the resource drive"
    );
    assert_eq!(
        std::fs::read(bak.join("docs/inside.txt")).unwrap(),
        b"nested"
    );
    assert_eq!(names(&res), Vec::<String>::new());
    m.wait_for(
        "the copies on the backup drive",
        Duration::from_secs(60),
        || {
            entry(&m, "backup", "/r.txt").is_some()
                && entry(&m, "backup", "/docs/inside.txt").is_some()
        },
    );
    m.wait_for(
        "the sources gone from the resource drive",
        Duration::from_secs(60),
        || entry(&m, "resource", "/r.txt").is_none() && entry(&m, "resource", "/docs").is_none(),
    );
    assert_eq!(
        entry(&m, "backup", "/r.txt").unwrap().sha1,
        Some(alipanfs::hashing::sha1_hex(b"kept in the resource drive"))
    );
    // renameat2's flags reach the fs through platform::rename_flags: NOREPLACE onto an
    // existing name is EEXIST, EXCHANGE is refused (EINVAL); both leave the files as they were.
    std::fs::write(bak.join("other.txt"), b"other").unwrap();
    for (flags, errno) in [
        (libc::RENAME_NOREPLACE, libc::EEXIST),
        (libc::RENAME_EXCHANGE, libc::EINVAL),
    ] {
        assert_eq!(
            renameat2(&bak.join("b.txt"), &bak.join("other.txt"), flags),
            Err(errno)
        );
    }
    assert_eq!(std::fs::read(bak.join("other.txt")).unwrap(), b"other");
    assert_eq!(
        std::fs::read(bak.join("b.txt")).unwrap(),
        b"kept in the backup drive"
    );
    // A move inside one drive is still a plain rename on the drive (same file_id).
    let before = entry(&m, "backup", "/b.txt").unwrap().file_id;
    std::fs::rename(bak.join("b.txt"), bak.join("docs/b.txt")).unwrap();
    m.wait_for(
        "the move inside the backup drive",
        Duration::from_secs(30),
        || entry(&m, "backup", "/docs/b.txt").is_some_and(|e| e.file_id == before),
    );
}

/// renameat2(2) with `flags`; the errno when it fails.
fn renameat2(from: &std::path::Path, to: &std::path::Path, flags: u32) -> Result<(), i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let (from, to) = (c(from), c(to));
    // SAFETY: two valid NUL-terminated paths, relative to no directory fd.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}
