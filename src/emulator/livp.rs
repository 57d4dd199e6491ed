//! `.livp` live photos (reference 3.1, 3.7): a file whose object carries `streams_info`
//! (`{"jpeg":{"size":..},"mov":{"size":..}}`) and whose getDownloadUrl answers an empty `url`
//! and one signed URL per stream in `streamsUrl`. Each stream is a blob of the store, served by
//! the data host like any file body.

use super::state::{LivpStream, Node, Shared};
use super::util;
use serde_json::{json, Map, Value};

/// `streams_info` of a file object: the streams' sizes, or null for every other file.
pub fn streams_info(n: &Node) -> Value {
    if n.streams.is_empty() {
        return Value::Null;
    }
    let m: Map<String, Value> = n
        .streams
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                json!({"size": s.size, "content_hash": s.sha1, "content_hash_name": "sha1"}),
            )
        })
        .collect();
    Value::Object(m)
}

/// getDownloadUrl of a live photo: no single URL, one per stream (signed until `expires`).
pub fn download_url(sh: &Shared, n: &Node, expires: u64) -> Value {
    let urls: Map<String, Value> = n
        .streams
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                json!(sh.download_url(&s.sha1, &n.file_id, expires)),
            )
        })
        .collect();
    json!({
        "url": "", "streamsUrl": urls,
        "expiration": util::fmt_secs(expires), "method": "GET", "size": n.size,
        "file_id": n.file_id, "drive_id": n.drive_id,
        "content_hash": n.sha1, "content_hash_name": "sha1", "description": "",
    })
}

impl Shared {
    /// A live photo `name` (`.livp` added when missing) in `parent`. Its content (size, hash,
    /// quota) is the JPEG followed by the MOV; each is also a stream of its own.
    pub fn seed_livp(&self, parent: &str, name: &str, jpeg: &[u8], mov: &[u8]) -> String {
        let name = if name.to_ascii_lowercase().ends_with(".livp") {
            name.to_string()
        } else {
            format!("{name}.livp")
        };
        let whole = [jpeg, mov].concat();
        let id = self.seed_bytes(parent, &name, &whole);
        let streams = vec![
            LivpStream {
                name: "jpeg".into(),
                sha1: self.store_blob(jpeg),
                size: jpeg.len() as u64,
            },
            LivpStream {
                name: "mov".into(),
                sha1: self.store_blob(mov),
                size: mov.len() as u64,
            },
        ];
        if let Some(n) = self.lock().nodes.get_mut(&id) {
            n.streams = streams;
        }
        self.save_now();
        id
    }
}
