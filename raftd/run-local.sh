#!/usr/bin/env bash
# Runs a single-member raftd in the foreground: installs missing Debian
# packages (tests/install-deps.sh), builds a release build in build/release,
# then serves the etcd v2 API on http://localhost:2379 with its data in
# ./default.etcd (relative to where you run this). Ctrl-C stops it cleanly.
# Extra arguments are passed to raftd (etcd's flags), e.g. --log-level=debug.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/tests/install-deps.sh"
gen=()
if command -v ninja >/dev/null 2>&1; then gen=(-G Ninja); fi
if [ ! -f "$top/build/release/CMakeCache.txt" ]; then
    cmake -S "$top" -B "$top/build/release" "${gen[@]}" \
          -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$top/build/release" -j "$(nproc)" --target raftd
exec "$top/build/release/raftd/raftd" "$@"
