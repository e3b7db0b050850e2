#!/bin/sh
# Soak and scale harness (issue #6 item 5): tests/it/soak.rs at a size.
#
#   scripts/soak.sh            # small: the CI size, ~2 min
#   scripts/soak.sh full       # 10,000 patients, 20 min sustained + 3 min idle,
#                              # restart with 1,000,000 stored inputs: ~35 min
#   scripts/soak.sh full sustained   # only the tests whose name contains
#                              # "sustained" (or "restart")
#
# Overrides (minutes / count): DOSETRACK_SOAK_SUSTAINED_MIN,
# DOSETRACK_SOAK_IDLE_MIN, DOSETRACK_SOAK_RESTART_INPUTS.
# Output is kept in target/soak-<size>-<UTC time>.log; the figures are the
# lines starting with "SOAK". Needs /usr/sbin/mosquitto (the harness starts
# its own broker on a free port). Method and bounds: docs/reliability.md ("Soak and scale").
set -eu
size="${1:-small}"
filter="${2:-}"
case "$size" in
small | full) ;;
*)
	echo "usage: $0 [small|full]" >&2
	exit 2
	;;
esac
cd "$(dirname "$0")/.."
mkdir -p target
log="target/soak-$size-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "soak ($size): log in $log"
{
	echo "# $(date -u +%FT%TZ) $(uname -srm) $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
} >"$log"
# The two tests run one after the other (they share a lock); --nocapture
# prints the SOAK figure lines. The daemon is the test profile's build
# (opt-level 2, Cargo.toml [profile.test]).
# (POSIX sh has no pipefail: the test's exit status goes through a file.)
rc_file="$log.rc"
{
	rc=0
	DOSETRACK_SOAK="$size" cargo test --release --test it -- --nocapture --test-threads 1 "soak::$filter" 2>&1 || rc=$?
	echo "$rc" >"$rc_file"
} | tee -a "$log"
rc=$(cat "$rc_file")
rm -f "$rc_file"
echo "# finished $(date -u +%FT%TZ), load: $(cut -d' ' -f1-3 /proc/loadavg), exit $rc" >>"$log"
grep '^SOAK' "$log" || true
exit "$rc"
