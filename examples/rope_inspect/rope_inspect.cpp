// SPDX-License-Identifier: Apache-2.0
// rope-inspect: what RoPE frequencies a Hugging Face config.json (or a few flags) implies.
//
//   rope-inspect --config config.json [--seq-len N] [--json] [--svg wavelengths.svg]
//   rope-inspect --rope-type yarn --head-dim 128 --base 1e6 --factor 4 --original-max-position
//   32768
//
// Prints the method, rotary dim, base, attention factor and, per rotation pair, inv_freq and
// wavelength next to default RoPE's; --json prints one JSON object instead; --svg draws the
// wavelengths (log scale) against default RoPE. Bad input: the message on stderr, exit status 2.
// The logic lives in rope_inspect.hpp next to this file, so the tests exercise it directly.
#if __has_include(<nlohmann/json.hpp>)
#include "rope_inspect.hpp"

#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    return rope_inspect::run(args, std::cout, std::cerr);
}
#else
#include <cstdio>

int main() {
    std::fputs("rope-inspect: built without nlohmann/json (apt-get install nlohmann-json3-dev)\n",
               stderr);
    return 2;
}
#endif
