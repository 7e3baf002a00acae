#!/usr/bin/env bash
# Meridian beside etcd 3.4 (Debian's etcd-server, fsync on as shipped), on
# this machine, driven by the same load generator (wrk) at the same
# concurrency, value size (100 bytes) and key count (1,000):
#   1. one node: durable writes and reads per second, p50/p99;
#   2. three members on loopback: the same;
#   3. stretched: three etcd members whose peer traffic crosses a TCP proxy
#      adding DELAY_MS one way, beside Meridian's three regions over the same
#      one-way delay (meridian bench): write latency seen by one client.
# Usage: bench/etcd/run.sh   (CONNS=64 SECS=10 DELAY_MS=40 to change)
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
