// SPDX-License-Identifier: Apache-2.0
// Long-context prefill with training-free position rules: a long synthetic prompt (default 8192
// tokens; `self-extend 1500` for a quick run) through Self-Extend (w 1024, G 8) and ReRoPE
// (w 1024), both in one blocked pass, timed against plain causal attention of the same shape.
// Each result is checked against the naive double-precision reference on the last few rows.
//
// Both rules take q and k *unrotated* (the kernel rotates them, at i and j for near pairs and at
// the rule's far positions beyond the window), so an engine using them stores its K cache
// before RoPE. Plain attention takes q and k rotated at their positions.
#include <ropekit/attention.hpp>
#include <ropekit/attention_reference.hpp>
#include <ropekit/scaling.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    const std::int64_t n = argc > 1 ? std::atoll(argv[1]) : 8192;
    if (n < 8) {
        std::fprintf(stderr, "usage: self-extend [tokens >= 8]\n");
        return 2;
    }
    const std::int64_t H = 8, KVH = 2;  // GQA: 4 query heads per K/V head
    const int D = 128;

    // The model's own frequencies (Llama-style, base 5e5) and one table covering the prompt:
    // the rules change relative positions, never frequencies.
    const ropekit::rope_params params{5e5, D, D};
    const ropekit::rope_frequencies freqs =
        ropekit::make_frequencies(params, ropekit::default_rope{});
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, n);
    const auto p = ropekit::attention_params::for_model(freqs);

    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    std::vector<float> q(std::size_t(n * H * D)), k(std::size_t(n * KVH * D)), v(k.size());
    for (auto& x : q) x = nd(rng);
    for (auto& x : k) x = nd(rng);
    for (auto& x : v) x = nd(rng);
    const auto qv = ropekit::packed_view<const float>(q.data(), n, H, D);
    const auto kv = ropekit::packed_view<const float>(k.data(), n, KVH, D);
    const auto vv = ropekit::packed_view<const float>(v.data(), n, KVH, D);
    std::vector<float> o(q.size());
    const auto ov = ropekit::packed_view(o.data(), n, H, D);
    auto ws = std::make_unique<ropekit::attention_workspace>();  // reused by every call
    const ropekit::causal_mask causal;

    // Plain causal attention: the cost the rules are compared with (q/k would be rotated by the
    // engine; random data either way).
    auto t0 = clock_type::now();
    ropekit::attention(qv, kv, vv, ov, causal, p, *ws);
    const double t_plain = seconds_since(t0);
    std::printf("%lld tokens, %lld heads (%lld K/V), head_dim %d, kernels %s\n",
                static_cast<long long>(n), static_cast<long long>(H), static_cast<long long>(KVH),
                D, ropekit::arch_name<ropekit::default_arch>());
    std::printf("  plain causal        %8.1f ms\n", t_plain * 1e3);

    // The last `rows` query rows against the reference (all n keys; the full reference would
    // be n^2 scores in double).
    const std::int64_t rows = 4;
    bool ok = true;
    auto check = [&](const char* name, double secs, const auto& rule) {
        std::vector<double> ref, ref_lse;
        ropekit::attention_params pr = p;
        pr.q_positions = ropekit::positions::contiguous(n - rows);
        ropekit::position_rule_attention_reference(
            ropekit::packed_view<const float>(q.data() + (n - rows) * H * D, rows, H, D), kv, vv,
            causal, pr, rule, freqs, ref, ref_lse);
        double err = 0, norm = 0;
        for (std::size_t i = 0; i < ref.size(); ++i) {
            const double d = double(o[std::size_t((n - rows) * H * D) + i]) - ref[i];
            err += d * d;
            norm += ref[i] * ref[i];
        }
        const double nmse = err / norm;
        ok = ok && nmse < 1e-10;
        std::printf("  %-19s %8.1f ms  (%.2fx plain), NMSE vs reference on %lld rows %.2g\n", name,
                    secs * 1e3, secs / t_plain, static_cast<long long>(rows), nmse);
    };

    // Self-Extend (Jin et al. 2024): neighbour window 1024, group 8; far pairs scored with q at
    // floor(i/8) + 1024 - 128 and k at floor(j/8), so the largest relative position at 8192
    // tokens is about 1920, inside a 4K training length.
    const ropekit::self_extend se{1024, 8};
    t0 = clock_type::now();
    ropekit::position_rule_attention(qv, kv, vv, ov, causal, p, se, freqs, table, *ws);
    check("self_extend{1024,8}", seconds_since(t0), se);

    // ReRoPE (Su 2023): every distance beyond 1024 is scored at exactly 1024.
    const ropekit::rerope rr{1024};
    t0 = clock_type::now();
    ropekit::position_rule_attention(qv, kv, vv, ov, causal, p, rr, freqs, table, *ws);
    check("rerope{1024}", seconds_since(t0), rr);

    return ok ? 0 : 1;
}
