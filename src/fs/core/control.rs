//! What the control socket (`alipanfs status`, `alipanfs sync`) asks of the fs: upload jobs
//! and open files named by their current path in the mount.

use std::sync::Arc;

use super::{FsCore, Handle};
use crate::fs::lock;
use crate::write::JobInfo;

/// An upload job and where its file is in the mount now ("dir/name", relative to the root).
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub path: String,
    pub job: JobInfo,
}

impl FsCore {
    /// Every queued or running upload, with its file's current path. The key is the inode for
    /// jobs made through the mount; jobs replayed from the journal are named by their target
    /// (the parent's path plus the drive name).
    pub fn pending_uploads(&self) -> Vec<PendingUpload> {
        let jobs = self.uploads.jobs();
        let table = lock(&self.table);
        jobs.into_iter()
            .map(|job| {
                let path = table
                    .path_of(job.key)
                    .or_else(|| {
                        let parent = table.ino_of(&job.parent_file_id)?;
                        let dir = table.path_of(parent)?;
                        Some(join(&dir, &job.name))
                    })
                    .unwrap_or_else(|| format!("(folder {})/{}", job.parent_file_id, job.name));
                PendingUpload { path, job }
            })
            .collect()
    }

    /// Files written and not handed to the upload queue yet (a writer still has them open, or
    /// the kernel's RELEASE after close has not arrived): inode and path.
    pub fn unqueued_writes(&self) -> Vec<(u64, String)> {
        let table = lock(&self.table);
        table
            .with_local()
            .filter_map(|ino| {
                let node = table.get(ino)?;
                let local = node.local.as_ref()?;
                (local.is_dirty() && !local.is_sealed())
                    .then(|| Some((ino, table.path_of(ino)?)))
                    .flatten()
            })
            .collect()
    }

    /// Files being written that already upload while written: path, bytes written so far and
    /// bytes their stream has sent.
    pub fn streaming_writes(&self) -> Vec<(String, u64, u64)> {
        let table = lock(&self.table);
        table
            .with_local()
            .filter_map(|ino| {
                let local = table.get(ino)?.local.as_ref()?;
                let stream = local.stream().filter(|s| s.is_started())?;
                if !local.is_dirty() || local.is_sealed() {
                    return None;
                }
                let written = local.len().unwrap_or(0);
                Some((table.path_of(ino)?, written, stream.sent_bytes()))
            })
            .collect()
    }

    /// `pending_uploads` and `unqueued_writes` at one instant: a file being queued right now
    /// is in exactly one of them (the upload gate orders this against `submit_upload`).
    pub fn uploads_snapshot(&self) -> (Vec<PendingUpload>, Vec<(u64, String)>) {
        let _gate = lock(&self.upload_gate);
        (self.pending_uploads(), self.unqueued_writes())
    }

    /// Files open for reading from the drive: path, size and file_id.
    pub fn open_read_files(&self) -> Vec<(String, u64, String)> {
        let inos: Vec<u64> = lock(&self.handles)
            .values()
            .filter_map(|h| match h {
                Handle::Remote { ino, .. } | Handle::Memory { ino, .. } => Some(*ino),
                _ => None,
            })
            .collect();
        let table = lock(&self.table);
        let mut out: Vec<(String, u64, String)> = inos
            .into_iter()
            .filter_map(|ino| {
                let node = table.get(ino)?;
                Some((table.path_of(ino)?, node.size, node.file_id.clone()))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Files open for reading from the drive: path and size.
    pub fn open_reads(&self) -> Vec<(String, u64)> {
        let inos: Vec<u64> = lock(&self.handles)
            .values()
            .filter_map(|h| match h {
                Handle::Remote { ino, .. } | Handle::Memory { ino, .. } => Some(*ino),
                _ => None,
            })
            .collect();
        let table = lock(&self.table);
        let mut out: Vec<(String, u64)> = inos
            .into_iter()
            .filter_map(|ino| {
                let node = table.get(ino)?;
                Some((table.path_of(ino)?, node.size))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether node `ino` still has content not handed to the queue.
    pub fn is_unqueued(&self, ino: u64) -> bool {
        let table = lock(&self.table);
        table
            .get(ino)
            .and_then(|n| n.local.as_ref().map(Arc::clone))
            .is_some_and(|l| l.is_dirty() && !l.is_sealed())
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}
