// SPDX-License-Identifier: Apache-2.0
// Blocked attention, second half (a translation unit of its own so the two compile in parallel):
// decode shapes with split keys, head / query-block ranges on strided views, ReRoPE and Leaky
// ReRoPE against the two-matrix definition, and bad input. Built once per ISA variant.
#include "test_support.hpp"

#include <ropekit/attention.hpp>
#include <ropekit/attention_reference.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attention_support.hpp"

namespace {

using namespace attention_test;
using ropekit::attention_params;
using ropekit::head_view;
using ropekit::index_range;
using arch = ropekit::default_arch;

}  // namespace

/// Decode shapes (a few query rows per K/V head): rows per K/V head 1 to 8 (the score kernel
/// reduces width / rows keys per tree; 3 rows per head are padded to 4), key counts around the
/// 32-key chunk and the tree width, more K/V heads than one decode block holds, key ranges
/// starting and ending off the chunk grid, and a sinks + window mask (two key ranges, chunks
/// partly hidden).
template <class KV>
void decode_grid() {
    struct shape {
        std::int64_t n_q, ratio, kv_heads;
    };
    for (shape s : {shape{1, 1, 20}, shape{3, 1, 3}, shape{1, 2, 5}, shape{2, 2, 3},
                    shape{1, 4, 20}, shape{2, 4, 2}, shape{1, 8, 3}, shape{1, 3, 2}}) {
        for (std::int64_t n_kv : {1, 4, 15, 16, 17, 31, 32, 33, 47, 100, 300}) {
            for (bool window : {false, true}) {
                DYNAMIC_SECTION("n_q=" << s.n_q << " ratio=" << s.ratio
                                       << " kv_heads=" << s.kv_heads << " n_kv=" << n_kv
                                       << " sinks+window=" << window) {
                    const std::int64_t H = s.ratio * s.kv_heads;
                    problem<KV> pr(s.n_q, n_kv, H, s.kv_heads, 128,
                                   unsigned(n_kv * 7 + s.ratio * 3 + s.kv_heads));
                    attention_params p;
                    p.softmax_scale = 1.0f / std::sqrt(128.0f);
                    p.lse = pr.lse.data();
                    // Sinks 3 + window 37: keys [0, 3) and the last 37 up to each query. {n_kv, 1}
                    // makes every key a sink: plain causal.
                    const ropekit::sink_window_mask mask = window
                                                               ? ropekit::sink_window_mask{3, 37}
                                                               : ropekit::sink_window_mask{n_kv, 1};
                    std::vector<double> ro, rl;
                    ropekit::attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), mask, p, ro, rl);
                    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, p);
                    CHECK(compare(pr.o, ro).max_rel <= 1e-5);
                    check_lse(pr.lse, rl);
                    // Split keys at off-grid points, merged by LSE.
                    auto ws = std::make_unique<ropekit::attention_workspace>();
                    std::vector<float> o_acc(pr.o.size()), l_acc(pr.lse.size());
                    std::vector<float> o_part(pr.o.size()), l_part(pr.lse.size());
                    auto acc = ropekit::packed_view(o_acc.data(), s.n_q, H, 128);
                    auto part = ropekit::packed_view(o_part.data(), s.n_q, H, 128);
                    const std::int64_t cuts[] = {0, n_kv / 3, n_kv * 2 / 3 + 1, n_kv};
                    for (int i = 0; i < 3; ++i) {
                        const index_range keys{std::min(cuts[i], n_kv),
                                               std::min(cuts[i + 1], n_kv)};
                        attention_params pp = p;
                        pp.lse = i == 0 ? l_acc.data() : l_part.data();
                        ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(),
                                                   i == 0 ? acc : part, mask, pp, {0, H},
                                                   {0, s.n_q}, keys, *ws);
                        if (i > 0)
                            ropekit::merge_attention(acc, l_acc.data(), part, l_part.data(),
                                                     {0, s.n_q}, {0, H});
                    }
                    CHECK(compare(o_acc, ro).max_rel <= 1e-5);
                    check_lse(l_acc, rl);
                }
            }
        }
    }
}

TEST_CASE("decode shapes: rows per K/V head, key tails, many K/V heads, split keys",
          "[attention][decode]") {
    decode_grid<float>();
    decode_grid<ropekit::bfloat16>();
}

TEST_CASE("head and query-block ranges cover the whole result; strided views",
          "[attention][ranges]") {
    const std::int64_t H = 8, KVH = 2, n = 150;
    const int D = 80;
    // Q/K/V interleaved in one fused qkv buffer per token: [q heads | k heads | v heads].
    const std::ptrdiff_t tok = (H + 2 * KVH) * D + 3;
    std::vector<float> qkv(std::size_t(n * tok));
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    for (auto& x : qkv) x = nd(rng);
    head_view<const float> q{qkv.data(), n, H, D, tok, D};
    head_view<const float> k{qkv.data() + H * D, n, KVH, D, tok, D};
    head_view<const float> v{qkv.data() + (H + KVH) * D, n, KVH, D, tok, D};
    std::vector<float> o(std::size_t(n * H * D), -7.0f), lse(std::size_t(n * H));
    auto ov = ropekit::packed_view(o.data(), n, H, D);
    attention_params p;
    p.softmax_scale = 0.1f;
    p.lse = lse.data();
    auto ws = std::make_unique<ropekit::attention_workspace>();
    for (std::int64_t h0 = 0; h0 < H; h0 += 3)
        for (std::int64_t t0 = 0; t0 < n; t0 += 41)
            ropekit::attention_blocked(arch{}, q, k, v, ov, ropekit::causal_mask{}, p,
                                       {h0, std::min(H, h0 + 3)}, {t0, std::min(n, t0 + 41)},
                                       {0, n}, *ws);
    std::vector<double> ro, rl;
    ropekit::attention_reference(q, k, v, ropekit::causal_mask{}, p, ro, rl);
    CHECK(compare(o, ro).max_rel <= 1e-5);
    check_lse(lse, rl);
}

namespace {

ropekit::rope_frequencies make_freqs(int head_dim, int rotary_dim, ropekit::rope_layout layout) {
    ropekit::rope_frequencies f;
    f.head_dim = head_dim;
    f.rotary_dim = rotary_dim;
    f.layout = layout;
    for (int i = 0; i < rotary_dim / 2; ++i)
        f.inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / rotary_dim)));
    return f;
}

template <class KV, class Rule>
void rerope_case(const Rule& rule, int D, int rotary_dim, ropekit::rope_layout layout,
                 std::int64_t n_q, std::int64_t n_kv, std::int64_t ratio) {
    const std::int64_t KVH = 2, H = KVH * ratio;
    problem<KV> pr(n_q, n_kv, H, KVH, D, unsigned(n_q * 3 + D));
    const auto freqs = make_freqs(D, rotary_dim, layout);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, n_kv);
    attention_params p;
    p.softmax_scale = 1.0f / std::sqrt(float(D));
    p.lse = pr.lse.data();
    ropekit::rerope_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p,
                              rule, freqs, table);
    std::vector<double> ro, rl;
    ropekit::rerope_attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), ropekit::causal_mask{}, p,
                                        rule, freqs, ro, rl);
    const errors e = compare(pr.o, ro);
    CHECK(e.max_rel <= 1e-5);
    CHECK(e.nmse <= 1e-10);
    check_lse(pr.lse, rl);
}

}  // namespace

TEST_CASE("ReRoPE in one pass equals the two-matrix definition", "[attention][rerope]") {
    using ropekit::rope_layout;
    for (std::int64_t w : {1, 20, 64, 100, 1000}) {
        DYNAMIC_SECTION("window " << w) {
            rerope_case<float>(ropekit::rerope{w}, 64, 64, rope_layout::neox, 150, 150, 1);
            rerope_case<float>(ropekit::rerope{w}, 80, 48, rope_layout::gptj, 70, 201, 4);
            rerope_case<float>(ropekit::rerope{w}, 128, 128, rope_layout::neox, 1, 300, 8);
            rerope_case<ropekit::bfloat16>(ropekit::rerope{w}, 128, 128, rope_layout::neox, 90, 190,
                                           4);
        }
    }
}

TEST_CASE("Leaky ReRoPE in one pass equals the two-matrix definition", "[attention][rerope]") {
    using ropekit::rope_layout;
    for (std::int64_t w : {1, 20, 100}) {
        for (double k : {2.0, 16.0}) {
            DYNAMIC_SECTION("window " << w << " k " << k) {
                rerope_case<float>(ropekit::leaky_rerope{w, k}, 64, 64, rope_layout::neox, 150, 150,
                                   1);
                rerope_case<float>(ropekit::leaky_rerope{w, k}, 80, 64, rope_layout::gptj, 70, 201,
                                   4);
                rerope_case<ropekit::half>(ropekit::leaky_rerope{w, k}, 128, 128, rope_layout::neox,
                                           8, 260, 8);
            }
        }
    }
}

TEST_CASE("bad input: errors name the field; hot-path asserts", "[attention][errors]") {
    problem<float> pr(4, 10, 4, 2, 64, 1u);
    attention_params p;
    p.softmax_scale = 0.125f;
    auto bad_k = pr.kv_k();
    bad_k.head_dim = 32;
    CHECK_THROWS_AS(
        ropekit::attention(pr.qv(), bad_k, pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p),
        ropekit::error);
    auto bad_heads = pr.kv_k();
    bad_heads.heads = 3;
    CHECK_THROWS_AS(
        ropekit::attention(pr.qv(), bad_heads, pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p),
        ropekit::error);
    attention_params bad = p;
    bad.softmax_scale = std::numeric_limits<float>::quiet_NaN();
    try {
        ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, bad);
        FAIL("no throw");
    } catch (const ropekit::error& e) {
        CHECK(e.field() == "softmax_scale");
    }
    auto ws = std::make_unique<ropekit::attention_workspace>();
    CHECK_THROWS_AS(
        ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(),
                                   ropekit::causal_mask{}, p, {0, 5}, {0, 4}, {0, 10}, *ws),
        ropekit_test::assert_failure);
    const auto freqs = make_freqs(64, 64, ropekit::rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 5);  // too short
    CHECK_THROWS_AS(
        ropekit::rerope_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p,
                                  ropekit::rerope{4}, freqs, table),
        ropekit::error);
    CHECK_THROWS_AS(ropekit::rerope_attention_blocked(
                        arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p,
                        ropekit::rerope{4}, freqs, table, {0, 4}, {0, 4}, {0, 10}, *ws),
                    ropekit_test::assert_failure);
    CHECK_THROWS_AS(ropekit::sliding_window_mask{0}.validate(), ropekit::error);
}
