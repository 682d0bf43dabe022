#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what is missing, build
# with AddressSanitizer + UndefinedBehaviorSanitizer, run the C unit tests
# (ctest), the black-box suites (pytest) and every fuzz target for a bounded
# time. Exits non-zero if anything fails. .ci/run calls exactly this.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=$(nproc)
fuzz_seconds=${ETCFS_FUZZ_SECONDS:-20}

bash tests/install-deps.sh

echo "== build (ASan + UBSan)"
cmake -S . -B build/san -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DETCFS_ASAN=ON -DETCFS_UBSAN=ON >/dev/null
cmake --build build/san -j "$jobs"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "== unit tests (ctest)"
ctest --test-dir build/san --output-on-failure --no-tests=error -j "$jobs"

if compgen -G "tests/pytest/test_*.py" >/dev/null; then
    echo "== black-box tests (pytest)"
    ETCFS_BUILD="$top/build/san" /usr/bin/python3 -m pytest -q tests/pytest
fi

if compgen -G "tests/fuzz/fuzz_*.c" >/dev/null; then
    echo "== fuzz targets (${fuzz_seconds}s each)"
    CC=clang cmake -S . -B build/fuzz -G Ninja -DETCFS_FUZZ=ON \
          -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build/fuzz -j "$jobs"
    for src in tests/fuzz/fuzz_*.c; do
        name=$(basename "$src" .c)
        corpus="build/fuzz/corpus-$name"
        mkdir -p "$corpus"
        seeds="tests/fuzz/seeds/$name"
        [ -d "$seeds" ] || seeds=""
        echo "-- $name"
        ASAN_OPTIONS=detect_leaks=1 "build/fuzz/$name" -max_total_time="$fuzz_seconds" \
            -print_final_stats=0 "$corpus" $seeds 2>"build/fuzz/$name.log" || {
            tail -50 "build/fuzz/$name.log"
            echo "fuzz target $name failed"
            exit 1
        }
    done
fi
echo "== all tests passed"
