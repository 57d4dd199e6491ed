//! The `status` and `sync` commands: find the mount's socket, ask, print. Errors are one line
//! each (no mount found, daemon not answering, permission denied) and a non-zero exit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::paths::{self, IndexEntry};
use super::proto::{Request, Response, Status, SyncResult};

/// How long a daemon may take to answer a status request, or to send the next sync line.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

type Result<T> = std::result::Result<T, String>;

fn no_mount(what: &str, denied: &[PathBuf]) -> String {
    match denied.first() {
        Some(d) => format!(
            "permission denied: cannot read {} (mounts there belong to another user)",
            d.display()
        ),
        None => format!("no alipanfs mount found {what}"),
    }
}

/// The mount holding `path`, and `path` relative to its root.
fn find(path: &Path) -> Result<(IndexEntry, String)> {
    let (mounts, denied) = paths::discover();
    let resolved = paths::resolve(path);
    match paths::mount_of(&mounts, &resolved) {
        Some((m, rel)) => Ok((m.clone(), rel)),
        None => Err(no_mount(&format!("at {}", resolved.display()), &denied)),
    }
}

fn connect(m: &IndexEntry) -> Result<UnixStream> {
    let mp = m.mountpoint.display();
    let stream = UnixStream::connect(&m.socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied: {} belongs to another user (its socket is {})",
            mp,
            m.socket.display()
        ),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => format!(
            "the daemon of {mp} is not answering (pid {} gone? stale socket {})",
            m.pid,
            m.socket.display()
        ),
        _ => format!("cannot connect to the daemon of {mp}: {e}"),
    })?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Send `req` and call `each` for every response line until it returns Some.
fn ask<T>(
    m: &IndexEntry,
    req: &Request,
    mut each: impl FnMut(Response) -> Result<Option<T>>,
) -> Result<T> {
    let mut stream = connect(m)?;
    let mp = m.mountpoint.display();
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    // A refused peer gets its answer before the daemon reads the request: read it anyway.
    let sent = stream.write_all(&line);
    let mut reader = BufReader::new(stream);
    loop {
        let mut answer = String::new();
        match reader.read_line(&mut answer) {
            Ok(0) => {
                return Err(match &sent {
                    Err(e) => format!("the daemon of {mp} closed the connection: {e}"),
                    Ok(()) => format!("the daemon of {mp} closed the connection without answering"),
                })
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "the daemon of {mp} is not answering (no reply in {ANSWER_TIMEOUT:?})"
                ))
            }
            Err(e) => return Err(format!("reading from the daemon of {mp}: {e}")),
        }
        let response: Response = serde_json::from_str(answer.trim())
            .map_err(|e| format!("the daemon of {mp} sent something unreadable: {e}"))?;
        if let Response::Error { message } = response {
            return Err(message);
        }
        if let Some(done) = each(response)? {
            return Ok(done);
        }
    }
}

fn status_of(m: &IndexEntry) -> Result<Status> {
    ask(m, &Request::Status, |r| match r {
        Response::Status(s) => Ok(Some(*s)),
        _ => Ok(None),
    })
}

/// `alipanfs status [MOUNTPOINT] [--json] [--watch]`; returns the exit code.
pub fn status(mountpoint: Option<&Path>, json: bool, watch: bool) -> i32 {
    loop {
        let (out, code) = match status_once(mountpoint, json) {
            Ok((out, code)) => (out, code),
            Err(e) => {
                eprintln!("alipanfs: {e}");
                return 1;
            }
        };
        if watch {
            // Home, clear, redraw: a `watch`-like view without its dependency.
            print!("\x1b[H\x1b[2J{out}");
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_secs(1));
        } else {
            print!("{out}");
            return code;
        }
    }
}

fn status_once(mountpoint: Option<&Path>, json: bool) -> Result<(String, i32)> {
    if let Some(mp) = mountpoint {
        let (m, _) = find(mp)?;
        let s = status_of(&m)?;
        let out = if json {
            serde_json::to_string_pretty(&s).map_err(|e| e.to_string())? + "\n"
        } else {
            table(&s)
        };
        return Ok((out, 0));
    }
    let (mounts, denied) = paths::discover();
    if mounts.is_empty() {
        return Err(no_mount("for this user", &denied));
    }
    let mut all = Vec::new();
    let mut out = String::new();
    let mut code = 0;
    for m in &mounts {
        match status_of(m) {
            Ok(s) => {
                out += &table(&s);
                out += "\n";
                all.push(s);
            }
            Err(e) => {
                // Not this user's, or a dead daemon's leftover: say so, and go on.
                if json {
                    eprintln!("alipanfs: {e}");
                } else {
                    out += &format!("{}: {e}\n\n", m.mountpoint.display());
                }
            }
        }
    }
    // Exit 1 only when no mount answered.
    if all.is_empty() {
        code = 1;
    }
    if json {
        out = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())? + "\n";
    }
    Ok((out, code))
}

fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// One line on the data cache: where, how full, how useful.
pub fn cache_line(c: &crate::cache::CacheStatus) -> String {
    let ratio = c
        .hit_ratio()
        .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
    format!(
        "cache: {} used of {} in {} ({} files{}); hit ratio {} ({} of {} blocks); passthrough opens {}{}",
        size(c.used),
        size(c.limit),
        c.dir,
        c.files,
        if c.blocks > 0 { format!(", {} blocks", c.blocks) } else { String::new() },
        ratio,
        c.hit_blocks,
        c.hit_blocks + c.miss_blocks,
        c.passthrough_opens,
        if c.skipped_bytes > 0 {
            format!("; skipped {} (writer behind, filled by later reads)", size(c.skipped_bytes))
        } else {
            String::new()
        }
    )
}

/// One line on the change poller: feed, last poll, totals.
pub fn poll_line(p: &super::proto::PollStatus) -> String {
    if p.feed == "off" {
        return "changes elsewhere: polling off (alipanfs refresh re-reads folders)".into();
    }
    let last = match p.last_poll_unix {
        Some(t) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(t, |d| d.as_secs());
            format!(
                "{} ago, {} calls, {} found",
                age(now.saturating_sub(t)),
                p.last_calls,
                p.last_found
            )
        }
        None => "none yet".into(),
    };
    let error = p
        .last_error
        .as_deref()
        .map_or(String::new(), |e| format!("; last error: {e}"));
    format!(
        "changes elsewhere: every {}s by {}; last poll {}; {} polls, {} changes applied, {} invalidations{}",
        p.interval_secs, p.feed, last, p.polls, p.changes_applied, p.invalidations, error
    )
}

/// The human view of one mount.
pub fn table(s: &Status) -> String {
    let mut o = String::new();
    let token = s.token_age_secs.map_or("unknown".into(), age);
    o += &format!(
        "{} (pid {})  token age {}  last minute: {} throttled (429), {} errors\n",
        s.mountpoint, s.pid, token, s.throttled_last_minute, s.errors_last_minute
    );
    o += &format!(
        "limits: download {}, upload {}  log level {}\n",
        crate::api::bwlimit::format_rate(s.bwlimit_download),
        crate::api::bwlimit::format_rate(s.bwlimit_upload),
        if s.log_level.is_empty() {
            "-"
        } else {
            &s.log_level
        }
    );
    if s.uploads.is_empty() && s.writing.is_empty() {
        o += "uploads: none pending\n";
    } else {
        o += &format!(
            "{:<40} {:>9} {:>9} {:>5} {:<10} {:>8}  {}\n",
            "UPLOAD", "SIZE", "SENT", "%", "STATE", "ATTEMPTS", "LAST ERROR"
        );
        for u in &s.uploads {
            let pct = (u.sent * 100).checked_div(u.size).unwrap_or(100);
            let row = format!(
                "{:<40} {:>9} {:>9} {:>4}% {:<10} {:>8}  {}",
                u.path,
                size(u.size),
                size(u.sent),
                pct,
                u.state,
                u.attempts,
                u.last_error.as_deref().unwrap_or("")
            );
            o += row.trim_end();
            o += "\n";
        }
        for w in &s.writing {
            if s.uploads.iter().any(|u| &u.path == w) {
                continue;
            }
            o += &format!("{w:<40} {:>9} {:>9} {:>5} writing\n", "", "", "");
        }
    }
    match &s.cache {
        Some(c) => o += &(cache_line(c) + "\n"),
        None => o += "cache: off\n",
    }
    if let Some(p) = &s.poll {
        o += &(poll_line(p) + "\n");
    }
    if let Some(url) = &s.webdav {
        o += &format!("webdav: serving {url}\n");
    }
    if !s.downloads.is_empty() {
        o += &format!("{:<40} {:>9} {:>9}\n", "READING", "SIZE", "RECEIVED");
        for d in &s.downloads {
            o += &format!(
                "{:<40} {:>9} {:>9}\n",
                d.path,
                size(d.size),
                size(d.received)
            );
        }
    }
    if !s.api.is_empty() {
        o += &format!(
            "{:<24} {:>7} {:>14} {:>6} {:>7}\n",
            "API", "CALLS", "RATE WAITS", "429s", "ERRORS"
        );
        for e in &s.api {
            let waits = format!(
                "{} ({:.1}s)",
                e.limiter_waits,
                e.limiter_wait_ms as f64 / 1e3
            );
            o += &format!(
                "{:<24} {:>7} {:>14} {:>6} {:>7}\n",
                e.endpoint, e.calls, waits, e.throttled, e.errors
            );
        }
    }
    o
}

/// `alipanfs set MOUNTPOINT KEY=VALUE...`: prints `KEY=VALUE` as now in force for each, or one
/// error line; returns the exit code.
pub fn set(mountpoint: &Path, settings: &[String]) -> i32 {
    match set_all(mountpoint, settings) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("alipanfs: {e}");
            1
        }
    }
}

fn set_all(mountpoint: &Path, settings: &[String]) -> Result<()> {
    if settings.is_empty() {
        return Err(format!(
            "nothing to set: give KEY=VALUE (keys: {})",
            super::server::SETTINGS
        ));
    }
    let mut pairs = Vec::new();
    for kv in settings {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{kv:?} is not KEY=VALUE (e.g. bwlimit-download=10M)"))?;
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    let (m, _) = find(mountpoint)?;
    for (key, value) in pairs {
        let req = Request::Set { key, value };
        let (k, v) = ask(&m, &req, |r| match r {
            Response::Set { key, value } => Ok(Some((key, value))),
            _ => Ok(None),
        })?;
        println!("{}: {k}={v}", m.mountpoint.display());
    }
    Ok(())
}

/// `alipanfs sync [PATH...] [--timeout S]`; returns the exit code.
pub fn sync(paths: &[PathBuf], timeout: Option<f64>) -> i32 {
    match sync_all(paths, timeout) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("alipanfs: {e}");
            1
        }
    }
}

fn sync_all(paths: &[PathBuf], timeout: Option<f64>) -> Result<i32> {
    // No path: the whole mount of the current folder.
    let whole = paths.is_empty();
    let cwd = [PathBuf::from(".")];
    let paths = if whole { &cwd[..] } else { paths };
    let mut by_mount: Vec<(IndexEntry, Vec<String>)> = Vec::new();
    for p in paths {
        let (m, rel) = find(p)?;
        let rel = if whole { String::new() } else { rel };
        match by_mount
            .iter_mut()
            .find(|(k, _)| k.mountpoint == m.mountpoint)
        {
            Some((_, v)) => v.push(rel),
            None => by_mount.push((m, vec![rel])),
        }
    }
    let mut code = 0;
    for (m, rels) in by_mount {
        let req = Request::Sync {
            paths: rels,
            timeout_secs: timeout,
        };
        let result: SyncResult = ask(&m, &req, |r| match r {
            Response::SyncDone(done) => Ok(Some(done)),
            _ => Ok(None),
        })?;
        let at = |p: &str| m.mountpoint.join(p).display().to_string();
        for f in &result.failed {
            eprintln!("alipanfs: {}: upload failed: {}", at(&f.path), f.error);
            code = 1;
        }
        for p in &result.pending {
            eprintln!("alipanfs: {}: still uploading (timed out)", at(p));
            code = 1;
        }
        for p in &result.open {
            eprintln!(
                "alipanfs: {}: still open for writing; not waited for",
                at(p)
            );
        }
    }
    Ok(code)
}

/// `alipanfs refresh [PATH...]`: each mount re-reads the folders named (none: the whole mount
/// of the current directory, i.e. its root) and answers once the new state is visible. Exit 0,
/// or 1 with one line naming what failed.
pub fn refresh(paths: &[PathBuf]) -> i32 {
    match refresh_all(paths) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("alipanfs: {e}");
            1
        }
    }
}

fn refresh_all(paths: &[PathBuf]) -> Result<()> {
    let whole = paths.is_empty();
    let cwd = [PathBuf::from(".")];
    let paths = if whole { &cwd[..] } else { paths };
    let mut by_mount: Vec<(IndexEntry, Vec<String>)> = Vec::new();
    for p in paths {
        let (m, rel) = find(p)?;
        let rel = if whole { String::new() } else { rel };
        match by_mount
            .iter_mut()
            .find(|(k, _)| k.mountpoint == m.mountpoint)
        {
            Some((_, v)) => v.push(rel),
            None => by_mount.push((m, vec![rel])),
        }
    }
    for (m, rels) in by_mount {
        let req = Request::Refresh { paths: rels };
        ask(&m, &req, |r| match r {
            Response::Refreshed { .. } => Ok(Some(())),
            _ => Ok(None),
        })
        .map_err(|e| format!("{}: {e}", m.mountpoint.display()))?;
    }
    Ok(())
}
