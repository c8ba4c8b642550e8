#!/usr/bin/env bash
# Installs what ropekit's build, tests, benchmarks and examples need on Debian 12 (or Ubuntu),
# skipping the apt round trip when everything is already there.
set -euo pipefail
packages=(cmake g++ clang libclang-rt-14-dev make libxsimd-dev libeigen3-dev catch2
          libbenchmark-dev nlohmann-json3-dev clang-format python3 binutils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "ropekit: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
