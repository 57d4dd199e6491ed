//! `--metrics-listen`: a real mount of the emulator serves Prometheus text at /metrics, and its
//! counters agree with what the emulator saw and with the workload run through the kernel.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// One sample of the exposition: metric name and its labels.
type Key = (String, BTreeMap<String, String>);

/// A small parser of the Prometheus text format: `name{a="x",b="y"} value` lines, `#` lines
/// skipped. Label values here never hold quotes or commas.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("label=value");
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        out.insert((name, labels), value);
    }
    out
}

fn scrape(port: u16) -> BTreeMap<Key, f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = rt.block_on(async {
        let resp = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .expect("metrics answer");
        assert!(resp.status().is_success(), "{}", resp.status());
        let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.starts_with("text/plain"), "{kind}");
        resp.text().await.unwrap()
    });
    parse(&text)
}

/// Sum of a metric's samples whose labels include every `want` pair.
fn sum(m: &BTreeMap<Key, f64>, name: &str, want: &[(&str, &str)]) -> f64 {
    m.iter()
        .filter(|((n, labels), _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Per endpoint, the sum over statuses of `alipanfs_api_calls_total`.
fn api_calls(m: &BTreeMap<Key, f64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((name, labels), v) in m {
        if name == "alipanfs_api_calls_total" {
            *out.entry(labels["endpoint"].clone()).or_insert(0) += *v as u64;
        }
    }
    out
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn metrics_match_the_emulator_and_the_workload() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let m = mount_with(
        |_| {},
        |e| {
            e.seed_file("root", "seeded.txt", &vec![b'x'; 100_000]);
        },
        &["--metrics-listen", &listen],
    );
    // Two 429s on the next API calls: retried, and counted under status 429.
    m.emulator.force_429(2);

    let mut written = 0u64;
    for i in 0..3u8 {
        let content: Vec<u8> = (0..150_000u32)
            .map(|n| (n.wrapping_mul(31) as u8) ^ i)
            .collect();
        std::fs::write(m.path(&format!("file{i}.bin")), &content).unwrap();
        written += content.len() as u64;
    }
    m.wait_for("uploads", Duration::from_secs(60), || {
        (0..3).all(|i| {
            m.remote(&format!("file{i}.bin"))
                .is_some_and(|e| e.sha1.is_some())
        }) && sum(&scrape(port), "alipanfs_upload_queue_depth", &[]) == 0.0
    });
    for i in 0..3u8 {
        let back = std::fs::read(m.path(&format!("file{i}.bin"))).unwrap();
        assert_eq!(back.len(), 150_000);
    }
    assert_eq!(
        std::fs::read(m.path("seeded.txt")).unwrap(),
        vec![b'x'; 100_000]
    );
    sh(&format!("ls -l {}", m.dir.display()));

    // The mount may still be finishing a call when one side is read: compare until both agree.
    let mut last = (BTreeMap::new(), CallCounts::default());
    m.wait_for(
        "metrics to agree with the emulator's call counts",
        Duration::from_secs(20),
        || {
            let ours = api_calls(&scrape(port));
            let theirs = m.calls();
            let agree =
                !ours.is_empty() && ours.iter().all(|(endpoint, n)| theirs.get(endpoint) == *n);
            last = (ours, theirs);
            agree
        },
    );
    let (ours, theirs) = last;
    for endpoint in ["openFile/create", "openFile/complete", "openFile/list"] {
        assert!(
            ours.get(endpoint).is_some_and(|n| *n > 0),
            "{endpoint}: ours {ours:?}, emulator {theirs}"
        );
    }

    let metrics = scrape(port);
    assert_eq!(
        sum(&metrics, "alipanfs_api_calls_total", &[("status", "429")]),
        2.0
    );
    assert_eq!(sum(&metrics, "alipanfs_api_throttled_total", &[]), 2.0);
    let ok = |op| {
        sum(
            &metrics,
            "alipanfs_fuse_ops_total",
            &[("op", op), ("errno", "0")],
        )
    };
    for op in [
        "create", "write", "lookup", "read", "flush", "release", "opendir",
    ] {
        assert!(ok(op) > 0.0, "no successful {op}: {metrics:?}");
    }
    // ls lists through readdir or readdirplus, as the kernel chooses.
    assert!(ok("readdir") + ok("readdirplus") > 0.0, "{metrics:?}");
    // The workload looked up names that did not exist yet (create): ENOENT is counted.
    let enoent = libc::ENOENT.to_string();
    assert!(
        sum(
            &metrics,
            "alipanfs_fuse_ops_total",
            &[("op", "lookup"), ("errno", &enoent)]
        ) > 0.0
    );
    let up = sum(&metrics, "alipanfs_upload_bytes_total", &[]);
    assert!(up >= written as f64, "uploaded {up} < written {written}");
    let down = sum(&metrics, "alipanfs_download_bytes_total", &[]);
    assert!(down >= 100_000.0, "downloaded {down}");
    assert!(sum(&metrics, "alipanfs_cache_misses_total", &[]) > 0.0);
    // Once its fetched block is written to the data cache, a re-read is served from it: as a
    // block hit through the daemon, or as a passthrough open (the kernel reads the cache file).
    m.wait_for(
        "a re-read served by the data cache",
        Duration::from_secs(20),
        || {
            assert_eq!(std::fs::read(m.path("seeded.txt")).unwrap().len(), 100_000);
            let now = scrape(port);
            sum(&now, "alipanfs_cache_hits_total", &[])
                + sum(&now, "alipanfs_passthrough_opens_total", &[])
                > 0.0
        },
    );
    assert_eq!(sum(&metrics, "alipanfs_upload_queue_depth", &[]), 0.0);
    // Every FUSE operation runs in a span with its kind, inode and request id (logged at debug).
    let log = m.full_log();
    assert!(log.contains("fuse{op=\"lookup\" ino=1 req="), "{}", m.log());
    // Present, even when no call waited.
    assert!(metrics
        .keys()
        .any(|(n, _)| n == "alipanfs_api_rate_limit_wait_seconds_total"));
}

#[test]
fn a_metrics_address_that_cannot_be_bound_fails_the_mount_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (emulator, temp) = emulator_with(|_| {});
    let err = match MountBuilder::new(emulator, temp)
        .arg("--metrics-listen")
        .arg(addr.clone())
        .try_mount()
    {
        Ok(_) => panic!("mounted although {addr} is taken"),
        Err(e) => e,
    };
    assert!(
        err.contains(&format!("--metrics-listen {addr}: cannot listen")),
        "{err}"
    );
}
