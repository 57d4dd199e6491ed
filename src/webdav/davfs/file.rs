//! An open file over WebDAV: a core handle with a position (`CoreFile`), and how a GET or a
//! PUT opens one. A plain PUT writes under a temporary name and is renamed over its target
//! once complete. Separate from `davfs`, which maps the path operations of dav-server's
//! filesystem trait onto the core.

use std::fmt;
use std::io::SeekFrom;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture, FsResult, OpenOptions};
use futures_util::FutureExt;
use tracing::{debug, warn};

use super::{dav_error, CoreFs};
use crate::drive::ItemKind;
use crate::fs::FsCore;

impl CoreFs {
    pub(super) async fn open_file(
        &self,
        path: &DavPath,
        options: OpenOptions,
    ) -> FsResult<Box<dyn DavFile>> {
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
