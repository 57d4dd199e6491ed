//! `ls -l` of a big folder through the kernel: READDIRPLUS answers names and attributes from
//! the listing, so a warm `ls -l` costs no LOOKUP per entry (issue 21).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const ENTRIES: usize = 3_000;

/// `alipanfs_fuse_ops_total` of one op, from the mount's `/metrics`.
fn ops(m: &Mount, op: &str) -> f64 {
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
        .filter(|l| l.starts_with("alipanfs_fuse_ops") && l.contains(&format!("op=\"{op}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `ls -l` of `dir`: file name -> size.
fn ls_l(dir: &std::path::Path) -> BTreeMap<String, u64> {
    let out = sh(&format!("ls -l {}", dir.display()));
    out.lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[f.len() - 1].to_string(), f[4].parse().unwrap())
        })
        .collect()
}

#[test]
fn a_warm_ls_l_of_a_big_folder_costs_no_lookup_per_entry() {
    let m = mount_with(
        |_| {},
        |e| {
            let folder = e.seed_folder("root", "big");
            for i in 0..ENTRIES {
                let body = vec![b'x'; i % 7];
                e.seed_file(&folder, &format!("e{i:05}.txt"), &body);
            }
        },
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let want: BTreeMap<String, u64> = m
        .emulator
        .tree()
        .into_iter()
        .filter(|e| !e.trashed && !e.is_dir && e.path.starts_with("/big/"))
        .map(|e| (e.path["/big/".len()..].to_string(), e.size))
        .collect();
    assert_eq!(want.len(), ENTRIES);

    let cold_before = ops(&m, "lookup");
    assert_eq!(ls_l(&m.path("big")), want, "cold ls -l");
    let cold = ops(&m, "lookup") - cold_before;
    // Past the attribute timeout (1 s): the kernel must ask again, and READDIRPLUS answers.
    std::thread::sleep(Duration::from_millis(1500));
    let (plus_before, before) = (ops(&m, "readdirplus"), ops(&m, "lookup"));
    assert_eq!(ls_l(&m.path("big")), want, "warm ls -l");
    let warm = ops(&m, "lookup") - before;
    let plus = ops(&m, "readdirplus") - plus_before;
    eprintln!("LOOKUPs for {ENTRIES} entries: cold {cold}, warm {warm}; warm READDIRPLUS {plus}");
    assert!(plus >= 1.0, "the kernel did not use READDIRPLUS");
    assert!(
        warm <= 200.0,
        "{warm} LOOKUPs for a warm ls -l of {ENTRIES} entries"
    );
    assert!(
        cold <= 200.0,
        "{cold} LOOKUPs for a cold ls -l of {ENTRIES} entries"
    );
}

/// Entries and attributes from a fresh listing are kept by the kernel as long as the listing:
/// `stat` of every entry after a warm `ls -l` costs no LOOKUP nor GETATTR once the attribute
/// timeout (1 s) has passed; a change made elsewhere (no poller here) shows when the listing
/// expires, not later.
#[test]
fn entries_from_a_fresh_listing_are_kept_as_long_as_the_listing() {
    const FILES: usize = 300;
    const TTL: u64 = 5;
    let ttl = TTL.to_string();
    let m = mount_with(
        |_| {},
        |e| {
            let folder = e.seed_folder("root", "kept");
            for i in 0..FILES {
                e.seed_file(&folder, &format!("k{i:03}.txt"), b"old");
            }
        },
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--dir-cache-ttl",
            &ttl,
            "--poll-interval",
            "0",
        ],
    );
    let dir = m.path("kept");
    let listed_at = std::time::Instant::now();
    assert_eq!(ls_l(&dir).len(), FILES);
    std::thread::sleep(Duration::from_millis(1500));
    let asked = |m: &Mount| ops(m, "lookup") + ops(m, "getattr");
    let before = asked(&m);
    let sizes = sh(&format!("stat -c %s {}/*", dir.display()));
    assert_eq!(sizes.lines().filter(|l| *l == "3").count(), FILES);
    let stats = asked(&m) - before;
    eprintln!("LOOKUPs + GETATTRs for {FILES} stats 1.5 s after ls -l: {stats}");
    assert!(
        stats <= 5.0,
        "{stats} LOOKUPs/GETATTRs: the kernel dropped entries from a fresh listing"
    );
    // Changed elsewhere: shown once the listing expires (within a second of it).
    let id = m.remote("kept/k007.txt").unwrap().file_id;
    m.emulator
        .device(
            "overwrite",
            serde_json::json!({"file_id": id, "content": "new and longer"}),
        )
        .unwrap();
    let size = || sh(&format!("stat -c %s {}/k007.txt", dir.display()));
    m.wait_for(
        "the change shown after the listing expired",
        Duration::from_secs(TTL + 10),
        || size().trim() == "14",
    );
    let shown = listed_at.elapsed();
    eprintln!("change shown {shown:?} after the listing (TTL {TTL} s)");
    assert!(
        shown <= Duration::from_secs(TTL + 4),
        "shown {shown:?} after the listing, TTL {TTL} s"
    );
}
