#!/usr/bin/env bash
# Checks an installed alipanfs .deb from its installed files only: the unit passes
# `systemd-analyze verify` (its man page is installed), the man page and completions are where
# man(1) and the shells look, and `mount -t fuse.alipanfs CONFIG DIR` (mount(8) running
# /sbin/mount.fuse.alipanfs) mounts an emulator started by /usr/bin/alipanfs; ls; umount. As root.
set -euo pipefail
fail() { echo "check-installed: $*" >&2; exit 1; }
[ -x /usr/bin/alipanfs ] || fail "/usr/bin/alipanfs missing"
[ "$(readlink -f /sbin/mount.fuse.alipanfs)" = "$(readlink -f /usr/bin/alipanfs)" ] \
  || fail "/sbin/mount.fuse.alipanfs does not lead to /usr/bin/alipanfs"
for f in /usr/share/man/man1/alipanfs.1.gz /usr/share/bash-completion/completions/alipanfs \
  /usr/share/zsh/vendor-completions/_alipanfs /usr/share/fish/vendor_completions.d/alipanfs.fish \
  /usr/share/doc/alipanfs/config.example.toml /lib/systemd/system/alipanfs@.service \
  /lib/systemd/system/alipanfs-webdav@.service; do
  [ -s "$f" ] || fail "$f missing"
done
systemd-analyze verify /lib/systemd/system/alipanfs@.service /lib/systemd/system/alipanfs-webdav@.service

work=$(mktemp -d)
emu_pid=
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && umount -l "$work/mnt" || true
  [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
token=eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJkZWIifQ.ZGViLWNoZWNrLXRva2Vu
/usr/bin/alipanfs emulator --seed-demo --refresh-token "$token" >"$work/emu.out" 2>"$work/emu.err" &
emu_pid=$!
for _ in $(seq 100); do grep -q '^token helper: ' "$work/emu.out" && break; sleep 0.1; done
api=$(sed -n 's/^alipanfs emulator listening on //p' "$work/emu.out")
helper=$(sed -n 's/^token helper: //p' "$work/emu.out")
[ -n "$api" ] && [ -n "$helper" ] || fail "emulator did not start: $(cat "$work/emu.err")"
cat >"$work/alipanfs.toml" <<TOML
api-url = "$api"
token-url = "$helper"
refresh-token = "$token"
token-file = "$work/state/token.json"
cache-dir = "$work/cache"
startup-timeout = 30
TOML
mkdir "$work/mnt"
XDG_STATE_HOME="$work/state" timeout 60 mount -t fuse.alipanfs "$work/alipanfs.toml" "$work/mnt" -o ro \
  || fail "mount -t fuse.alipanfs failed"
mountpoint -q "$work/mnt" || fail "not mounted after mount(8) returned"
listing=$(ls "$work/mnt")
[ -n "$listing" ] || fail "the mount shows nothing"
echo "$listing"
timeout 30 umount "$work/mnt" || fail "umount failed"
! mountpoint -q "$work/mnt" || fail "still mounted after umount"
echo "check-installed: ok (deb files, systemd-analyze verify, mount -t fuse.alipanfs, ls, umount)"
