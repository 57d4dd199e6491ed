//! Browsing and reading through the kernel: the real binary mounted against the emulator.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, UNIX_EPOCH};

use alipanfs::emulator::pattern_bytes;
use common::*;

#[test]
fn ls_lr_shows_names_sizes_and_mtimes_of_the_seeded_tree() {
    let m = mount_with(
        |_| {},
        |e| {
            let docs = e.seed_folder("root", "Documents");
            e.seed_file(&docs, "notes.txt", b"hello from the drive\n");
            let deep = e.seed_folder(&docs, "deep folder");
            e.seed_file(&deep, "中文 name.md", b"# title\n");
            e.seed_pattern_file("root", "blob.bin", 3 * 1024 * 1024 + 17, 7);
        },
        &[],
    );
    let out = sh(&format!("ls -lR --time-style=+%s '{}'", m.dir.display()));
    for name in [
        "Documents",
        "notes.txt",
        "deep folder",
        "中文 name.md",
        "blob.bin",
    ] {
        assert!(out.contains(name), "{name} missing from ls -lR:\n{out}");
    }
    assert!(
        out.contains(&(3 * 1024 * 1024 + 17).to_string()),
        "size missing:\n{out}"
    );
    // Every entry's size and mtime equal the emulator's.
    for entry in m.emulator.tree().into_iter().filter(|e| !e.trashed) {
        let meta = std::fs::metadata(m.path(entry.path.trim_start_matches('/')))
            .expect("stat through the mount");
        assert_eq!(meta.is_dir(), entry.is_dir, "{}", entry.path);
        if !entry.is_dir {
            assert_eq!(meta.len(), entry.size, "{}", entry.path);
            // The preferred I/O size: cp and cat use 1 MiB requests, not 128 KiB ones.
            assert_eq!(meta.blksize(), 1 << 20, "{}", entry.path);
        }
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            mtime > 1_600_000_000 && mtime <= now + 5,
            "{}: mtime {mtime}",
            entry.path
        );
    }
    assert_eq!(
        std::fs::read_to_string(m.path("Documents/notes.txt")).unwrap(),
        "hello from the drive\n"
    );
}

#[test]
fn a_256_mib_file_reads_back_with_the_emulators_sha1() {
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_pattern_file("root", "big.bin", 256 << 20, 42);
        },
        &[],
    );
    let remote = m.remote("big.bin").expect("seeded");
    assert_eq!(sha1_of(&m.path("big.bin")), remote.sha1.unwrap());
}

#[test]
fn two_hundred_random_reads_equal_the_source_bytes() {
    let size: u64 = 48 << 20;
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_pattern_file("root", "random.bin", size, 9);
        },
        &[],
    );
    let mut file = std::fs::File::open(m.path("random.bin")).unwrap();
    let mut rng = 0x2545F4914F6CDD1Du64;
    for _ in 0..200 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let offset = rng % size;
        let len = ((rng >> 32) % (512 * 1024)) as usize + 1;
        file.seek(SeekFrom::Start(offset)).unwrap();
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = file.read(&mut buf[got..]).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let want_len = (len as u64).min(size - offset) as usize;
        assert_eq!(got, want_len, "short read at {offset}");
        assert!(
            buf[..got] == pattern_bytes(9, offset, want_len)[..],
            "bytes differ at {offset}+{len}"
        );
    }
}

/// Programs that mmap what they read (sqlite, image viewers, Python's mmap) must keep working
/// whatever the mount does to speed up read().
#[test]
fn read_only_files_can_be_mmapped_shared_and_private() {
    use std::os::fd::AsRawFd;
    let size: usize = (3 << 20) + 5;
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_pattern_file("root", "mapped.bin", size as u64, 11);
        },
        &[],
    );
    let file = std::fs::File::open(m.path("mapped.bin")).unwrap();
    let want = pattern_bytes(11, 0, size);
    for flags in [libc::MAP_SHARED, libc::MAP_PRIVATE] {
        // SAFETY: a fresh read-only mapping of an open file, unmapped below; only read.
        let got = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ,
                flags,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(
                p,
                libc::MAP_FAILED,
                "mmap({flags}): {}",
                std::io::Error::last_os_error()
            );
            let bytes = std::slice::from_raw_parts(p as *const u8, size).to_vec();
            libc::munmap(p, size);
            bytes
        };
        assert!(got == want, "mmap({flags}) bytes differ");
    }
}

#[test]
fn same_name_siblings_are_both_visible_and_readable() {
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_file("root", "dup.txt", b"first");
            std::thread::sleep(Duration::from_millis(5));
            e.seed_file("root", "dup.txt", b"second");
        },
        &[],
    );
    let mut names: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[1], "dup.txt");
    assert!(
        names[0].starts_with("dup (") && names[0].ends_with(").txt"),
        "{names:?}"
    );
    let mut contents: Vec<String> = names
        .iter()
        .map(|n| std::fs::read_to_string(m.path(n)).unwrap())
        .collect();
    contents.sort();
    assert_eq!(contents, vec!["first", "second"]);
    // The oldest keeps the plain name.
    assert_eq!(std::fs::read_to_string(m.path("dup.txt")).unwrap(), "first");
}

#[test]
fn a_long_read_continues_across_download_url_expiry() {
    let size: u64 = 24 << 20;
    let m = mount_with(
        |c| c.download_url_ttl_cap = Duration::from_secs(2),
        |e| {
            e.seed_pattern_file("root", "slow.bin", size, 5);
        },
        &["--max-read-ahead", "2M"],
    );
    let mut file = std::fs::File::open(m.path("slow.bin")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    let started = std::time::Instant::now();
    while offset < size {
        file.read_exact(&mut buf).unwrap();
        assert!(
            buf == pattern_bytes(5, offset, buf.len()),
            "bytes differ at {offset}"
        );
        offset += buf.len() as u64;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        started.elapsed() > Duration::from_secs(5),
        "the read must outlive several URL lifetimes"
    );
    assert!(
        m.emulator.call_count("openFile/getDownloadUrl") >= 2,
        "the URL must have been renewed: {:?}",
        m.emulator.calls()
    );
}

#[test]
fn four_parallel_readers_under_the_three_download_cap_all_finish() {
    let m = mount_with(
        |c| {
            c.max_concurrent_downloads = 3;
            c.faults.bandwidth_per_conn = Some(40 << 20);
        },
        |e| {
            for i in 0..4 {
                e.seed_pattern_file("root", &format!("p{i}.bin"), 32 << 20, 100 + i);
            }
        },
        &[],
    );
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let path = m.path(&format!("p{i}.bin"));
            std::thread::spawn(move || sha1_of(&path))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let sha = h.join().expect("reader thread");
        assert_eq!(
            Some(sha),
            m.remote(&format!("p{i}.bin")).unwrap().sha1,
            "p{i}.bin"
        );
    }
}

#[test]
fn listing_1050_entries_costs_11_list_calls_and_stat_costs_none() {
    let m = mount_with(
        |_| {},
        |e| {
            let big = e.seed_folder("root", "many");
            for i in 0..1050 {
                e.seed_file(&big, &format!("f{i:04}.txt"), format!("{i}").as_bytes());
            }
        },
        &[],
    );
    assert!(std::fs::metadata(m.path("many")).unwrap().is_dir());
    m.emulator.reset_calls();
    let names: Vec<_> = std::fs::read_dir(m.path("many"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), 1050);
    assert_eq!(
        m.emulator.call_count("openFile/list"),
        11,
        "{:?}",
        m.emulator.calls()
    );
    assert_eq!(m.emulator.call_count("openFile/get"), 0);
    let before = m.emulator.calls().values().sum::<u64>();
    for path in &names {
        let meta = std::fs::metadata(path).unwrap();
        assert!(meta.is_file());
        assert!(meta.size() >= 1);
    }
    let after = m.emulator.calls().values().sum::<u64>();
    assert_eq!(
        before,
        after,
        "stat after listing made API calls: {:?}",
        m.emulator.calls()
    );
}

#[test]
fn a_read_only_mount_refuses_writes_with_erofs() {
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_file("root", "keep.txt", b"keep");
            e.seed_folder("root", "dir");
        },
        &["--read-only"],
    );
    let erofs =
        |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EROFS));
    erofs(std::fs::write(m.path("new.txt"), b"x"));
    erofs(
        std::fs::OpenOptions::new()
            .append(true)
            .open(m.path("keep.txt"))
            .map(|_| ()),
    );
    erofs(std::fs::create_dir(m.path("newdir")));
    erofs(std::fs::remove_file(m.path("keep.txt")));
    erofs(std::fs::remove_dir(m.path("dir")));
    erofs(std::fs::rename(m.path("keep.txt"), m.path("moved.txt")));
    assert_eq!(std::fs::read_to_string(m.path("keep.txt")).unwrap(), "keep");
    assert!(
        m.remote("keep.txt").is_some()
            && m.remote("dir").is_some()
            && m.remote("new.txt").is_none()
    );
}

#[test]
fn statfs_reports_the_drive_space() {
    let m = mount_with(
        |c| c.quota_bytes = 10 << 30,
        |e| {
            e.seed_pattern_file("root", "one-gib-ish.bin", 64 << 20, 1);
        },
        &[],
    );
    let out = sh(&format!("stat -f -c '%b %f %S' '{}'", m.dir.display()));
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(v[0] * v[2], 10 << 30, "{out}");
    assert_eq!((v[0] - v[1]) * v[2], 64 << 20, "{out}");
}

/// `--order-by`/`--order-direction` set the order of readdir (`ls -U`), over a folder of 250
/// entries (three list pages) whose names, sizes and times all order differently.
#[test]
fn order_by_and_direction_set_the_order_of_readdir() {
    const N: usize = 250;
    const BASE_MS: i64 = 1_700_000_000_000;
    // Three permutations of 0..N (each multiplier is prime to N), so no two keys agree.
    let size = |i: usize| ((i * 97) % N + 1) as u64;
    let created = |i: usize| BASE_MS + ((i * 53) % N) as i64 * 1000;
    let updated = |i: usize| BASE_MS + 10_000_000 + ((i * 31) % N) as i64 * 1000;
    let name = |i: usize| format!("f{i:03}");
    let sorted = |key: &dyn Fn(usize) -> i64, desc: bool| {
        let mut v: Vec<usize> = (0..N).collect();
        v.sort_by_key(|&i| key(i));
        if desc {
            v.reverse();
        }
        v.into_iter().map(name).collect::<Vec<_>>()
    };
    let cases: Vec<(&[&str], Vec<String>)> = vec![
        (&[], sorted(&|i| i as i64, false)),
        (&["--order-direction=desc"], sorted(&|i| i as i64, true)),
        (&["--order-by=size"], sorted(&|i| size(i) as i64, false)),
        (
            &["--order-by=size", "--order-direction=desc"],
            sorted(&|i| size(i) as i64, true),
        ),
        (
            &["--order-by=updated_at", "--order-direction=desc"],
            sorted(&updated, true),
        ),
        (
            &["-o", "order_by=created_at,order_direction=asc"],
            sorted(&created, false),
        ),
    ];
    for (args, want) in cases {
        let m = mount_with(
            |_| {},
            |e| {
                let dir = e.seed_folder("root", "big");
                // Seeded in an order that is none of the tested ones.
                for i in (0..N).rev() {
                    let id = e.seed_file(&dir, &name(i), &vec![b'x'; size(i) as usize]);
                    e.set_times(&id, created(i), updated(i));
                }
            },
            args,
        );
        assert!(std::fs::metadata(m.path("big")).unwrap().is_dir());
        m.emulator.reset_calls();
        let got: Vec<String> = std::fs::read_dir(m.path("big"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(got.len(), N, "{args:?}");
        assert_eq!(got, want, "{args:?}");
        assert_eq!(
            m.emulator.call_count("openFile/list"),
            3,
            "{args:?}: {:?}",
            m.emulator.calls()
        );
    }
}
