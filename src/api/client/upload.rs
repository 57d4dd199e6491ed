//! The upload session endpoints behind `Drive`: `openFile/create` for a file (with its
//! proof code), part URLs, part PUTs, the parts already uploaded, and `openFile/complete`.
//! Separate from `client` because the upload flow is its own protocol, with its own
//! request body and tests.

use bytes::Bytes;
use serde_json::json;

use super::{Client, MAX_PAGES};
use crate::api::data;
use crate::api::http::Replay;
use crate::api::limiter::Class;
use crate::api::wire::{CreateResp, PartsResp, UploadedPartsResp, WireFile, WirePart};
use crate::drive::{NewFile, PartUrl, RemoteItem, UploadHashes, UploadSession, UploadedPart};
use crate::error::{Error, Result};
use crate::hashing;

/// The create-file body for one access token (proof_code depends on it).
fn create_file_body(drive_id: &str, req: &NewFile, token: &str) -> Result<serde_json::Value> {
    let parts: Vec<_> = (1..=req.part_count.max(1))
        .map(|n| json!({ "part_number": n }))
        .collect();
    let mut body = json!({
        "drive_id": drive_id,
        "parent_file_id": req.parent_file_id,
        "name": req.name,
        "type": "file",
        "check_name_mode": req.check_name_mode.as_str(),
        "part_info_list": parts,
    });
    if let Some(size) = req.size {
        body["size"] = json!(size);
    }
    if let Some(t) = req.local_modified_at {
        body["local_modified_at"] = json!(crate::timefmt::format(t));
    }
    match &req.hashes {
        UploadHashes::None => {}
        UploadHashes::PreHash(h) => body["pre_hash"] = json!(h),
        UploadHashes::Full {
            content_hash,
            local_file,
        } => {
            // 8 bytes at most: a blocking read is cheaper than a thread hop.
            let size = req
                .size
                .ok_or_else(|| Error::Config("a rapid-upload create needs the file size".into()))?;
            let mut f = std::fs::File::open(local_file)?;
            let proof = hashing::proof_code_of_file(token, &mut f, size)?;
            body["content_hash"] = json!(content_hash);
            body["content_hash_name"] = json!("sha1");
            body["proof_code"] = json!(proof);
            body["proof_version"] = json!("v1");
        }
    }
    Ok(body)
}

impl Client {
    fn parts_from(list: Option<Vec<WirePart>>) -> Result<Vec<PartUrl>> {
        list.unwrap_or_default()
            .into_iter()
            .map(|p| p.into_part_url())
            .collect()
    }

    pub(super) async fn create_upload(&self, req: &NewFile) -> Result<UploadSession> {
        let drive_id = self.drive().await?;
        // Not idempotent: a replay after a lost answer could create a second session or file.
        let r: CreateResp = self
            .api
            .call(
                "openFile/create",
                Class::Other,
                Replay::UnsentOnly,
                |token| create_file_body(&drive_id, req, token),
            )
            .await?;
        Ok(UploadSession {
            file_id: r.file_id()?,
            file_name: r.file_name.clone().unwrap_or_else(|| req.name.clone()),
            upload_id: r.upload_id(),
            rapid_upload: r.rapid_upload,
            exist: r.exist,
            parts: if r.exist || r.rapid_upload {
                Vec::new()
            } else {
                Self::parts_from(r.part_info_list)?
            },
        })
    }

    pub(super) async fn part_upload_urls(
        &self,
        file_id: &str,
        upload_id: &str,
        part_numbers: &[u32],
    ) -> Result<Vec<PartUrl>> {
        let list: Vec<_> = part_numbers
            .iter()
            .map(|n| json!({ "part_number": n }))
            .collect();
        let r: PartsResp = self
            .call_drive(
                "openFile/getUploadUrl",
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id, "upload_id": upload_id, "part_info_list": list }),
            )
            .await?;
        Self::parts_from(r.part_info_list)
    }

    pub(super) async fn put_part(&self, part: &PartUrl, body: Bytes) -> Result<Option<String>> {
        match &self.cfg.upload_origin {
            Some(origin) => {
                let internal = PartUrl {
                    upload_url: data::with_origin(&part.upload_url, origin),
                    ..part.clone()
                };
                data::upload_part(&self.api.http, &internal, body, &self.bandwidth).await
            }
            None => data::upload_part(&self.api.http, part, body, &self.bandwidth).await,
        }
    }

    pub(super) async fn list_uploaded_parts(
        &self,
        file_id: &str,
        upload_id: &str,
    ) -> Result<Vec<UploadedPart>> {
        let mut parts = Vec::new();
        let mut marker = String::new();
        for _ in 0..MAX_PAGES {
            let r: UploadedPartsResp = self
                .call_drive(
                    "openFile/listUploadedParts",
                    Class::Other,
                    Replay::Always,
                    json!({
                        "file_id": file_id,
                        "upload_id": upload_id,
                        "part_number_marker": marker,
                    }),
                )
                .await?;
            for p in r.uploaded_parts.unwrap_or_default() {
                parts.push(p.into_uploaded()?);
            }
            match r
                .next_part_number_marker
                .filter(|m| !m.is_empty() && m != "0")
            {
                None => return Ok(parts),
                Some(next) if next == marker => {
                    return Err(Error::BadResponse(
                        "listUploadedParts repeated its marker".into(),
                    ))
                }
                Some(next) => marker = next,
            }
        }
        Err(Error::BadResponse("listUploadedParts did not end".into()))
    }

    pub(super) async fn complete_session(
        &self,
        file_id: &str,
        upload_id: &str,
    ) -> Result<RemoteItem> {
        let f: WireFile = self
            .call_drive(
                "openFile/complete",
                Class::Other,
                Replay::Always,
                json!({ "file_id": file_id, "upload_id": upload_id }),
            )
            .await?;
        f.into_item()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::CheckNameMode;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn create_body_carries_proof_for_the_given_token() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"Hello World!").unwrap();
        let req = NewFile {
            parent_file_id: "root".into(),
            name: "h.txt".into(),
            size: Some(12),
            check_name_mode: CheckNameMode::Refuse,
            part_count: 2,
            local_modified_at: Some(
                std::time::UNIX_EPOCH + Duration::from_millis(1_687_946_420_022),
            ),
            hashes: UploadHashes::Full {
                content_hash: "2EF7BDE608CE5404E97D5F042F95F89F1C232871".into(),
                local_file: f.path().to_path_buf(),
            },
        };
        let b = create_file_body("d1", &req, "example-access-token").unwrap();
        assert_eq!(b["proof_code"], "bG8gV29ybGQ=");
        assert_eq!(b["proof_version"], "v1");
        assert_eq!(b["check_name_mode"], "refuse");
        assert_eq!(b["part_info_list"].as_array().unwrap().len(), 2);
        assert_eq!(b["local_modified_at"], "2023-06-28T10:00:20.022Z");
        let b2 = create_file_body("d1", &req, "another.access.token").unwrap();
        assert_ne!(b2["proof_code"], b["proof_code"]);

        let pre = NewFile {
            hashes: UploadHashes::PreHash("ABC".into()),
            part_count: 0,
            ..req
        };
        let b = create_file_body("d1", &pre, "t").unwrap();
        assert_eq!(b["pre_hash"], "ABC");
        assert!(b.get("proof_code").is_none());
        assert_eq!(b["part_info_list"].as_array().unwrap().len(), 1);
    }
}
