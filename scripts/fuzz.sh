#!/usr/bin/env bash
# Fuzz the pure intake (topic + payload -> decision) with cargo-fuzz:
#   scripts/fuzz.sh [SECONDS]        (default 60; CI runs 60)
#   scripts/fuzz.sh --build-only     (build the target; CI does this early,
#                                     in the background)
#   scripts/fuzz.sh --scratch [SECONDS]
#                                    (new inputs go to a temporary directory,
#                                     the committed corpus is only read: CI
#                                     fuzzes while the tests read that corpus)
# Target fuzz/fuzz_targets/intake.rs, checks in fuzz/check.rs, seeds in
# fuzz/corpus/intake (new interesting inputs are added there: commit the
# small ones). A crash is written to fuzz/artifacts/intake/: copy it to
# fuzz/regressions/ (tests/it/hostile.rs replays that directory on stable),
# fix, and rerun.
# Needs the nightly toolchain (libFuzzer instrumentation); installs
# cargo-fuzz if missing. Skips, successfully, when nightly is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=false
scratch=""
if [ "${1:-}" = "--build-only" ]; then
  build_only=true
  shift
elif [ "${1:-}" = "--scratch" ]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  shift
fi
seconds="${1:-60}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
echo "fuzz: building the intake target"
cargo +nightly fuzz build intake
if $build_only; then
  exit 0
fi
echo "fuzz: running intake for ${seconds} s"
# -rss_limit_mb: the target runs the PK engine on accepted inputs. Inputs up
# to libFuzzer's default max_len (4096 B, or the largest seed); over-size
# payloads are covered by tests/it/hostile.rs.
if [ -n "$scratch" ]; then
  # libFuzzer writes new inputs to the first directory and reads the others.
  cargo +nightly fuzz run intake "$scratch" fuzz/corpus/intake -- \
    -max_total_time="${seconds}" -rss_limit_mb=2048
else
  cargo +nightly fuzz run intake -- -max_total_time="${seconds}" -rss_limit_mb=2048
fi
