// SPDX-License-Identifier: Apache-2.0
// Self-check shared by the runtime-dispatch example and the native-flags check: the fused q+k
// kernels on a packed GQA QKV buffer against ropekit's double reference, with the tolerances of
// the unit tests (fp32: 1e-6 of the row's max |x|; 16-bit: one ulp of the type).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <ropekit/rope_reference.hpp>

namespace rope_check {

inline ropekit::rope_frequencies llama_like(int head_dim, int rotary_dim,
                                            ropekit::rope_layout layout) {
    ropekit::rope_frequencies f;
    f.head_dim = head_dim;
    f.rotary_dim = rotary_dim;
    f.layout = layout;
    for (int i = 0; i < rotary_dim / 2; ++i)
        f.inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / rotary_dim)));
    return f;
}

// Largest error of `got` against `want` over the rotated rows, in units of the tolerance:
// fp32 1e-6 of the row's max |x|; 16-bit one ulp of the type (or that fp32 bound).
template <class T>
double error_units(const std::vector<T>& got, const std::vector<T>& want, int head_dim) {
    const double ulp = std::is_same_v<T, float>               ? 0.0
                       : std::is_same_v<T, ropekit::bfloat16> ? 0x1p-7
                                                              : 0x1p-10;
    double worst = 0.0;
    for (std::size_t row = 0; row + std::size_t(head_dim) <= got.size();
         row += std::size_t(head_dim)) {
        double max_abs = 0.0;
        for (int c = 0; c < head_dim; ++c) {
            const double w = std::fabs(double(ropekit::to_float(want[row + std::size_t(c)])));
            if (!std::isnan(w)) max_abs = std::max(max_abs, w);
        }
        for (int c = 0; c < head_dim; ++c) {
            const double g = ropekit::to_float(got[row + std::size_t(c)]);
            const double w = ropekit::to_float(want[row + std::size_t(c)]);
            // (1e-45: the float subnormal step, the resolution of the subnormal rows.)
            const double tol = std::max({1e-6 * max_abs, ulp * std::fabs(w), 1e-45});
            if (std::isnan(g) != std::isnan(w)) return 1e9;
            if (!std::isnan(g) && std::fabs(g - w) > 0)
                worst = std::max(worst, std::fabs(g - w) / tol);
        }
    }
    return worst;
}

// q (8 heads) and k (2 heads) in a packed QKV buffer, rotated by the fused call with `arch`.
template <class T, class Apply>
bool check_one(const char* label, Apply&& apply, ropekit::rope_layout layout, int head_dim,
               int rotary_dim, bool table_free) {
    const int hq = 8, hk = 2;
    const std::int64_t tokens = 13;
    const std::ptrdiff_t ts = std::ptrdiff_t(hq + 2 * hk) * head_dim;
    std::vector<T> qkv(std::size_t(tokens * ts));
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (auto& v : qkv) v = ropekit::from_float<T>(u(rng));
    // Special rows: q head 0 of token 0 holds float-subnormal values (their rotations are
    // subnormal too: the bfloat16 fast path must not flush them), q head 1 of token 1 a NaN.
    for (int c = 0; c < head_dim; ++c)
        qkv[std::size_t(c)] = ropekit::from_float<T>(1e-39f * u(rng));
    qkv[std::size_t(ts + head_dim + 3)] = ropekit::from_float<T>(std::nanf(""));
    std::vector<T> ref = qkv;
    const auto freqs = llama_like(head_dim, rotary_dim, layout);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 4096);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens));
    for (auto& p : ids) p = std::int32_t(rng() % 4096);
    const auto pos = ropekit::positions::ids(ids.data());
    auto views = [&](std::vector<T>& buf) {
        return std::make_pair(
            ropekit::head_view<T>{buf.data(), tokens, hq, head_dim, ts, head_dim},
            ropekit::head_view<T>{buf.data() + hq * head_dim, tokens, hk, head_dim, ts, head_dim});
    };
    auto [q, k] = views(qkv);
    if (table_free)
        apply(freqs, q, k, pos, tokens);
    else
        apply(table, q, k, pos, tokens);
    auto [rq, rk] = views(ref);
    ropekit::apply_rope_reference(freqs, rq, pos, 0, tokens);
    ropekit::apply_rope_reference(freqs, rk, pos, 0, tokens);
    const double e = error_units(qkv, ref, head_dim);
    if (e > 1.0) {
        std::printf("MISMATCH %s %s %s head_dim %d rotary_dim %d %s: %.3g x tolerance\n", label,
                    ropekit::storage_name<T>(), std::string(ropekit::to_string(layout)).c_str(),
                    head_dim, rotary_dim, table_free ? "table-free" : "table", e);
        return false;
    }
    return true;
}

/// Runs the grid (layouts x head_dim/rotary_dim x table/table-free x float/bf16/half) with
/// `apply(angles, q, k, positions, tokens)`; returns the number of failures.
template <class Apply>
int check_all(const char* label, Apply&& apply, int& cases) {
    int failures = 0;
    for (auto layout : {ropekit::rope_layout::neox, ropekit::rope_layout::gptj}) {
        for (auto [d, r] : {std::pair{128, 128}, std::pair{80, 80}, std::pair{96, 64}}) {
            for (bool free : {false, true}) {
                failures += !check_one<float>(label, apply, layout, d, r, free);
                failures += !check_one<ropekit::bfloat16>(label, apply, layout, d, r, free);
                failures += !check_one<ropekit::half>(label, apply, layout, d, r, free);
                cases += 3;
            }
        }
    }
    return failures;
}

}  // namespace rope_check
