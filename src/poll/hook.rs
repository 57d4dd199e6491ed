//! `--on-change CMD`: run `sh -c CMD` once per batch of changes, with the changed folders'
//! paths (relative to the mount root, one per line) on its standard input and
//! `ALIPANFS_MOUNTPOINT` in its environment. Its failures are logged, never fatal; a run that
//! takes longer than `HOOK_TIMEOUT` is killed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// Starts the hook for `folders` in the background.
pub fn spawn(cmd: &str, mountpoint: &Path, folders: Vec<String>) {
    let (cmd, mountpoint) = (cmd.to_string(), mountpoint.to_path_buf());
    tokio::spawn(async move {
        if let Err(e) = run(&cmd, &mountpoint, &folders).await {
            warn!(folders = folders.len(), "--on-change command failed: {e}");
        }
    });
}

async fn run(cmd: &str, mountpoint: &Path, folders: &[String]) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("ALIPANFS_MOUNTPOINT", mountpoint)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take();
    let run = async {
        if let Some(mut stdin) = stdin {
            let mut text = folders.join("\n");
            text.push('\n');
            // A command that does not read its input is not an error.
            let _ = stdin.write_all(text.as_bytes()).await;
        }
        child.wait().await
    };
    // On timeout the child is dropped, and so killed (`kill_on_drop`).
    let status = tokio::time::timeout(HOOK_TIMEOUT, run)
        .await
        .map_err(|_| {
            std::io::Error::other(format!("still running after {HOOK_TIMEOUT:?}; killed"))
        })??;
    if !status.success() {
        return Err(std::io::Error::other(format!("exited with {status}")));
    }
    info!(folders = folders.len(), "--on-change command ran");
    Ok(())
}
