//! The WebDAV server (`alipanfs serve webdav`, `mount --webdav-listen`) against the emulator,
//! through the clients people use: litmus (the conformance suite), rclone, curl, and the mount
//! itself. Each server runs as the real binary under a watchdog, and every check of content
//! looks at the emulator's drive too.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{emulator_with, local_tree, sh, sh_status, wait_until, Emulator, MountBuilder, BIN};

/// `alipanfs serve webdav` over an emulator, killed at drop (or by the watchdog at its deadline).
struct DavServer {
    emulator: Emulator,
    url: String,
    child: Arc<Mutex<Option<Child>>>,
    done: Arc<AtomicBool>,
    log: PathBuf,
    temp: tempfile::TempDir,
}

/// Start `serve webdav` with `args` on an emulator seeded by `seed`; Err(log) when it exits
/// instead of serving.
fn try_serve(seed: impl FnOnce(&Emulator), args: &[&str]) -> Result<DavServer, String> {
    let (emulator, temp) = emulator_with(|_| {});
    seed(&emulator);
    let (child, url) = spawn_server(&emulator, temp.path(), args)?;
    let child = Arc::new(Mutex::new(Some(child)));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (child, done) = (child.clone(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(300) {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("watchdog: WebDAV test overran 300 s; killing the server");
            if let Some(c) = child.lock().unwrap().as_mut() {
                let _ = c.kill();
            }
        });
    }
    let log = temp.path().join("serve.log");
    Ok(DavServer {
        emulator,
        url,
        child,
        done,
        log,
        temp,
    })
}

/// Run `serve webdav` with the token store and cache folder under `dir` (the same ones each
/// time: a restart); returns the process and the URL it printed.
fn spawn_server(emulator: &Emulator, dir: &Path, args: &[&str]) -> Result<(Child, String), String> {
    let log = dir.join("serve.log");
    let out = dir.join("serve.out");
    let mut child = Command::new(BIN)
        .args(["--log-level", "alipanfs=debug,info", "serve", "webdav"])
        .args(emulator.mount_args())
        .arg("--token-file")
        .arg(dir.join("token.json"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .env("ALIPANFS_REFRESH_TOKEN", emulator.refresh_token())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap(),
        )
        .spawn()
        .map_err(|e| format!("cannot start {BIN}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let printed = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(url) = printed
            .lines()
            .find_map(|l| l.strip_prefix("serving WebDAV at "))
        {
            return Ok((child, url.trim_end_matches('/').to_string()));
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "no WebDAV server within 30 s\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(seed: impl FnOnce(&Emulator), args: &[&str]) -> DavServer {
    try_serve(seed, args).unwrap_or_else(|log| panic!("serve webdav failed:\n{log}"))
}

impl DavServer {
    /// SIGKILL (no drain), then start again on the same token store and cache folder.
    fn kill9_and_restart(&mut self, args: &[&str]) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let (child, url) = spawn_server(&self.emulator, self.temp.path(), args)
            .unwrap_or_else(|log| panic!("restart failed:\n{log}"));
        *self.child.lock().unwrap() = Some(child);
        self.url = url;
    }

    /// SIGTERM and wait (bounded) for the process to exit; its exit status.
    fn terminate(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.child.lock().unwrap();
        let c = guard.as_mut()?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Ok(Some(status)) = c.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                break c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        *guard = None;
        status
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Live drive entries under `/prefix`, by relative path: None for folders, SHA-1 for files.
    fn drive_tree(&self, prefix: &str) -> BTreeMap<String, Option<String>> {
        drive_tree(&self.emulator, prefix)
    }
}

impl Drop for DavServer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.child.lock().unwrap().take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn drive_tree(emulator: &Emulator, prefix: &str) -> BTreeMap<String, Option<String>> {
    let prefix = match prefix.trim_matches('/') {
        "" => "/".to_string(),
        p => format!("/{p}/"),
    };
    emulator
        .tree()
        .into_iter()
        .filter(|e| !e.trashed)
        .filter_map(|e| {
            let rel = e.path.strip_prefix(&prefix)?.to_string();
            Some((rel, if e.is_dir { None } else { e.sha1.clone() }))
        })
        .collect()
}

/// `curl` with `args`: (HTTP status, body).
fn curl(args: &str) -> (u16, Vec<u8>) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("curl -sS -o - -w '\\n%{{http_code}}' {args}"))
        .output()
        .expect("curl runs");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&body[nl + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(nl);
    (status, body)
}

/// Bytes a test file of `len` holds (deterministic, not compressible).
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    hex::encode_upper(sha1::Sha1::digest(bytes))
}

#[test]
fn litmus_passes_basic_copymove_props_and_locks() {
    let server = serve(|_| {}, &["--addr", "127.0.0.1:0"]);
    let (status, out) = sh_status(&format!(
        "cd '{}' && TESTS='basic copymove props locks' timeout 300 litmus '{}/' 2>&1",
        server.temp.path().display(),
        server.url
    ));
    // "<- summary for `basic': of 16 tests run: 16 passed, 0 failed. 100.0%"
    let mut suites = BTreeMap::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("<- summary for `") else {
            continue;
        };
        let name = rest.split('\'').next().unwrap().to_string();
        let numbers: Vec<u32> = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        suites.insert(name, (numbers[0], numbers[1]));
    }
    eprintln!("litmus: {suites:?} (exit {status})");
    for suite in ["basic", "copymove", "props", "locks"] {
        assert!(
            suites.contains_key(suite),
            "litmus did not run {suite}:\n{out}"
        );
    }
    let (run, passed) = suites["basic"];
    assert_eq!(run, passed, "basic must pass whole:\n{out}");
    let (run, passed) = suites
        .values()
        .fold((0, 0), |(r, p), (run, passed)| (r + run, p + passed));
    assert!(
        passed * 100 >= run * 95,
        "{passed} of {run} litmus tests passed (95% asked):\n{out}"
    );
    // Every PUT went through a temporary name: none is left on the drive once uploads land.
    std::thread::sleep(Duration::from_secs(2));
    let tree = server.drive_tree("");
    assert!(
        !tree.keys().any(|k| k.contains(".davput-")),
        "temporary names left: {tree:?}"
    );
}

#[test]
fn rclone_copies_a_tree_in_and_the_drive_holds_every_file() {
    let server = serve(|_| {}, &["--addr", "127.0.0.1:0"]);
    let src = server.temp.path().join("src");
    // 60 files from 0 B to 8 MiB, nested three deep, one folder and one file with CJK names.
    let dirs = ["", "a", "a/b", "a/b/c", "中文 目录", "media"];
    let mut n = 0u64;
    for (i, dir) in dirs.iter().enumerate() {
        std::fs::create_dir_all(src.join(dir)).unwrap();
        for j in 0..10 {
            n += 1;
            let len = match n {
                1 => 0,
                2 => 8 << 20,
                _ => ((n * n * 7919) % (900 << 10)) as usize,
            };
            let name = if i == 4 && j == 0 {
                "照片 01.jpg".to_string()
            } else {
                format!("f{n:02}.bin")
            };
            std::fs::write(src.join(dir).join(name), content(n, len)).unwrap();
        }
    }
    let remote = format!(
        "--webdav-url '{}/' --webdav-vendor other :webdav:tree",
        server.url
    );
    sh(&format!("rclone copy '{}' {remote} 2>&1", src.display()));
    let check = sh(&format!(
        "rclone check --download '{}' {remote} 2>&1",
        src.display()
    ));
    assert!(check.contains("0 differences found"), "{check}");
    assert!(check.contains("60 matching files"), "{check}");
    let want = local_tree(&src);
    assert_eq!(want.values().filter(|v| v.is_some()).count(), 60);
    wait_until(
        "every file to land on the drive",
        Duration::from_secs(120),
        || server.log(),
        || server.drive_tree("tree") == want,
    );
    assert!(
        !server.drive_tree("").keys().any(|k| k.contains(".davput-")),
        "a PUT's temporary name was left"
    );
}

#[test]
fn credentials_range_get_depth_and_refusals() {
    let file = content(7, 3 << 20);
    let seeded = file.clone();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "correct horse\n").unwrap();
    sh(&format!("chmod 600 '{}'", password.display()));
    let pw = password.display().to_string();
    let server = serve(
        move |e| {
            e.seed_file("root", "big.bin", &seeded);
        },
        &[
            "--addr",
            "127.0.0.1:0",
            "--user",
            "alice",
            "--password-file",
            &pw,
        ],
    );
    let url = &server.url;

    let (status, _) = curl(&format!("-X PROPFIND -H 'Depth: 1' '{url}/'"));
    assert_eq!(status, 401, "no credentials");
    let headers = sh(&format!("curl -sS -D - -o /dev/null '{url}/big.bin'"));
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{headers}"
    );
    let (status, _) = curl(&format!("-u alice:wrong '{url}/big.bin'"));
    assert_eq!(status, 401, "a wrong password");
    let (status, _) = curl(&format!("-u bob:'correct horse' '{url}/big.bin'"));
    assert_eq!(status, 401, "a wrong user");
    assert!(
        !server.log().contains("correct horse"),
        "a password reached the log"
    );

    let auth = "-u 'alice:correct horse'";
    let (status, body) = curl(&format!("{auth} -X PROPFIND -H 'Depth: 1' '{url}/'"));
    assert_eq!(status, 207, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("big.bin"));
    let (status, body) = curl(&format!("{auth} -r 1000000-1999999 '{url}/big.bin'"));
    assert_eq!(status, 206);
    assert_eq!(body, file[1_000_000..2_000_000], "a range GET's bytes");
    let headers = sh(&format!(
        "curl -sS {auth} -r 5-9 -D - -o /dev/null '{url}/big.bin'"
    ));
    assert!(
        headers.contains(&format!("bytes 5-9/{}", file.len())),
        "Content-Range: {headers}"
    );
    let (status, body) = curl(&format!("{auth} '{url}/big.bin'"));
    assert_eq!(status, 200);
    assert_eq!(sha1_hex(&body), sha1_hex(&file), "a whole GET's bytes");
    let (status, body) = curl(&format!("{auth} -X PROPFIND -H 'Depth: infinity' '{url}/'"));
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("propfind-finite-depth"));

    // Refused at start, in one line: another address than loopback without a user, and a
    // password file others can read.
    let err = try_serve(|_| {}, &["--addr", "0.0.0.0:0"])
        .err()
        .expect("refused");
    assert!(
        err.contains("refusing to serve WebDAV on 0.0.0.0:0 without a password"),
        "{err}"
    );
    sh(&format!("chmod 644 '{pw}'"));
    let err = try_serve(
        |_| {},
        &[
            "--addr",
            "127.0.0.1:0",
            "--user",
            "alice",
            "--password-file",
            &pw,
        ],
    )
    .err()
    .expect("refused");
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn read_only_refuses_every_change_with_403() {
    let server = serve(
        |e| {
            let docs = e.seed_folder("root", "docs");
            e.seed_file(&docs, "a.txt", b"alpha");
        },
        &["--addr", "127.0.0.1:0", "--read-only"],
    );
    let url = &server.url;
    let before = server.drive_tree("");
    let (status, body) = curl(&format!("'{url}/docs/a.txt'"));
    assert_eq!((status, body.as_slice()), (200, &b"alpha"[..]));
    for (what, args) in [
        ("PUT", format!("-T /etc/hostname '{url}/docs/new.txt'")),
        ("PUT over", format!("-T /etc/hostname '{url}/docs/a.txt'")),
        ("DELETE", format!("-X DELETE '{url}/docs/a.txt'")),
        ("MKCOL", format!("-X MKCOL '{url}/newdir'")),
        ("MOVE", format!("-X MOVE -H 'Destination: {url}/docs/b.txt' '{url}/docs/a.txt'")),
        ("COPY", format!("-X COPY -H 'Destination: {url}/docs/c.txt' '{url}/docs/a.txt'")),
        ("PROPPATCH", format!("-X PROPPATCH --data '<?xml version=\"1.0\"?><propertyupdate xmlns=\"DAV:\"><set><prop><x xmlns=\"urn:t\">1</x></prop></set></propertyupdate>' '{url}/docs/a.txt'")),
        ("LOCK", format!("-X LOCK --data '<?xml version=\"1.0\"?><lockinfo xmlns=\"DAV:\"><lockscope><exclusive/></lockscope><locktype><write/></locktype></lockinfo>' '{url}/docs/a.txt'")),
    ] {
        let (status, _) = curl(&args);
        assert_eq!(status, 403, "{what} on a read-only server");
    }
    assert_eq!(server.drive_tree(""), before, "the drive changed");
}

#[test]
fn a_put_broken_off_leaves_the_old_file_and_no_trace() {
    let server = serve(
        |e| {
            e.seed_file("root", "keep.txt", b"the old content");
        },
        &["--addr", "127.0.0.1:0"],
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    {
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            conn,
            "PUT /keep.txt HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\nonly ten b"
        )
        .unwrap();
        conn.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Closed with 99,990 bytes never sent.
    }
    wait_until(
        "the broken PUT's file to go",
        Duration::from_secs(15),
        || server.log(),
        || {
            let (_, body) = curl(&format!("-X PROPFIND -H 'Depth: 1' '{}/'", server.url));
            !String::from_utf8_lossy(&body).contains("davput")
        },
    );
    let (status, body) = curl(&format!("'{}/keep.txt'", server.url));
    assert_eq!((status, body.as_slice()), (200, &b"the old content"[..]));
    std::thread::sleep(Duration::from_secs(1));
    let tree = server.drive_tree("");
    assert_eq!(tree.len(), 1, "{tree:?}");
    assert_eq!(tree["keep.txt"], Some(sha1_hex(b"the old content")));

    // A whole PUT replaces it, through the temporary name: the drive ends with one file.
    let (status, _) = curl(&format!("-T /etc/hostname '{}/keep.txt'", server.url));
    assert!(status == 201 || status == 204, "PUT answered {status}");
    let want = sha1_hex(&std::fs::read("/etc/hostname").unwrap());
    wait_until(
        "the new version on the drive",
        Duration::from_secs(30),
        || server.log(),
        || {
            let tree = server.drive_tree("");
            tree.len() == 1 && tree.get("keep.txt") == Some(&Some(want.clone()))
        },
    );
}

#[test]
fn https_with_a_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    sh(&format!(
        "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 2 -keyout '{}' -out '{}' 2>&1",
        key.display(),
        cert.display()
    ));
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let server = serve(
        |e| {
            e.seed_file("root", "secret.txt", b"over tls");
        },
        &["--addr", "127.0.0.1:0", "--tls-cert", &c, "--tls-key", &k],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let (status, body) = curl(&format!(
        "--cacert '{c}' --resolve localhost:{port}:127.0.0.1 'https://localhost:{port}/secret.txt'",
        port = server.url.rsplit(':').next().unwrap()
    ));
    assert_eq!((status, body.as_slice()), (200, &b"over tls"[..]));
    let plain = server.url.replace("https://", "http://");
    let (status, _) = curl(&format!("'{plain}/secret.txt'"));
    assert_ne!(status, 200, "plain HTTP to the TLS port");
    // A key that does not go with the certificate is refused at start.
    let other = dir.path().join("other.pem");
    sh(&format!(
        "openssl genrsa -out '{}' 2048 2>&1",
        other.display()
    ));
    let o = other.display().to_string();
    let err = try_serve(
        |_| {},
        &["--addr", "127.0.0.1:0", "--tls-cert", &c, "--tls-key", &o],
    )
    .err()
    .expect("refused");
    assert!(err.contains("does not go with the certificate"), "{err}");
}

#[test]
fn transcodes_play_over_webdav_and_parallel_gets_keep_within_the_download_cap() {
    let big = content(11, 24 << 20);
    let seeded = big.clone();
    let server = serve(
        move |e| {
            e.seed_demo_tree();
            e.seed_file("root", "big.bin", &seeded);
        },
        &["--addr", "127.0.0.1:0", "--cache-size", "0"],
    );
    let url = &server.url;
    let (status, playlist) = curl(&format!("'{url}/.transcoded/Videos/sample.mp4/SD.m3u8'"));
    let playlist = String::from_utf8_lossy(&playlist).to_string();
    assert_eq!(status, 200, "{playlist}");
    assert!(
        playlist.starts_with("#EXTM3U") && playlist.contains("SD/000000.ts"),
        "{playlist}"
    );
    let (status, segment) = curl(&format!(
        "'{url}/.transcoded/Videos/sample.mp4/SD/000000.ts'"
    ));
    assert_eq!(status, 200);
    assert!(
        segment.len() > 1000 && segment[0] == 0x47,
        "an MPEG-TS segment"
    );

    // Eight clients at once: the account's three download connections are never exceeded.
    let want = sha1_hex(&big);
    let outs = sh(&format!(
        "for i in 1 2 3 4 5 6 7 8; do (curl -sS '{url}/big.bin' | sha1sum) & done; wait"
    ));
    let sums: Vec<&str> = outs.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(sums.len(), 8, "{outs}");
    assert!(sums.iter().all(|s| s.eq_ignore_ascii_case(&want)), "{outs}");
    // The reader holds at most three downloads at a time. The emulator counts a connection
    // the reader dropped (a read-ahead preempted by a demand read) until it notices, so a
    // handover can now and then be refused and retried; a reader that exceeded the cap would
    // be refused on every fourth request.
    let denied = server
        .emulator
        .call_count(alipanfs::emulator::DENIED_CONCURRENCY);
    let gets = server.emulator.call_count("data/get");
    eprintln!("8 parallel GETs: {gets} data GETs, {denied} refused for the connection cap");
    assert!(
        denied * 10 <= gets,
        "{denied} of {gets} downloads refused for exceeding the connection cap"
    );
}

#[test]
fn a_mount_and_its_webdav_server_share_one_core() {
    let (emulator, temp) = emulator_with(|_| {});
    emulator.seed_file("root", "from-drive.txt", b"on the drive");
    let m = MountBuilder::new(emulator, temp)
        .arg("--webdav-listen")
        .arg("127.0.0.1:0")
        .mount();
    let url = webdav_url(&m, 1);
    let status = sh(&format!("{BIN} status '{}'", m.dir.display()));
    assert!(
        status.contains(&format!("webdav: serving {url}/")),
        "{status}"
    );
    // Through the mount, then WebDAV at once (before the upload lands).
    std::fs::write(m.path("written-here.txt"), b"written through the mount").unwrap();
    let (status, body) = curl(&format!("'{url}/written-here.txt'"));
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"written through the mount"[..])
    );
    // Through WebDAV, then the mount at once.
    let local = m.dir.parent().unwrap().join("put.txt");
    std::fs::write(&local, b"put over webdav").unwrap();
    let (status, _) = curl(&format!("-T '{}' '{url}/put.txt'", local.display()));
    assert_eq!(status, 201);
    assert_eq!(
        std::fs::read(m.path("put.txt")).unwrap(),
        b"put over webdav"
    );
    let (status, _) = curl(&format!("-X MKCOL '{url}/made'"));
    assert_eq!(status, 201);
    let (status, _) = curl(&format!(
        "-X MOVE -H 'Destination: {url}/made/moved.txt' '{url}/put.txt'"
    ));
    assert_eq!(status, 201);
    assert!(!m.path("put.txt").exists());
    assert_eq!(
        std::fs::read(m.path("made/moved.txt")).unwrap(),
        b"put over webdav"
    );
    let (status, _) = curl(&format!(
        "-X COPY -H 'Destination: {url}/made/copy.txt' '{url}/from-drive.txt'"
    ));
    assert_eq!(status, 201);
    assert_eq!(
        std::fs::read(m.path("made/copy.txt")).unwrap(),
        b"on the drive"
    );
    std::fs::remove_file(m.path("from-drive.txt")).unwrap();
    let (status, _) = curl(&format!("'{url}/from-drive.txt'"));
    assert_eq!(status, 404, "removed through the mount");

    m.sync_all(Duration::from_secs(60));
    let tree = m.drive_tree("");
    let expect: BTreeMap<String, Option<String>> = [
        ("made", None),
        ("made/copy.txt", Some(sha1_hex(b"on the drive"))),
        ("made/moved.txt", Some(sha1_hex(b"put over webdav"))),
        (
            "written-here.txt",
            Some(sha1_hex(b"written through the mount")),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(tree, expect);
    let copies = m.emulator.call_count("openFile/copy");
    assert_eq!(copies, 1, "COPY used the drive's copy");
}

#[test]
fn a_put_answered_reaches_the_drive_after_sigterm_and_after_sigkill() {
    let mut server = serve(
        |e| {
            // Part uploads at 2 MiB/s: a PUT's upload is still running when the server is
            // stopped.
            e.set_faults(common::Faults {
                upload_bandwidth: Some(2 << 20),
                ..Default::default()
            });
        },
        &["--addr", "127.0.0.1:0", "--upload-while-writing", "off"],
    );
    let dir = server.temp.path().to_path_buf();
    let (a, b) = (content(21, 6 << 20), content(22, 6 << 20));
    std::fs::write(dir.join("a.bin"), &a).unwrap();
    std::fs::write(dir.join("b.bin"), &b).unwrap();

    // SIGKILL right after the PUT was answered: the restarted server uploads it.
    let (status, _) = curl(&format!(
        "-T '{}' '{}/a.bin'",
        dir.join("a.bin").display(),
        server.url
    ));
    assert_eq!(status, 201);
    assert!(
        !server.drive_tree("").contains_key("a.bin"),
        "uploaded before the kill: the test proves nothing"
    );
    server.kill9_and_restart(&["--addr", "127.0.0.1:0", "--upload-while-writing", "off"]);
    wait_until(
        "a.bin on the drive after SIGKILL and restart",
        Duration::from_secs(60),
        || server.log(),
        || server.drive_tree("").get("a.bin") == Some(&Some(sha1_hex(&a))),
    );

    // SIGTERM right after the PUT was answered: the server exits only once it is uploaded.
    let (status, _) = curl(&format!(
        "-T '{}' '{}/b.bin'",
        dir.join("b.bin").display(),
        server.url
    ));
    assert_eq!(status, 201);
    let exit = server.terminate().expect("it exits");
    assert!(
        exit.success(),
        "serve webdav exited with {exit}\n{}",
        server.log()
    );
    let tree = server.drive_tree("");
    assert_eq!(tree.get("b.bin"), Some(&Some(sha1_hex(&b))), "{tree:?}");
    assert_eq!(tree.len(), 2, "{tree:?}");
}

/// The WebDAV server and the mount act on the same names at once (writes, renames, deletes on
/// both sides); afterwards the mount, a WebDAV listing and the drive agree, name for name and
/// byte for byte, with no duplicate and no temporary name left, also after a remount.
#[test]
fn webdav_and_the_mount_changing_the_same_names_at_once_end_in_one_tree() {
    let (emulator, temp) = emulator_with(|_| {});
    emulator.seed_folder("root", "shared");
    let mut m = MountBuilder::new(emulator, temp)
        .arg("--webdav-listen")
        .arg("127.0.0.1:0")
        .mount();
    let url = webdav_url(&m, 1);
    let ops: u64 = std::env::var("ALIPANFS_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let shared = m.path("shared");
    let bodies = m.dir.parent().unwrap().join("bodies");
    std::fs::create_dir_all(&bodies).unwrap();
    std::thread::scope(|scope| {
        for worker in 0..4u64 {
            let (url, shared, bodies) = (url.clone(), shared.clone(), bodies.clone());
            scope.spawn(move || {
                let mut x = worker * 7919 + 1;
                let mut next = |n: u64| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 33) % n
                };
                for op in 0..ops {
                    let (a, b) = (format!("n{}", next(6)), format!("n{}", next(6)));
                    let body = content(worker * 100_000 + op, next(200_000) as usize);
                    // Even workers go through WebDAV, odd ones through the mount.
                    let over_dav = worker % 2 == 0;
                    match (next(4), over_dav) {
                        (0 | 1, true) => {
                            let f = bodies.join(format!("w{worker}"));
                            std::fs::write(&f, &body).unwrap();
                            curl(&format!("-T '{}' '{url}/shared/{a}'", f.display()));
                        }
                        (0 | 1, false) => {
                            let _ = std::fs::write(shared.join(&a), &body);
                        }
                        (2, true) => {
                            curl(&format!(
                                "-X MOVE -H 'Destination: {url}/shared/{b}' '{url}/shared/{a}'"
                            ));
                        }
                        (2, false) => {
                            let _ = std::fs::rename(shared.join(&a), shared.join(&b));
                        }
                        (_, true) => {
                            curl(&format!("-X DELETE '{url}/shared/{a}'"));
                        }
                        (_, false) => {
                            let _ = std::fs::remove_file(shared.join(&a));
                        }
                    }
                }
            });
        }
    });
    m.sync_all(Duration::from_secs(120));
    let check = |m: &common::Mount, url: &str, when: &str| {
        let mounted = local_tree(&m.path("shared"));
        let (_, listing) = curl(&format!("-X PROPFIND -H 'Depth: 1' '{}/shared/'", url));
        let listing = String::from_utf8_lossy(&listing).to_string();
        let drive = drive_tree(&m.emulator, "shared");
        if mounted != drive {
            let kept = std::env::temp_dir().join("alipanfs-webdav-stress.log");
            let _ = std::fs::write(&kept, m.full_log());
            eprintln!("the daemon's whole log: {}", kept.display());
        }
        assert_eq!(
            mounted,
            drive,
            "{when}: the mount and the drive differ\n{}",
            m.log()
        );
        for name in mounted.keys() {
            assert!(
                listing.contains(&format!("/shared/{name}<")),
                "{when}: WebDAV does not list {name}: {listing}"
            );
        }
        assert!(
            !listing.contains("davput"),
            "{when}: a temporary name is listed: {listing}"
        );
        let dups = common::drive_duplicates(&m.emulator);
        assert!(dups.is_empty(), "{when}: duplicates on the drive: {dups:?}");
    };
    check(&m, &url, "after the run");
    eprintln!(
        "{} names left after {} ops",
        drive_tree(&m.emulator, "shared").len(),
        ops * 4
    );
    m.remount_with_new_cache(&[]);
    let url = webdav_url(&m, 2);
    check(&m, &url, "after a remount");
}

/// The URL of the `nth` WebDAV server a mount's log announces (a remount appends to the log).
fn webdav_url(m: &common::Mount, nth: usize) -> String {
    let mut url = String::new();
    m.wait_for(
        "the WebDAV address in the log",
        Duration::from_secs(10),
        || {
            let log = m.full_log();
            let urls: Vec<&str> = log
                .lines()
                .filter_map(|l| l.split("serving WebDAV url=").nth(1))
                .collect();
            match urls.get(nth - 1) {
                Some(rest) => {
                    url = rest
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .trim_end_matches('/')
                        .to_string();
                    true
                }
                None => false,
            }
        },
    );
    url
}
