//! How the adapter answers: each operation in its span, guarded against panics, its error
//! turned into an errno and logged once at the error's level.

use std::panic::AssertUnwindSafe;

use fuser::{
    ReplyAttr, ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use futures_util::FutureExt;
use tracing::{debug, warn, Instrument};

use super::FuseAdapter;
use crate::error::Error;
use crate::fs::core::FsCore;
use crate::metrics;

/// Runs an operation answered synchronously (on the FUSE thread or the blocking pool). The
/// closure owns the reply: if it panics before replying, unwinding drops the reply and fuser's
/// `Drop` answers EIO; if it panics after replying, nothing more is sent. So the kernel gets
/// exactly one answer whatever panicked, and the thread lives on.
pub(super) fn guarded(op: &'static str, work: impl FnOnce()) {
    let run = AssertUnwindSafe(|| {
        crate::fault::panic_point(op);
        work()
    });
    if std::panic::catch_unwind(run).is_err() {
        metrics::fuse_op(op, libc::EIO);
        tracing::error!(op, "fs op panicked: answered EIO, the mount goes on");
    }
}

/// The errno of a failed operation, logged and counted (metrics) once: quietly for the
/// expected ones.
pub(super) fn errno(op: &'static str, err: &Error) -> fuser::Errno {
    let code = err.errno();
    metrics::fuse_op(op, code);
    let layer = err.layer();
    match (err.level(), err.hint()) {
        // Expected answers (and what the drive cannot store, e.g. git's chmod probe): quiet.
        (tracing::Level::DEBUG, _) => debug!(op, ?layer, error = %err, "fs op refused"),
        (_, Some(hint)) => warn!(op, ?layer, error = %err, "{hint}"),
        _ => warn!(op, ?layer, error = %err, "fs op failed"),
    }
    fuser::Errno::from_i32(code)
}

/// The span every FUSE operation runs in: its kind, inode and the kernel's request id.
pub(super) fn op_span(op: &'static str, req: &Request, ino: u64) -> tracing::Span {
    tracing::debug_span!("fuse", op, ino, req = req.unique().0)
}

/// A synchronous operation's result, answered on the FUSE thread: counted, and its errno.
pub(super) fn done<T>(
    op: &'static str,
    result: crate::error::Result<T>,
) -> Result<T, fuser::Errno> {
    match result {
        Ok(v) => {
            metrics::fuse_op(op, 0);
            Ok(v)
        }
        Err(e) => Err(errno(op, &e)),
    }
}

/// Replies that can carry an errno, so one helper can answer every kind of request.
pub(super) trait ErrorReply: Send + 'static {
    fn fail(self, errno: fuser::Errno);
}

macro_rules! error_reply {
    ($($reply:ty),*) => {
        $(impl ErrorReply for $reply {
            fn fail(self, errno: fuser::Errno) {
                self.error(errno)
            }
        })*
    };
}
error_reply!(
    ReplyEntry,
    ReplyAttr,
    ReplyEmpty,
    ReplyOpen,
    ReplyData,
    ReplyStatfs,
    ReplyCreate
);

impl FuseAdapter {
    /// Run a core operation that blocks on the disk (fsync) on tokio's blocking pool.
    pub(super) fn blocking(
        &self,
        op: &'static str,
        span: tracing::Span,
        reply: ReplyEmpty,
        work: impl FnOnce(&FsCore) -> crate::error::Result<()> + Send + 'static,
    ) {
        let core = self.core.clone();
        self.rt.spawn_blocking(move || {
            span.in_scope(|| {
                guarded(op, move || match done(op, work(&core)) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e),
                })
            })
        });
    }

    /// Run a core operation on tokio (never on the FUSE thread), in the operation's span, and
    /// answer with `ok`, or with the errno of its error; either is counted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn<R: ErrorReply, T: Send + 'static>(
        &self,
        op: &'static str,
        req: &Request,
        ino: u64,
        reply: R,
        work: impl std::future::Future<Output = crate::error::Result<T>> + Send + 'static,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) {
        let span = op_span(op, req, ino);
        self.rt.spawn(
            async move {
                // A panic fails this operation with EIO (the hook logged it with its
                // backtrace); the mount goes on.
                let work = async move {
                    crate::fault::panic_point(op);
                    work.await
                };
                match AssertUnwindSafe(work).catch_unwind().await {
                    Ok(Ok(value)) => {
                        metrics::fuse_op(op, 0);
                        ok(reply, value)
                    }
                    Ok(Err(e)) => reply.fail(errno(op, &e)),
                    Err(_) => {
                        metrics::fuse_op(op, libc::EIO);
                        tracing::error!(op, "fs op panicked: answered EIO, the mount goes on");
                        reply.fail(fuser::Errno::from_i32(libc::EIO))
                    }
                }
            }
            .instrument(span),
        );
    }
}
