#!/bin/sh
# Regenerates the demo video of `alipanfs mount --demo` / `alipanfs emulator --seed-demo`:
# a 12 s H.264/AAC test pattern (source MP4 at 640x360) and its HLS transcodes LD (320x180)
# and SD (640x360) in 4 s segments, small enough to be built into the binary
# (src/emulator/demo.rs include_bytes! them). Needs ffmpeg.
set -eu
out="$(dirname "$0")/demo-video"
rm -rf "$out"
mkdir -p "$out/LD" "$out/SD"
common="-map 0:v -map 1:a -c:v libx264 -preset veryslow -profile:v main -pix_fmt yuv420p -crf 38 -sc_threshold 0 -force_key_frames expr:gte(t,n_forced*4) -c:a aac -b:a 24k -ac 1"
# shellcheck disable=SC2086
ffmpeg -hide_banner -loglevel error -nostdin -y \
  -f lavfi -i testsrc=size=640x360:rate=25:duration=12 \
  -f lavfi -i sine=frequency=440:sample_rate=44100:duration=12 \
  $common -vf scale=640:360 -movflags +faststart "$out/source.mp4" \
  $common -vf scale=320:180 -f hls -hls_time 4 -hls_playlist_type vod \
    -hls_segment_filename "$out/LD/seg%03d.ts" "$out/LD/index.m3u8" \
  $common -vf scale=640:360 -f hls -hls_time 4 -hls_playlist_type vod \
    -hls_segment_filename "$out/SD/seg%03d.ts" "$out/SD/index.m3u8"
du -ab "$out"
