#!/usr/bin/env bash
# WAL benchmark: the disk's raw fdatasync rate (fio, etcd's recommended
# job), bench_wal with one appender and with 64 concurrent appenders
# (128-byte entries), all in one directory on the same disk, repeated
# RUNS times interleaved (the machine is shared: medians, not one sample),
# and the ratios the goals are stated in. Usage:
#   tests/bench/bench_wal.sh [DIR-ON-THE-DISK-TO-TEST] [SECONDS] [RUNS]
# Builds bench_wal in build/bench (Release, no sanitizers) unless
# BENCH_WAL=/path/to/bench_wal is given.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
base=${1:-$top/build/bench-data}
secs=${2:-5}
runs=${3:-3}
mkdir -p "$base"
work=$(mktemp -d "$base/bench_wal.XXXXXX")
trap 'rm -rf "$work"' EXIT

bin=${BENCH_WAL:-}
if [ -z "$bin" ]; then
    cmake -S "$top" -B "$top/build/bench" -G Ninja \
          -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$top/build/bench" --target bench_wal >/dev/null
    bin=$(find "$top/build/bench" -name bench_wal -type f -perm -u+x | head -1)
fi

iops() {
    /usr/bin/python3 -c '
import json,sys
print("%.0f" % json.load(open(sys.argv[1]))["jobs"][0]["write"]["iops"])' "$1"
}
get() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
raws=() raw128s=() ones=() manys=()
for r in $(seq "$runs"); do
    echo "== run $r/$runs"
    fio --name=fsync --directory="$work" --rw=write --ioengine=sync \
        --fdatasync=1 --bs=2300 --size=22m --time_based --runtime="$secs" \
        --output-format=json >"$work/fio.json"
    raw=$(iops "$work/fio.json")
    rm -f "$work"/fsync.*
    # The same with 128-byte writes, the size of one WAL append.
    fio --name=fsync --directory="$work" --rw=write --ioengine=sync \
        --fdatasync=1 --bs=128 --size=4m --time_based --runtime="$secs" \
        --output-format=json >"$work/fio.json"
    raw128=$(iops "$work/fio.json")
    rm -f "$work"/fsync.*
    echo "fio raw_fdatasync_per_s=$raw (2300 B) raw128_fdatasync_per_s=$raw128 (128 B)"
    one=$("$bin" -d "$work/one" -n 1 -t "$secs" -s 128)
    echo "$one"
    rm -rf "$work/one"
    many=$("$bin" -d "$work/many" -n 64 -t "$secs" -s 128)
    echo "$many"
    rm -rf "$work/many"
    raws+=("$raw")
    raw128s+=("$raw128")
    ones+=("$(get entries_per_s "$one")")
    manys+=("$(get entries_per_s "$many")")
done
/usr/bin/python3 - "${raws[*]}" "${raw128s[*]}" "${ones[*]}" "${manys[*]}" <<'PY'
import statistics, sys
raw, raw128, one, many = (statistics.median(map(float, a.split()))
                          for a in sys.argv[1:])
ratio = one / raw if raw else 0
print("== summary (medians)")
print("raw fdatasync/s (fio, 2300 B writes) %10.0f" % raw)
print("raw fdatasync/s (fio, 128 B writes)  %10.0f" % raw128)
print("1 appender entries/s     %10.0f  (%.0f%% of raw, %.0f%% of raw 128 B; "
      "goal >= 80%%: %s)"
      % (one, 100 * ratio, 100 * one / raw128 if raw128 else 0,
         "met" if ratio >= 0.8 and one >= 0.8 * raw128 else "NOT met"))
print("64 appenders entries/s   %10.0f  (goal >= 50000: %s)"
      % (many, "met" if many >= 50000 else "NOT met"))
PY
