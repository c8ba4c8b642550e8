#!/usr/bin/env bash
# Same-run speed of the C++ evaluation (long-context, ropekit + Eigen) against the PyTorch
# reference (reference_eval.py) on the same cells and threads: the reduced grid by default
# (`--grid full` for the demo's grid; the PyTorch side then takes several minutes).
#   bash examples/long_context/compare_speed.sh BUILD_DIR [--grid reduced|full] [--threads N]
# torch runs with OpenBLAS when it is installed (Debian's libtorch recommends libopenblas0;
# without it torch uses the reference BLAS and is several times slower).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:?usage: compare_speed.sh BUILD_DIR [--grid reduced|full] [--threads N]}"
shift
grid=reduced
threads=2
while (($#)); do
  case "$1" in
    --grid) grid="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    *) echo "compare_speed.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
exe="$build/examples/long_context/long-context"
[ -x "$exe" ] || { echo "compare_speed.sh: no $exe (build the long-context target)" >&2; exit 2; }
openblas=/usr/lib/x86_64-linux-gnu/openblas-pthread
[ -d "$openblas" ] && export LD_LIBRARY_PATH="$openblas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
torch_line=$(/usr/bin/env python3 "$here/reference_eval.py" --grid "$grid" --threads "$threads" \
  --no-check --out "$tmp/ref.json" | grep -E "target tokens in")
cpp_line=$("$exe" "$here/model" "$here/data/tinyshakespeare.txt" --grid "$grid" \
  --threads "$threads" 2>/dev/null | grep -E "tokens/s$" | head -1)
echo "torch: $torch_line"
echo "C++:   $cpp_line"
python3 - "$tmp/ref.json" "$cpp_line" <<'PY'
import json, re, sys
torch_tps = json.load(open(sys.argv[1]))["torch"]["tokens_per_second"]
cpp_tps = float(re.search(r"([0-9.]+) tokens/s", sys.argv[2]).group(1))
print(f"C++ / torch tokens/s: {cpp_tps / torch_tps:.1f}x")
PY
