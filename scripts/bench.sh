#!/usr/bin/env bash
# Builds the benchmarks (-O3 -march=native) and runs them with repetitions, reporting medians.
# One-core runs are pinned to the last core; the 2-thread attention cases use all cores.
#   bash scripts/bench.sh [table|rope|attention|streaming ...] [-- extra Google Benchmark flags]
#   ROPEKIT_BENCH_OPT=-O2 bash scripts/bench.sh ...   the same at -O2 (build tree build/bench-O2)
# JSON results land in build/bench/<name>.json next to the console output.
set -euo pipefail
cd "$(dirname "$0")/.."
names=()
while (($#)); do
  case "$1" in
    --) shift; break ;;
    table|rope|attention|streaming) names+=("$1"); shift ;;
    *) echo "usage: scripts/bench.sh [table|rope|attention|streaming ...] [-- benchmark flags]" >&2; exit 2 ;;
  esac
done
((${#names[@]})) || names=(table rope attention streaming)
bash scripts/deps.sh
opt=${ROPEKIT_BENCH_OPT:--O3}
dir=build/bench
[ "$opt" = -O3 ] || dir="build/bench$opt"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DROPEKIT_BENCH_OPT="$opt" -DROPEKIT_BUILD_TESTS=OFF -DROPEKIT_BUILD_EXAMPLES=OFF \
  -DROPEKIT_BUILD_BENCHMARKS=ON -DROPEKIT_REQUIRE_DEV_DEPS=ON > /dev/null
targets=()
for n in "${names[@]}"; do targets+=(--target "bench_$n"); done
cmake --build "$dir" "${targets[@]}" -j "$(nproc 2>/dev/null || echo 2)"
last_core=$(($(nproc 2>/dev/null || echo 1) - 1))
for n in "${names[@]}"; do
  echo "== bench_$n"
  pin=(taskset -c "$last_core")
  # Attention has 2-thread cases: give it every core, the benchmark pins nothing itself.
  [ "$n" = attention ] && pin=()
  command -v taskset > /dev/null || pin=()
  "${pin[@]}" "$dir/bench/bench_$n" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
    --benchmark_out="$dir/bench_$n.json" --benchmark_out_format=json "$@"
done
