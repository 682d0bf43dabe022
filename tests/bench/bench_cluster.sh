#!/usr/bin/env bash
# Three-member benchmark, raftd side by side with etcd 3.4 in one run: three
# members of one kind at a time on loopback, the same flags (default timers),
# release build, wrk, 100-byte values. Sequential PUT (1 connection to the
# leader), PUT, GET and quorum GET with 64 connections to the leader, and
# failover: the leader SIGKILLed to the first write acknowledged by a
# survivor (a new PUT on each survivor every 20 ms; median of 3 kills). Prints a markdown table (etcd, raftd, advantage, goal).
#   tests/bench/bench_cluster.sh          (builds build/release if needed)
# Env: RAFTD=path  DURATION=seconds per wrk run (10)  WRK_THREADS=2
#      FAILOVERS=kills of the leader, median reported (3)
#      ONLY="etcd raftd"  OUT=results dir (mktemp)
# Not part of CI: the machine is shared, numbers are noisy; run it twice.
set -euo pipefail
source "$(dirname "$0")/bench_lib.sh"
bench_setup cluster
duration=${DURATION:-10}
wt=${WRK_THREADS:-2}
failovers=${FAILOVERS:-3}

pids=()
# members are disowned (no "Killed" notices): cleanup polls for their end
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
    done
}
trap cleanup EXIT

# start_member KIND I: member I of the cluster described by urls/pports
start_member() {
    local kind=$1 i=$2
    local args=(--name "m$i" --data-dir "$out/$kind-data-$i"
        --listen-client-urls "${urls[$i]}" --advertise-client-urls "${urls[$i]}"
        --listen-peer-urls "http://127.0.0.1:${pports[$i]}"
        --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}"
        --initial-cluster "$cluster" --initial-cluster-state new
        --initial-cluster-token "bench-$kind")
    if [ "$kind" = etcd ]; then
        etcd --enable-v2=true "${args[@]}" >>"$out/$kind-$i.log" 2>&1 &
    else
        "$raftd" "${args[@]}" >>"$out/$kind-$i.log" 2>&1 &
    fi
    pids[$i]=$!
    disown
}

wrk_rate() { # wrk_rate URL CONNS THREADS SCRIPT [RUN-NAME] -> requests/s
    local url=$1 c=$2 t=$3 script=$4 run=${5:-run}
    wrk -t"$t" -c"$c" -d"${duration}s" -s "$here/$script" "$url" -- "$run" >"$out/wrk.txt" 2>&1
    if grep -q "Non-2xx" "$out/wrk.txt"; then cat "$out/wrk.txt" >&2; fi
    awk '/^Requests\/sec:/ {print $2}' "$out/wrk.txt"
}

for kind in $only; do
    cports=() pports=() urls=() cluster=""
    for i in 0 1 2; do
        cports[$i]=$(pick_port); pports[$i]=$(pick_port)
        urls[$i]="http://127.0.0.1:${cports[$i]}"
        cluster+="${cluster:+,}m$i=http://127.0.0.1:${pports[$i]}"
    done
    echo "== $kind on ${urls[*]}" >&2
    pids=()
    for i in 0 1 2; do rm -rf "$out/$kind-data-$i"; start_member "$kind" "$i"; done
    l=$($py "$tool" leader "${urls[@]}")
    url=${urls[$l]}
    for i in 0 1 2; do $py "$tool" serving "${urls[$i]}" / 0 60 >/dev/null; done
    curl -s -XPUT "$url/v2/keys/bench/get" -d value=$(printf 'g%.0s' $(seq 100)) >/dev/null
    r=$(wrk_rate "$url" 1 1 put.lua seq);     echo "$kind put_seq $r" | tee -a "$results" >&2
    r=$(wrk_rate "$url" 64 "$wt" put.lua c64); echo "$kind put_64 $r" | tee -a "$results" >&2
    r=$(wrk_rate "$url" 64 "$wt" get.lua);     echo "$kind get_64 $r" | tee -a "$results" >&2
    r=$(wrk_rate "$url" 64 "$wt" qget.lua);    echo "$kind qget_64 $r" | tee -a "$results" >&2
    # failover: kill the leader, time the first acknowledged write, bring
    # the member back (same data dir) and repeat; the median is reported
    fo=()
    for r in $(seq "$failovers"); do
        l=$($py "$tool" leader "${urls[@]}")
        survivors=()
        for i in 0 1 2; do [ "$i" = "$l" ] || survivors+=("${urls[$i]}"); done
        fo+=("$($py "$tool" failover "${pids[$l]}" "${survivors[@]}")")
        while kill -0 "${pids[$l]}" 2>/dev/null; do sleep 0.05; done
        start_member "$kind" "$l"
        for i in 0 1 2; do $py "$tool" serving "${urls[$i]}" / 0 60 >/dev/null; done
    done
    echo "$kind failover runs: ${fo[*]}" >&2
    r=$(printf '%s\n' "${fo[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
    echo "$kind failover_s $r" | tee -a "$results" >&2
    cleanup
    pids=()
    rm -rf "$out/$kind-data-"*
done

echo
$py "$tool" cluster-table "$results"
echo
echo "(raw results: $results; wrk ${duration}s per run, -t$wt for 64 connections;" \
     "$(nproc) cores, shared machine, load $(cut -d' ' -f1-3 /proc/loadavg))"
