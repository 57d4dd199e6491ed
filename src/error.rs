//! The one error type of alipanfs, and the one place where it becomes an errno, a log level
//! and a layer.
//!
//! # Shape
//!
//! Every layer (api client, drive, read and write paths, fs core) returns [`Error`], an enum of
//! what went wrong. Like mountpoint-s3's `fs::Error` (errno + message + source + level), each
//! error answers, from one mapping each, here:
//! - [`Error::errno`]: what the FUSE adapter replies with;
//! - [`Error::level`]: the level the adapter logs it at, once (expected answers such as ENOENT
//!   at debug, trouble at warn);
//! - [`Error::layer`]: where it arose ([`Layer::Api`] for what the drive said or the network did,
//!   [`Layer::Local`] for the local disk, [`Layer::Fs`] for what the filesystem refuses itself);
//! - [`Error::is_transient`]: worth retrying;
//! - `std::error::Error::source`: the underlying error where there is one (`Io` keeps its
//!   `std::io::Error`, `Shared` its original).
//!
//! Sharing: single-flight work (moka) hands every waiter an `Arc<Error>`; [`Error::unshare`]
//! keeps the original inside [`Error::Shared`], so errno, level, layer and `is_transient` of a
//! shared error are the original's. [`Error::root`] sees through it for matching.
//!
//! Disk full has two causes told apart everywhere: [`Error::QuotaExhausted`] (the drive's quota,
//! layer `Api`) and a local `ENOSPC` (`Io`, layer `Local`: the cache/staging disk). Both reply
//! ENOSPC; [`Error::hint`] says which space to free.
//!
//! Messages never carry tokens, secrets or signed URL query strings (see `crate::redact`).

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The remote item does not exist (`NotFound.FileId`, `NotFound.File`, a vanished inode).
    #[error("not found: {0}")]
    NotFound(String),
    /// A name clash (`AlreadyExist.File`, `exist:true` under `refuse`, EEXIST locally).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The drive is full (`QuotaExhausted.Drive`).
    #[error("drive quota exhausted: {0}")]
    QuotaExhausted(String),
    /// Operation on an item in the recycle bin (`ForbiddenFileInTheRecycleBin`).
    #[error("item is in the recycle bin: {0}")]
    InRecycleBin(String),
    /// Access token expired or invalid after the one allowed refresh-and-replay.
    #[error("not authorised: {0}")]
    Unauthorized(String),
    /// The refresh token was refused by the token endpoint: the user must sign in again.
    #[error("sign-in failed: {0}")]
    SignIn(String),
    /// The drive refused the operation for this app/user (`PermissionDenied`, `UserNotAllowedAccessDrive`, `ForbiddenDriveNotValid`).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// 429 `TooManyRequests` still seen after the retry budget was spent.
    #[error("rate limited by the drive (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// Rapid-upload pre-hash probe matched (`PreHashMatched`): compute content_hash + proof_code and create again.
    #[error("pre-hash matched")]
    PreHashMatched,
    /// A signed download/upload URL is past `x-oss-expires` (403 `AccessDenied` "Request has expired.").
    #[error("signed URL expired")]
    UrlExpired,
    /// Per-user concurrent download cap hit (403 `RequestDeniedByCallback` ... `ExceedMaxConcurrency`).
    #[error("too many concurrent downloads for this user")]
    ExceedMaxConcurrency,
    /// Upload part already stored (409 `PartAlreadyExist`).
    #[error("upload part already exists")]
    PartAlreadyExist,
    /// Upload part sent out of order (400 `PartNotSequential`).
    #[error("upload part not sequential")]
    PartNotSequential,
    /// Upload session gone (`NoSuchUpload`, `NotFound.UploadId`).
    #[error("upload session not found: {0}")]
    NoSuchUpload(String),
    /// Any other API error, with its code and HTTP status as the server gave them.
    #[error("drive API error {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server answered something we cannot use (bad JSON, wrong Content-Range, ...).
    #[error("unexpected response: {0}")]
    BadResponse(String),
    /// Connection refused/reset, DNS, TLS, timeouts: after retries.
    #[error("network error: {0}")]
    Network(String),
    /// Local I/O (staging files, token store, cache dir).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The token store file is unreadable or corrupt.
    #[error("token store {path}: {message}")]
    TokenStore { path: String, message: String },
    /// Bad configuration or command-line input.
    #[error("{0}")]
    Config(String),
    /// What the drive cannot represent (symlinks, hard links, device files, chmod, xattrs).
    #[error("not supported by the drive: {0}")]
    NotSupported(String),
    /// Refused because the mount is read-only.
    #[error("read-only mount")]
    ReadOnly,
    /// A name the drive cannot store (empty, contains '/', longer than 1024 bytes, ...).
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// A move between two drives of one mount (`--drive all`): the drive cannot, so EXDEV
    /// and `mv` copies instead.
    #[error("cross-drive move: {0}")]
    CrossDevice(String),
    /// A folder that must be empty is not.
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    /// Expected a folder, got a file.
    #[error("not a directory: {0}")]
    NotADirectory(String),
    /// Expected a file, got a folder.
    #[error("is a directory: {0}")]
    IsADirectory(String),
    /// The operation was cancelled or timed out locally.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// An error shared by several waiters (e.g. of one single-flight listing): the original,
    /// whose errno, level, layer and transience it keeps.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

/// Where an error arose (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The drive's answer, or the network on the way to it.
    Api,
    /// The local disk: staging files, the data cache, the token store.
    Local,
    /// The filesystem itself: names, kinds and operations it refuses.
    Fs,
}

impl Error {
    /// The errno the FUSE adapter replies with. The one mapping of the project.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound(_) | Error::InRecycleBin(_) => libc::ENOENT,
            Error::AlreadyExists(_) => libc::EEXIST,
            Error::QuotaExhausted(_) => libc::ENOSPC,
            Error::Unauthorized(_) | Error::SignIn(_) | Error::PermissionDenied(_) => libc::EACCES,
            Error::NotSupported(_) => libc::ENOTSUP,
            Error::ReadOnly => libc::EROFS,
            Error::InvalidName(name) if name.len() > 1024 => libc::ENAMETOOLONG,
            Error::InvalidName(_) => libc::EINVAL,
            Error::NotEmpty(_) => libc::ENOTEMPTY,
            Error::CrossDevice(_) => libc::EXDEV,
            Error::NotADirectory(_) => libc::ENOTDIR,
            Error::IsADirectory(_) => libc::EISDIR,
            Error::TimedOut(_) => libc::ETIMEDOUT,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::Config(_) => libc::EINVAL,
            Error::Shared(inner) => inner.errno(),
            _ => libc::EIO,
        }
    }

    /// The error itself, seen through any sharing: match on this, not on `self`.
    pub fn root(&self) -> &Error {
        match self {
            Error::Shared(inner) => inner.root(),
            other => other,
        }
    }

    /// Where the error arose.
    pub fn layer(&self) -> Layer {
        match self.root() {
            Error::Io(_) | Error::TokenStore { .. } => Layer::Local,
            Error::Config(_)
            | Error::NotSupported(_)
            | Error::ReadOnly
            | Error::InvalidName(_)
            | Error::CrossDevice(_)
            | Error::NotEmpty(_)
            | Error::NotADirectory(_)
            | Error::IsADirectory(_)
            | Error::TimedOut(_) => Layer::Fs,
            _ => Layer::Api,
        }
    }

    /// A local disk out of space (ENOSPC or EDQUOT from the staging or cache disk): not the
    /// drive's quota.
    pub fn is_local_disk_full(&self) -> bool {
        matches!(self.root(), Error::Io(e)
            if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }

    /// The level the FUSE adapter logs a failed operation at: the answers a filesystem gives
    /// every day (no such file, exists, not empty, not supported, read-only) at debug, trouble
    /// at warn.
    pub fn level(&self) -> tracing::Level {
        match self.errno() {
            libc::ENOENT
            | libc::EEXIST
            | libc::ENOTEMPTY
            | libc::ENOTSUP
            | libc::EPERM
            | libc::EROFS
            // `mv` between two drives copies instead.
            | libc::EXDEV => tracing::Level::DEBUG,
            _ => tracing::Level::WARN,
        }
    }

    /// What the user can do about it, where there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        if self.is_local_disk_full() {
            Some("local disk is full (cache/staging folder): free space there; writing resumes by itself")
        } else if matches!(self.root(), Error::QuotaExhausted(_)) {
            Some("drive is full (quota exhausted): free space on the drive")
        } else {
            None
        }
    }

    /// Worth retrying later with backoff (network trouble, 5xx, throttling): used by the
    /// background upload queue and the read path.
    pub fn is_transient(&self) -> bool {
        match self.root() {
            Error::Network(_) | Error::RateLimited { .. } | Error::TimedOut(_) => true,
            Error::ExceedMaxConcurrency | Error::UrlExpired => true,
            Error::Api { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    /// An owned copy of an error several callers share (moka's single-flight hands out `Arc<Error>`).
    pub fn unshare(shared: std::sync::Arc<Error>) -> Error {
        match std::sync::Arc::try_unwrap(shared) {
            Ok(e) => e,
            Err(shared) => Error::Shared(shared),
        }
    }

    pub fn api(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Api {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(io) => io,
            other => std::io::Error::from_raw_os_error(other.errno()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_shared_error_keeps_errno_transience_layer_and_source() {
        let original = Arc::new(Error::Network("connection reset".into()));
        let _other_waiter = original.clone();
        let shared = Error::unshare(original);
        assert!(matches!(shared, Error::Shared(_)));
        assert!(shared.is_transient());
        assert_eq!(shared.errno(), libc::EIO);
        assert_eq!(shared.layer(), Layer::Api);
        assert_eq!(shared.to_string(), "network error: connection reset");

        let io = Arc::new(Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)));
        let _other_waiter = io.clone();
        let shared = Error::unshare(io);
        assert!(shared.is_local_disk_full());
        assert_eq!(shared.errno(), libc::ENOSPC);
        assert!(std::error::Error::source(&shared).is_some());
    }

    #[test]
    fn local_disk_full_and_drive_quota_are_told_apart() {
        let local = Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        let quota = Error::QuotaExhausted("drive full".into());
        assert_eq!(local.errno(), libc::ENOSPC);
        assert_eq!(quota.errno(), libc::ENOSPC);
        assert_eq!(local.layer(), Layer::Local);
        assert_eq!(quota.layer(), Layer::Api);
        assert!(local.hint().unwrap().contains("local disk is full"));
        assert!(quota.hint().unwrap().contains("quota"));
        assert!(!quota.is_local_disk_full());
    }

    #[test]
    fn everyday_answers_log_at_debug_and_trouble_at_warn() {
        assert_eq!(Error::NotFound("x".into()).level(), tracing::Level::DEBUG);
        assert_eq!(Error::Network("x".into()).level(), tracing::Level::WARN);
        let full = Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.level(), tracing::Level::WARN);
    }
}
