//! Rows 12-13 (group `first`, issue 21): what the data cache costs a first read, and `ls -l`
//! of a big folder against a local one.
//!
//! 12: a never-read file read sequentially with the cache on (default) and with
//! `--cache-size 0`, alternated on fresh files for `FIRST_ROUNDS` rounds so both see the same
//! load; 12b: the daemon's CPU per GiB of those reads; 12c: each mount's peak RSS against the
//! memory limit. 13: warm `ls -l` of `BIG_FOLDER` entries against a local folder of as many
//! empty files; 13b: the LOOKUPs one warm `ls -l` costs (the mount's fuse-ops metric), and
//! 13c: the LOOKUPs and GETATTRs of a `stat` of every entry past the attribute timeout (the
//! kernel keeps what a fresh listing said as long as the listing stays fresh). 12d: row 12's
//! daemon CPU per GiB against the FUSE floor (row 1c's file system, read the same way).

use super::*;

const FIRST_SIZE: u64 = 512 * MIB;
const FIRST_ROUNDS: usize = 3;
const BIG_FOLDER: usize = 20_000;

pub(super) fn first_rows(emu: &Emulator, dir: &Path, report: &mut Report) -> BoxResult<()> {
    first_read_rows(emu, dir, report)?;
    big_ls_rows(emu, dir, report)
}

fn first_read_rows(emu: &Emulator, dir: &Path, report: &mut Report) -> BoxResult<()> {
    eprintln!("row 12: first read, cache on vs --cache-size 0, {FIRST_ROUNDS} rounds");
    let names: Vec<[String; 2]> = (0..FIRST_ROUNDS)
        .map(|r| {
            let pair = [format!("first-on-{r}.bin"), format!("first-off-{r}.bin")];
            for (i, n) in pair.iter().enumerate() {
                emu.seed_pattern_file("root", n, FIRST_SIZE, 100 + (2 * r + i) as u64);
            }
            pair
        })
        .collect();
    let on = Mount::start_with(emu, dir, "first-on", &[])?;
    let off = Mount::start_with(emu, dir, "first-off", &["--cache-size", "0"])?;
    let (mut speed_on, mut speed_off) = (Vec::new(), Vec::new());
    let (mut cpu_on, mut cpu_off) = (0.0, 0.0);
    for pair in &names {
        for (mount, name, speeds, cpu) in [
            (&on, &pair[0], &mut speed_on, &mut cpu_on),
            (&off, &pair[1], &mut speed_off, &mut cpu_off),
        ] {
            let before = mount.cpu_seconds()?;
            let took = timed(|| read_all(&mount.path(name), FIRST_SIZE))?;
            *cpu += mount.cpu_seconds()? - before;
            speeds.push(mib_per_s(FIRST_SIZE, took));
        }
    }
    let (m_on, m_off) = (median(&speed_on), median(&speed_off));
    report.row(
        &format!(
            "12. first read of a never-read {} MiB file, cache on vs off, median of {FIRST_ROUNDS} (MiB/s)",
            FIRST_SIZE / MIB
        ),
        format!("{m_on:.0}"),
        format!("{m_off:.0} (--cache-size 0)"),
        ratio(m_on, m_off, 0.95),
    );
    let rounds: Vec<String> = speed_on
        .iter()
        .zip(&speed_off)
        .map(|(a, b)| format!("{a:.0}/{b:.0}"))
        .collect();
    report.note(format!(
        "row 12 rounds, cache on/off MiB/s: {}",
        rounds.join(", ")
    ));
    let gib = (FIRST_SIZE * FIRST_ROUNDS as u64) as f64 / GIB as f64;
    report.row(
        "12b. daemon CPU per GiB of row 12's first reads (s)",
        format!("{:.2} (cache on)", cpu_on / gib),
        format!("{:.2} (cache off)", cpu_off / gib),
        format!("{:.2}x", cpu_on / cpu_off.max(1e-9)),
    );
    rss_row(report, "12c. daemon peak RSS, row 12 cache on (MiB)", &on)?;
    rss_row(report, "12c. daemon peak RSS, row 12 cache off (MiB)", &off)?;
    on.stop();
    off.stop();
    // 12d: the same CPU figure against the floor of any FUSE mount (row 1c's do-nothing file
    // system, which counts its reader too).
    let (_, floor_cpu) = floor_read(dir)?;
    report.row(
        "12d. daemon CPU per GiB of a first read, cache on, vs the FUSE floor (s)",
        format!("{:.2} (cache on)", cpu_on / gib),
        format!("{floor_cpu:.2} (row 1c: do-nothing FUSE server and its reader)"),
        format!("{:.2}x", cpu_on / gib / floor_cpu.max(1e-9)),
    );
    Ok(())
}

fn big_ls_rows(emu: &Emulator, dir: &Path, report: &mut Report) -> BoxResult<()> {
    eprintln!("row 13: warm ls -l of {BIG_FOLDER} entries against a local folder");
    let folder = emu.seed_folder("root", "big-folder");
    for i in 0..BIG_FOLDER {
        emu.seed_file(&folder, &format!("e{i:05}.txt"), b"");
    }
    let local = dir.join("local-big-folder");
    std::fs::create_dir_all(&local)?;
    for i in 0..BIG_FOLDER {
        File::create(local.join(format!("e{i:05}.txt")))?;
    }
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mount = Mount::start_with(
        emu,
        dir,
        "big-ls",
        &["--cache-size", "0", "--metrics-listen", &listen],
    )?;
    let path = mount.path("big-folder");
    // Cold once, then past the attribute timeout (1 s), warm: the listing is still fresh.
    ls_l(&path)?;
    std::thread::sleep(Duration::from_millis(1500));
    let (mut ours, mut local_t) = (Vec::new(), Vec::new());
    let mut lookups = Vec::new();
    for _ in 0..3 {
        let before = op_count(&listen, "lookup")?;
        let (lines, took) = ls_l(&path)?;
        check(
            lines == BIG_FOLDER + 1,
            &format!("ls -l printed {lines} lines"),
        )?;
        lookups.push(op_count(&listen, "lookup")? - before);
        ours.push(took.as_secs_f64());
        local_t.push(ls_l(&local)?.1.as_secs_f64());
    }
    let (o, l) = (median(&ours), median(&local_t));
    let r = o / l.max(1e-9);
    report.row(
        &format!("13. warm `ls -l` of {BIG_FOLDER} entries, median of 3 (s)"),
        format!("{o:.3}"),
        format!("{l:.3} (local folder)"),
        verdict(r <= 3.0, &format!("{r:.2}x (target ≤ 3x)")),
    );
    let worst = lookups.iter().copied().fold(0.0, f64::max);
    report.row(
        "13b. LOOKUPs per warm `ls -l` of row 13 (worst of 3)",
        format!("{worst:.0}"),
        "-".into(),
        verdict(worst <= 200.0, "target ≤ 200"),
    );
    // 13c: past the attribute timeout again, a stat of every entry.
    std::thread::sleep(Duration::from_millis(1500));
    let asked =
        || -> BoxResult<f64> { Ok(op_count(&listen, "lookup")? + op_count(&listen, "getattr")?) };
    let stat_all = |dir: &Path| {
        timed(|| {
            for i in 0..BIG_FOLDER {
                std::fs::metadata(dir.join(format!("e{i:05}.txt")))?;
            }
            Ok(())
        })
    };
    let before = asked()?;
    let ours = stat_all(&path)?;
    let stats = asked()? - before;
    let local_stats = stat_all(&local)?;
    report.row(
        &format!("13c. `stat` of each of row 13's {BIG_FOLDER} entries after its `ls -l` (LOOKUPs + GETATTRs; s)"),
        format!("{stats:.0}; {:.3}", ours.as_secs_f64()),
        format!("{:.3} (local folder)", local_stats.as_secs_f64()),
        verdict(
            stats <= 200.0,
            "target ≤ 200: entries kept as long as the listing",
        ),
    );
    mount.stop();
    Ok(())
}

/// A port free now, for `--metrics-listen`.
fn free_port() -> BoxResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// FUSE operations `op` answered so far, from the mount's `/metrics` at `listen`.
fn op_count(listen: &str, op: &str) -> BoxResult<f64> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{listen}/metrics")])
        .output()?;
    check(out.status.success(), "cannot read /metrics")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("alipanfs_fuse_ops") && l.contains(&format!("op=\"{op}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
