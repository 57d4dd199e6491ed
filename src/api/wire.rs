//! The wire format, tolerantly: every field optional or defaulted, unknown fields ignored,
//! numbers accepted as numbers or strings, `null` anywhere. Conversion to the domain types of
//! `crate::drive` checks only what the filesystem truly needs (an id, a name).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};

use crate::drive::{
    ItemKind, PartUrl, RemoteItem, TaskState, UploadedPart, VideoStream, VideoSubtitle,
};
use crate::error::{Error, Result};
use crate::timefmt;

/// Accepts a string, a number or null.
fn lenient_string<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// Accepts a non-negative integer, a float, a numeric string or null.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    Ok(lenient_f64_value(serde_json::Value::deserialize(d)?).map(|f| f as u64))
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    Ok(lenient_f64_value(serde_json::Value::deserialize(d)?))
}

fn lenient_f64_value(v: serde_json::Value) -> Option<f64> {
    let f = match v {
        serde_json::Value::Number(n) => n.as_u64().map(|u| u as f64).or_else(|| n.as_f64()),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    (f.is_finite() && f >= 0.0).then_some(f)
}

/// Accepts a bool, "true"/"false", or null (→ false).
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
        serde_json::Value::Number(n) => n.as_i64().is_some_and(|i| i != 0),
        _ => false,
    })
}

/// A present, non-empty string.
fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// The 3.1 file object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WireFile {
    #[serde(deserialize_with = "lenient_string")]
    pub drive_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub file_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub parent_file_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient_string")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "lenient_u64")]
    pub size: Option<u64>,
    #[serde(deserialize_with = "lenient_string")]
    pub content_hash: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub created_at: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub updated_at: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub local_modified_at: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub trashed: bool,
    /// Download URL of small files, when the listing carries one.
    #[serde(deserialize_with = "lenient_string")]
    pub url: Option<String>,
    /// `.livp` live photos: `{"jpeg":{"size":..},"mov":{"size":..}}`.
    #[serde(deserialize_with = "lenient_streams_info")]
    pub streams_info: Vec<(String, u64)>,
}

/// `streams_info`: a map of stream name to an object with a `size` (number or numeric string);
/// anything else (null, a stream without a size) is left out. Sorted by name.
fn lenient_streams_info<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<(String, u64)>, D::Error> {
    let serde_json::Value::Object(map) = serde_json::Value::deserialize(d)? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(String, u64)> = map
        .into_iter()
        .filter_map(|(name, v)| {
            let size = lenient_f64_value(v.get("size")?.clone())?;
            Some((name, size as u64))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `streamsUrl` (alist, tickstep) or `streams_url` (aliyundrive-webdav) of getDownloadUrl: stream
/// name to URL; non-string or blank URLs are left out. Sorted by name.
fn lenient_url_map<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<(String, String)>, D::Error> {
    let serde_json::Value::Object(map) = serde_json::Value::deserialize(d)? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(String, String)> = map
        .into_iter()
        .filter_map(|(name, v)| match v {
            serde_json::Value::String(u) if !u.trim().is_empty() => Some((name, u)),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

fn parse_time(s: &Option<String>) -> Option<SystemTime> {
    s.as_deref().and_then(timefmt::parse)
}

impl WireFile {
    /// Normalises into a `RemoteItem`; `BadResponse` only when the id or name is missing.
    pub fn into_item(self) -> Result<RemoteItem> {
        let file_id = nonempty(self.file_id)
            .ok_or_else(|| Error::BadResponse("file object without file_id".into()))?;
        let name = self
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::BadResponse(format!("file {file_id} has no name")))?;
        let kind = match self.kind.as_deref() {
            Some(k) if k.eq_ignore_ascii_case("folder") => ItemKind::Folder,
            _ => ItemKind::File,
        };
        let created = parse_time(&self.created_at);
        let updated = parse_time(&self.updated_at);
        Ok(RemoteItem {
            parent_file_id: self.parent_file_id.unwrap_or_default(),
            size: if kind == ItemKind::Folder {
                0
            } else {
                self.size.unwrap_or(0)
            },
            content_hash: match kind {
                ItemKind::Folder => None,
                ItemKind::File => nonempty(self.content_hash).map(|h| h.to_ascii_uppercase()),
            },
            created_at: created.or(updated).unwrap_or(UNIX_EPOCH),
            updated_at: updated.or(created).unwrap_or(UNIX_EPOCH),
            local_modified_at: parse_time(&self.local_modified_at),
            download_url: nonempty(self.url).and_then(|url| {
                let expires_at = super::data::oss_expires(&url)?;
                (expires_at > std::time::SystemTime::now())
                    .then_some(crate::drive::DownloadUrl { url, expires_at })
            }),
            streams: self.streams_info,
            file_id,
            name,
            kind,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListResp {
    pub items: Option<Vec<WireFile>>,
    #[serde(deserialize_with = "lenient_string")]
    pub next_marker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DriveInfoResp {
    #[serde(deserialize_with = "lenient_string")]
    pub user_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub nick_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub default_drive_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub resource_drive_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub backup_drive_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SpaceInfoResp {
    pub personal_space_info: Option<PersonalSpace>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PersonalSpace {
    #[serde(deserialize_with = "lenient_u64")]
    pub used_size: Option<u64>,
    #[serde(deserialize_with = "lenient_u64")]
    pub total_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DownloadUrlResp {
    #[serde(deserialize_with = "lenient_string")]
    pub url: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub expiration: Option<String>,
    /// `.livp`: one URL per stream (the `url` is then empty).
    #[serde(
        rename = "streamsUrl",
        alias = "streams_url",
        deserialize_with = "lenient_url_map"
    )]
    pub streams_url: Vec<(String, String)>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WirePart {
    #[serde(deserialize_with = "lenient_u64")]
    pub part_number: Option<u64>,
    #[serde(deserialize_with = "lenient_string")]
    pub upload_url: Option<String>,
    #[serde(deserialize_with = "lenient_u64")]
    pub part_size: Option<u64>,
    #[serde(deserialize_with = "lenient_string")]
    pub etag: Option<String>,
}

impl WirePart {
    fn number(&self) -> Result<u32> {
        self.part_number
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| Error::BadResponse("part without a valid part_number".into()))
    }

    pub fn into_part_url(self) -> Result<PartUrl> {
        let part_number = self.number()?;
        let upload_url = nonempty(self.upload_url)
            .ok_or_else(|| Error::BadResponse(format!("part {part_number} has no upload_url")))?;
        Ok(PartUrl {
            part_number,
            expires_at: super::data::oss_expires(&upload_url),
            upload_url,
        })
    }

    pub fn into_uploaded(self) -> Result<UploadedPart> {
        Ok(UploadedPart {
            part_number: self.number()?,
            part_size: self.part_size.unwrap_or(0),
            etag: nonempty(self.etag),
        })
    }
}

/// Answer of `create` (folder or file).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateResp {
    #[serde(deserialize_with = "lenient_string")]
    pub file_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub file_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub upload_id: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub rapid_upload: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub exist: bool,
    pub part_info_list: Option<Vec<WirePart>>,
}

impl CreateResp {
    pub fn file_id(&self) -> Result<String> {
        nonempty(self.file_id.clone())
            .ok_or_else(|| Error::BadResponse("create answered without file_id".into()))
    }

    /// `upload_id` null or "" both mean "none" (null comes with `exist:true`).
    pub fn upload_id(&self) -> Option<String> {
        nonempty(self.upload_id.clone())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PartsResp {
    pub part_info_list: Option<Vec<WirePart>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UploadedPartsResp {
    pub uploaded_parts: Option<Vec<WirePart>>,
    #[serde(deserialize_with = "lenient_string")]
    pub next_part_number_marker: Option<String>,
}

/// Answer of move/copy/trash/delete.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OpResp {
    #[serde(deserialize_with = "lenient_string")]
    pub file_id: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub exist: bool,
    #[serde(deserialize_with = "lenient_string")]
    pub async_task_id: Option<String>,
}

impl OpResp {
    pub fn into_result(self, fallback_file_id: &str) -> crate::drive::OpResult {
        crate::drive::OpResult {
            file_id: nonempty(self.file_id).unwrap_or_else(|| fallback_file_id.to_string()),
            exist: self.exist,
            async_task_id: nonempty(self.async_task_id),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskResp {
    #[serde(deserialize_with = "lenient_string")]
    pub state: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub status: Option<String>,
}

impl TaskResp {
    pub fn state(&self) -> Result<TaskState> {
        let s = self
            .state
            .as_deref()
            .or(self.status.as_deref())
            .unwrap_or("");
        match s.to_ascii_lowercase().as_str() {
            "running" | "pending" | "queued" => Ok(TaskState::Running),
            "succeed" | "success" | "succeeded" | "finished" => Ok(TaskState::Succeed),
            "failed" | "fail" => Ok(TaskState::Failed),
            "partialsucceed" => Ok(TaskState::PartialSucceed),
            other => Err(Error::BadResponse(format!(
                "unknown async task state {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VideoResp {
    pub video_preview_play_info: Option<VideoPlayInfoWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VideoPlayInfoWire {
    pub meta: Option<VideoMeta>,
    pub live_transcoding_task_list: Option<Vec<VideoTask>>,
    pub live_transcoding_subtitle_task_list: Option<Vec<SubtitleTask>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubtitleTask {
    #[serde(deserialize_with = "lenient_string")]
    pub language: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub url: Option<String>,
}

impl SubtitleTask {
    pub fn into_subtitle(self) -> VideoSubtitle {
        VideoSubtitle {
            language: self.language.unwrap_or_default(),
            status: self.status.unwrap_or_default(),
            url: nonempty(self.url),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VideoMeta {
    #[serde(deserialize_with = "lenient_f64")]
    pub duration: Option<f64>,
    #[serde(deserialize_with = "lenient_u64")]
    pub width: Option<u64>,
    #[serde(deserialize_with = "lenient_u64")]
    pub height: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VideoTask {
    #[serde(deserialize_with = "lenient_string")]
    pub template_id: Option<String>,
    #[serde(deserialize_with = "lenient_u64")]
    pub template_width: Option<u64>,
    #[serde(deserialize_with = "lenient_u64")]
    pub template_height: Option<u64>,
    #[serde(deserialize_with = "lenient_string")]
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub url: Option<String>,
}

impl VideoTask {
    pub fn into_stream(self) -> VideoStream {
        let dim = |v: Option<u64>| v.map(|n| n.min(u32::MAX as u64) as u32).unwrap_or(0);
        VideoStream {
            template_id: self.template_id.unwrap_or_default(),
            width: dim(self.template_width),
            height: dim(self.template_height),
            status: self.status.unwrap_or_default(),
            url: nonempty(self.url),
        }
    }
}

/// Token endpoint answer (official and alist-helper shapes are the same).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenResp {
    #[serde(deserialize_with = "lenient_string")]
    pub access_token: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub refresh_token: Option<String>,
    #[serde(deserialize_with = "lenient_u64")]
    pub expires_in: Option<u64>,
}

/// Decodes a 2xx body; an empty body counts as `{}` (some hosts answer 204 to trash/delete).
/// Error messages quote a body only when it is not JSON (a gateway page): JSON bodies may hold
/// tokens or signed URLs, and serde's message is cut at any `?` for the same reason.
pub fn decode<T: serde::de::DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T> {
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    let bytes: &[u8] = if first.is_none() { b"{}" } else { body };
    serde_json::from_slice(bytes).map_err(|e| {
        let looks_json = first.is_some_and(|i| matches!(body[i], b'{' | b'['));
        if looks_json {
            let detail = crate::redact::url(&e.to_string());
            Error::BadResponse(format!("{endpoint}: unexpected JSON ({detail})"))
        } else {
            let head: String = String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            Error::BadResponse(format!("{endpoint}: not JSON; body starts {head:?}"))
        }
    })
}

/// `openFile/search`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SearchResp {
    pub items: Option<Vec<WireFile>>,
    #[serde(deserialize_with = "lenient_string")]
    pub next_marker: Option<String>,
    #[serde(deserialize_with = "lenient_u64")]
    pub total_count: Option<u64>,
}

/// `openFile/list_delta` and `get_last_cursor` (PDS shape; unconfirmed for the Open API, so
/// every field is optional and a cursor may come as a number).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeltaResp {
    pub items: Option<Vec<WireDelta>>,
    #[serde(deserialize_with = "lenient_string")]
    pub cursor: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub has_more: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WireDelta {
    #[serde(deserialize_with = "lenient_string")]
    pub op: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub file_id: Option<String>,
    pub file: Option<WireFile>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn file_and_folder_objects_from_the_reference() {
        let f: WireFile = decode(
            "t",
            br#"{"drive_id":"9600002","domain_id":"bj29","file_id":"65a1","parent_file_id":"root","name":"music.mp3","type":"file","size":561701,"file_extension":"mp3","trashed":null,"content_hash":"2ef7bde608ce5404e97d5f042f95f89f1c232871","created_at":"2023-06-28T10:00:20.022Z","updated_at":"2023-06-28T12:00:20.022Z","local_created_at":null,"local_modified_at":null,"video_media_metadata":{"x":1}}"#,
        )
        .unwrap();
        let item = f.into_item().unwrap();
        assert_eq!(item.kind, ItemKind::File);
        assert_eq!(item.size, 561701);
        assert_eq!(
            item.content_hash.as_deref(),
            Some("2EF7BDE608CE5404E97D5F042F95F89F1C232871")
        );
        assert_eq!(
            item.updated_at,
            UNIX_EPOCH + Duration::from_millis(1_687_953_620_022)
        );
        assert_eq!(item.mtime(), item.updated_at);

        let d: WireFile = decode(
            "t",
            br#"{"file_id":"65a9","parent_file_id":"root","name":"Documents","type":"folder","size":null,"created_at":"2024-05-01T08:00:00.123Z","updated_at":null,"local_modified_at":"2020-01-01T00:00:00.000Z"}"#,
        )
        .unwrap();
        let item = d.into_item().unwrap();
        assert!(item.is_dir());
        assert_eq!(item.size, 0);
        assert_eq!(item.updated_at, item.created_at);
        assert_eq!(
            item.mtime(),
            UNIX_EPOCH + Duration::from_secs(1_577_836_800)
        );
    }

    #[test]
    fn missing_id_or_name_is_bad_response() {
        let f: WireFile = decode("t", br#"{"name":"x"}"#).unwrap();
        assert!(matches!(f.into_item(), Err(Error::BadResponse(_))));
        let f: WireFile = decode("t", br#"{"file_id":"1","name":""}"#).unwrap();
        assert!(matches!(f.into_item(), Err(Error::BadResponse(_))));
    }

    #[test]
    fn numbers_as_strings_and_garbage_times() {
        let f: WireFile = decode(
            "t",
            br#"{"file_id":1234,"name":"a","type":"file","size":"42","created_at":"soon","trashed":"false"}"#,
        )
        .unwrap();
        let item = f.into_item().unwrap();
        assert_eq!(item.file_id, "1234");
        assert_eq!(item.size, 42);
        assert_eq!(item.created_at, UNIX_EPOCH);
    }

    #[test]
    fn create_with_exist_and_null_upload_id() {
        let c: CreateResp = decode(
            "create",
            br#"{"drive_id":"1","file_id":"abc","file_name":"x","upload_id":null,"exist":true,"rapid_upload":false,"part_info_list":null}"#,
        )
        .unwrap();
        assert!(c.exist);
        assert_eq!(c.upload_id(), None);
        assert_eq!(c.file_id().unwrap(), "abc");
        let c: CreateResp = decode("create", br#"{"file_id":"abc","upload_id":""}"#).unwrap();
        assert_eq!(c.upload_id(), None);
    }

    #[test]
    fn list_markers() {
        let l: ListResp = decode("list", br#"{"items":[],"next_marker":null}"#).unwrap();
        assert_eq!(l.next_marker, None);
        let l: ListResp = decode("list", br#"{"next_marker":"abc"}"#).unwrap();
        assert!(l.items.is_none());
        assert_eq!(l.next_marker.as_deref(), Some("abc"));
    }

    #[test]
    fn parts_and_tasks() {
        let p: UploadedPartsResp = decode(
            "parts",
            br#"{"parallelUpload":false,"uploaded_parts":[{"part_number":1,"part_size":20971520,"etag":"\"F2\""}],"next_part_number_marker":2}"#,
        )
        .unwrap();
        assert_eq!(p.next_part_number_marker.as_deref(), Some("2"));
        let parts: Vec<_> = p
            .uploaded_parts
            .unwrap()
            .into_iter()
            .map(|p| p.into_uploaded().unwrap())
            .collect();
        assert_eq!(parts[0].part_size, 20971520);
        let bad = WirePart {
            part_number: Some(0),
            ..Default::default()
        };
        assert!(bad.into_part_url().is_err());
        let t: TaskResp = decode("t", br#"{"state":"Succeed"}"#).unwrap();
        assert_eq!(t.state().unwrap(), TaskState::Succeed);
        let t: TaskResp = decode("t", br#"{"state":"PartialSucceed"}"#).unwrap();
        assert_eq!(t.state().unwrap(), TaskState::PartialSucceed);
        let t: TaskResp = decode("t", br#"{}"#).unwrap();
        assert!(t.state().is_err());
    }

    #[test]
    fn decode_errors_never_quote_json_values() {
        let e = decode::<ListResp>("list", br#"{"items":"https://h/x?x-oss-signature=SECRET"}"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRET"), "{e}");
        let e = decode::<ListResp>("list", b"<html>gateway</html>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("<html>gateway"), "{e}");
    }

    #[test]
    fn non_json_and_empty_bodies() {
        assert!(matches!(
            decode::<ListResp>("list", b"<html>oops</html>"),
            Err(Error::BadResponse(_))
        ));
        let op: OpResp = decode("trash", b"").unwrap();
        let r = op.into_result("fid");
        assert_eq!(r.file_id, "fid");
        assert_eq!(r.async_task_id, None);
        let op: OpResp = decode("trash", br#"{"file_id":"x","async_task_id":""}"#).unwrap();
        assert_eq!(op.into_result("fid").async_task_id, None);
    }

    #[test]
    fn video_info() {
        let v: VideoResp = decode(
            "v",
            br#"{"video_preview_play_info":{"category":"live_transcoding","meta":{"duration":1530.70,"width":1920,"height":1080},"live_transcoding_task_list":[{"template_id":"FHD","template_width":1920,"template_height":1080,"status":"finished","url":"https://x/m3u8?a=b"},{"template_id":"HD","status":"running","url":null}]}}"#,
        )
        .unwrap();
        let info = v.video_preview_play_info.unwrap();
        assert_eq!(info.meta.unwrap().duration, Some(1530.70));
        let streams: Vec<_> = info
            .live_transcoding_task_list
            .unwrap()
            .into_iter()
            .map(VideoTask::into_stream)
            .collect();
        assert_eq!(streams[0].width, 1920);
        assert_eq!(streams[1].url, None);
        assert_eq!(streams[1].width, 0);
        assert!(info.live_transcoding_subtitle_task_list.is_none());

        let v: VideoResp = decode(
            "v",
            br#"{"video_preview_play_info":{"live_transcoding_subtitle_task_list":[{"language":"chi","status":"finished","url":"https://x/a.vtt?b=c"},{"language":null,"status":"running","url":""}]}}"#,
        )
        .unwrap();
        let subs: Vec<_> = v
            .video_preview_play_info
            .unwrap()
            .live_transcoding_subtitle_task_list
            .unwrap()
            .into_iter()
            .map(SubtitleTask::into_subtitle)
            .collect();
        assert_eq!(subs[0].language, "chi");
        assert_eq!(subs[0].url.as_deref(), Some("https://x/a.vtt?b=c"));
        assert_eq!(
            (subs[1].status.as_str(), subs[1].url.as_deref()),
            ("running", None)
        );
    }

    #[test]
    fn livp_streams_info_and_streams_url() {
        let f: WireFile = decode(
            "t",
            br#"{"file_id":"1","name":"IMG.livp","type":"file","size":30,"streams_info":{"mov":{"size":"20"},"jpeg":{"size":10},"heic":null}}"#,
        )
        .unwrap();
        let item = f.into_item().unwrap();
        assert_eq!(item.streams, vec![("jpeg".into(), 10), ("mov".into(), 20)]);
        let f: WireFile =
            decode("t", br#"{"file_id":"1","name":"a","streams_info":null}"#).unwrap();
        assert!(f.into_item().unwrap().streams.is_empty());
        for key in ["streamsUrl", "streams_url"] {
            let body = format!(
                r#"{{"url":"","{key}":{{"mov":"https://h/m?x-oss-expires=5","jpeg":"https://h/j","x":null}}}}"#
            );
            let r: DownloadUrlResp = decode("d", body.as_bytes()).unwrap();
            assert_eq!(
                r.streams_url,
                vec![
                    ("jpeg".to_string(), "https://h/j".to_string()),
                    ("mov".to_string(), "https://h/m?x-oss-expires=5".to_string())
                ]
            );
        }
        let r: DownloadUrlResp = decode("d", br#"{"url":"https://h/f"}"#).unwrap();
        assert!(r.streams_url.is_empty());
    }
}
