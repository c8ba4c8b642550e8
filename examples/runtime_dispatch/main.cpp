// SPDX-License-Identifier: Apache-2.0
// Runtime dispatch of the rope kernels: this file is compiled with the default flags, the
// kernels live in rope_sse2.cpp / rope_avx2.cpp / rope_avx512.cpp (each with its own flags), and
// the best set the CPU supports is picked at run time.
//
//   rope-runtime-dispatch           rotate a packed QKV buffer with the best kernels
//   rope-runtime-dispatch --check   compare every supported kernel set with the reference
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "rope_check.hpp"
#include "rope_dispatch.hpp"

namespace {

int run_checks() {
    int failures = 0, runs = 0;
    for (dispatch::isa which : {dispatch::isa::sse2, dispatch::isa::avx2, dispatch::isa::avx512}) {
        if (!dispatch::cpu_has(which)) {
            std::printf("%-9s not supported by this CPU, skipped\n", dispatch::name(which));
            continue;
        }
        int here = 0;
        failures += rope_check::check_all(
            dispatch::name(which),
            [&](const auto& angles, auto q, auto k, const ropekit::positions& pos, std::int64_t n) {
                dispatch::with_arch(which, [&](auto arch) {
                    ropekit::apply_rope_qk<decltype(arch)>(angles, q, k, pos, 0, n);
                });
            },
            here);
        runs += here;
        std::printf("%-9s %d cases checked\n", dispatch::name(which), here);
    }
    std::printf("%d cases, %d failures\n", runs, failures);
    return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--check") == 0) return run_checks();

    const dispatch::isa which = dispatch::best();
    std::printf("rope kernels: %s\n", dispatch::name(which));
    // A decode-sized batch: 4 tokens, 32 q heads and 8 kv heads of 128 in one QKV buffer (bf16).
    const int hq = 32, hk = 8, d = 128;
    const std::int64_t tokens = 4;
    const std::ptrdiff_t ts = std::ptrdiff_t(hq + 2 * hk) * d;
    std::vector<ropekit::bfloat16> qkv(std::size_t(tokens * ts), ropekit::bfloat16(0.5f));
    const auto freqs = rope_check::llama_like(d, d, ropekit::rope_layout::neox);
    const ropekit::head_view<ropekit::bfloat16> q{qkv.data(), tokens, hq, d, ts, d};
    const ropekit::head_view<ropekit::bfloat16> k{qkv.data() + hq * d, tokens, hk, d, ts, d};
    dispatch::with_arch(which, [&](auto arch) {
        ropekit::apply_rope_qk<decltype(arch)>(freqs, q, k, ropekit::positions::contiguous(1000), 0,
                                               tokens);
    });
    std::printf("q[0][0][0..3] = %g %g %g %g\n", float(qkv[0]), float(qkv[1]), float(qkv[2]),
                float(qkv[3]));
    return 0;
}
