//! End-to-end benchmark: the real `alipanfs` binary mounted over the in-process emulator,
//! measured against direct `curl` transfers from the same emulator. Prints one markdown table
//! and a notes block. Run as root with FUSE available: `cargo bench --bench mount`.
//!
//! `ALIPANFS_BENCH_ONLY` runs a subset: a comma-separated list of `read` (rows 1-4 and 6),
//! `write` (rows 5 and 7), `cache` (rows 8-10: the data cache and passthrough), `scan` (row 11,
//! a library scan before and after a remount), `first` (rows 12-13: a first read with the
//! cache on against `--cache-size 0`, `ls -l` of 20,000 entries against a local folder; see
//! `mount_rows/first.rs`), `seed`, `rewatch` and `slowdisk` (rows 14-16: seeded uploads beside
//! a cached file, a transcoded video watched twice, a first read with the cache dir's disk
//! throttled below the link; see `mount_rows/fill.rs`), `webdav` (rows 17-18: the WebDAV server
//! against the drive URL and the FUSE mount, and eight parallel clients; `mount_rows/webdav.rs`)
//! and row numbers, e.g. `ALIPANFS_BENCH_ONLY=read`
//! or `=1,2`. Rows 1-4
//! share one mount, so a read row alone still runs on a fresh, cold mount. Row 1 includes 1b
//! (CPU per GiB) and 1c (the FUSE floor: a do-nothing file system in this process read the same
//! way), and row 2 includes 2b (reads over an emulated link that all connections share).
//! `ALIPANFS_BENCH_MOUNT_ARGS` adds options to every mount (whitespace-separated), to compare
//! settings, e.g. `ALIPANFS_BENCH_MOUNT_ARGS="--upload-while-writing off"`.
//! `ALIPANFS_BENCH_DAEMON_LOG` is passed to the mounts as `RUST_LOG`, and their logs are then
//! kept as `$TMPDIR/alipanfs-bench-{read,write}.log`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "mount_rows/fill.rs"]
mod fill;
#[path = "mount_rows/first.rs"]
mod first;
#[path = "mount_rows/webdav.rs"]
mod webdav;

use alipanfs::api::{Client, ClientConfig};
use alipanfs::drive::{CheckNameMode, Drive, NewFile, UploadHashes};
use alipanfs::emulator::{pattern_bytes, Emulator, EmulatorConfig, Faults};
use rand::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_alipanfs");
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: u64 = 4096;
const PART_SIZE: u64 = 16 * MIB;
const DEFAULT_MEMORY_LIMIT: u64 = 256 * MIB;
const LISTED_ENTRIES: usize = 10_000;
const RANDOM_READS: usize = 2_000;
/// Row 8: the library is this many copies of a folder of `SCAN_SIZES_MIB` files...
const SCAN_COPIES: usize = 25;
const SCAN_SIZES_MIB: [u64; 8] = [8, 16, 24, 32, 40, 48, 56, 64];
/// ...of which a scan reads the head and the tail.
const SCAN_READ: usize = 64 * 1024;
/// Row 8's listing TTL: longer than the cold scan (200 getDownloadUrl at 1/s), so the second
/// scan is within it.
const SCAN_TTL: &str = "3600";
/// Alternated curl and mount reads in row 1.
const SEQ_ROUNDS: usize = 3;
/// Row 2b's links, MiB/s: about a 1 Gbit/s line, and one near the mount's CPU ceiling here.
const LINKS_MIB_S: [u64; 2] = [100, 800];
/// Endpoints whose counts the notes report.
const COUNTED: [&str; 5] = [
    "openFile/getDownloadUrl",
    "openFile/list",
    "data/get",
    "data/put",
    "openFile/complete",
];

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Which rows to run (`ALIPANFS_BENCH_ONLY`); all when unset or empty.
struct Only(Option<Vec<String>>);

impl Only {
    fn from_env() -> Only {
        let v = std::env::var("ALIPANFS_BENCH_ONLY").unwrap_or_default();
        let tokens: Vec<String> = v
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        Only((!tokens.is_empty()).then_some(tokens))
    }

    /// Row `row` (a number) of group `group` (`read` or `write`) is selected.
    fn runs(&self, group: &str, row: u32) -> bool {
        match &self.0 {
            None => true,
            Some(t) => t.iter().any(|t| t == group || *t == row.to_string()),
        }
    }

    fn any_of(&self, group: &str, rows: &[u32]) -> bool {
        rows.iter().any(|r| self.runs(group, *r))
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

/// One table row: what alipanfs did, what the baseline did, and the derived figure.
struct Row {
    name: String,
    ours: String,
    baseline: String,
    value: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, name: &str, ours: String, baseline: String, value: String) {
        eprintln!("  -> {name}: {ours} | {baseline} | {value}");
        self.rows.push(Row {
            name: name.into(),
            ours,
            baseline,
            value,
        });
    }

    fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    fn print(&self) {
        println!("| measurement | alipanfs | baseline | ratio / value |");
        println!("|---|---|---|---|");
        for r in &self.rows {
            println!("| {} | {} | {} | {} |", r.name, r.ours, r.baseline, r.value);
        }
        println!();
        println!("Notes:");
        for n in &self.notes {
            println!("- {n}");
        }
    }
}

/// Files seeded server-side before anything is measured.
struct Seeded {
    big: String,
    capped: String,
    ttfb: String,
}

fn run() -> BoxResult<()> {
    let temp = tempfile::tempdir()?;
    let cfg = EmulatorConfig {
        data_dir: temp.path().join("emulator"),
        // The bench's own client and every mount each rotate the single refresh token; a long
        // grace keeps the superseded access tokens of earlier sessions working meanwhile.
        access_token_grace: Duration::from_secs(3600),
        ..Default::default()
    };
    let only = Only::from_env();
    let emu = Emulator::start_background(cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    eprintln!("seeding the emulator...");
    let seeded = Seeded {
        big: emu.seed_pattern_file("root", "big.bin", GIB, 1),
        capped: emu.seed_pattern_file("root", "capped.bin", 256 * MIB, 2),
        ttfb: emu.seed_pattern_file("root", "ttfb.bin", 64 * MIB, 3),
    };
    if only.runs("write", 5) {
        let many = emu.seed_folder("root", "many");
        for i in 0..LISTED_ENTRIES {
            // Same tiny body for all: the blob store is content-addressed, so this costs one blob.
            emu.seed_file(&many, &format!("f{i:05}.txt"), b"x");
        }
    }

    // The bench's client goes first; each mount then bootstraps from the rotated token.
    let client = bench_client(&emu, temp.path())?;
    rt.block_on(client.init())?;
    let mut report = Report::default();

    if only.any_of("read", &[1, 2, 3, 4, 6]) {
        read_rows(&rt, &client, &emu, &seeded, temp.path(), &only, &mut report)?;
    }
    if only.any_of("write", &[5, 7]) {
        list_and_write_rows(&rt, &client, &emu, temp.path(), &only, &mut report)?;
    }
    if only.any_of("cache", &[8, 9, 10]) {
        cache_rows(&emu, temp.path(), &only, &mut report)?;
    }
    if only.runs("scan", 11) {
        scan_row(&rt, &client, &emu, temp.path(), &mut report)?;
    }
    if only.any_of("first", &[12, 13]) {
        first::first_rows(&emu, temp.path(), &mut report)?;
    }
    if only.runs("seed", 14) || only.runs("rewatch", 15) || only.runs("slowdisk", 16) {
        fill::fill_rows(&emu, temp.path(), &only, &mut report)?;
    }
    if only.any_of("webdav", &[17, 18]) {
        webdav::webdav_rows(&rt, &client, &emu, &seeded.big, temp.path(), &mut report)?;
    }

    report.note(
        "emulator at the real service's defaults (list 4/s, getDownloadUrl 1/s, other 15/s, \
         3 concurrent downloads); access-token grace raised to 1 h so the bench client and the \
         mounts can share one account"
            .into(),
    );
    report.print();
    Ok(())
}

fn bench_client(emu: &Emulator, dir: &Path) -> BoxResult<Client> {
    let defaults = EmulatorConfig::default();
    let mut cfg = ClientConfig::new(dir.join("bench-client/token.json"));
    cfg.api_url = emu.api_url();
    cfg.client_id = Some(defaults.client_id);
    cfg.client_secret = Some(defaults.client_secret);
    cfg.refresh_token = Some(emu.refresh_token());
    Ok(Client::new(cfg)?)
}

/// Row 1: the 1 GiB file read by curl and through the mount, alternated for `SEQ_ROUNDS`
/// rounds so both see the same machine load, compared by their medians. The first read through
/// the mount is cold. Also row 1b: the CPU time each client spent per GiB.
fn seq_read_row(
    emu: &Emulator,
    mount: &Mount,
    url: &str,
    dir: &Path,
    report: &mut Report,
) -> BoxResult<()> {
    eprintln!("row 1: sequential read of 1 GiB, {SEQ_ROUNDS} rounds");
    let (mut curl, mut ours) = (Vec::new(), Vec::new());
    // CPU seconds: each client's, and this process's (the emulator, plus the reader thread
    // in the mount's case) while that client ran.
    let (mut curl_cpu, mut daemon_cpu) = (0.0, 0.0);
    let (mut curl_emu_cpu, mut mount_emu_cpu) = (0.0, 0.0);
    for round in 0..SEQ_ROUNDS {
        let (before, before_self) = (
            cpu_seconds(libc::RUSAGE_CHILDREN),
            cpu_seconds(libc::RUSAGE_SELF),
        );
        curl.push(curl_download(url, "%{speed_download}")? / MIB as f64);
        curl_cpu += cpu_seconds(libc::RUSAGE_CHILDREN) - before;
        curl_emu_cpu += cpu_seconds(libc::RUSAGE_SELF) - before_self;
        emu.reset_calls();
        let (before, before_self) = (mount.cpu_seconds()?, cpu_seconds(libc::RUSAGE_SELF));
        ours.push(mib_per_s(
            GIB,
            timed(|| read_all(&mount.path("big.bin"), GIB))?,
        ));
        daemon_cpu += mount.cpu_seconds()? - before;
        mount_emu_cpu += cpu_seconds(libc::RUSAGE_SELF) - before_self;
        if round == 0 {
            report.note(format!("row 1 API calls of the cold read: {}", counts(emu)));
        }
    }
    let (ours_median, curl_median) = (median(&ours), median(&curl));
    report.row(
        &format!("1. sequential read 1 GiB, median of {SEQ_ROUNDS} (MiB/s)"),
        format!("{ours_median:.0}"),
        format!("{curl_median:.0} (curl)"),
        ratio(ours_median, curl_median, 0.9),
    );
    let rounds: Vec<String> = ours
        .iter()
        .zip(&curl)
        .map(|(o, c)| format!("{o:.0}/{c:.0}"))
        .collect();
    report.note(format!(
        "row 1 rounds, mount/curl MiB/s: {}",
        rounds.join(", ")
    ));
    let per_gib = |cpu: f64| cpu / SEQ_ROUNDS as f64;
    let (daemon_cpu, curl_cpu) = (per_gib(daemon_cpu), per_gib(curl_cpu));
    let (mount_emu_cpu, curl_emu_cpu) = (per_gib(mount_emu_cpu), per_gib(curl_emu_cpu));
    report.row(
        "1b. client CPU per GiB read in row 1 (s)",
        format!("{daemon_cpu:.2} (daemon)"),
        format!("{curl_cpu:.2} (curl)"),
        format!("{:.1}x", daemon_cpu / curl_cpu.max(1e-9)),
    );
    // All the machine's cores are shared by the emulator and the clients: what both paths cost
    // in all bounds how fast the mount could go here.
    let mount_total = daemon_cpu + mount_emu_cpu;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    report.note(format!(
        "row 1b, CPU seconds per GiB on the whole machine: through the mount {mount_total:.2} \
         (daemon {daemon_cpu:.2}, emulator and reader {mount_emu_cpu:.2}); with curl {:.2} \
         (curl {curl_cpu:.2}, emulator {curl_emu_cpu:.2}). With {cores} cores the mount path \
         cannot pass {:.0} MiB/s here, {:.2}x of curl's median",
        curl_cpu + curl_emu_cpu,
        cores * 1024.0 / mount_total.max(1e-9),
        cores * 1024.0 / mount_total.max(1e-9) / curl_median.max(1e-9),
    ));
    fuse_floor_row(dir, curl_median, curl_cpu + curl_emu_cpu, report)
}

/// Row 1c: the FUSE floor. A file system in this process that does nothing but answer each
/// read from memory, mounted like alipanfs (4 threads, direct I/O), read exactly as in row 1:
/// what the kernel's side of a FUSE read costs before any network or daemon work.
/// `curl_path_cpu` is row 1's CPU per GiB of curl and the emulator serving it: a mount that
/// cost nothing but the FUSE floor and that would be bound by their sum.
fn fuse_floor_row(
    dir: &Path,
    curl_median: f64,
    curl_path_cpu: f64,
    report: &mut Report,
) -> BoxResult<()> {
    eprintln!("row 1c: FUSE alone, 1 GiB answered from memory");
    let (speed, cpu) = floor_read(dir)?;
    report.row(
        "1c. FUSE alone: 1 GiB answered from memory (MiB/s)",
        format!("{speed:.0}"),
        format!("{curl_median:.0} (curl, row 1)"),
        format!(
            "{:.2}x; {cpu:.2} CPU-s per GiB (server and reader)",
            speed / curl_median.max(1e-9)
        ),
    );
    let least = cpu + curl_path_cpu;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    report.note(format!(
        "row 1c: a mount whose only costs were this floor, the socket and the emulator would need \
         {least:.2} CPU-s per GiB ({cpu:.2} + {curl_path_cpu:.2} for curl's path), so {cores} cores \
         would cap it at {:.0} MiB/s, {:.2}x of curl's median",
        cores * 1024.0 / least.max(1e-9),
        cores * 1024.0 / least.max(1e-9) / curl_median.max(1e-9),
    ));
    Ok(())
}

/// The FUSE floor's read of 1 GiB: MiB/s, and the CPU seconds this process spent on it (the
/// floor's file system and the reader).
fn floor_read(dir: &Path) -> BoxResult<(f64, f64)> {
    let mnt = dir.join("floor");
    std::fs::create_dir_all(&mnt)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("floor".into()),
        fuser::MountOption::RO,
    ];
    config.n_threads = Some(4);
    config.clone_fd = true;
    let session = fuser::Session::new(floor::Floor::new(GIB), &mnt, &config)?.spawn()?;
    let result = (|| {
        let before = cpu_seconds(libc::RUSAGE_SELF);
        let took = timed(|| read_all(&mnt.join(floor::NAME), GIB))?;
        Ok::<_, Box<dyn std::error::Error>>((
            mib_per_s(GIB, took),
            cpu_seconds(libc::RUSAGE_SELF) - before,
        ))
    })();
    session.umount_and_join()?;
    result
}

/// The FUSE floor's file system: one read-only file of `size` bytes, answered from one 64 MiB
/// buffer, round and round.
mod floor {
    use fuser::{
        FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
        OpenFlags, ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
    };
    use std::ffi::OsStr;
    use std::time::{Duration, SystemTime};

    pub const NAME: &str = "floor.bin";
    const FILE: u64 = 2;
    const TTL: Duration = Duration::from_secs(60);

    pub struct Floor {
        size: u64,
        block: Vec<u8>,
    }

    impl Floor {
        pub fn new(size: u64) -> Floor {
            Floor {
                size,
                // As much as alipanfs's default read-ahead window holds, so that replies copy
                // from memory no fresher in the CPU's caches than a read-ahead piece is.
                block: (0..64 * super::MIB as usize).map(|i| i as u8).collect(),
            }
        }

        fn attr(&self, ino: u64) -> FileAttr {
            let dir = ino == 1;
            FileAttr {
                ino: INodeNo(ino),
                size: if dir { 0 } else { self.size },
                blocks: 0,
                atime: SystemTime::UNIX_EPOCH,
                mtime: SystemTime::UNIX_EPOCH,
                ctime: SystemTime::UNIX_EPOCH,
                crtime: SystemTime::UNIX_EPOCH,
                kind: if dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                },
                perm: if dir { 0o755 } else { 0o444 },
                nlink: 1,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: 1 << 20,
                flags: 0,
            }
        }
    }

    impl Filesystem for Floor {
        fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
            if parent.0 == 1 && name == NAME {
                reply.entry(&TTL, &self.attr(FILE), Generation(0));
            } else {
                reply.error(fuser::Errno::from_i32(libc::ENOENT));
            }
        }

        fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
            reply.attr(&TTL, &self.attr(ino.0));
        }

        fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }

        fn read(
            &self,
            _req: &Request,
            _ino: INodeNo,
            _fh: FileHandle,
            offset: u64,
            size: u32,
            _flags: OpenFlags,
            _lock_owner: Option<LockOwner>,
            reply: ReplyData,
        ) {
            let len = (size as u64).min(self.size.saturating_sub(offset)) as usize;
            let at = (offset % self.block.len() as u64) as usize;
            let len = len.min(self.block.len() - at);
            reply.data(&self.block[at..at + len]);
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// User + system CPU seconds of this process (`RUSAGE_SELF`) or of its children that have been
/// waited for (`RUSAGE_CHILDREN`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Rows 1-4 and 6 on one fresh mount (cold: nothing read before row 1).
fn read_rows(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    emu: &Emulator,
    seeded: &Seeded,
    dir: &Path,
    only: &Only,
    report: &mut Report,
) -> BoxResult<()> {
    let big_url = rt.block_on(client.download_url(&seeded.big))?;
    let capped_url = rt.block_on(client.download_url(&seeded.capped))?.url;
    let ttfb_url = rt.block_on(client.download_url(&seeded.ttfb))?.url;
    // The getDownloadUrl bucket (1/s) is shared with the mount: let it refill first.
    std::thread::sleep(Duration::from_millis(1500));

    let mount = Mount::start(emu, dir, "read")?;
    if only.runs("read", 1) {
        seq_read_row(emu, &mount, &big_url.url, dir, report)?;
    }
    if only.runs("read", 4) {
        ttfb_row(emu, &mount, &ttfb_url, report)?;
    }
    if only.runs("read", 3) {
        random_row(rt, client, emu, &mount, &big_url, report)?;
    }
    if only.runs("read", 2) {
        capped_row(emu, &mount, &capped_url, report)?;
        for link in LINKS_MIB_S {
            link_row(emu, &mount, &capped_url, link, report)?;
        }
    }
    if only.runs("read", 6) {
        rss_row(
            report,
            "6. daemon peak RSS after the read rows (MiB)",
            &mount,
        )?;
    }
    mount.stop();
    Ok(())
}

fn ttfb_row(emu: &Emulator, mount: &Mount, ttfb_url: &str, report: &mut Report) -> BoxResult<()> {
    eprintln!("row 4: time to first byte");
    emu.reset_calls();
    let ttfb = timed(|| {
        let mut buf = vec![0u8; 4096];
        File::open(mount.path("ttfb.bin"))?.read_exact(&mut buf)?;
        check(
            buf == pattern_bytes(3, 0, 4096),
            "ttfb.bin: wrong first bytes",
        )
    })?;
    let curl = curl_numbers(
        &[
            "-s",
            "-f",
            "-o",
            "/dev/null",
            "-r",
            "0-4095",
            "-w",
            "%{time_starttransfer} %{time_total}",
            ttfb_url,
        ],
        2,
    )?;
    let (curl_ttfb, curl_total) = (curl[0], curl[1]);
    report.row(
        "4. time to first byte, open + read 4 KiB (ms)",
        format!("{:.1}", ttfb.as_secs_f64() * 1e3),
        format!(
            "{:.1} (curl starttransfer; total {:.1})",
            curl_ttfb * 1e3,
            curl_total * 1e3
        ),
        format!("{:.1}x", ttfb.as_secs_f64() / curl_ttfb.max(1e-6)),
    );
    report.note(format!("row 4 API calls: {}", counts(emu)));
    Ok(())
}

fn random_row(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    emu: &Emulator,
    mount: &Mount,
    big_url: &alipanfs::drive::DownloadUrl,
    report: &mut Report,
) -> BoxResult<()> {
    eprintln!("row 3: random 4 KiB reads");
    emu.reset_calls();
    let file = File::open(mount.path("big.bin"))?;
    let mut rng = rand::thread_rng();
    let offsets: Vec<u64> = (0..RANDOM_READS)
        .map(|_| rng.gen_range(0..GIB - 4096))
        .collect();
    let took = timed(|| {
        let mut buf = vec![0u8; 4096];
        for &off in &offsets {
            file.read_exact_at(&mut buf, off)?;
        }
        check(
            buf == pattern_bytes(1, offsets[RANDOM_READS - 1], 4096),
            "big.bin: wrong bytes at a random offset",
        )
    })?;
    drop(file);
    report.note(format!("row 3 API calls: {}", counts(emu)));
    // Baseline: the same offsets as 4 KiB ranged GETs, one at a time, on one keep-alive client.
    let direct = timed(|| {
        for &off in &offsets {
            let got = rt.block_on(client.download_range(big_url, off, 4096))?;
            check(got.len() == 4096, "short ranged GET")?;
        }
        Ok(())
    })?;
    let ours = RANDOM_READS as f64 / took.as_secs_f64();
    let theirs = RANDOM_READS as f64 / direct.as_secs_f64();
    report.row(
        "3. random 4 KiB preads of the 1 GiB file (reads/s)",
        format!("{ours:.0}"),
        format!("{theirs:.0} (4 KiB ranged GETs, one client)"),
        format!("{:.2}x", ours / theirs),
    );
    Ok(())
}

fn capped_row(
    emu: &Emulator,
    mount: &Mount,
    capped_url: &str,
    report: &mut Report,
) -> BoxResult<()> {
    eprintln!("row 2: sequential read at 50 MiB/s per connection");
    emu.set_faults(Faults {
        bandwidth_per_conn: Some(50 * MIB),
        ..Default::default()
    });
    emu.reset_calls();
    let size = 256 * MIB;
    let ours = mib_per_s(size, timed(|| read_all(&mount.path("capped.bin"), size))?);
    report.note(format!("row 2 API calls: {}", counts(emu)));
    let curl_capped = curl_download(capped_url, "%{speed_download}")? / MIB as f64;
    emu.set_faults(Faults::default());
    report.row(
        "2. sequential read 256 MiB, 50 MiB/s per connection (MiB/s)",
        format!("{ours:.0}"),
        format!("{curl_capped:.0} (curl, 1 connection)"),
        ratio(ours, curl_capped, 2.5),
    );
    Ok(())
}

/// Row 2b: the same file over an emulated link of `link_mib_s` that all connections share, as
/// a real user's line: when the link, not the CPU, is the limit, the mount should match curl.
fn link_row(
    emu: &Emulator,
    mount: &Mount,
    capped_url: &str,
    link_mib_s: u64,
    report: &mut Report,
) -> BoxResult<()> {
    eprintln!("row 2b: sequential read over a {link_mib_s} MiB/s link");
    emu.set_faults(Faults {
        link_bandwidth: Some(link_mib_s * MIB),
        ..Default::default()
    });
    let size = 256 * MIB;
    let ours = mib_per_s(size, timed(|| read_all(&mount.path("capped.bin"), size))?);
    let curl = curl_download(capped_url, "%{speed_download}")? / MIB as f64;
    emu.set_faults(Faults::default());
    report.row(
        &format!("2b. sequential read 256 MiB over a {link_mib_s} MiB/s link (MiB/s)"),
        format!("{ours:.0}"),
        format!("{curl:.0} (curl)"),
        ratio(ours, curl, 0.9),
    );
    Ok(())
}

/// Row 8: a media server's library scan (ffprobe reads the head and the tail of each video),
/// cold, then again after a remount with the same cache dir, within the listing TTL. Seeded
/// cheaply: one folder of 8 files (288 MiB written once), copied on the drive 25 times (a
/// server-side copy shares the content).
fn scan_row(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    emu: &Emulator,
    dir: &Path,
    report: &mut Report,
) -> BoxResult<()> {
    let files = SCAN_COPIES * SCAN_SIZES_MIB.len();
    eprintln!("row 11: library scan of {files} files, cold then after a remount");
    let season = emu.seed_folder("root", "season");
    for (i, mib) in SCAN_SIZES_MIB.iter().enumerate() {
        emu.seed_pattern_file(&season, &format!("e{i}.mkv"), mib * MIB, 80 + i as u64);
    }
    let library = emu.seed_folder("root", "library");
    for _ in 0..SCAN_COPIES {
        rt.block_on(client.copy_item(&season, &library, true))?;
    }
    let args = ["--dir-cache-ttl", SCAN_TTL];
    let mount = Mount::start_with(emu, dir, "scan", &args)?;
    emu.reset_calls();
    let (scanned, cold) = scan_library(&mount.path("library"))?;
    check(
        scanned == files,
        &format!("the cold scan saw {scanned} files"),
    )?;
    report.note(format!(
        "row 11 API calls of the cold scan: {}",
        counts(emu)
    ));
    mount.stop();
    let mount = Mount::start_with(emu, dir, "scan", &args)?;
    emu.reset_calls();
    let (scanned, warm) = scan_library(&mount.path("library"))?;
    check(
        scanned == files,
        &format!("the second scan saw {scanned} files"),
    )?;
    let calls = emu.calls();
    let n = |k: &str| calls.get(k).copied().unwrap_or(0);
    let (urls, lists, gets) = (
        n("openFile/getDownloadUrl"),
        n("openFile/list"),
        n("data/get"),
    );
    report.note(format!(
        "row 11 API calls of the scan after the remount: {}",
        counts(emu)
    ));
    mount.stop();
    report.row(
        &format!(
            "11. library scan after a remount: head + tail 64 KiB of {files} files of 8-64 MiB (s)"
        ),
        format!("{:.2}", warm.as_secs_f64()),
        format!("{:.2} (cold scan)", cold.as_secs_f64()),
        verdict(
            urls == 0 && lists == 0 && gets == 0,
            &format!(
                "{:.3}x; getDownloadUrl={urls}, list={lists}, data GETs={gets} (target 0 each)",
                warm.as_secs_f64() / cold.as_secs_f64().max(1e-9)
            ),
        ),
    );
    Ok(())
}

/// Reads the first and the last `SCAN_READ` bytes of every file in the folders of `library`,
/// checking them; returns the number of files and the time taken.
fn scan_library(library: &Path) -> BoxResult<(usize, Duration)> {
    let start = Instant::now();
    let mut files = 0;
    let mut folders: Vec<PathBuf> = std::fs::read_dir(library)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    folders.sort();
    let mut buf = vec![0u8; SCAN_READ];
    for folder in folders {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&folder)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for path in names {
            // e<i>.mkv holds pattern 80 + i.
            let i: u64 = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix('e'))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("unexpected file {}", path.display()))?;
            let f = File::open(&path)?;
            let size = f.metadata()?.len();
            for off in [0, size - SCAN_READ as u64] {
                f.read_exact_at(&mut buf, off)?;
                check(
                    buf == pattern_bytes(80 + i, off, SCAN_READ),
                    &format!("{}: wrong bytes at {off}", path.display()),
                )?;
            }
            files += 1;
        }
    }
    Ok((files, start.elapsed()))
}

/// Rows 5 and 7 on a second fresh mount, so its peak RSS reflects the write.
fn list_and_write_rows(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    emu: &Emulator,
    dir: &Path,
    only: &Only,
    report: &mut Report,
) -> BoxResult<()> {
    let mount = Mount::start(emu, dir, "write")?;
    if only.runs("write", 5) {
        ls_rows(emu, &mount, report)?;
    }
    if only.runs("write", 7) {
        write_rows(rt, client, emu, &mount, dir, report)?;
    }
    mount.stop();
    Ok(())
}

fn ls_rows(emu: &Emulator, mount: &Mount, report: &mut Report) -> BoxResult<()> {
    eprintln!("row 5: ls -l of {LISTED_ENTRIES} entries");
    for pass in ["cold", "warm"] {
        emu.reset_calls();
        let (lines, took) = ls_l(&mount.path("many"))?;
        check(
            lines == LISTED_ENTRIES + 1,
            &format!("ls -l printed {lines} lines"),
        )?;
        report.row(
            &format!("5. `ls -l` of {LISTED_ENTRIES} entries, {pass} (s)"),
            format!("{:.2}", took.as_secs_f64()),
            "-".into(),
            format!("{} list calls", emu.call_count("openFile/list")),
        );
        report.note(format!("row 5 ({pass}) API calls: {}", counts(emu)));
    }
    Ok(())
}

fn write_rows(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    emu: &Emulator,
    mount: &Mount,
    dir: &Path,
    report: &mut Report,
) -> BoxResult<()> {
    eprintln!("row 7: sequential write of 1 GiB");
    let baseline_seed = 70;
    let baseline = baseline_upload(rt, client, emu, dir, baseline_seed)?;
    let mount_body = pattern_bytes(71, 0, GIB as usize);
    emu.reset_calls();
    let w = write_through(emu, mount, "write.bin", &mount_body)?;
    report.note(format!("row 7 API calls: {}", counts(emu)));
    drop(mount_body);
    let ours = mib_per_s(GIB, w.closed);
    report.row(
        "7a. sequential write 1 GiB, until close returns (MiB/s)",
        format!("{ours:.0}"),
        format!("{baseline:.0} (curl multipart)"),
        format!("{:.2}", ours / baseline),
    );
    let ours = mib_per_s(GIB, w.uploaded);
    report.row(
        "7b. sequential write 1 GiB, until uploaded (MiB/s)",
        format!("{ours:.0}"),
        format!("{baseline:.0} (curl multipart)"),
        ratio(ours, baseline, 0.8),
    );

    eprintln!("row 7c: a second copy of already-uploaded bytes (rapid upload)");
    let copy_body = pattern_bytes(baseline_seed, 0, GIB as usize);
    emu.reset_calls();
    let c = write_through(emu, mount, "copy.bin", &copy_body)?;
    drop(copy_body);
    let puts = emu.call_count("data/put");
    report.note(format!("row 7c API calls: {}", counts(emu)));
    report.row(
        "7c. write 1 GiB already on the drive, until uploaded (MiB/s)",
        format!("{:.0}", mib_per_s(GIB, c.uploaded)),
        format!("{baseline:.0} (curl multipart)"),
        format!(
            "close {:.1} s, done {:.1} s, {puts} part PUTs",
            c.closed.as_secs_f64(),
            c.uploaded.as_secs_f64()
        ),
    );

    rss_row(
        report,
        "7d. daemon peak RSS during ls + writes (MiB)",
        mount,
    )?;
    Ok(())
}

struct WriteTimes {
    closed: Duration,
    uploaded: Duration,
}

/// Writes `body` in 1 MiB writes, then polls the emulator until the file holds its SHA-1.
fn write_through(emu: &Emulator, mount: &Mount, name: &str, body: &[u8]) -> BoxResult<WriteTimes> {
    let want = alipanfs::hashing::sha1_hex(body);
    let remote_path = format!("/{name}");
    let start = Instant::now();
    {
        let mut f = File::create(mount.path(name))?;
        for chunk in body.chunks(MIB as usize) {
            f.write_all(chunk)?;
        }
        // close(2) happens at the end of this scope; flush is implicit for File.
    }
    let closed = start.elapsed();
    let deadline = start + Duration::from_secs(300);
    loop {
        // entries_at, not tree(): building the whole tree every poll would hold the emulator's
        // lock and burn the CPU the upload is measured on.
        let done = emu
            .entries_at(&remote_path)
            .iter()
            .any(|e| !e.trashed && e.sha1.as_deref() == Some(&want));
        if done {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{name} not uploaded after 300 s\n{}", mount.log_tail()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(WriteTimes {
        closed,
        uploaded: start.elapsed(),
    })
}

/// Direct multipart upload with curl (part files prepared untimed); returns MiB/s.
fn baseline_upload(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    emu: &Emulator,
    dir: &Path,
    seed: u64,
) -> BoxResult<f64> {
    let parts_dir = dir.join("parts");
    std::fs::create_dir_all(&parts_dir)?;
    let part_count = GIB.div_ceil(PART_SIZE);
    let mut part_files = Vec::new();
    for n in 0..part_count {
        let path = parts_dir.join(format!("part{n}"));
        let len = PART_SIZE.min(GIB - n * PART_SIZE) as usize;
        std::fs::write(&path, pattern_bytes(seed, n * PART_SIZE, len))?;
        part_files.push(path);
    }
    let req = NewFile {
        parent_file_id: "root".into(),
        name: "baseline.bin".into(),
        size: Some(GIB),
        check_name_mode: CheckNameMode::Ignore,
        part_count: part_count as u32,
        local_modified_at: None,
        hashes: UploadHashes::None,
    };
    emu.reset_calls();
    let took = timed(|| {
        let session = rt.block_on(client.create_file(&req))?;
        let upload_id = session.upload_id.ok_or("create_file gave no upload_id")?;
        check(session.parts.len() == part_files.len(), "part URL count")?;
        for (part, file) in session.parts.iter().zip(&part_files) {
            let out = Command::new("curl")
                .args(["-s", "-f", "-o", "/dev/null", "-T"])
                .arg(file)
                .args(["--header", "Content-Type:"])
                .arg(&part.upload_url)
                .status()?;
            check(
                out.success(),
                &format!("curl PUT of part {}", part.part_number),
            )?;
        }
        rt.block_on(client.complete_upload(&session.file_id, &upload_id))?;
        Ok(())
    })?;
    std::fs::remove_dir_all(&parts_dir)?;
    check(
        emu.call_count("data/put") == part_count,
        "baseline: one PUT per part",
    )?;
    Ok(mib_per_s(GIB, took))
}

/// The daemon, mounted in its own folder with its own token file and cache.
struct Mount {
    dir: PathBuf,
    log_path: PathBuf,
    child: Child,
}

impl Mount {
    /// Rows 1-7 measure the network path: no data cache (rows 8-10 measure it).
    fn start(emu: &Emulator, base: &Path, name: &str) -> BoxResult<Mount> {
        Self::start_with(emu, base, name, &["--cache-size", "0"])
    }

    /// A mount of its own folder `mount-NAME` (the same cache dir each time) with `args`; the
    /// same `name` again is a remount with the same cache dir and token store.
    fn start_with(emu: &Emulator, base: &Path, name: &str, args: &[&str]) -> BoxResult<Mount> {
        let root = base.join(format!("mount-{name}"));
        let dir = root.join("mnt");
        std::fs::create_dir_all(&dir)?;
        // A log asked for outlives the bench's temporary folder.
        let log_path = match std::env::var_os("ALIPANFS_BENCH_DAEMON_LOG") {
            Some(_) => std::env::temp_dir().join(format!("alipanfs-bench-{name}.log")),
            None => root.join("alipanfs.log"),
        };
        let child = Command::new(BIN)
            .arg("mount")
            .arg("--foreground")
            .arg(&dir)
            .args(emu.mount_args())
            .arg("--token-file")
            .arg(root.join("state/token.json"))
            .arg("--cache-dir")
            .arg(root.join("cache"))
            .args(args)
            .args(extra_mount_args())
            // The current token: the bench client and earlier mounts have rotated it.
            .env("ALIPANFS_REFRESH_TOKEN", emu.refresh_token())
            // Quiet unless asked: `ALIPANFS_BENCH_DAEMON_LOG` is the daemon's RUST_LOG.
            .env(
                "RUST_LOG",
                std::env::var("ALIPANFS_BENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path)?)
            .spawn()?;
        let mut mount = Mount {
            dir,
            log_path,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&mount.dir) {
            if let Some(status) = mount.child.try_wait()? {
                return Err(format!("alipanfs exited with {status}\n{}", mount.log_tail()).into());
            }
            if Instant::now() > deadline {
                return Err(format!("not mounted after 30 s\n{}", mount.log_tail()).into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(mount)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Peak resident set of the daemon so far, in bytes.
    fn vm_hwm(&self) -> BoxResult<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or("no VmHWM in /proc/PID/status")?;
        Ok(kib * 1024)
    }

    /// User + system CPU seconds the daemon has used so far.
    fn cpu_seconds(&self) -> BoxResult<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').ok_or("bad /proc/PID/stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> BoxResult<f64> {
            Ok(fields
                .get(i)
                .ok_or("short /proc/PID/stat")?
                .parse::<f64>()?)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok((ticks(11)? + ticks(12)?) / hz)
    }

    /// SIGTERM, then wait for the daemon to unmount and exit.
    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Also on an error path: never leave a daemon or a stale mount behind.
        self.terminate();
    }
}

fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| info.lines().any(|l| l.split(' ').nth(4) == Some(&*want)))
        .unwrap_or(false)
}

/// Reads the whole file with a 1 MiB buffer and checks its length.
fn read_all(path: &Path, expect: u64) -> BoxResult<()> {
    let mut f = File::open(path)?;
    // Page-aligned, as cat, cp and dd allocate theirs: a misaligned 1 MiB buffer spans 257
    // pages, and the kernel (at most 256 pages per FUSE request) splits every read in two.
    let mut storage = vec![0u8; (MIB + PAGE) as usize];
    let lead = storage.as_ptr().align_offset(PAGE as usize);
    let buf = &mut storage[lead..lead + MIB as usize];
    let mut total = 0u64;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    check(
        total == expect,
        &format!("{}: read {total} bytes", path.display()),
    )
}

/// `ls -l DIR`: the number of output lines and the wall time.
fn ls_l(dir: &Path) -> BoxResult<(usize, Duration)> {
    let start = Instant::now();
    let out = Command::new("ls").arg("-l").arg(dir).output()?;
    let took = start.elapsed();
    check(out.status.success(), "ls -l failed")?;
    Ok((out.stdout.iter().filter(|&&b| b == b'\n').count(), took))
}

/// A whole-file curl download; returns the `-w` value (a number).
fn curl_download(url: &str, write_out: &str) -> BoxResult<f64> {
    Ok(curl_numbers(&["-s", "-f", "-o", "/dev/null", "-w", write_out, url], 1)?[0])
}

/// Runs curl; returns the `count` whitespace-separated numbers its `-w` printed.
fn curl_numbers(args: &[&str], count: usize) -> BoxResult<Vec<f64>> {
    let out = Command::new("curl").args(args).output()?;
    check(out.status.success(), "curl failed")?;
    let numbers = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<f64>, _>>()?;
    check(
        numbers.len() == count,
        "curl printed an unexpected -w output",
    )?;
    Ok(numbers)
}

fn timed(f: impl FnOnce() -> BoxResult<()>) -> BoxResult<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn check(ok: bool, what: &str) -> BoxResult<()> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string().into())
    }
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64().max(1e-9)
}

fn ratio(ours: f64, baseline: f64, target: f64) -> String {
    let r = ours / baseline.max(1e-9);
    verdict(r >= target, &format!("{r:.2}x (target ≥ {target}x)"))
}

fn verdict(ok: bool, text: &str) -> String {
    format!("{text} {}", if ok { "✅" } else { "❌" })
}

/// The counted endpoints' calls since the last reset, e.g. `list=0 data/get=12`.
fn counts(emu: &Emulator) -> String {
    let calls: BTreeMap<String, u64> = emu.calls();
    COUNTED
        .iter()
        .map(|k| format!("{k}={}", calls.get(*k).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Extra `alipanfs mount` options from `ALIPANFS_BENCH_MOUNT_ARGS`.
fn extra_mount_args() -> Vec<String> {
    std::env::var("ALIPANFS_BENCH_MOUNT_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The daemon's peak RSS against the memory limit (target: at most 64 MiB above it).
fn rss_row(report: &mut Report, name: &str, mount: &Mount) -> BoxResult<()> {
    let hwm = mount.vm_hwm()?;
    report.row(
        name,
        format!("{:.0}", hwm as f64 / MIB as f64),
        format!("{} (memory limit)", DEFAULT_MEMORY_LIMIT / MIB),
        verdict(
            hwm <= DEFAULT_MEMORY_LIMIT + 64 * MIB,
            "target ≤ limit + 64 MiB",
        ),
    );
    Ok(())
}

/// Rows 8-10: the data cache. 8: re-reading the fully cached 1 GiB file after a remount, with
/// passthrough and without, against reading the cache file itself from local disk, both
/// after dropping the page cache and both warm. 9: a fill of 3x `--cache-size` by 4 parallel
/// readers, peak bytes on disk against the limit. 10: the daemon's peak RSS meanwhile.
fn cache_rows(emu: &Emulator, dir: &Path, only: &Only, report: &mut Report) -> BoxResult<()> {
    let data = dir.join("mount-cache/cache/data");
    if only.runs("cache", 8) {
        eprintln!("row 8: re-read of a cached 1 GiB file after a remount");
        let mount = Mount::start_with(emu, dir, "cache", &["--cache-size", "2G"])?;
        // Blocks the cache writer could not keep up with are not cached: each pass fetches
        // only what is still missing.
        let mut passes = 0;
        while alipanfs::cache::disk_usage(&data) < GIB {
            check(passes < 8, "the cache did not fill in 8 passes")?;
            read_all(&mount.path("big.bin"), GIB)?;
            passes += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        report.note(format!(
            "row 8: the 1 GiB file was cached after {passes} read(s)"
        ));
        mount.stop();
        let cache_file = find_data_file(&data, GIB)?;
        for (label, args) in [
            ("passthrough", &["--cache-size", "2G"][..]),
            (
                "--passthrough off",
                &["--cache-size", "2G", "--passthrough", "off"][..],
            ),
        ] {
            let mount = Mount::start_with(emu, dir, "cache", args)?;
            for state in ["cold", "warm"] {
                let (mut ours, mut local) = (Vec::new(), Vec::new());
                emu.reset_calls();
                // Three runs each, alternating, medians compared: a cold disk's speed varies.
                for _ in 0..3 {
                    if state == "cold" {
                        drop_caches()?;
                    } else {
                        read_all(&cache_file, GIB)?;
                    }
                    ours.push(mib_per_s(
                        GIB,
                        timed(|| read_all(&mount.path("big.bin"), GIB))?,
                    ));
                    if state == "cold" {
                        drop_caches()?;
                    }
                    local.push(mib_per_s(GIB, timed(|| read_all(&cache_file, GIB))?));
                }
                let (o, l) = (median(&ours), median(&local));
                report.row(
                    &format!("8. re-read cached 1 GiB after remount, {label}, page cache {state} (MiB/s)"),
                    format!("{o:.0}"),
                    format!("{l:.0} (cache file read directly)"),
                    if label == "passthrough" {
                        ratio(o, l, 0.9)
                    } else {
                        // Printed for comparison: the daemon path is what kernels without
                        // passthrough (and macOS) get; the target is passthrough's.
                        format!("{:.2}x (no target: every read through the daemon)", o / l.max(1e-9))
                    },
                );
                report.note(format!(
                    "row 8 ({label}, {state}) API calls: {}",
                    counts(emu)
                ));
            }
            if only.runs("cache", 10) {
                rss_row(
                    report,
                    &format!("10. daemon peak RSS, row 8 {label} (MiB)"),
                    &mount,
                )?;
            }
            mount.stop();
        }
    }
    if only.runs("cache", 9) {
        const LIMIT: u64 = 256 * MIB;
        const FILE: u64 = 3 * LIMIT / 4;
        eprintln!("row 9: 4 readers fill 3x a {} MiB cache", LIMIT / MIB);
        for i in 0..4 {
            emu.seed_pattern_file("root", &format!("fill{i}.bin"), FILE, 40 + i);
        }
        let _ = std::fs::remove_dir_all(dir.join("mount-fill"));
        let mount = Mount::start_with(emu, dir, "fill", &["--cache-size", "256M"])?;
        let data = dir.join("mount-fill/cache/data");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (stop, data) = (stop.clone(), data.clone());
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(alipanfs::cache::disk_usage(&data));
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak.max(alipanfs::cache::disk_usage(&data))
            })
        };
        let took = timed(|| {
            let readers: Vec<_> = (0..4)
                .map(|i| {
                    let p = mount.path(&format!("fill{i}.bin"));
                    std::thread::spawn(move || read_all(&p, FILE).map_err(|e| e.to_string()))
                })
                .collect();
            for r in readers {
                r.join().map_err(|_| "reader panicked")??;
            }
            Ok(())
        })?;
        // Let the writer finish what it has queued, still sampling.
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().map_err(|_| "sampler panicked")?;
        report.row(
            "9. 4 readers fill 3x --cache-size 256M: peak on disk (MiB)",
            format!("{:.1}", peak as f64 / MIB as f64),
            format!("{} + 1 block (limit)", LIMIT / MIB),
            verdict(peak <= LIMIT + MIB, "target ≤ limit + 1 MiB"),
        );
        report.note(format!(
            "row 9: {} MiB read by 4 readers in {:.1} s",
            4 * FILE / MIB,
            took.as_secs_f64()
        ));
        if only.runs("cache", 10) {
            rss_row(report, "10. daemon peak RSS, row 9 (MiB)", &mount)?;
        }
        mount.stop();
    }
    Ok(())
}

/// The cache's data file of `size` bytes under `data` (one drive folder deep).
fn find_data_file(data: &Path, size: u64) -> BoxResult<PathBuf> {
    for ns in std::fs::read_dir(data)? {
        for f in std::fs::read_dir(ns?.path())? {
            let p = f?.path();
            if p.extension().is_some_and(|e| e == "data") && std::fs::metadata(&p)?.len() == size {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "no cached data file of {size} bytes under {}",
        data.display()
    )
    .into())
}

/// Empties the kernel's page cache (root only), so the next read comes from the disk.
fn drop_caches() -> BoxResult<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3")?;
    Ok(())
}
