//! The drive's change log, and the delta feed that serves it when switched on.
//!
//! Every change to the tree (a new file or folder, a new revision, a rename, a move, a trash, a
//! permanent delete), made through the API or by the admin's "other device", is recorded here
//! with a growing cursor. The feed (`openFile/list_delta`, `openFile/get_last_cursor`, in the
//! PDS shape `{items:[{op, file_id, file}], cursor, has_more}`) is unconfirmed for the Open API,
//! so it is off by default (`EmulatorConfig::delta_feed`, admin `delta_feed`): off, both
//! endpoints answer 404 `NotFound` as an unknown route of the gateway would, and clients must work
//! without it. Only the newest `KEEP` changes are kept; an older cursor gets 400
//! `InvalidParameter.Cursor`, after which a client revalidates what it holds.

use super::errors::ApiErr;
use super::files::{drive, file_json, ApiResult};
use super::state::{Shared, State};
use super::util::int;
use serde_json::{json, Value};
use std::collections::VecDeque;

/// Changes kept for the feed.
const KEEP: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    /// New content (same file_id), or metadata such as a rename.
    Update,
    Move,
    Trash,
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Move => "move",
            Op::Trash => "trash",
            Op::Delete => "delete",
        }
    }
}

#[derive(Debug)]
struct Change {
    cursor: u64,
    op: Op,
    drive_id: String,
    file_id: String,
}

#[derive(Debug, Default)]
pub struct ChangeLog {
    last: u64,
    kept: VecDeque<Change>,
}

impl State {
    /// Records a change of `file_id` (its node, if it still exists, gives the drive).
    pub fn changed(&mut self, op: Op, file_id: &str) {
        let drive_id = self
            .nodes
            .get(file_id)
            .map(|n| n.drive_id.clone())
            .unwrap_or_default();
        self.changed_in(op, &drive_id, file_id);
    }

    pub fn changed_in(&mut self, op: Op, drive_id: &str, file_id: &str) {
        let log = &mut self.changes;
        log.last += 1;
        log.kept.push_back(Change {
            cursor: log.last,
            op,
            drive_id: drive_id.to_string(),
            file_id: file_id.to_string(),
        });
        if log.kept.len() > KEEP {
            log.kept.pop_front();
        }
    }
}

fn feed_off() -> ApiErr {
    ApiErr::new(404, "NotFound", "Not Found")
}

fn cursor_of(v: &Value) -> Result<u64, ApiErr> {
    let bad = || {
        ApiErr::new(
            400,
            "InvalidParameter.Cursor",
            "The input parameter cursor is not valid.",
        )
    };
    match v.get("cursor") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(c)) if c.is_empty() => Ok(0),
        Some(Value::String(c)) => c.parse().map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// `openFile/get_last_cursor`: `{cursor}` of the newest change, for a client starting to follow.
pub fn last_cursor(st: &State, v: &Value) -> ApiResult {
    if !st.knobs.delta_feed {
        return Err(feed_off());
    }
    drive(st, v)?;
    Ok(json!({"cursor": st.changes.last.to_string()}))
}

/// `openFile/list_delta`: the changes after `cursor`, oldest first, at most `limit` (≤ 100).
/// An item's `file` is the item as it is now (absent once deleted).
pub fn list_delta(sh: &Shared, st: &State, v: &Value) -> ApiResult {
    if !st.knobs.delta_feed {
        return Err(feed_off());
    }
    let drive_id = drive(st, v)?;
    let after = cursor_of(v)?;
    let limit = int(v, "limit").unwrap_or(100).clamp(1, 100) as usize;
    let log = &st.changes;
    let oldest = log.kept.front().map(|c| c.cursor).unwrap_or(log.last + 1);
    if after > log.last || (after + 1 < oldest && after != log.last) {
        return Err(ApiErr::new(
            400,
            "InvalidParameter.Cursor",
            "The cursor has expired or is not valid.",
        ));
    }
    let mut items = Vec::new();
    let mut cursor = after;
    let mut more = false;
    for c in log.kept.iter().filter(|c| c.cursor > after) {
        if c.drive_id != drive_id && !c.drive_id.is_empty() {
            cursor = c.cursor;
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        let mut item = json!({"op": c.op.as_str(), "file_id": c.file_id});
        if let Some(n) = st.nodes.get(&c.file_id).filter(|n| !n.pending) {
            item["file"] = file_json(sh, st, n);
            item["parent_file_id"] = json!(n.parent);
        }
        items.push(item);
        cursor = c.cursor;
    }
    Ok(json!({"items": items, "cursor": cursor.to_string(), "has_more": more}))
}
