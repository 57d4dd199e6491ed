//! `.livp` live photos: the drive gives no single download URL for them, only one per stream
//! (`streamsUrl`: a JPEG and a MOV). A folder shows `X.jpeg` and `X.mov` in place of `X.livp`
//! (as alist does; `--livp` picks which), each read through its own stream URL, read-only.
//! `X.livp` itself is not shown: it has no bytes of its own to read.

use super::synthetic::Synthetic;
use super::*;

/// Which halves of a live photo a folder shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LivpMode {
    #[default]
    Both,
    Jpeg,
    Mov,
}

impl LivpMode {
    fn shows(self, stream: &str) -> bool {
        let video = matches!(stream.to_ascii_lowercase().as_str(), "mov" | "mp4");
        match self {
            LivpMode::Both => true,
            LivpMode::Jpeg => !video,
            LivpMode::Mov => video,
        }
    }
}

/// A folder's items with each live photo replaced by its streams' items.
pub(super) fn expand(items: Vec<RemoteItem>, mode: LivpMode) -> Vec<RemoteItem> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let stem = match item.name.rsplit_once('.') {
            Some((stem, ext))
                if !stem.is_empty()
                    && ext.eq_ignore_ascii_case("livp")
                    && !item.is_dir()
                    && !item.streams.is_empty() =>
            {
                stem.to_string()
            }
            _ => {
                out.push(item);
                continue;
            }
        };
        for (stream, size) in item.streams.iter().filter(|(s, _)| mode.shows(s)) {
            out.push(RemoteItem {
                file_id: Synthetic::Livp(item.file_id.clone(), stream.clone()).key(),
                name: format!("{stem}.{}", crate::transcode::file_name(stream)),
                size: *size,
                content_hash: None,
                download_url: None,
                streams: Vec::new(),
                ..item.clone()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn item(id: &str, name: &str, streams: &[(&str, u64)]) -> RemoteItem {
        RemoteItem {
            file_id: id.into(),
            parent_file_id: "root".into(),
            name: name.into(),
            kind: ItemKind::File,
            size: 9,
            content_hash: Some("AB".into()),
            created_at: UNIX_EPOCH,
            updated_at: UNIX_EPOCH,
            local_modified_at: None,
            download_url: None,
            streams: streams.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn a_live_photo_becomes_its_streams() {
        let items = vec![
            item("a1", "IMG_1.livp", &[("jpeg", 100), ("mov", 2000)]),
            item("b2", "notes.txt", &[]),
            item("c3", "empty.livp", &[]),
        ];
        let both = expand(items.clone(), LivpMode::Both);
        let names: Vec<_> = both.iter().map(|i| (i.name.as_str(), i.size)).collect();
        assert_eq!(
            names,
            vec![
                ("IMG_1.jpeg", 100),
                ("IMG_1.mov", 2000),
                ("notes.txt", 9),
                ("empty.livp", 9)
            ]
        );
        assert_eq!(both[0].file_id, "a1/livp:jpeg");
        assert!(both[0].content_hash.is_none());
        let jpeg: Vec<_> = expand(items.clone(), LivpMode::Jpeg)
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(jpeg, vec!["IMG_1.jpeg", "notes.txt", "empty.livp"]);
        let mov: Vec<_> = expand(items, LivpMode::Mov)
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(mov, vec!["IMG_1.mov", "notes.txt", "empty.livp"]);
    }
}
