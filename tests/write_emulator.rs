//! The write path against the emulator over real HTTP, through the real client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use alipanfs::api::{Client, ClientConfig};
use alipanfs::drive::ROOT_ID;
use alipanfs::emulator::{Emulator, EmulatorConfig, Faults, TreeEntry};
use alipanfs::error::Error;
use alipanfs::fault::FaultyDrive;
use alipanfs::hashing;
use alipanfs::write::{upload_file, Staging, UploadConfig, UploadQueue, UploadTarget};

const KIB: usize = 1024;

struct Env {
    tmp: tempfile::TempDir,
    emu: Emulator,
    /// The real client behind a fault injector (idle unless a test arms it).
    drive: Arc<FaultyDrive<Client>>,
}

async fn env(tweak: impl FnOnce(&mut EmulatorConfig)) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = EmulatorConfig {
        data_dir: tmp.path().join("emulator"),
        // Rate limits are the client's and emulator's business; keep these tests quick.
        rate_list_per_sec: 0.0,
        rate_download_url_per_sec: 0.0,
        rate_other_per_sec: 0.0,
        ..EmulatorConfig::default()
    };
    tweak(&mut cfg);
    let (client_id, client_secret) = (cfg.client_id.clone(), cfg.client_secret.clone());
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let mut cc = ClientConfig::new(tmp.path().join("tokens.json"));
    cc.api_url = emu.api_url();
    cc.client_id = Some(client_id);
    cc.client_secret = Some(client_secret);
    cc.refresh_token = Some(emu.refresh_token());
    cc.limits.list_per_sec = 1000.0;
    cc.limits.download_url_per_sec = 1000.0;
    cc.limits.other_per_sec = 1000.0;
    let client = Client::new(cc).unwrap();
    client.init().await.unwrap();
    Env {
        tmp,
        emu,
        drive: Arc::new(FaultyDrive::new(client)),
    }
}

impl Env {
    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Visible (complete, untrashed) entries named `name` in the root.
    fn visible(&self, name: &str) -> Vec<TreeEntry> {
        self.emu
            .tree()
            .into_iter()
            .filter(|e| e.parent_file_id == ROOT_ID && e.name == name && !e.trashed)
            .collect()
    }

    fn entry(&self, file_id: &str) -> TreeEntry {
        self.emu
            .tree()
            .into_iter()
            .find(|e| e.file_id == file_id)
            .unwrap_or_else(|| panic!("{file_id} not in the emulator's tree"))
    }
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)).to_le_bytes()[1])
        .collect()
}

fn target(name: &str) -> UploadTarget {
    UploadTarget {
        parent_file_id: ROOT_ID.into(),
        name: name.into(),
        mtime: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        replaces: None,
    }
}

fn small_parts() -> UploadConfig {
    UploadConfig {
        part_size: Some(100 * KIB as u64),
        pre_hash_min_size: 200 * KIB as u64,
        ..UploadConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_survives_part_urls_expiring_mid_upload() {
    let e = env(|c| c.upload_url_ttl = Duration::from_secs(1)).await;
    // Every call first waits 2.1 s, longer than part URLs live (x-oss-expires is a whole second,
    // valid through that second: at most 2 s): the first part's PUT reaches the server after its
    // URL expired. Once the uploader asks for fresh URLs, calls go fast again.
    let drive = e.drive.clone();
    drive.set_latency(Duration::from_millis(2100));
    let content = data(450 * KIB + 3, 1);
    let p = e.file("big", &content);
    let upload = {
        let drive = drive.clone();
        tokio::spawn(async move {
            upload_file(&*drive, &small_parts(), &target("big.bin"), &p, None).await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while drive.call_count("upload_urls") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "part URLs never renewed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drive.set_latency(Duration::ZERO);
    let item = upload.await.unwrap().unwrap();

    assert_eq!(item.size, content.len() as u64);
    assert_eq!(
        e.emu.file_sha1(&item.file_id).as_deref(),
        Some(&*hashing::sha1_hex(&content))
    );
    // Five parts, plus at least one PUT refused as expired and sent again.
    assert!(
        drive.call_count("upload_part") >= 6,
        "an expired PUT was retried"
    );
    assert_eq!(item.local_modified_at, target("x").mtime);
    assert_eq!(e.visible("big.bin").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_upload_of_the_same_content_is_rapid() {
    let e = env(|_| {}).await;
    let cfg = small_parts();
    // Below and above the pre-hash threshold.
    for (i, len) in [(0u32, 150 * KIB), (1, 350 * KIB)] {
        let content = data(len, 10 + i);
        let p = e.file(&format!("c{i}"), &content);
        let first = upload_file(&*e.drive, &cfg, &target(&format!("a{i}")), &p, None)
            .await
            .unwrap();
        let puts = e.emu.call_count("data/put");
        assert!(puts > 0);
        let second = upload_file(&*e.drive, &cfg, &target(&format!("b{i}")), &p, None)
            .await
            .unwrap();
        assert_eq!(e.emu.call_count("data/put"), puts, "no part bytes sent");
        assert_ne!(first.file_id, second.file_id);
        assert_eq!(
            e.entry(&second.file_id).sha1,
            Some(hashing::sha1_hex(&content))
        );
        assert_eq!(e.entry(&second.file_id).size, len as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_trashes_the_old_copy_only_after_success() {
    let e = env(|_| {}).await;
    let old = e.emu.seed_file(ROOT_ID, "doc.txt", b"old content");
    let drive = &*e.drive;
    let new = data(250 * KIB, 3);
    let p = e.file("doc", &new);
    let t = UploadTarget {
        replaces: Some(old.clone()),
        ..target("doc.txt")
    };
    // The upload fails at complete: the old copy must be untouched and still the only one.
    drive.fail_next("complete_upload", 1, || {
        Error::PermissionDenied("injected".into())
    });
    assert!(upload_file(drive, &small_parts(), &t, &p, None)
        .await
        .is_err());
    assert_eq!(drive.call_count("trash"), 0);
    let vis = e.visible("doc.txt");
    assert_eq!(vis.len(), 1);
    assert_eq!(vis[0].file_id, old);

    let item = upload_file(drive, &small_parts(), &t, &p, None)
        .await
        .unwrap();
    assert!(e.entry(&old).trashed, "old copy trashed after success");
    let vis = e.visible("doc.txt");
    assert_eq!(vis.len(), 1);
    assert_eq!(vis[0].file_id, item.file_id);
    assert_eq!(vis[0].sha1, Some(hashing::sha1_hex(&new)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_uploads_end_correct_under_20_percent_failures() {
    let e = env(|_| {}).await;
    let staging = Staging::new(e.tmp.path().join("staging")).unwrap();
    let q = UploadQueue::new(e.drive.clone(), small_parts());
    let mut events = q.subscribe();
    // Half of the failures are 500s, half dropped connections, on API calls and part PUTs alike.
    e.emu.set_faults(Faults {
        failure_rate: 0.2,
        ..Faults::default()
    });
    let mut files = Vec::new();
    for key in 1..=3u64 {
        let content = data(350 * KIB * key as usize + 11, 40 + key as u32);
        let f = staging.create().unwrap();
        std::fs::write(&f.path, &content).unwrap();
        let name = format!("flaky{key}.bin");
        q.submit(key, target(&name), f.path.clone());
        files.push((key, name, content, f.path));
    }
    assert_eq!(
        q.drain(Duration::from_secs(120)).await,
        0,
        "uploads finished"
    );
    e.emu.set_faults(Faults::default());

    let mut done = std::collections::HashMap::new();
    while done.len() < files.len() {
        let ev = events.recv().await.unwrap();
        if let Ok(item) = ev.outcome {
            done.insert(ev.key, item);
        }
    }
    for (key, name, content, staged) in files {
        let want = hashing::sha1_hex(&content);
        assert_eq!(e.emu.file_sha1(&done[&key].file_id), Some(want.clone()));
        let vis = e.visible(&name);
        assert_eq!(vis.len(), 1, "exactly one copy: {vis:?}");
        assert_eq!(vis[0].sha1.as_deref(), Some(&*want));
        assert!(!staged.exists(), "staging file removed after success");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_drive_is_quota_exhausted() {
    let e = env(|_| {}).await;
    e.emu.set_quota(1000);
    let p = e.file("q", &data(300 * KIB, 5));
    match upload_file(&*e.drive, &small_parts(), &target("q.bin"), &p, None).await {
        Err(Error::QuotaExhausted(_)) => {}
        other => panic!("expected QuotaExhausted, got {other:?}"),
    }
    assert!(e.visible("q.bin").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file() {
    let e = env(|_| {}).await;
    let p = e.file("empty", b"");
    let item = upload_file(&*e.drive, &small_parts(), &target("empty.txt"), &p, None)
        .await
        .unwrap();
    assert_eq!(item.size, 0);
    let entry = e.entry(&item.file_id);
    assert_eq!(entry.size, 0);
    assert_eq!(entry.sha1, Some(hashing::sha1_hex(b"")));
    assert_eq!(e.emu.call_count("data/put"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_part_is_put_at_most_part_send_attempts_times_per_upload() {
    use alipanfs::api::retry::PART_SEND_ATTEMPTS;
    let e = env(|_| {}).await;
    // Every part PUT fails (500 or a dropped connection); API calls pass.
    e.emu.set_faults(Faults {
        put_failure_rate: 1.0,
        ..Faults::default()
    });
    let content = data(250 * KIB, 77);
    let local = e.file("doomed.bin", &content);
    e.emu.reset_calls();
    let err = upload_file(
        &*e.drive,
        &small_parts(),
        &target("doomed.bin"),
        &local,
        None,
    )
    .await
    .expect_err("no part can land");
    let puts = e.emu.part_puts();
    eprintln!("PUTs per (upload, part): {puts:?}; error: {err}");
    assert!(!puts.is_empty(), "parts were tried");
    // One upload attempt: whatever sessions it opened, part 1 (the only one reached) went out at
    // most N times in all, and exactly N (the retries are used, not multiplied).
    let per_part: u64 = puts
        .iter()
        .filter(|((_, part), _)| *part == 1)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(per_part, u64::from(PART_SEND_ATTEMPTS), "{puts:?}");
    assert!(puts.keys().all(|(_, part)| *part == 1), "{puts:?}");
    assert_eq!(e.emu.call_count("data/put"), u64::from(PART_SEND_ATTEMPTS));
    assert!(e.visible("doomed.bin").is_empty());
}
