//! The command line's refusals: each bad start is one clear line and a non-zero exit, and
//! nothing is mounted.

mod common;

use std::process::Command;

use common::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("ALIPANFS_REFRESH_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `alipanfs mount -f MNT` against `emulator`, with the token store at `token_file`.
fn foreground_mount(
    emulator: &Emulator,
    mnt: &std::path::Path,
    token_file: &std::path::Path,
    extra: &[&str],
) -> Vec<String> {
    let mut argv = vec!["mount".into(), "-f".into(), mnt.display().to_string()];
    argv.extend(emulator.mount_args());
    argv.extend(["--token-file".into(), token_file.display().to_string()]);
    argv.extend(extra.iter().map(|a| a.to_string()));
    argv
}

fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or("")
}

#[test]
fn a_missing_mount_point_is_refused_with_what_to_do() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("nope");
    let (code, err) = run(&["mount", "-f", missing.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        last_line(&err).contains("does not exist") && last_line(&err).contains("mkdir -p"),
        "{err}"
    );
}

#[test]
fn a_non_empty_or_file_mount_point_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(temp.path().join("file"), b"x").unwrap();
    let (code, err) = run(&["mount", "-f", temp.path().to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(last_line(&err).contains("not empty"), "{err}");
    let (code, err) = run(
        &["mount", "-f", temp.path().join("file").to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(last_line(&err).contains("not a directory"), "{err}");
}

#[test]
fn unknown_mount_options_are_refused_by_name() {
    let temp = tempfile::tempdir().unwrap();
    let (code, err) = run(
        &[
            "mount",
            "-f",
            temp.path().to_str().unwrap(),
            "-o",
            "ro,frobnicate=1",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(last_line(&err).contains("frobnicate"), "{err}");
}

#[test]
fn an_invalid_refresh_token_is_a_sign_in_error_and_nothing_is_mounted() {
    let (emulator, temp) = emulator_with(|_| {});
    let mnt = temp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let token_file = temp.path().join("token.json");
    let argv = foreground_mount(&emulator, &mnt, &token_file, &[]);
    let (code, err) = run(
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        &[(
            "ALIPANFS_REFRESH_TOKEN",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bm90LXZhbGlk",
        )],
    );
    assert_eq!(code, 1);
    let line = last_line(&err).to_lowercase();
    assert!(
        line.contains("sign-in") || line.contains("refresh token"),
        "{err}"
    );
    assert!(
        !err.contains("bm90LXZhbGlk"),
        "the token leaked into the output: {err}"
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn no_token_at_all_says_how_to_provide_one() {
    let (emulator, temp) = emulator_with(|_| {});
    let mnt = temp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let token_file = temp.path().join("token.json");
    let (code, err) = run(
        &[
            "mount",
            "-f",
            mnt.to_str().unwrap(),
            "--api-url",
            &emulator.api_url(),
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(last_line(&err).contains("token"), "{err}");
}

#[test]
fn an_unreachable_api_fails_after_the_startup_timeout() {
    let temp = tempfile::tempdir().unwrap();
    let mnt = temp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, err) = run(
        &[
            "mount",
            "-f",
            mnt.to_str().unwrap(),
            "--api-url",
            &format!("http://127.0.0.1:{port}"),
            "--client-id",
            "id",
            "--client-secret",
            "secret",
            "--token-file",
            temp.path().join("t.json").to_str().unwrap(),
            "--startup-timeout",
            "1",
        ],
        &[("ALIPANFS_REFRESH_TOKEN", "a.b.c")],
    );
    assert_eq!(code, 1);
    assert!(last_line(&err).contains("cannot reach"), "{err}");
}

#[test]
fn token_set_reads_stdin_and_refuses_non_jwt_input() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let temp = tempfile::tempdir().unwrap();
    let store = temp.path().join("state/token.json");
    let set = |input: &str| {
        let mut child = Command::new(BIN)
            .args(["token", "set", "--token-file", store.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(!set("not a token\n").status.success());
    assert!(!store.exists());
    let out = set("aaa.bbb.ccc\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&store).unwrap();
    assert!(text.contains("aaa.bbb.ccc"));
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("alipanfs"));
    }
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH alipanfs"));
}

#[test]
fn a_root_folder_id_that_is_missing_or_a_file_is_refused_by_name() {
    let (emulator, temp) = emulator_with(|_| {});
    let file_id = emulator.seed_file("root", "notes.txt", b"hello");
    let folder_id = emulator.seed_folder("root", "photos");
    emulator.seed_file(&folder_id, "inside.txt", b"x");
    let token_file = temp.path().join("token.json");
    let mnt = temp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let cache = temp.path().join("cache");
    for (id, reason) in [
        ("0000nosuchfolder0000", "does not exist"),
        (file_id.as_str(), "is a file"),
    ] {
        let extra = [
            "--cache-dir",
            cache.to_str().unwrap(),
            "--root-folder-id",
            id,
        ];
        let argv = foreground_mount(&emulator, &mnt, &token_file, &extra);
        let (code, err) = run(
            &argv.iter().map(String::as_str).collect::<Vec<_>>(),
            &[("ALIPANFS_REFRESH_TOKEN", &emulator.refresh_token())],
        );
        assert_ne!(code, 0, "{err}");
        let line = last_line(&err);
        assert!(line.contains(id) && line.contains(reason), "{id}: {err}");
        assert!(!is_mounted(&mnt), "{id}");
    }
    // A folder's id mounts, showing that folder.
    let m = MountBuilder::new(emulator, temp)
        .arg("--root-folder-id")
        .arg(folder_id)
        .mount();
    assert!(m.path("inside.txt").exists());
}

#[test]
fn switches_show_one_form_in_the_help_and_two_words_name_the_form_to_use() {
    let out = Command::new(BIN)
        .args(["mount", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for switch in [
        "read-only",
        "rapid-upload",
        "transcodes",
        "delete-permanently",
    ] {
        assert!(help.contains(&format!("--{switch}[=<on|off>]")), "{help}");
    }
    assert!(!help.contains("possible values: true, false"), "{help}");
    let temp = tempfile::tempdir().unwrap();
    let mnt = temp.path().to_str().unwrap();
    let (code, err) = run(&["mount", "-f", "--rapid-upload", "off", mnt], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(last_line(&err).contains("--rapid-upload=off"), "{err}");
    // Every spelling reaches the mount's own checks (here: the mount point is not empty).
    std::fs::write(temp.path().join("file"), b"x").unwrap();
    for switch in [
        "--read-only=yes",
        "--read-only=off",
        "--no-read-only",
        "--read-only",
    ] {
        let (code, err) = run(&["mount", "-f", switch, mnt], &[]);
        assert_eq!(code, 1, "{switch}: {err}");
        assert!(last_line(&err).contains("not empty"), "{switch}: {err}");
    }
}
