//! Transcode segments in the data cache, through the kernel: watching a video again costs no
//! GET (issue 21). The ladder is hand-made (segments are opaque bytes to the mount).

mod common;

use std::time::Duration;

use alipanfs::emulator::{pattern_bytes, SeedTranscode};
use common::*;

const MIB: usize = 1 << 20;

#[test]
fn watching_a_transcoded_video_again_costs_no_get() {
    let work = tempfile::tempdir().unwrap();
    let fhd = work.path().join("FHD");
    std::fs::create_dir_all(&fhd).unwrap();
    let segments = [
        pattern_bytes(71, 0, 3 * MIB + 5),
        pattern_bytes(72, 0, MIB / 2),
    ];
    let mut playlist = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n");
    for (i, s) in segments.iter().enumerate() {
        std::fs::write(fhd.join(format!("{i:06}.ts")), s).unwrap();
        playlist.push_str(&format!("#EXTINF:2.0,\n{i:06}.ts\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    std::fs::write(fhd.join("index.m3u8"), playlist).unwrap();
    let m = mount_with(
        |_| {},
        |e| {
            e.set_transcode_time(Duration::ZERO);
            let movies = e.seed_folder("root", "Movies");
            let id = e.seed_file(&movies, "film.mkv", b"not really a video");
            e.seed_transcodes(
                &id,
                4.0,
                320,
                180,
                vec![SeedTranscode {
                    template_id: "FHD".into(),
                    width: 320,
                    height: 180,
                    dir: fhd.clone(),
                }],
                vec![],
            );
        },
        &["--passthrough", "off"],
    );
    let dir = m.path(".transcoded/Movies/film.mkv");
    m.wait_for("the FHD transcode", Duration::from_secs(30), || {
        std::fs::read_to_string(dir.join("FHD.m3u8")).is_ok_and(|t| t.contains("#EXT-X-ENDLIST"))
    });
    let watch = || {
        for (i, s) in segments.iter().enumerate() {
            let got = std::fs::read(dir.join(format!("FHD/{i:06}.ts"))).unwrap();
            assert!(got == *s, "segment {i} differs");
        }
    };
    let before = m.calls();
    watch();
    let first = m.calls().since(&before);
    assert!(first.get("data/get") > 0, "{first}");
    // Blocks are recorded after a periodic sync: a re-watch soon after costs no GET.
    let mut last = String::new();
    m.wait_for("a re-watch with no GET", Duration::from_secs(20), || {
        let before = m.calls();
        watch();
        let d = m.calls().since(&before);
        last = d.to_string();
        d.get("data/get") == 0
    });
    eprintln!("first watch: {first}; last re-watch: {last}");
}
