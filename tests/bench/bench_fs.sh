#!/usr/bin/env bash
# FUSE benchmark of `raftd --mount` (Release build, one member, loopback,
# temp data dir): cached `cat` of a 100-byte key against the same loop on
# tmpfs and on a minimal libfuse server (bench_fs_floor.c: the cost of the
# FUSE round trips alone), `echo v > key` (one proposal per close) against sequential
# keep-alive HTTP PUTs, and `ls` of a 10,000-key directory. Prints a
# markdown table with the goals. Not part of CI (shared machine: run twice).
#   tests/bench/bench_fs.sh        (configures and builds build/release)
# Each rate is the median of ROUNDS runs, the two sides of a ratio taking
# turns (fsync times on the shared disk drift by 2x within a minute).
# `cat` is timed twice: the open/read/close system calls alone (where the
# FUSE OPEN round trip is the floor) and the `cat` program itself, spawned
# with its output on a pipe, as a shell user runs it.
# Env: RAFTD=path (skip the build)  N_CAT=20000  N_CATPROG=2000
#      N_WRITE=1000  N_LS=10000
#      ROUNDS=5
#      FS_OPTS=mount options (ETCFS_FS_OPTS, default none)  KEEP=1 keeps $out
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
here="$top/tests/bench"
py=/usr/bin/python3
n_cat=${N_CAT:-20000}
n_catprog=${N_CATPROG:-2000}
n_write=${N_WRITE:-1000}
n_ls=${N_LS:-10000}
rounds=${ROUNDS:-5}
raftd=${RAFTD:-$top/build/release/raftd/raftd}
out=$(mktemp -d /tmp/etcfs-bench-fs.XXXXXX)
mnt="$out/mnt"
tmpfs="$out/tmpfs"
floor="$out/floor"
mkdir -p "$mnt" "$tmpfs" "$floor"

pid=""
floor_pid=""
tmpfs_mounted=""
cleanup() {
    set +e
    if [ -n "$floor_pid" ]; then
        kill -TERM "$floor_pid" 2>/dev/null
        wait "$floor_pid" 2>/dev/null
    fi
    mountpoint -q "$floor" && fusermount3 -u -z "$floor"
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    mountpoint -q "$mnt" && fusermount3 -u -z "$mnt"
    [ -n "$tmpfs_mounted" ] && umount "$tmpfs"
    if [ -n "${KEEP:-}" ]; then echo "kept $out" >&2; else rm -rf "$out"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${RAFTD:-}" ]; then
    echo "== build release raftd" >&2
    cmake -S "$top" -B "$top/build/release" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$top/build/release" -j2 --target raftd >&2
fi
cc -O2 -Wall -Wextra -o "$out/tool" "$here/bench_fs_tool.c"
tool="$out/tool"
cc -O2 -Wall -Wextra $(pkg-config --cflags fuse3) -o "$out/floor-fs" \
    "$here/bench_fs_floor.c" $(pkg-config --libs fuse3)
"$out/floor-fs" "$floor" &
floor_pid=$!

# The tmpfs reference: a private tmpfs if we may mount one, else /dev/shm.
if mount -t tmpfs -o size=16m tmpfs "$tmpfs" 2>/dev/null; then
    tmpfs_mounted=1
    ref="$tmpfs/cat"
else
    ref=$(mktemp /dev/shm/etcfs-bench-fs.XXXXXX)
    trap 'rm -f "$ref"; cleanup' EXIT
fi

read -r cport pport < <($py -c 'import random,socket
while True:
    p=random.randint(20000,32000); ok=True
    for q in (p,p+1):
        s=socket.socket()
        try: s.bind(("127.0.0.1",q))
        except OSError: ok=False
        s.close()
    if ok: print(p,p+1); break')
url="http://127.0.0.1:$cport"
peer="http://127.0.0.1:$pport"
ETCFS_FS_OPTS=${FS_OPTS:-} "$raftd" --name bench --data-dir "$out/data" \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "bench=$peer" --mount "$mnt" >"$out/raftd.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
    if mountpoint -q "$mnt" && curl -sf "$url/v2/keys/" >/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$out/raftd.log" >&2; exit 1; }
    sleep 0.05
done
mountpoint -q "$mnt" || { echo "raftd did not mount" >&2; exit 1; }

ms() { $py -c 'import sys;print("%.1f" % (float(sys.argv[1])/1e6))' "$1"; }
median() { $py -c 'import sys,statistics;print("%.0f" % statistics.median(map(float,sys.argv[1:])))' "$@"; }
ratio() { $py -c 'import sys;print("%.0f%%" % (100*float(sys.argv[1])/float(sys.argv[2])))' "$1" "$2"; }

# (a) cat of an unchanged 100-byte key, and of a 100-byte file on tmpfs.
value=$(printf 'v%.0s' $(seq 99))
printf '%s\n' "$value" >"$mnt/cat"
printf '%s\n' "$value" >"$ref"
echo "== cat x $n_cat, $rounds rounds" >&2
for _ in $(seq 100); do [ -e "$floor/cat" ] && break; sleep 0.05; done
a=(); b=(); c=()
for _ in $(seq "$rounds"); do
    a+=("$("$tool" cat "$mnt/cat" "$n_cat")")
    b+=("$("$tool" cat "$ref" "$n_cat")")
    c+=("$("$tool" cat "$floor/cat" "$n_cat")")
done
echo "   fs ${a[*]}  tmpfs ${b[*]}  floor ${c[*]}" >&2
cat_fs=$(median "${a[@]}")
cat_tmpfs=$(median "${b[@]}")
cat_floor=$(median "${c[@]}")
echo "== cat program x $n_catprog, $rounds rounds" >&2
a=(); b=()
for _ in $(seq "$rounds"); do
    a+=("$("$tool" catprog "$mnt/cat" "$n_catprog")")
    b+=("$("$tool" catprog "$ref" "$n_catprog")")
done
echo "   fs ${a[*]}  tmpfs ${b[*]}" >&2
catprog_fs=$(median "${a[@]}")
catprog_tmpfs=$(median "${b[@]}")

# (b) echo v > key (open O_TRUNC, 100 bytes, close) and HTTP PUT, both one
# key, sequential, from the same C loop (the PUT on one keep-alive
# connection); wrk -c1 with put.lua (distinct keys) as a cross-check.
echo "== write x $n_write, $rounds rounds" >&2
a=(); b=()
for _ in $(seq "$rounds"); do
    a+=("$("$tool" write "$mnt/w" "$n_write")")
    b+=("$("$tool" put "$cport" /w_http "$n_write")")
done
echo "   fs ${a[*]}  http ${b[*]}" >&2
write_fs=$(median "${a[@]}")
put_http=$(median "${b[@]}")
wrk -t1 -c1 -d5s -s "$here/put.lua" "$url" -- fsbench >"$out/wrk.txt" 2>&1
put_wrk=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$out/wrk.txt")

# (c) ls of a directory of n_ls keys, loaded over HTTP (16 keep-alive
# connections): the first ls (nothing of it in the kernel's caches) and a
# second one right after.
echo "== load $n_ls keys" >&2
$py - "$cport" "$n_ls" <<'PY'
import http.client, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
def run(lo, hi):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(lo, hi):
        c.request("PUT", "/v2/keys/ls/k%05d" % i, "value=%d" % i,
                  {"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse(); r.read()
        assert r.status == 201, r.status
ts = [threading.Thread(target=run, args=(n * j // 16, n * (j + 1) // 16)) for j in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
time_ls() { # time_ls ARGS... -> ns; checks the entry count
    local t0 t1 cnt
    t0=$(date +%s%N)
    cnt=$(ls "$@" "$mnt/ls" | wc -l)
    t1=$(date +%s%N)
    [ "$cnt" -ge "$n_ls" ] || { echo "ls saw $cnt entries" >&2; exit 1; }
    echo $((t1 - t0))
}
ls_cold=$(time_ls)
ls_warm=$(time_ls)
ls_l=$(time_ls -l)
ls_l2=$(time_ls -l)

cat <<TABLE

Medians of $rounds rounds; the machine's load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).

| what | raftd --mount | reference | ratio | goal |
|---|---|---|---|---|
| \`cat key\` (the program, spawned, output read from a pipe), runs/s | $catprog_fs | tmpfs $catprog_tmpfs | $(ratio "$catprog_fs" "$catprog_tmpfs") | >= 50% |
| cat's system calls alone (open/read/close of the key), ops/s | $cat_fs | tmpfs $cat_tmpfs | $(ratio "$cat_fs" "$cat_tmpfs") | |
| (same loop on a minimal libfuse server, the FUSE floor) | | $cat_floor | $(ratio "$cat_fs" "$cat_floor") | |
| echo v > key (O_TRUNC, 100 B, close = 1 proposal), ops/s | $write_fs | HTTP PUT (same C loop, keep-alive) $put_http | $(ratio "$write_fs" "$put_http") | >= 80% |
| (cross-check) wrk -t1 -c1 put.lua, req/s | | $put_wrk | $(ratio "$write_fs" "$put_wrk") | |
| ls of $n_ls keys, first after loading, ms | $(ms "$ls_cold") | | | < 100 ms |
| ls of $n_ls keys, again, ms | $(ms "$ls_warm") | | | < 100 ms |
| ls -l of $n_ls keys, first / again, ms | $(ms "$ls_l") / $(ms "$ls_l2") | | | |
TABLE
