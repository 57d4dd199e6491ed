#!/usr/bin/env bash
# Runs xfstests' fsx through a demo mount (local emulator), as issue 19 asks: RUNS runs of
#   fsx -N 20000 -R -W -F -H -z -C -I -J -B -E -0 -a -u -S SEED -c 8 FILE
# (close and reopen every 8 operations while earlier versions upload), each beside a busy CPU
# loop and a second fsx on another file. Prints one line per run and a summary; exits 1 if any
# run failed. fsx is not shipped: build it from https://github.com/kdave/xfstests (ltp/fsx.c)
# and pass its path as FSX.
#
#   FSX=/path/to/fsx RUNS=20 contrib/stress/fsx-runs.sh
set -uo pipefail
FSX=${FSX:?set FSX to an fsx binary built from xfstests}
RUNS=${RUNS:-20}
OPS=${OPS:-20000}
BIN=${ALIPANFS:-target/release/alipanfs}
work=$(mktemp -d)
mnt=$work/mnt
mkdir -p "$mnt"
"$BIN" mount --demo "$mnt" >"$work/daemon.log" 2>&1 &
daemon=$!
cleanup() {
    kill "$busy" 2>/dev/null
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null
    kill "$daemon" 2>/dev/null
    wait "$daemon" 2>/dev/null
}
trap cleanup EXIT
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
mountpoint -q "$mnt" || { echo "the demo mount did not come up; log: $work/daemon.log"; exit 1; }
( while :; do :; done ) &
busy=$!
mkdir -p "$mnt/fsx"
failed=0
for run in $(seq "$RUNS"); do
    start=$(date +%s)
    ( cd "$mnt/fsx" && "$FSX" -N "$OPS" -R -W -F -H -z -C -I -J -B -E -0 -a -u -S "$run" -c 8 "a$run" ) >"$work/a$run.log" 2>&1 &
    a=$!
    ( cd "$mnt/fsx" && "$FSX" -N "$OPS" -R -W -F -H -z -C -I -J -B -E -0 -a -u -S "$((run + 1000))" -c 8 "b$run" ) >"$work/b$run.log" 2>&1 &
    b=$!
    wait $a; ra=$?
    wait $b; rb=$?
    if [ $ra -eq 0 ] && [ $rb -eq 0 ]; then
        echo "run $run: both passed in $(( $(date +%s) - start )) s"
    else
        failed=$((failed + 1))
        echo "run $run: FAILED (fsx exit $ra and $rb); logs: $work/a$run.log $work/b$run.log"
        tail -5 "$work/a$run.log" "$work/b$run.log"
    fi
done
echo "$((RUNS - failed)) of $RUNS runs passed (two fsx at once beside a busy loop); daemon log: $work/daemon.log"
[ $failed -eq 0 ]
