//! Upload results: a node follows its uploaded drive item; clean local copies.

use super::*;

impl FsCore {
    // ----- upload results ------------------------------------------------------------------

    /// Swap a node to its uploaded drive item once the queue reports success.
    pub(super) async fn follow_uploads(
        core: std::sync::Weak<FsCore>,
        mut events: tokio::sync::broadcast::Receiver<UploadEvent>,
    ) {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "upload events lagged");
                    continue;
                }
                Err(_) => return,
            };
            let Some(core) = core.upgrade() else { return };
            if let Ok(item) = &event.outcome {
                core.drop_stored_listing(&item.parent_file_id);
            }
            match event.outcome {
                Ok(item) if lock(&core.table).get(event.key).is_none() => {
                    // A resumed upload (or a file deleted meanwhile): show it on next listing.
                    let dir = lock(&core.table).ino_of(&item.parent_file_id);
                    if let Some(dir) = dir {
                        core.listings.invalidate(&dir).await;
                    }
                }
                Ok(item) => {
                    let (old_id, landed_current) = {
                        let mut table = lock(&core.table);
                        let old_id = table.get(event.key).map(|n| n.file_id.clone());
                        table.rekey(event.key, &item.file_id);
                        let current = table.get(event.key).and_then(|n| n.local.clone());
                        let landed_current =
                            current.as_ref().is_some_and(|c| c.path == event.staged);
                        if landed_current {
                            // The staged bytes are now exactly the drive item's (file_ids are
                            // immutable): keep them as a clean local copy, so reading back what
                            // was just written costs no getDownloadUrl (about 1 call/s allowed).
                            if let Some(n) = table.get_mut(event.key) {
                                n.size = item.size;
                                n.mtime = item.mtime();
                                n.ctime = item.updated_at;
                            }
                        }
                        (old_id, landed_current)
                    };
                    if landed_current {
                        core.keep_clean_copy(event.key, item.size);
                    }
                    if let Some(old) = old_id {
                        core.reader.forget_file(&old);
                    }
                    if let Some(url) = &item.download_url {
                        core.reader.offer_url(&item.file_id, url.clone());
                    }
                    core.space.invalidate(&()).await;
                    debug!(ino = event.key, file_id = %item.file_id, "upload landed");
                }
                Err(message) => {
                    error!(ino = event.key, %message, "upload failed; it stays queued for retry")
                }
            }
        }
    }
}

/// At most this many uploaded files keep their staged bytes as a clean local copy...
const MAX_CLEAN_COPIES: usize = 256;
/// ...and only those up to this size (the rest are read from the drive like any file).
const MAX_CLEAN_COPY_SIZE: u64 = 8 << 20;

impl FsCore {
    /// Keep a just-uploaded node's local content as a clean copy, within the bounds above; the
    /// oldest clean copies go back to being read from the drive.
    pub(super) fn keep_clean_copy(&self, ino: u64, size: u64) {
        let mut table = lock(&self.table);
        if size > MAX_CLEAN_COPY_SIZE {
            table.set_local(ino, None);
            return;
        }
        let mut clean = lock(&self.clean_copies);
        clean.push_back(ino);
        while clean.len() > MAX_CLEAN_COPIES {
            let Some(old) = clean.pop_front() else { break };
            let still_clean = table
                .get(old)
                .and_then(|n| n.local.as_ref())
                .is_some_and(|c| c.is_sealed() && !self.uploads.is_pending(old));
            if still_clean {
                table.set_local(old, None);
            }
        }
    }
}
