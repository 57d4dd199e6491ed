//! Video transcodes (reference 3.9): the H.264 HLS ladder seeded for a video, which templates
//! `getVideoPreviewPlayInfo` answers and how far each has got, and the playlists, segments and
//! subtitles the data host serves for them.
//!
//! The model follows the reference and issue 12: only the first 30 s of a new video are
//! transcoded ahead of time; the first play-info request starts the full transcode, which
//! finishes `transcode_time` later (segments become ready in proportion to the time elapsed);
//! a finished transcode is kept. Segments and subtitles are blobs of the content-addressed
//! store (so they persist with `--data` and are served like file bodies); playlists are made
//! when asked for, every URI in them an absolute signed URL with the playlist's own expiry.

use super::data::Object;
use super::errors::ApiErr;
use super::files::{self, ApiResult};
use super::state::{Shared, State};
use super::util::{self, boolean, int, s};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Seconds of a new video transcoded before anyone plays it ([ADOCS] via the reference).
pub const PRETRANSCODED_SECS: f64 = 30.0;
/// How long the full transcode takes after the first play-info request, by default.
pub const DEFAULT_TRANSCODE_TIME: Duration = Duration::from_secs(30);

/// One template of a seeded ladder: `dir` holds a VOD playlist `index.m3u8` and its segments,
/// named by relative URIs (as `ffmpeg -f hls` writes them).
#[derive(Clone, Debug)]
pub struct SeedTranscode {
    pub template_id: String,
    pub width: u32,
    pub height: u32,
    pub dir: PathBuf,
}

/// One subtitle track of a seeded video (WebVTT bytes).
#[derive(Clone, Debug)]
pub struct SeedSubtitle {
    pub language: String,
    pub vtt: Vec<u8>,
}

/// A template whose playlist and segments are already in memory (the demo's built-in assets).
pub struct LadderFiles {
    pub template_id: String,
    pub width: u32,
    pub height: u32,
    pub playlist: String,
    /// Segment bytes by the URI the playlist names them with.
    pub files: Vec<(String, Vec<u8>)>,
}

// Persisted as is (`persist.rs`); defaults let an older state file load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Video {
    pub duration: f64,
    pub width: u32,
    pub height: u32,
    pub templates: Vec<Template>,
    pub subtitles: Vec<Subtitle>,
    /// When the first play-info request started the full transcode, and when it ends (unix
    /// ms). The end is fixed at the start, so a finished transcode stays finished.
    pub started_ms: Option<i64>,
    pub done_ms: Option<i64>,
    /// Play-info requests seen (a counter: not persisted).
    #[serde(skip)]
    pub play_info_calls: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Template {
    pub template_id: String,
    pub width: u32,
    pub height: u32,
    pub target_duration: u64,
    pub segments: Vec<Segment>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Segment {
    /// Seconds from the start of the video.
    pub start: f64,
    pub duration: f64,
    /// Extension of the segment file (`ts`), kept in its URL for players that check it.
    pub ext: String,
    pub sha1: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Subtitle {
    pub language: String,
    pub sha1: String,
}

/// Where a transcode stands at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// Segments ending by this many seconds of the video are ready (plus the first 30 s).
    Running(f64),
    Finished,
}

impl Video {
    fn stage(&self, now_ms: i64) -> Stage {
        match (self.started_ms, self.done_ms) {
            (Some(start), Some(done)) if now_ms >= done || done <= start => Stage::Finished,
            (Some(start), Some(done)) => {
                let frac = (now_ms - start) as f64 / (done - start) as f64;
                Stage::Running(self.duration * frac.clamp(0.0, 1.0))
            }
            _ => Stage::Running(0.0),
        }
    }

    /// The templates a play-info request answers: those that fit the source resolution.
    fn answered(&self) -> impl Iterator<Item = &Template> {
        self.templates
            .iter()
            .filter(move |t| t.height <= self.height || self.height == 0)
    }

    /// Every blob the video's transcodes hold a reference to.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        self.templates
            .iter()
            .flat_map(|t| t.segments.iter().map(|s| s.sha1.as_str()))
            .chain(self.subtitles.iter().map(|s| s.sha1.as_str()))
    }
}

impl Segment {
    fn ready(&self, stage: Stage) -> bool {
        match stage {
            Stage::Finished => true,
            // A little slack for the float sums of EXTINF durations.
            Stage::Running(upto) => {
                self.start < PRETRANSCODED_SECS || self.start + self.duration <= upto + 1e-6
            }
        }
    }
}

/// The playlist lines of a VOD playlist as ffmpeg writes it: (duration, uri) per segment,
/// and its target duration.
fn parse_playlist(text: &str) -> Result<(u64, Vec<(f64, String)>), String> {
    if !text.trim_start().starts_with("#EXTM3U") {
        return Err("not an HLS playlist (no #EXTM3U)".into());
    }
    let mut target = 0u64;
    let mut pending: Option<f64> = None;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = v.trim().parse().map_err(|_| format!("bad line {line:?}"))?;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or("").trim();
            pending = Some(d.parse().map_err(|_| format!("bad line {line:?}"))?);
        } else if line.starts_with("#EXT-X-MAP") {
            return Err("fragmented-MP4 playlists (#EXT-X-MAP) are not supported".into());
        } else if !line.starts_with('#') {
            let d = pending
                .take()
                .ok_or_else(|| format!("segment {line:?} without #EXTINF"))?;
            out.push((d, line.to_string()));
        }
    }
    if out.is_empty() {
        return Err("playlist without segments".into());
    }
    let longest = out.iter().map(|(d, _)| d.ceil() as u64).max().unwrap_or(1);
    Ok((target.max(longest), out))
}

impl LadderFiles {
    /// Reads `index.m3u8` of `t.dir` and the segments it names.
    pub fn read(t: &SeedTranscode) -> std::io::Result<LadderFiles> {
        let playlist = std::fs::read_to_string(t.dir.join("index.m3u8"))?;
        let (_, segs) = parse_playlist(&playlist)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut files = Vec::new();
        for (_, uri) in segs {
            let bytes = std::fs::read(t.dir.join(&uri))?;
            files.push((uri, bytes));
        }
        Ok(LadderFiles {
            template_id: t.template_id.clone(),
            width: t.width,
            height: t.height,
            playlist,
            files,
        })
    }
}

impl Shared {
    /// Stores a video's ladder and subtitles (replacing any earlier ones). A seed that cannot
    /// be read is a broken test or demo setup: it panics with the reason.
    pub fn seed_transcodes(
        &self,
        file_id: &str,
        duration: f64,
        width: u32,
        height: u32,
        ladder: Vec<LadderFiles>,
        subtitles: Vec<SeedSubtitle>,
    ) {
        let mut templates = Vec::new();
        for l in ladder {
            let (target, segs) = parse_playlist(&l.playlist)
                .unwrap_or_else(|e| panic!("seeded template {}: {e}", l.template_id));
            let mut start = 0.0;
            let mut segments = Vec::new();
            for (d, uri) in segs {
                let bytes = l
                    .files
                    .iter()
                    .find(|(name, _)| *name == uri)
                    .map(|(_, b)| b.as_slice())
                    .unwrap_or_else(|| panic!("seeded template {}: no {uri}", l.template_id));
                let ext = Path::new(&uri)
                    .extension()
                    .and_then(|e| e.to_str())
                    .filter(|e| e.chars().all(|c| c.is_ascii_alphanumeric()))
                    .unwrap_or("ts")
                    .to_string();
                segments.push(Segment {
                    start,
                    duration: d,
                    ext,
                    sha1: self.store_blob(bytes),
                });
                start += d;
            }
            templates.push(Template {
                template_id: l.template_id,
                width: l.width,
                height: l.height,
                target_duration: target,
                segments,
            });
        }
        templates.sort_by_key(|t| (t.height, t.width));
        let subtitles = subtitles
            .into_iter()
            .map(|s| Subtitle {
                sha1: self.store_blob(&s.vtt),
                language: s.language,
            })
            .collect();
        let video = Video {
            duration,
            width,
            height,
            templates,
            subtitles,
            ..Video::default()
        };
        {
            let mut st = self.lock();
            if let Some(old) = st.videos.insert(file_id.to_string(), video) {
                self.release_video(&mut st, old);
            }
        }
        self.save_now();
    }

    /// Drops the references a video's transcodes held.
    pub fn release_video(&self, st: &mut State, v: Video) {
        for sha in v.blobs() {
            self.release_blob(st, sha);
        }
    }

    /// A signed GET URL on the data host for `path`, valid until `expires` (unix seconds).
    fn transcode_url(&self, file_id: &str, rest: &str, expires: u64) -> String {
        self.signed_get_url(&format!("/data/{file_id}/{rest}"), expires)
    }
}

/// `url_expire_sec` as the reference gives it (default 900, at most 14400), under the
/// emulator's download-URL cap.
fn url_ttl(st: &State, v: &Value) -> u64 {
    let asked = int(v, "url_expire_sec").filter(|e| *e > 0).unwrap_or(900) as u64;
    asked
        .min(14400)
        .min(st.knobs.download_url_ttl_cap.as_secs())
}

/// A pretend duration for videos nobody seeded a transcode for: 4 Mbit/s, at least 10 s.
pub fn guessed_duration(size: u64) -> f64 {
    (size as f64 / 500_000.0).max(10.0)
}

/// `video_media_metadata` of a video's file object.
pub fn media_metadata(st: &State, file_id: &str, size: u64) -> Value {
    let (w, h, d) = match st.videos.get(file_id) {
        Some(v) => (v.width, v.height, v.duration),
        None => (1920, 1080, guessed_duration(size)),
    };
    json!({"width": w, "height": h, "duration": format!("{d:.3}")})
}

/// `openFile/getVideoPreviewPlayInfo`.
pub fn play_info(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let d = files::drive(st, v)?;
    let n = files::live(st, &d, v, "file_id")?.clone();
    if n.is_dir || files::kind_of(&n.name).1 != "video" {
        return Err(ApiErr::new(
            400,
            "InvalidResource.FileTypeNotSupport",
            "The file is not a video.",
        ));
    }
    let exp = util::now_secs() + url_ttl(st, v);
    let now = util::now_ms();
    let transcode_ms = st.knobs.transcode_time.as_millis() as i64;
    let wanted = s(v, "template_id").unwrap_or("").to_string();
    let with_subtitles = boolean(v, "get_subtitle_info").unwrap_or(true);
    let Some(video) = st.videos.get_mut(&n.file_id) else {
        // Nothing was transcoded for this file (not seeded): no tasks, as for a video the
        // drive could not decode.
        return Ok(answer(
            &d,
            &n.file_id,
            json!({"duration": guessed_duration(n.size), "width": 1920, "height": 1080}),
            Vec::new(),
            Vec::new(),
        ));
    };
    video.play_info_calls += 1;
    if video.started_ms.is_none() {
        video.started_ms = Some(now);
        video.done_ms = Some(now + transcode_ms);
    }
    let video = video.clone();
    let stage = video.stage(now);
    let status = match stage {
        Stage::Finished => "finished",
        Stage::Running(_) => "running",
    };
    let tasks = video
        .answered()
        .filter(|t| wanted.is_empty() || t.template_id == wanted)
        .map(|t| {
            let url = sh.transcode_url(
                &n.file_id,
                &format!("hls/{}/index.m3u8", t.template_id),
                exp,
            );
            json!({"template_id": t.template_id, "template_name": format!("{}p", t.height),
                   "template_width": t.width, "template_height": t.height,
                   "keep_original_resolution": false, "stage": status, "status": status,
                   "url": url})
        })
        .collect();
    let subtitles = if with_subtitles {
        video
            .subtitles
            .iter()
            .enumerate()
            .map(|(i, sub)| {
                let url = sh.transcode_url(&n.file_id, &format!("subtitle/{i}.vtt"), exp);
                json!({"language": sub.language, "status": "finished", "url": url})
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(answer(
        &d,
        &n.file_id,
        json!({"duration": video.duration, "width": video.width, "height": video.height}),
        tasks,
        subtitles,
    ))
}

fn answer(drive: &str, file_id: &str, meta: Value, tasks: Vec<Value>, subs: Vec<Value>) -> Value {
    json!({
        "domain_id": "bj29", "drive_id": drive, "file_id": file_id,
        "video_preview_play_info": {
            "category": "live_transcoding",
            "meta": meta,
            "live_transcoding_task_list": tasks,
            "live_transcoding_subtitle_task_list": subs,
        }
    })
}

/// The playlist of one template as it stands now: VOD with ENDLIST once finished, else a
/// growing EVENT playlist of the segments ready so far. URIs are signed until `expires`.
fn playlist(sh: &Shared, file_id: &str, video: &Video, t: &Template, expires: u64) -> String {
    let stage = video.stage(util::now_ms());
    let kind = match stage {
        Stage::Finished => "VOD",
        Stage::Running(_) => "EVENT",
    };
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:{kind}\n",
        t.target_duration
    );
    for (i, seg) in t.segments.iter().enumerate() {
        if !seg.ready(stage) {
            break;
        }
        let url = sh.transcode_url(
            file_id,
            &format!("hls/{}/{i}.{}", t.template_id, seg.ext),
            expires,
        );
        out.push_str(&format!("#EXTINF:{:.6},\n{url}\n", seg.duration));
    }
    if stage == Stage::Finished {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// What the data host serves at `/data/<file_id>/<rest...>` for a video's transcodes: a
/// playlist (`hls/<TEMPLATE>/index.m3u8`), a segment that is ready (`hls/<TEMPLATE>/<i>.<ext>`)
/// or a subtitle (`subtitle/<i>.vtt`); `None` for anything else (404 NoSuchKey).
pub fn resolve(
    sh: &Shared,
    st: &State,
    file_id: &str,
    rest: &[&str],
    expires: u64,
) -> Option<Object> {
    let video = st.videos.get(file_id)?;
    match rest {
        ["hls", tpl, "index.m3u8"] => {
            let t = video.answered().find(|t| t.template_id == *tpl)?;
            Some(Object::Bytes {
                bytes: playlist(sh, file_id, video, t, expires).into(),
                content_type: "application/vnd.apple.mpegurl",
            })
        }
        ["hls", tpl, seg] => {
            let t = video.answered().find(|t| t.template_id == *tpl)?;
            let (i, ext) = seg.split_once('.')?;
            let s = t.segments.get(i.parse::<usize>().ok()?)?;
            (s.ext == ext && s.ready(video.stage(util::now_ms()))).then(|| Object::Blob {
                sha1: s.sha1.clone(),
                content_type: "video/mp2t",
            })
        }
        ["subtitle", name] => {
            let i = name.strip_suffix(".vtt")?.parse::<usize>().ok()?;
            Some(Object::Blob {
                sha1: video.subtitles.get(i)?.sha1.clone(),
                content_type: "text/vtt",
            })
        }
        _ => None,
    }
}

/// Makes a small real H.264/AAC video and its HLS ladder with `ffmpeg` (testsrc + sine,
/// libx264, one HLS output per template, keyframes on segment boundaries): returns the source
/// MP4 (at the largest template's size) and the ladder, written under `out_dir/<TEMPLATE>/`.
pub fn generate_ladder(
    out_dir: &Path,
    secs: f64,
    templates: &[(&str, u32, u32)],
    segment_secs: f64,
) -> std::io::Result<(Vec<u8>, Vec<SeedTranscode>)> {
    let (_, sw, sh) = templates
        .iter()
        .copied()
        .max_by_key(|t| (t.2, t.1))
        .ok_or_else(|| std::io::Error::other("generate_ladder needs at least one template"))?;
    std::fs::create_dir_all(out_dir)?;
    let source = out_dir.join("source.mp4");
    let keyframes = format!("expr:gte(t,n_forced*{segment_secs})");
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc=size={sw}x{sh}:rate=25:duration={secs}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={secs}"
        ));
    let video_opts = |cmd: &mut std::process::Command, w: u32, h: u32| {
        cmd.args([
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args(["-pix_fmt", "yuv420p", "-crf", "30", "-sc_threshold", "0"])
        .args(["-force_key_frames", &keyframes])
        .arg("-vf")
        .arg(format!("scale={w}:{h}"))
        .args(["-c:a", "aac", "-b:a", "48k"]);
    };
    video_opts(&mut cmd, sw, sh);
    cmd.args(["-movflags", "+faststart"]).arg(&source);
    let mut ladder = Vec::new();
    for (id, w, h) in templates {
        let dir = out_dir.join(id);
        std::fs::create_dir_all(&dir)?;
        video_opts(&mut cmd, *w, *h);
        cmd.args(["-f", "hls", "-hls_time"])
            .arg(segment_secs.to_string())
            .args(["-hls_playlist_type", "vod", "-hls_segment_filename"])
            .arg(dir.join("seg%03d.ts"))
            .arg(dir.join("index.m3u8"));
        ladder.push(SeedTranscode {
            template_id: id.to_string(),
            width: *w,
            height: *h,
            dir,
        });
    }
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            std::io::Error::new(
                e.kind(),
                "generate_ladder needs `ffmpeg` on PATH (Debian: apt-get install ffmpeg)",
            )
        } else {
            e
        }
    })?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "ffmpeg failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((std::fs::read(&source)?, ladder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_playlists_parse() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:4.000000,\nseg000.ts\n#EXTINF:2.500000,\nseg001.ts\n#EXT-X-ENDLIST\n";
        let (target, segs) = parse_playlist(text).unwrap();
        assert_eq!(target, 4);
        assert_eq!(
            segs,
            vec![(4.0, "seg000.ts".into()), (2.5, "seg001.ts".into())]
        );
        assert!(parse_playlist("hello").is_err());
        assert!(parse_playlist("#EXTM3U\nseg.ts\n").is_err());
        assert!(parse_playlist("#EXTM3U\n#EXT-X-ENDLIST\n").is_err());
    }

    #[test]
    fn segments_become_ready_with_time() {
        let seg = |start: f64| Segment {
            start,
            duration: 10.0,
            ..Segment::default()
        };
        let mut v = Video {
            duration: 100.0,
            ..Video::default()
        };
        // Not played yet: the first 30 s only.
        assert_eq!(v.stage(1_000), Stage::Running(0.0));
        assert!(seg(20.0).ready(v.stage(1_000)));
        assert!(!seg(30.0).ready(v.stage(1_000)));
        v.started_ms = Some(1_000);
        v.done_ms = Some(11_000);
        assert_eq!(v.stage(6_000), Stage::Running(50.0));
        assert!(seg(40.0).ready(v.stage(6_000)));
        assert!(!seg(41.0).ready(v.stage(6_000)));
        assert_eq!(v.stage(11_000), Stage::Finished);
        assert!(seg(90.0).ready(v.stage(11_000)));
    }
}
