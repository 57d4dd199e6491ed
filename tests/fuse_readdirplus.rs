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
