//! HTTP Basic authentication for the WebDAV server: one user, its password read once from a
//! file only its owner can read (never from the command line, where `ps` shows it).
//!
//! The password is compared in constant time (as digests of equal length), and a wrong one
//! costs a second, taken one at a time across all connections, so guessing runs at one try
//! per second however many connections an attacker opens. A request with no credentials
//! (every client's first) is answered 401 at once.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};

/// How long a wrong password holds its answer back.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);

pub struct Credentials {
    /// SHA-1 of `user:password`: what a request's credentials are compared with.
    digest: [u8; 20],
    user: String,
    /// Serialises the delay of failed attempts.
    failures: tokio::sync::Mutex<()>,
}

/// What a request's `Authorization` header says.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No Basic credentials: ask for them.
    Missing,
    Wrong,
}

fn digest(user_colon_password: &[u8]) -> [u8; 20] {
    Sha1::digest(user_colon_password).into()
}

impl Credentials {
    /// `--webdav-user` and the password in `password_file` (its first line).
    pub fn load(user: &str, password_file: &Path) -> Result<Credentials> {
        if user.is_empty() || user.contains(':') {
            return Err(Error::Config(format!(
                "--webdav-user {user:?}: a user name is not empty and has no ':'"
            )));
        }
        let shown = password_file.display();
        let meta = std::fs::metadata(password_file)
            .map_err(|e| Error::Config(format!("--webdav-password-file {shown}: {e}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::Config(format!(
                    "--webdav-password-file {shown} can be read by others (mode {mode:03o}): chmod 600 {shown}"
                )));
            }
        }
        let text = std::fs::read_to_string(password_file)
            .map_err(|e| Error::Config(format!("--webdav-password-file {shown}: {e}")))?;
        let password = text.lines().next().unwrap_or("");
        if password.is_empty() {
            return Err(Error::Config(format!(
                "--webdav-password-file {shown} is empty: put the password on its first line"
            )));
        }
        Ok(Credentials::new(user, password))
    }

    pub fn new(user: &str, password: &str) -> Credentials {
        Credentials {
            digest: digest(format!("{user}:{password}").as_bytes()),
            user: user.to_string(),
            failures: tokio::sync::Mutex::new(()),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Judge an `Authorization` header value.
    pub fn check(&self, header: Option<&[u8]>) -> Verdict {
        let Some(encoded) = header.and_then(|h| {
            let h = std::str::from_utf8(h).ok()?.trim();
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        }) else {
            return Verdict::Missing;
        };
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return Verdict::Wrong;
        };
        let given = digest(&given);
        // Constant time: every byte is compared whatever the first difference.
        let diff = given
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Verdict::Allowed
        } else {
            Verdict::Wrong
        }
    }

    /// Hold back a failed attempt's answer, one failure at a time.
    pub async fn delay_failure(&self) {
        let _turn = self.failures.lock().await;
        tokio::time::sleep(FAILURE_DELAY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
        .into_bytes()
    }

    #[test]
    fn only_the_right_user_and_password_pass() {
        let c = Credentials::new("alice", "s3cret: with colon");
        assert_eq!(
            c.check(Some(&basic("alice:s3cret: with colon"))),
            Verdict::Allowed
        );
        assert_eq!(c.check(Some(&basic("alice:s3cret"))), Verdict::Wrong);
        assert_eq!(
            c.check(Some(&basic("bob:s3cret: with colon"))),
            Verdict::Wrong
        );
        assert_eq!(c.check(Some(b"Basic !!!")), Verdict::Wrong);
        assert_eq!(c.check(Some(b"Bearer abc")), Verdict::Missing);
        assert_eq!(c.check(None), Verdict::Missing);
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Credentials::load("alice", &file).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::load("alice", &file).unwrap();
        assert_eq!(c.check(Some(&basic("alice:hunter2"))), Verdict::Allowed);
    }
}
