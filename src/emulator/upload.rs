//! `openFile/create` (folders and files, name-conflict modes, pre-hash probe, rapid upload),
//! `getUploadUrl`, `listUploadedParts`, `complete`.

use super::auth::Ctx;
use super::changes::Op;
use super::errors::ApiErr;
use super::files::{
    auto_name, check_name, clash, drive, file_json, parent_folder, quota_err, ApiResult,
};
use super::state::{Shared, State, Upload};
use super::util::{self, int, s, s_nonempty};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::io::Read;

const MAX_PARTS: i64 = 10_000;

fn part_list(v: &Value, required: bool) -> Result<Vec<(u32, Option<u64>)>, ApiErr> {
    let bad = || {
        ApiErr::new(
            400,
            "InvalidParameter.PartInfoList",
            "The input parameter part_info_list is not valid. part count can not over 10000",
        )
    };
    let arr = match v.get("part_info_list").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a,
        _ if required => {
            return Err(ApiErr::new(
                400,
                "InvalidParameter.PartInfoList",
                "The input parameter part_info_list is not valid. part_info_list is required",
            ))
        }
        _ => return Ok(vec![(1, None)]),
    };
    if arr.len() as i64 > MAX_PARTS {
        return Err(bad());
    }
    arr.iter()
        .map(|p| match int(p, "part_number") {
            Some(n) if (1..=MAX_PARTS).contains(&n) => {
                Ok((n as u32, int(p, "part_size").map(|x| x.max(0) as u64)))
            }
            _ => Err(bad()),
        })
        .collect()
}

fn part_infos(
    sh: &Shared,
    st: &State,
    file_id: &str,
    upload_id: &str,
    parts: &[(u32, Option<u64>)],
) -> Vec<Value> {
    let exp = util::now_secs() + st.knobs.upload_url_ttl.as_secs();
    parts
        .iter()
        .map(|(n, size)| {
            let url = sh.upload_url(file_id, upload_id, *n, exp);
            json!({"part_number": n, "part_size": size, "upload_url": url,
                   "internal_upload_url": url, "content_type": ""})
        })
        .collect()
}

pub fn create(sh: &Shared, st: &mut State, ctx: &Ctx, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let parent = parent_folder(st, &d, v, "parent_file_id")?;
    let mut name = s(v, "name")
        .ok_or_else(|| ApiErr::param("name"))?
        .to_string();
    check_name(&name)?;
    let is_dir = match s(v, "type") {
        Some("folder") => true,
        Some("file") => false,
        _ => return Err(ApiErr::param("type")),
    };
    let size = match int(v, "size") {
        Some(x) if x < 0 => return Err(ApiErr::param("size")),
        x => x.map(|x| x as u64),
    };
    let parts = if is_dir {
        Vec::new()
    } else {
        part_list(v, false)?
    };
    // Default mode when omitted: ignore (the PDS default; clients should always send one).
    if let Some(existing) = clash(st, &d, &parent, &name, "") {
        match s(v, "check_name_mode").unwrap_or("ignore") {
            "refuse" => {
                return Ok(
                    json!({"drive_id": d, "parent_file_id": parent, "file_id": existing,
                    "file_name": name, "type": if is_dir {"folder"} else {"file"}, "status": "available",
                    "available": true, "exist": true, "rapid_upload": false, "upload_id": null}),
                )
            }
            "auto_rename" => name = auto_name(st, &d, &parent, &name, is_dir),
            _ => {}
        }
    }
    let used = st.used_bytes();
    if used + size.unwrap_or(0) > st.knobs.quota_bytes
        || (size.is_none() && used >= st.knobs.quota_bytes)
    {
        return Err(quota_err());
    }
    if is_dir {
        let id = st.insert_folder(&d, &parent, &name);
        return Ok(
            json!({"drive_id": d, "parent_file_id": parent, "file_id": id, "file_name": name,
            "type": "folder", "status": "available", "available": true, "exist": false,
            "rapid_upload": false, "upload_id": ""}),
        );
    }
    let local_c = s(v, "local_created_at").map(str::to_string);
    let local_m = s(v, "local_modified_at").map(str::to_string);
    let hash_name = s(v, "content_hash_name").unwrap_or("sha1");
    let content_hash = s_nonempty(v, "content_hash").map(str::to_ascii_uppercase);
    // Pre-hash probe: a create with pre_hash and no content_hash.
    if let (Some(pre), None, Some(sz)) = (s_nonempty(v, "pre_hash"), &content_hash, size) {
        if st
            .blobs
            .values()
            .any(|b| b.size == sz && b.pre_hash.eq_ignore_ascii_case(pre))
        {
            return Err(ApiErr::new(409, "PreHashMatched", "Pre hash matched."));
        }
    }
    if let (Some(hash), Some(sz), true) = (&content_hash, size, hash_name != "none") {
        if st.blobs.get(hash).is_some_and(|b| b.size == sz) {
            let proof = std::fs::File::open(sh.blob_path(hash))
                .and_then(|mut f| crate::hashing::proof_code_of_file(&ctx.token, &mut f, sz));
            // A wrong proof is not an error: the client simply gets a normal upload session.
            if let Ok(p) = proof {
                if p == s(v, "proof_code").unwrap_or("").trim() {
                    let id = st.insert_file(&d, &parent, &name, sz, hash, local_c, local_m);
                    let upload_id = util::new_upload_id();
                    st.uploads.insert(
                        upload_id.clone(),
                        Upload {
                            file_id: id.clone(),
                            drive_id: d.clone(),
                            parts: Vec::new(),
                            committed_len: sz,
                            hasher: Sha1::new(),
                            in_progress: None,
                            done: true,
                            rapid: true,
                            declared_size: Some(sz),
                            part_sizes: BTreeMap::new(),
                            created_ms: util::now_ms(),
                        },
                    );
                    return Ok(
                        json!({"drive_id": d, "parent_file_id": parent, "file_id": id,
                        "file_name": name, "type": "file", "status": "available", "available": true,
                        "exist": false, "rapid_upload": true, "upload_id": upload_id}),
                    );
                }
            }
        }
    }
    let mut node = State::new_node(&d, &parent, &name, false);
    node.pending = true;
    node.local_created_at = local_c;
    node.local_modified_at = local_m;
    let id = node.file_id.clone();
    st.link(node);
    let upload_id = util::new_upload_id();
    let parts: Vec<(u32, Option<u64>)> = parts
        .into_iter()
        .map(|(n, ps)| (n, ps.or(if n == 1 { size } else { None })))
        .collect();
    let infos = part_infos(sh, st, &id, &upload_id, &parts);
    st.uploads.insert(
        upload_id.clone(),
        Upload {
            file_id: id.clone(),
            drive_id: d.clone(),
            parts: Vec::new(),
            committed_len: 0,
            hasher: Sha1::new(),
            in_progress: None,
            done: false,
            rapid: false,
            declared_size: size,
            part_sizes: parts
                .iter()
                .filter_map(|(n, s)| s.map(|s| (*n, s)))
                .collect(),
            created_ms: util::now_ms(),
        },
    );
    Ok(
        json!({"drive_id": d, "parent_file_id": parent, "file_id": id, "file_name": name,
        "type": "file", "status": "available", "available": true, "exist": false,
        "rapid_upload": false, "upload_id": upload_id, "revision_id": "", "location": "cn-beijing",
        "part_info_list": infos}),
    )
}

/// Drops upload sessions older than `Knobs::upload_ttl` (none with a part still arriving): an
/// unfinished one takes its pending item and its parts with it.
pub fn expire(sh: &Shared, st: &mut State) {
    let now = util::now_ms();
    st.last_sweep_ms = now;
    let ttl = i64::try_from(st.knobs.upload_ttl.as_millis()).unwrap_or(i64::MAX);
    let dead: Vec<String> = st
        .uploads
        .iter()
        .filter(|(_, u)| u.in_progress.is_none() && now.saturating_sub(u.created_ms) >= ttl)
        .map(|(id, _)| id.clone())
        .collect();
    for id in dead {
        let Some(u) = st.uploads.remove(&id) else {
            continue;
        };
        if !u.done {
            if st.nodes.get(&u.file_id).is_some_and(|n| n.pending) {
                st.unlink(&u.file_id);
            }
            let path = sh.upload_path(&id);
            sh.discard_file(st, path);
        }
    }
}

fn no_upload(id: &str) -> ApiErr {
    ApiErr::new(
        400,
        "NotFound.UploadId",
        format!("The resource upload_id cannot be found. upload_id {id}"),
    )
}

/// The live upload session named by the request (drive, file_id and upload_id must agree).
fn session<'a>(st: &'a State, v: &Value) -> Result<(String, &'a Upload, String), ApiErr> {
    let d = drive(st, v)?;
    let fid = s_nonempty(v, "file_id").ok_or_else(|| ApiErr::param("file_id"))?;
    let uid = s_nonempty(v, "upload_id").ok_or_else(|| ApiErr::param("upload_id"))?;
    let up = st
        .uploads
        .get(uid)
        .filter(|u| u.file_id == fid && u.drive_id == d)
        .ok_or_else(|| no_upload(uid))?;
    Ok((d, up, uid.to_string()))
}

pub fn get_upload_url(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let (d, up, uid) = session(st, v)?;
    if up.rapid {
        return Err(ApiErr::already_exists(&up.file_id));
    }
    if up.done {
        return Err(no_upload(&uid));
    }
    let fid = up.file_id.clone();
    let parts = part_list(v, true)?;
    let parts: Vec<(u32, Option<u64>)> = parts
        .into_iter()
        .map(|(n, ps)| (n, ps.or_else(|| up.part_sizes.get(&n).copied())))
        .collect();
    let infos = part_infos(sh, st, &fid, &uid, &parts);
    Ok(json!({"drive_id": d, "file_id": fid, "upload_id": uid,
        "created_at": util::fmt_ms(util::now_ms()), "part_info_list": infos}))
}

pub fn list_uploaded_parts(st: &mut State, v: &Value) -> ApiResult {
    let (d, up, uid) = session(st, v)?;
    if up.done {
        return Err(no_upload(&uid));
    }
    let after = int(v, "part_number_marker").unwrap_or(0);
    let limit = int(v, "max_parts")
        .filter(|m| *m > 0)
        .unwrap_or(1000)
        .min(1000) as usize;
    let rest: Vec<_> = up
        .parts
        .iter()
        .filter(|p| i64::from(p.number) > after)
        .collect();
    let page: Vec<Value> = rest
        .iter()
        .take(limit)
        .map(|p| json!({"part_number": p.number, "part_size": p.size, "etag": p.etag}))
        .collect();
    let next = if rest.len() > limit {
        rest[limit - 1].number.to_string()
    } else {
        String::new()
    };
    Ok(
        json!({"drive_id": d, "file_id": up.file_id, "upload_id": uid, "parallelUpload": false,
        "uploaded_parts": page, "next_part_number_marker": next}),
    )
}

pub fn complete(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let (_d, up, uid) = session(st, v)?;
    if up.rapid {
        // Rapid uploads are complete already; complete is accepted any number of times.
        let n = st
            .nodes
            .get(&up.file_id)
            .ok_or_else(|| ApiErr::not_found_file_id(&up.file_id))?;
        return Ok(file_json(sh, st, n));
    }
    if up.done {
        return Err(no_upload(&uid));
    }
    if up.in_progress.is_some() {
        return Err(ApiErr::new(
            400,
            "InvalidParameter.UploadId",
            "A part of this upload is still being received.",
        ));
    }
    let size = up.committed_len;
    if let Some(declared) = up.declared_size {
        if declared != size {
            return Err(ApiErr::new(
                400,
                "InvalidParameter.Size",
                format!("The uploaded size {size} does not match the declared size {declared}."),
            ));
        }
    }
    // Uploads created without a size are charged here.
    if up.declared_size.is_none() && st.used_bytes() + size > st.knobs.quota_bytes {
        return Err(quota_err());
    }
    let sha = hex::encode_upper(up.hasher.clone().finalize());
    let fid = up.file_id.clone();
    let path = sh.upload_path(&uid);
    let mut head = Vec::new();
    match std::fs::File::open(&path) {
        Ok(f) => {
            f.take(crate::hashing::PRE_HASH_BYTES as u64)
                .read_to_end(&mut head)
                .map_err(|e| {
                    ApiErr::new(
                        500,
                        "InternalError",
                        format!("reading the upload failed: {e}"),
                    )
                })?;
        }
        // Zero parts: an empty file.
        Err(_) => {
            std::fs::File::create(&path).map_err(|e| {
                ApiErr::new(
                    500,
                    "InternalError",
                    format!("creating the upload failed: {e}"),
                )
            })?;
        }
    }
    let pre = crate::hashing::pre_hash(&head);
    sh.adopt_blob(st, &path, &sha, size, &pre);
    if let Some(b) = st.blobs.get_mut(&sha) {
        b.refs += 1;
    }
    if let Some(u) = st.uploads.get_mut(&uid) {
        u.done = true;
    }
    let node = st
        .nodes
        .get_mut(&fid)
        .ok_or_else(|| ApiErr::not_found_file_id(&fid))?;
    node.pending = false;
    node.size = size;
    node.sha1 = Some(sha);
    node.updated_ms = util::now_ms();
    let node = node.clone();
    st.changed(Op::Create, &node.file_id);
    Ok(file_json(sh, st, &node))
}
