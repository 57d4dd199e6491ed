//! The client against the emulator over real HTTP on 127.0.0.1: every endpoint, token
//! rotation across processes, single-flight refresh, 429 storms, pagination cost, URL expiry,
//! rapid upload, sign-in failures.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use alipanfs::api::{Client, ClientConfig, RetryPolicy, TokenStore};
use alipanfs::drive::{
    CheckNameMode, DownloadUrl, Drive, NewFile, TaskState, UploadHashes, ROOT_ID,
};
use alipanfs::emulator::{generate_ladder, pattern_bytes, Emulator, EmulatorConfig, SeedSubtitle};
use alipanfs::error::Error;
use alipanfs::hashing;
use bytes::Bytes;

struct Env {
    emu: Emulator,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start(tweak: impl FnOnce(&mut EmulatorConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmulatorConfig {
            data_dir: dir.path().join("emulator"),
            ..EmulatorConfig::default()
        };
        tweak(&mut cfg);
        let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .unwrap();
        Env { emu, dir }
    }

    fn store(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name).join("tokens.json")
    }

    /// A client with the emulator's app credentials and its current refresh token.
    fn config(&self, store: &str) -> ClientConfig {
        let mut c = ClientConfig::new(self.store(store));
        c.api_url = self.emu.api_url();
        c.client_id = Some("alipanfs-emulator-app".into());
        c.client_secret = Some("alipanfs-emulator-secret".into());
        c.refresh_token = Some(self.emu.refresh_token());
        c.retry = RetryPolicy {
            max_attempts: 8,
            budget: Duration::from_secs(20),
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
        };
        c.request_timeout = Duration::from_secs(10);
        c
    }

    fn client(&self, store: &str) -> Client {
        Client::new(self.config(store)).unwrap()
    }
}

fn unlimited(c: &mut EmulatorConfig) {
    c.rate_list_per_sec = 0.0;
    c.rate_download_url_per_sec = 0.0;
    c.rate_other_per_sec = 0.0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drive_space_and_read_endpoints() {
    let env = Env::start(unlimited).await;
    let docs = env.emu.seed_folder(ROOT_ID, "Documents");
    let hello = env.emu.seed_file(&docs, "hello.txt", b"Hello World!");
    let c = env.client("a");
    let info = c.init().await.unwrap();
    assert_eq!(info.user_id, env.emu.user_id());
    assert_eq!(Some(info.drive_id.clone()), env.emu.drive_id("default"));
    assert_eq!(c.drive_id(), Some(info.drive_id.clone()));
    assert_eq!(c.drive_info().await.unwrap(), info);
    let space = c.space_info().await.unwrap();
    assert!(space.total_bytes > 0 && space.used_bytes >= 12);

    let root = c.list_folder(ROOT_ID).await.unwrap();
    assert!(root
        .iter()
        .any(|i| i.file_id == docs && i.is_dir() && i.size == 0));
    let items = c.list_folder(&docs).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].name, "hello.txt");
    assert_eq!(items[0].size, 12);
    assert_eq!(
        items[0].content_hash.as_deref(),
        Some("2EF7BDE608CE5404E97D5F042F95F89F1C232871")
    );
    assert_eq!(c.get(&hello).await.unwrap(), items[0]);
    assert_eq!(
        c.get_by_path("/Documents/hello.txt").await.unwrap().file_id,
        hello
    );
    assert!(matches!(
        c.get_by_path("/Documents/missing.txt").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        c.get("0123456789abcdef0123456789abcdef01234567").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(c.get_by_path("/").await.unwrap().file_id, ROOT_ID);

    let url = c.download_url(&hello).await.unwrap();
    assert!(url.expires_at > SystemTime::now() + Duration::from_secs(600));
    assert_eq!(
        &c.download_range(&url, 0, 12).await.unwrap()[..],
        b"Hello World!"
    );
    assert_eq!(
        &c.download_range(&url, 6, 100).await.unwrap()[..],
        b"World!"
    );
    assert!(c.download_range(&url, 12, 10).await.unwrap().is_empty());

    let status = c.token_status();
    assert_eq!(status.user_id.as_deref(), Some(env.emu.user_id().as_str()));
    assert!(status.access_expires_at.is_some());
    assert_eq!(c.token_store_path(), env.store("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_and_async_tasks() {
    let env = Env::start(unlimited).await;
    let c = env.client("a");
    let a = c
        .create_folder(ROOT_ID, "A", CheckNameMode::Refuse)
        .await
        .unwrap();
    assert!(!a.exist);
    let again = c
        .create_folder(ROOT_ID, "A", CheckNameMode::Refuse)
        .await
        .unwrap();
    assert!(again.exist);
    assert_eq!(again.file_id, a.file_id);
    let b = c
        .create_folder(ROOT_ID, "B", CheckNameMode::Refuse)
        .await
        .unwrap();
    let f = env.emu.seed_file(&a.file_id, "f.txt", b"data");
    env.emu.seed_file(&a.file_id, "g.txt", b"other");

    // Rename, with a clash.
    let renamed = c.rename(&f, "f2.txt").await.unwrap();
    assert_eq!(renamed.name, "f2.txt");
    assert!(matches!(
        c.rename(&f, "g.txt").await,
        Err(Error::AlreadyExists(_))
    ));

    // Move, with a clash under refuse (nothing moves).
    let mv = c.move_item(&f, &b.file_id, None).await.unwrap();
    assert!(!mv.exist);
    assert_eq!(c.get(&f).await.unwrap().parent_file_id, b.file_id);
    env.emu.seed_file(&a.file_id, "f2.txt", b"clash");
    let back = c.move_item(&f, &a.file_id, None).await.unwrap();
    assert!(back.exist);
    assert_eq!(c.get(&f).await.unwrap().parent_file_id, b.file_id);
    let back = c.move_item(&f, &a.file_id, Some("f3.txt")).await.unwrap();
    assert!(!back.exist);
    let moved = c.get(&f).await.unwrap();
    assert_eq!(
        (moved.parent_file_id.as_str(), moved.name.as_str()),
        (a.file_id.as_str(), "f3.txt")
    );

    // Copy a folder: background task, polled to completion.
    let cp = c.copy_item(&a.file_id, &b.file_id, false).await.unwrap();
    assert_ne!(cp.file_id, a.file_id);
    if let Some(task) = &cp.async_task_id {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.task_state(task).await.unwrap() {
                TaskState::Succeed => break,
                TaskState::Running => {}
                s => panic!("task ended {s:?}"),
            }
            assert!(Instant::now() < deadline, "copy task never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let copies = c.list_folder(&b.file_id).await.unwrap();
    assert!(copies.iter().any(|i| i.name == "A" && i.is_dir()));

    // Trash, then trash again and delete: already gone is fine.
    c.trash(&f).await.unwrap();
    assert!(matches!(
        c.get(&f).await,
        Err(Error::NotFound(_)) | Err(Error::InRecycleBin(_))
    ));
    assert!(!c
        .list_folder(&a.file_id)
        .await
        .unwrap()
        .iter()
        .any(|i| i.file_id == f));
    c.trash(&f).await.unwrap();
    c.delete(&f).await.unwrap();
    c.delete(&f).await.unwrap();
    assert!(!env.emu.tree().iter().any(|e| e.file_id == f));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_session_parts_and_complete() {
    let env = Env::start(unlimited).await;
    let c = env.client("a");
    let part = 200 * 1024;
    let content = pattern_bytes(11, 0, 2 * part + 1234);
    let s = c
        .create_file(&NewFile {
            parent_file_id: ROOT_ID.into(),
            name: "big.bin".into(),
            size: Some(content.len() as u64),
            check_name_mode: CheckNameMode::Refuse,
            part_count: 3,
            local_modified_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)),
            hashes: UploadHashes::None,
        })
        .await
        .unwrap();
    assert!(!s.rapid_upload && !s.exist);
    let upload_id = s.upload_id.clone().expect("upload id");
    assert_eq!(s.parts.len(), 3);
    assert!(s.parts[0].expires_at.is_some());
    // Files being uploaded are invisible.
    assert!(c.list_folder(ROOT_ID).await.unwrap().is_empty());

    let chunks: Vec<_> = content.chunks(part).collect();
    c.upload_part(&s.parts[0], Bytes::copy_from_slice(chunks[0]))
        .await
        .unwrap();
    // Out of order.
    assert!(matches!(
        c.upload_part(&s.parts[2], Bytes::copy_from_slice(chunks[2]))
            .await,
        Err(Error::PartNotSequential)
    ));
    // Same part twice.
    assert!(matches!(
        c.upload_part(&s.parts[0], Bytes::copy_from_slice(chunks[0]))
            .await,
        Err(Error::PartAlreadyExist)
    ));
    // Fresh URLs for the rest.
    let urls = c
        .upload_urls(&s.file_id, &upload_id, &[2, 3])
        .await
        .unwrap();
    assert_eq!(
        urls.iter().map(|u| u.part_number).collect::<Vec<_>>(),
        [2, 3]
    );
    for (u, chunk) in urls.iter().zip(&chunks[1..]) {
        let etag = c
            .upload_part(u, Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
        assert!(etag.is_some());
    }
    let parts = c.uploaded_parts(&s.file_id, &upload_id).await.unwrap();
    assert_eq!(
        parts.iter().map(|p| p.part_number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(parts[0].part_size, part as u64);

    let item = c.complete_upload(&s.file_id, &upload_id).await.unwrap();
    assert_eq!(item.size, content.len() as u64);
    assert_eq!(item.content_hash, Some(hashing::sha1_hex(&content)));
    assert_eq!(
        item.mtime(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
    );
    assert_eq!(
        env.emu.file_sha1(&s.file_id),
        Some(hashing::sha1_hex(&content))
    );
    assert!(matches!(
        c.uploaded_parts(&s.file_id, &upload_id).await,
        Err(Error::NoSuchUpload(_))
    ));

    // refuse on an existing name: exist:true with no upload id.
    let clash = c
        .create_file(&NewFile {
            parent_file_id: ROOT_ID.into(),
            name: "big.bin".into(),
            size: Some(1),
            check_name_mode: CheckNameMode::Refuse,
            part_count: 1,
            local_modified_at: None,
            hashes: UploadHashes::None,
        })
        .await
        .unwrap();
    assert!(clash.exist);
    assert_eq!(clash.upload_id, None);
    assert_eq!(clash.file_id, s.file_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_upload_sends_no_part_bytes_and_pre_hash_matches() {
    let env = Env::start(unlimited).await;
    let content = pattern_bytes(5, 0, 300 * 1024);
    env.emu.seed_file(ROOT_ID, "original.bin", &content);
    let c = env.client("a");
    let local = env.dir.path().join("copy.bin");
    std::fs::write(&local, &content).unwrap();
    let req = |hashes| NewFile {
        parent_file_id: ROOT_ID.into(),
        name: "copy.bin".into(),
        size: Some(content.len() as u64),
        check_name_mode: CheckNameMode::Refuse,
        part_count: 1,
        local_modified_at: None,
        hashes,
    };
    assert!(matches!(
        c.create_file(&req(UploadHashes::PreHash(hashing::pre_hash(&content))))
            .await,
        Err(Error::PreHashMatched)
    ));
    env.emu.reset_calls();
    let s = c
        .create_file(&req(UploadHashes::Full {
            // Lowercase is accepted too.
            content_hash: hashing::sha1_hex(&content).to_lowercase(),
            local_file: local.clone(),
        }))
        .await
        .unwrap();
    assert!(s.rapid_upload);
    assert!(s.parts.is_empty());
    assert_eq!(env.emu.call_count("data/put"), 0);
    let item = c.get(&s.file_id).await.unwrap();
    assert_eq!(item.size, content.len() as u64);
    assert_eq!(
        env.emu.file_sha1(&s.file_id),
        Some(hashing::sha1_hex(&content))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_token_survives_restart_and_old_one_is_dead() {
    let env = Env::start(unlimited).await;
    let first_refresh = env.emu.refresh_token();
    let a = env.client("a");
    a.init().await.unwrap();
    assert_eq!(a.refresh_count(), 1);
    let stored = TokenStore::load(&env.store("a")).unwrap();
    assert_eq!(stored.refresh_token, Some(env.emu.refresh_token()));
    assert_ne!(stored.refresh_token, Some(first_refresh.clone()));
    assert_eq!(stored.user_id, Some(env.emu.user_id()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.store("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A second process from the store alone: reuses the stored access token, no refresh.
    let mut cfg = env.config("a");
    cfg.refresh_token = None;
    let b = Client::new(cfg.clone()).unwrap();
    assert!(b.list_folder(ROOT_ID).await.is_ok());
    assert_eq!(b.refresh_count(), 0);

    // Its refresh token works too (access token dropped to force a refresh)...
    let mut no_access = stored.clone();
    no_access.access_token = None;
    no_access.save(&env.store("c")).unwrap();
    let mut cfg_c = env.config("c");
    cfg_c.refresh_token = Some(first_refresh.clone()); // ignored: the store wins
    let c = Client::new(cfg_c).unwrap();
    c.init().await.unwrap();
    assert_eq!(c.refresh_count(), 1);
    assert_eq!(
        TokenStore::load(&env.store("c")).unwrap().refresh_token,
        Some(env.emu.refresh_token())
    );

    // ...and the first refresh token is dead.
    let mut cfg_d = env.config("d");
    cfg_d.refresh_token = Some(first_refresh);
    let d = Client::new(cfg_d).unwrap();
    match d.init().await {
        Err(Error::SignIn(msg)) => assert!(msg.contains("alipanfs token set"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_callers_meeting_an_expired_token_cause_one_refresh() {
    let env = Env::start(|c| {
        unlimited(c);
        c.access_token_ttl = Duration::from_secs(2);
    })
    .await;
    let folder = env.emu.seed_folder(ROOT_ID, "F");
    let a = env.client("a");
    a.init().await.unwrap();
    // Make a store whose access token the client believes valid for hours but the server
    // expires in 2 s.
    let mut st = TokenStore::load(&env.store("a")).unwrap();
    st.access_expires_at = Some(st.access_expires_at.unwrap() + 7200);
    st.save(&env.store("b")).unwrap();
    env.emu.set_access_token_ttl(Duration::from_secs(7200));
    let mut cfg = env.config("b");
    cfg.refresh_token = None;
    let b = Arc::new(Client::new(cfg).unwrap());
    // Initialised while the stored token still works.
    b.init().await.unwrap();
    assert_eq!(b.refresh_count(), 0);
    // Poll until the server says the token is expired (it has second granularity).
    let deadline = SystemTime::now() + Duration::from_secs(10);
    loop {
        let probe = reqwest::Client::new()
            .post(format!(
                "{}/adrive/v1.0/user/getSpaceInfo",
                env.emu.api_url()
            ))
            .bearer_auth(st.access_token.as_deref().unwrap())
            .header("user-agent", "probe")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        if probe.status() == 401 {
            break;
        }
        assert!(SystemTime::now() < deadline, "token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.emu.reset_calls();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let b = b.clone();
            let folder = folder.clone();
            tokio::spawn(async move { b.get(&folder).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().name, "F");
    }
    assert_eq!(b.refresh_count(), 1);
    assert_eq!(env.emu.call_count("oauth/access_token"), 1);
    // Every caller that met the expired token was replayed once; none looped.
    let gets = env.emu.call_count("openFile/get");
    assert!((21..=40).contains(&gets), "{gets}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_ridden_out_at_the_servers_pace() {
    let env = Env::start(|_| {}).await;
    let c = env.client("a");
    c.init().await.unwrap();

    // With no budget left, a 429 comes back as RateLimited carrying the server's hint.
    let mut cfg = env.config("a");
    cfg.refresh_token = None;
    cfg.retry.budget = Duration::from_millis(1);
    let impatient = Client::new(cfg).unwrap();
    impatient.init().await.unwrap();
    env.emu.force_429(1);
    let retry_after = match impatient.space_info().await {
        Err(Error::RateLimited {
            retry_after: Some(ra),
        }) => ra,
        other => panic!("{other:?}"),
    };

    // A storm inside the budget is ridden out, each retry spaced by x-retry-after.
    env.emu.reset_calls();
    env.emu.force_429(5);
    let t0 = Instant::now();
    let space = c.space_info().await.unwrap();
    assert!(space.total_bytes > 0);
    assert!(
        t0.elapsed() >= retry_after * 5,
        "{:?} for 5 waits of {retry_after:?}",
        t0.elapsed()
    );
    assert_eq!(env.emu.call_count("user/getSpaceInfo"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_1050_items_costs_11_calls_within_the_rate_limit() {
    let env = Env::start(|_| {}).await; // real rates: list 4/s
    let folder = env.emu.seed_folder(ROOT_ID, "many");
    for i in 0..1050 {
        env.emu.seed_file(&folder, &format!("f{i:04}.txt"), b"x");
    }
    let c = env.client("a");
    c.init().await.unwrap();
    env.emu.reset_calls();
    let items = c.list_folder(&folder).await.unwrap();
    assert_eq!(items.len(), 1050);
    let mut names: Vec<_> = items.iter().map(|i| i.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 1050);
    assert_eq!(env.emu.call_count("openFile/list"), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_download_url_is_refused_and_a_renewed_one_works() {
    let env = Env::start(|c| {
        unlimited(c);
        c.download_url_ttl_cap = Duration::from_secs(2);
    })
    .await;
    let content = pattern_bytes(3, 0, 4096);
    let id = env.emu.seed_file(ROOT_ID, "f.bin", &content);
    let c = env.client("a");
    let url = c.download_url(&id).await.unwrap();
    let ttl = url
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        ttl <= Duration::from_secs(3),
        "expiry from x-oss-expires, got {ttl:?}"
    );
    assert_eq!(
        &c.download_range(&url, 100, 50).await.unwrap()[..],
        &content[100..150]
    );
    // Wait out the URL (x-oss-expires has one-second granularity).
    while SystemTime::now() < url.expires_at + Duration::from_millis(1100) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        c.download_range(&url, 100, 50).await,
        Err(Error::UrlExpired)
    ));
    let renewed = c.download_url(&id).await.unwrap();
    assert!(renewed.expires_at > SystemTime::now());
    assert_eq!(
        &c.download_range(&renewed, 100, 50).await.unwrap()[..],
        &content[100..150]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_concurrency_cap_is_reported() {
    let env = Env::start(|c| {
        unlimited(c);
        c.max_concurrent_downloads = 1;
        c.faults.bandwidth_per_conn = Some(256 * 1024);
    })
    .await;
    let id = env
        .emu
        .seed_pattern_file(ROOT_ID, "slow.bin", 512 * 1024, 9);
    let c = Arc::new(env.client("a"));
    let url = c.download_url(&id).await.unwrap();
    let (c2, u2) = (c.clone(), url.clone());
    // One slow stream holds the only slot for about two seconds.
    let slow = tokio::spawn(async move { c2.download_range(&u2, 0, 512 * 1024).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.emu.active_downloads() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        c.download_range(&url, 0, 10).await,
        Err(Error::ExceedMaxConcurrency)
    ));
    let body = slow.await.unwrap().unwrap();
    assert_eq!(&body[..], &pattern_bytes(9, 0, 512 * 1024)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_play_info_subtitles_playlists_and_segment_sizes() {
    let env = Env::start(unlimited).await;
    let ladder_dir = env.dir.path().join("ladder");
    let (mp4, ladder) = generate_ladder(
        &ladder_dir,
        12.0,
        &[("LD", 320, 180), ("SD", 480, 270)],
        4.0,
    )
    .expect("ffmpeg makes the ladder");
    let id = env.emu.seed_file(ROOT_ID, "movie.mp4", &mp4);
    let vtt = b"WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nhi\n".to_vec();
    env.emu.seed_transcodes(
        &id,
        12.0,
        480,
        270,
        ladder.clone(),
        vec![SeedSubtitle {
            language: "eng".into(),
            vtt: vtt.clone(),
        }],
    );
    env.emu.set_transcode_time(Duration::from_millis(500));
    let c = env.client("a");
    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        let info = c.video_play_info(&id).await.unwrap();
        assert_eq!(info.duration_secs, 12.0);
        assert_eq!((info.width, info.height), (480, 270));
        let dims: Vec<_> = info
            .streams
            .iter()
            .map(|s| (s.template_id.as_str(), s.width, s.height))
            .collect();
        assert_eq!(dims, [("LD", 320, 180), ("SD", 480, 270)]);
        if info.streams.iter().all(|s| s.status == "finished") {
            break info;
        }
        assert!(info
            .streams
            .iter()
            .all(|s| s.status == "running" && s.url.is_some()));
        assert!(Instant::now() < deadline, "transcoding never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The subtitle, fetched whole.
    assert_eq!(info.subtitles.len(), 1);
    assert_eq!(info.subtitles[0].language, "eng");
    assert_eq!(info.subtitles[0].status, "finished");
    let sub_url = signed(info.subtitles[0].url.as_deref().unwrap());
    assert_eq!(
        &c.fetch_object(&sub_url, 1 << 20).await.unwrap()[..],
        &vtt[..]
    );
    assert!(matches!(
        c.fetch_object(&sub_url, 10).await,
        Err(Error::BadResponse(_))
    ));
    // The playlist, whole, and the size of each segment it names.
    let pl_url = signed(info.streams[1].url.as_deref().unwrap());
    let pl = c.fetch_object(&pl_url, 1 << 20).await.unwrap();
    let pl = std::str::from_utf8(&pl).unwrap();
    assert!(pl.contains("#EXT-X-ENDLIST"), "{pl}");
    let segs: Vec<&str> = pl.lines().filter(|l| l.starts_with("http")).collect();
    assert_eq!(segs.len(), 3);
    for (i, seg) in segs.iter().enumerate() {
        let want = std::fs::read(ladder[1].dir.join(format!("seg{i:03}.ts"))).unwrap();
        let url = signed(seg);
        assert_eq!(c.object_size(&url).await.unwrap(), want.len() as u64);
        let body = c.download_range(&url, 0, want.len() as u64).await.unwrap();
        assert_eq!(&body[..], &want[..]);
    }
    // Expired URLs are `UrlExpired` for whole objects and size probes alike.
    env.emu.set_download_url_ttl_cap(Duration::from_secs(1));
    let info = c.video_play_info(&id).await.unwrap();
    let short = signed(info.streams[0].url.as_deref().unwrap());
    let pl = c.fetch_object(&short, 1 << 20).await.unwrap();
    let seg = signed(
        std::str::from_utf8(&pl)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("http"))
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while SystemTime::now() <= seg.expires_at + Duration::from_secs(1) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        c.fetch_object(&short, 1 << 20).await,
        Err(Error::UrlExpired)
    ));
    assert!(matches!(c.object_size(&seg).await, Err(Error::UrlExpired)));
    // A video never transcoded answers no streams; a text file is not a video.
    let raw = env.emu.seed_pattern_file(ROOT_ID, "raw.mp4", 1 << 20, 1);
    let info = c.video_play_info(&raw).await.unwrap();
    assert!(info.streams.is_empty() && info.subtitles.is_empty());
    let txt = env.emu.seed_file(ROOT_ID, "a.txt", b"x");
    assert!(c.video_play_info(&txt).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_upload_sends_parts_to_the_internal_origin() {
    let env = Env::start(|c| {
        unlimited(c);
        c.internal_endpoint = true;
    })
    .await;
    let mut cfg = env.config("a");
    cfg.upload_origin = env.emu.internal_url();
    let c = Client::new(cfg).unwrap();
    let content: Vec<u8> = pattern_bytes(11, 0, 300_000);
    let s = c
        .create_file(&NewFile {
            parent_file_id: ROOT_ID.into(),
            name: "internal.bin".into(),
            size: Some(content.len() as u64),
            check_name_mode: CheckNameMode::Refuse,
            part_count: 3,
            local_modified_at: None,
            hashes: UploadHashes::None,
        })
        .await
        .unwrap();
    assert_eq!(s.parts.len(), 3);
    // The drive hands out its public data host; the client sends elsewhere.
    assert!(s.parts[0].upload_url.starts_with(&env.emu.api_url()));
    for (p, chunk) in s.parts.iter().zip(content.chunks(100_000)) {
        c.upload_part(p, Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let item = c
        .complete_upload(&s.file_id, s.upload_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(item.content_hash.unwrap(), hashing::sha1_hex(&content));
    assert_eq!(env.emu.call_count("internal/data/put"), 3);
    assert_eq!(env.emu.call_count("data/put"), 0);
}

/// A signed URL as the client's `DownloadUrl` (expiry from `x-oss-expires`).
fn signed(url: &str) -> DownloadUrl {
    DownloadUrl {
        url: url.to_string(),
        expires_at: alipanfs::api::oss_expires(url).expect("x-oss-expires"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_photo_streams_through_the_client() {
    let env = Env::start(unlimited).await;
    let jpeg = pattern_bytes(3, 0, 5000);
    let mov = pattern_bytes(4, 0, 70_000);
    let id = env.emu.seed_livp(ROOT_ID, "IMG_0002", &jpeg, &mov);
    let c = env.client("a");
    let item = c
        .list_folder(ROOT_ID)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.file_id == id)
        .unwrap();
    assert_eq!(item.name, "IMG_0002.livp");
    assert_eq!(
        item.streams,
        vec![("jpeg".into(), 5000), ("mov".into(), 70_000)]
    );
    assert!(item.download_url.is_none());
    assert!(matches!(
        c.download_url(&id).await,
        Err(Error::NotSupported(_))
    ));
    let urls = c.stream_urls(&id).await.unwrap();
    let names: Vec<&str> = urls.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["jpeg", "mov"]);
    for ((_, url), want) in urls.iter().zip([&jpeg, &mov]) {
        assert!(url.expires_at > SystemTime::now());
        assert_eq!(c.object_size(url).await.unwrap(), want.len() as u64);
        let body = c.download_range(url, 100, 1000).await.unwrap();
        assert_eq!(&body[..], &want[100..1100]);
    }
    let plain = env.emu.seed_file(ROOT_ID, "p.jpg", b"jpeg");
    assert!(matches!(
        c.stream_urls(&plain).await,
        Err(Error::NotSupported(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_token_wrong_secret_and_token_helper() {
    let env = Env::start(unlimited).await;
    let mut cfg = env.config("garbage");
    cfg.refresh_token = Some("not-a-token".into());
    match Client::new(cfg).unwrap().init().await {
        Err(Error::SignIn(msg)) => assert!(msg.contains("alipanfs token set"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let mut cfg = env.config("secret");
    cfg.client_secret = Some("wrong".into());
    match Client::new(cfg).unwrap().init().await {
        Err(Error::SignIn(msg)) => assert!(msg.contains("client_secret"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Neither consumed the real refresh token: the helper path still works with it.
    let mut cfg = env.config("helper");
    cfg.client_id = None;
    cfg.client_secret = None;
    cfg.token_url = env.emu.token_helper_url();
    let c = Client::new(cfg).unwrap();
    c.init().await.unwrap();
    assert_eq!(env.emu.call_count("alist/ali_open/token"), 1);
    assert_eq!(
        TokenStore::load(&env.store("helper"))
            .unwrap()
            .refresh_token,
        Some(env.emu.refresh_token())
    );
}

#[test]
fn proof_code_vectors() {
    assert_eq!(
        hashing::proof_code("example-access-token", b"Hello World!"),
        "bG8gV29ybGQ="
    );
    let mib: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 256) as u8).collect();
    assert_eq!(
        hashing::proof_code("example-access-token", &mib),
        "KywtLi8wMTI="
    );
    assert_eq!(hashing::proof_code("another.access.token", b"abc"), "Yw==");
    assert_eq!(hashing::proof_code("anything", b""), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ride_out_5xx_drops_and_gateway_pages() {
    let env = Env::start(unlimited).await;
    let folder = env.emu.seed_folder(ROOT_ID, "F");
    for i in 0..150 {
        env.emu.seed_file(&folder, &format!("f{i}"), b"abc");
    }
    let content = pattern_bytes(4, 0, 64 * 1024);
    let id = env.emu.seed_file(ROOT_ID, "data.bin", &content);
    let c = env.client("a");
    c.init().await.unwrap();
    env.emu.set_faults(alipanfs::emulator::Faults {
        failure_rate: 0.2,
        xml_error_rate: 0.05,
        ..Default::default()
    });
    for _ in 0..5 {
        assert_eq!(c.list_folder(&folder).await.unwrap().len(), 150);
        assert_eq!(c.get(&id).await.unwrap().size, content.len() as u64);
        let url = c.download_url(&id).await.unwrap();
        for off in [0u64, 1000, 60_000] {
            let got = c.download_range(&url, off, 8192).await.unwrap();
            let end = (off as usize + 8192).min(content.len());
            assert_eq!(&got[..], &content[off as usize..end]);
        }
    }
    env.emu.set_faults(Default::default());
    let calls: u64 = env.emu.calls().values().sum();
    assert!(
        calls > 40,
        "faults should have caused retries ({calls} calls)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_move_replays_that_landed_are_success() {
    let env = Env::start(unlimited).await;
    let a = env.emu.seed_folder(ROOT_ID, "A");
    let f = env.emu.seed_file(ROOT_ID, "f.txt", b"x");
    let c = env.client("a");
    // As if the first answer had been lost and the call replayed.
    c.rename(&f, "g.txt").await.unwrap();
    assert_eq!(c.rename(&f, "g.txt").await.unwrap().name, "g.txt");
    assert!(!c.move_item(&f, &a, None).await.unwrap().exist);
    assert!(!c.move_item(&f, &a, None).await.unwrap().exist);
    assert_eq!(c.get(&f).await.unwrap().parent_file_id, a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_is_refreshed_before_it_expires() {
    let env = Env::start(|c| {
        unlimited(c);
        c.access_token_ttl = Duration::from_secs(3);
    })
    .await;
    let c = env.client("a");
    c.init().await.unwrap();
    assert_eq!(c.refresh_count(), 1);
    let expires_at = c.token_status().access_expires_at.unwrap();
    // Inside the last tenth of the lifetime, but before the server would refuse the token.
    let refresh_window = expires_at - Duration::from_millis(250);
    while SystemTime::now() < refresh_window {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.emu.reset_calls();
    c.space_info().await.unwrap();
    assert_eq!(c.refresh_count(), 2);
    // No request was refused: the refresh came first.
    assert_eq!(env.emu.call_count("user/getSpaceInfo"), 1);
    assert_eq!(env.emu.call_count("oauth/access_token"), 1);
}
