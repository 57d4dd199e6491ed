//! Download URLs on disk: `urls.log`, one JSON line per URL asked with getDownloadUrl (file_id,
//! URL, expiry), appended as they come (about one a second at most: the API's limit). At open
//! the last line of each file_id wins, expired ones go, and the log is rewritten compacted; a
//! line cut short by a crash is skipped. While mounted, the log is compacted again once it
//! holds more dead lines than live ones.

use crate::sync::{Level, Mutex};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::drive::DownloadUrl;
use crate::fs::lock;

pub(super) const FILE: &str = "urls.log";
/// Compaction is not considered below this many lines.
const COMPACT_ABOVE: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Line {
    /// file_id
    f: String,
    /// The signed URL.
    u: String,
    /// Expiry, milliseconds since the epoch.
    e: u64,
}

/// file_id -> (URL, expiry in ms since the epoch).
type Live = HashMap<String, (String, u64)>;

pub(super) struct UrlLog {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    /// The append handle; None if the log cannot be written (then nothing is kept).
    file: Option<File>,
    /// Every URL in the log that has not expired.
    live: Live,
    /// Lines in the file.
    lines: usize,
    /// Valid beyond the margin at open, until taken.
    loaded: Vec<(String, DownloadUrl)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The log's lines that parse, last per file_id, and how many did not parse.
fn read_lines(path: &Path) -> std::io::Result<(Live, usize)> {
    let mut live = HashMap::new();
    let mut bad = 0;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((live, 0)),
        Err(e) => return Err(e),
    };
    for line in std::io::BufReader::new(file).split(b'\n') {
        match serde_json::from_slice::<Line>(&line?) {
            Ok(l) => {
                live.insert(l.f, (l.u, l.e));
            }
            Err(_) => bad += 1,
        }
    }
    Ok((live, bad))
}

fn encode(file_id: &str, url: &str, expires_ms: u64) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Line {
        f: file_id.to_string(),
        u: url.to_string(),
        e: expires_ms,
    })
    .unwrap_or_default();
    line.push(b'\n');
    line
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // A file made before (or copied in) keeps its mode: make sure.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

impl UrlLog {
    pub(super) fn open(path: PathBuf, margin: Duration) -> UrlLog {
        let (mut live, bad) = read_lines(&path).unwrap_or_else(|e| {
            warn!(file = %path.display(), error = %e, "cannot read the stored download URLs; asking again");
            (HashMap::new(), 0)
        });
        if bad > 0 {
            warn!(file = %path.display(), lines = bad, "unreadable lines in the stored download URLs skipped");
        }
        let now = now_ms();
        live.retain(|_, (_, e)| *e > now);
        let usable_after = now + margin.as_millis() as u64;
        let loaded = live
            .iter()
            .filter(|(_, (_, e))| *e > usable_after)
            .map(|(f, (u, e))| {
                let expires_at = UNIX_EPOCH + Duration::from_millis(*e);
                (
                    f.clone(),
                    DownloadUrl {
                        url: u.clone(),
                        expires_at,
                    },
                )
            })
            .collect();
        let mut state = State {
            file: None,
            live,
            lines: 0,
            loaded,
        };
        Self::rewrite(&path, &mut state);
        debug!(urls = state.live.len(), "opened the stored download URLs");
        UrlLog {
            path,
            state: Mutex::new(Level::META_URLS, "stored urls", state),
        }
    }

    /// Write the live URLs as the whole log and reopen it for appending.
    fn rewrite(path: &Path, state: &mut State) {
        let mut body = Vec::new();
        for (f, (u, e)) in &state.live {
            body.extend(encode(f, u, *e));
        }
        state.file = crate::atomic_file::replace(path, &body, crate::atomic_file::Durability::Power)
            .and_then(|_| open_append(path))
            .inspect_err(|e| warn!(file = %path.display(), error = %e, "cannot write the stored download URLs; they will not outlive this mount"))
            .ok();
        state.lines = state.live.len();
    }

    pub(super) fn take_loaded(&self) -> Vec<(String, DownloadUrl)> {
        std::mem::take(&mut lock(&self.state).loaded)
    }

    pub(super) fn append(&self, file_id: &str, url: &DownloadUrl) {
        let expires = url
            .expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut state = lock(&self.state);
        let Some(file) = state.file.as_mut() else {
            return;
        };
        // One write of one whole line: appends never interleave, and a crash cuts at most
        // this line, which the next open skips.
        if let Err(e) = file.write_all(&encode(file_id, &url.url, expires)) {
            debug!(error = %e, "could not store a download URL");
            return;
        }
        state.lines += 1;
        state
            .live
            .insert(file_id.to_string(), (url.url.clone(), expires));
        if state.lines > COMPACT_ABOVE.max(2 * state.live.len()) {
            let now = now_ms();
            state.live.retain(|_, (_, e)| *e > now);
            Self::rewrite(&self.path, &mut state);
        }
    }
}

/// URLs in the log of `path` still valid now (for `about`).
pub(super) fn count_valid(path: &Path) -> usize {
    let now = now_ms();
    read_lines(path)
        .map(|(live, _)| live.values().filter(|(_, e)| *e > now).count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(n: u32, valid_for: Duration) -> DownloadUrl {
        DownloadUrl {
            url: format!("http://h/f{n}?sig=s{n}"),
            expires_at: SystemTime::now() + valid_for,
        }
    }

    #[test]
    fn urls_valid_beyond_the_margin_come_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let margin = Duration::from_secs(60);
        let log = UrlLog::open(path.clone(), margin);
        log.append("a", &url(1, Duration::from_secs(3600)));
        log.append("b", &url(2, Duration::from_secs(30))); // within the margin
        log.append("c", &url(3, Duration::from_secs(3600)));
        log.append("c", &url(4, Duration::from_secs(7200))); // the last one wins
        drop(log);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut back = UrlLog::open(path.clone(), margin).take_loaded();
        back.sort_by(|x, y| x.0.cmp(&y.0));
        let got: Vec<(&str, &str)> = back
            .iter()
            .map(|(f, u)| (f.as_str(), u.url.as_str()))
            .collect();
        assert_eq!(
            got,
            [("a", "http://h/f1?sig=s1"), ("c", "http://h/f4?sig=s4")]
        );
        assert_eq!(count_valid(&path), 3, "b is still valid, only not for long");
    }

    #[test]
    fn a_torn_or_garbled_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let log = UrlLog::open(path.clone(), Duration::ZERO);
        log.append("a", &url(1, Duration::from_secs(3600)));
        drop(log);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"\x00\xffgarbage\n{\"f\":\"b\",\"u\":\"http://h/x?s")
            .unwrap();
        drop(f);
        let back = UrlLog::open(path.clone(), Duration::ZERO).take_loaded();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, "a");
        // The reopen compacted the log: only the good line is left.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[test]
    fn the_log_is_compacted_while_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let log = UrlLog::open(path.clone(), Duration::ZERO);
        for i in 0..3000 {
            log.append("same", &url(i, Duration::from_secs(3600)));
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= COMPACT_ABOVE + 1, "{lines} lines for one live URL");
        let back = UrlLog::open(path, Duration::ZERO).take_loaded();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].1.url, "http://h/f2999?sig=s2999");
    }
}
