//! The token store: one small JSON file holding the current refresh token (it rotates on every
//! refresh and the previous one stops working, so losing a rotation locks the user out) and the
//! current access token (so a restart inside its lifetime makes no refresh call).
//!
//! Every write is atomic and durable: temp file in the same folder (mode 0600), write, fsync,
//! rename over the old file, fsync the folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the file holds. Unknown fields are ignored and missing ones default, so older or
/// hand-edited files still load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenStore {
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub access_expires_at: Option<u64>,
    #[serde(default)]
    pub user_id: Option<String>,
    /// Unix seconds of the last rotation.
    #[serde(default)]
    pub updated_at: Option<u64>,
}

impl TokenStore {
    /// Reads the store; a missing or empty file is an empty store, anything unparsable is an
    /// `Error::TokenStore` naming the file (never silently replaced: it may be the only copy).
    pub fn load(path: &Path) -> Result<TokenStore> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenStore::default()),
            Err(e) => return Err(store_err(path, format!("cannot read: {e}"))),
        };
        if text.trim().is_empty() {
            return Ok(TokenStore::default());
        }
        let mut store: TokenStore = serde_json::from_str(&text).map_err(|e| {
            store_err(
                path,
                format!("corrupt ({e}); fix it or set a new token with `alipanfs token set`"),
            )
        })?;
        // Blank strings are as good as absent.
        for field in [&mut store.refresh_token, &mut store.access_token] {
            if field.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *field = None;
            }
        }
        Ok(store)
    }

    /// Writes atomically with mode 0600 (see module doc).
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let fail = |what: &str, e: std::io::Error| store_err(path, format!("{what}: {e}"));
        create_private_dir(&dir).map_err(|e| fail("cannot create folder", e))?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| store_err(path, format!("cannot encode: {e}")))?;
        // NamedTempFile is created 0600 and removed if anything below fails.
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| fail("cannot create temp file", e))?;
        set_mode_0600(tmp.path()).map_err(|e| fail("cannot set permissions", e))?;
        tmp.write_all(&json).map_err(|e| fail("cannot write", e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| fail("cannot fsync", e))?;
        tmp.persist(path)
            .map_err(|e| fail("cannot rename into place", e.error))?;
        // The rename is durable only once the folder entry is on disk.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("cannot fsync folder", e))?;
        Ok(())
    }
}

fn store_err(path: &Path, message: String) -> Error {
    Error::TokenStore {
        path: path.display().to_string(),
        message,
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn set_mode_0600(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// For `alipanfs token set`: replaces the stored refresh token (and drops the access token,
/// which belonged to the old sign-in).
pub fn store_refresh_token(path: &Path, refresh_token: &str) -> Result<()> {
    let token = refresh_token.trim();
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        return Err(Error::Config(
            "the refresh token must be a single non-empty word".into(),
        ));
    }
    let store = TokenStore {
        refresh_token: Some(token.to_string()),
        access_token: None,
        access_expires_at: None,
        user_id: jwt_sub(token),
        updated_at: Some(unix_now()),
    };
    store.save(path)
}

/// The `sub` claim of a JWT (the user id), without checking the signature: used only to
/// notice a token that belongs to another user.
pub fn jwt_sub(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match v.get("sub")? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// For `alipanfs about`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStatus {
    /// JWT `sub` of the tokens in use, or the stored user id.
    pub user_id: Option<String>,
    pub store_path: PathBuf,
    pub has_refresh_token: bool,
    pub last_rotation: Option<SystemTime>,
    pub access_expires_at: Option<SystemTime>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn unix_to_system(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(sub: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            enc(r#"{"alg":"HS256","typ":"JWT"}"#),
            enc(&format!(r#"{{"sub":"{sub}","exp":1}}"#))
        )
    }

    #[test]
    fn jwt_sub_decodes_and_tolerates_garbage() {
        assert_eq!(jwt_sub(&jwt("0ebd25")), Some("0ebd25".into()));
        assert_eq!(jwt_sub("garbage"), None);
        assert_eq!(jwt_sub("a.%%%.c"), None);
        assert_eq!(jwt_sub("a.e30.c"), None); // "{}"
    }

    #[test]
    fn missing_and_empty_files_are_empty_stores() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.json");
        assert_eq!(TokenStore::load(&p).unwrap(), TokenStore::default());
        std::fs::write(&p, "  \n").unwrap();
        assert_eq!(TokenStore::load(&p).unwrap(), TokenStore::default());
    }

    #[test]
    fn corrupt_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.json");
        std::fs::write(&p, "{\"refresh_token\": ").unwrap();
        match TokenStore::load(&p) {
            Err(Error::TokenStore { path, message }) => {
                assert!(path.ends_with("tokens.json"));
                assert!(message.contains("corrupt"));
            }
            other => panic!("unexpected {other:?}"),
        }
        // The corrupt file is left alone for the user to inspect.
        assert!(std::fs::read_to_string(&p).unwrap().starts_with('{'));
    }

    #[test]
    fn save_is_private_atomic_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/alipanfs/tokens.json");
        let s = TokenStore {
            refresh_token: Some("r1".into()),
            access_token: Some("a1".into()),
            access_expires_at: Some(42),
            user_id: Some("u".into()),
            updated_at: Some(7),
        };
        s.save(&p).unwrap();
        assert_eq!(TokenStore::load(&p).unwrap(), s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Overwrite: no temp files left behind, new content in place.
        let s2 = TokenStore {
            refresh_token: Some("r2".into()),
            ..s.clone()
        };
        s2.save(&p).unwrap();
        assert_eq!(
            TokenStore::load(&p).unwrap().refresh_token.as_deref(),
            Some("r2")
        );
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("tokens.json")]);
    }

    #[test]
    fn blank_fields_and_unknown_fields_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        std::fs::write(&p, r#"{"refresh_token":" ","access_token":null,"extra":1}"#).unwrap();
        assert_eq!(TokenStore::load(&p).unwrap(), TokenStore::default());
    }

    #[test]
    fn store_refresh_token_sets_user_and_drops_access() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        TokenStore {
            refresh_token: Some("old".into()),
            access_token: Some("acc".into()),
            ..Default::default()
        }
        .save(&p)
        .unwrap();
        let t = jwt("user1");
        store_refresh_token(&p, &format!(" {t}\n")).unwrap();
        let s = TokenStore::load(&p).unwrap();
        assert_eq!(s.refresh_token.as_deref(), Some(t.as_str()));
        assert_eq!(s.access_token, None);
        assert_eq!(s.user_id.as_deref(), Some("user1"));
        assert!(matches!(
            store_refresh_token(&p, "  "),
            Err(Error::Config(_))
        ));
    }
}
