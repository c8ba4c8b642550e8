// SPDX-License-Identifier: Apache-2.0
// The README's quick start, compiled and checked: a model's RoPE scaling -> frequencies -> cos/sin
// table -> rotate q and k in place (bf16) -> causal attention, its softmax scale taken from the
// frequencies.
#include <ropekit/ropekit.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
    const int head_dim = 128, n_heads = 8, n_kv_heads = 2;  // GQA: 4 query heads per KV head
    const std::int64_t tokens = 300;

    // 1. The scaling method and the frequencies the model was trained with (Qwen2.5-style YaRN).
    const ropekit::rope_params params{/*base*/ 1e6, head_dim, /*rotary_dim*/ head_dim};
    const ropekit::rope_scaling scaling =
        ropekit::yarn_scaling{/*factor*/ 4.0, /*original_max_position*/ 32768};
    const ropekit::rope_frequencies freqs = ropekit::make_frequencies(params, scaling);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, tokens);

    // 2. q (float) and k (bfloat16) rotated in place at positions 0..tokens-1.
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    std::vector<float> q(std::size_t(tokens * n_heads * head_dim));
    std::vector<ropekit::bfloat16> k(std::size_t(tokens * n_kv_heads * head_dim));
    std::vector<ropekit::bfloat16> v(k.size());
    for (auto& x : q) x = normal(rng);
    for (auto& x : k) x = ropekit::bfloat16(normal(rng));
    for (auto& x : v) x = ropekit::bfloat16(normal(rng));
    ropekit::apply_rope(table, ropekit::packed_view(q.data(), tokens, n_heads, head_dim),
                        ropekit::positions::contiguous(0));
    ropekit::apply_rope(table, ropekit::packed_view(k.data(), tokens, n_kv_heads, head_dim),
                        ropekit::positions::contiguous(0));

    // 3. Causal attention. The parameters come from the frequencies: softmax scale
    //    1/sqrt(head_dim) times the attention factor squared (YaRN's mscale), applied once, as
    //    HF's scaling of cos and sin for both q and k amounts to. Forgetting the factor gives
    //    plausible but wrong results, so there is no other default.
    std::vector<float> out(q.size());
    const auto p = ropekit::attention_params::for_model(freqs);
    const ropekit::causal_mask mask;
    const auto qv = ropekit::packed_view(q.data(), tokens, n_heads, head_dim);
    const auto kv = ropekit::packed_view(k.data(), tokens, n_kv_heads, head_dim);  // bf16 views,
    const auto vv = ropekit::packed_view(v.data(), tokens, n_kv_heads, head_dim);  // const or not
    ropekit::attention(qv, kv, vv, ropekit::packed_view(out.data(), tokens, n_heads, head_dim),
                       mask, p);

    // The same attention in double, materialising every score: the fast path must agree.
    std::vector<double> ref, ref_lse;
    ropekit::attention_reference(qv, kv, vv, mask, p, ref, ref_lse);
    double err = 0, norm = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
        err += (out[i] - ref[i]) * (out[i] - ref[i]);
        norm += ref[i] * ref[i];
    }
    const double nmse = err / norm;
    std::printf("yarn x4: attention factor %.6f, %d pairs, kernels %s\n", freqs.attention_factor,
                freqs.pairs(), ropekit::arch_name<ropekit::default_arch>());
    std::printf(
        "causal attention over %lld tokens, softmax scale %.6f: NMSE vs double reference "
        "%.3g\n",
        (long long)tokens, double(p.softmax_scale()), nmse);
    return nmse < 1e-10 ? 0 : 1;
}
