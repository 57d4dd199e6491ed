//! Rows 17-18 (group `webdav`, issue 22): the drive served over WebDAV by a mount's
//! `--webdav-listen`, against curl of the drive's own download URL and the FUSE mount itself,
//! in one run.
//!
//! 17: a 1 GiB file downloaded over WebDAV (curl), from the drive URL directly (curl), and
//! read through the FUSE mount, alternated for `DAV_ROUNDS` rounds, compared by medians.
//! 18: eight clients GET eight 128 MiB files over WebDAV at once: their total throughput, the
//! most downloads the emulator saw at one moment (the account's cap is 3) and the downloads it
//! refused for the cap.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

const DAV_ROUNDS: usize = 2;
const PARALLEL: usize = 8;
const PARALLEL_SIZE: u64 = 128 * MIB;

pub(super) fn webdav_rows(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    emu: &Emulator,
    big: &str,
    dir: &Path,
    report: &mut Report,
) -> BoxResult<()> {
    let direct = rt.block_on(client.download_url(big))?.url;
    let parallel: Vec<String> = (0..PARALLEL)
        .map(|i| {
            let name = format!("dav-{i}.bin");
            emu.seed_pattern_file("root", &name, PARALLEL_SIZE, 200 + i as u64);
            name
        })
        .collect();
    // The getDownloadUrl bucket (1/s) is shared with the mount: let it refill first.
    std::thread::sleep(Duration::from_millis(1500));
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen = format!("127.0.0.1:{port}");
    let mount = Mount::start_with(
        emu,
        dir,
        "webdav",
        &["--cache-size", "0", "--webdav-listen", &listen],
    )?;
    let dav = format!("http://{listen}");

    eprintln!(
        "row 17: 1 GiB over WebDAV, from the drive URL, and through FUSE, {DAV_ROUNDS} rounds"
    );
    let (mut over_dav, mut over_url, mut over_fuse) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..DAV_ROUNDS {
        over_url.push(curl_download(&direct, "%{speed_download}")? / MIB as f64);
        let size = curl_numbers(
            &[
                "-s",
                "-f",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{speed_download}",
                &format!("{dav}/big.bin"),
            ],
            2,
        )?;
        check(size[0] as u64 == GIB, "the WebDAV GET was short")?;
        over_dav.push(size[1] / MIB as f64);
        over_fuse.push(mib_per_s(
            GIB,
            timed(|| read_all(&mount.path("big.bin"), GIB))?,
        ));
    }
    let (dav_m, url_m, fuse_m) = (median(&over_dav), median(&over_url), median(&over_fuse));
    report.row(
        &format!(
            "17. GET 1 GiB over WebDAV vs curl of the drive URL, median of {DAV_ROUNDS} (MiB/s)"
        ),
        format!("{dav_m:.0}"),
        format!("{url_m:.0} (curl, drive URL)"),
        format!("{:.2}x", dav_m / url_m.max(1e-9)),
    );
    report.row(
        "17b. the same GET over WebDAV vs read through the FUSE mount (MiB/s)",
        format!("{dav_m:.0}"),
        format!("{fuse_m:.0} (FUSE, same mount)"),
        format!("{:.2}x", dav_m / fuse_m.max(1e-9)),
    );

    eprintln!(
        "row 18: {PARALLEL} parallel WebDAV GETs of {} MiB, twice",
        PARALLEL_SIZE / MIB
    );
    let total = PARALLEL_SIZE * PARALLEL as u64;
    emu.reset_calls();
    let (first, first_peak) = parallel_gets(emu, &dav, &parallel)?;
    let calls_first = counts(emu);
    emu.reset_calls();
    let (second, second_peak) = parallel_gets(emu, &dav, &parallel)?;
    let denied = emu
        .calls()
        .get(alipanfs::emulator::DENIED_CONCURRENCY)
        .copied()
        .unwrap_or(0);
    let peak = first_peak.max(second_peak);
    report.row(
        &format!(
            "18. {PARALLEL} parallel WebDAV GETs of {} MiB: total MiB/s, URLs known (first time, 8 getDownloadUrl at 1/s)",
            PARALLEL_SIZE / MIB
        ),
        format!("{:.0} ({:.0})", mib_per_s(total, second), mib_per_s(total, first)),
        format!("peak {peak} downloads at the drive (cap 3)"),
        verdict(peak <= 3, &format!("{denied} refused for the cap")),
    );
    report.note(format!(
        "row 18 API calls, first round: {calls_first}; second: {}",
        counts(emu)
    ));
    mount.stop();
    Ok(())
}

/// `names` fetched over WebDAV by as many curls at once: how long that took, and the most
/// downloads the emulator served at one moment meanwhile.
fn parallel_gets(emu: &Emulator, dav: &str, names: &[String]) -> BoxResult<(Duration, usize)> {
    let stop = AtomicBool::new(false);
    let peak = AtomicUsize::new(0);
    let took = std::thread::scope(|scope| -> BoxResult<Duration> {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(emu.active_downloads(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let started = Instant::now();
        let result = (|| -> BoxResult<()> {
            let children: Vec<Child> = names
                .iter()
                .map(|name| {
                    Command::new("curl")
                        .args(["-s", "-f", "-o", "/dev/null", "-w", "%{size_download}"])
                        .arg(format!("{dav}/{name}"))
                        .stdout(Stdio::piped())
                        .spawn()
                })
                .collect::<Result<_, _>>()?;
            for child in children {
                let out = child.wait_with_output()?;
                let got: u64 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .unwrap_or(0);
                check(
                    out.status.success() && got == PARALLEL_SIZE,
                    "a parallel WebDAV GET failed",
                )?;
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result.map(|()| started.elapsed())
    })?;
    Ok((took, peak.load(Ordering::Relaxed)))
}
