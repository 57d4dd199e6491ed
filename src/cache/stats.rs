//! What the cache reports: its status for `alipanfs status`, the lifetime hit counters saved
//! beside a namespace for `alipanfs about`, and the bytes it takes on disk.

use std::path::Path;

/// What the status command and `about` show.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheStatus {
    pub dir: String,
    pub limit: u64,
    pub used: u64,
    pub files: u64,
    pub blocks: u64,
    pub hit_blocks: u64,
    pub miss_blocks: u64,
    pub passthrough_opens: u64,
    /// Bytes read from the drive and not cached because the cache writer was behind (or the
    /// memory budget full) since the mount started: the price of never slowing a read. A
    /// later read fills those blocks. Figures from before this field read as 0.
    #[serde(default)]
    pub skipped_bytes: u64,
}

impl CacheStatus {
    /// Hits over all block reads, if any.
    pub fn hit_ratio(&self) -> Option<f64> {
        let all = self.hit_blocks + self.miss_blocks;
        (all > 0).then(|| self.hit_blocks as f64 / all as f64)
    }
}

/// Lifetime counters of a namespace, saved beside it for `alipanfs about`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct SavedStats {
    pub hit_blocks: u64,
    pub miss_blocks: u64,
    pub passthrough_opens: u64,
}

impl SavedStats {
    pub fn load(ns_dir: &Path) -> SavedStats {
        std::fs::read(ns_dir.join("stats.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// Bytes on disk under `dir` (allocated blocks, as du counts them).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let Ok(m) = e.metadata() else { return 0 };
            if m.is_dir() {
                disk_usage(&e.path())
            } else {
                m.blocks() * 512
            }
        })
        .sum()
}
