#!/usr/bin/env bash
# ropekit's main demo: what each RoPE scaling method does to the rotation frequencies, side by
# side, for one shipped example config per method (examples/configs/*.json), plus one SVG per
# method (wavelength per pair against default RoPE, log scale) in build/demo/.
#   bash scripts/demo.sh [SEQ_LEN]    (default 32768: dynamic NTK and LongRoPE depend on it)
set -euo pipefail
cd "$(dirname "$0")/.."
seq_len="${1:-32768}"
bash scripts/deps.sh
dir=build/demo
mkdir -p "$dir"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DROPEKIT_BUILD_TESTS=OFF \
  -DROPEKIT_BUILD_BENCHMARKS=OFF -DROPEKIT_BUILD_EXAMPLES=ON > "$dir/configure.log" 2>&1 ||
  { cat "$dir/configure.log"; exit 1; }
cmake --build "$dir" --target rope-inspect -j "$(nproc 2>/dev/null || echo 2)" > "$dir/build.log" 2>&1 ||
  { cat "$dir/build.log"; exit 1; }
inspect="$dir/examples/rope-inspect"

echo "RoPE scaling side by side at seq_len $seq_len (wl[i] = wavelength 2*pi/inv_freq of pair i"
echo "of n, in tokens; stretch = last pair's wavelength / default RoPE's; attn = attention factor)"
echo
first=1
for cfg in examples/configs/default.json examples/configs/linear.json examples/configs/ntk.json \
           examples/configs/dynamic.json examples/configs/yarn.json examples/configs/llama3.json \
           examples/configs/longrope.json; do
  method=$(basename "$cfg" .json)
  out=$("$inspect" --config "$cfg" --seq-len "$seq_len" --brief --svg "$dir/$method.svg")
  if ((first)); then sed -n 1p <<< "$out"; first=0; fi
  sed -n 2p <<< "$out"
done
echo
echo "SVGs (open in a browser): $(ls "$dir"/*.svg | tr '\n' ' ')"
echo "Per-pair detail: $inspect --config examples/configs/yarn.json   (add --json for JSON)"
