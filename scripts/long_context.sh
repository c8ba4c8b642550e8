#!/usr/bin/env bash
# ropekit's main demo: the project's small byte-level LLaMA model (examples/long_context/model,
# trained at 128 tokens by examples/long_context/train.py) evaluated at 1x to 16x its training
# length under ten long-context methods, entirely through ropekit (tables, rotary kernels,
# attention, position rules; Eigen for the projections). Prints the NLL table and tokens/s and
# writes build/long_context/long_context.svg (NLL against context length). About two minutes
# on 2 cores.
#   bash scripts/long_context.sh [--threads N] [more long-context options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
dir=build/long_context
mkdir -p "$dir"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DROPEKIT_BUILD_TESTS=OFF \
  -DROPEKIT_BUILD_BENCHMARKS=OFF -DROPEKIT_BUILD_EXAMPLES=ON > "$dir/configure.log" 2>&1 ||
  { cat "$dir/configure.log"; exit 1; }
echo "building long-context (first time: about a minute)" >&2
cmake --build "$dir" --target long-context -j "$(nproc 2>/dev/null || echo 2)" > "$dir/build.log" 2>&1 ||
  { cat "$dir/build.log"; exit 1; }
"$dir/examples/long_context/long-context" examples/long_context/model \
  examples/long_context/data/tinyshakespeare.txt --grid full --svg "$dir/long_context.svg" "$@"
