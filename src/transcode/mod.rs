//! The drive's video transcodes, as the mount serves them: one `VideoState` per video (its play
//! info, each template's parsed and rewritten playlist, its subtitles), kept while its signed
//! URLs are valid and fetched again (single-flight) when they are about to expire; the objects
//! (segments) of the new playlists are mapped by index, so a reader never notices.
//!
//! Free of FUSE types: `fs::core::transcoded` builds the virtual tree from this.
//!
//! Locks (`crate::sync`): the video table `videos` (`Level::TRANSCODE`), each video's object
//! sizes `sizes` (`Level::TRANSCODE_SIZES`, taken inside `videos`).

pub mod playlist;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

use crate::api::oss_expires;
use crate::drive::{DownloadUrl, Drive};
use crate::error::{Error, Result};
use crate::read::Reader;
use crate::sync::{Level, Mutex};
pub use playlist::Playlist;

/// Subtitles above this are refused.
const MAX_SUBTITLE_BYTES: u64 = 16 << 20;
/// A URL without an expiry is trusted this long.
const DEFAULT_URL_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Renew this long before the earliest expiry (at most half the lifetime, for short-lived URLs).
const RENEW_MARGIN: Duration = Duration::from_secs(60);
/// Beyond this many videos, those nobody is using are dropped.
const MAX_VIDEOS: usize = 64;
/// Tries of one data-host request (busy slots, transient errors).
const DATA_TRIES: u32 = 6;
#[cfg(not(test))]
const DATA_BACKOFF: Duration = Duration::from_millis(250);
#[cfg(test)]
const DATA_BACKOFF: Duration = Duration::from_millis(2);

/// One template's stream.
#[derive(Debug, Clone)]
pub struct Template {
    /// The drive's template id (LD, SD, HD, FHD, QHD).
    pub id: String,
    /// The id as a file name (no '/').
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Still transcoding: served as a growing EVENT playlist.
    pub running: bool,
    pub playlist: Playlist,
    /// What `<name>.m3u8` holds.
    pub rewritten: Bytes,
}

#[derive(Debug, Clone)]
pub struct Subtitle {
    /// `<language>.vtt` (a second one of a language gets `-2`, ...).
    pub file_name: String,
    pub bytes: Bytes,
}

/// A video's transcodes at one moment.
#[derive(Debug)]
pub struct VideoState {
    pub duration_secs: f64,
    pub templates: Vec<Template>,
    pub subtitles: Vec<Subtitle>,
    fetched_at: Instant,
    /// Stop handing out its URLs at this instant.
    renew_at: Instant,
}

impl VideoState {
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.name == name)
    }

    fn any_running(&self) -> bool {
        self.templates.iter().any(|t| t.running)
    }
}

struct Entry {
    state: tokio::sync::Mutex<Option<Arc<VideoState>>>,
    /// Object sizes by (template name, index): a segment's content does not change when its
    /// URL does.
    sizes: Mutex<HashMap<(String, usize), u64>>,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            state: tokio::sync::Mutex::new(None),
            sizes: Mutex::new(Level::TRANSCODE_SIZES, "transcode.sizes", HashMap::new()),
        }
    }
}

/// The transcodes of the mount's videos.
pub struct Transcodes {
    drive: Arc<dyn Drive>,
    /// Its download slots: playlist, subtitle and size requests count against the per-user cap.
    reader: Arc<Reader>,
    videos: Mutex<HashMap<String, Arc<Entry>>>,
    /// A running transcode's playlists are fetched again at most this often.
    refresh_every: Duration,
}

/// A file name made of a drive string (no '/', no NUL, not empty).
pub fn file_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if n.is_empty() || n == "." || n == ".." {
        format!("_{n}")
    } else {
        n
    }
}

fn download_url(url: &str) -> DownloadUrl {
    DownloadUrl {
        url: url.to_string(),
        expires_at: oss_expires(url).unwrap_or_else(|| SystemTime::now() + DEFAULT_URL_LIFETIME),
    }
}

impl Transcodes {
    pub fn new(drive: Arc<dyn Drive>, reader: Arc<Reader>, refresh_every: Duration) -> Self {
        Transcodes {
            drive,
            reader,
            videos: Mutex::new(Level::TRANSCODE, "transcode.videos", HashMap::new()),
            refresh_every,
        }
    }

    /// One data-host request in a download slot, retried while the slots are busy (another app
    /// of the user) or the error is transient; an expired URL is the caller's to renew.
    async fn data_request<T, F>(&self, mut request: impl FnMut() -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.reader.with_download_slot(request()).await {
                Err(e)
                    if e.is_transient()
                        && !matches!(e, Error::UrlExpired)
                        && tries < DATA_TRIES =>
                {
                    let d =
                        crate::api::retry::jittered(DATA_BACKOFF, Duration::from_secs(5), tries);
                    tracing::debug!(error = %e, ?d, "data-host request failed, retrying");
                    tokio::time::sleep(d).await;
                }
                r => return r,
            }
        }
    }

    fn entry(&self, file_id: &str) -> Arc<Entry> {
        let mut videos = self.videos.lock();
        if let Some(e) = videos.get(file_id) {
            return e.clone();
        }
        if videos.len() >= MAX_VIDEOS {
            videos.retain(|_, e| Arc::strong_count(e) > 1);
        }
        let e = Arc::new(Entry::default());
        videos.insert(file_id.to_string(), e.clone());
        e
    }

    /// The video's transcodes: the kept state while its URLs are valid (and, with `growing`,
    /// while a running transcode's playlists are younger than the refresh interval), else a
    /// fresh one. The first call asks the drive for the play info, which starts its full
    /// transcode; it waits for nothing more than that one answer and the playlists.
    pub async fn video(&self, file_id: &str, growing: bool) -> Result<Arc<VideoState>> {
        self.video_unless(file_id, growing, |_| false).await
    }

    /// `video`, also fetching again when `stale` says the kept state is.
    async fn video_unless(
        &self,
        file_id: &str,
        growing: bool,
        stale: impl Fn(&VideoState) -> bool,
    ) -> Result<Arc<VideoState>> {
        let entry = self.entry(file_id);
        let mut cur = entry.state.lock().await;
        if let Some(s) = cur.as_ref() {
            let now = Instant::now();
            let young = !growing
                || !s.any_running()
                || now.duration_since(s.fetched_at) < self.refresh_every;
            if now < s.renew_at && young && !stale(s) {
                return Ok(s.clone());
            }
        }
        let fresh = Arc::new(self.load(file_id, cur.as_deref()).await?);
        *cur = Some(fresh.clone());
        Ok(fresh)
    }

    async fn load(&self, file_id: &str, previous: Option<&VideoState>) -> Result<VideoState> {
        let info = self.drive.video_play_info(file_id).await?;
        let fetched_at = Instant::now();
        let mut expiries = Vec::new();
        let wanted: Vec<_> = info
            .streams
            .iter()
            .filter(|s| matches!(s.status.as_str(), "finished" | "running"))
            .filter_map(|s| s.url.as_deref().map(|u| (s, download_url(u))))
            .collect();
        let mut templates = Vec::new();
        for (stream, url) in &wanted {
            let got = self
                .data_request(|| self.drive.fetch_object(url, playlist::MAX_PLAYLIST_BYTES))
                .await;
            let text = match got {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    tracing::warn!(file_id, template = %stream.template_id, error = %e, "transcode playlist unavailable, left out");
                    continue;
                }
            };
            let playlist = Playlist::parse(&text, &url.url);
            expiries.push(url.expires_at);
            expiries.extend(playlist.objects.iter().filter_map(|u| oss_expires(u)));
            let name = file_name(&stream.template_id);
            let running = stream.status == "running";
            let rewritten = Bytes::from(playlist.rewrite(&name, running));
            templates.push(Template {
                id: stream.template_id.clone(),
                name,
                width: stream.width,
                height: stream.height,
                running,
                playlist,
                rewritten,
            });
        }
        let subtitles = self.subtitles(file_id, &info, previous).await;
        let now = SystemTime::now();
        let lifetime = expiries
            .into_iter()
            .min()
            .map_or(DEFAULT_URL_LIFETIME, |e| {
                e.duration_since(now).unwrap_or(Duration::ZERO)
            })
            .min(Duration::from_secs(24 * 3600));
        let renew_at = fetched_at + (lifetime - RENEW_MARGIN.min(lifetime / 2));
        tracing::debug!(
            file_id,
            templates = templates.len(),
            ?lifetime,
            "video play info"
        );
        Ok(VideoState {
            duration_secs: info.duration_secs,
            templates,
            subtitles,
            fetched_at,
            renew_at,
        })
    }

    /// Finished subtitles, each fetched once (a refresh keeps the bytes it has).
    async fn subtitles(
        &self,
        file_id: &str,
        info: &crate::drive::VideoPlayInfo,
        previous: Option<&VideoState>,
    ) -> Vec<Subtitle> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for sub in info.subtitles.iter().filter(|s| s.status == "finished") {
            let Some(url) = sub.url.as_deref() else {
                continue;
            };
            let lang = file_name(&sub.language);
            let n = seen.entry(lang.clone()).or_default();
            *n += 1;
            let file_name = match *n {
                1 => format!("{lang}.vtt"),
                n => format!("{lang}-{n}.vtt"),
            };
            let sub_url = download_url(url);
            let kept = previous.and_then(|p| p.subtitles.iter().find(|s| s.file_name == file_name));
            let bytes = match kept {
                Some(s) => s.bytes.clone(),
                None => match self
                    .data_request(|| self.drive.fetch_object(&sub_url, MAX_SUBTITLE_BYTES))
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(file_id, language = %sub.language, error = %e, "subtitle unavailable, left out");
                        continue;
                    }
                },
            };
            out.push(Subtitle { file_name, bytes });
        }
        out
    }

    /// A URL for object `index` of template `template`; `stale` was refused as expired, so the
    /// play info is fetched again if the kept state still hands it out.
    pub async fn object_url(
        &self,
        file_id: &str,
        template: &str,
        index: usize,
        stale: Option<&DownloadUrl>,
    ) -> Result<DownloadUrl> {
        let url_of = |s: &VideoState| {
            s.template(template)
                .and_then(|t| t.playlist.objects.get(index))
                .cloned()
        };
        let state = self
            .video_unless(file_id, false, |s| {
                stale.is_some_and(|st| url_of(s).as_deref() == Some(st.url.as_str()))
            })
            .await?;
        match url_of(&state) {
            Some(u) => Ok(download_url(&u)),
            None => Err(Error::NotFound(format!(
                "object {index} of transcode {template} of {file_id}"
            ))),
        }
    }

    /// The size of object `index` of `template` (one request, then kept).
    pub async fn object_size(&self, file_id: &str, template: &str, index: usize) -> Result<u64> {
        let entry = self.entry(file_id);
        let key = (template.to_string(), index);
        if let Some(&n) = entry.sizes.lock().get(&key) {
            return Ok(n);
        }
        let mut url = self.object_url(file_id, template, index, None).await?;
        let mut renewed = false;
        let size = loop {
            match self.data_request(|| self.drive.object_size(&url)).await {
                Err(Error::UrlExpired) if !renewed => {
                    renewed = true;
                    url = self
                        .object_url(file_id, template, index, Some(&url))
                        .await?;
                }
                r => break r?,
            }
        };
        entry.sizes.lock().insert(key, size);
        Ok(size)
    }

    /// The size of an object if it was asked before.
    pub fn known_size(&self, file_id: &str, template: &str, index: usize) -> Option<u64> {
        let videos = self.videos.lock();
        let entry = videos.get(file_id)?;
        let sizes = entry.sizes.lock();
        sizes.get(&(template.to_string(), index)).copied()
    }
}

#[cfg(test)]
mod tests;
