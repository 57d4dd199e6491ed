//! Replacing a small file whole: a reader sees the old content or the new, never a mix.

use std::io::Write;
use std::path::Path;

/// How far a replacement must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the process (rename only): for hints whose loss costs a refetch.
    Process,
    /// Survives power loss: the file and its folder are fsynced.
    Power,
}

/// Write `bytes` to a 0600 temporary file beside `path` and rename it over `path`.
pub fn replace(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // NamedTempFile is created 0600 and removed if anything below fails.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    if durability == Durability::Power {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if durability == Durability::Power {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
