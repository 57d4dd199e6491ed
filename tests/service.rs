//! Running alipanfs as a service: sd_notify readiness and stop, daemon mode's verdicts, the
//! mount(8) helper with fstab-style options, a start before the network (emulator) is up,
//! `about`, and the systemd units passing `systemd-analyze verify`. Every test has a deadline and
//! unmounts on drop, and checks that no token or secret reached the logs.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A refresh token the emulator accepts: JWT-shaped, without a `sub` (the emulator's user id is
/// random, and a `sub` naming someone else is refused as a user switch).
const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ0ZXN0In0.c2VydmljZS10ZXN0LXRva2Vu";

/// Unmounts `dir` (lazily) and kills `child` when the test ends, however it ends.
struct Cleanup {
    dir: PathBuf,
    child: Option<Child>,
    daemon_pid: Option<i32>,
}

impl Cleanup {
    fn new(dir: &Path) -> Self {
        Cleanup {
            dir: dir.to_path_buf(),
            child: None,
            daemon_pid: None,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.daemon_pid.filter(|&p| alive(p)) {
            // SAFETY: plain kill(2) on the daemon this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
    }
}

/// Run a command to completion, killing it after `limit`.
fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("command starts");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether a process exists and is not a zombie (a detached daemon is nobody's child here).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The daemon's pid from daemon mode's "mounted DIR (pid N, log ...)" line.
fn daemon_pid(stdout: &[u8]) -> Option<i32> {
    let s = String::from_utf8_lossy(stdout);
    let rest = s.split("(pid ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The mountinfo line whose mount point is `dir`.
fn mountinfo_line(dir: &Path) -> Option<String> {
    let want = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .map(str::to_string)
}

/// Whether a mountinfo line is an alipanfs mount. As root, fuser calls mount(2) itself with the
/// type `fuse` (no subtype); through fusermount3 (non-root) the type is `fuse.alipanfs`. The
/// source is `alipanfs` either way, which is what umount and findmnt go by.
fn is_alipanfs_entry(line: &str) -> bool {
    line.split_once(" - ")
        .map(|(_, sup)| {
            sup.starts_with("fuse alipanfs ") || sup.starts_with("fuse.alipanfs alipanfs ")
        })
        .unwrap_or(false)
}

/// A config file with everything needed to reach `api_url` (the refresh token included, which
/// is why the file is what the fstab line names and not an option).
fn write_config(dir: &Path, api_url: &str, token: &str) -> PathBuf {
    let d = EmulatorConfig::default();
    let path = dir.join("alipanfs.toml");
    std::fs::write(
        &path,
        format!(
            "api-url = {api_url:?}\nclient-id = {:?}\nclient-secret = {:?}\n\
             token-file = {:?}\ncache-dir = {:?}\nrefresh-token = {token:?}\nstartup-timeout = 60\n",
            d.client_id,
            d.client_secret,
            dir.join("state/token.json"),
            dir.join("cache"),
        ),
    )
    .unwrap();
    path
}

/// No refresh token (initial or rotated) and no client secret in this log text.
fn assert_no_secrets(log: &str, tokens: &[String]) {
    let secret = EmulatorConfig::default().client_secret;
    for t in tokens.iter().chain(std::iter::once(&secret)) {
        assert!(!log.contains(t.as_str()), "a secret leaked into the log");
        // The signature part alone is secret enough to matter.
        if let Some(sig) = t.rsplit('.').next().filter(|s| s.len() > 8) {
            assert!(
                !log.contains(sig),
                "a token's signature leaked into the log"
            );
        }
    }
}

fn mount_command(config: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--log-level")
        .arg("alipanfs=debug,info")
        .arg("mount")
        .arg("--config")
        .arg(config)
        .env("XDG_STATE_HOME", state)
        .env_remove("RUST_LOG")
        .env_remove("ALIPANFS_REFRESH_TOKEN")
        .env_remove("NOTIFY_SOCKET");
    cmd
}

#[test]
fn ready_is_notified_only_once_the_mount_answers_and_sigterm_notifies_stopping() {
    let (emulator, temp) = emulator_with(|c| c.refresh_token = Some(TOKEN.into()));
    let mnt = temp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let config = write_config(temp.path(), &emulator.api_url(), TOKEN);
    let socket_path = temp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log_path = temp.path().join("foreground.log");
    let mut cleanup = Cleanup::new(&mnt);
    cleanup.child = Some(
        mount_command(&config, temp.path())
            .arg("--foreground")
            .arg(&mnt)
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let recv = |want: &str, limit: Duration| -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let done = msg.lines().any(|l| l == want);
                got.push(msg);
                if done {
                    return got;
                }
            }
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("no {want} within {limit:?} (got {got:?})\n{log}");
    };
    recv("READY=1", Duration::from_secs(30));
    // At the moment READY=1 arrives the mount is in the table and the kernel routes to us.
    let line = mountinfo_line(&mnt).expect("mounted when READY=1 arrives");
    assert!(is_alipanfs_entry(&line), "{line}");
    let meta = std::fs::metadata(&mnt).expect("the mount point answers stat");
    assert_ne!(
        meta.dev(),
        std::fs::metadata(temp.path()).unwrap().dev(),
        "stat still shows the underlying folder"
    );
    std::fs::read_dir(&mnt).expect("the mount lists its root");

    let pid = cleanup.child.as_ref().unwrap().id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    recv("STOPPING=1", Duration::from_secs(30));
    let child = cleanup.child.as_mut().unwrap();
    wait_until("the daemon to exit", Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    });
    assert!(child.try_wait().unwrap().unwrap().success());
    assert!(!is_mounted(&mnt), "still mounted after SIGTERM");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("DEBUG"), "the log was not at debug level");
    assert_no_secrets(&log, &[TOKEN.into(), emulator.refresh_token()]);
}

#[test]
fn daemon_mode_returns_once_mounted_and_fails_with_the_reason() {
    let (emulator, temp) = emulator_with(|c| c.refresh_token = Some(TOKEN.into()));
    let mnt = temp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut cleanup = Cleanup::new(&mnt);

    // A missing mount point: refused by the parent, with what to do.
    let config = write_config(temp.path(), &emulator.api_url(), TOKEN);
    let out = run_with_deadline(
        mount_command(&config, temp.path()).arg(temp.path().join("missing")),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not exist"), "{}", text(&out));

    // A rejected token: the background child's sign-in error comes back to the parent.
    let bad_dir = temp.path().join("bad");
    std::fs::create_dir(&bad_dir).unwrap();
    let bad = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bm90LXZhbGlkLXRva2Vu";
    let bad_config = write_config(&bad_dir, &emulator.api_url(), bad);
    let out = run_with_deadline(
        mount_command(&bad_config, &bad_dir).arg(&mnt),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out).to_lowercase();
    assert!(
        all.contains("sign-in") || all.contains("refresh token"),
        "{all}"
    );
    assert!(!is_mounted(&mnt));
    assert_no_secrets(&text(&out), &[bad.into()]);

    // A good start: returns 0 only once the mount answers.
    let out = run_with_deadline(
        mount_command(&config, temp.path()).arg(&mnt),
        Duration::from_secs(60),
    );
    cleanup.daemon_pid = daemon_pid(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(is_mounted(&mnt), "daemon mode returned before mounting");
    std::fs::read_dir(&mnt).expect("the mount answers right away");
    let pid = cleanup.daemon_pid.expect("the pid is printed");
    assert!(alive(pid));
    let umount = run_with_deadline(Command::new("umount").arg(&mnt), Duration::from_secs(30));
    assert!(umount.status.success(), "{}", text(&umount));
    wait_until(
        "the daemon to exit after umount",
        Duration::from_secs(30),
        || !alive(pid),
    );
    let log = std::fs::read_to_string(temp.path().join("alipanfs/alipanfs.log")).unwrap();
    assert!(log.contains("unmounted from outside"), "{log}");
    assert_no_secrets(&log, &[TOKEN.into(), emulator.refresh_token()]);
}

/// A symlink to the test binary (the mount helper, or `alipanfs` on PATH), removed on drop.
struct Link(PathBuf);

impl Link {
    fn install(path: &str) -> Self {
        let link = PathBuf::from(path);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(BIN, &link).expect("symlink the binary (needs root)");
        Link(link)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn mount_t_fuse_alipanfs_applies_fstab_options_and_umount_works() {
    let (emulator, temp) = emulator_with(|c| c.refresh_token = Some(TOKEN.into()));
    emulator.seed_demo_tree();
    {
        let _helper = Link::install("/sbin/mount.fuse.alipanfs");
        mount_by_type_and_check(&emulator, temp.path(), "mnt");
    }
    // Without mount.fuse.alipanfs, mount(8) falls back to fuse3's mount.fuse, which runs the type's
    // name (`alipanfs SOURCE DIR -o OPTS`) from a sanitized PATH that includes /usr/local/bin.
    // (One test for both: the helper link must be absent for the fallback to be taken.)
    let installed = Path::new("/usr/local/bin/alipanfs").exists();
    if Path::new("/sbin/mount.fuse3").exists() && !installed {
        let _on_path = Link::install("/usr/local/bin/alipanfs");
        mount_by_type_and_check(&emulator, temp.path(), "mnt2");
    }
}

/// `mount -t fuse.alipanfs CONFIG DIR -o ro,allow_other,uid=1000`: each option's effect, then
/// `umount DIR` and the daemon's exit.
fn mount_by_type_and_check(emulator: &Emulator, temp: &Path, name: &str) {
    let mnt = temp.join(name);
    std::fs::create_dir(&mnt).unwrap();
    let config = write_config(temp, &emulator.api_url(), TOKEN);
    let mut cleanup = Cleanup::new(&mnt);

    let out = run_with_deadline(
        Command::new("mount")
            .args(["-t", "fuse.alipanfs"])
            .arg(&config)
            .arg(&mnt)
            .args(["-o", "ro,allow_other,uid=1000"])
            .env("XDG_STATE_HOME", temp)
            .env("ALIPANFS_LOG_LEVEL", "alipanfs=debug,info")
            .env_remove("RUST_LOG")
            .env_remove("ALIPANFS_REFRESH_TOKEN"),
        Duration::from_secs(60),
    );
    cleanup.daemon_pid = daemon_pid(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    let line = mountinfo_line(&mnt).expect("mounted once mount(8) returns");
    let (mount_opts, super_part) = line.split_once(" - ").unwrap();
    let mount_opts = mount_opts.split(' ').nth(5).unwrap();
    let super_opts = super_part.split(' ').nth(2).unwrap();
    assert!(is_alipanfs_entry(&line), "{line}");
    assert!(
        mount_opts.split(',').any(|o| o == "ro"),
        "not read-only: {line}"
    );
    assert!(
        super_opts.split(',').any(|o| o == "allow_other"),
        "no allow_other: {line}"
    );

    // ro: writes fail with EROFS.
    let err = std::fs::write(mnt.join("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // uid=1000: the root and its entries belong to uid 1000.
    assert_eq!(std::fs::metadata(&mnt).unwrap().uid(), 1000);
    let entries: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert!(!entries.is_empty(), "the seeded tree is not visible");
    for e in &entries {
        assert_eq!(e.metadata().unwrap().uid(), 1000, "{:?}", e.path());
    }
    // A DirEntry keeps its directory open (for fstatat): drop them, or umount finds us busy.
    drop(entries);

    let umount = run_with_deadline(Command::new("umount").arg(&mnt), Duration::from_secs(30));
    assert!(umount.status.success(), "{}", text(&umount));
    assert!(!is_mounted(&mnt));
    if let Some(pid) = cleanup.daemon_pid {
        wait_until(
            "the daemon to exit after umount",
            Duration::from_secs(30),
            || !alive(pid),
        );
    }
    let log = std::fs::read_to_string(temp.join("alipanfs/alipanfs.log")).unwrap();
    assert!(log.contains("DEBUG"), "the log was not at debug level");
    assert_no_secrets(&log, &[TOKEN.into(), emulator.refresh_token()]);
    assert_no_secrets(&text(&out), &[TOKEN.into(), emulator.refresh_token()]);
}

#[test]
fn a_mount_started_before_the_api_is_reachable_comes_up_when_it_is() {
    let temp = tempfile::tempdir().unwrap();
    let mnt = temp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = write_config(temp.path(), &format!("http://{addr}"), TOKEN);
    let mut cleanup = Cleanup::new(&mnt);
    // Daemon mode: the parent waits for the verdict while the child retries the sign-in.
    let mut cmd = mount_command(&config, temp.path());
    cleanup.child = Some(
        cmd.arg(&mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!is_mounted(&mnt), "mounted without an API");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _emulator = rt
        .block_on(Emulator::start(
            addr,
            EmulatorConfig {
                data_dir: temp.path().join("emulator"),
                refresh_token: Some(TOKEN.into()),
                ..Default::default()
            },
        ))
        .expect("the emulator binds the chosen port");
    let child = cleanup.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the mount did not come up within 60 s of the API");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let out = child.wait_with_output().unwrap();
    cleanup.daemon_pid = daemon_pid(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(is_mounted(&mnt));
    std::fs::read_dir(&mnt).expect("the mount answers");
    let log = std::fs::read_to_string(temp.path().join("alipanfs/alipanfs.log")).unwrap();
    assert!(log.contains("unreachable"), "no retry was logged: {log}");
    assert_no_secrets(&log, &[TOKEN.into()]);
    let umount = run_with_deadline(Command::new("umount").arg(&mnt), Duration::from_secs(30));
    assert!(umount.status.success(), "{}", text(&umount));
}

#[test]
fn about_prints_user_drive_space_and_token_store() {
    let (emulator, temp) = emulator_with(|c| c.refresh_token = Some(TOKEN.into()));
    let config = write_config(temp.path(), &emulator.api_url(), TOKEN);
    let out = run_with_deadline(
        Command::new(BIN)
            .args(["--log-level", "alipanfs=debug,info", "about", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("ALIPANFS_REFRESH_TOKEN"),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let store = temp.path().join("state/token.json");
    assert!(
        stdout.contains(&format!("({})", emulator.user_id())),
        "{stdout}"
    );
    let drive_id = emulator.drive_id("default").unwrap_or_default();
    let resource = emulator.drive_id("resource").unwrap_or_default();
    assert!(
        stdout.contains(&format!("drive_id {drive_id})"))
            || stdout.contains(&format!("drive_id {resource})")),
        "{stdout}"
    );
    // Sizes in adaptive units: nothing written yet is "0 B", the quota is in TiB.
    assert!(stdout.contains("space:       0 B used of "), "{stdout}");
    assert!(stdout.contains("TiB free)"), "{stdout}");
    assert!(
        stdout.contains(&format!("token store: {}", store.display())),
        "{stdout}"
    );
    // Signing in rotated the token just now.
    assert!(stdout.contains("rotated 0h00m ago"), "{stdout}");
    assert!(store.exists());
    assert_no_secrets(&text(&out), &[TOKEN.into(), emulator.refresh_token()]);
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let temp = tempfile::tempdir().unwrap();
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let unit = std::fs::read_to_string(contrib.join("alipanfs@.service"))
        .unwrap()
        .replace("/usr/local/bin/alipanfs", BIN);
    let service = temp.path().join("alipanfs@test.service");
    std::fs::write(&service, unit).unwrap();
    let webdav = std::fs::read_to_string(contrib.join("alipanfs-webdav@.service"))
        .unwrap()
        .replace("/usr/local/bin/alipanfs", BIN);
    let webdav_service = temp.path().join("alipanfs-webdav@test.service");
    std::fs::write(&webdav_service, webdav).unwrap();
    let mut files = vec![service, webdav_service];
    for name in ["mnt-alipan.mount", "mnt-alipan.automount"] {
        std::fs::copy(contrib.join(name), temp.path().join(name)).unwrap();
        files.push(temp.path().join(name));
    }
    // --man=no: the man page (alipanfs man > alipanfs.1) is not installed on the test machine.
    let out = run_with_deadline(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&files)
            .env("SYSTEMD_LOG_LEVEL", "notice"),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("alipanfs@test.service")
            && !stderr.contains("alipanfs-webdav@test.service")
            && !stderr.contains("mnt-alipan"),
        "systemd-analyze complains: {stderr}"
    );
}
