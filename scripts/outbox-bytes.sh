#!/usr/bin/env bash
# Outbox bytes for N over-limit boluses for one patient (issue #13 item 3):
# runs a dosetrack binary against the broker on 127.0.0.1:1883 with a fresh
# database, admits P-A (70 kg), publishes N iv_bolus doses of 30 mg
# (0.43 mg/kg, over the ward's 0.35 mg/kg) dated within the last hour,
# waits until every dose is stored and the daemon is quiet, and prints the
# outbox rows and bytes written (and the largest row, and dead letters).
#
# usage: PACE_S=0.02 scripts/outbox-bytes.sh [binary] [N]
# PACE_S (default 0): pause between two doses (0: one burst, so the daemon
# commits and evaluates them in a few large batches).
set -euo pipefail
BIN=${1:-target/release/dosetrack}
N=${2:-700}
DIR=$(mktemp -d)
PREFIX="ob$$"
DB="$DIR/d.db"
"$BIN" run --broker mqtt://127.0.0.1:1883 --database "$DB" --topic-prefix "$PREFIX" \
    --client-id "ob-$$" 2>"$DIR/log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
sleep 2
now=$(date +%s)
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
mosquitto_pub -q 1 -t "$PREFIX/v1/patients/P-A/admit" \
    -m "{\"id\":\"adm-1\",\"time\":\"$(iso $((now - 7200)))\",\"weight_kg\":70,\"age_years\":40}"
for i in $(seq 1 "$N"); do
    t=$((now - 3500 + i * 3500 / N))
    echo "{\"id\":\"b-$i\",\"time\":\"$(iso $t)\",\"route\":\"iv_bolus\",\"amount_mg\":30}"
    [ "${PACE_S:-0}" = 0 ] || sleep "$PACE_S"
done | mosquitto_pub -q 1 -t "$PREFIX/v1/patients/P-A/doses" -l
start=$(date +%s)
# Every dose stored, then the outbox quiet (no new rows for 5 s).
while [ "$(sqlite3 "$DB" "SELECT count(*) FROM inputs WHERE kind = 'dose'" 2>/dev/null || echo 0)" -lt "$N" ]; do sleep 1; done
last=-1
while :; do
    n=$(sqlite3 "$DB" "SELECT count(*) FROM outbox")
    [ "$n" = "$last" ] && break
    last=$n; sleep 5
done
echo "binary=$BIN boluses=$N pace_s=${PACE_S:-0} seconds=$(( $(date +%s) - start ))"
sqlite3 "$DB" "SELECT 'alerts_opened', count(*) FROM alert_state"
sqlite3 "$DB" "SELECT 'outbox_rows', count(*), 'bytes', sum(length(CAST(payload AS BLOB))), 'largest', max(length(CAST(payload AS BLOB))) FROM outbox"
sqlite3 "$DB" "SELECT 'active_list_rows', count(*), 'bytes', sum(length(CAST(payload AS BLOB))) FROM outbox WHERE topic LIKE '%/alerts/active'"
sqlite3 "$DB" "SELECT 'unpublished', count(*) FROM outbox WHERE published_at_ms IS NULL"
sqlite3 "$DB" "SELECT 'dead_letters', count(*) FROM outbox_dead_letter" 2>/dev/null || true
