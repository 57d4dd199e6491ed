//! The file-tree endpoints behind `Drive`: listing a folder page by page, looking an item up
//! by id or by path, and changing the tree (create a folder, rename, move, copy, trash,
//! delete), with the replay rules each change needs. Separate from `client`, which holds the
//! client's set-up, its shared call path and the `Drive` impl that delegates here.

use serde_json::json;

use super::{Client, MAX_PAGES};
use crate::api::http::Replay;
use crate::api::limiter::Class;
use crate::api::wire::{CreateResp, ListResp, OpResp, WireFile};
use crate::drive::{CheckNameMode, CreatedFolder, Drive, ItemKind, OpResult, RemoteItem, ROOT_ID};
use crate::error::{Error, Result};

/// Page size of `list` (the documented maximum).
const LIST_LIMIT: u32 = 100;

impl Client {
    pub(super) async fn folder_items(&self, parent_file_id: &str) -> Result<Vec<RemoteItem>> {
        let drive_id = self.drive().await?;
        let mut items = Vec::new();
        let mut marker = String::new();
        for _ in 0..MAX_PAGES {
            let body = json!({
                "drive_id": drive_id,
                "parent_file_id": parent_file_id,
                "limit": LIST_LIMIT,
                "marker": marker,
                "order_by": "name",
                "order_direction": "ASC",
            });
            let page: ListResp = self
                .api
                .call("openFile/list", Class::List, Replay::Always, |_| {
                    Ok(body.clone())
                })
                .await?;
            for f in page.items.unwrap_or_default() {
                // Trashed items do not belong in a listing, whatever the server says.
                if f.trashed {
                    continue;
                }
                let mut item = f.into_item()?;
                if item.parent_file_id.is_empty() {
                    item.parent_file_id = parent_file_id.to_string();
                }
                items.push(item);
            }
            match page.next_marker.filter(|m| !m.is_empty()) {
                None => return Ok(items),
                Some(next) if next == marker => {
                    return Err(Error::BadResponse(format!(
                        "openFile/list repeated its marker for folder {parent_file_id}"
                    )))
                }
                Some(next) => marker = next,
            }
        }
        Err(Error::BadResponse(format!(
            "openFile/list did not end for folder {parent_file_id}"
        )))
    }

    pub(super) async fn get_item(&self, file_id: &str) -> Result<RemoteItem> {
        let f: WireFile = self
            .call_drive(
                "openFile/get",
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id }),
            )
            .await?;
        if f.trashed {
            return Err(Error::InRecycleBin(file_id.to_string()));
        }
        f.into_item()
    }

    pub(super) async fn item_by_path(&self, path: &str) -> Result<RemoteItem> {
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty() {
            // Every client synthesises the root; its answer to "/" is not known (reference 3.4).
            return Ok(RemoteItem {
                file_id: ROOT_ID.to_string(),
                parent_file_id: String::new(),
                name: String::new(),
                kind: ItemKind::Folder,
                size: 0,
                content_hash: None,
                created_at: std::time::UNIX_EPOCH,
                updated_at: std::time::UNIX_EPOCH,
                local_modified_at: None,
                download_url: None,
                streams: Vec::new(),
            });
        }
        let abs = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        let f: WireFile = self
            .call_drive(
                "openFile/get_by_path",
                Class::Other,
                Replay::Always,
                json!({ "file_path": abs }),
            )
            .await?;
        if f.trashed {
            return Err(Error::NotFound(path.to_string()));
        }
        f.into_item()
    }

    pub(super) async fn make_folder(
        &self,
        parent_file_id: &str,
        name: &str,
        mode: CheckNameMode,
    ) -> Result<CreatedFolder> {
        // Replaying a folder create is harmless under refuse (exist:true, same id); under
        // ignore/auto_rename it could make a twin, so only replay what surely did not land.
        let replay = match mode {
            CheckNameMode::Refuse => Replay::Always,
            _ => Replay::UnsentOnly,
        };
        let r: CreateResp = self
            .call_drive(
                "openFile/create",
                Class::Other,
                replay,
                json!({
                    "parent_file_id": parent_file_id,
                    "name": name,
                    "type": "folder",
                    "check_name_mode": mode.as_str(),
                }),
            )
            .await?;
        Ok(CreatedFolder {
            file_id: r.file_id()?,
            name: r.file_name.clone().unwrap_or_else(|| name.to_string()),
            exist: r.exist,
        })
    }

    pub(super) async fn rename_item(&self, file_id: &str, new_name: &str) -> Result<RemoteItem> {
        let r: Result<WireFile> = self
            .call_drive(
                "openFile/update",
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id, "name": new_name, "check_name_mode": "refuse" }),
            )
            .await;
        match r {
            Ok(f) => f.into_item(),
            // A replay of a rename that landed clashes with the item itself.
            Err(Error::AlreadyExists(msg)) => match self.get(file_id).await {
                Ok(item) if item.name == new_name => Ok(item),
                _ => Err(Error::AlreadyExists(msg)),
            },
            Err(e) => Err(e),
        }
    }

    pub(super) async fn move_to(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        new_name: Option<&str>,
    ) -> Result<OpResult> {
        let mut body = json!({
            "file_id": file_id,
            "to_parent_file_id": to_parent_file_id,
            "check_name_mode": "refuse",
        });
        if let Some(n) = new_name {
            body["new_name"] = json!(n);
        }
        let r: OpResp = self
            .call_drive("openFile/move", Class::Other, Replay::Always, body)
            .await?;
        let mut result = r.into_result(file_id);
        if result.exist {
            // `exist` may also be a replayed move that already landed (the clash is with the
            // item itself): then it did move.
            if let Ok(item) = self.get(file_id).await {
                let wanted = new_name.map(str::to_string);
                if item.parent_file_id == to_parent_file_id && wanted.is_none_or(|n| n == item.name)
                {
                    result.exist = false;
                }
            }
        }
        Ok(result)
    }

    pub(super) async fn copy_to(
        &self,
        file_id: &str,
        to_parent_file_id: &str,
        auto_rename: bool,
    ) -> Result<OpResult> {
        // A replayed copy could make two copies: replay only what surely did not land.
        let r: OpResp = self
            .call_drive(
                "openFile/copy",
                Class::Other,
                Replay::UnsentOnly,
                json!({
                    "file_id": file_id,
                    "to_parent_file_id": to_parent_file_id,
                    "auto_rename": auto_rename,
                }),
            )
            .await?;
        Ok(r.into_result(file_id))
    }

    /// Trash/delete: "already gone" is success (reference 4.5).
    pub(super) async fn remove(&self, endpoint: &'static str, file_id: &str) -> Result<OpResult> {
        let r: Result<OpResp> = self
            .call_drive(
                endpoint,
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id }),
            )
            .await;
        match r {
            Ok(r) => Ok(r.into_result(file_id)),
            Err(Error::NotFound(_)) | Err(Error::InRecycleBin(_)) => Ok(OpResult {
                file_id: file_id.to_string(),
                exist: false,
                async_task_id: None,
            }),
            Err(e) => Err(e),
        }
    }
}
