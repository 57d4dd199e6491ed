//! File endpoints other than listing and upload: the 3.1 file object, get, get_by_path,
//! batch/get, getDownloadUrl, update, move, copy, trash, delete, async_task/get,
//! and the user/drive endpoints.

use super::changes::Op;
use super::errors::ApiErr;
use super::state::{Node, Shared, State};
use super::util::{self, boolean, int, s, s_nonempty};
use serde_json::{json, Map, Value};

pub type ApiResult = Result<Value, ApiErr>;

/// (extension, category, mime type) of a file name.
pub fn kind_of(name: &str) -> (String, &'static str, &'static str) {
    let ext = match name.rsplit_once('.') {
        Some((stem, e)) if !stem.is_empty() => e.to_ascii_lowercase(),
        _ => String::new(),
    };
    let (cat, mime) = match ext.as_str() {
        "mp4" | "m4v" => ("video", "video/mp4"),
        "mkv" => ("video", "video/x-matroska"),
        "mov" => ("video", "video/quicktime"),
        "avi" => ("video", "video/x-msvideo"),
        "ts" => ("video", "video/mp2t"),
        "mp3" => ("audio", "audio/mpeg"),
        "flac" => ("audio", "audio/flac"),
        "wav" => ("audio", "audio/wav"),
        "jpg" | "jpeg" => ("image", "image/jpeg"),
        "png" => ("image", "image/png"),
        "gif" => ("image", "image/gif"),
        "webp" => ("image", "image/webp"),
        "heic" => ("image", "image/heic"),
        // iOS live photos: a JPEG and a MOV, read through `streamsUrl`.
        "livp" => ("image", "application/octet-stream"),
        "txt" | "md" | "log" => ("doc", "text/plain"),
        "csv" => ("doc", "text/csv"),
        "pdf" => ("doc", "application/pdf"),
        "doc" | "docx" => ("doc", "application/msword"),
        "xls" | "xlsx" => ("doc", "application/vnd.ms-excel"),
        "zip" => ("zip", "application/zip"),
        "rar" => ("zip", "application/x-rar-compressed"),
        "7z" => ("zip", "application/x-7z-compressed"),
        "gz" | "tgz" => ("zip", "application/gzip"),
        "apk" => ("app", "application/vnd.android.package-archive"),
        "exe" => ("app", "application/x-msdownload"),
        _ => ("others", "application/octet-stream"),
    };
    (ext, cat, mime)
}

/// The 3.1 file object. Folders carry no size/content_hash/file_extension.
pub fn file_json(sh: &Shared, st: &State, n: &Node) -> Value {
    let mut m = Map::new();
    m.insert("drive_id".into(), json!(n.drive_id));
    m.insert("domain_id".into(), json!("bj29"));
    m.insert("file_id".into(), json!(n.file_id));
    m.insert("parent_file_id".into(), json!(n.parent));
    m.insert("name".into(), json!(n.name));
    m.insert(
        "type".into(),
        json!(if n.is_dir { "folder" } else { "file" }),
    );
    m.insert("status".into(), json!("available"));
    m.insert("hidden".into(), json!(false));
    m.insert("starred".into(), json!(n.starred));
    m.insert(
        "trashed".into(),
        if n.trashed { json!(true) } else { Value::Null },
    );
    m.insert(
        "trashed_at".into(),
        n.trashed_ms
            .map(|t| json!(util::fmt_ms(t)))
            .unwrap_or(Value::Null),
    );
    m.insert("encrypt_mode".into(), json!("none"));
    m.insert("created_at".into(), json!(util::fmt_ms(n.created_ms)));
    m.insert("updated_at".into(), json!(util::fmt_ms(n.updated_ms)));
    m.insert("revision_id".into(), json!(""));
    m.insert("user_meta".into(), Value::Null);
    m.insert("description".into(), Value::Null);
    m.insert("local_created_at".into(), json!(n.local_created_at));
    m.insert("local_modified_at".into(), json!(n.local_modified_at));
    if !n.is_dir {
        let (ext, cat, mime) = kind_of(&n.name);
        m.insert("size".into(), json!(n.size));
        m.insert("file_extension".into(), json!(ext));
        m.insert("category".into(), json!(cat));
        m.insert("mime_type".into(), json!(mime));
        m.insert("content_type".into(), Value::Null);
        m.insert("content_hash".into(), json!(n.sha1));
        m.insert("content_hash_name".into(), json!("sha1"));
        m.insert("punish_flag".into(), json!(0));
        m.insert("thumbnail".into(), Value::Null);
        // Files under 5 MB carry a short-lived download URL, as the real list does (a live
        // photo has no single URL).
        let url = match &n.sha1 {
            Some(h) if n.size < 5 * 1000 * 1000 && n.streams.is_empty() => {
                let exp = util::now_secs() + 900.min(st.knobs.download_url_ttl_cap.as_secs());
                json!(sh.download_url(h, &n.file_id, exp))
            }
            _ => Value::Null,
        };
        m.insert("url".into(), url);
        if cat == "video" {
            m.insert(
                "video_media_metadata".into(),
                super::transcode::media_metadata(st, &n.file_id, n.size),
            );
        }
        m.insert("streams_info".into(), super::livp::streams_info(n));
    }
    Value::Object(m)
}

/// The `drive_id` of a request: required, and one of the user's drives.
pub fn drive(st: &State, v: &Value) -> Result<String, ApiErr> {
    let d = s_nonempty(v, "drive_id").ok_or_else(|| ApiErr::param("drive_id"))?;
    if !st.drive_exists(d) {
        return Err(ApiErr::drive_invalid(d));
    }
    Ok(d.to_string())
}

/// A visible item of `drive` named by field `key` (404 unknown, 400 in the recycle bin).
pub fn live<'a>(st: &'a State, drive: &str, v: &Value, key: &str) -> Result<&'a Node, ApiErr> {
    let id = s_nonempty(v, key).ok_or_else(|| ApiErr::param(key))?;
    let n = st
        .nodes
        .get(id)
        .filter(|n| !n.pending && n.drive_id == drive)
        .ok_or_else(|| ApiErr::not_found_file_id(id))?;
    if st.in_bin(id) {
        return Err(ApiErr::in_bin(id));
    }
    Ok(n)
}

/// A folder id usable as a parent ("root" or a visible folder).
pub fn parent_folder(st: &State, drive: &str, v: &Value, key: &str) -> Result<String, ApiErr> {
    let id = s_nonempty(v, key).ok_or_else(|| ApiErr::param(key))?;
    if id == "root" {
        return Ok(id.to_string());
    }
    let n = live(st, drive, v, key)?;
    if !n.is_dir {
        return Err(ApiErr::new(
            400,
            "InvalidParameter.ParentFileId",
            format!("The input parameter {key} is not a folder."),
        ));
    }
    Ok(n.file_id.clone())
}

pub fn check_name(name: &str) -> Result<(), ApiErr> {
    if name.is_empty() || name.contains('/') || name.len() > 1024 || name == "." || name == ".." {
        return Err(ApiErr::param("name"));
    }
    Ok(())
}

/// The oldest visible sibling named `name`, other than `except`.
pub fn clash(st: &State, drive: &str, parent: &str, name: &str, except: &str) -> Option<String> {
    st.live_children(drive, parent)
        .into_iter()
        .filter(|n| n.name == name && n.file_id != except)
        .min_by_key(|n| (n.created_ms, n.file_id.clone()))
        .map(|n| n.file_id.clone())
}

/// auto_rename: `stem(1).ext`, `stem(2).ext`, ... (folders: `name(1)`), first free one.
pub fn auto_name(st: &State, drive: &str, parent: &str, name: &str, is_dir: bool) -> String {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !is_dir && !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    (1u64..)
        .map(|i| format!("{stem}({i}){ext}"))
        .find(|cand| clash(st, drive, parent, cand, "").is_none())
        .unwrap_or_else(|| format!("{stem}({}){ext}", util::rand_hex(8, false)))
}

pub fn get(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let n = live(st, &d, v, "file_id")?;
    Ok(file_json(sh, st, n))
}

pub fn get_by_path(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let path = s(v, "file_path").ok_or_else(|| ApiErr::param("file_path"))?;
    let miss = || {
        ApiErr::new(
            400,
            "NotFound.File",
            format!("The resource file cannot be found. file_path {path}"),
        )
    };
    let mut cur = "root".to_string();
    let segs: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if segs.is_empty() {
        return Err(miss());
    }
    for seg in segs {
        // With duplicate names, the oldest sibling wins.
        cur = clash(st, &d, &cur, seg, "").ok_or_else(miss)?;
    }
    let n = st.nodes.get(&cur).ok_or_else(miss)?;
    Ok(file_json(sh, st, n))
}

pub fn batch_get(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let list = v
        .get("file_list")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiErr::param("file_list"))?;
    if list.len() > 100 {
        return Err(ApiErr::param("file_list"));
    }
    let mut items = Vec::new();
    for it in list {
        let d = drive(st, it)?;
        // Unknown or trashed entries are left out rather than failing the batch.
        if let Ok(n) = live(st, &d, it, "file_id") {
            items.push(file_json(sh, st, n));
        }
    }
    Ok(json!({ "items": items }))
}

pub fn download_url(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let n = live(st, &d, v, "file_id")?;
    if n.is_dir {
        return Err(ApiErr::new(
            400,
            "InvalidParameter.FileId",
            "The file is a folder, it cannot be downloaded.",
        ));
    }
    let asked = int(v, "expire_sec").filter(|e| *e > 0).unwrap_or(900) as u64;
    let ttl = asked
        .min(14400)
        .min(st.knobs.download_url_ttl_cap.as_secs());
    let exp = util::now_secs() + ttl;
    if !n.streams.is_empty() {
        return Ok(super::livp::download_url(sh, n, exp));
    }
    let sha = n.sha1.clone().unwrap_or_default();
    Ok(json!({
        "url": sh.download_url(&sha, &n.file_id, exp),
        "expiration": util::fmt_secs(exp), "method": "GET", "size": n.size,
        "file_id": n.file_id, "drive_id": n.drive_id,
        "content_hash": n.sha1, "content_hash_name": "sha1", "description": "",
    }))
}

pub fn update(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let n = live(st, &d, v, "file_id")?.clone();
    let mut new_name = n.name.clone();
    if let Some(name) = s(v, "name") {
        check_name(name)?;
        new_name = name.to_string();
        if name != n.name {
            if let Some(other) = clash(st, &d, &n.parent, name, &n.file_id) {
                match s(v, "check_name_mode").unwrap_or("refuse") {
                    "ignore" => {}
                    "auto_rename" => new_name = auto_name(st, &d, &n.parent, name, n.is_dir),
                    _ => return Err(ApiErr::already_exists(&other)),
                }
            }
        }
    }
    let node = st
        .nodes
        .get_mut(&n.file_id)
        .ok_or_else(|| ApiErr::not_found_file_id(&n.file_id))?;
    node.name = new_name;
    if let Some(star) = boolean(v, "starred") {
        node.starred = star;
    }
    node.updated_ms = util::now_ms();
    let node = node.clone();
    st.changed(Op::Update, &node.file_id);
    Ok(file_json(sh, st, &node))
}

/// `to_drive_id`, when given, must be the same drive (cross-drive moves are not offered).
fn same_drive(st: &State, v: &Value, d: &str) -> Result<(), ApiErr> {
    match s_nonempty(v, "to_drive_id") {
        Some(t) if !st.drive_exists(t) => Err(ApiErr::drive_invalid(t)),
        Some(t) if t != d => Err(ApiErr::new(
            400,
            "InvalidParameter.ToDriveId",
            "Moving or copying across drives is not supported.",
        )),
        _ => Ok(()),
    }
}

fn into_own_subtree(st: &State, id: &str, target: &str) -> Result<(), ApiErr> {
    if target != "root" && st.subtree(id).iter().any(|x| x == target) {
        return Err(ApiErr::new(
            400,
            "InvalidParameter.ToParentFileId",
            "A folder cannot be moved or copied into itself or one of its sub folders.",
        ));
    }
    Ok(())
}

pub fn move_file(st: &mut State, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let n = live(st, &d, v, "file_id")?.clone();
    same_drive(st, v, &d)?;
    let target = parent_folder(st, &d, v, "to_parent_file_id")?;
    into_own_subtree(st, &n.file_id, &target)?;
    let mut name = s_nonempty(v, "new_name").unwrap_or(&n.name).to_string();
    check_name(&name)?;
    if clash(st, &d, &target, &name, &n.file_id).is_some() {
        match s(v, "check_name_mode").unwrap_or("refuse") {
            "ignore" => {}
            "auto_rename" => name = auto_name(st, &d, &target, &name, n.is_dir),
            _ => {
                return Ok(
                    json!({"drive_id": d, "file_id": n.file_id, "exist": true, "async_task_id": ""}),
                )
            }
        }
    }
    st.reparent(&n.file_id, &target);
    if let Some(node) = st.nodes.get_mut(&n.file_id) {
        node.name = name;
        node.updated_ms = util::now_ms();
    }
    st.changed(Op::Move, &n.file_id);
    let task = if n.is_dir {
        st.new_task()
    } else {
        String::new()
    };
    Ok(json!({"drive_id": d, "file_id": n.file_id, "exist": false, "async_task_id": task}))
}

pub fn copy(st: &mut State, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let n = live(st, &d, v, "file_id")?.clone();
    same_drive(st, v, &d)?;
    let target = parent_folder(st, &d, v, "to_parent_file_id")?;
    into_own_subtree(st, &n.file_id, &target)?;
    let mut name = n.name.clone();
    if let Some(other) = clash(st, &d, &target, &name, "") {
        if boolean(v, "auto_rename").unwrap_or(false) {
            name = auto_name(st, &d, &target, &name, n.is_dir);
        } else if target == n.parent {
            return Err(ApiErr::already_exists(&other));
        }
    }
    let ids = st.subtree(&n.file_id);
    let bytes: u64 = ids
        .iter()
        .filter_map(|i| st.nodes.get(i))
        .filter(|x| !x.is_dir && !x.pending)
        .map(|x| x.size)
        .sum();
    if st.used_bytes() + bytes > st.knobs.quota_bytes {
        return Err(quota_err());
    }
    let new_id = copy_tree(st, &n.file_id, &target, Some(name));
    let mut out = json!({"drive_id": d, "file_id": new_id});
    if n.is_dir {
        out["async_task_id"] = json!(st.new_task());
    }
    Ok(out)
}

fn copy_tree(st: &mut State, id: &str, parent: &str, name: Option<String>) -> String {
    let Some(src) = st.nodes.get(id).cloned() else {
        return String::new();
    };
    let mut node = State::new_node(
        &src.drive_id,
        parent,
        name.as_deref().unwrap_or(&src.name),
        src.is_dir,
    );
    node.size = src.size;
    node.sha1 = src.sha1.clone();
    node.streams = src.streams.clone();
    node.local_created_at = src.local_created_at.clone();
    node.local_modified_at = src.local_modified_at.clone();
    for h in src.blobs() {
        if let Some(b) = st.blobs.get_mut(h) {
            b.refs += 1;
        }
    }
    let new_id = node.file_id.clone();
    st.link(node);
    st.changed(Op::Create, &new_id);
    if src.is_dir {
        let kids: Vec<String> = st
            .live_children(&src.drive_id, &src.file_id)
            .iter()
            .map(|k| k.file_id.clone())
            .collect();
        for k in kids {
            copy_tree(st, &k, &new_id, None);
        }
    }
    new_id
}

pub fn quota_err() -> ApiErr {
    ApiErr::new(
        400,
        "QuotaExhausted.Drive",
        "The resource drive has exceeded the limit. File size exceeded drive capacity",
    )
}

pub fn trash(st: &mut State, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let n = live(st, &d, v, "file_id")?.clone();
    if let Some(node) = st.nodes.get_mut(&n.file_id) {
        node.trashed = true;
        node.trashed_ms = Some(util::now_ms());
        node.updated_ms = util::now_ms().max(node.updated_ms + 1);
    }
    st.changed(Op::Trash, &n.file_id);
    let mut out = json!({"drive_id": d, "file_id": n.file_id});
    if n.is_dir {
        out["async_task_id"] = json!(st.new_task());
    }
    Ok(out)
}

/// Permanent delete; also works on items in the recycle bin (that is how the bin is emptied).
pub fn delete(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let id = s_nonempty(v, "file_id").ok_or_else(|| ApiErr::param("file_id"))?;
    let n = st
        .nodes
        .get(id)
        .filter(|n| !n.pending && n.drive_id == d)
        .cloned()
        .ok_or_else(|| ApiErr::not_found_file_id(id))?;
    for sub in st.subtree(&n.file_id) {
        if let Some(gone) = st.unlink(&sub) {
            if gone.pending {
                let mut dead = Vec::new();
                for (uid, u) in st.uploads.iter_mut().filter(|(_, u)| u.file_id == sub) {
                    u.done = true;
                    dead.push(uid.clone());
                }
                for uid in dead {
                    let path = sh.upload_path(&uid);
                    sh.discard_file(st, path);
                }
            } else {
                for h in gone.blobs() {
                    sh.release_blob(st, h);
                }
            }
            if let Some(video) = st.videos.remove(&sub) {
                sh.release_video(st, video);
            }
        }
    }
    st.changed_in(Op::Delete, &d, &n.file_id);
    let mut out = json!({"drive_id": d, "file_id": n.file_id});
    if n.is_dir {
        out["async_task_id"] = json!(st.new_task());
    }
    Ok(out)
}

/// Folders' tasks report `Running` on the first poll and `Succeed` afterwards.
pub fn async_task(st: &mut State, v: &Value) -> ApiResult {
    let id = s_nonempty(v, "async_task_id").ok_or_else(|| ApiErr::param("async_task_id"))?;
    let polls = st.tasks.get_mut(id).ok_or_else(|| {
        ApiErr::new(
            404,
            "NotFound.AsyncTask",
            format!("The resource async task cannot be found. async_task_id {id}"),
        )
    })?;
    *polls += 1;
    let state = if *polls == 1 { "Running" } else { "Succeed" };
    Ok(json!({"async_task_id": id, "state": state, "status": state}))
}

pub fn drive_info(st: &State) -> Value {
    json!({"user_id": st.user_id, "name": st.user_name,
           "avatar": "https://img.alicdn.com/imgextra/i1/O1CN01emulator.png",
           "default_drive_id": st.drive_of_kind("default"),
           "resource_drive_id": st.drive_of_kind("resource"),
           "backup_drive_id": st.drive_of_kind("backup")})
}

pub fn space_info(st: &State) -> Value {
    json!({"personal_space_info": {"used_size": st.used_bytes(), "total_size": st.knobs.quota_bytes}})
}
