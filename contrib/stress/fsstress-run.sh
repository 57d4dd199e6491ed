#!/usr/bin/env bash
# Runs xfstests' fsstress through a mount on the local emulator, as issue 19 asks:
#   fsstress -p PROCS -n OPS -s SEED -d MNT/fss   (file sizes capped at MAX_FILE_KIB, 16 MiB)
# then `alipanfs sync`, a snapshot of the tree (path, type, size, SHA-1), an unmount, and a
# second mount of the same emulated drive with a new, empty cache: that one shows only what
# the drive holds. The two snapshots must be the same, and no name may appear twice on the
# drive. Exits 1 when they differ. fsstress is not shipped: build it from
# https://github.com/kdave/xfstests (ltp/fsstress.c) and pass its path as FSSTRESS.
#
#   FSSTRESS=/path/to/fsstress PROCS=4 OPS=1000 contrib/stress/fsstress-run.sh
set -uo pipefail
FSSTRESS=${FSSTRESS:?set FSSTRESS to an fsstress binary built from xfstests}
PROCS=${PROCS:-4}
OPS=${OPS:-1000}
SEED=${SEED:-1}
BIN=$(realpath "${ALIPANFS:-target/release/alipanfs}")
work=$(mktemp -d)
mnt=$work/mnt
mkdir -p "$mnt"

"$BIN" emulator --data "$work/drive" >"$work/emulator.log" 2>&1 &
emulator=$!
daemon=
cleanup() {
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    kill "$emulator" 2>/dev/null
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q "^refresh token:" "$work/emulator.log" && break; sleep 0.1; done
url=$(sed -n 's/^alipanfs emulator listening on //p' "$work/emulator.log")
token=$(sed -n 's/^refresh token: //p' "$work/emulator.log")
[ -n "$url" ] && [ -n "$token" ] || { echo "the emulator did not start: $work/emulator.log"; exit 1; }

mount_it() { # $1: cache folder, $2: log
    ALIPANFS_REFRESH_TOKEN=$token "$BIN" --log-level "${LOG_LEVEL:-info}" mount --foreground "$mnt" \
        --api-url "$url" --client-id alipanfs-emulator-app --client-secret alipanfs-emulator-secret \
        --token-file "$work/token.json" --cache-dir "$1" >"$2" 2>&1 &
    daemon=$!
    for _ in $(seq 200); do mountpoint -q "$mnt" && return 0; sleep 0.1; done
    echo "the mount did not come up: $2"
    exit 1
}
unmount_it() {
    fusermount3 -u "$mnt" || { echo "unmount failed"; exit 1; }
    wait "$daemon"
    daemon=
}
# Path, type, size and SHA-1 of every entry under the mount, sorted.
snapshot() {
    (cd "$mnt" && find . -mindepth 1 \( -type d -printf 'd %p\n' \) -o \( -type f -printf 'f %p %s ' -exec sh -c 'sha1sum < "$1" | cut -d" " -f1' _ {} \; \)) | LC_ALL=C sort
}

mount_it "$work/cache1" "$work/daemon1.log"
start=$(date +%s)
# File sizes capped (MAX_FILE_KIB, default 16 MiB) by RLIMIT_FSIZE: the kernel refuses a write
# or truncate beyond it with EFBIG (SIGXFSZ ignored), which fsstress counts as a failed op.
# Uncapped, its fallocate, insert-range and copy-range ops grow files to gigabytes, and every
# closed version is staged, uploaded and kept by the emulator.
(
    trap '' XFSZ
    ulimit -f "${MAX_FILE_KIB:-16384}"
    exec "$FSSTRESS" -p "$PROCS" -n "$OPS" -s "$SEED" -d "$mnt/fss"
) >"$work/fsstress.log" 2>&1
rc=$?
echo "fsstress -p $PROCS -n $OPS -s $SEED: exit $rc in $(($(date +%s) - start)) s"
"$BIN" sync --timeout 900 "$mnt" || { echo "sync failed; daemon log: $work/daemon1.log"; exit 1; }
snapshot >"$work/before.txt"
unmount_it
mount_it "$work/cache2" "$work/daemon2.log"
snapshot >"$work/after.txt"
unmount_it

entries=$(wc -l <"$work/before.txt")
files=$(grep -c '^f ' "$work/before.txt")
twins=$(grep -cE ' \([0-9a-f]{8}\)' "$work/after.txt")
if diff -u "$work/before.txt" "$work/after.txt" >"$work/diff.txt" && [ "$twins" -eq 0 ] && [ "$rc" -eq 0 ]; then
    echo "same tree after a remount with an empty cache: $entries entries ($files files), no twin names"
    rm -rf "$work"
else
    echo "FAILED: fsstress exit $rc, $twins twin names, tree diff ($(wc -l <"$work/diff.txt") lines):"
    head -40 "$work/diff.txt"
    echo "logs kept in $work"
    exit 1
fi
