//! `--drive all`: several drives of one account behind one `Drive`, each a top-level folder.
//!
//! Ids are qualified by drive: `N~ID` is item `ID` of drive `N` (its index here), so the fs
//! core sees one id space and never learns there are several drives. The mount's root
//! (`ROOT_ID`) is virtual: it lists one folder per drive, `N~root`, and takes no changes. A
//! move or copy between drives is `Error::CrossDevice` (EXDEV: `mv` copies and deletes). Space
//! is the account's (shared by its drives), so `df` shows it once. No locks: the table of
//! drives is fixed at construction.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    CheckNameMode, CreatedFolder, DownloadUrl, Drive, DriveInfo, ItemKind, NewFile, OpResult,
    PartUrl, RemoteItem, SpaceInfo, TaskState, UploadSession, UploadedPart, VideoPlayInfo, ROOT_ID,
};
use crate::error::{Error, Result};

/// Between a drive's index and an item id in a qualified id.
const SEP: char = '~';

/// One drive of the mount: the folder it shows as, and the client on it.
pub struct Member {
    pub folder: String,
    pub drive: Arc<dyn Drive>,
}

pub struct MultiDrive {
    members: Vec<Member>,
    info: DriveInfo,
    /// Shown as the virtual folders' times.
    started: SystemTime,
}

impl MultiDrive {
    /// `info` describes the account; its `drive_id` should name the set (cache namespaces use it).
    pub fn new(members: Vec<Member>, info: DriveInfo) -> Result<MultiDrive> {
        if members.is_empty() {
            return Err(Error::Config(
                "--drive all: the account has no drive".into(),
            ));
        }
        Ok(MultiDrive {
            members,
            info,
            started: SystemTime::now(),
        })
    }

    /// Drive index and the id inside it; NotFound for an id of no drive (callers look for the
    /// virtual root, `ROOT_ID`, first).
    fn split<'a>(&self, id: &'a str) -> Result<(usize, &'a str)> {
        id.split_once(SEP)
            .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)))
            .filter(|(n, _)| *n < self.members.len())
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    fn member(&self, id: &str) -> Result<(&dyn Drive, String)> {
        let (n, inner) = self.split(id)?;
        Ok((self.members[n].drive.as_ref(), inner.to_string()))
    }

    /// Refuses a change to the virtual root or to a drive's own folder.
    fn changeable(&self, id: &str) -> Result<(usize, String)> {
        let (n, inner) = self.split(id)?;
        if inner == ROOT_ID {
            return Err(Error::PermissionDenied(format!(
                "{} is a drive: it cannot be renamed, moved or removed",
                self.members[n].folder
            )));
        }
        Ok((n, inner.to_string()))
    }

    /// A folder a new item may go in: not the virtual root.
    fn parent_of_new(&self, parent: &str) -> Result<(usize, String)> {
        if parent == ROOT_ID {
            return Err(Error::PermissionDenied(
                "the top level of a --drive all mount holds only the drives".into(),
            ));
        }
        let (n, inner) = self.split(parent)?;
        Ok((n, inner.to_string()))
    }

    fn drive_folder(&self, n: usize) -> RemoteItem {
        RemoteItem {
            file_id: qualify(n, ROOT_ID),
            parent_file_id: ROOT_ID.into(),
            name: self.members[n].folder.clone(),
            ..self.virtual_root()
        }
    }

    fn virtual_root(&self) -> RemoteItem {
        RemoteItem {
            file_id: ROOT_ID.into(),
            parent_file_id: String::new(),
            name: String::new(),
            kind: ItemKind::Folder,
            size: 0,
            content_hash: None,
            created_at: self.started,
            updated_at: self.started,
            local_modified_at: None,
            download_url: None,
            streams: Vec::new(),
        }
    }

    /// The drive's own folder stands for the drive's root in answers about it.
    fn item(&self, n: usize, mut item: RemoteItem) -> RemoteItem {
        if item.file_id == ROOT_ID {
            return self.drive_folder(n);
        }
        item.file_id = qualify(n, &item.file_id);
        item.parent_file_id = qualify(n, &item.parent_file_id);
        item
    }

    fn op(n: usize, mut r: OpResult) -> OpResult {
        r.file_id = qualify(n, &r.file_id);
        r.async_task_id = r.async_task_id.map(|t| qualify(n, &t));
        r
    }

    /// Moves and copies stay inside one drive.
    fn same_drive(&self, file_id: &str, to_parent: &str) -> Result<(usize, String, String)> {
        let (n, inner) = self.changeable(file_id)?;
        let (m, to) = self.parent_of_new(to_parent)?;
        if n != m {
            return Err(Error::CrossDevice(format!(
                "{} and {} are different drives",
                self.members[n].folder, self.members[m].folder
            )));
        }
        Ok((n, inner, to))
    }

    /// Any member, for calls that name no item (signed URLs work whichever drive signed them).
    fn any(&self) -> &dyn Drive {
        self.members[0].drive.as_ref()
    }
}

fn qualify(n: usize, id: &str) -> String {
    format!("{n}{SEP}{id}")
}

#[async_trait]
impl Drive for MultiDrive {
    async fn drive_info(&self) -> Result<DriveInfo> {
        Ok(self.info.clone())
    }

    fn fixed_folder(&self, file_id: &str) -> bool {
        file_id == ROOT_ID
    }

    async fn space_info(&self) -> Result<SpaceInfo> {
        // The account's space, which its drives share.
        self.any().space_info().await
    }

    async fn list_folder(&self, parent_file_id: &str) -> Result<Vec<RemoteItem>> {
        if parent_file_id == ROOT_ID {
            return Ok((0..self.members.len())
                .map(|n| self.drive_folder(n))
                .collect());
        }
        let (n, inner) = self.split(parent_file_id)?;
        let items = self.members[n].drive.list_folder(inner).await?;
        Ok(items.into_iter().map(|i| self.item(n, i)).collect())
    }

    async fn get(&self, file_id: &str) -> Result<RemoteItem> {
        if file_id == ROOT_ID {
            return Ok(self.virtual_root());
        }
        let (n, inner) = self.split(file_id)?;
        if inner == ROOT_ID {
            return Ok(self.drive_folder(n));
        }
        let item = self.members[n].drive.get(inner).await?;
        Ok(self.item(n, item))
    }

    async fn get_by_path(&self, path: &str) -> Result<RemoteItem> {
        let rest = path.trim_start_matches('/');
        let (folder, inner) = rest.split_once('/').unwrap_or((rest, ""));
        if folder.is_empty() {
            return Ok(self.virtual_root());
        }
        let n = self
            .members
            .iter()
            .position(|m| m.folder == folder)
            .ok_or_else(|| Error::NotFound(path.to_string()))?;
        if inner.trim_matches('/').is_empty() {
            return Ok(self.drive_folder(n));
        }
        let item = self.members[n]
            .drive
            .get_by_path(&format!("/{inner}"))
            .await?;
        Ok(self.item(n, item))
    }

    async fn download_url(&self, file_id: &str) -> Result<DownloadUrl> {
        let (drive, inner) = self.member(file_id)?;
        drive.download_url(&inner).await
    }

    async fn download_range(&self, url: &DownloadUrl, offset: u64, len: u64) -> Result<Bytes> {
        self.any().download_range(url, offset, len).await
    }

    async fn create_folder(
        &self,
        parent_file_id: &str,
        name: &str,
        mode: CheckNameMode,
    ) -> Result<CreatedFolder> {
        let (n, parent) = self.parent_of_new(parent_file_id)?;
        let mut made = self.members[n]
            .drive
            .create_folder(&parent, name, mode)
            .await?;
        made.file_id = qualify(n, &made.file_id);
        Ok(made)
    }

    async fn create_file(&self, req: &NewFile) -> Result<UploadSession> {
        let (n, parent) = self.parent_of_new(&req.parent_file_id)?;
        let inner = NewFile {
            parent_file_id: parent,
            ..req.clone()
        };
        let mut session = self.members[n].drive.create_file(&inner).await?;
        session.file_id = qualify(n, &session.file_id);
        Ok(session)
    }

    async fn upload_urls(
        &self,
        file_id: &str,
        upload_id: &str,
        part_numbers: &[u32],
    ) -> Result<Vec<PartUrl>> {
        let (drive, inner) = self.member(file_id)?;
        drive.upload_urls(&inner, upload_id, part_numbers).await
    }

    async fn upload_part(&self, part: &PartUrl, body: Bytes) -> Result<Option<String>> {
        self.any().upload_part(part, body).await
    }

    async fn uploaded_parts(&self, file_id: &str, upload_id: &str) -> Result<Vec<UploadedPart>> {
        let (drive, inner) = self.member(file_id)?;
        drive.uploaded_parts(&inner, upload_id).await
    }

    async fn complete_upload(&self, file_id: &str, upload_id: &str) -> Result<RemoteItem> {
        let (n, inner) = self.split(file_id)?;
        let item = self.members[n]
            .drive
            .complete_upload(inner, upload_id)
            .await?;
        Ok(self.item(n, item))
    }

    async fn rename(&self, file_id: &str, new_name: &str) -> Result<RemoteItem> {
        let (n, inner) = self.changeable(file_id)?;
        let item = self.members[n].drive.rename(&inner, new_name).await?;
        Ok(self.item(n, item))
    }

    async fn move_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        new_name: Option<&str>,
    ) -> Result<OpResult> {
        let (n, inner, to) = self.same_drive(file_id, to_parent_file_id)?;
        let r = self.members[n]
            .drive
            .move_item(&inner, &to, new_name)
            .await?;
        Ok(Self::op(n, r))
    }

    async fn copy_item(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        auto_rename: bool,
    ) -> Result<OpResult> {
        let (n, inner, to) = self.same_drive(file_id, to_parent_file_id)?;
        let r = self.members[n]
            .drive
            .copy_item(&inner, &to, auto_rename)
            .await?;
        Ok(Self::op(n, r))
    }

    async fn trash(&self, file_id: &str) -> Result<OpResult> {
        let (n, inner) = self.changeable(file_id)?;
        Ok(Self::op(n, self.members[n].drive.trash(&inner).await?))
    }

    async fn delete(&self, file_id: &str) -> Result<OpResult> {
        let (n, inner) = self.changeable(file_id)?;
        Ok(Self::op(n, self.members[n].drive.delete(&inner).await?))
    }

    async fn task_state(&self, async_task_id: &str) -> Result<TaskState> {
        let (drive, inner) = self.member(async_task_id)?;
        drive.task_state(&inner).await
    }

    async fn video_play_info(&self, file_id: &str) -> Result<VideoPlayInfo> {
        let (drive, inner) = self.member(file_id)?;
        drive.video_play_info(&inner).await
    }

    async fn fetch_object(&self, url: &DownloadUrl, max_len: u64) -> Result<Bytes> {
        self.any().fetch_object(url, max_len).await
    }

    async fn object_size(&self, url: &DownloadUrl) -> Result<u64> {
        self.any().object_size(url).await
    }

    async fn stream_urls(&self, file_id: &str) -> Result<Vec<(String, DownloadUrl)>> {
        let (drive, inner) = self.member(file_id)?;
        drive.stream_urls(&inner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::testdrive::MockDrive;

    fn two_drives() -> (MultiDrive, Arc<MockDrive>, Arc<MockDrive>) {
        let (a, b) = (Arc::new(MockDrive::new()), Arc::new(MockDrive::new()));
        let info = DriveInfo {
            user_id: "u".into(),
            user_name: "n".into(),
            drive_id: "all-1-2".into(),
            default_drive_id: "2".into(),
            resource_drive_id: Some("1".into()),
            backup_drive_id: Some("2".into()),
        };
        let members = vec![
            Member {
                folder: "资源库".into(),
                drive: a.clone(),
            },
            Member {
                folder: "backup".into(),
                drive: b.clone(),
            },
        ];
        (MultiDrive::new(members, info).unwrap(), a, b)
    }

    #[tokio::test]
    async fn ids_are_qualified_by_drive_and_moves_stay_inside_one() {
        let (multi, a, b) = two_drives();
        let fa = a.seed(ROOT_ID, "a.txt", b"A");
        let fb = b.seed(ROOT_ID, "b.txt", b"B");
        let top = multi.list_folder(ROOT_ID).await.unwrap();
        let top: Vec<_> = top
            .iter()
            .map(|i| (i.name.as_str(), i.file_id.as_str()))
            .collect();
        assert_eq!(top, [("资源库", "0~root"), ("backup", "1~root")]);
        let listed = multi.list_folder("1~root").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].file_id, format!("1~{fb}"));
        assert_eq!(listed[0].parent_file_id, "1~root");
        assert_eq!(multi.get(&format!("0~{fa}")).await.unwrap().name, "a.txt");
        assert!(
            multi.get(&fa).await.is_err(),
            "an unqualified id is no item"
        );
        assert!(multi.get("7~root").await.is_err());

        let err = multi
            .move_item(&format!("0~{fa}"), "1~root", None)
            .await
            .unwrap_err();
        assert_eq!(err.errno(), libc::EXDEV, "{err}");
        assert_eq!(a.visible(ROOT_ID, "a.txt").len(), 1);
        for err in [
            multi.rename("0~root", "x").await.unwrap_err(),
            multi.trash("1~root").await.unwrap_err(),
            multi
                .create_folder(ROOT_ID, "x", CheckNameMode::Refuse)
                .await
                .unwrap_err(),
        ] {
            assert_eq!(err.errno(), libc::EACCES, "{err}");
        }
        assert!(multi.fixed_folder(ROOT_ID) && !multi.fixed_folder("0~root"));
        assert_eq!(
            multi.get_by_path("/资源库").await.unwrap().file_id,
            "0~root"
        );
        assert_eq!(multi.drive_info().await.unwrap().drive_id, "all-1-2");
    }
}
