#!/usr/bin/env bash
# Installs the dependencies, configures, builds and runs the whole ropekit test suite.
#   scripts/test.sh                  g++, every ISA variant of the kernel tests, consumer projects
#   scripts/test.sh --compiler clang clang++ instead
#   scripts/test.sh --sanitize       AddressSanitizer + UBSan build (clang)
# Build trees: build/test-<compiler>[-asan]. Extra arguments after -- go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
compiler=gcc
sanitize=OFF
while (($#)); do
  case "$1" in
    --compiler) compiler="$2"; shift 2 ;;
    --sanitize) sanitize=ON; shift ;;
    --) shift; break ;;
    *) echo "usage: scripts/test.sh [--compiler gcc|clang] [--sanitize] [-- ctest args]" >&2; exit 2 ;;
  esac
done
bash scripts/deps.sh
case "$compiler" in
  gcc) cxx=g++ ;;
  clang) cxx=clang++ ;;
  *) echo "scripts/test.sh: unknown compiler '$compiler' (gcc or clang)" >&2; exit 2 ;;
esac
dir="build/test-$compiler"
extra=()
if [ "$sanitize" = ON ]; then
  dir="$dir-asan"
  # Sanitized runs check memory and UB, not ISA coverage: the native variant is enough.
  # Benchmarks never run under ctest; the other two builds compile them.
  extra+=(-DROPEKIT_SANITIZE=ON -DROPEKIT_ISA_TESTS=OFF -DCMAKE_CXX_FLAGS=-march=native
          -DROPEKIT_BUILD_BENCHMARKS=OFF)
fi
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DROPEKIT_WERROR=ON -DROPEKIT_REQUIRE_DEV_DEPS=ON -DROPEKIT_BUILD_BENCHMARKS=ON \
  -DROPEKIT_BUILD_EXAMPLES=ON "${extra[@]}"
cmake --build "$dir" -j "$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@"
