//! `alipanfs login` against the emulator, both flows: the QR code is "scanned" and confirmed
//! through the emulator's admin hook, the token lands in the store, and a following mount signs
//! in with it (its own bootstrap token is a dud, so nothing else could work). Expiry and
//! refusal end with one line and exit 1.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// `alipanfs login` with `args`, its stdout lines sent to the returned channel as they come.
fn start_login(args: &[String]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("login")
        .args(args)
        .arg("--qr-poll-interval")
        .arg("0.2")
        .env_remove("ALIPANFS_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("alipanfs login starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Lines until one contains `what` (panics after `timeout`, showing what came).
fn wait_line(rx: &mpsc::Receiver<String>, what: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(what);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!(
                "no line with {what:?} in {timeout:?}; got:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// Waits for the process (killing it after `timeout`); exit code and stderr.
fn finish(mut child: Child, timeout: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (status.code(), err)
}

fn flow_args(emulator: &Emulator, own_app: bool, token_file: &Path) -> Vec<String> {
    let mut a = vec!["--api-url".to_string(), emulator.api_url()];
    if own_app {
        // The app's credentials, as `mount` gets them.
        a.extend(emulator.mount_args().into_iter().skip(2));
    } else {
        a.extend(["--token-url".to_string(), emulator.token_helper_url()]);
    }
    a.extend(["--token-file".to_string(), token_file.display().to_string()]);
    a
}

fn login_then_mount(own_app: bool) {
    let (emulator, temp) = emulator_with(|_| {});
    let file_id = emulator.seed_file("root", "hello.txt", b"signed in by QR\n");
    // The path MountBuilder gives the daemon's token store.
    let token_file = temp.path().join("state/token.json");
    // Short-lived access tokens: the mount below must refresh with the login's refresh token.
    emulator.set_access_token_ttl(Duration::from_secs(2));
    let (child, rx) = start_login(&flow_args(&emulator, own_app, &token_file));
    let head = wait_line(&rx, "Waiting for the scan", Duration::from_secs(30));
    let text = head.join("\n");
    assert!(
        text.contains("/o/oauth/authorize?sid="),
        "the URL the code encodes is printed:\n{text}"
    );
    assert!(
        text.contains('█') || text.contains('▀'),
        "a QR code is drawn:\n{text}"
    );
    assert!(emulator.qr_action("scan"));
    wait_line(&rx, "Scanned", Duration::from_secs(10));
    assert!(emulator.qr_action("confirm"));
    let done = wait_line(&rx, "Signed in as", Duration::from_secs(10));
    let (code, err) = finish(child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "login exits 0; stderr: {err}");
    let last = done.last().unwrap();
    assert!(
        last.contains(&emulator.user_id()) && last.contains("token.json"),
        "{last}"
    );
    let store: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    let refresh = store["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        refresh.split('.').count(),
        3,
        "a JWT refresh token is stored"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A mount whose only working credential is the stored one.
    std::thread::sleep(Duration::from_secs(2));
    // (The harness mounts with the emulator's app; the service's tokens belong to that same
    // app, as the real service's belong to the app it holds.)
    let m = MountBuilder::new(emulator, temp)
        .arg("--refresh-token")
        .arg("not.a.token")
        .mount();
    let content = std::fs::read(m.path("hello.txt")).expect("read through the mount");
    assert_eq!(content, b"signed in by QR\n");
    assert!(m.emulator.file_sha1(&file_id).is_some());
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(m.path("after-refresh.txt"), b"x").unwrap();
    m.wait_for(
        "the upload after a refresh",
        Duration::from_secs(60),
        || m.remote("after-refresh.txt").is_some(),
    );
    let store: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m.token_file).unwrap()).unwrap();
    assert_ne!(
        store["refresh_token"].as_str().unwrap(),
        refresh,
        "the mount refreshed (rotating the login's refresh token)"
    );
}

#[test]
fn login_with_the_apps_own_flow_stores_a_token_a_mount_uses() {
    login_then_mount(true);
}

#[test]
fn login_through_the_token_service_stores_a_token_a_mount_uses() {
    login_then_mount(false);
}

fn login_fails_with_one_line(action: &str, expect: &str) {
    let (emulator, temp) = emulator_with(|_| {});
    let token_file = temp.path().join("token.json");
    let (child, rx) = start_login(&flow_args(&emulator, false, &token_file));
    wait_line(&rx, "Waiting for the scan", Duration::from_secs(30));
    assert!(emulator.qr_action(action));
    let (code, err) = finish(child, Duration::from_secs(20));
    assert_eq!(code, Some(1), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(expect), "{err}");
    assert!(!token_file.exists(), "nothing stored");
}

#[test]
fn an_expired_code_exits_1_with_one_line() {
    login_fails_with_one_line("expire", "expired");
}

#[test]
fn a_refused_sign_in_exits_1_with_one_line() {
    login_fails_with_one_line("deny", "not confirmed");
}

#[test]
fn an_unreachable_service_exits_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token.json");
    let args = vec![
        "--api-url".to_string(),
        "http://127.0.0.1:9".into(),
        "--token-url".into(),
        "http://127.0.0.1:9/alist/ali_open/token".into(),
        "--token-file".into(),
        token_file.display().to_string(),
    ];
    let (child, _rx) = start_login(&args);
    let (code, err) = finish(child, Duration::from_secs(30));
    assert_eq!(code, Some(1), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!token_file.exists());
}
