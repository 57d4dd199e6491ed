//! The FUSE adapter: translates fuser callbacks into `FsCore` calls run on tokio, and replies
//! from the task. No logic of its own, and no callback blocks on the network. Errors become errno
//! here, through `Error::errno`, with one log line each, at the error's level.
//!
//! Panics: every operation runs guarded. Async ones catch the panic in their task
//! (`FuseAdapter::spawn`); the ones answered on the FUSE thread or on tokio's blocking pool
//! (`write`, `release`, `readdir`, `readdirplus`, `releasedir`, flush/fsync) run inside
//! [`guarded`]. Either way the operation fails with EIO and the mount goes on (on macOS there is
//! one FUSE thread: an unguarded panic would end the mount). The panic hook
//! (`crate::logging`) logs the message and backtrace once.
//!
//! Submodules: `answer` (guard, errno and log, spawn/blocking), `attr` (attributes as the
//! kernel wants them), `dirs` (readdir/readdirplus answers).

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, warn};

use crate::fs::core::FsCore;
use crate::fs::lock;
use crate::fs::passthrough::Backings;
use crate::metrics;

mod answer;
mod args;
mod attr;
mod dirs;
mod forgets;

use answer::{done, guarded, op_span};
use args::{name_str, open_flags, time_of, timeout};
use attr::{file_attr, file_type, BLOCK_SIZE};

pub struct FuseAdapter {
    core: Arc<FsCore>,
    rt: tokio::runtime::Handle,
    /// How long the kernel may cache attributes and entries.
    ttl: Duration,
    max_readahead: u32,
    /// Read-only opens use direct I/O (decided at init from the kernel's capabilities).
    direct_io_reads: bool,
    /// Read-only opens of fully cached files use kernel passthrough (wanted at mount, then
    /// confirmed by the init negotiation).
    passthrough: bool,
    backings: Arc<std::sync::Mutex<Backings>>,
    forgets: Arc<forgets::Forgets>,
}

impl FuseAdapter {
    pub fn new(
        core: Arc<FsCore>,
        rt: tokio::runtime::Handle,
        ttl: Duration,
        max_readahead: u32,
        passthrough: bool,
    ) -> Self {
        crate::logging::install_panic_hook();
        FuseAdapter {
            core,
            rt,
            ttl,
            max_readahead,
            direct_io_reads: false,
            passthrough,
            backings: Arc::default(),
            forgets: Arc::default(),
        }
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(self.max_readahead);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        // O_TRUNC arrives with open instead of as a later setattr(size 0): otherwise opening an
        // existing file to overwrite it would first fetch its old content into the staging file,
        // only to truncate it away (and the new version could not upload while written).
        if config
            .add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC)
            .is_err()
        {
            tracing::debug!(
                "kernel without atomic O_TRUNC: overwrites fetch the old content first"
            );
        }
        self.direct_io_reads = config
            .add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok();
        // `ls -l`: names and attributes in one READDIRPLUS answered from the listing, not a
        // LOOKUP per entry (always, not the kernel's adaptive choice).
        if config
            .add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS)
            .is_err()
        {
            tracing::debug!("kernel without readdirplus: ls -l looks each entry up");
        }
        if self.passthrough {
            let negotiated = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
                // Backing files may sit on a stacked filesystem (overlayfs) themselves.
                && config.set_max_stack_depth(2).is_ok();
            if !negotiated {
                tracing::info!("the kernel did not agree to passthrough: cached files are read through the daemon");
            }
            self.passthrough = negotiated;
        }
        tracing::debug!(
            direct_io_reads = self.direct_io_reads,
            passthrough = self.passthrough,
            "kernel FUSE capabilities"
        );
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name, "lookup") {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let (core, ttl) = (self.core.clone(), self.ttl);
        self.spawn(
            "lookup",
            req,
            parent.0,
            reply,
            async move {
                let attr = core.lookup(parent.0, &name).await?;
                Ok((attr, core.fresh_for(attr.ino).await))
            },
            move |reply, (attr, fresh)| {
                reply.entry(&timeout(ttl, fresh), &file_attr(&attr), Generation(0))
            },
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.forgets.push(&self.core, &self.rt, ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let (core, ttl) = (self.core.clone(), self.ttl);
        self.spawn(
            "getattr",
            req,
            ino.0,
            reply,
            async move {
                let attr = core.getattr(ino.0).await?;
                Ok((attr, core.fresh_for(ino.0).await))
            },
            move |reply, (attr, fresh)| reply.attr(&timeout(ttl, fresh), &file_attr(&attr)),
        );
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (core, ttl) = (self.core.clone(), self.ttl);
        self.spawn(
            "setattr",
            req,
            ino.0,
            reply,
            async move {
                core.setattr(ino.0, size, mtime.map(time_of), mode, uid, gid)
                    .await
            },
            move |reply, attr| reply.attr(&ttl, &file_attr(&attr)),
        );
    }

    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        debug!("mknod refused: the drive stores only files and folders");
        reply.error(fuser::Errno::from_i32(libc::EPERM));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_str(name, "mkdir") {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let (core, ttl) = (self.core.clone(), self.ttl);
        self.spawn(
            "mkdir",
            req,
            parent.0,
            reply,
            async move { core.mkdir(parent.0, &name, mode & !umask).await },
            move |reply, attr| reply.entry(&ttl, &file_attr(&attr), Generation(0)),
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name, "unlink") {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let work = async move { core.unlink(parent.0, &name).await };
        self.spawn("unlink", req, parent.0, reply, work, |reply, ()| reply.ok());
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name, "rmdir") {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let work = async move { core.rmdir(parent.0, &name).await };
        self.spawn("rmdir", req, parent.0, reply, work, |reply, ()| reply.ok());
    }

    fn symlink(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _t: &std::path::Path,
        reply: ReplyEntry,
    ) {
        debug!("symlink refused: the drive has no symbolic links");
        reply.error(fuser::Errno::from_i32(libc::EPERM));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_str(name, "rename"), name_str(newname, "rename")) {
            (Ok(a), Ok(b)) => (a.to_string(), b.to_string()),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let flags = crate::platform::rename_flags(flags.bits());
        if flags.exchange {
            return reply.error(fuser::Errno::from_i32(libc::EINVAL));
        }
        let no_replace = flags.no_replace;
        let core = self.core.clone();
        let work = async move {
            core.rename(parent.0, &name, newparent.0, &newname, no_replace)
                .await
        };
        self.spawn("rename", req, parent.0, reply, work, |reply, ()| reply.ok());
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        debug!("link refused: the drive has no hard links");
        reply.error(fuser::Errno::from_i32(libc::EPERM));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let (core, direct_io_reads) = (self.core.clone(), self.direct_io_reads);
        let passthrough = self.passthrough && !write && !truncate;
        let backings = self.backings.clone();
        if write && lock(&backings).live(ino.0).is_some() {
            // The kernel refuses a non-passthrough open of an inode read through passthrough.
            warn!(
                ino = ino.0,
                "open for writing refused (EBUSY): the file is open for passthrough reading"
            );
            metrics::fuse_op("open", libc::EBUSY);
            return reply.error(fuser::Errno::from_i32(libc::EBUSY));
        }
        self.spawn(
            "open",
            req,
            ino.0,
            reply,
            async move {
                let (fh, backing) = core.open_with(ino.0, write, truncate, passthrough).await?;
                Ok((fh, backing, core.forces_direct_io(fh)))
            },
            move |reply, (fh, backing, forced)| {
                let mut backings = lock(&backings);
                let Some(b) = backing else {
                    return reply
                        .opened(FileHandle(fh), open_flags(write, direct_io_reads || forced));
                };
                match backings.get_or_open(ino.0, &b.key, || reply.open_backing(&b.file)) {
                    Ok(id) => {
                        metrics::passthrough_open();
                        debug!(ino = ino.0, fh, "passthrough open");
                        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                        backings.hold(fh, id);
                    }
                    Err(e) => {
                        debug!(ino = ino.0, error = %e, "no passthrough: read through the daemon");
                        reply.opened(FileHandle(fh), open_flags(write, direct_io_reads || forced));
                    }
                }
            },
        );
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let core = self.core.clone();
        self.spawn(
            "read",
            req,
            ino.0,
            reply,
            async move { core.read(fh.0, offset, size).await },
            move |reply, data| reply.data(&data),
        );
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Local disk only: answered on the FUSE thread, no network involved.
        let _span = op_span("write", req, ino.0).entered();
        guarded("write", || {
            match done("write", self.core.write(fh.0, offset, data)) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        })
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() waits for this: the written content is made durable and journaled here.
        self.blocking("flush", op_span("flush", req, ino.0), reply, move |core| {
            core.flush(fh.0)
        });
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _span = op_span("release", req, ino.0).entered();
        guarded("release", || {
            lock(&self.backings).release(fh.0, ino.0);
            match done("release", self.core.release(fh.0)) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        })
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.blocking("fsync", op_span("fsync", req, ino.0), reply, move |core| {
            core.flush(fh.0)
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let core = self.core.clone();
        self.spawn(
            "opendir",
            req,
            ino.0,
            reply,
            async move { core.opendir(ino.0).await },
            move |reply, fh| reply.opened(FileHandle(fh), FopenFlags::empty()),
        );
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let _span = op_span("readdir", req, ino.0).entered();
        guarded("readdir", || self.readdir_reply(fh, offset, reply))
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let _span = op_span("readdirplus", req, ino.0).entered();
        guarded("readdirplus", || self.readdirplus_reply(fh, offset, reply))
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _span = op_span("releasedir", req, ino.0).entered();
        guarded("releasedir", || {
            self.core.releasedir(fh.0);
            metrics::fuse_op("releasedir", 0);
            reply.ok();
        })
    }
    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let core = self.core.clone();
        self.spawn(
            "statfs",
            req,
            ino.0,
            reply,
            async move { core.statfs().await },
            move |reply, space| {
                let bs = BLOCK_SIZE as u64;
                let blocks = space.total_bytes / bs;
                let free = space.total_bytes.saturating_sub(space.used_bytes) / bs;
                reply.statfs(blocks, free, free, 0, 0, BLOCK_SIZE, 1024, BLOCK_SIZE);
            },
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _n: &OsStr,
        _v: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::from_i32(libc::ENOTSUP));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(fuser::Errno::from_i32(libc::ENOTSUP));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(fuser::Errno::from_i32(libc::ENOTSUP));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name, "create") {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let (core, ttl) = (self.core.clone(), self.ttl);
        let work = async move { core.create(parent.0, &name, mode & !umask).await };
        self.spawn(
            "create",
            req,
            parent.0,
            reply,
            work,
            move |reply, (attr, fh)| {
                let flags = FopenFlags::empty();
                reply.created(
                    &ttl,
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    flags,
                )
            },
        );
    }
}
