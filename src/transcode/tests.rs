//! `Transcodes` against a fake drive whose play info hands out URLs that expire.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;

use super::*;
use crate::drive::*;

fn transcodes(drive: Arc<FakeDrive>, refresh: Duration) -> Transcodes {
    let reader = Reader::new(drive.clone(), crate::read::ReadConfig::default());
    Transcodes::new(drive, reader, refresh)
}

/// One video with an FHD template of `segments` segments (`running` until told otherwise) and
/// an English subtitle. Every play info signs its URLs with a new generation and an expiry
/// `ttl` ahead; a URL of an older generation is refused as expired.
struct FakeDrive {
    generation: AtomicU64,
    segments: AtomicUsize,
    running: std::sync::atomic::AtomicBool,
    ttl: Duration,
    play_info_calls: AtomicUsize,
    subtitle_calls: AtomicUsize,
    size_calls: AtomicUsize,
}

impl FakeDrive {
    fn new(segments: usize, running: bool, ttl: Duration) -> Arc<FakeDrive> {
        Arc::new(FakeDrive {
            generation: AtomicU64::new(0),
            segments: AtomicUsize::new(segments),
            running: running.into(),
            ttl,
            play_info_calls: AtomicUsize::new(0),
            subtitle_calls: AtomicUsize::new(0),
            size_calls: AtomicUsize::new(0),
        })
    }

    fn sign(&self, path: &str) -> String {
        let exp = (SystemTime::now() + self.ttl)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        format!(
            "https://data.test/{path}?gen={}&x-oss-expires={exp}",
            self.generation.load(SeqCst)
        )
    }

    fn check(&self, url: &DownloadUrl) -> crate::error::Result<()> {
        let gen = format!("gen={}&", self.generation.load(SeqCst));
        if url.url.contains(&gen) {
            Ok(())
        } else {
            Err(Error::UrlExpired)
        }
    }
}

#[async_trait]
impl Drive for FakeDrive {
    async fn drive_info(&self) -> Result<DriveInfo> {
        unimplemented!()
    }
    async fn space_info(&self) -> Result<SpaceInfo> {
        unimplemented!()
    }
    async fn list_folder(&self, _: &str) -> Result<Vec<RemoteItem>> {
        unimplemented!()
    }
    async fn get(&self, _: &str) -> Result<RemoteItem> {
        unimplemented!()
    }
    async fn get_by_path(&self, _: &str) -> Result<RemoteItem> {
        unimplemented!()
    }
    async fn download_url(&self, _: &str) -> Result<DownloadUrl> {
        unimplemented!()
    }
    async fn download_range(&self, _: &DownloadUrl, _: u64, _: u64) -> Result<Bytes> {
        unimplemented!()
    }
    async fn create_folder(&self, _: &str, _: &str, _: CheckNameMode) -> Result<CreatedFolder> {
        unimplemented!()
    }
    async fn create_file(&self, _: &NewFile) -> Result<UploadSession> {
        unimplemented!()
    }
    async fn upload_urls(&self, _: &str, _: &str, _: &[u32]) -> Result<Vec<PartUrl>> {
        unimplemented!()
    }
    async fn upload_part(&self, _: &PartUrl, _: Bytes) -> Result<Option<String>> {
        unimplemented!()
    }
    async fn uploaded_parts(&self, _: &str, _: &str) -> Result<Vec<UploadedPart>> {
        unimplemented!()
    }
    async fn complete_upload(&self, _: &str, _: &str) -> Result<RemoteItem> {
        unimplemented!()
    }
    async fn rename(&self, _: &str, _: &str) -> Result<RemoteItem> {
        unimplemented!()
    }
    async fn move_item(&self, _: &str, _: &str, _: Option<&str>) -> Result<OpResult> {
        unimplemented!()
    }
    async fn copy_item(&self, _: &str, _: &str, _: bool) -> Result<OpResult> {
        unimplemented!()
    }
    async fn trash(&self, _: &str) -> Result<OpResult> {
        unimplemented!()
    }
    async fn delete(&self, _: &str) -> Result<OpResult> {
        unimplemented!()
    }
    async fn task_state(&self, _: &str) -> Result<TaskState> {
        unimplemented!()
    }
    async fn video_play_info(&self, file_id: &str) -> Result<VideoPlayInfo> {
        self.play_info_calls.fetch_add(1, SeqCst);
        self.generation.fetch_add(1, SeqCst);
        let running = self.running.load(SeqCst);
        Ok(VideoPlayInfo {
            duration_secs: 4.0 * self.segments.load(SeqCst) as f64,
            width: 1920,
            height: 1080,
            streams: vec![
                VideoStream {
                    template_id: "FHD".into(),
                    width: 1920,
                    height: 1080,
                    status: if running { "running" } else { "finished" }.into(),
                    url: Some(self.sign(&format!("{file_id}/FHD/index.m3u8"))),
                },
                VideoStream {
                    template_id: "QHD".into(),
                    width: 2560,
                    height: 1440,
                    status: "failed".into(),
                    url: None,
                },
            ],
            subtitles: vec![VideoSubtitle {
                language: "eng".into(),
                status: "finished".into(),
                url: Some(self.sign(&format!("{file_id}/eng.vtt"))),
            }],
        })
    }
    async fn fetch_object(&self, url: &DownloadUrl, _max: u64) -> Result<Bytes> {
        self.check(url)?;
        if url.url.contains(".vtt") {
            self.subtitle_calls.fetch_add(1, SeqCst);
            return Ok(Bytes::from_static(
                b"WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n",
            ));
        }
        let mut text = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:4\n");
        for i in 0..self.segments.load(SeqCst) {
            text.push_str(&format!(
                "#EXTINF:4.0,\n{}\n",
                self.sign(&format!("v/FHD/{i}.ts"))
            ));
        }
        if !self.running.load(SeqCst) {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        Ok(Bytes::from(text))
    }
    async fn object_size(&self, url: &DownloadUrl) -> Result<u64> {
        self.check(url)?;
        self.size_calls.fetch_add(1, SeqCst);
        Ok(1000 + url.url.len() as u64 % 7)
    }
}

#[tokio::test]
async fn templates_with_a_playlist_are_served_rewritten_and_failed_ones_left_out() {
    let drive = FakeDrive::new(3, false, Duration::from_secs(3600));
    let t = transcodes(drive.clone(), Duration::from_secs(3));
    let v = t.video("vid", false).await.unwrap();
    assert_eq!(v.templates.len(), 1);
    let fhd = v.template("FHD").unwrap();
    assert!(!fhd.running);
    let text = std::str::from_utf8(&fhd.rewritten).unwrap();
    assert!(text.contains("\nFHD/000002.ts\n") && text.ends_with("#EXT-X-ENDLIST\n"));
    assert_eq!(v.subtitles.len(), 1);
    assert_eq!(v.subtitles[0].file_name, "eng.vtt");
    // Kept: no second play info while the URLs are valid.
    t.video("vid", true).await.unwrap();
    assert_eq!(drive.play_info_calls.load(SeqCst), 1);
}

#[tokio::test]
async fn an_expired_play_info_is_fetched_again_and_objects_mapped_by_index() {
    // URLs living 2 s are renewed at half-life.
    let drive = FakeDrive::new(3, false, Duration::from_secs(2));
    let t = transcodes(drive.clone(), Duration::from_secs(3));
    let first = t.object_url("vid", "FHD", 1, None).await.unwrap();
    assert!(first.url.contains("/v/FHD/1.ts"));
    let size = t.object_size("vid", "FHD", 1).await.unwrap();
    let old_text = t
        .video("vid", false)
        .await
        .unwrap()
        .template("FHD")
        .unwrap()
        .rewritten
        .clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = t.object_url("vid", "FHD", 1, None).await.unwrap();
    assert_ne!(
        first.url, second.url,
        "a new URL after the old one's half-life"
    );
    assert!(
        second.url.contains("/v/FHD/1.ts"),
        "the same object, by index"
    );
    drive.check(&second).unwrap();
    assert_eq!(drive.play_info_calls.load(SeqCst), 2);
    // The playlist's text does not change, the subtitle was not fetched again, the size is kept.
    let v = t.video("vid", false).await.unwrap();
    assert_eq!(v.template("FHD").unwrap().rewritten, old_text);
    assert_eq!(drive.subtitle_calls.load(SeqCst), 1);
    assert_eq!(t.object_size("vid", "FHD", 1).await.unwrap(), size);
    assert_eq!(drive.size_calls.load(SeqCst), 1);
    assert!(t.object_url("vid", "FHD", 3, None).await.is_err());
}

#[tokio::test]
async fn a_refused_url_renews_the_play_info_once_even_before_its_expiry() {
    let drive = FakeDrive::new(2, false, Duration::from_secs(3600));
    let t = transcodes(drive.clone(), Duration::from_secs(3));
    let u = t.object_url("vid", "FHD", 0, None).await.unwrap();
    // The drive revoked it (say, a clock skew): the stale one is never handed out again.
    drive.generation.fetch_add(1, SeqCst);
    let fresh = t.object_url("vid", "FHD", 0, Some(&u)).await.unwrap();
    assert_ne!(fresh.url, u.url);
    drive.check(&fresh).unwrap();
    // Another reader that saw the same stale URL gets the new one without another call.
    let again = t.object_url("vid", "FHD", 0, Some(&u)).await.unwrap();
    assert_eq!(again.url, fresh.url);
    assert_eq!(drive.play_info_calls.load(SeqCst), 2);
}

#[tokio::test]
async fn a_running_transcode_grows_at_a_bounded_rate_then_ends() {
    let drive = FakeDrive::new(2, true, Duration::from_secs(3600));
    let t = transcodes(drive.clone(), Duration::from_millis(300));
    let v = t.video("vid", true).await.unwrap();
    let text = std::str::from_utf8(&v.template("FHD").unwrap().rewritten)
        .unwrap()
        .to_string();
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !text.contains("ENDLIST"));
    drive.segments.store(5, SeqCst);
    // Within the interval, re-reads get the kept state: no play info storm.
    for _ in 0..10 {
        t.video("vid", true).await.unwrap();
    }
    assert_eq!(drive.play_info_calls.load(SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let v = t.video("vid", true).await.unwrap();
    assert_eq!(v.template("FHD").unwrap().playlist.objects.len(), 5);
    assert_eq!(drive.play_info_calls.load(SeqCst), 2);
    let grown = std::str::from_utf8(&v.template("FHD").unwrap().rewritten)
        .unwrap()
        .to_string();
    assert!(
        grown.starts_with(text.as_str()),
        "only appended:\n{text}\n---\n{grown}"
    );
    drive.running.store(false, SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let v = t.video("vid", true).await.unwrap();
    let done = std::str::from_utf8(&v.template("FHD").unwrap().rewritten)
        .unwrap()
        .to_string();
    assert!(done.ends_with("FHD/000004.ts\n#EXT-X-ENDLIST\n"));
    assert!(!v.template("FHD").unwrap().running);
    // Finished: no more refreshes for readers of the playlist.
    tokio::time::sleep(Duration::from_millis(350)).await;
    t.video("vid", true).await.unwrap();
    assert_eq!(drive.play_info_calls.load(SeqCst), 3);
}

#[test]
fn drive_strings_become_file_names() {
    assert_eq!(file_name("FHD"), "FHD");
    assert_eq!(file_name("a/b"), "a_b");
    assert_eq!(file_name(""), "_");
    assert_eq!(file_name(".."), "_..");
}
