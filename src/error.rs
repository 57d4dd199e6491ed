//! The one error type of alipanfs, and the one place where it becomes an errno.
//!
//! Every layer (api client, drive, read and write paths, fs core) returns `Error`; the FUSE adapter
//! replies with `err.errno()` and logs `err` once. Messages never carry tokens, secrets or signed
//! URL query strings (see `crate::redact`).

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
    /// An error shared by several waiters (e.g. of one single-flight listing), kept as its errno
    /// and message.
    #[error("{message}")]
    Shared { errno: i32, message: String },
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
            Error::Shared { errno, .. } => *errno,
            _ => libc::EIO,
        }
    }

    /// Worth retrying later with backoff (network trouble, 5xx, throttling): used by the
    /// background upload queue and the read path.
    pub fn is_transient(&self) -> bool {
        match self {
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
            Err(shared) => Error::Shared {
                errno: shared.errno(),
                message: shared.to_string(),
            },
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
