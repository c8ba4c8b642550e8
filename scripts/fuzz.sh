#!/usr/bin/env bash
# Builds ropekit's libFuzzer targets (tests/fuzz/fuzz_*.cpp, clang, -fsanitize=fuzzer,address,
# undefined at -O1 -g) and runs each for N seconds over a scratch copy of its seed corpus
# tests/fuzz/corpus/<name>/ (name = the file name without fuzz_).
#   scripts/fuzz.sh                        every target, 60 s each
#   scripts/fuzz.sh --seconds 600 table    fuzz_table only, 10 minutes
#   scripts/fuzz.sh --jobs 1               one target at a time (default: one per core)
#   scripts/fuzz.sh --opt 0                build at -O0 (default -O1): builds several times
#                                          faster, runs fewer inputs per second (CI's choice)
# Exits non-zero when a target finds anything (crash, sanitizer report, leak, timeout, OOM) or
# does not build; the reproducer is left in build/fuzz/findings/<target>/. Prints per target the
# seconds it ran and its final `cov:`. Installs nothing beyond scripts/deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
opt=1
jobs=$(nproc 2>/dev/null || echo 1)
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --opt) opt="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "usage: scripts/fuzz.sh [--seconds N] [--jobs N] [--opt 0|1|2] [target...]" >&2; exit 2 ;;
    *) targets+=("${1#fuzz_}"); shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "scripts/fuzz.sh: --seconds takes an integer" >&2; exit 2; }
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "scripts/fuzz.sh: --jobs takes a positive integer" >&2; exit 2; }
[[ "$opt" =~ ^[012]$ ]] || { echo "scripts/fuzz.sh: --opt takes 0, 1 or 2" >&2; exit 2; }
bash scripts/deps.sh
if ((${#targets[@]} == 0)); then
  for f in tests/fuzz/fuzz_*.cpp; do
    [ -e "$f" ] || continue
    n=$(basename "$f" .cpp)
    targets+=("${n#fuzz_}")
  done
fi
((${#targets[@]})) || { echo "scripts/fuzz.sh: no tests/fuzz/fuzz_*.cpp" >&2; exit 2; }
for t in "${targets[@]}"; do
  [ -f "tests/fuzz/fuzz_$t.cpp" ] || { echo "scripts/fuzz.sh: no tests/fuzz/fuzz_$t.cpp" >&2; exit 2; }
done

dir=build/fuzz
cmake -S . -B "$dir" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE= -DROPEKIT_FUZZ=ON \
  -DROPEKIT_WERROR=ON -DROPEKIT_BUILD_TESTS=OFF -DROPEKIT_BUILD_BENCHMARKS=OFF \
  -DROPEKIT_BUILD_EXAMPLES=OFF -DROPEKIT_INSTALL=OFF "-DROPEKIT_FUZZ_OPT=-O$opt" >/dev/null
names=()
for t in "${targets[@]}"; do names+=("fuzz_$t"); done
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" --target "${names[@]}"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# One target: runs it and writes its summary line to $dir/fuzz_<t>.result ("ok ..." or
# "FAILED ..."). Targets are independent processes, so up to --jobs of them run side by side.
run_target() {
  local t="$1" exe="$dir/tests/fuzz/fuzz_$1" work="$dir/corpus-run/$1" findings="$dir/findings/$1"
  local log="$dir/fuzz_$1.log" start rc=0 elapsed cov line
  rm -rf "$work" && mkdir -p "$work" "$findings"
  # A scratch copy: new inputs the run finds never land in the source tree.
  if [ -d "tests/fuzz/corpus/$t" ]; then cp -R "tests/fuzz/corpus/$t/." "$work/"; fi
  start=$(date +%s)
  "$exe" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$findings/" "$work" >"$log" 2>&1 || rc=$?
  elapsed=$(($(date +%s) - start))
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  line="fuzz_$t: ${elapsed} s, ${cov:-cov: ?}"
  if ((rc != 0)); then
    echo "FAILED $line, FAILED (exit $rc; log $log; reproducer in $findings/)" >"$dir/fuzz_$t.result"
  else
    echo "ok $line" >"$dir/fuzz_$t.result"
  fi
}

running=0
for t in "${targets[@]}"; do
  rm -f "$dir/fuzz_$t.result"
  run_target "$t" &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

status=0
summary=()
for t in "${targets[@]}"; do
  result=$(cat "$dir/fuzz_$t.result" 2>/dev/null || echo "FAILED fuzz_$t: did not report")
  line=${result#* }
  if [[ "$result" != ok* ]]; then
    status=1
    [ -f "$dir/fuzz_$t.log" ] && tail -n 40 "$dir/fuzz_$t.log" >&2
  fi
  echo "$line"
  summary+=("$line")
done
echo "---"
printf '%s\n' "${summary[@]}"
exit $status
