//! The control protocol. The client sends one JSON line (`Request`); the daemon answers one
//! JSON line (`Response`), except `sync`, which answers `SyncProgress` lines (about once a
//! second, so the client can tell a live daemon from a hung one) and then one `SyncDone`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Wait for the files under `paths` (relative to the mount root, "" for all of it).
    Sync {
        paths: Vec<String>,
        #[serde(default)]
        timeout_secs: Option<f64>,
    },
    /// Change a setting of the running mount (`alipanfs set`): `bwlimit-download`,
    /// `bwlimit-upload` (a rate, 0 = off) or `log-level`.
    Set {
        key: String,
        value: String,
    },
    /// Re-read the folders at `paths` (relative to the mount root, "" for the root) from the
    /// drive now (`alipanfs refresh`).
    Refresh {
        paths: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    SyncProgress {
        pending: Vec<String>,
    },
    SyncDone(SyncResult),
    /// A `Set` applied: the setting's name and the value now in force.
    Set {
        key: String,
        value: String,
    },
    Error {
        message: String,
    },
    /// A `Refresh` done: the new state is visible. `changes`: how many entries differed.
    Refreshed {
        changes: u64,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub mountpoint: String,
    pub pid: u32,
    pub uploads: Vec<Upload>,
    /// Files written and not queued yet (still open, or their close is being processed).
    #[serde(default)]
    pub writing: Vec<String>,
    /// Files open for reading from the drive.
    pub downloads: Vec<Download>,
    pub api: Vec<Endpoint>,
    pub throttled_last_minute: u64,
    pub errors_last_minute: u64,
    /// Seconds since the refresh token was last rotated (or the token store written).
    pub token_age_secs: Option<u64>,
    /// The data cache on disk; None when it is off (`--cache-size 0`) or held by another mount.
    #[serde(default)]
    pub cache: Option<crate::cache::CacheStatus>,
    /// Bandwidth limits in force, bytes per second (0 = off).
    #[serde(default)]
    pub bwlimit_download: u64,
    #[serde(default)]
    pub bwlimit_upload: u64,
    /// The daemon's log level (or filter) in force.
    #[serde(default)]
    pub log_level: String,
    /// Changes made elsewhere: the poller's state.
    #[serde(default)]
    pub poll: Option<PollStatus>,
    /// The URL of the mount's WebDAV server (`--webdav-listen`), if it runs one.
    #[serde(default)]
    pub webdav: Option<String>,
}

/// The change poller's state (`alipanfs status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PollStatus {
    /// Seconds between polls; 0: polling is off.
    pub interval_secs: f64,
    /// How changes are found: `delta` (the drive's change feed), `search+revalidation`
    /// (searches by change time, and folders in use recounted for removals), `starting` or `off`.
    pub feed: String,
    /// When the last poll ended (seconds since the epoch).
    pub last_poll_unix: Option<u64>,
    /// API calls the last poll made (listing changed folders afresh not included).
    pub last_calls: u32,
    /// Changes the last poll found on the drive.
    pub last_found: u64,
    /// Polls, changes applied and kernel invalidations sent since the mount started.
    pub polls: u64,
    pub changes_applied: u64,
    pub invalidations: u64,
    /// Why the last poll failed, if it did.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Upload {
    pub path: String,
    pub size: u64,
    pub sent: u64,
    /// streaming (uploading while still written: `size` is what is written so far), waiting,
    /// uploading, retrying, blocked (needs the user: full drive, refused name).
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Download {
    pub path: String,
    pub size: u64,
    /// Bytes received from the drive for this file while it is open.
    #[serde(default)]
    pub received: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub endpoint: String,
    pub calls: u64,
    pub limiter_waits: u64,
    pub limiter_wait_ms: u64,
    pub throttled: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncResult {
    /// Files whose upload failed and will not succeed without the user.
    pub failed: Vec<FileError>,
    /// Files still uploading when the timeout ran out.
    pub pending: Vec<String>,
    /// Files still open for writing: not closed before the call, so not waited for.
    pub open: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileError {
    pub path: String,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line() {
        let r = Request::Sync {
            paths: vec!["a b/c".into()],
            timeout_secs: Some(1.5),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"status"}"#).unwrap(),
            Request::Status
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_drive"}"#).is_err());
        let set = Request::Set {
            key: "bwlimit-download".into(),
            value: "10M".into(),
        };
        let line = serde_json::to_string(&set).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), set);
    }
}
