//! The change detector (`alipanfs::poll::Detector`) with the real client against the emulator:
//! each kind of change made as another device is found, with the delta feed and without it,
//! and an idle poll costs one call whatever the tree's size.

use std::sync::Arc;
use std::time::Duration;

use alipanfs::api::{Client, ClientConfig, RetryPolicy};
use alipanfs::drive::Drive;
use alipanfs::emulator::{Emulator, EmulatorConfig};
use alipanfs::poll::{Detector, FeedKind};
use serde_json::json;

struct Env {
    emu: Emulator,
    drive: Arc<dyn Drive>,
    _dir: tempfile::TempDir,
}

async fn env(delta_feed: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmulatorConfig {
        data_dir: dir.path().join("emulator"),
        delta_feed,
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let mut c = ClientConfig::new(dir.path().join("tokens.json"));
    c.api_url = emu.api_url();
    c.client_id = Some("alipanfs-emulator-app".into());
    c.client_secret = Some("alipanfs-emulator-secret".into());
    c.refresh_token = Some(emu.refresh_token());
    c.retry = RetryPolicy {
        max_attempts: 8,
        budget: Duration::from_secs(20),
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(500),
    };
    let client = Client::new(c).unwrap();
    client.init().await.unwrap();
    Env {
        emu,
        drive: Arc::new(client),
        _dir: dir,
    }
}

fn calls(emu: &Emulator) -> u64 {
    emu.calls()
        .iter()
        .filter(|(k, _)| k.starts_with("openFile/") || k.starts_with("user/"))
        .map(|(_, v)| v)
        .sum()
}

fn id(v: serde_json::Value) -> String {
    v["file_id"].as_str().unwrap().to_string()
}

/// Each change as another device makes it, and what a poll must report for it: (op, args,
/// name expected among changed items, or None when only `gone`/a folder count can show it).
async fn seven_changes(e: &Env, d: &mut Detector, folder: &str) -> Vec<(String, bool)> {
    let dev = |op: &str, args: serde_json::Value| e.emu.device(op, args).unwrap();
    let mut seen = Vec::new();
    let mut check = |label: &str, found: alipanfs::poll::Found| {
        let names: Vec<String> = found.items.iter().map(|i| i.name.clone()).collect();
        seen.push((
            format!("{label}: items {names:?} gone {:?}", found.gone),
            !found.is_empty(),
        ));
    };
    let f = id(dev(
        "create",
        json!({"parent_file_id": folder, "name": "new.txt", "content": "1"}),
    ));
    check("create", d.poll().await.unwrap());
    dev("mkdir", json!({"parent_file_id": folder, "name": "sub"}));
    check("mkdir", d.poll().await.unwrap());
    dev("overwrite", json!({"file_id": f, "content": "22"}));
    check("overwrite", d.poll().await.unwrap());
    dev("rename", json!({"file_id": f, "name": "renamed.txt"}));
    check("rename", d.poll().await.unwrap());
    dev("move", json!({"file_id": f, "to_parent_file_id": "root"}));
    check("move", d.poll().await.unwrap());
    dev("trash", json!({"file_id": f}));
    check("trash", d.poll().await.unwrap());
    let g = id(dev(
        "create",
        json!({"parent_file_id": folder, "name": "doomed", "content": "x"}),
    ));
    d.poll().await.unwrap();
    dev("delete", json!({"file_id": g}));
    check("delete", d.poll().await.unwrap());
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_feed_reports_all_seven_kinds_of_change() {
    let e = env(true).await;
    let folder = e.emu.seed_folder("root", "shared");
    let mut d = Detector::start(e.drive.clone()).await.unwrap();
    assert_eq!(d.kind(), FeedKind::Delta);
    assert!(
        d.poll().await.unwrap().is_empty(),
        "nothing changed since start"
    );
    for (what, found) in seven_changes(&e, &mut d, &folder).await {
        assert!(found, "{what}");
        println!("{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_new_changed_renamed_and_moved_items_and_counts_show_removals() {
    let e = env(false).await;
    let folder = e.emu.seed_folder("root", "shared");
    e.emu.seed_file(&folder, "old.txt", b"o");
    let mut d = Detector::start(e.drive.clone()).await.unwrap();
    assert_eq!(d.kind(), FeedKind::Search);
    assert!(
        d.poll().await.unwrap().is_empty(),
        "what existed before start is not news"
    );
    let results = seven_changes(&e, &mut d, &folder).await;
    for (what, found) in &results[..5] {
        assert!(found, "search must report {what}");
    }
    // Search never sees the recycle bin: trash and delete show through a folder's count.
    let before = d.folder_count(&folder).await.unwrap();
    let victim = e.emu.seed_file(&folder, "victim.txt", b"v");
    d.poll().await.unwrap();
    assert_eq!(d.folder_count(&folder).await.unwrap(), before + 1);
    e.emu.device("trash", json!({"file_id": victim})).unwrap();
    assert_eq!(d.folder_count(&folder).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_poll_costs_one_call_on_a_ten_thousand_entry_tree() {
    for delta in [false, true] {
        let e = env(delta).await;
        for dir in 0..10 {
            let folder = e.emu.seed_folder("root", &format!("d{dir:02}"));
            for f in 0..999 {
                e.emu.seed_file(&folder, &format!("f{f:04}"), b"");
            }
        }
        let mut d = Detector::start(e.drive.clone()).await.unwrap();
        let start = calls(&e.emu);
        for _ in 0..10 {
            assert!(d.poll().await.unwrap().is_empty());
        }
        let per_ten = calls(&e.emu) - start;
        println!(
            "{}: 10 idle polls on 10,000 entries cost {per_ten} API calls",
            d.kind().name()
        );
        assert!(per_ten <= 10, "{per_ten} calls for 10 idle polls");
        // And a burst larger than one poll reads: search reports an overflow, delta goes on.
        let folder = e.emu.seed_folder("root", "burst");
        for f in 0..600 {
            e.emu.seed_file(&folder, &format!("b{f:04}"), b"");
        }
        let first = d.poll().await.unwrap();
        let second = d.poll().await.unwrap();
        let reported = first.items.len() + second.items.len();
        if d.kind() == FeedKind::Search {
            assert!(
                first.overflow,
                "601 changes > 5 pages: folders in use get revalidated"
            );
        }
        assert_eq!(reported, 601, "every change once, over two polls");
    }
}
