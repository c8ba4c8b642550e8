// SPDX-License-Identifier: Apache-2.0
// Runtime dispatch of the rope and attention kernels: this file is compiled with the default
// flags, the kernels live in kernels_sse2.cpp / kernels_avx2.cpp / kernels_avx512.cpp (each with
// its own flags, explicit instantiations only), and the best set the CPU supports is picked at
// run time. Tables, views and parameters are built here, with baseline code.
//
//   rope-runtime-dispatch           rotate a packed QKV buffer and attend, with the best kernels
//   rope-runtime-dispatch --check   compare every supported kernel set with the reference
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "dispatch.hpp"

#include <ropekit/attention_reference.hpp>
#include "rope_check.hpp"

namespace {

// Causal GQA attention (8 query heads over 2 bf16 K/V heads, 77 tokens: not a tile multiple)
// with the kernels of `which`, against the double reference. Returns the NMSE.
double attention_nmse(dispatch::isa which) {
    const int hq = 8, hk = 2, d = 64;
    const std::int64_t n = 77;
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    std::vector<float> q(std::size_t(n * hq * d)), o(q.size());
    std::vector<ropekit::bfloat16> k(std::size_t(n * hk * d)), v(k.size());
    for (auto& x : q) x = normal(rng);
    for (auto& x : k) x = ropekit::bfloat16(normal(rng));
    for (auto& x : v) x = ropekit::bfloat16(normal(rng));
    const auto freqs = rope_check::llama_like(d, d, ropekit::rope_layout::neox);
    const auto params = ropekit::attention_params::for_model(freqs);
    const auto qv = ropekit::packed_view(static_cast<const float*>(q.data()), n, hq, d);
    const auto kv = ropekit::packed_view(static_cast<const ropekit::bfloat16*>(k.data()), n, hk, d);
    const auto vv = ropekit::packed_view(static_cast<const ropekit::bfloat16*>(v.data()), n, hk, d);
    auto ws = std::make_unique<ropekit::attention_workspace>();
    dispatch::with_arch(which, [&](auto arch) {
        ropekit::attention_blocked(arch, qv, kv, vv, ropekit::packed_view(o.data(), n, hq, d),
                                   ropekit::causal_mask{}, params, ropekit::head_range{0, hq},
                                   ropekit::query_range{0, n}, ropekit::key_range{0, n}, *ws);
    });
    std::vector<double> ref, lse;
    ropekit::attention_reference(qv, kv, vv, ropekit::causal_mask{}, params, ref, lse);
    double err = 0, norm = 0;
    for (std::size_t i = 0; i < o.size(); ++i) {
        err += (o[i] - ref[i]) * (o[i] - ref[i]);
        norm += ref[i] * ref[i];
    }
    return err / norm;
}

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
        // fp32 accumulation over bf16 inputs: the unit tests' bound for attention.
        const double nmse = attention_nmse(which);
        const bool attention_ok = nmse < 1e-10;
        failures += !attention_ok;
        ++runs;
        std::printf("%-9s %d rope cases checked; causal attention NMSE %.3g%s\n",
                    dispatch::name(which), here, nmse, attention_ok ? "" : " MISMATCH");
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
    std::printf("attention kernels: %s, NMSE vs reference %.3g\n", dispatch::name(which),
                attention_nmse(which));
    return 0;
}
