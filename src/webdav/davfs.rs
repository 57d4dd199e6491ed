//! dav-server's filesystem trait over the fs core, by path: the glue, not the protocol.
//!
//! A file opened here is a core handle like a FUSE one: reads go through the same reader
//! (read-ahead, data cache, download slots), a PUT writes a staging file that uploads when the
//! handle is released, exactly as a close through the mount does. The open file is in `file`.

mod file;

use std::sync::Arc;
use std::time::SystemTime;

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult,
    FsStream, OpenOptions, ReadDirMeta,
};
use futures_util::FutureExt;
use http::StatusCode;
use tracing::warn;

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
