#!/bin/sh
# Reliability harness (issue #6): the real daemon, a private Mosquitto with
# persistence and a real SQLite file under load, with faults injected
# (SIGKILL, broker restarts, a held write lock, a full disk). Prints one
# line of figures per scenario; fails when anything is lost or wrong.
#
#   scripts/reliability.sh          # small: CI size, ~2-3 minutes
#   scripts/reliability.sh full     # full: minutes of load per scenario
#
# Needs mosquitto (/usr/sbin/mosquitto) and, for the disk-full scenario,
# root (it mounts a small tmpfs; without root that scenario prints NOT RUN).
# DOSETRACK_RELIABILITY_SEED=<n> repeats a run's fault timings.
set -eu
size="${1:-small}"
case "$size" in
small | full) ;;
*)
	echo "usage: $0 [small|full]" >&2
	exit 2
	;;
esac
cd "$(dirname "$0")/.."
log="${TMPDIR:-/tmp}/dosetrack-reliability-$size.log"
{
	rc=0
	DOSETRACK_RELIABILITY="$size" cargo test --release --test it -- --nocapture --test-threads=1 reliability:: 2>&1 || rc=$?
	echo "$rc" >"$log.rc"
} | tee "$log"
status=$(cat "$log.rc")
echo
echo "== figures ($size, $(date -u +%Y-%m-%dT%H:%M:%SZ)) =="
grep -oE '((crash|broker-restart|database-locked|disk-full)-under-load|realistic-ward-traffic)[ :(].*' "$log" || true
exit $status
