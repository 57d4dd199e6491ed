//! dav-server's filesystem trait over the fs core, by path: the glue, not the protocol.
//!
//! A file opened here is a core handle like a FUSE one: reads go through the same reader
//! (read-ahead, data cache, download slots), a PUT writes a staging file that uploads when the
//! handle is released, exactly as a close through the mount does.

use std::fmt;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult,
    FsStream, OpenOptions, ReadDirMeta,
};
use futures_util::FutureExt;
use http::StatusCode;
use tracing::{debug, warn};

use crate::drive::ItemKind;
use crate::error::Error;
use crate::fs::core::Applied;
use crate::fs::{Attr, FsCore};

use super::props::DeadProps;

/// The drive, as dav-server sees it.
#[derive(Clone)]
pub struct CoreFs {
    core: Arc<FsCore>,
    props: Arc<DeadProps>,
    kernel: Option<KernelHook>,
}

/// Tells a mount's kernel that names and nodes changed (`mount --webdav-listen`), so the
/// mount shows a change made over WebDAV at once, not after its attribute timeout.
pub type KernelHook = Arc<
    dyn Fn(Applied) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

impl CoreFs {
    pub fn new(core: Arc<FsCore>, kernel: Option<KernelHook>) -> CoreFs {
        CoreFs {
            core,
            props: Arc::new(DeadProps::default()),
            kernel,
        }
    }

    /// After a change: the kernel forgets what it cached of these names and nodes (and of
    /// the folders holding the names) before the client hears back.
    async fn changed(&self, names: &[(u64, &str)], nodes: &[u64]) {
        let Some(kernel) = &self.kernel else {
            return;
        };
        let mut applied = Applied::default();
        for (dir, name) in names {
            applied.entries.insert((*dir, name.to_string()));
            applied.folders.insert(*dir);
        }
        applied.inodes.extend(nodes.iter().copied());
        kernel(applied).await;
    }
}

/// How a core error reads as a WebDAV status.
pub(super) fn dav_error(e: Error) -> FsError {
    match e.errno() {
        libc::ENOENT => FsError::NotFound,
        libc::EEXIST => FsError::Exists,
        libc::ENOSPC | libc::EDQUOT => FsError::InsufficientStorage,
        libc::ENAMETOOLONG => FsError::PathTooLong,
        libc::EROFS
        | libc::EACCES
        | libc::EPERM
        | libc::EINVAL
        | libc::ENOTDIR
        | libc::EISDIR
        | libc::ENOTEMPTY
        | libc::ENOTSUP => FsError::Forbidden,
        libc::EXDEV => FsError::IsRemote,
        _ => {
            warn!("WebDAV request failed: {e}");
            FsError::GeneralFailure
        }
    }
}

/// The names of a path, from the root (percent-decoded; a name that is not UTF-8 cannot be on
/// the drive).
fn components(path: &DavPath) -> FsResult<Vec<&str>> {
    path.as_bytes()
        .split(|&b| b == b'/')
        .filter(|seg| !seg.is_empty())
        .map(|seg| std::str::from_utf8(seg).map_err(|_| FsError::NotFound))
        .collect()
}

/// The key of a path in the dead-property store: no trailing slash.
fn prop_key(path: &DavPath) -> String {
    let bytes = String::from_utf8_lossy(path.as_bytes()).into_owned();
    let trimmed = bytes.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

impl CoreFs {
    async fn resolve(&self, path: &DavPath) -> FsResult<Attr> {
        let names = components(path)?;
        self.core.resolve(&names).await.map_err(dav_error)
    }

    /// The folder a path's last name goes in, and that name.
    async fn parent_and_name<'p>(&self, path: &'p DavPath) -> FsResult<(u64, &'p str)> {
        let mut names = components(path)?;
        let name = names.pop().ok_or(FsError::Forbidden)?;
        let parent = self
            .core
            .resolve(&names)
            .await
            .map_err(|e| match e.errno() {
                // RFC 4918: a PUT or MKCOL whose parent is missing answers 409.
                libc::ENOENT | libc::ENOTDIR => FsError::Forbidden,
                _ => dav_error(e),
            })?;
        if parent.kind != ItemKind::Folder {
            return Err(FsError::Forbidden);
        }
        Ok((parent.ino, name))
    }

    fn meta(&self, attr: Attr) -> Box<dyn DavMetaData> {
        Box::new(Meta {
            etag: self.core.etag(attr.ino),
            attr,
        })
    }

    async fn open_file(&self, path: &DavPath, options: OpenOptions) -> FsResult<Box<dyn DavFile>> {
        let existing = match self.resolve(path).await {
            Ok(attr) => Some(attr),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let writing = options.write || options.append || options.truncate;
        match &existing {
            Some(attr) if attr.kind == ItemKind::Folder => return Err(FsError::Forbidden),
            Some(_) if options.create_new => return Err(FsError::Exists),
            None if !(options.create || options.create_new) => return Err(FsError::NotFound),
            _ => {}
        }
        if writing && (options.truncate || existing.is_none()) {
            return self.open_replacement(path).await;
        }
        let attr = existing.ok_or(FsError::NotFound)?;
        let fh = self
            .core
            .open(attr.ino, writing, false)
            .await
            .map_err(dav_error)?;
        let pos = if options.append { attr.size } else { 0 };
        Ok(Box::new(CoreFile {
            core: self.core.clone(),
            ino: attr.ino,
            fh: Some(fh),
            pos,
            fs: self.clone(),
            replaces: None,
        }))
    }

    /// A whole new content for `path` (a plain PUT): written under a temporary name beside it
    /// and renamed over it once complete, so a PUT that breaks off leaves the old file as it
    /// was and a reader never sees half a file.
    async fn open_replacement(&self, path: &DavPath) -> FsResult<Box<dyn DavFile>> {
        let (parent, name) = self.parent_and_name(path).await?;
        crate::fs::names::validate(name).map_err(dav_error)?;
        let temporary = temporary_name(name);
        let (attr, fh) = self
            .core
            .create_by_path(parent, &temporary, 0o666)
            .await
            .map_err(dav_error)?;
        Ok(Box::new(CoreFile {
            core: self.core.clone(),
            ino: attr.ino,
            fh: Some(fh),
            pos: 0,
            fs: self.clone(),
            replaces: Some(Replacement {
                parent,
                temporary,
                name: name.to_string(),
            }),
        }))
    }
}

/// The hidden name a PUT writes under until it is complete.
fn temporary_name(name: &str) -> String {
    let tag: u32 = rand::random();
    // Within the drive's name limit whatever the final name's length.
    let mut keep = name.len().min(crate::fs::names::MAX_NAME_BYTES - 24);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}.davput-{tag:08x}", &name[..keep])
}

impl DavFileSystem for CoreFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        self.open_file(path, options).boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let dir = self.resolve(path).await?;
            if dir.kind != ItemKind::Folder {
                return Err(FsError::Forbidden);
            }
            let entries = self.core.list(dir.ino).await.map_err(dav_error)?;
            let entries: Vec<FsResult<Box<dyn DavDirEntry>>> = entries
                .into_iter()
                .map(|(name, attr)| {
                    Ok(Box::new(Entry {
                        name,
                        meta: self.meta(attr),
                    }) as Box<dyn DavDirEntry>)
                })
                .collect();
            Ok(Box::pin(futures_util::stream::iter(entries)) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move { Ok(self.meta(self.resolve(path).await?)) }.boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (parent, name) = self.parent_and_name(path).await?;
            self.core
                .mkdir_by_path(parent, name, 0o777)
                .await
                .map_err(dav_error)?;
            self.props.remove(&prop_key(path));
            self.changed(&[(parent, name)], &[]).await;
            Ok(())
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (parent, name) = self.parent_and_name(path).await?;
            self.core.rmdir(parent, name).await.map_err(dav_error)?;
            self.props.remove(&prop_key(path));
            self.changed(&[(parent, name)], &[]).await;
            Ok(())
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (parent, name) = self.parent_and_name(path).await?;
            self.core.unlink(parent, name).await.map_err(dav_error)?;
            self.props.remove(&prop_key(path));
            self.changed(&[(parent, name)], &[]).await;
            Ok(())
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (from_parent, from_name) = self.parent_and_name(from).await?;
            let (to_parent, to_name) = self.parent_and_name(to).await?;
            self.core
                .rename(from_parent, from_name, to_parent, to_name, false)
                .await
                .map_err(dav_error)?;
            self.props.rename(&prop_key(from), &prop_key(to));
            self.changed(&[(from_parent, from_name), (to_parent, to_name)], &[])
                .await;
            Ok(())
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let source = self.resolve(from).await?;
            let (to_parent, to_name) = self.parent_and_name(to).await?;
            self.core
                .copy_file(source.ino, to_parent, to_name)
                .await
                .map_err(dav_error)?;
            self.props.copy(&prop_key(from), &prop_key(to));
            self.changed(&[(to_parent, to_name)], &[]).await;
            Ok(())
        }
        .boxed()
    }

    fn set_modified<'a>(&'a self, path: &'a DavPath, tm: SystemTime) -> FsFuture<'a, ()> {
        async move {
            let attr = self.resolve(path).await?;
            self.core
                .setattr(attr.ino, None, Some(tm), None, None, None)
                .await
                .map_err(dav_error)?;
            self.changed(&[], &[attr.ino]).await;
            Ok(())
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(std::future::ready(true))
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            self.resolve(path).await?;
            if self.core.config().read_only {
                return Err(FsError::Forbidden);
            }
            let status = if self.props.patch(&prop_key(path), &patch) {
                StatusCode::OK
            } else {
                StatusCode::INSUFFICIENT_STORAGE
            };
            Ok(patch
                .into_iter()
                .map(|(_, p)| {
                    let name_only = DavProp { xml: None, ..p };
                    (status, name_only)
                })
                .collect())
        }
        .boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            self.resolve(path).await?;
            let mut props = self.props.list(&prop_key(path));
            if !do_content {
                props.iter_mut().for_each(|p| p.xml = None);
            }
            Ok(props)
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            self.resolve(path).await?;
            self.props
                .get(&prop_key(path), &prop)
                .and_then(|p| p.xml)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }

    fn get_quota(&self) -> FsFuture<'_, (u64, Option<u64>)> {
        async move {
            let space = self.core.statfs().await.map_err(dav_error)?;
            Ok((space.used_bytes, Some(space.total_bytes)))
        }
        .boxed()
    }
}

/// A node's attributes as dav-server reads them.
#[derive(Debug, Clone)]
struct Meta {
    attr: Attr,
    etag: Option<String>,
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.attr.size
    }
    fn modified(&self) -> FsResult<SystemTime> {
        Ok(self.attr.mtime)
    }
    fn is_dir(&self) -> bool {
        self.attr.kind == ItemKind::Folder
    }
    fn created(&self) -> FsResult<SystemTime> {
        Ok(self.attr.crtime)
    }
    fn status_changed(&self) -> FsResult<SystemTime> {
        Ok(self.attr.ctime)
    }
    fn etag(&self) -> Option<String> {
        match &self.etag {
            // A content hash names the bytes; the size is there for hashes shared by
            // synthetic files of different lengths.
            Some(tag) => Some(format!("{tag}-{:x}", self.attr.size)),
            None => {
                let t = self
                    .attr
                    .mtime
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                Some(format!("{:x}-{:x}", self.attr.size, t.as_micros()))
            }
        }
    }
}

struct Entry {
    name: String,
    meta: Box<dyn DavMetaData>,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta = self.meta.clone();
        async move { Ok(meta) }.boxed()
    }
}

/// An open core handle with a position.
struct CoreFile {
    core: Arc<FsCore>,
    ino: u64,
    /// None once released.
    fh: Option<u64>,
    pos: u64,
    fs: CoreFs,
    /// A PUT's new content, renamed over the target when complete.
    replaces: Option<Replacement>,
}

#[derive(Debug)]
struct Replacement {
    parent: u64,
    temporary: String,
    name: String,
}

impl fmt::Debug for CoreFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CoreFile(ino {}, fh {:?}, pos {})",
            self.ino, self.fh, self.pos
        )
    }
}

impl CoreFile {
    fn fh(&self) -> FsResult<u64> {
        self.fh.ok_or(FsError::GeneralFailure)
    }

    fn write_at_pos(&mut self, data: &[u8]) -> FsResult<()> {
        let fh = self.fh()?;
        let mut done = 0;
        while done < data.len() {
            let n = self
                .core
                .write(fh, self.pos, &data[done..])
                .map_err(dav_error)? as usize;
            done += n;
            self.pos += n as u64;
        }
        Ok(())
    }
}

impl DavFile for CoreFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let attr = self.core.getattr(self.ino).await.map_err(dav_error)?;
            Ok(self.fs.meta(attr))
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        async move {
            while buf.has_remaining() {
                let chunk = buf.chunk().to_vec();
                self.write_at_pos(&chunk)?;
                buf.advance(chunk.len());
            }
            Ok(())
        }
        .boxed()
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move { self.write_at_pos(&buf) }.boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            let fh = self.fh()?;
            let count = count.min(u32::MAX as usize) as u32;
            let bytes = self
                .core
                .read(fh, self.pos, count)
                .await
                .map_err(dav_error)?;
            self.pos += bytes.len() as u64;
            Ok(bytes)
        }
        .boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        async move {
            let size = || async { self.core.getattr(self.ino).await.map(|a| a.size) };
            let new = match pos {
                SeekFrom::Start(n) => Some(n),
                SeekFrom::End(d) => size().await.map_err(dav_error)?.checked_add_signed(d),
                SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            };
            self.pos = new.ok_or(FsError::GeneralFailure)?;
            Ok(self.pos)
        }
        .boxed()
    }

    /// The end of a PUT: the content is made durable and queued for upload (close's FLUSH and
    /// RELEASE), takes the target's name, and only then does the response go out.
    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            let Some(fh) = self.fh.take() else {
                return Ok(());
            };
            let core = self.core.clone();
            let closed =
                tokio::task::spawn_blocking(move || core.flush(fh).and_then(|()| core.release(fh)))
                    .await
                    .map_err(|_| FsError::GeneralFailure)?
                    .map_err(dav_error);
            let Some(put) = self.replaces.take() else {
                // Written in place (an append or a ranged PUT).
                self.fs.changed(&[], &[self.ino]).await;
                return closed;
            };
            let renamed = match closed {
                Ok(()) => self
                    .core
                    .rename(put.parent, &put.temporary, put.parent, &put.name, false)
                    .await
                    .map_err(dav_error),
                Err(e) => Err(e),
            };
            match renamed {
                Ok(()) => {
                    let names = [
                        (put.parent, put.name.as_str()),
                        (put.parent, put.temporary.as_str()),
                    ];
                    self.fs.changed(&names, &[]).await;
                    Ok(())
                }
                Err(e) => {
                    let _ = self.core.unlink(put.parent, &put.temporary).await;
                    Err(e)
                }
            }
        }
        .boxed()
    }
}

impl Drop for CoreFile {
    fn drop(&mut self) {
        let Some(fh) = self.fh.take() else {
            return;
        };
        // A GET's handle, or a PUT whose body broke off (its temporary file goes first, so
        // nothing of it uploads); released off the async threads, since a writer's release
        // journals and may sync.
        let core = self.core.clone();
        let put = self.replaces.take();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if let Some(put) = put {
                if let Err(e) = core.unlink(put.parent, &put.temporary).await {
                    warn!(name = %put.temporary, "could not remove an unfinished PUT's file: {e}");
                }
            }
            let released = tokio::task::spawn_blocking(move || core.release(fh)).await;
            if let Ok(Err(e)) = released {
                debug!(fh, "releasing a WebDAV handle: {e}");
            }
        });
    }
}
