#!/usr/bin/env bash
# Build the Debian package and prove it is whole:
#
#   1. cargo-deb, installed with `cargo install cargo-deb --locked` if missing;
#   2. the release build of the binary;
#   3. shell completions (bash, zsh, fish) and man pages, generated from the
#      CLI by the binary itself (`dosetrack generate`, hidden) into
#      target/deb-assets/;
#   4. `cargo deb --no-build` (metadata: [package.metadata.deb] in Cargo.toml);
#   5. checks: `dpkg-deb --info` and `--contents` must show the binary, the
#      unit, the sysusers file, /etc/dosetrack/dosetrack.toml (listed in
#      conffiles), the drug file and the man page; the maintainer scripts
#      must parse; the package is extracted to a temp dir and the extracted
#      binary's `check-config` must accept the extracted config and drug file.
#
# Fails (exit 1) when any check fails. Prints the time of each step; figures
# in docs/operations.md ("Install from the .deb"). Run from anywhere:
#   bash packaging/build-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
ASSETS=target/deb-assets

fail() {
  echo "build-deb: FAILED: $*" >&2
  exit 1
}

step() {
  echo "== $*"
  STEP_STARTED=$SECONDS
}

took() {
  echo "   ($1: $((SECONDS - STEP_STARTED)) s)"
}

command -v dpkg-deb >/dev/null 2>&1 || fail "dpkg-deb is not installed (package dpkg)"

step "cargo-deb"
if cargo deb --version >/dev/null 2>&1; then
  echo "   $(cargo deb --version)"
else
  echo "   not installed: cargo install cargo-deb --locked"
  cargo install cargo-deb --locked
  took "cargo-deb install"
fi

step "release build"
cargo build --release --locked --bin dosetrack
took "release build"
BIN="$TARGET_DIR/release/dosetrack"
[ -x "$BIN" ] || fail "$BIN was not built"

step "completions and man pages"
rm -rf "$ASSETS"
mkdir -p "$ASSETS/completions" "$ASSETS/man"
"$BIN" generate completions bash >"$ASSETS/completions/dosetrack.bash"
"$BIN" generate completions zsh >"$ASSETS/completions/_dosetrack"
"$BIN" generate completions fish >"$ASSETS/completions/dosetrack.fish"
"$BIN" generate man "$ASSETS/man" >/dev/null
bash -n "$ASSETS/completions/dosetrack.bash" || fail "the bash completion does not parse"
[ -s "$ASSETS/man/dosetrack.1" ] || fail "no man page dosetrack.1"
echo "   $(ls "$ASSETS/man" | wc -l) man pages, 3 completion scripts"

step "cargo deb"
rm -f "$TARGET_DIR"/debian/dosetrack_*.deb
cargo deb --no-build --locked --strip
took "cargo deb"
DEB=$(ls -t "$TARGET_DIR"/debian/dosetrack_*.deb 2>/dev/null | head -n 1)
[ -n "$DEB" ] && [ -f "$DEB" ] || fail "no .deb in $TARGET_DIR/debian"
echo "   $DEB ($(du -h "$DEB" | cut -f1))"

step "dpkg-deb --info $DEB"
dpkg-deb --info "$DEB"

step "dpkg-deb --contents $DEB"
CONTENTS=$(dpkg-deb --contents "$DEB")
echo "$CONTENTS"

step "checks"
PATHS=$(awk '{print $NF}' <<<"$CONTENTS")
for path in \
  ./usr/bin/dosetrack \
  ./usr/lib/systemd/system/dosetrack.service \
  ./usr/lib/sysusers.d/dosetrack.conf \
  ./etc/dosetrack/dosetrack.toml \
  ./etc/dosetrack/devices.allow \
  ./usr/share/dosetrack/drugs/ketamine.toml \
  ./usr/share/man/man1/dosetrack.1.gz \
  ./usr/share/man/man1/dosetrack-run.1.gz \
  ./usr/share/bash-completion/completions/dosetrack \
  ./usr/share/zsh/vendor-completions/_dosetrack \
  ./usr/share/fish/vendor_completions.d/dosetrack.fish \
  ./usr/share/doc/dosetrack/operations.md \
  ./usr/share/doc/dosetrack/examples/dosetrack.conf \
  ./usr/share/doc/dosetrack/copyright; do
  grep -qxF "$path" <<<"$PATHS" || fail "the package lacks $path"
  echo "   ok  $path"
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
dpkg-deb --control "$DEB" "$WORK/control"
grep -qx "/etc/dosetrack/dosetrack.toml" "$WORK/control/conffiles" \
  || fail "/etc/dosetrack/dosetrack.toml is not in conffiles"
grep -qx "/etc/dosetrack/devices.allow" "$WORK/control/conffiles" \
  || fail "/etc/dosetrack/devices.allow is not in conffiles"
echo "   ok  conffiles: $(tr '\n' ' ' <"$WORK/control/conffiles")"
for script in postinst postrm; do
  [ -f "$WORK/control/$script" ] || fail "no $script"
  sh -n "$WORK/control/$script" || fail "$script does not parse"
  grep -q "#DEBHELPER#" "$WORK/control/$script" && fail "$script still has #DEBHELPER#"
done
grep -q "systemd-sysusers" "$WORK/control/postinst" || fail "postinst does not run systemd-sysusers"
grep -q "broker-password" "$WORK/control/postinst" || fail "postinst does not create the broker-password file"
grep -q "daemon-reload" "$WORK/control/postinst" || fail "postinst does not reload systemd"
if grep -vE '^[[:space:]]*(#|echo )' "$WORK/control/postinst" \
  | grep -qE "systemctl (--system )?(enable|start)|deb-systemd-invoke start"; then
  fail "postinst enables or starts the service (it must not: the password comes first)"
fi
grep -q "/var/lib/dosetrack" "$WORK/control/postrm" && grep -q "rm -rf /var/lib" "$WORK/control/postrm" \
  && fail "postrm deletes the database"
echo "   ok  maintainer scripts (sysusers, credential file, daemon-reload; not enabled or started; database kept on purge)"

dpkg-deb -x "$DEB" "$WORK/root"
ROOT="$WORK/root"
"$ROOT/usr/bin/dosetrack" --version
# The shipped config as installed names the packaged device allow-list,
# which lists no device: check-config refuses it and says so (the daemon
# would not start until the ward's devices are listed) ...
sed "s|^allow_file = .*|allow_file = \"$ROOT/etc/dosetrack/devices.allow\"|" \
  "$ROOT/etc/dosetrack/dosetrack.toml" >"$WORK/as-installed.toml"
grep -q "^allow_file = \"$ROOT" "$WORK/as-installed.toml" || fail "the shipped config does not turn the device allow-list on"
if env -u CREDENTIALS_DIRECTORY -u DOSETRACK_BROKER_PASSWORD \
  "$ROOT/usr/bin/dosetrack" check-config "$WORK/as-installed.toml" >"$WORK/check.out" 2>&1; then
  fail "check-config accepts an empty device allow-list"
fi
grep -q "lists no device" "$WORK/check.out" || { cat "$WORK/check.out"; fail "check-config does not say the allow-list is empty"; }
# ... with a device listed, it is valid (it uses the built-in drug file) ...
printf 'pump-bed-01\n' >"$WORK/devices.allow"
sed "s|^allow_file = .*|allow_file = \"$WORK/devices.allow\"|" \
  "$ROOT/etc/dosetrack/dosetrack.toml" >"$WORK/listed.toml"
env -u CREDENTIALS_DIRECTORY -u DOSETRACK_BROKER_PASSWORD \
  "$ROOT/usr/bin/dosetrack" check-config "$WORK/listed.toml" \
  || fail "the packaged binary rejects the packaged config"
# ... and the same config naming the packaged reference drug file.
sed "s|^# file = .*|file = \"$ROOT/usr/share/dosetrack/drugs/ketamine.toml\"|" \
  "$WORK/listed.toml" >"$WORK/with-drug-file.toml"
grep -q "^file = " "$WORK/with-drug-file.toml" || fail "could not point the config at the drug file"
env -u CREDENTIALS_DIRECTORY -u DOSETRACK_BROKER_PASSWORD \
  "$ROOT/usr/bin/dosetrack" check-config "$WORK/with-drug-file.toml" >"$WORK/check.out" \
  || { cat "$WORK/check.out"; fail "the packaged binary rejects the packaged drug file"; }
grep -q "ketamine.toml: valid" "$WORK/check.out" || fail "check-config did not check the drug file"
echo "   ok  the extracted binary accepts the extracted config and drug file"
zcat "$ROOT/usr/share/man/man1/dosetrack.1.gz" | grep -qE 'check(\\)?-config' \
  || fail "the man page does not list check-config"
echo "   ok  man page"

echo "== build-deb passed: $DEB"
