#!/usr/bin/env bash
# Scheduled backups of a large key set to a folder and to S3-compatible
# object storage at once, measured per tier: how long a full and an
# incremental backup take (snapshot, encode, upload, read back and check),
# how large they are, and each destination's drill: recovery point and
# recovery time. Then a restore of the bucket's newest chain into an empty
# node. The object store is moto's server (PyPI, pinned in
# tests/moto-requirements.txt) on loopback, so upload times are the
# machine's, not a WAN's.
#
# usage: bench/backup/run.sh            (KEYS=1000000 CHANGED_EVERY=100)
set -euo pipefail
cd "$(dirname "$0")/../.."
KEYS=${KEYS:-1000000}
CHANGED_EVERY=${CHANGED_EVERY:-100}
BIN=${BIN:-target/release/meridian}
[ -x "$BIN" ] || cargo build --release
WORK=$(mktemp -d /tmp/meridian-backup-bench.XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet -r tests/moto-requirements.txt
S3_PORT=18611
"$WORK/venv/bin/moto_server" -H 127.0.0.1 -p $S3_PORT >/dev/null 2>&1 &
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
until curl -s -o /dev/null "$AWS_ENDPOINT_URL"; do sleep 0.2; done
curl -s -X PUT "$AWS_ENDPOINT_URL/bench" -o /dev/null

"$BIN" ca init --cluster bench --out "$WORK/ca" >/dev/null
for n in a g; do
    "$BIN" ca issue --name $n --region us --ca "$WORK/ca" --out "$WORK/$n/tls" >/dev/null
done
config() { # name udp-port api-port extra
    cat > "$WORK/$1.toml" <<TOML
name = "$1"
region = "us"
data_dir = "$WORK/$1/data"
tls_dir = "$WORK/$1/tls"
listen = "127.0.0.1:$2"
api = "127.0.0.1:$3"
[limits]
txn_ops_max = 1000
$4
TOML
}
start() { # name -> waits until ready; its pid in PID
    "$BIN" node --config "$WORK/$1.toml" > "$WORK/$1.log" 2>&1 &
    PID=$!
    until grep -q "ready: api" "$WORK/$1.log"; do sleep 0.2; done
}
BACKUP="[backup]
[[backup.destination]]
name = \"folder\"
url = \"$WORK/backups\"
[[backup.destination]]
name = \"bucket\"
url = \"s3://bench/us\"
[[backup.schedule]]
name = \"daily\"
kind = \"full\"
interval_ms = 86400000
[[backup.schedule]]
name = \"hourly\"
kind = \"incremental\"
interval_ms = 30000"

config a 18601 18602 ""
start a
t0=$(date +%s.%N)
python3 bench/backup/load.py http://127.0.0.1:18602 "$KEYS" 1000
t1=$(date +%s.%N)
echo "loaded $KEYS keys in $(echo "$t1 - $t0" | bc) s"
kill "$PID"; wait "$PID" 2>/dev/null || true
# Restarted with the schedules: the full backup is due at once.
config a 18601 18602 "$BACKUP"
start a
until [ "$(grep -c 'scheduled backup written' "$WORK/a.log")" -ge 2 ]; do sleep 0.5; done
python3 bench/backup/load.py http://127.0.0.1:18602 "$KEYS" 1000 "$CHANGED_EVERY" >/dev/null
# The next incremental (30 s on) holds the rewritten keys.
written() { sed 's/\x1b\[[0-9;]*m//g' "$WORK/a.log" | grep 'scheduled backup written'; }
until [ "$(written | grep -c 'schedule=hourly')" -ge 4 ]; do sleep 0.5; done

echo
echo "machine: $(nproc) cores; $KEYS keys of 30 bytes, 100-byte values; incremental after rewriting every ${CHANGED_EVERY}th key"
echo "| tier | destination | bytes | snapshot + encode ms | write + read back + check ms |"
echo "| --- | --- | --- | --- | --- |"
written | while read -r line; do
    get() { echo "$line" | grep -o "$1=[^ ]*" | head -1 | cut -d= -f2 | tr -d '"'; }
    echo "| $(get schedule) | $(get destination) | $(get bytes) | $(get take_ms) | $(get write_ms) |"
done
echo
echo "| drill of | files | bytes | RPO | RTO ms | ok |"
echo "| --- | --- | --- | --- | --- | --- |"
for d in "$WORK/backups" s3://bench/us; do
    "$BIN" drill --json --destination "$d" | python3 -c "
import json, sys
for r in json.load(sys.stdin):
    print('| %s | %d | %d | %d s | %d | %s |' % ('$d'.split('/')[-1] if '$d'.startswith('/') else '$d', len(r['files']), r['bytes'], r['rpo_ms'] // 1000, r['rto_ms'], r['ok']))"
done
echo
echo "\$ meridian drill --destination s3://bench/us"
"$BIN" drill --destination s3://bench/us
config g 18603 18604 ""
start g
t0=$(date +%s.%N)
"$BIN" --addr http://127.0.0.1:18604 restore --only s3://bench/us@latest > "$WORK/restore.out"
t1=$(date +%s.%N)
echo
echo "restore of s3://bench/us@latest into an empty node: $(echo "$t1 - $t0" | bc) s (fetch, check, combine, merge, durable)"
tail -1 "$WORK/restore.out"
kill $(jobs -p) 2>/dev/null || true
wait 2>/dev/null || true
rm -rf "$WORK"
