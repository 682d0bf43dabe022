#!/usr/bin/env bash
# HTTP benchmark, raftd side by side with etcd 3.4 in one run: the same flags,
# single member, loopback, one server at a time, wrk from Debian, 100-byte
# values. Prints a markdown table (etcd, raftd, advantage, goal).
#   tests/bench/bench_http.sh            (builds build/release if needed)
# Env: RAFTD=path  DURATION=seconds per wrk run (10)  KEYS=200000
#      ONLY="etcd raftd"  OUT=results dir (mktemp)
# Not part of CI: the machine is shared, numbers are noisy; run it twice.
set -euo pipefail
source "$(dirname "$0")/bench_lib.sh"
bench_setup http
duration=${DURATION:-10}
keys=${KEYS:-200000}

pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

# start KIND DATADIR: sets pid, url; returns when GET /v2/keys/ answers
start() {
    local kind=$1 dir=$2
    local args=(--name bench --data-dir "$dir"
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport"
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport"
        --initial-cluster "bench=http://127.0.0.1:$pport")
    t0=$($py -c 'import time;print(time.time())')
    if [ "$kind" = etcd ]; then
        etcd --enable-v2=true "${args[@]}" >>"$out/$kind.log" 2>&1 &
    else
        "$raftd" "${args[@]}" >>"$out/$kind.log" 2>&1 &
    fi
    pid=$!
    url="http://127.0.0.1:$cport"
}

stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

wrk_rate() { # wrk_rate CONNS THREADS SCRIPT [RUN-NAME] -> requests/s
    local c=$1 t=$2 script=$3 run=${4:-run}
    wrk -t"$t" -c"$c" -d"${duration}s" -s "$here/$script" "$url" -- "$run" >"$out/wrk.txt" 2>&1
    if grep -q "Non-2xx" "$out/wrk.txt"; then cat "$out/wrk.txt" >&2; fi
    awk '/^Requests\/sec:/ {print $2}' "$out/wrk.txt"
}

for kind in $only; do
    cport=$(pick_port); pport=$(pick_port)
    echo "== $kind on 127.0.0.1:$cport" >&2
    dir="$out/$kind-data"; rm -rf "$dir"
    start "$kind" "$dir"
    $py "$tool" serving "$url" / "$t0" 60 >/dev/null
    curl -s -XPUT "$url/v2/keys/bench/get" -d value=$(printf 'g%.0s' $(seq 100)) >/dev/null
    r=$(wrk_rate 1 1 put.lua seq);  echo "$kind put_seq $r" | tee -a "$results" >&2
    r=$(wrk_rate 64 2 put.lua c64); echo "$kind put_64 $r" | tee -a "$results" >&2
    r=$(wrk_rate 64 2 get.lua); echo "$kind get_64 $r" | tee -a "$results" >&2
    # one wrk thread leaves the single-threaded raftd a core of its own
    r=$(wrk_rate 64 1 get.lua); echo "$kind get_64_t1 $r" | tee -a "$results" >&2
    stop

    # memory and restart with $keys keys, on a fresh data dir
    rm -rf "$dir"
    start "$kind" "$dir"
    $py "$tool" serving "$url" / "$t0" 60 >/dev/null
    $py "$tool" load "$url" "$keys"
    # let a snapshot triggered by the load (default --snapshot-count 100000)
    # finish, so both servers are measured at rest
    sleep 3
    rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    echo "$kind rss_200k_mb $(awk -v k="$rss_kb" 'BEGIN{printf "%.1f", k/1024}')" | tee -a "$results" >&2
    stop
    start "$kind" "$dir"
    s=$($py "$tool" serving "$url" "/load/k$((keys - 1))" "$t0" 120)
    echo "$kind restart_200k_s $s" | tee -a "$results" >&2
    stop
    rm -rf "$dir"
done

echo
KEYS=$keys $py "$tool" table "$results"
echo
echo "(raw results: $results; wrk ${duration}s per run; $(nproc) cores, shared machine)"
