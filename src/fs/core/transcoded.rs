//! The read-only virtual tree of transcodes at `<mount>/<--transcodes-dir>/` (`.transcoded`).
//!
//! It mirrors the drive's folders lazily: `.transcoded/A/B/` lists the drive folder A/B's
//! subfolders and videos (by extension, as the drive sets category `video`); a video `P` is a
//! folder holding `<T>.m3u8` per template that is finished or running, `<language>.vtt` per
//! subtitle, and `<T>/<index>.<ext>` where the rewritten playlists point. The name is found by
//! lookup in the root but never listed by readdir.
//!
//! Sizes: a playlist's and a subtitle's are their length as served. A segment's is asked once
//! (`Drive::object_size`, kept for the mount's life) when it is looked up or opened, because
//! asking for every segment of a listing would cost one request each; a listing shows 0 for
//! those not asked yet. Reads of segments and of playlists whose length changed since the
//! kernel saw it (a running transcode) use direct I/O, so a size the kernel holds never cuts a
//! read short.

use super::synthetic::{self, Synthetic};
use super::*;

/// Video files by extension (what the drive files under category `video`).
const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mkv", "mov", "avi", "ts", "m2ts", "mts", "flv", "f4v", "wmv", "webm", "rm",
    "rmvb", "mpg", "mpeg", "3gp", "vob", "asf", "ogv", "divx",
];

pub(super) fn is_video(name: &str) -> bool {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => {
            VIDEO_EXTENSIONS.iter().any(|v| v.eq_ignore_ascii_case(ext))
        }
        _ => false,
    }
}

/// A running transcode's playlists are asked again at most this often per video.
pub(super) const REFRESH_RUNNING: Duration = Duration::from_secs(3);

impl FsCore {
    /// The transcodes folder in the root, when `name` is its name (lookup only: readdir of the
    /// root never lists it).
    pub(super) fn transcodes_root(&self, parent: u64, name: &str) -> Option<Node> {
        let dir = self.cfg.transcodes_dir.as_deref()?;
        if parent != ROOT_INO || name != dir {
            return None;
        }
        let root = self.node(ROOT_INO).ok()?;
        let key = Synthetic::Mirror(root.file_id.clone());
        let item = synthetic::item(&key, &root.file_id, dir, ItemKind::Folder, 0, &root);
        let mut table = lock(&self.table);
        let ino = table.upsert_remote(&item, ROOT_INO, dir);
        table.get(ino).cloned()
    }

    /// A mirrored drive folder's children: its folders and videos, each a synthetic folder.
    async fn mirror_entries(&self, folder_id: &str) -> Result<Vec<(RemoteItem, String)>> {
        let items = self.drive.list_folder(folder_id).await?;
        let display = names::display_names(&items);
        let mut entries = Vec::new();
        for (item, name) in items.iter().zip(display) {
            let child = if item.is_dir() {
                Synthetic::Mirror(item.file_id.clone())
            } else if is_video(&item.name) {
                Synthetic::Video(item.file_id.clone())
            } else {
                continue;
            };
            let mut it = item.clone();
            it.file_id = child.key();
            it.kind = ItemKind::Folder;
            it.size = 0;
            it.download_url = None;
            it.streams.clear();
            entries.push((it, name));
        }
        Ok(entries)
    }

    /// The listing of a synthetic folder.
    pub(super) async fn load_synthetic_listing(&self, dir: &Node) -> Result<Arc<Listing>> {
        let key =
            Synthetic::parse(&dir.file_id).ok_or_else(|| Error::NotADirectory(dir.name.clone()))?;
        let mut entries: Vec<(RemoteItem, String)> = Vec::new();
        match &key {
            Synthetic::Mirror(folder_id) => entries = self.mirror_entries(folder_id).await?,
            Synthetic::Video(id) => {
                let video = self.transcodes.video(id, false).await?;
                for t in &video.templates {
                    let m3u8 = Synthetic::Playlist(id.clone(), t.name.clone());
                    let name = format!("{}.m3u8", t.name);
                    let size = t.rewritten.len() as u64;
                    entries.push((
                        synthetic::item(&m3u8, &dir.file_id, &name, ItemKind::File, size, dir),
                        name,
                    ));
                    let objs = Synthetic::Objects(id.clone(), t.name.clone());
                    entries.push((
                        synthetic::item(&objs, &dir.file_id, &t.name, ItemKind::Folder, 0, dir),
                        t.name.clone(),
                    ));
                }
                for s in &video.subtitles {
                    let key = Synthetic::Subtitle(id.clone(), s.file_name.clone());
                    let size = s.bytes.len() as u64;
                    entries.push((
                        synthetic::item(
                            &key,
                            &dir.file_id,
                            &s.file_name,
                            ItemKind::File,
                            size,
                            dir,
                        ),
                        s.file_name.clone(),
                    ));
                }
            }
            Synthetic::Objects(id, t) => {
                let video = self.transcodes.video(id, true).await?;
                let template = video
                    .template(t)
                    .ok_or_else(|| Error::NotFound(format!("transcode {t}")))?;
                for i in 0..template.playlist.objects.len() {
                    let Some(name) = template.playlist.object_name(i) else {
                        continue;
                    };
                    let key = Synthetic::Object(id.clone(), t.clone(), i);
                    let size = self.transcodes.known_size(id, t, i).unwrap_or(0);
                    entries.push((
                        synthetic::item(&key, &dir.file_id, &name, ItemKind::File, size, dir),
                        name,
                    ));
                }
            }
            _ => return Err(Error::NotADirectory(dir.name.clone())),
        }
        let mut table = lock(&self.table);
        let listing = Listing::empty_at(table.change_seq());
        for (item, name) in entries {
            let ino = table.upsert_remote(&item, dir.ino, &name);
            listing.fill(&name, ino);
        }
        debug!(dir = dir.ino, key = %dir.file_id, entries = listing.len(), "listed synthetic folder");
        Ok(Arc::new(listing))
    }

    /// A name missing from a video's or a template's cached listing may have appeared since
    /// (a running transcode grows): true when the listing was dropped so that it is loaded anew.
    pub(super) async fn relist_growing(&self, dir: &Node) -> bool {
        if matches!(
            Synthetic::parse(&dir.file_id),
            Some(Synthetic::Video(_) | Synthetic::Objects(..))
        ) {
            self.listings.invalidate(&dir.ino).await;
            return true;
        }
        false
    }

    /// A segment looked up by name gets its size (one request, kept).
    pub(super) async fn size_synthetic(&self, node: Node) -> Result<Node> {
        let Some(Synthetic::Object(id, t, i)) = Synthetic::parse(&node.file_id) else {
            return Ok(node);
        };
        if node.size > 0 {
            return Ok(node);
        }
        let size = self.transcodes.object_size(&id, &t, i).await?;
        let mut table = lock(&self.table);
        match table.get_mut(node.ino) {
            Some(n) => {
                n.size = size;
                Ok(n.clone())
            }
            None => Ok(Node { size, ..node }),
        }
    }

    /// Open a synthetic file for reading.
    pub(super) async fn open_synthetic(&self, node: &Node) -> Result<Handle> {
        let key =
            Synthetic::parse(&node.file_id).ok_or_else(|| Error::NotFound(node.name.clone()))?;
        let whole = |bytes: Bytes| {
            // The kernel holds the size it was shown: if the content's length differs now (a
            // running transcode grew, or finished), bypass its cache.
            let direct = bytes.len() as u64 != node.size;
            if let Some(n) = lock(&self.table).get_mut(node.ino) {
                n.size = bytes.len() as u64;
            }
            Handle::Memory {
                ino: node.ino,
                bytes,
                direct,
            }
        };
        match key {
            Synthetic::Playlist(id, t) => {
                let video = self.transcodes.video(&id, true).await?;
                let template = video
                    .template(&t)
                    .ok_or_else(|| Error::NotFound(node.name.clone()))?;
                let mut handle = whole(template.rewritten.clone());
                if let Handle::Memory { direct, .. } = &mut handle {
                    *direct |= template.running;
                }
                Ok(handle)
            }
            Synthetic::Subtitle(id, name) => {
                let video = self.transcodes.video(&id, false).await?;
                let sub = video
                    .subtitles
                    .iter()
                    .find(|s| s.file_name == name)
                    .ok_or_else(|| Error::NotFound(node.name.clone()))?;
                Ok(whole(sub.bytes.clone()))
            }
            Synthetic::Object(id, ..) => {
                let node = self.size_synthetic(node.clone()).await?;
                // Segments go into the data cache under their key (video, template, index) and
                // the video's content identity: watching again costs no GET, and a changed video
                // never shows old segments.
                let identity = {
                    let table = lock(&self.table);
                    // The video itself if listed (its content hash), else its folder under the
                    // transcodes tree (its change time, copied from the video's listing).
                    let video = table.ino_of(&id).and_then(|ino| table.get(ino));
                    let folder = table
                        .ino_of(&Synthetic::Video(id.clone()).key())
                        .and_then(|ino| table.get(ino));
                    let of_video = video.and_then(|v| v.identity.clone());
                    of_video
                        .or_else(|| {
                            folder.map(|f| format!("updated:{}", crate::timefmt::format(f.mtime)))
                        })
                        .map(|v| format!("segment:{}:{v}", node.size))
                };
                Ok(Handle::Remote {
                    ino: node.ino,
                    reader: Arc::new(self.reader.open(
                        &node.file_id,
                        node.size,
                        identity.as_deref(),
                    )),
                    direct: true,
                    _pin: None,
                })
            }
            Synthetic::Livp(..) => Ok(Handle::Remote {
                ino: node.ino,
                reader: Arc::new(self.reader.open(
                    &node.file_id,
                    node.size,
                    node.identity.as_deref(),
                )),
                direct: false,
                _pin: None,
            }),
            _ => Err(Error::IsADirectory(node.name.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn videos_are_known_by_extension() {
        for n in ["a.mp4", "B.MKV", "x.y.mov", "clip.ts", "c.webm"] {
            assert!(is_video(n), "{n}");
        }
        for n in ["mp4", ".mp4", "a.jpeg", "a.livp", "a.m3u8", "notes"] {
            assert!(!is_video(n), "{n}");
        }
    }
}
