# bench_lib.sh - sourced by bench_http.sh and bench_cluster.sh: paths, the
# results file, the release build of raftd and a free loopback port.
#   bench_setup NAME   sets top here py tool raftd only out results
#                      (OUT= or a new /tmp/etcfs-bench-NAME.XXXXXX) and
#                      builds build/release/raftd unless RAFTD= is given
#   pick_port          prints a loopback port nothing is bound to now
bench_setup() {
    top=$(cd "$(dirname "${BASH_SOURCE[1]}")/../.." && pwd)
    here="$top/tests/bench"
    py=/usr/bin/python3
    tool="$here/bench_http_tool.py"
    only=${ONLY:-"etcd raftd"}
    raftd=${RAFTD:-$top/build/release/raftd/raftd}
    out=${OUT:-$(mktemp -d "/tmp/etcfs-bench-$1.XXXXXX")}
    mkdir -p "$out"
    results="$out/results.tsv"
    : > "$results"
    if [[ " $only " == *" raftd "* && -z "${RAFTD:-}" ]]; then
        echo "== build release raftd" >&2
        cmake -S "$top" -B "$top/build/release" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
        cmake --build "$top/build/release" -j2 --target raftd >&2
    fi
}

pick_port() { $py -c 'import random,socket
while True:
    p=random.randint(20000,32000); s=socket.socket()
    try: s.bind(("127.0.0.1",p)); s.close(); print(p); break
    except OSError: pass'; }
