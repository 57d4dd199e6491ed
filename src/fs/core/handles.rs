//! Open handles: open, read, write, fsync, release, and the preparation of local content.

use super::*;

impl FsCore {
    // ----- open, read, write, release ------------------------------------------------------

    pub(super) fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, handle);
        fh
    }

    pub(super) fn track_open(&self, ino: u64, delta: i32) {
        if let Some(node) = lock(&self.table).get_mut(ino) {
            node.open_handles = node.open_handles.saturating_add_signed(delta);
        }
    }

    /// Open a file. `write` for O_WRONLY/O_RDWR, `truncate` for O_TRUNC.
    pub async fn open(&self, ino: u64, write: bool, truncate: bool) -> Result<u64> {
        Ok(self.open_with(ino, write, truncate, false).await?.0)
    }

    /// `open`, and with `passthrough`, for a read-only open of a file whose every block is in
    /// the data cache: the cache file for the kernel to read directly. The handle pins that
    /// file (no eviction, no rewrite) until it is released.
    pub async fn open_with(
        &self,
        ino: u64,
        write: bool,
        truncate: bool,
        passthrough: bool,
    ) -> Result<(u64, Option<Backing>)> {
        let node = self.node(ino)?;
        let mut backing = None;
        if node.is_dir() {
            return Err(Error::IsADirectory(node.name));
        }
        let handle = if write || truncate {
            self.writable()?;
            self.refuse_synthetic(&node)?;
            let content = self.local_for_writing(ino, truncate).await?;
            Handle::Local {
                ino,
                content,
                writable: true,
            }
        } else if synthetic::is_synthetic(&node) {
            self.open_synthetic(&node).await?
        } else if let Some(content) = node.local.clone() {
            Handle::Local {
                ino,
                content,
                writable: false,
            }
        } else {
            let identity = node.identity.as_deref();
            let pin = match passthrough
                .then(|| self.reader.cached_file(&node.file_id, node.size, identity))
                .flatten()
            {
                Some((file, pin, key)) => {
                    backing = Some(Backing { file, key });
                    Some(pin)
                }
                None => None,
            };
            Handle::Remote {
                ino,
                reader: Arc::new(self.reader.open(&node.file_id, node.size, identity)),
                direct: false,
                _pin: pin,
            }
        };
        self.track_open(ino, 1);
        Ok((self.add_handle(handle), backing))
    }

    /// The handle must be read with direct I/O (its size may differ from what the kernel holds).
    pub fn forces_direct_io(&self, fh: u64) -> bool {
        matches!(
            lock(&self.handles).get(&fh),
            Some(Handle::Remote { direct: true, .. } | Handle::Memory { direct: true, .. })
        )
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        enum Source {
            Remote(Arc<ReadHandle>),
            Local(Arc<LocalContent>),
        }
        let source = match lock(&self.handles).get(&fh) {
            Some(Handle::Memory { bytes, .. }) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                return Ok(bytes.slice(start..end));
            }
            Some(Handle::Remote { reader, .. }) => Source::Remote(reader.clone()),
            Some(Handle::Local { content, .. }) => Source::Local(content.clone()),
            _ => return Err(Error::Io(std::io::Error::from_raw_os_error(libc::EBADF))),
        };
        match source {
            Source::Remote(reader) => reader.read(offset, size).await,
            Source::Local(content) => Ok(Bytes::from(content.read_at(offset, size as usize)?)),
        }
    }

    pub(super) fn writable_handle(&self, fh: u64) -> Result<(u64, Arc<LocalContent>)> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::Local {
                ino,
                content,
                writable: true,
            }) => Ok((*ino, content.clone())),
            _ => Err(Error::Io(std::io::Error::from_raw_os_error(libc::EBADF))),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let (ino, content) = self.writable_handle(fh)?;
        let end = offset + data.len() as u64;
        let size = lock(&self.table).get(ino).map_or(0, |n| n.size);
        // The new copy is uploaded beside the old one, so the whole new size must be free.
        let free = self.free_bytes.load(Ordering::Relaxed);
        if end > size && end > free {
            return Err(Error::QuotaExhausted(format!(
                "a file of {end} bytes does not fit in the drive's {free} free bytes"
            )));
        }
        content.write_at(offset, data)?;
        if let Some(node) = lock(&self.table).get_mut(ino) {
            node.size = node.size.max(end);
            node.mtime = SystemTime::now();
        }
        Ok(data.len() as u32)
    }

    /// FLUSH (sent at every close(), which waits for it) and fsync: a writer's content is made
    /// durable and journaled as closed, so it is uploaded even if the daemon dies before the
    /// kernel's RELEASE, which comes after close() has returned. Blocking disk I/O: the adapter
    /// runs it off the FUSE and tokio threads, and no lock of the fs is held meanwhile.
    pub fn flush(&self, fh: u64) -> Result<()> {
        let Ok((ino, content)) = self.writable_handle(fh) else {
            return Ok(());
        };
        if content.is_sealed() || !content.take_unflushed() {
            return Ok(());
        }
        self.journal(ino, &content, Closed::Now)
            .inspect_err(|_| content.mark_unflushed())
    }

    /// Where node `ino`'s content uploads to now; None once it is unlinked.
    pub(super) fn upload_target(&self, ino: u64) -> Option<UploadTarget> {
        let table = lock(&self.table);
        let node = table.get(ino).filter(|n| !n.is_detached())?;
        let parent = table.get(node.parent)?;
        Some(UploadTarget {
            parent_file_id: parent.file_id.clone(),
            name: node.remote_name.clone(),
            mtime: Some(node.mtime),
            replaces: if node.is_local_only() {
                // A first upload may have landed without its event applied yet: the new
                // version replaces that copy (else the drive would keep both under the name).
                self.uploads
                    .uploaded_file_id(ino)
                    .or_else(|| node.displaces.clone())
            } else {
                Some(node.file_id.clone())
            },
        })
    }

    /// Write the journal entry of node `ino`'s local content (see `write::staging`).
    pub(super) fn journal(&self, ino: u64, content: &LocalContent, closed: Closed) -> Result<()> {
        write_sidecar_of(&content.path, closed, || self.upload_target(ino))
    }

    /// Close a handle. The last writer of dirty content seals it and queues the upload; the
    /// file keeps showing the new content until the drive has it.
    pub fn release(&self, fh: u64) -> Result<()> {
        let Some(handle) = lock(&self.handles).remove(&fh) else {
            return Ok(());
        };
        match handle {
            Handle::Dir(..) => {}
            Handle::Remote { ino, .. } | Handle::Memory { ino, .. } => self.track_open(ino, -1),
            Handle::Local {
                ino,
                content,
                writable,
            } => {
                self.track_open(ino, -1);
                if writable {
                    self.writer_left(ino, &content)?;
                }
            }
        }
        Ok(())
    }

    /// A writer of `content` is done (its handle closed, or a truncate by path finished). The
    /// last one closes the content in the same step (no writer joins it after) and queues it.
    pub(super) fn writer_left(&self, ino: u64, content: &Arc<LocalContent>) -> Result<()> {
        if !content.leave() || content.is_sealed() {
            return Ok(());
        }
        if content.is_dirty() {
            if content.is_stale_base() {
                self.set_aside_stale(ino)?;
            }
            return self.submit_upload(ino, content);
        }
        // Opened for writing, never written: a copy of the drive's content that carries no
        // upload. Keep it for reads (through its descriptor) and off the journal; a later
        // writer copies it.
        content.seal();
        remove_staged(&content.path);
        Ok(())
    }

    pub(super) fn submit_upload(&self, ino: u64, content: &Arc<LocalContent>) -> Result<()> {
        // Durable first, with no lock held: the fdatasync of a big file must not hold up the
        // lookups and listings that take the upload gate. The FLUSH of close() made the entry
        // durable unless something was written since.
        if let Err(e) = self.journal(ino, content, self.closed_now(content)) {
            warn!(ino, path = %content.path.display(), "could not journal upload job (it will still run): {e}");
        }
        let superseded = {
            // Sealed and queued under the gate, so `control`'s snapshot and `listing_ticket`
            // see a file either still unsealed or already queued, never in between.
            let _gate = lock(&self.upload_gate);
            content.seal();
            let Some(target) = self.upload_target(ino) else {
                return Ok(()); // deleted while open: nothing to upload
            };
            info!(ino, name = %target.name, mtime = ?target.mtime, "queued upload");
            let stream = content.stream().cloned();
            if let (Some(stream), Ok(len)) = (&stream, content.len()) {
                // The stream sends the last part now, not when the queue gets to this job.
                stream.close(len);
            }
            self.uploads
                .enqueue(ino, target, content.path.clone(), stream, content.version())
        };
        if let Some(old) = superseded {
            remove_staged(&old);
        }
        // A rename or write between the entry above and the seal: the entry says so too.
        self.uploads
            .rejournal(&content.path, self.closed_now(content));
        Ok(())
    }

    /// How a closed version's entry is written: `Now` (data fsync) if written since its last
    /// FLUSH, else `Synced` (rewritten only if it would say something else).
    fn closed_now(&self, content: &LocalContent) -> Closed {
        if content.take_unflushed() {
            Closed::Now
        } else {
            Closed::Synced
        }
    }

    /// Local content a writer may change: the node's unsealed content, or a new staging file
    /// filled with the current content (copied from a sealed one, downloaded from the drive, or
    /// empty when truncating).
    pub(super) async fn local_for_writing(
        &self,
        ino: u64,
        truncate: bool,
    ) -> Result<Arc<LocalContent>> {
        // Per inode: opening one big file for read-modify-write never holds up another file.
        let _guard = self.prepare_locks.lock(ino).await;
        let node = self.node(ino)?;
        // Join the version being written, unless its last writer has left (then it is being
        // queued, or is: a new version starts from a copy of it).
        if let Some(content) = node.local.as_ref().filter(|c| c.try_join()) {
            if truncate {
                if let Err(e) = content.set_len(0) {
                    self.writer_left(ino, content)?;
                    return Err(e.into());
                }
                self.set_size(ino, 0);
            }
            return Ok(content.clone());
        }
        let staged = self.staging.create()?;
        let content = Arc::new(if truncate {
            let stream = self
                .stream_target(node.parent, &node.remote_name)
                .and_then(|t| self.uploads.follow(&staged.path, t));
            LocalContent::streamed(staged.path.clone(), staged.file, stream)
        } else {
            LocalContent::new(staged.path.clone(), staged.file)
        });
        if truncate {
            content.mark_dirty();
        } else if let Some(sealed) = node.local.as_ref() {
            let (src, dst) = (sealed.clone(), content.clone());
            tokio::task::spawn_blocking(move || src.copy_into(&dst_file(&dst)?))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        } else if node.size > 0 {
            self.download_into(&node, &content).await?;
        }
        let joined = content.try_join();
        debug_assert!(joined, "a new version takes its first writer");
        let folder_id = {
            let mut table = lock(&self.table);
            table.set_local(ino, Some(content.clone()));
            if truncate {
                if let Some(n) = table.get_mut(ino) {
                    n.size = 0;
                }
            }
            table.get(node.parent).map(|n| n.file_id.clone())
        };
        // Its upload will change the folder: the stored listing goes now that the file counts
        // as being written (so no new one is stored until it has landed).
        if let Some(id) = folder_id {
            self.drop_stored_listing(&id);
        }
        self.journal(ino, &content, Closed::NotYet)?;
        Ok(content)
    }

    /// Fetch a remote file's content into a staging file (read-modify-write of an existing file).
    pub(super) async fn download_into(&self, node: &Node, content: &LocalContent) -> Result<()> {
        let reader = self
            .reader
            .open(&node.file_id, node.size, node.identity.as_deref());
        let mut offset = 0u64;
        while offset < node.size {
            let chunk = reader.read(offset, 4 << 20).await?;
            if chunk.is_empty() {
                return Err(Error::BadResponse(format!(
                    "{} ended at {offset} of {}",
                    node.name, node.size
                )));
            }
            content.write_at(offset, &chunk)?;
            offset += chunk.len() as u64;
        }
        Ok(())
    }

    /// Where a file named `name` in folder `parent` uploads to, for uploading while writing.
    pub(super) fn stream_target(&self, parent: u64, name: &str) -> Option<StreamTarget> {
        let table = lock(&self.table);
        let folder = table.get(parent).filter(|_| parent != 0)?;
        Some(StreamTarget {
            parent_file_id: folder.file_id.clone(),
            name: name.to_string(),
        })
    }

    pub(super) fn set_size(&self, ino: u64, size: u64) {
        if let Some(n) = lock(&self.table).get_mut(ino) {
            n.size = size;
            n.mtime = SystemTime::now();
        }
    }

    /// Create and open a new file.
    pub async fn create(&self, parent: u64, name: &str, mode: u32) -> Result<(Attr, u64)> {
        self.writable()?;
        let _folder = self.lock_folders(parent, parent).await;
        self.refuse_synthetic_at(parent, name)?;
        names::validate(name)?;
        let listing = self.listing(parent).await?;
        if listing.get(name).is_some() {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let staged = self.staging.create()?;
        let stream = self
            .stream_target(parent, name)
            .and_then(|t| self.uploads.follow(&staged.path, t));
        let content = Arc::new(LocalContent::streamed(
            staged.path.clone(),
            staged.file,
            stream,
        ));
        content.mark_dirty();
        let joined = content.try_join();
        debug_assert!(joined, "a new file takes its first writer");
        let node = {
            let mut table = lock(&self.table);
            let ino = table.insert_local_file(parent, name, content.clone(), SystemTime::now());
            let node = table.get_mut(ino).expect("just inserted");
            node.lookups += 1;
            node.open_handles += 1;
            node.perms = self.perms_for_new(ItemKind::File, mode);
            node.clone()
        };
        listing.insert(name, node.ino);
        self.touch_dir(parent);
        if let Err(e) = self.journal(node.ino, &content, Closed::NotYet) {
            lock(&self.table).set_local(node.ino, None);
            self.forget_removed(parent, name, &node).await;
            return Err(e);
        }
        let fh = self.add_handle(Handle::Local {
            ino: node.ino,
            content,
            writable: true,
        });
        Ok((self.attr_of(&node), fh))
    }

    /// chmod/chown: kept with the node for the life of the mount (the kernel checks who may,
    /// through `default_permissions`); with `--strict-permissions`, refused unless unchanged.
    fn set_perms(
        &self,
        node: &Node,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        let shown = self.attr_of(node);
        let wanted = Perms {
            mode: mode.map_or(shown.perm, |m| (m & 0o7777) as u16),
            uid: uid.unwrap_or(shown.uid),
            gid: gid.unwrap_or(shown.gid),
        };
        if (wanted.mode, wanted.uid, wanted.gid) == (shown.perm, shown.uid, shown.gid) {
            return Ok(());
        }
        if self.cfg.strict_permissions {
            return Err(Error::NotSupported(
                "chmod/chown: the drive stores no permissions (--strict-permissions)".into(),
            ));
        }
        let mut table = lock(&self.table);
        if let Some(n) = table.get_mut(node.ino) {
            n.perms = (wanted != self.default_perms(n.kind)).then_some(wanted);
            n.ctime = SystemTime::now();
        }
        Ok(())
    }

    /// setattr: size (truncate), mtime, and mode/owner (see `set_perms`).
    pub async fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        mtime: Option<SystemTime>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<Attr> {
        let node = self.node(ino)?;
        self.refuse_synthetic(&node)?;
        if mode.is_some() || uid.is_some() || gid.is_some() {
            self.set_perms(&node, mode, uid, gid)?;
        }
        if let Some(size) = size {
            self.writable()?;
            if node.is_dir() {
                return Err(Error::IsADirectory(node.name));
            }
            let content = self.local_for_writing(ino, size == 0).await?;
            let resized = content.set_len(size);
            if resized.is_ok() {
                self.set_size(ino, size);
            }
            // A truncate by path (no open writer besides ours) is a complete change: upload it.
            self.writer_left(ino, &content)?;
            resized?;
        }
        if let Some(mtime) = mtime {
            // Kept with local content and sent as local_modified_at by its upload (a queued one
            // is retargeted: rsync and `cp -p` set it right after close); for a file with no
            // local content the drive has no call to change it, so it lasts until re-listing.
            if let Some(n) = lock(&self.table).get_mut(ino) {
                n.mtime = mtime;
                // The streamed session was created with the mtime of its start.
                if let Some(stream) = n.local.as_ref().and_then(|c| c.stream()) {
                    stream.abandon("mtime set explicitly");
                }
            }
            // Under the gate: a RELEASE queueing this file right now finishes first, so the
            // queued job gets the new mtime.
            let rejournal = {
                let _gate = lock(&self.upload_gate);
                self.uploads.retarget(ino, |t| t.mtime = Some(mtime))
            };
            rejournal.write(&self.uploads);
        }
        self.getattr(ino).await
    }
}

fn dst_file(content: &LocalContent) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).open(&content.path)
}
