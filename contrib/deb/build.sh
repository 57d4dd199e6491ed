#!/usr/bin/env bash
# Builds the Debian package: the release binary, then the files generated from it (man page,
# shell completions, the systemd unit with the packaged binary's path), then `cargo deb`
# ([package.metadata.deb] in Cargo.toml lists what goes where). Output: target/debian/*.deb
# (under $CARGO_TARGET_DIR when that is set). Needs cargo-deb: cargo install cargo-deb --locked
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bin alipanfs
bin="${CARGO_TARGET_DIR:-target}/release/alipanfs"
out=target/deb-assets   # relative to the project, as Cargo.toml's assets name it
rm -rf "$out" && mkdir -p "$out"
"$bin" man > "$out/alipanfs.1"
gzip -9n "$out/alipanfs.1"
"$bin" completions bash > "$out/alipanfs.bash"
"$bin" completions zsh > "$out/_alipanfs"
"$bin" completions fish > "$out/alipanfs.fish"
# The package installs the binary in /usr/bin, not /usr/local/bin as the manual install does.
sed 's#/usr/local/bin/alipanfs#/usr/bin/alipanfs#g' contrib/alipanfs@.service > "$out/alipanfs@.service"
sed 's#/usr/local/bin/alipanfs#/usr/bin/alipanfs#g' contrib/alipanfs-webdav@.service > "$out/alipanfs-webdav@.service"
sed 's#/usr/local/bin/alipanfs#/usr/bin/alipanfs#g' contrib/mnt-alipan.mount > "$out/mnt-alipan.mount"
cargo deb --no-build --strip "$@"
