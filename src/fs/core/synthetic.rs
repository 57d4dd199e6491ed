//! Nodes that are not drive items: the `.transcoded` tree and the two halves of a `.livp`.
//!
//! They live in the same inode table, keyed by a synthetic key in place of a file_id. Every
//! synthetic key holds a '/', which no Open API file_id does (they are 40 hex digits, `root`, or
//! our own `local:<ino>`), so the two key spaces cannot meet; inode numbers come from the one
//! allocator, so they cannot collide either. Everything synthetic is read-only (EROFS).
//!
//! Keys: `/tc/dir/<folder id>` (a drive folder's mirror), `/tc/video/<id>` (a video's folder),
//! `/tc/m3u8/<id>/<template>`, `/tc/objs/<id>/<template>` (the segments' folder),
//! `/tc/obj/<id>/<template>/<index>`, `/tc/vtt/<id>/<file name>`, and `<id>/livp:<stream>` for
//! a `.livp` stream (the id first, so a duplicate's display name `x (ID8).jpeg` shows the
//! live photo's id).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;

use super::*;
use crate::drive::DownloadUrl;
use crate::read::UrlSource;
use crate::transcode::Transcodes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Synthetic {
    Mirror(String),
    Video(String),
    Playlist(String, String),
    Objects(String, String),
    Object(String, String, usize),
    Subtitle(String, String),
    Livp(String, String),
}

impl Synthetic {
    pub(super) fn parse(key: &str) -> Option<Synthetic> {
        if let Some(rest) = key.strip_prefix("/tc/") {
            let mut p = rest.splitn(4, '/');
            let (kind, id) = (p.next()?, p.next()?.to_string());
            let mut arg = || p.next().map(str::to_string);
            return Some(match kind {
                "dir" => Synthetic::Mirror(id),
                "video" => Synthetic::Video(id),
                "m3u8" => Synthetic::Playlist(id, arg()?),
                "objs" => Synthetic::Objects(id, arg()?),
                "obj" => {
                    let t = arg()?;
                    Synthetic::Object(id, t, arg()?.parse().ok()?)
                }
                "vtt" => Synthetic::Subtitle(id, arg()?),
                _ => return None,
            });
        }
        let (id, stream) = key.split_once("/livp:")?;
        Some(Synthetic::Livp(id.to_string(), stream.to_string()))
    }

    pub(super) fn key(&self) -> String {
        match self {
            Synthetic::Mirror(id) => format!("/tc/dir/{id}"),
            Synthetic::Video(id) => format!("/tc/video/{id}"),
            Synthetic::Playlist(id, t) => format!("/tc/m3u8/{id}/{t}"),
            Synthetic::Objects(id, t) => format!("/tc/objs/{id}/{t}"),
            Synthetic::Object(id, t, i) => format!("/tc/obj/{id}/{t}/{i}"),
            Synthetic::Subtitle(id, name) => format!("/tc/vtt/{id}/{name}"),
            Synthetic::Livp(id, stream) => format!("{id}/livp:{stream}"),
        }
    }
}

pub(super) fn is_synthetic(node: &Node) -> bool {
    crate::read::is_synthetic(&node.file_id)
}

/// A drive-item-shaped description of a synthetic node, for `InodeTable::upsert_remote`.
pub(super) fn item(
    key: &Synthetic,
    parent_key: &str,
    name: &str,
    kind: ItemKind,
    size: u64,
    times: &Node,
) -> RemoteItem {
    RemoteItem {
        file_id: key.key(),
        parent_file_id: parent_key.to_string(),
        name: name.to_string(),
        kind,
        size,
        content_hash: None,
        created_at: times.crtime,
        updated_at: times.ctime,
        local_modified_at: Some(times.mtime),
        download_url: None,
        streams: Vec::new(),
    }
}

impl FsCore {
    /// Changes at `name` in `parent` are refused when either is synthetic (or is the
    /// transcodes folder's name in the root, which the virtual tree takes).
    pub(super) fn refuse_synthetic_at(&self, parent: u64, name: &str) -> Result<()> {
        let parent_node = self.node(parent)?;
        if is_synthetic(&parent_node)
            || (parent == ROOT_INO && self.cfg.transcodes_dir.as_deref() == Some(name))
            || self.drive.fixed_folder(&parent_node.file_id)
        {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    pub(super) fn refuse_synthetic(&self, node: &Node) -> Result<()> {
        if is_synthetic(node) {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }
}

/// URLs of synthetic keys for the read path: transcode objects through the play info,
/// `.livp` streams through `streamsUrl` (one call serves both streams).
pub(super) struct SyntheticUrls {
    pub drive: Arc<dyn Drive>,
    pub transcodes: Arc<Transcodes>,
    /// A live photo's stream URLs, until shortly before they expire.
    pub streams: crate::sync::Mutex<HashMap<String, StreamUrls>>,
}

/// A live photo's URLs by stream name, and when to stop handing them out.
pub(super) type StreamUrls = (Vec<(String, DownloadUrl)>, Instant);

const STREAM_URL_MARGIN: Duration = Duration::from_secs(60);

#[async_trait]
impl UrlSource for SyntheticUrls {
    async fn url(&self, key: &str, stale: Option<&DownloadUrl>) -> Result<DownloadUrl> {
        match Synthetic::parse(key) {
            Some(Synthetic::Object(id, t, i)) => {
                self.transcodes.object_url(&id, &t, i, stale).await
            }
            Some(Synthetic::Livp(id, stream)) => {
                let pick = |urls: &[(String, DownloadUrl)]| {
                    urls.iter()
                        .find(|(s, _)| *s == stream)
                        .map(|(_, u)| u.clone())
                };
                let kept = {
                    let mut cache = lock(&self.streams);
                    cache.retain(|_, (_, renew_at)| Instant::now() < *renew_at);
                    cache.get(&id).and_then(|(urls, _)| pick(urls))
                };
                if let Some(u) = kept.filter(|u| stale.is_none_or(|s| s.url != u.url)) {
                    return Ok(u);
                }
                let urls = self.drive.stream_urls(&id).await?;
                let lifetime = urls
                    .iter()
                    .map(|(_, u)| u.expires_at)
                    .min()
                    .and_then(|e| e.duration_since(SystemTime::now()).ok())
                    .unwrap_or(Duration::ZERO);
                let renew_at = Instant::now() + (lifetime - STREAM_URL_MARGIN.min(lifetime / 2));
                let got = pick(&urls);
                lock(&self.streams).insert(id.clone(), (urls, renew_at));
                got.ok_or_else(|| Error::NotFound(format!("stream {stream} of live photo {id}")))
            }
            _ => Err(Error::NotFound(format!("no content behind {key}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_look_like_file_ids() {
        let all = [
            Synthetic::Mirror("root".into()),
            Synthetic::Video("65a1f0c2aa".into()),
            Synthetic::Playlist("65a1".into(), "FHD".into()),
            Synthetic::Objects("65a1".into(), "FHD".into()),
            Synthetic::Object("65a1".into(), "FHD".into(), 123),
            Synthetic::Subtitle("65a1".into(), "eng.vtt".into()),
            Synthetic::Livp("65a1f0c2aa".into(), "jpeg".into()),
        ];
        for s in all {
            let k = s.key();
            assert!(crate::read::is_synthetic(&k), "{k}");
            assert_eq!(Synthetic::parse(&k), Some(s));
        }
        for id in [
            "root",
            "65a1f0c2aa1b2c3d4e5f60718293a4b5c6d7e8f9",
            "local:42",
        ] {
            assert!(!crate::read::is_synthetic(id));
            assert_eq!(Synthetic::parse(id), None);
        }
    }
}
