//! Rows 14-16 (issue 21): what fills the data cache besides reads, and a first read when the
//! cache's disk is slower than the link.
//!
//! 14 (`seed`): a file is read whole into a `--cache-size 512M` cache; then a file bigger
//! than a quarter of the limit (not seeded) and a small one (seeded) are written through the
//! mount and uploaded; after a remount, the first file and the small upload are read again:
//! data GETs against those of the first read (target 0), and the cache's peak on disk against
//! its limit. 15 (`rewatch`): a transcoded video (a hand-made ladder) watched twice: data GETs
//! of the second watch against the first (target 0). 16 (`slowdisk`): the cache dir's disk
//! throttled for the daemon to `SLOW_DISK_MIB_S` (a blkio/io cgroup), far below the link: a
//! first read with the cache on against `--cache-size 0` under the same throttle (target
//! ≥ 0.95x), with the bytes the cache skipped.

use std::os::unix::fs::MetadataExt;

use alipanfs::emulator::SeedTranscode;

use super::*;

const SEED_LIMIT: u64 = 512 * MIB;
const SEED_KEPT: u64 = 128 * MIB;
/// Bigger than a quarter of `SEED_LIMIT`: not seeded.
const SEED_BIG: u64 = 384 * MIB;
/// At most a quarter of `SEED_LIMIT`: seeded.
const SEED_SMALL: u64 = 64 * MIB;
const SEGMENTS: usize = 8;
const SEGMENT: usize = 2 * MIB as usize + 12_345;
const SLOW_SIZE: u64 = 256 * MIB;
const SLOW_ROUNDS: usize = 3;
const SLOW_DISK_MIB_S: u64 = 20;

pub(super) fn fill_rows(
    emu: &Emulator,
    dir: &Path,
    only: &Only,
    report: &mut Report,
) -> BoxResult<()> {
    if only.runs("seed", 14) {
        seed_row(emu, dir, report)?;
    }
    if only.runs("rewatch", 15) {
        rewatch_row(emu, dir, report)?;
    }
    if only.runs("slowdisk", 16) {
        slow_disk_row(emu, dir, report)?;
    }
    Ok(())
}

fn data_gets(emu: &Emulator) -> u64 {
    emu.calls().get("data/get").copied().unwrap_or(0)
}

/// Reads `path` until the cache under `data` holds at least `bytes` more than `base` (a
/// first read skips what the writer cannot take in time); returns the passes it took.
fn read_until_cached(path: &Path, size: u64, data: &Path, base: u64) -> BoxResult<usize> {
    let mut passes = 0;
    while alipanfs::cache::disk_usage(data) < base + size {
        check(passes < 8, "the cache did not fill in 8 passes")?;
        read_all(path, size)?;
        passes += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(passes)
}

/// Waits until the bytes under `data` stop changing (the writer and seeding are done).
fn settle(data: &Path) -> u64 {
    let mut last = alipanfs::cache::disk_usage(data);
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(1500));
        let now = alipanfs::cache::disk_usage(data);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn seed_row(emu: &Emulator, dir: &Path, report: &mut Report) -> BoxResult<()> {
    eprintln!(
        "row 14: seeded uploads beside a cached file, --cache-size {} MiB",
        SEED_LIMIT / MIB
    );
    emu.seed_pattern_file("root", "seed-kept.bin", SEED_KEPT, 140);
    let _ = std::fs::remove_dir_all(dir.join("mount-seed"));
    let limit = format!("{}M", SEED_LIMIT / MIB);
    let args = ["--cache-size", limit.as_str(), "--passthrough", "off"];
    let data = dir.join("mount-seed/cache/data");
    let mount = Mount::start_with(emu, dir, "seed", &args)?;
    emu.reset_calls();
    read_all(&mount.path("seed-kept.bin"), SEED_KEPT)?;
    let first_gets = data_gets(emu);
    let passes = 1 + read_until_cached(&mount.path("seed-kept.bin"), SEED_KEPT, &data, 0)?;
    // Peak bytes on disk while the uploads land and seed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, data) = (stop.clone(), data.clone());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(alipanfs::cache::disk_usage(&data));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let uploads = (|| {
        let big = pattern_bytes(141, 0, SEED_BIG as usize);
        write_through(emu, &mount, "seed-big.bin", &big)?;
        drop(big);
        let small = pattern_bytes(142, 0, SEED_SMALL as usize);
        write_through(emu, &mount, "seed-small.bin", &small)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })();
    let settled = settle(&data);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().map_err(|_| "sampler panicked")?.max(settled);
    uploads?;
    mount.stop();
    // A remount: what the reads find now comes from the cache or the drive, not from the
    // uploads' local copies.
    let mount = Mount::start_with(emu, dir, "seed", &args)?;
    emu.reset_calls();
    read_all(&mount.path("seed-kept.bin"), SEED_KEPT)?;
    let kept_gets = data_gets(emu);
    emu.reset_calls();
    read_all(&mount.path("seed-small.bin"), SEED_SMALL)?;
    let small_gets = data_gets(emu);
    mount.stop();
    report.row(
        &format!(
            "14. re-read of a cached {} MiB file after {} + {} MiB uploads and a remount (data GETs)",
            SEED_KEPT / MIB,
            SEED_BIG / MIB,
            SEED_SMALL / MIB
        ),
        format!("{kept_gets}"),
        format!("{first_gets} (its first read)"),
        verdict(kept_gets == 0, "target 0"),
    );
    report.row(
        &format!(
            "14b. first read of the seeded {} MiB upload after the remount (data GETs)",
            SEED_SMALL / MIB
        ),
        format!("{small_gets}"),
        format!("{first_gets} (row 14's first read)"),
        verdict(
            small_gets == 0,
            "target 0 (≤ a quarter of --cache-size: seeded)",
        ),
    );
    report.row(
        &format!(
            "14c. cache peak on disk during the uploads, --cache-size {} MiB (MiB)",
            SEED_LIMIT / MIB
        ),
        format!("{:.1}", peak as f64 / MIB as f64),
        format!("{} + 1 block (limit)", SEED_LIMIT / MIB),
        verdict(peak <= SEED_LIMIT + MIB, "target ≤ limit + 1 MiB"),
    );
    report.note(format!(
        "row 14: the {} MiB file was cached after {passes} read(s); after the uploads the cache held {:.1} MiB",
        SEED_KEPT / MIB,
        settled as f64 / MIB as f64
    ));
    Ok(())
}

fn rewatch_row(emu: &Emulator, dir: &Path, report: &mut Report) -> BoxResult<()> {
    eprintln!("row 15: a transcoded video watched twice");
    let ladder = dir.join("rewatch-ladder/FHD");
    std::fs::create_dir_all(&ladder)?;
    let segments: Vec<Vec<u8>> = (0..SEGMENTS)
        .map(|i| pattern_bytes(150 + i as u64, 0, SEGMENT))
        .collect();
    let mut playlist = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n");
    for (i, s) in segments.iter().enumerate() {
        std::fs::write(ladder.join(format!("{i:06}.ts")), s)?;
        playlist.push_str(&format!("#EXTINF:4.0,\n{i:06}.ts\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    std::fs::write(ladder.join("index.m3u8"), playlist)?;
    emu.set_transcode_time(Duration::ZERO);
    let movies = emu.seed_folder("root", "RewatchMovies");
    let id = emu.seed_file(&movies, "film.mkv", b"not really a video");
    emu.seed_transcodes(
        &id,
        4.0 * SEGMENTS as f64,
        320,
        180,
        vec![SeedTranscode {
            template_id: "FHD".into(),
            width: 320,
            height: 180,
            dir: ladder.clone(),
        }],
        vec![],
    );
    let mount = Mount::start_with(emu, dir, "rewatch", &["--passthrough", "off"])?;
    let video = mount.path(".transcoded/RewatchMovies/film.mkv");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(video.join("FHD.m3u8")).is_ok_and(|t| t.contains("ENDLIST")) {
        check(
            Instant::now() < deadline,
            "the FHD transcode did not show in 30 s",
        )?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let watch = || -> BoxResult<()> {
        for (i, s) in segments.iter().enumerate() {
            let got = std::fs::read(video.join(format!("FHD/{i:06}.ts")))?;
            check(got == *s, &format!("segment {i} differs"))?;
        }
        Ok(())
    };
    emu.reset_calls();
    watch()?;
    let first = data_gets(emu);
    // Blocks are recorded after the writer's periodic sync (every second).
    std::thread::sleep(Duration::from_secs(3));
    emu.reset_calls();
    watch()?;
    let again = data_gets(emu);
    mount.stop();
    report.row(
        &format!(
            "15. second watch of a transcoded video, {SEGMENTS} segments of {:.1} MiB (data GETs)",
            SEGMENT as f64 / MIB as f64
        ),
        format!("{again}"),
        format!("{first} (first watch)"),
        verdict(again == 0, "target 0"),
    );
    Ok(())
}

/// A cgroup whose members' writes to one disk are limited (cgroup v2 `io.max`, else v1
/// `blkio.throttle.write_bps_device`); removed, its members moved back, when dropped.
struct Throttle {
    cgroup: PathBuf,
    parent: PathBuf,
    dev: String,
}

impl Throttle {
    /// Limits writes to the disk that holds `path` to `bytes_per_s`.
    fn new(path: &Path, bytes_per_s: u64) -> BoxResult<Throttle> {
        let dev = whole_disk(path)?;
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let name = format!("alipanfs-bench-slowdisk-{}", std::process::id());
        if std::fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|c| c == "io")) {
            let parent = PathBuf::from("/sys/fs/cgroup");
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+io");
            let cgroup = parent.join(name);
            std::fs::create_dir_all(&cgroup)?;
            std::fs::write(cgroup.join("io.max"), format!("{dev} wbps={bytes_per_s}"))?;
            Ok(Throttle {
                cgroup,
                parent,
                dev,
            })
        } else {
            let parent = PathBuf::from("/sys/fs/cgroup/blkio");
            check(
                parent.join("blkio.throttle.write_bps_device").exists(),
                "no io (cgroup v2) or blkio (v1) controller to throttle the disk with",
            )?;
            let cgroup = parent.join(name);
            std::fs::create_dir_all(&cgroup)?;
            std::fs::write(
                cgroup.join("blkio.throttle.write_bps_device"),
                format!("{dev} {bytes_per_s}"),
            )?;
            Ok(Throttle {
                cgroup,
                parent,
                dev,
            })
        }
    }

    fn add(&self, pid: u32) -> BoxResult<()> {
        std::fs::write(self.cgroup.join("cgroup.procs"), pid.to_string())?;
        Ok(())
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.cgroup.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = std::fs::write(self.parent.join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// `MAJOR:MINOR` of the whole disk that holds `path` (throttles apply to disks, not
/// partitions).
fn whole_disk(path: &Path) -> BoxResult<String> {
    let dev = std::fs::metadata(path)?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))
        .map_err(|e| format!("{}: not on a block device ({e})", path.display()))?;
    if sys.join("partition").exists() {
        let parent = sys.parent().ok_or("a partition with no disk")?;
        return Ok(std::fs::read_to_string(parent.join("dev"))?
            .trim()
            .to_string());
    }
    Ok(format!("{major}:{minor}"))
}

/// The cache's skipped bytes from `alipanfs status --json` of `mount`, if it answers.
fn skipped_bytes(mount: &Mount) -> Option<u64> {
    let out = Command::new(BIN)
        .args(["status", "--json"])
        .arg(&mount.dir)
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["cache"]["skipped_bytes"].as_u64()
}

fn slow_disk_row(emu: &Emulator, dir: &Path, report: &mut Report) -> BoxResult<()> {
    eprintln!("row 16: first read with the cache dir's disk throttled to {SLOW_DISK_MIB_S} MiB/s");
    let throttle = match Throttle::new(dir, SLOW_DISK_MIB_S * MIB) {
        Ok(t) => t,
        Err(e) => {
            report.note(format!("row 16 not run: {e}"));
            return Ok(());
        }
    };
    let names: Vec<[String; 2]> = (0..SLOW_ROUNDS)
        .map(|r| {
            let pair = [format!("slow-on-{r}.bin"), format!("slow-off-{r}.bin")];
            for (i, n) in pair.iter().enumerate() {
                emu.seed_pattern_file("root", n, SLOW_SIZE, 160 + (2 * r + i) as u64);
            }
            pair
        })
        .collect();
    let _ = std::fs::remove_dir_all(dir.join("mount-slow-on"));
    let on = Mount::start_with(emu, dir, "slow-on", &["--passthrough", "off"])?;
    let off = Mount::start_with(emu, dir, "slow-off", &["--cache-size", "0"])?;
    throttle.add(on.child.id())?;
    throttle.add(off.child.id())?;
    // The throttle holds: the daemon's own writes to that disk are this slow.
    let probe = dir.join("mount-slow-on/cache/throttle-probe");
    let disk = {
        let probe = probe.clone();
        let start = Instant::now();
        let mut child = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", "count=40", "conv=fdatasync"])
            .arg(format!("of={}", probe.display()))
            .stderr(Stdio::null())
            .spawn()?;
        throttle.add(child.id())?;
        child.wait()?;
        let _ = std::fs::remove_file(&probe);
        mib_per_s(40 * MIB, start.elapsed())
    };
    let (mut speed_on, mut speed_off) = (Vec::new(), Vec::new());
    for pair in &names {
        for (mount, name, speeds) in [
            (&on, &pair[0], &mut speed_on),
            (&off, &pair[1], &mut speed_off),
        ] {
            speeds.push(mib_per_s(
                SLOW_SIZE,
                timed(|| read_all(&mount.path(name), SLOW_SIZE))?,
            ));
        }
    }
    let skipped = skipped_bytes(&on);
    let device = throttle.dev.clone();
    let cached = settle(&dir.join("mount-slow-on/cache/data"));
    on.stop();
    off.stop();
    drop(throttle);
    let (m_on, m_off) = (median(&speed_on), median(&speed_off));
    report.row(
        &format!(
            "16. first read of a never-read {} MiB file, cache dir's disk throttled to {SLOW_DISK_MIB_S} MiB/s, cache on vs off, median of {SLOW_ROUNDS} (MiB/s)",
            SLOW_SIZE / MIB
        ),
        format!("{m_on:.0}"),
        format!("{m_off:.0} (--cache-size 0, same throttle)"),
        ratio(m_on, m_off, 0.95),
    );
    let rounds: Vec<String> = speed_on
        .iter()
        .zip(&speed_off)
        .map(|(a, b)| format!("{a:.0}/{b:.0}"))
        .collect();
    report.note(format!(
        "row 16: writes to disk {device} throttled; a throttled dd with fdatasync wrote {disk:.1} MiB/s; rounds cache on/off MiB/s: {}; \
         the cache skipped {} MiB and held {:.1} MiB of the {} MiB read",
        rounds.join(", "),
        skipped.map_or("?".into(), |s| format!("{:.0}", s as f64 / MIB as f64)),
        cached as f64 / MIB as f64,
        SLOW_ROUNDS as u64 * SLOW_SIZE / MIB
    ));
    Ok(())
}
