#!/usr/bin/env bash
# Meridian beside etcd 3.4 (Debian's etcd-server, fsync on as shipped), on
# this machine, driven by the same load generator (wrk) at the same
# concurrency, value size (100 bytes) and key count (1,000):
#   1. one node: durable writes and reads per second, p50/p99;
#   2. three members on loopback: the same;
#   3. stretched: three etcd members whose peer traffic crosses a TCP proxy
#      adding DELAY_MS one way, beside Meridian's three regions over the same
#      one-way delay (meridian bench): write latency seen by one client.
# `bench/etcd/run.sh memory` runs instead the memory scenario: one node each
# loaded with KEYS (1,000,000) distinct 30-byte keys with 100-byte values
# (Meridian by one PUT per key, etcd by 128-put transactions, both from wrk),
# then stopped and started again: RSS after loading (under the write load)
# and after the restart, the time from start to serving, and disk use.
# Usage: bench/etcd/run.sh [memory]   (CONNS=64 SECS=10 DELAY_MS=40 KEYS=1000000 to change)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export BENCH_DIR=$here
CONNS=${CONNS:-64}
SECS=${SECS:-10}
DELAY_MS=${DELAY_MS:-40}

need() { command -v "$1" >/dev/null || { apt-get update -q && apt-get install -y -q "$2"; }; }
need etcd etcd-server
need etcdctl etcd-client
need wrk wrk
need curl curl
(cd "$root" && cargo build --release -q)
M=$root/target/release/meridian

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# wrk URL SCRIPT CONNS -> "requests/s p50 p99"
load() {
    local out
    local threads=2
    [ "$3" -lt 2 ] && threads=1
    out=$(wrk -t"$threads" -c"$3" -d"${SECS}s" --latency -s "$2" "$1")
    if echo "$out" | grep -q "Non-2xx"; then echo "$out" >&2; echo "errors from $1" >&2; exit 1; fi
    echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="50%" {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}')"
}

wait_http() { # URL
    for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "no answer from $1" >&2; exit 1
}

etcd_member() { # NAME CLIENT_PORT PEER_PORT ADVERTISED_PEER_PORT CLUSTER
    etcd --name "$1" --data-dir "$work/$1" \
        --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
        --listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$4" \
        --initial-cluster "$5" --initial-cluster-state new --logger zap --log-outputs "$work/$1.log" \
        2>>"$work/$1.stderr" &  # grpc's own warnings (peers dialing at shutdown) go there
    pids+=($!)
}

etcd_ready() { # CLIENT_PORT
    for _ in $(seq 1 300); do
        etcdctl --endpoints "http://127.0.0.1:$1" endpoint health >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "etcd on $1 did not become healthy" >&2; exit 1
}

row() { # LABEL MERIDIAN(rps p50 p99) ETCD(rps p50 p99)
    read -r mr mp50 mp99 <<<"$2"
    read -r er ep50 ep99 <<<"$3"
    printf "%-34s %12s %9s %9s %12s %9s %9s %8s\n" "$1" "$mr" "$mp50" "$mp99" "$er" "$ep50" "$ep99" \
        "$(awk -v a="$mr" -v b="$er" 'BEGIN { printf "%.2f", a / b }')"
}

# kB of a process's memory: VmRSS or RssAnon.
kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.0f MB", k * 1024 / 1e6 }'; }

# Polls until "$@" prints a number >= KEYS (at most 20 minutes).
until_keys() {
    for _ in $(seq 1 2400); do
        n=$("$@" 2>/dev/null || echo 0)
        [ "${n:-0}" -ge "$KEYS" ] && return 0
        sleep 0.5
    done
    echo "the load did not reach $KEYS keys" >&2; exit 1
}

# Runs "$1" (starts a server in the background) and sets $ready_s to the
# seconds until "$2" (a readiness probe) answers.
time_to_ready() {
    local t0; t0=$(date +%s.%N)
    eval "$1"
    for _ in $(seq 1 6000); do $2 >/dev/null 2>&1 && break; sleep 0.01; done
    ready_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f s", b - a }')
}

meridian_keys() { curl -sf http://127.0.0.1:18700/v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"])'; }
etcd_keys() { etcdctl --endpoints http://127.0.0.1:23791 get memory/ --prefix --keys-only --limit=1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))'; }
meridian_ready() { curl -sf -o /dev/null http://127.0.0.1:18700/v1/health; }
etcd_up() { etcdctl --endpoints http://127.0.0.1:23791 endpoint health; }

memory() {
    KEYS=${KEYS:-1000000}
    export KEYS THREADS=2
    local row_m row_e
    echo "machine: $(nproc) cores; etcd $(etcd --version | head -1 | awk '{print $3}'); $KEYS keys of 30 B with 100-byte values ($(awk -v k="$KEYS" 'BEGIN { printf "%.0f", k * 130 / 1e6 }') MB raw); wrk -t2 -c$CONNS"
    # Meridian: one node, one PUT per key.
    "$M" dev --regions 1 --dir "$work/mm" --api-port 18700 >"$work/mm.log" 2>&1 &
    local m=$!; pids+=($m)
    wait_http http://127.0.0.1:18700/v1/health
    local t0; t0=$(date +%s)
    wrk -t2 -c"$CONNS" -d3600s -s "$here/meridian_load.lua" http://127.0.0.1:18700 >"$work/mm.wrk" 2>&1 &
    local w=$!
    until_keys meridian_keys
    local load_s=$(( $(date +%s) - t0 ))
    local m_rss m_anon; m_rss=$(kb $m VmRSS); m_anon=$(kb $m RssAnon)
    kill -INT $w; wait $w 2>/dev/null || true
    kill -TERM $m; wait $m 2>/dev/null || true
    time_to_ready '"$M" dev --regions 1 --dir "$work/mm" --api-port 18700 >>"$work/mm.log" 2>&1 & m=$!; pids+=($m)' meridian_ready
    local m_ready=$ready_s
    [ "$(meridian_keys)" = "$KEYS" ] || { echo "meridian lost keys over the restart: $(meridian_keys)" >&2; exit 1; }
    sleep 2
    row_m=$(printf "%-10s %12s %12s %20s %15s %10s %8s" meridian "$(mb "$m_rss")" "$(mb "$m_anon")" \
        "$(mb "$(kb $m VmRSS)") ($(mb "$(kb $m RssAnon)"))" "$m_ready" \
        "$(du -sb "$work/mm" | awk '{printf "%.0f MB", $1 / 1e6}')" "${load_s} s")
    kill -TERM $m; wait $m 2>/dev/null || true
    # etcd: one member, 128 puts per transaction.
    etcd_member s1 23791 23801 23801 "s1=http://127.0.0.1:23801"
    local e=${pids[-1]}
    etcd_ready 23791
    t0=$(date +%s)
    wrk -t2 -c"$CONNS" -d3600s -s "$here/etcd_load.lua" http://127.0.0.1:23791 >"$work/e.wrk" 2>&1 &
    w=$!
    until_keys etcd_keys
    load_s=$(( $(date +%s) - t0 ))
    local e_rss e_anon; e_rss=$(kb $e VmRSS); e_anon=$(kb $e RssAnon)
    kill -INT $w; wait $w 2>/dev/null || true
    kill -TERM $e; wait $e 2>/dev/null || true
    time_to_ready 'etcd_member s1 23791 23801 23801 "s1=http://127.0.0.1:23801"; e=${pids[-1]}' etcd_up
    local e_ready=$ready_s
    [ "$(etcd_keys)" = "$KEYS" ] || { echo "etcd holds $(etcd_keys) keys after the restart" >&2; exit 1; }
    sleep 2
    row_e=$(printf "%-10s %12s %12s %20s %15s %10s %8s" etcd "$(mb "$e_rss")" "$(mb "$e_anon")" \
        "$(mb "$(kb $e VmRSS)") ($(mb "$(kb $e RssAnon)"))" "$e_ready" \
        "$(du -sb "$work/s1" | awk '{printf "%.0f MB", $1 / 1e6}')" "${load_s} s")
    printf "%-10s %12s %12s %20s %15s %10s %8s\n" "" "RSS loaded" "(anonymous)" "restarted (anon.)" "start to ready" "on disk" "load"
    echo "$row_m"
    echo "$row_e"
}

if [ "${1:-}" = memory ]; then
    memory
    exit 0
fi

echo "machine: $(nproc) cores; etcd $(etcd --version | head -1 | awk '{print $3}'); wrk -t2 -c$CONNS -d${SECS}s; 100-byte values, 1,000 keys"
printf "%-34s %12s %9s %9s %12s %9s %9s %8s\n" "" "meridian/s" "p50" "p99" "etcd/s" "p50" "p99" "ratio"

# 1. One node each.
etcd_member s1 23791 23801 23801 "s1=http://127.0.0.1:23801"
etcd_ready 23791
"$M" dev --regions 1 --dir "$work/m1" --api-port 18500 >"$work/m1.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:18500/v1/health
row "one node: durable writes" "$(load http://127.0.0.1:18500 "$here/meridian_put.lua" "$CONNS")" \
    "$(load http://127.0.0.1:23791 "$here/etcd_put.lua" "$CONNS")"
row "one node: reads" "$(load http://127.0.0.1:18500 "$here/meridian_get.lua" "$CONNS")" \
    "$(load http://127.0.0.1:23791 "$here/etcd_get.lua" "$CONNS")"
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()

# 2. Three members on loopback.
c="c1=http://127.0.0.1:23811,c2=http://127.0.0.1:23812,c3=http://127.0.0.1:23813"
etcd_member c1 23701 23811 23811 "$c"; etcd_member c2 23702 23812 23812 "$c"; etcd_member c3 23703 23813 23813 "$c"
etcd_ready 23701
"$M" dev --regions 3 --dir "$work/m3" --api-port 18600 >"$work/m3.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:18600/v1/health
row "3 members: writes to one" "$(load http://127.0.0.1:18600 "$here/meridian_put.lua" "$CONNS")" \
    "$(load http://127.0.0.1:23701 "$here/etcd_put.lua" "$CONNS")"
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()

# 3. Stretched: every member's peer port behind a delaying proxy.
s="w1=http://127.0.0.1:23921,w2=http://127.0.0.1:23922,w3=http://127.0.0.1:23923"
for i in 1 2 3; do
    python3 "$here/delay_proxy.py" "2392$i" "2382$i" "$DELAY_MS" & pids+=($!)
done
etcd_member w1 23601 23821 23921 "$s"; etcd_member w2 23602 23822 23922 "$s"; etcd_member w3 23603 23823 23923 "$s"
etcd_ready 23601
leader=$(etcdctl --endpoints http://127.0.0.1:23601,http://127.0.0.1:23602,http://127.0.0.1:23603 endpoint status -w simple 2>/dev/null | awk -F', ' '$5=="true" {print $1}' | head -1)
follower=http://127.0.0.1:23601
[ "$leader" = "http://127.0.0.1:23601" ] && follower=http://127.0.0.1:23602
echo
echo "stretched: one-way delay ${DELAY_MS} ms between regions/members; write latency seen by one client (ms)"
printf "%-34s %9s %9s\n" "" "p50" "p99"
for who in "etcd, client at the leader:$leader" "etcd, client at a follower:$follower"; do
    r=$(SECS=5 load "${who#*:}" "$here/etcd_put.lua" 1)
    read -r _ p50 p99 <<<"$r"
    printf "%-34s %9s %9s\n" "${who%%:*}" "$p50" "$p99"
done
m=$("$M" bench throughput --delay-ms "$DELAY_MS" --clients 1 --seconds 5 --json)
printf "%-34s %9s %9s\n" "meridian, client in one region" \
    "$(echo "$m" | python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print("%.2fms" % r["put_p50_ms"])')" \
    "$(echo "$m" | python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print("%.2fms" % r["put_p99_ms"])')"
