#!/usr/bin/env bash
# The main job: a single-member raftd in the foreground with its tree
# mounted. Installs missing Debian packages (tests/install-deps.sh), builds a
# release build in build/release, then serves the etcd v2 API on
# http://localhost:2379 with its data in ./default.etcd and the tree mounted
# on ./mnt (both relative to where you run this; ETCFS_MOUNT=DIR picks
# another mount point, ETCFS_MOUNT= with an empty value mounts nothing).
# Ctrl-C (or SIGTERM) stops raftd, which unmounts cleanly. Extra arguments
# are passed to raftd (etcd's flags), e.g. --log-level=debug.
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

mnt=${ETCFS_MOUNT-./mnt}
args=()
if [ -n "$mnt" ]; then
    mkdir -p "$mnt"
    # A raftd that was killed (SIGKILL) leaves a dead mount behind:
    # "Transport endpoint is not connected". Lazily unmount it first.
    if ! stat "$mnt" >/dev/null 2>&1 || mountpoint -q "$mnt"; then
        fusermount3 -uz "$mnt" 2>/dev/null || true
    fi
    echo "run-local: mounting the tree on $(cd "$mnt" && pwd)" >&2
    args=(--mount "$mnt")
fi
exec "$top/build/release/raftd/raftd" "${args[@]}" "$@"
