#!/usr/bin/env bash
# Installs the dependencies, configures, builds and runs the whole ropekit test suite.
#   scripts/test.sh                  g++, every ISA variant of the kernel tests, consumer projects
#   scripts/test.sh --compiler clang clang++ instead
#   scripts/test.sh --sanitize       AddressSanitizer + UBSan build (clang)
#   scripts/test.sh --no-isa-variants  kernel tests once, for the compiler's default target (SSE2)
# Build trees: build/test-<compiler>[-baseline][-asan]. Extra arguments after -- go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
compiler=gcc
sanitize=OFF
isa_variants=ON
while (($#)); do
  case "$1" in
    --compiler) compiler="$2"; shift 2 ;;
    --sanitize) sanitize=ON; shift ;;
    --no-isa-variants) isa_variants=OFF; shift ;;
    --) shift; break ;;
    *) echo "usage: scripts/test.sh [--compiler gcc|clang] [--sanitize] [--no-isa-variants] [-- ctest args]" >&2; exit 2 ;;
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
if [ "$isa_variants" = OFF ]; then
  dir="$dir-baseline"
  extra+=(-DROPEKIT_ISA_TESTS=OFF)
fi
if [ "$sanitize" = ON ]; then
  dir="$dir-asan"
  # Sanitized runs check memory and UB, not ISA coverage: the native variant is enough.
  # Benchmarks never run under ctest; the other two builds compile them.
  extra+=(-DROPEKIT_SANITIZE=ON -DROPEKIT_ISA_TESTS=OFF -DCMAKE_CXX_FLAGS=-march=native
          -DROPEKIT_BUILD_BENCHMARKS=OFF)
fi
jobs=$(nproc 2>/dev/null || echo 2)
# Optimised (the kernels' code paths as engines build them), asserts on through the tests' own
# ROPEKIT_ASSERT, no debug info: full -g made the template-heavy kernel tests much slower to
# build. Sanitizer reports keep file:line through -g1.
opt="-O2 -DNDEBUG"
# The sanitizer build is unoptimised: ASan + UBSan instrumentation of the inlined AVX-512
# kernels made clang's optimiser the whole cost of CI. tests/isa/test_attention.cpp alone took
# more than 13 CPU minutes to compile at -O2 and more than 9 at -O1 (both stopped), and 160 s
# at -O0, where the program then runs in 98 s. -O0 also hides nothing from the sanitizers (no
# access is optimised away); the other two builds test the optimised code. Eigen-heavy
# examples opt back in (examples/long_context/CMakeLists.txt).
if [ "$sanitize" = ON ]; then opt="-O0 -g1 -DNDEBUG"; fi
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="$opt" \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DROPEKIT_WERROR=ON -DROPEKIT_REQUIRE_DEV_DEPS=ON -DROPEKIT_BUILD_BENCHMARKS=ON \
  -DROPEKIT_BUILD_EXAMPLES=ON "${extra[@]}"
cmake --build "$dir" -j "$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@"
