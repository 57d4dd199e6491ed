//! The drive's video transcodes and `.livp` live photos through the kernel: the real binary
//! mounted against the emulator, real HLS ladders made with ffmpeg, read by ffprobe/ffmpeg.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use alipanfs::emulator::{generate_ladder, SeedSubtitle};
use common::*;

const VTT: &[u8] = b"WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nhello from the drive\n";

/// A video `name` in `parent` with a real ladder of `templates`, `secs` long, and an English
/// subtitle; returns its file_id.
fn seed_video(
    e: &Emulator,
    work: &Path,
    parent: &str,
    name: &str,
    secs: f64,
    templates: &[(&str, u32, u32)],
    segment_secs: f64,
) -> String {
    let (source, ladder) =
        generate_ladder(&work.join(name), secs, templates, segment_secs).expect("ffmpeg ladder");
    let (w, h) = templates.iter().map(|t| (t.1, t.2)).max().unwrap();
    let id = e.seed_file(parent, name, &source);
    e.seed_transcodes(
        &id,
        secs,
        w,
        h,
        ladder,
        vec![SeedSubtitle {
            language: "eng".into(),
            vtt: VTT.to_vec(),
        }],
    );
    id
}

/// ffmpeg's stderr and the media time it reached (its last `time=`), in seconds.
fn ffmpeg_copy(args: &[&str], playlist: &Path) -> (std::process::ExitStatus, String, f64) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-stats"])
        .args(args)
        .arg("-i")
        .arg(playlist)
        .args(["-c", "copy", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let secs = err
        .rsplit("time=")
        .next()
        .filter(|_| err.contains("time="))
        .and_then(|t| {
            let hms = t.split_whitespace().next()?;
            let mut it = hms.split(':');
            let (h, m, s) = (it.next()?, it.next()?, it.next()?);
            Some(
                h.parse::<f64>().ok()? * 3600.0
                    + m.parse::<f64>().ok()? * 60.0
                    + s.parse::<f64>().ok()?,
            )
        })
        .unwrap_or(0.0);
    (out.status, err, secs)
}

fn errors_of(ffmpeg_stderr: &str) -> Vec<&str> {
    ffmpeg_stderr
        .split(['\n', '\r'])
        .filter(|l| !l.trim().is_empty() && !l.contains("time=") && !l.starts_with("frame="))
        .collect()
}

#[test]
fn ffprobe_and_ffmpeg_play_a_finished_transcode_across_url_expiry() {
    let work = tempfile::tempdir().unwrap();
    let mut video_id = String::new();
    let m = mount_with(
        |c| {
            // Every signed URL (play info's playlists and segments included) lives 4 s.
            c.download_url_ttl_cap = Duration::from_secs(4);
        },
        |e| {
            e.set_transcode_time(Duration::ZERO);
            let movies = e.seed_folder("root", "Movies");
            video_id = seed_video(
                e,
                work.path(),
                &movies,
                "film.mkv",
                8.0,
                &[("FHD", 320, 180), ("LD", 160, 90)],
                1.0,
            );
        },
        &[],
    );
    let dir = m.path(".transcoded/Movies/film.mkv");
    let fhd = dir.join("FHD.m3u8");
    // The first play info starts the transcode; it is finished once the playlist ends.
    m.wait_for(
        "the FHD transcode to finish",
        Duration::from_secs(30),
        || std::fs::read_to_string(&fhd).is_ok_and(|t| t.contains("#EXT-X-ENDLIST")),
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["FHD", "FHD.m3u8", "LD", "LD.m3u8", "eng.vtt"]);
    let text = std::fs::read_to_string(&fhd).unwrap();
    assert!(!text.contains("http") && !text.contains("oss"), "{text}");
    assert!(text.contains("\nFHD/000000.ts\n"), "{text}");
    assert_eq!(
        std::fs::metadata(&fhd).unwrap().len(),
        text.len() as u64,
        "a playlist's size is its length"
    );
    assert_eq!(std::fs::read(dir.join("eng.vtt")).unwrap(), VTT);

    let probe = sh(&format!(
        "ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,width,height -of csv=p=0 '{}'",
        fhd.display()
    ));
    // HLS shows the stream once per program too: every line must say the same.
    let lines: Vec<&str> = probe.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| *l == "h264,320,180"),
        "{probe}"
    );

    // Read at the video's own pace (-re): 8 s, two URL lifetimes.
    let calls_before = m.emulator.play_info_calls(&video_id);
    let (status, err, secs) = ffmpeg_copy(&["-re"], &fhd);
    assert!(status.success(), "ffmpeg failed: {err}\n{}", m.log());
    assert!(errors_of(&err).is_empty(), "ffmpeg reported: {err}");
    assert!(secs >= 7.5, "ffmpeg read {secs} s of 8:\n{err}");
    eprintln!(
        "read {secs} s at -re; play-info calls during the read: {}",
        m.emulator.play_info_calls(&video_id) - calls_before
    );
    assert!(
        m.emulator.play_info_calls(&video_id) > calls_before,
        "the play info was renewed while reading"
    );
    // A segment's size is the emulator's object's size.
    let seg = dir.join("LD/000000.ts");
    let bytes = std::fs::read(&seg).unwrap();
    assert!(bytes.len() > 188 && bytes[0] == 0x47, "an MPEG-TS segment");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), bytes.len() as u64);
}

#[test]
fn a_running_transcode_grows_while_read_and_ends_whole() {
    let work = tempfile::tempdir().unwrap();
    let mut video_id = String::new();
    let m = mount_with(
        |_| {},
        |e| {
            e.set_transcode_time(Duration::from_secs(10));
            // Longer than the 30 s transcoded ahead of time.
            video_id = seed_video(
                e,
                work.path(),
                "root",
                "long.mp4",
                42.0,
                &[("SD", 160, 90)],
                2.0,
            );
        },
        &[],
    );
    let sd = m.path(".transcoded/long.mp4/SD.m3u8");
    let first = std::fs::read_to_string(&sd).unwrap();
    assert!(first.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{first}");
    assert!(!first.contains("#EXT-X-ENDLIST"), "{first}");
    let first_segments = first.matches(".ts\n").count();
    assert!(
        (14..21).contains(&first_segments),
        "about 30 s ready: {first}"
    );
    assert_eq!(
        m.emulator.play_info_calls(&video_id),
        1,
        "one call to open it"
    );
    // ffmpeg reads from the start and follows the playlist until it ends.
    let player = {
        let sd = sd.clone();
        std::thread::spawn(move || ffmpeg_copy(&["-live_start_index", "0"], &sd))
    };
    m.wait_for("the transcode to finish", Duration::from_secs(60), || {
        std::fs::read_to_string(&sd).is_ok_and(|t| t.contains("#EXT-X-ENDLIST"))
    });
    let last = std::fs::read_to_string(&sd).unwrap();
    assert!(last.matches(".ts\n").count() > first_segments, "{last}");
    let (status, err, secs) = player.join().unwrap();
    assert!(status.success(), "ffmpeg failed: {err}\n{}", m.log());
    assert!(secs >= 41.0, "ffmpeg read {secs} s of 42:\n{err}");
    // The refresh is bounded: a few play-info calls over ~10 s of polling, not one per read.
    let calls = m.emulator.play_info_calls(&video_id);
    assert!(calls <= 12, "{calls} play-info calls");
    eprintln!("ffmpeg followed the growing playlist to {secs} s; {calls} play-info calls");
}

#[test]
fn the_tree_is_hidden_read_only_and_can_be_renamed_or_turned_off() {
    let m = mount_with(
        |_| {},
        |e| {
            let movies = e.seed_folder("root", "Movies");
            e.seed_file(&movies, "film.mp4", b"not really a video");
            e.seed_file(&movies, "notes.txt", b"notes");
            let sub = e.seed_folder(&movies, "Extras");
            e.seed_file(&sub, "clip.mkv", b"clip");
            e.seed_file("root", "top.txt", b"top");
        },
        &[],
    );
    for d in ["", "Movies", "Movies/Extras"] {
        let out = sh(&format!("ls -a '{}'", m.path(d).display()));
        assert!(!out.contains("transcoded"), "ls -a {d}: {out}");
    }
    let found = sh(&format!(
        "cd '{}' && find . -mindepth 1 -not -path '*/.transcoded*' | sed 's|^./||' | sort",
        m.dir.display()
    ));
    let drive: Vec<String> = m.drive_tree("/").into_keys().collect();
    assert_eq!(found.lines().collect::<Vec<_>>(), drive);
    // The mirror: folders and videos only.
    assert_eq!(
        sh(&format!("ls '{}'", m.path(".transcoded/Movies").display())),
        "Extras\nfilm.mp4\n"
    );
    assert_eq!(
        sh(&format!(
            "ls '{}'",
            m.path(".transcoded/Movies/Extras").display()
        )),
        "clip.mkv\n"
    );
    assert!(m.path(".transcoded").is_dir());
    // Read-only, wherever in it.
    for cmd in [
        "touch .transcoded/x",
        "mkdir .transcoded/Movies/new",
        "rmdir .transcoded/Movies/Extras",
        "mv .transcoded/Movies .transcoded/M2",
        "mv top.txt .transcoded/Movies/",
        "rmdir .transcoded",
        "mv .transcoded x",
    ] {
        let (status, out) = sh_status(&format!("cd '{}' && {cmd}", m.dir.display()));
        assert!(!status.success(), "{cmd} succeeded");
        assert!(out.contains("Read-only file system"), "{cmd}: {out}");
    }
    assert!(m.remote("top.txt").is_some(), "nothing moved");
    let (status, out) = sh_status(&format!("mkdir '{}'", m.path(".transcoded").display()));
    assert!(!status.success() && out.contains("File exists"), "{out}");

    m.restart(&["--transcodes-dir", ".hls"]);
    assert!(m.path(".hls/Movies/film.mp4").is_dir());
    let err = std::fs::metadata(m.path(".transcoded")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);

    m.restart(&["--transcodes=off"]);
    let err = std::fs::metadata(m.path(".transcoded")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(m.path("Movies/film.mp4").is_file());
}

#[test]
fn a_live_photo_reads_back_as_its_jpeg_and_mov_in_each_mode() {
    let jpeg: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mov: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let sha = |b: &[u8]| {
        use sha1::Digest;
        hex::encode_upper(sha1::Sha1::digest(b))
    };
    let m = mount_with(
        |_| {},
        |e| {
            let photos = e.seed_folder("root", "Photos");
            e.seed_livp(&photos, "IMG_0001.livp", &jpeg, &mov);
            e.seed_file(&photos, "plain.jpeg", b"plain");
        },
        &[],
    );
    let ls = |m: &Mount| sh(&format!("ls '{}'", m.path("Photos").display()));
    assert_eq!(ls(&m), "IMG_0001.jpeg\nIMG_0001.mov\nplain.jpeg\n");
    let j = m.path("Photos/IMG_0001.jpeg");
    let v = m.path("Photos/IMG_0001.mov");
    assert_eq!(std::fs::metadata(&j).unwrap().len(), jpeg.len() as u64);
    assert_eq!(std::fs::metadata(&v).unwrap().len(), mov.len() as u64);
    assert_eq!(sha1_of(&j), sha(&jpeg));
    assert_eq!(sha1_of(&v), sha(&mov));
    for cmd in [
        "rm Photos/IMG_0001.jpeg",
        "mv Photos/IMG_0001.mov Photos/x.mov",
        "sh -c 'echo x >> Photos/IMG_0001.jpeg'",
        "chmod 600 Photos/IMG_0001.jpeg",
    ] {
        let (status, out) = sh_status(&format!("cd '{}' && {cmd}", m.dir.display()));
        assert!(!status.success(), "{cmd} succeeded");
        assert!(out.contains("Read-only file system"), "{cmd}: {out}");
    }
    assert_eq!(sha1_of(&j), sha(&jpeg));

    m.restart(&["--livp=jpeg"]);
    assert_eq!(ls(&m), "IMG_0001.jpeg\nplain.jpeg\n");
    assert_eq!(sha1_of(&j), sha(&jpeg));
    m.restart(&["--livp=mov"]);
    assert_eq!(ls(&m), "IMG_0001.mov\nplain.jpeg\n");
    assert_eq!(sha1_of(&v), sha(&mov));
}
