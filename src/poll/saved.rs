//! The detector's position kept across mounts (`<cache-dir>/meta/<user>.<drive>/poll.json`,
//! written after every poll), so a mount learns what changed on the drive while no mount was
//! running, or since a crash, before it serves listings stored by the previous one.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::detect::Position;

#[derive(Serialize, Deserialize)]
struct Saved {
    /// When it was written, in milliseconds since the epoch.
    saved_at_ms: u64,
    position: Position,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The position saved at `path`, if it was saved less than `max_age` ago.
pub fn load(path: &Path, max_age: Duration) -> Option<Position> {
    let bytes = std::fs::read(path).ok()?;
    let saved: Saved = match serde_json::from_slice(&bytes) {
        Ok(saved) => saved,
        Err(e) => {
            warn!(path = %path.display(), "ignoring an unreadable poll position: {e}");
            return None;
        }
    };
    let age = Duration::from_millis(now_ms().saturating_sub(saved.saved_at_ms));
    (age < max_age).then_some(saved.position)
}

/// Saves `position` at `path` (whole or not at all).
pub fn save(path: &Path, position: &Position) {
    let saved = Saved {
        saved_at_ms: now_ms(),
        position: position.clone(),
    };
    let written = serde_json::to_vec(&saved)
        .map_err(std::io::Error::other)
        .and_then(|b| {
            crate::atomic_file::replace(path, &b, crate::atomic_file::Durability::Process)
        });
    if let Err(e) = written {
        debug!(path = %path.display(), "cannot save the poll position: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_comes_back_while_young_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("poll.json");
        let pos = Position::Search {
            at_ms: 1_714_557_600_500,
            whole_seconds: false,
            seen: vec![("65a1f0c2".into(), 1_714_557_600_500)],
        };
        assert_eq!(load(&path, Duration::from_secs(60)), None);
        save(&path, &pos);
        assert_eq!(load(&path, Duration::from_secs(60)), Some(pos));
        assert_eq!(load(&path, Duration::ZERO), None);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path, Duration::from_secs(60)), None);
    }
}
