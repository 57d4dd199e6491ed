//! The demo tree's video: a real 12 s H.264/AAC clip with HLS transcodes LD (320x180) and SD
//! (640x360) and an English subtitle, built into the binary so `alipanfs mount --demo` works
//! without ffmpeg. `contrib/demo-video.sh` regenerates the assets.

use super::state::Shared;
use super::transcode::{LadderFiles, SeedSubtitle};

const SOURCE: &[u8] = include_bytes!("../../contrib/demo-video/source.mp4");
const DURATION: f64 = 12.0;
const SUBTITLE: &[u8] = b"WEBVTT\n\n00:00:00.000 --> 00:00:04.000\nThis video is served by the alipanfs emulator.\n\n00:00:04.000 --> 00:00:12.000\nIts transcodes are real H.264 HLS streams.\n";

macro_rules! template {
    ($id:literal, $w:literal, $h:literal) => {
        LadderFiles {
            template_id: $id.into(),
            width: $w,
            height: $h,
            playlist: include_str!(concat!("../../contrib/demo-video/", $id, "/index.m3u8")).into(),
            files: vec![
                (
                    "seg000.ts".into(),
                    include_bytes!(concat!("../../contrib/demo-video/", $id, "/seg000.ts"))
                        .to_vec(),
                ),
                (
                    "seg001.ts".into(),
                    include_bytes!(concat!("../../contrib/demo-video/", $id, "/seg001.ts"))
                        .to_vec(),
                ),
                (
                    "seg002.ts".into(),
                    include_bytes!(concat!("../../contrib/demo-video/", $id, "/seg002.ts"))
                        .to_vec(),
                ),
            ],
        }
    };
}

impl Shared {
    /// `name` in `parent`: the demo clip, with its transcodes and subtitle.
    pub fn seed_demo_video(&self, parent: &str, name: &str) -> String {
        let id = self.seed_bytes(parent, name, SOURCE);
        let ladder = vec![template!("LD", 320, 180), template!("SD", 640, 360)];
        let subtitles = vec![SeedSubtitle {
            language: "eng".into(),
            vtt: SUBTITLE.to_vec(),
        }];
        self.seed_transcodes(&id, DURATION, 640, 360, ladder, subtitles);
        id
    }
}
