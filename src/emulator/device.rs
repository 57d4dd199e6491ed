//! "Another device": changes to the drive made as the phone app or the web would make them,
//! without going through the client under test (not counted, not rate-limited, no faults).
//!
//! Ops (admin `POST /__emulator/device/OP` with a JSON body, or `Emulator::device`):
//! `create` {parent_file_id, name, content | size+seed}, `mkdir` {parent_file_id, name},
//! `overwrite` {file_id, content | size+seed} (same file_id, new revision), `rename` {file_id,
//! name}, `move` {file_id, to_parent_file_id}, `trash` {file_id}, `delete` {file_id}. Each moves
//! the item's `updated_at` and lands in the change log like any API change. `parent_file_id`
//! "root" means the default drive's root; other ids carry their own drive.

use super::files;
use super::state::Shared;
use super::util::{int, s};
use serde_json::{json, Value};

/// Content of a `create`/`overwrite`: `content` (UTF-8 text) or `size` bytes of pattern `seed`.
fn content_of(v: &Value) -> Vec<u8> {
    match s(v, "content") {
        Some(c) => c.as_bytes().to_vec(),
        None => {
            let size = int(v, "size").unwrap_or(0).max(0) as usize;
            super::seed::pattern_bytes(int(v, "seed").unwrap_or(0) as u64, 0, size)
        }
    }
}

fn required<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    s(v, key)
        .filter(|x| !x.is_empty())
        .ok_or_else(|| format!("{key} is required"))
}

/// Applies one op; answers `{file_id}` (and the API's answer for the others) or why not.
pub fn apply(sh: &Shared, op: &str, v: &Value) -> Result<Value, String> {
    if op == "create" || op == "mkdir" {
        let parent = required(v, "parent_file_id")?;
        let st = sh.lock();
        let is_folder = st.nodes.get(parent).is_some_and(|n| n.is_dir && !n.pending);
        if parent != "root" && (!is_folder || st.in_bin(parent)) {
            return Err(format!("no folder {parent}"));
        }
    }
    match op {
        "create" => {
            let id = sh.seed_bytes(
                required(v, "parent_file_id")?,
                required(v, "name")?,
                &content_of(v),
            );
            Ok(json!({"file_id": id}))
        }
        "mkdir" => {
            let id = sh.seed_folder(required(v, "parent_file_id")?, required(v, "name")?);
            Ok(json!({"file_id": id}))
        }
        "overwrite" => {
            let id = required(v, "file_id")?;
            if !sh.lock().nodes.contains_key(id) {
                return Err(format!("no item {id}"));
            }
            sh.replace_bytes(id, &content_of(v));
            Ok(json!({"file_id": id}))
        }
        "rename" | "move" | "trash" | "delete" => {
            let out = api_op(sh, op, v)?;
            sh.save_now();
            Ok(out)
        }
        _ => Err(format!("unknown device op {op}")),
    }
}

/// The four ops the API itself offers, run through its own handlers (same checks, same change
/// records) with the item's drive filled in.
fn api_op(sh: &Shared, op: &str, v: &Value) -> Result<Value, String> {
    let id = required(v, "file_id")?;
    let mut st = sh.lock();
    let drive = st
        .nodes
        .get(id)
        .map(|n| n.drive_id.clone())
        .ok_or_else(|| format!("no item {id}"))?;
    let mut req = v.clone();
    req["drive_id"] = json!(drive);
    let result = match op {
        "rename" => {
            req["check_name_mode"] = json!("refuse");
            files::update(sh, &mut st, &req)
        }
        "move" => files::move_file(&mut st, &req),
        "trash" => files::trash(&mut st, &req),
        _ => files::delete(sh, &mut st, &req),
    };
    result.map_err(|e| format!("{} {}", e.code, e.message))
}
