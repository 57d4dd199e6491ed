//! HLS media playlists: parsing the drive's (every URI a signed URL) and rewriting them so each
//! URI is a relative path inside the mount.
//!
//! Every URI is an *object*, numbered in order of appearance: segment lines, and the `URI="..."`
//! of `#EXT-X-MAP` (init segment) and `#EXT-X-KEY` tags. Object `i` of template `T` is served at
//! `T/<i:06>.<ext>` beside `T.m3u8`. The drive only appends to a playlist while it transcodes,
//! so the numbers of the objects already seen never change, and a refreshed play info (new
//! signed URLs) maps onto the same names by index.

use reqwest::Url;

/// One line of a parsed playlist, with its URI (if any) taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Text(String),
    /// A segment line: object `index`.
    Uri(usize),
    /// A tag with `URI="..."`: the text before and after the quoted URI.
    TagUri {
        before: String,
        index: usize,
        after: String,
    },
}

/// A media playlist as the drive serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playlist {
    lines: Vec<Line>,
    /// Absolute URLs of the objects, by index.
    pub objects: Vec<String>,
    /// `#EXT-X-ENDLIST` was present.
    pub ended: bool,
}

/// Playlists above this are refused (a feature film's is a few hundred KB).
pub const MAX_PLAYLIST_BYTES: u64 = 16 << 20;

impl Playlist {
    /// Parses `text`, resolving relative URIs against `base` (the playlist's own URL).
    pub fn parse(text: &str, base: &str) -> Playlist {
        let base = Url::parse(base).ok();
        let resolve = |uri: &str| -> String {
            match (Url::parse(uri), &base) {
                (Ok(u), _) => u.to_string(),
                (Err(_), Some(b)) => b.join(uri).map_or_else(|_| uri.to_string(), String::from),
                (Err(_), None) => uri.to_string(),
            }
        };
        let mut p = Playlist {
            lines: Vec::new(),
            objects: Vec::new(),
            ended: false,
        };
        for raw in text.lines() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            if let Some(tag) = line.strip_prefix('#') {
                if tag.trim() == "EXT-X-ENDLIST" {
                    p.ended = true;
                    continue;
                }
                if let Some((before, uri, after)) = split_uri_attr(line) {
                    p.objects.push(resolve(uri));
                    p.lines.push(Line::TagUri {
                        before: before.to_string(),
                        index: p.objects.len() - 1,
                        after: after.to_string(),
                    });
                    continue;
                }
                p.lines.push(Line::Text(line.to_string()));
            } else {
                p.objects.push(resolve(line.trim()));
                p.lines.push(Line::Uri(p.objects.len() - 1));
            }
        }
        p
    }

    /// The file name of object `index` inside its template's folder.
    pub fn object_name(&self, index: usize) -> Option<String> {
        let url = self.objects.get(index)?;
        Some(format!("{index:06}.{}", extension_of(url)))
    }

    /// Index of the object called `name` (the inverse of `object_name`).
    pub fn object_index(&self, name: &str) -> Option<usize> {
        let (num, _) = name.split_once('.')?;
        let index: usize = num.parse().ok()?;
        (self.object_name(index)? == name).then_some(index)
    }

    /// The playlist with every URI replaced by `dir/<object name>`. `running`: the transcode is
    /// not finished, so it is served as a growing `EVENT` playlist without `ENDLIST`; otherwise
    /// it ends with `ENDLIST`, so players treat it as a whole video.
    pub fn rewrite(&self, dir: &str, running: bool) -> String {
        let mut out = String::new();
        let mut typed = self
            .lines
            .iter()
            .any(|l| matches!(l, Line::Text(t) if t.starts_with("#EXT-X-PLAYLIST-TYPE:")));
        for line in &self.lines {
            match line {
                Line::Text(t) if t.starts_with("#EXT-X-PLAYLIST-TYPE:") => {
                    out.push_str(if running {
                        "#EXT-X-PLAYLIST-TYPE:EVENT"
                    } else {
                        t
                    });
                }
                Line::Text(t) => out.push_str(t),
                Line::Uri(i) => out.push_str(&self.relative(dir, *i)),
                Line::TagUri {
                    before,
                    index,
                    after,
                } => {
                    out.push_str(before);
                    out.push_str(&self.relative(dir, *index));
                    out.push_str(after);
                }
            }
            out.push('\n');
            if running && !typed && line == &Line::Text("#EXTM3U".into()) {
                out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n");
                typed = true;
            }
        }
        if !running {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    fn relative(&self, dir: &str, index: usize) -> String {
        format!(
            "{dir}/{}",
            self.object_name(index).unwrap_or_else(|| index.to_string())
        )
    }
}

/// `(before, uri, after)` of a tag's quoted `URI="..."` attribute, the quotes kept in
/// before/after.
fn split_uri_attr(line: &str) -> Option<(&str, &str, &str)> {
    let at = line.find("URI=\"")? + "URI=\"".len();
    let len = line[at..].find('"')?;
    Some((&line[..at], &line[at..at + len], &line[at + len..]))
}

/// The extension a segment file gets: its URL path's (lowercase, short, alphanumeric), else
/// `ts`, the HLS default. Players pick demuxers by it (ffmpeg refuses unknown ones in HLS).
fn extension_of(url: &str) -> String {
    let path = Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| url.split(['?', '#']).next().unwrap_or("").to_string());
    let last = path.rsplit('/').next().unwrap_or("");
    match last.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && (1..=5).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            ext.to_ascii_lowercase()
        }
        _ => "ts".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOD: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:4.000,\nhttps://data.example/v/FHD/0.ts?x-oss-expires=100&x-oss-signature=a\n#EXTINF:4.000,\nhttps://data.example/v/FHD/1.ts?x-oss-expires=100&x-oss-signature=b\n#EXTINF:1.500,\nhttps://data.example/v/FHD/2.ts?x-oss-expires=100&x-oss-signature=c\n#EXT-X-ENDLIST\n";

    #[test]
    fn every_uri_becomes_a_relative_path_in_the_template_folder() {
        let p = Playlist::parse(
            VOD,
            "https://data.example/v/FHD/index.m3u8?x-oss-expires=100",
        );
        assert_eq!(p.objects.len(), 3);
        assert!(p.ended);
        let out = p.rewrite("FHD", false);
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:4.000,\nFHD/000000.ts\n#EXTINF:4.000,\nFHD/000001.ts\n#EXTINF:1.500,\nFHD/000002.ts\n#EXT-X-ENDLIST\n"
        );
        assert!(!out.contains("http"), "no absolute URL is left:\n{out}");
        assert_eq!(p.object_index("000001.ts"), Some(1));
        assert_eq!(p.object_index("000001.mp4"), None);
        assert_eq!(p.object_index("000009.ts"), None);
    }

    #[test]
    fn a_running_transcode_is_an_event_playlist_without_endlist() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nhttps://d/s/0.ts?e=1\n";
        let p = Playlist::parse(text, "https://d/s/index.m3u8");
        assert!(!p.ended);
        let out = p.rewrite("HD", true);
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nHD/000000.ts\n"
        );
        // An EVENT type given by the drive is kept once, a VOD one turned into EVENT.
        let p = Playlist::parse(
            VOD.replace("#EXT-X-ENDLIST\n", "").as_str(),
            "https://d/x.m3u8",
        );
        let out = p.rewrite("FHD", true);
        assert_eq!(out.matches("#EXT-X-PLAYLIST-TYPE:EVENT").count(), 1);
        assert!(!out.contains("VOD") && !out.contains("ENDLIST"));
        // Once finished, the same segments keep their names and the list ends.
        let done = p.rewrite("FHD", false);
        assert!(done.ends_with("FHD/000002.ts\n#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn tag_uris_and_relative_uris_are_objects_too() {
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4?sig=1\",BYTERANGE=\"100@0\"\n#EXTINF:2,\nseg/0.m4s?sig=2\n#EXT-X-ENDLIST\n";
        let p = Playlist::parse(text, "https://d/v/FHD/index.m3u8?sig=0");
        assert_eq!(
            p.objects,
            vec![
                "https://d/v/FHD/init.mp4?sig=1".to_string(),
                "https://d/v/FHD/seg/0.m4s?sig=2".to_string()
            ]
        );
        let out = p.rewrite("FHD", false);
        assert!(out.contains("#EXT-X-MAP:URI=\"FHD/000000.mp4\",BYTERANGE=\"100@0\"\n"));
        assert!(out.contains("\nFHD/000001.m4s\n"));
    }

    #[test]
    fn refreshed_urls_map_onto_the_same_names_by_index() {
        let old = Playlist::parse(VOD, "https://data.example/i.m3u8");
        let fresh_text = VOD.replace("x-oss-expires=100", "x-oss-expires=200");
        let fresh = Playlist::parse(&fresh_text, "https://data.example/i.m3u8");
        assert_eq!(old.rewrite("FHD", false), fresh.rewrite("FHD", false));
        for i in 0..3 {
            assert_eq!(old.object_name(i), fresh.object_name(i));
            assert!(fresh.objects[i].contains("x-oss-expires=200"));
        }
        // A grown playlist keeps the names of what was there.
        let grown = format!(
            "{}#EXTINF:4.0,\nhttps://data.example/v/FHD/3.ts?x-oss-expires=200\n",
            fresh_text.replace("#EXT-X-ENDLIST\n", "")
        );
        let grown = Playlist::parse(&grown, "https://data.example/i.m3u8");
        assert_eq!(grown.objects.len(), 4);
        for i in 0..3 {
            assert_eq!(grown.object_name(i), old.object_name(i));
        }
    }

    #[test]
    fn extensions_come_from_the_url_path() {
        assert_eq!(extension_of("https://h/a/b.TS?x=1.mp4"), "ts");
        assert_eq!(extension_of("https://h/a/b.m4s"), "m4s");
        assert_eq!(extension_of("https://h/a/segment?x=1"), "ts");
        assert_eq!(extension_of("https://h/a/.hidden"), "ts");
        assert_eq!(extension_of("https://h/a/b.toolongext"), "ts");
    }
}
