//! Request arguments and reply values of the FUSE adapter: names, times, timeouts, open flags.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use fuser::{FopenFlags, TimeOrNow};
use tracing::debug;

use crate::metrics;

pub(super) fn name_str<'a>(name: &'a OsStr, op: &'static str) -> Result<&'a str, fuser::Errno> {
    name.to_str().ok_or_else(|| {
        debug!(op, ?name, "name is not UTF-8");
        metrics::fuse_op(op, libc::EINVAL);
        fuser::Errno::from_i32(libc::EINVAL)
    })
}

pub(super) fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// The timeout of an entry or attributes: `--attr-timeout`, or the rest of the listing's
/// freshness when they come from a fresh listing (`FsCore::fresh_for`), whichever is longer.
/// `--attr-timeout 0` keeps its meaning: the kernel caches nothing.
pub(super) fn timeout(ttl: Duration, fresh: Option<Duration>) -> Duration {
    match fresh {
        Some(f) if !ttl.is_zero() => f.max(ttl),
        _ => ttl,
    }
}

/// Read-only handles bypass the kernel page cache (direct I/O) when the kernel lets direct-I/O
/// files be mmapped (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6+): the read path keeps its own
/// read-ahead, and filling page-cache pages was the costliest copy of a sequential read (the
/// kernel drops a FUSE file's cache at every open anyway). On older kernels a direct-I/O file
/// refuses shared mmaps, so there every handle keeps the cached path.
pub(super) fn open_flags(write: bool, direct_io_reads: bool) -> FopenFlags {
    if write || !direct_io_reads {
        FopenFlags::empty()
    } else {
        FopenFlags::FOPEN_DIRECT_IO
    }
}
