//! Listings and download URLs survive a remount (issue 11, item 3): kept on disk under
//! `<cache-dir>/meta/`, served within `--dir-cache-ttl` of their fetch without an API call,
//! never showing a state older than what the mount itself did, and ignored when damaged.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use alipanfs::api::{Client, ClientConfig};
use alipanfs::drive::Drive;
use alipanfs::emulator::pattern_bytes;
use alipanfs::hashing::sha1_hex;
use alipanfs::meta::MetaStore;
use common::*;

const LIST: &str = "openFile/list";
const URL: &str = "openFile/getDownloadUrl";

/// The metadata store of the emulator's default drive under the mount's cache dir.
fn store_dir(m: &Mount) -> PathBuf {
    MetaStore::dir_of(
        &m.cache_dir,
        &m.emulator.user_id(),
        &m.emulator.drive_id("default").unwrap(),
    )
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

/// The API calls that are not the start-up's own (sign-in, drive and space info).
fn drive_calls(c: &CallCounts) -> u64 {
    c.0.iter()
        .filter(|(k, _)| !k.starts_with("user/") && !k.starts_with("oauth/"))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn a_listing_fetched_before_a_remount_is_served_from_disk_until_its_ttl_from_the_fetch() {
    const TTL: u64 = 12;
    let ttl = TTL.to_string();
    let (emulator, temp) = emulator_with(|_| {});
    let many = emulator.seed_folder("root", "many");
    for i in 0..250 {
        emulator.seed_file(&many, &format!("f{i:03}.txt"), format!("{i}").as_bytes());
    }
    // The mount's root is the folder itself: its listing alone is counted.
    let m = MountBuilder::new(emulator, temp)
        .arg("--dir-cache-ttl")
        .arg(ttl.as_str())
        .arg("--root-folder-id")
        .arg(many.as_str())
        .mount();
    let before = m.calls();
    let t0 = Instant::now();
    assert_eq!(names_in(&m.dir).len(), 250);
    let listed = Instant::now();
    assert_eq!(
        m.calls().since(&before).get(LIST),
        3,
        "cold: ceil(250/100) calls"
    );
    m.unmount();
    // A part of the TTL passes while unmounted: the remount must serve what is left of it,
    // not start it again.
    m.wait_for("5 s after the listing", Duration::from_secs(10), || {
        listed.elapsed() >= Duration::from_secs(5)
    });
    m.mount_again(&[]);
    let before = m.calls();
    assert_eq!(names_in(&m.dir).len(), 250);
    let stat_from = m.calls();
    let meta = std::fs::metadata(m.path("f123.txt")).unwrap();
    assert_eq!(meta.len(), 3);
    let stat_calls = m.calls().since(&stat_from);
    assert_eq!(
        drive_calls(&stat_calls),
        0,
        "stat of an entry: {stat_calls}"
    );
    assert_eq!(std::fs::read_to_string(m.path("f007.txt")).unwrap(), "7");
    let after = m.calls().since(&before);
    assert!(
        listed.elapsed() < Duration::from_secs(TTL),
        "the test was too slow to check within the TTL"
    );
    assert_eq!(
        after.get(LIST),
        0,
        "ls, stat and a small read after the remount: {after}"
    );
    assert_eq!(after.get("openFile/get"), 0, "{after}");
    eprintln!("FIGURES within the TTL after the remount: {after}");

    // Once the TTL has passed since the fetch (not since the remount), one refresh.
    let before = m.calls();
    m.wait_for("a listing refresh", Duration::from_secs(TTL + 20), || {
        names_in(&m.dir);
        m.calls().since(&before).get(LIST) > 0
    });
    let refreshed = Instant::now();
    assert!(
        refreshed >= t0 + Duration::from_secs(TTL),
        "refreshed {:?} after the first listing, before its TTL",
        refreshed - t0
    );
    assert!(
        refreshed <= listed + Duration::from_secs(TTL + 3),
        "refreshed {:?} after the listing: the remount restarted the TTL",
        refreshed - listed
    );
    assert_eq!(names_in(&m.dir).len(), 250);
    assert_eq!(
        m.calls().since(&before).get(LIST),
        3,
        "one refresh of 250 entries"
    );
}

#[test]
fn a_download_url_is_not_asked_again_after_a_remount_and_the_store_is_private() {
    // Over 5 MB: listings carry no URL for it, only getDownloadUrl does.
    let size = 6 << 20;
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_pattern_file("root", "big.bin", size as u64, 7);
        },
        // No data cache: the bytes must come from the drive, through the stored URL.
        &["--cache-size", "0"],
    );
    let want = sha1_hex(&pattern_bytes(7, 0, size));
    let before = m.calls();
    assert_eq!(sha1_of(&m.path("big.bin")), want);
    assert_eq!(m.calls().since(&before).get(URL), 1);
    m.restart(&[]);
    let before = m.calls();
    assert_eq!(sha1_of(&m.path("big.bin")), want);
    let after = m.calls().since(&before);
    assert_eq!(after.get(URL), 0, "read after the remount: {after}");
    assert_eq!(after.get(LIST), 0, "{after}");
    assert!(
        after.get("data/get") > 0,
        "the bytes still come from the drive"
    );
    eprintln!("FIGURES read after the remount: {after}");

    let store = store_dir(&m);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&m.cache_dir.join("meta")), 0o700);
    assert_eq!(mode(&store), 0o700);
    let log = store.join("urls.log");
    assert_eq!(mode(&log), 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    let url = text
        .split('"')
        .find(|s| s.starts_with("http"))
        .expect("a URL in the store");
    let query = url.split_once('?').expect("a signed URL").1;
    assert!(!query.is_empty());
    assert!(
        !m.full_log().contains(query),
        "the daemon logged a signed URL's query string"
    );
    for entry in std::fs::read_dir(store.join("dirs")).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }
}

#[test]
fn changes_made_through_the_mount_show_after_a_remount_within_the_ttl() {
    let m = mount_with(
        |_| {},
        |e| {
            let d = e.seed_folder("root", "d");
            let other = e.seed_folder("root", "other");
            for name in ["a.txt", "b.txt", "c.txt"] {
                e.seed_file(&d, name, format!("old {name}").as_bytes());
            }
            e.seed_file(&other, "o.txt", b"o");
        },
        &["--dir-cache-ttl", "600"],
    );
    let mut checks = Checks::default();
    let mut same_as_drive = |m: &Mount, what: &str| {
        // A file closed just before the restart may be left to the new mount (the kernel's
        // RELEASE, which queues its upload, can come after the SIGTERM): it shows at once and
        // lands a moment later. A stale stored listing would differ for the whole TTL.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut mount, mut drive) = (local_tree(&m.dir), m.drive_tree("/"));
        while mount != drive && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            (mount, drive) = (local_tree(&m.dir), m.drive_tree("/"));
        }
        checks.check(mount == drive, || {
            format!("{what}: the mount shows {mount:?}, the drive holds {drive:?}")
        });
    };
    // Every folder listed (and stored) first.
    same_as_drive(&m, "before");
    assert!(
        std::fs::read_dir(store_dir(&m).join("dirs"))
            .unwrap()
            .count()
            >= 3
    );

    std::fs::write(m.path("d/new.txt"), b"created through the mount").unwrap();
    m.restart(&[]);
    same_as_drive(&m, "after a create");

    std::fs::remove_file(m.path("d/a.txt")).unwrap();
    m.restart(&[]);
    same_as_drive(&m, "after an unlink");

    std::fs::rename(m.path("d/b.txt"), m.path("d/b2.txt")).unwrap();
    std::fs::rename(m.path("d/c.txt"), m.path("other/c.txt")).unwrap();
    m.restart(&[]);
    same_as_drive(&m, "after renames");

    // New content for a file that keeps its name (the drive item changes).
    std::fs::write(m.path("other/o.txt"), b"rewritten").unwrap();
    std::fs::create_dir(m.path("d/sub")).unwrap();
    m.restart(&[]);
    same_as_drive(&m, "after a rewrite and a mkdir");
    checks.finish();
    assert_eq!(
        names_in(&m.path("d")),
        ["b2.txt", "new.txt", "sub"],
        "what the mount shows"
    );
    assert_eq!(std::fs::read(m.path("other/o.txt")).unwrap(), b"rewritten");
}

#[test]
fn a_file_pending_at_a_kill_9_shows_after_the_remount_despite_a_stored_listing() {
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_file("root", "keep.txt", b"keep");
        },
        &["--dir-cache-ttl", "600"],
    );
    assert_eq!(names_in(&m.dir), ["keep.txt"]);
    // Uploads crawl: the new file is surely pending at the kill.
    m.emulator.set_faults(Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    });
    std::fs::write(m.path("new.txt"), b"pending at the kill").unwrap();
    m.kill9();
    assert!(
        m.remote("new.txt").is_none(),
        "the test needs the upload pending"
    );
    m.emulator.set_faults(Faults::default());
    m.mount_again(&[]);
    m.wait_for("the resumed upload", Duration::from_secs(60), || {
        m.remote("new.txt").is_some()
    });
    m.wait_for(
        "the landed file in the mount",
        Duration::from_secs(30),
        || names_in(&m.dir) == ["keep.txt", "new.txt"],
    );
    assert_eq!(
        std::fs::read(m.path("new.txt")).unwrap(),
        b"pending at the kill"
    );
    m.restart(&[]);
    assert_eq!(names_in(&m.dir), ["keep.txt", "new.txt"]);
}

/// A client of the emulator besides the mount (the refresh it makes supersedes the mount's
/// tokens, whose access token lives on through the emulator's grace period).
fn other_client(m: &Mount) -> Client {
    let mut cfg = ClientConfig::new(m.cache_dir.with_file_name("other-client/token.json"));
    let defaults = EmulatorConfig::default();
    cfg.api_url = m.emulator.api_url();
    cfg.client_id = Some(defaults.client_id);
    cfg.client_secret = Some(defaults.client_secret);
    cfg.refresh_token = Some(m.emulator.refresh_token());
    Client::new(cfg).unwrap()
}

#[test]
fn a_file_changed_on_the_drive_behind_the_mount_is_seen_after_the_ttl() {
    let mut old_id = String::new();
    let mut folder = String::new();
    let m = mount_with(
        |c| c.access_token_grace = Duration::from_secs(3600),
        |e| {
            folder = e.seed_folder("root", "w");
            old_id = e.seed_file(&folder, "f.txt", b"version 1");
        },
        &["--dir-cache-ttl", "6"],
    );
    assert_eq!(std::fs::read(m.path("w/f.txt")).unwrap(), b"version 1");
    m.restart(&[]);
    let before = m.calls();
    assert_eq!(std::fs::read(m.path("w/f.txt")).unwrap(), b"version 1");
    let from_disk = m.calls().since(&before).get(LIST) == 0;

    // Replaced on the drive: a new item under the same name, the old one in the bin.
    let new_id = m.emulator.seed_file(&folder, "f.tmp", b"version 2, longer");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = other_client(&m);
    rt.block_on(async {
        client.trash(&old_id).await.unwrap();
        client.rename(&new_id, "f.txt").await.unwrap();
    });
    m.wait_for(
        "the new content through the mount",
        Duration::from_secs(30),
        || {
            std::fs::read(m.path("w/f.txt")).ok().as_deref()
                == Some(b"version 2, longer".as_slice())
        },
    );
    assert_eq!(names_in(&m.path("w")), ["f.txt"]);
    m.restart(&[]);
    assert_eq!(
        std::fs::read(m.path("w/f.txt")).unwrap(),
        b"version 2, longer"
    );
    assert!(from_disk, "the first read after the remount listed again");
}

#[test]
fn a_damaged_store_is_ignored_and_the_mount_lists_right() {
    let m = mount_with(
        |_| {},
        |e| {
            let d = e.seed_folder("root", "d");
            e.seed_file(&d, "x.txt", b"x");
            e.seed_pattern_file("root", "big.bin", 6 << 20, 3);
        },
        // No data cache: reading again must ask for the URLs the damaged log lost.
        &["--dir-cache-ttl", "600", "--cache-size", "0"],
    );
    let want = m.drive_tree("/");
    let before = m.calls();
    assert_eq!(local_tree(&m.dir), want);
    let cold = m.calls().since(&before);
    m.unmount();
    let store = store_dir(&m);
    let mut damaged = 0;
    for entry in std::fs::read_dir(store.join("dirs")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"{\"version\":1,\"fol\xff\x00").unwrap();
        damaged += 1;
    }
    assert!(damaged >= 2, "the root and d were stored");
    std::fs::write(store.join("urls.log"), b"\x00\x01 not json\n{\"f\":").unwrap();
    m.mount_again(&[]);
    let before = m.calls();
    assert_eq!(local_tree(&m.dir), want);
    let after = m.calls().since(&before);
    assert!(after.get(LIST) >= 2, "listed again: {after}");
    // (Counted with any attempt the rate limit refused.)
    assert!(
        cold.get(URL) >= 1 && after.get(URL) >= cold.get(URL),
        "the URLs asked again as by the first mount ({cold}): {after}"
    );
    let log = m.full_log();
    assert!(log.contains("corrupt stored listing"), "one WARN says so");
    assert!(log.contains("unreadable lines in the stored download URLs"));

    // A store that cannot be opened at all: the mount runs without it.
    m.unmount();
    std::fs::remove_dir_all(store.join("dirs")).unwrap();
    std::fs::write(store.join("dirs"), b"a file where the folder was").unwrap();
    m.mount_again(&[]);
    assert_eq!(local_tree(&m.dir), want);
    assert!(m.full_log().contains("no metadata store"));
}
