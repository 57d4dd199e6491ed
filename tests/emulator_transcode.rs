//! The emulator's video transcodes (getVideoPreviewPlayInfo, reference 3.9) and live photos
//! over plain HTTP: play-info shapes, the first 30 s before the first play, running → finished,
//! signed and expiring playlist and segment URLs, ranged segment reads, subtitles, `.livp`.
//! Ladders are real H.264 HLS made by `ffmpeg` (`generate_ladder`).

#[path = "emulator_support.rs"]
mod support;

use alipanfs::emulator::{generate_ladder, EmulatorConfig, SeedSubtitle, SeedTranscode};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::*;

const SECS: f64 = 40.0;
const SEGMENT: f64 = 4.0;
const VTT: &[u8] = b"WEBVTT\n\n00:00:01.000 --> 00:00:03.000\nhello\n";

/// One ladder for the whole test binary: a 40 s video, 4 s segments, three templates.
fn ladder() -> &'static (Vec<u8>, Vec<SeedTranscode>) {
    static LADDER: OnceLock<(Vec<u8>, Vec<SeedTranscode>)> = OnceLock::new();
    LADDER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        generate_ladder(
            &dir,
            SECS,
            &[("LD", 320, 180), ("SD", 480, 270), ("HD", 640, 360)],
            SEGMENT,
        )
        .expect("ffmpeg makes the ladder")
    })
}

/// A video seeded with the ladder for a source of `height` (640 wide).
fn seed_video(h: &H, name: &str, height: u32) -> String {
    let (mp4, ladder) = ladder();
    let id = h.emu.seed_file("root", name, mp4);
    let subs = vec![SeedSubtitle {
        language: "chi".into(),
        vtt: VTT.to_vec(),
    }];
    h.emu
        .seed_transcodes(&id, SECS, 640, height, ladder.clone(), subs);
    id
}

async fn play_info(h: &H, id: &str, extra: Value) -> Value {
    let mut body = json!({"drive_id": h.drive, "file_id": id, "category": "live_transcoding",
                          "template_id": "", "get_subtitle_info": true, "url_expire_sec": 900});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    h.ok("openFile/getVideoPreviewPlayInfo", body).await["video_preview_play_info"].clone()
}

fn tasks(info: &Value) -> Vec<Value> {
    info["live_transcoding_task_list"]
        .as_array()
        .unwrap()
        .clone()
}

async fn get_text(h: &H, url: &str) -> (u16, String) {
    let r = h.c.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// (EXTINF count, ENDLIST present, every URI) of a playlist.
fn parse(pl: &str) -> (usize, bool, Vec<String>) {
    let uris: Vec<String> = pl
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let extinf = pl.lines().filter(|l| l.starts_with("#EXTINF:")).count();
    (extinf, pl.contains("#EXT-X-ENDLIST"), uris)
}

/// A signed URL's `x-oss-expires`, in unix seconds (read as the client reads it).
fn expires(url: &str) -> u64 {
    alipanfs::api::oss_expires(url)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_else(|| panic!("no expiry in {url}"))
        .as_secs()
}

#[tokio::test]
async fn play_info_answers_the_templates_that_fit_with_the_first_30_s() {
    let h = start(|c| c.transcode_time = Duration::from_secs(3600)).await;
    let id = seed_video(&h, "clip.mp4", 270);
    assert_eq!(h.emu.play_info_calls(&id), 0);
    let info = play_info(&h, &id, json!({})).await;
    assert_eq!(h.emu.play_info_calls(&id), 1);
    assert_eq!(info["category"], "live_transcoding");
    assert_eq!(info["meta"]["duration"], json!(SECS));
    assert_eq!(
        (
            info["meta"]["width"].clone(),
            info["meta"]["height"].clone()
        ),
        (json!(640), json!(270))
    );
    let t = tasks(&info);
    // HD (360 lines) is taller than the 270-line source.
    let ids: Vec<&str> = t
        .iter()
        .map(|t| t["template_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["LD", "SD"]);
    assert_eq!(
        (
            t[1]["template_width"].clone(),
            t[1]["template_height"].clone()
        ),
        (json!(480), json!(270))
    );
    assert!(t.iter().all(|t| t["status"] == "running"), "{t:?}");
    // Only the segments starting in the first 30 s: 0, 4, ... 28.
    let (code, pl) = get_text(&h, t[0]["url"].as_str().unwrap()).await;
    assert_eq!(code, 200);
    assert!(
        pl.starts_with("#EXTM3U") && pl.contains("#EXT-X-PLAYLIST-TYPE:EVENT"),
        "{pl}"
    );
    let (n, end, uris) = parse(&pl);
    assert_eq!((n, end), (8, false), "{pl}");
    // Every URI absolute and signed with the playlist's expiry.
    let pexp = expires(t[0]["url"].as_str().unwrap());
    for u in &uris {
        assert!(
            u.starts_with("http://127.0.0.1:") && u.contains("x-oss-signature="),
            "{u}"
        );
        assert_eq!(expires(u), pexp);
    }
    // The segments are the ladder's bytes.
    let (_, ladder) = ladder();
    let ld_dir = &ladder[0].dir;
    for (i, u) in uris.iter().enumerate().take(2) {
        let body = h.c.get(u).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(
            &body[..],
            &std::fs::read(ld_dir.join(format!("seg{i:03}.ts"))).unwrap()[..]
        );
    }
    // One template asked by id; subtitles when asked for, not otherwise.
    let only = play_info(&h, &id, json!({"template_id": "SD"})).await;
    assert_eq!(tasks(&only).len(), 1);
    assert_eq!(tasks(&only)[0]["template_id"], "SD");
    let subs = only["live_transcoding_subtitle_task_list"]
        .as_array()
        .unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["language"], "chi");
    assert_eq!(subs[0]["status"], "finished");
    let r =
        h.c.get(subs[0]["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/vtt");
    assert_eq!(&r.bytes().await.unwrap()[..], VTT);
    let none = play_info(&h, &id, json!({"get_subtitle_info": false})).await;
    assert!(none["live_transcoding_subtitle_task_list"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(h.emu.play_info_calls(&id), 3);
    // The file object carries the seeded metadata.
    let o = h
        .ok("openFile/get", json!({"drive_id": h.drive, "file_id": id}))
        .await;
    assert_eq!(o["category"], "video");
    assert_eq!(o["video_media_metadata"]["height"], 270);
}

#[tokio::test]
async fn the_first_play_starts_the_transcode_which_grows_then_finishes() {
    let h = start(|_| {}).await;
    h.emu.set_transcode_time(Duration::from_secs(2));
    let id = seed_video(&h, "clip.mp4", 360);
    let started = Instant::now();
    let info = play_info(&h, &id, json!({})).await;
    let t = tasks(&info);
    assert_eq!(t.len(), 3);
    assert!(t.iter().all(|t| t["status"] == "running"));
    let url = t[2]["url"].as_str().unwrap().to_string();
    // The same playlist URL, read again, grows until it is a VOD playlist with every segment.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, pl) = get_text(&h, &url).await;
        assert_eq!(code, 200);
        let (n, end, _) = parse(&pl);
        seen.push(n);
        if end {
            assert_eq!(n, 10);
            assert!(pl.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{pl}");
            break;
        }
        assert!(pl.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{pl}");
        assert!(Instant::now() < deadline, "never finished: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen[0], 8, "{seen:?}");
    // The play info says so too, and stays finished.
    let t = tasks(&play_info(&h, &id, json!({})).await);
    assert!(
        t.iter()
            .all(|t| t["status"] == "finished" && t["stage"] == "finished"),
        "{t:?}"
    );
    h.emu.set_transcode_time(Duration::from_secs(3600));
    let t = tasks(&play_info(&h, &id, json!({})).await);
    assert!(t.iter().all(|t| t["status"] == "finished"));
}

#[tokio::test]
async fn playlist_and_segment_urls_are_signed_ranged_and_expire() {
    let h = start(|c| c.transcode_time = Duration::ZERO).await;
    let id = seed_video(&h, "clip.mp4", 360);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let info = play_info(&h, &id, json!({"url_expire_sec": 2})).await;
    let t = tasks(&info);
    assert!(t.iter().all(|t| t["status"] == "finished"));
    let url = t[1]["url"].as_str().unwrap().to_string();
    assert!((now + 1..=now + 3).contains(&expires(&url)), "{url}");
    let (_, pl) = get_text(&h, &url).await;
    let (n, end, uris) = parse(&pl);
    assert_eq!((n, end), (10, true));
    // Ranged reads of a segment, as for file bodies.
    let (_, ladder) = ladder();
    let seg = std::fs::read(ladder[1].dir.join("seg003.ts")).unwrap();
    let r =
        h.c.get(&uris[3])
            .header("range", "bytes=100-299")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 100-299/{}", seg.len())
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &seg[100..300]);
    let r = h.c.head(&uris[3]).send().await.unwrap();
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        seg.len().to_string()
    );
    // A tampered signature or path is refused.
    let bad = uris[3].replace("x-oss-signature=", "x-oss-signature=0");
    let r = reply(h.c.get(&bad).send().await.unwrap()).await;
    assert_eq!(r.status, 403);
    assert!(r.body.as_str().unwrap().contains("SignatureDoesNotMatch"));
    let other = uris[3].replace("/3.ts", "/4.ts");
    assert_eq!(h.c.get(&other).send().await.unwrap().status(), 403);
    // After the expiry: 403 AccessDenied "Request has expired." for playlist and segments.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = reply(h.c.get(&uris[0]).send().await.unwrap()).await;
        if r.status == 403 {
            assert!(
                r.body.as_str().unwrap().contains("Request has expired."),
                "{}",
                r.body
            );
            break;
        }
        assert_eq!(r.status, 200);
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reply(h.c.get(&url).send().await.unwrap()).await;
    assert_eq!(r.status, 403);
    assert!(r.body.as_str().unwrap().contains("AccessDenied"));
    // A new play info signs new URLs.
    let t = tasks(&play_info(&h, &id, json!({})).await);
    assert_eq!(get_text(&h, t[0]["url"].as_str().unwrap()).await.0, 200);
    // The cap on download URLs applies to these too.
    h.emu.set_download_url_ttl_cap(Duration::from_secs(60));
    let t = tasks(&play_info(&h, &id, json!({"url_expire_sec": 14400})).await);
    assert!(expires(t[0]["url"].as_str().unwrap()) <= now + 70);
}

/// `ffprobe -show_entries ENTRIES` of the first video stream at `url`, as `key=value` lines;
/// a failing ffprobe fails the test with its stderr.
async fn ffprobe(url: &str, entries: &str) -> String {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args([entries, "-of", "default=nw=1"])
        .arg(url)
        .output()
        .await
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn ffprobe_reads_the_served_playlist() {
    let h = start(|c| c.transcode_time = Duration::ZERO).await;
    let id = seed_video(&h, "clip.mp4", 360);
    let t = tasks(&play_info(&h, &id, json!({})).await);
    let url = t[2]["url"].as_str().unwrap().to_string();
    let text = ffprobe(&url, "stream=codec_name,width,height:format=duration").await;
    assert!(text.contains("codec_name=h264"), "{text}");
    assert!(
        text.contains("width=640") && text.contains("height=360"),
        "{text}"
    );
    let dur: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((dur - SECS).abs() < 1.0, "{text}");
}

#[tokio::test]
async fn errors_for_non_videos_unknown_files_and_videos_never_transcoded() {
    let h = start(|_| {}).await;
    let t = h.emu.seed_file("root", "t.txt", b"x");
    let call =
        |id: String| json!({"drive_id": h.drive, "file_id": id, "category": "live_transcoding"});
    assert_err(
        &h.call("openFile/getVideoPreviewPlayInfo", call(t)).await,
        400,
        "InvalidResource.FileTypeNotSupport",
    );
    let dir = h.emu.seed_folder("root", "d.mp4");
    assert_err(
        &h.call("openFile/getVideoPreviewPlayInfo", call(dir)).await,
        400,
        "InvalidResource.FileTypeNotSupport",
    );
    assert_envelope(
        &h.call("openFile/getVideoPreviewPlayInfo", call("0".repeat(40)))
            .await,
        404,
        "NotFound.FileId",
    );
    let v = h.emu.seed_pattern_file("root", "raw.mp4", 4096, 1);
    let info = play_info(&h, &v, json!({})).await;
    assert!(tasks(&info).is_empty());
    assert!(info["meta"]["duration"].as_f64().unwrap() > 0.0);
    assert_eq!(h.emu.play_info_calls(&v), 0);
}

#[tokio::test]
async fn finished_transcodes_are_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |c: &mut EmulatorConfig| {
        c.data_dir = dir.path().to_path_buf();
        c.persist = true;
        c.transcode_time = Duration::ZERO;
    };
    let (id, seg_url) = {
        let h = start(cfg).await;
        let id = seed_video(&h, "clip.mp4", 360);
        let t = tasks(&play_info(&h, &id, json!({"url_expire_sec": 3600})).await);
        assert!(t.iter().all(|t| t["status"] == "finished"));
        let (_, pl) = get_text(&h, t[0]["url"].as_str().unwrap()).await;
        let uri = parse(&pl).2[9].clone();
        drop(h);
        (id, uri)
    };
    // Long transcodes from now on: the finished one stays finished.
    let h = start(|c| {
        cfg(c);
        c.transcode_time = Duration::from_secs(3600);
    })
    .await;
    let t = tasks(&play_info(&h, &id, json!({})).await);
    assert!(t.iter().all(|t| t["status"] == "finished"), "{t:?}");
    let (_, pl) = get_text(&h, t[0]["url"].as_str().unwrap()).await;
    assert_eq!(parse(&pl).0, 10);
    // The old segment URL names the same bytes (same signing key, new port).
    let path = &seg_url[seg_url.find("/data/").unwrap()..];
    let r = h.c.get(h.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, ladder) = ladder();
    assert_eq!(
        &r.bytes().await.unwrap()[..],
        &std::fs::read(ladder[0].dir.join("seg009.ts")).unwrap()[..]
    );
}

#[tokio::test]
async fn live_photos_have_streams_and_no_single_url() {
    let h = start(|_| {}).await;
    let jpeg = b"\xff\xd8\xff\xe0 a jpeg".to_vec();
    let mov = vec![7u8; 3000];
    let id = h.emu.seed_livp("root", "IMG_0001", &jpeg, &mov);
    let o = h
        .ok("openFile/get", json!({"drive_id": h.drive, "file_id": id}))
        .await;
    assert_eq!(o["name"], "IMG_0001.livp");
    assert_eq!(o["category"], "image");
    assert_eq!(o["size"], json!(jpeg.len() + mov.len()));
    assert_eq!(o["streams_info"]["jpeg"]["size"], json!(jpeg.len()));
    assert_eq!(o["streams_info"]["mov"]["size"], json!(mov.len()));
    assert!(o["url"].is_null());
    let d = h
        .ok(
            "openFile/getDownloadUrl",
            json!({"drive_id": h.drive, "file_id": id}),
        )
        .await;
    assert_eq!(d["url"], "");
    for (name, want) in [("jpeg", &jpeg), ("mov", &mov)] {
        let url = d["streamsUrl"][name].as_str().unwrap();
        let r =
            h.c.get(url)
                .header("range", "bytes=2-5")
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(&r.bytes().await.unwrap()[..], &want[2..6]);
        let all = h.c.get(url).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(&all[..], &want[..]);
    }
    // A plain file has no streams.
    let f = h.emu.seed_file("root", "a.jpg", b"x");
    let o = h
        .ok("openFile/get", json!({"drive_id": h.drive, "file_id": f}))
        .await;
    assert!(o["streams_info"].is_null());
}

#[tokio::test]
async fn the_demo_video_has_real_transcodes_without_ffmpeg_at_run_time() {
    let h = start(|c| c.transcode_time = Duration::ZERO).await;
    h.emu.seed_demo_tree();
    let id = h.emu.entries_at("/Videos/sample.mp4")[0].file_id.clone();
    let info = play_info(&h, &id, json!({})).await;
    let t = tasks(&info);
    let dims: Vec<_> = t
        .iter()
        .map(|t| {
            (
                t["template_id"].clone(),
                t["template_width"].clone(),
                t["template_height"].clone(),
            )
        })
        .collect();
    assert_eq!(
        dims,
        [
            (json!("LD"), json!(320), json!(180)),
            (json!("SD"), json!(640), json!(360))
        ]
    );
    assert_eq!(
        info["live_transcoding_subtitle_task_list"][0]["language"],
        "eng"
    );
    let text = ffprobe(
        t[1]["url"].as_str().unwrap(),
        "stream=codec_name,width,height",
    )
    .await;
    assert!(
        text.contains("codec_name=h264")
            && text.contains("width=640")
            && text.contains("height=360"),
        "{text}"
    );
}
