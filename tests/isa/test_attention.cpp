// SPDX-License-Identifier: Apache-2.0
// Blocked attention vs the naive double-precision reference (full score matrix), for every mask x
// GQA ratio x K/V storage x head_dim, plus learned sinks, empty rows, split-key merges, ReRoPE and
// Leaky ReRoPE against the two-matrix definition. Built once per ISA variant.
#include "test_support.hpp"

#include "attention_checks.hpp"

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

namespace {

using ropekit::attention_params;
using ropekit::head_range;
using ropekit::head_view;
using ropekit::key_range;
using ropekit::query_range;
using arch = ropekit::default_arch;

using ropekit_test::check_lse;
using ropekit_test::compare;
using ropekit_test::errors;

/// Random Q/K/V in dense [tokens][heads][head_dim] layout, K/V rounded to storage KV.
template <class KV>
struct problem {
    std::int64_t n_q, n_kv, heads, kv_heads;
    int D;
    std::vector<float> q, kf, vf;  // float values (kf/vf before rounding to KV)
    std::vector<KV> k, v;          // stored K/V
    std::vector<float> o, lse;

    problem(std::int64_t nq, std::int64_t nkv, std::int64_t h, std::int64_t kvh, int d,
            unsigned seed, float q_scale = 1.0f)
        : n_q(nq), n_kv(nkv), heads(h), kv_heads(kvh), D(d) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        q.resize(std::size_t(nq * h * d));
        kf.resize(std::size_t(nkv * kvh * d));
        vf.resize(kf.size());
        for (auto& x : q) x = nd(rng) * q_scale;
        for (auto& x : kf) x = nd(rng);
        for (auto& x : vf) x = nd(rng);
        if constexpr (std::is_same_v<KV, ropekit::block_q8_0>) {
            // Rows are contiguous (packed), so the whole array quantises block by block.
            k.resize(kf.size() / ropekit::q8_0_block_values);
            v.resize(k.size());
            ropekit::quantize_q8_0(kf.data(), k.data(), std::int64_t(kf.size()));
            ropekit::quantize_q8_0(vf.data(), v.data(), std::int64_t(vf.size()));
        } else {
            for (float x : kf) k.push_back(ropekit::from_float<KV>(x));
            for (float x : vf) v.push_back(ropekit::from_float<KV>(x));
        }
        o.assign(q.size(), std::numeric_limits<float>::quiet_NaN());
        lse.assign(std::size_t(nq * h), std::numeric_limits<float>::quiet_NaN());
    }
    head_view<const float> qv() const { return ropekit::packed_view(q.data(), n_q, heads, D); }
    head_view<const KV> kv_k() const { return ropekit::packed_view(k.data(), n_kv, kv_heads, D); }
    head_view<const KV> kv_v() const { return ropekit::packed_view(v.data(), n_kv, kv_heads, D); }
    head_view<const float> kf_view() const {
        return ropekit::packed_view(kf.data(), n_kv, kv_heads, D);
    }
    head_view<const float> vf_view() const {
        return ropekit::packed_view(vf.data(), n_kv, kv_heads, D);
    }
    head_view<float> ov() { return ropekit::packed_view(o.data(), n_q, heads, D); }
};

template <class KV, class Mask>
void run_case(const Mask& mask, std::int64_t ratio, int D, std::int64_t n_q, std::int64_t n_kv,
              bool with_sinks, const std::int64_t* qpos = nullptr,
              const std::int64_t* kpos = nullptr) {
    const std::int64_t kv_heads = 2, heads = kv_heads * ratio;
    problem<KV> pr(n_q, n_kv, heads, kv_heads, D, unsigned(D * 131 + ratio * 7 + n_q));
    std::vector<float> sinks(static_cast<std::size_t>(heads));
    for (std::int64_t h = 0; h < heads; ++h) sinks[h] = 0.5f * float(h % 5) - 1.0f;
    attention_params p = attention_params::with_softmax_scale(1.0f / std::sqrt(float(D)));
    p.sink_logits = with_sinks ? sinks.data() : nullptr;
    if (qpos) p.q_positions = ropekit::positions::ids(qpos);
    if (kpos) p.k_positions = ropekit::positions::ids(kpos);
    p.lse = pr.lse.data();
    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, p);

    // Against the same stored K/V: only float arithmetic differs.
    std::vector<double> ro, rl;
    ropekit::attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), mask, p, ro, rl);
    const errors e = compare(pr.o, ro);
    CHECK(e.max_rel <= 1e-5);
    CHECK(e.nmse <= 1e-10);
    check_lse(pr.lse, rl);
    if constexpr (!std::is_same_v<KV, float>) {
        // Against the float K/V before rounding: the storage error itself.
        std::vector<double> fo, fl;
        ropekit::attention_reference(pr.qv(), pr.kf_view(), pr.vf_view(), mask, p, fo, fl);
        CHECK(compare(pr.o, fo).nmse <= 5e-4);
    }
}

template <class KV>
void grid_for_storage() {
    const std::int64_t pcw_ends[] = {40, 90};
    const ropekit::parallel_context_mask pcw{pcw_ends, 2};
    // PCW positions restart per window; task tokens continue after the longest window.
    const std::int64_t n_kv = 133;
    std::vector<std::int64_t> kpos(n_kv);
    for (std::int64_t j = 0; j < n_kv; ++j) kpos[j] = j < 40 ? j : j < 90 ? j - 40 : 50 + (j - 90);
    // q8_0 rows are whole 32-value blocks: 96 replaces 80 (both are tails of the 64-wide
    // score and P V passes).
    const std::vector<int> dims = std::is_same_v<KV, ropekit::block_q8_0>
                                      ? std::vector<int>{64, 96, 128}
                                      : std::vector<int>{64, 80, 128};
    for (int D : dims) {
        for (std::int64_t ratio : {1, 4, 8}) {
            DYNAMIC_SECTION("D=" << D << " ratio=" << ratio) {
                run_case<KV>(ropekit::full_mask{}, ratio, D, 37, n_kv, false);
                run_case<KV>(ropekit::causal_mask{}, ratio, D, 37, n_kv, false);
                run_case<KV>(ropekit::causal_mask{}, ratio, D, n_kv, n_kv, false);
                run_case<KV>(ropekit::sliding_window_mask{50}, ratio, D, 70, n_kv, false);
                run_case<KV>(ropekit::sink_window_mask{4, 30}, ratio, D, 70, n_kv, false);
                run_case<KV>(ropekit::causal_mask{}, ratio, D, 70, n_kv, true);  // learned sinks
                run_case<KV>(ropekit::sink_window_mask{3, 17}, ratio, D, 5, n_kv, true);
                run_case<KV>(ropekit::causal_mask{}, ratio, D, 1, n_kv, false);  // decode
                run_case<KV>(ropekit::causal_mask{}, ratio, D, 2, n_kv, true);
                run_case<KV>(pcw, ratio, D, 60, n_kv, false, kpos.data() + (n_kv - 60),
                             kpos.data());
            }
        }
    }
}

}  // namespace

TEST_CASE("attention matches the double reference: float K/V", "[attention]") {
    grid_for_storage<float>();
}
TEST_CASE("attention matches the double reference: bfloat16 K/V", "[attention]") {
    grid_for_storage<ropekit::bfloat16>();
}
TEST_CASE("attention matches the double reference: half K/V", "[attention]") {
    grid_for_storage<ropekit::half>();
}

TEST_CASE("attention matches the double reference: q8_0 K/V", "[attention][q8_0]") {
    // The reference dequantises the same blocks, so only float arithmetic differs; the check
    // against the unquantised K/V (nmse <= 5e-4) bounds the storage error itself.
    grid_for_storage<ropekit::block_q8_0>();
    // A head_dim that is not whole blocks is refused, naming the view and the rule.
    std::vector<ropekit::block_q8_0> kb(8 * 2 * 3);
    std::vector<float> q(8 * 2 * 80), o(q.size());
    const auto k = ropekit::packed_view<const ropekit::block_q8_0>(kb.data(), 8, 2, 80);
    const attention_params p = attention_params::with_softmax_scale(0.1f);
    try {
        ropekit::attention(ropekit::packed_view<const float>(q.data(), 8, 2, 80), k, k,
                           ropekit::packed_view(o.data(), 8, 2, 80), ropekit::causal_mask{}, p);
        FAIL("no throw");
    } catch (const ropekit::error& e) {
        CHECK(std::string(e.field()) == "head_view");
        CHECK(std::string(e.what()).find("multiple of 32") != std::string::npos);
    }
}

TEST_CASE("sliding window boundary: W-1 visible, W hidden", "[attention][mask]") {
    const ropekit::sliding_window_mask m{8};
    CHECK(m.visible(10, 0, 3, 3));        // distance 7 = W - 1
    CHECK_FALSE(m.visible(10, 0, 2, 2));  // distance 8 = W
    CHECK(m.visible(10, 0, 10, 10));
    CHECK_FALSE(m.visible(10, 0, 11, 11));
    // A window of 1 sees only the diagonal: output = v of the same position.
    problem<float> pr(9, 9, 1, 1, 64, 3u);
    attention_params p = attention_params::with_softmax_scale(0.125f);
    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::sliding_window_mask{1}, p);
    for (std::size_t i = 0; i < pr.o.size(); ++i) CHECK(pr.o[i] == pr.vf[i]);
}

TEST_CASE("learned sinks: analytic case n / (n + e^s)", "[attention][sinks]") {
    for (float s : {-3.0f, 0.0f, 2.5f, 100.0f, -100.0f}) {
        const std::int64_t n = 150, H = 4;
        problem<float> pr(n, n, H, 1, 64, 5u);
        std::fill(pr.q.begin(), pr.q.end(), 0.0f);  // all logits 0
        std::fill(pr.vf.begin(), pr.vf.end(), 1.0f);
        pr.v = pr.vf;
        std::vector<float> sinks(std::size_t(H), s);
        attention_params p = attention_params::with_softmax_scale(1.0f);
        p.sink_logits = sinks.data();
        p.lse = pr.lse.data();
        ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p);
        for (std::int64_t t = 0; t < n; ++t)
            for (std::int64_t h = 0; h < H; ++h) {
                const double cnt = double(t + 1);  // causal: query t sees t + 1 keys
                const double want = cnt / (cnt + std::exp(double(s)));
                const float* o = pr.o.data() + (t * H + h) * 64;
                for (int d = 0; d < 64; ++d)
                    REQUIRE(std::abs(o[d] - want) <= 1e-5 * std::max(want, 1e-30) + 1e-37);
                const double lse = std::log(cnt + std::exp(double(s)));
                const double want_lse =
                    s > 50 ? double(s) + std::log1p(cnt * std::exp(-double(s))) : lse;
                REQUIRE(std::abs(pr.lse[std::size_t(t * H + h)] - want_lse) <=
                        1e-5 * std::max(1.0, std::abs(want_lse)));
            }
    }
}

TEST_CASE("rows that see no key: zeros, LSE -inf, or LSE = sink", "[attention][sinks]") {
    const std::int64_t H = 2;
    problem<float> pr(6, 50, H, 1, 64, 11u);
    // Queries at positions before every key: the causal mask hides everything.
    std::vector<std::int64_t> qpos(6, -1);
    attention_params p = attention_params::with_softmax_scale(0.125f);
    p.q_positions = ropekit::positions::ids(qpos.data());
    p.lse = pr.lse.data();
    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p);
    for (float x : pr.o) REQUIRE(x == 0.0f);
    for (float x : pr.lse) REQUIRE(x == -std::numeric_limits<float>::infinity());
    for (float s : {100.0f, -100.0f, 0.25f}) {
        std::vector<float> sinks(std::size_t(H), s);
        p.sink_logits = sinks.data();
        ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p);
        for (float x : pr.o) REQUIRE(x == 0.0f);
        for (float x : pr.lse) REQUIRE(x == s);
    }
    // Empty key range through the blocked kernel.
    auto ws = std::make_unique<ropekit::attention_workspace>();
    p.sink_logits = nullptr;
    p.q_positions.reset();
    ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(),
                               ropekit::causal_mask{}, p, head_range{0, H}, query_range{0, 6},
                               key_range{20, 20}, *ws);
    for (float x : pr.o) REQUIRE(x == 0.0f);
    for (float x : pr.lse) REQUIRE(x == -std::numeric_limits<float>::infinity());
}

TEST_CASE("split keys merged by LSE equal the unsplit result; sinks added once",
          "[attention][merge]") {
    const std::int64_t H = 8, KVH = 2, n_kv = 301;
    for (std::int64_t n_q : {1, 3, 8, 40}) {
        problem<ropekit::bfloat16> pr(n_q, n_kv, H, KVH, 128, unsigned(17 + n_q));
        std::vector<float> sinks(static_cast<std::size_t>(H));
        for (std::int64_t h = 0; h < H; ++h) sinks[h] = float(h) - 3.0f;
        const ropekit::sink_window_mask mask{4, 200};
        attention_params p = attention_params::with_softmax_scale(1.0f / std::sqrt(128.0f));
        p.sink_logits = sinks.data();
        p.lse = pr.lse.data();
        ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, p);
        std::vector<double> ro, rl;
        ropekit::attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), mask, p, ro, rl);
        CHECK(compare(pr.o, ro).max_rel <= 1e-5);

        auto ws = std::make_unique<ropekit::attention_workspace>();
        for (int parts : {2, 3, 5}) {
            for (bool sink_in_partial : {false, true}) {
                std::vector<float> o_acc(pr.o.size()), l_acc(pr.lse.size());
                std::vector<float> o_part(pr.o.size()), l_part(pr.lse.size());
                auto acc = ropekit::packed_view(o_acc.data(), n_q, H, 128);
                auto part = ropekit::packed_view(o_part.data(), n_q, H, 128);
                for (int i = 0; i < parts; ++i) {
                    // Unaligned split points too: 301 keys in `parts` pieces.
                    const key_range keys{n_kv * i / parts, n_kv * (i + 1) / parts};
                    attention_params pp = p;
                    pp.sink_logits = (sink_in_partial && i == 1) ? sinks.data() : nullptr;
                    pp.lse = i == 0 ? l_acc.data() : l_part.data();
                    ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(),
                                               i == 0 ? acc : part, mask, pp, head_range{0, H},
                                               query_range{0, n_q}, keys, *ws);
                    if (i > 0)
                        ropekit::merge_attention(
                            acc, l_acc.data(), part, l_part.data(), head_range{0, H},
                            query_range{0, n_q},
                            (!sink_in_partial && i == parts - 1) ? sinks.data() : nullptr);
                }
                CHECK(compare(o_acc, ro).max_rel <= 1e-5);
                check_lse(l_acc, rl);
            }
        }
        // split_keys covers [0, n_kv) without overlap.
        std::int64_t covered = 0;
        for (int i = 0; i < 3; ++i) {
            const key_range r = ropekit::split_keys(n_kv, 3, i);
            CHECK(r.begin == covered);
            covered = r.end;
        }
        CHECK(covered == n_kv);
    }
}

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
                    attention_params p =
                        attention_params::with_softmax_scale(1.0f / std::sqrt(128.0f));
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
                        const key_range keys{std::min(cuts[i], n_kv), std::min(cuts[i + 1], n_kv)};
                        attention_params pp = p;
                        pp.lse = i == 0 ? l_acc.data() : l_part.data();
                        ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(),
                                                   i == 0 ? acc : part, mask, pp, head_range{0, H},
                                                   query_range{0, s.n_q}, keys, *ws);
                        if (i > 0)
                            ropekit::merge_attention(acc, l_acc.data(), part, l_part.data(),
                                                     head_range{0, H}, query_range{0, s.n_q});
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
    decode_grid<ropekit::block_q8_0>();
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
    attention_params p = attention_params::with_softmax_scale(0.1f);
    p.lse = lse.data();
    auto ws = std::make_unique<ropekit::attention_workspace>();
    for (std::int64_t h0 = 0; h0 < H; h0 += 3)
        for (std::int64_t t0 = 0; t0 < n; t0 += 41)
            ropekit::attention_blocked(arch{}, q, k, v, ov, ropekit::causal_mask{}, p,
                                       head_range{h0, std::min(H, h0 + 3)},
                                       query_range{t0, std::min(n, t0 + 41)}, key_range{0, n}, *ws);
    std::vector<double> ro, rl;
    ropekit::attention_reference(q, k, v, ropekit::causal_mask{}, p, ro, rl);
    CHECK(compare(o, ro).max_rel <= 1e-5);
    check_lse(lse, rl);
}

namespace {

using ropekit_test::make_freqs;

template <class KV, class Rule>
void rerope_case(const Rule& rule, int D, int rotary_dim, ropekit::rope_layout layout,
                 std::int64_t n_q, std::int64_t n_kv, std::int64_t ratio,
                 float attention_factor = 1.0f) {
    const std::int64_t KVH = 2, H = KVH * ratio;
    problem<KV> pr(n_q, n_kv, H, KVH, D, unsigned(n_q * 3 + D));
    const auto freqs = make_freqs(D, rotary_dim, layout, attention_factor);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, n_kv);
    attention_params p = attention_params::for_model(freqs);
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
            // YaRN-style attention factor: the scale comes from the frequencies.
            rerope_case<float>(ropekit::rerope{w}, 64, 64, rope_layout::neox, 40, 150, 1, 1.2f);
        }
    }
}

TEST_CASE("Leaky ReRoPE in one pass equals the two-matrix definition", "[attention][rerope]") {
    using ropekit::rope_layout;
    for (std::int64_t w : {1, 20, 100}) {
        for (double k : {1.0, 2.0, 16.0}) {  // k = 1: plain RoPE, allowed
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
    attention_params p = attention_params::with_softmax_scale(0.125f);
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
    try {
        (void)attention_params::with_softmax_scale(std::numeric_limits<float>::quiet_NaN());
        FAIL("no throw");
    } catch (const ropekit::error& e) {
        CHECK(e.field() == "softmax_scale");
    }
    auto ws = std::make_unique<ropekit::attention_workspace>();
    CHECK_THROWS_AS(ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(),
                                               ropekit::causal_mask{}, p, head_range{0, 5},
                                               query_range{0, 4}, key_range{0, 10}, *ws),
                    ropekit_test::assert_failure);
    const auto freqs = make_freqs(64, 64, ropekit::rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 5);  // too short
    CHECK_THROWS_AS(
        ropekit::rerope_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p,
                                  ropekit::rerope{4}, freqs, table),
        ropekit::error);
    CHECK_THROWS_AS(ropekit::rerope_attention_blocked(
                        arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p,
                        ropekit::rerope{4}, freqs, table, head_range{0, 4}, query_range{0, 4},
                        key_range{0, 10}, *ws),
                    ropekit_test::assert_failure);
    CHECK_THROWS_AS(ropekit::sliding_window_mask{0}.validate(), ropekit::error);
}

namespace {

/// Whether merge_attention can be called with these two range types after the views and LSEs.
template <class A, class B, class = void>
struct merge_takes : std::false_type {};
template <class A, class B>
struct merge_takes<A, B,
                   std::void_t<decltype(ropekit::merge_attention(
                       std::declval<head_view<float>>(), std::declval<float*>(),
                       std::declval<head_view<const float>>(), std::declval<const float*>(),
                       std::declval<A>(), std::declval<B>()))>> : std::true_type {};

/// Whether attention_blocked accepts ranges A, B, C (after the workspace-free arguments).
template <class A, class B, class C, class = void>
struct blocked_takes : std::false_type {};
template <class A, class B, class C>
struct blocked_takes<
    A, B, C,
    std::void_t<decltype(ropekit::attention_blocked(
        arch{}, std::declval<head_view<const float>>(), std::declval<head_view<const float>>(),
        std::declval<head_view<const float>>(), std::declval<head_view<float>>(),
        ropekit::causal_mask{}, std::declval<const attention_params&>(), std::declval<A>(),
        std::declval<B>(), std::declval<C>(), std::declval<ropekit::attention_workspace&>()))>>
    : std::true_type {};

}  // namespace

TEST_CASE("ranges: one order (heads, queries, keys) everywhere, a swap does not compile",
          "[attention][api]") {
    STATIC_REQUIRE(merge_takes<head_range, query_range>::value);
    STATIC_REQUIRE_FALSE(merge_takes<query_range, head_range>::value);  // the old merge order
    STATIC_REQUIRE_FALSE(merge_takes<ropekit::index_range, ropekit::index_range>::value);
    STATIC_REQUIRE(blocked_takes<head_range, query_range, key_range>::value);
    STATIC_REQUIRE_FALSE(blocked_takes<query_range, head_range, key_range>::value);
    STATIC_REQUIRE_FALSE(blocked_takes<head_range, key_range, query_range>::value);
    // Explicit constructors: a braced pair is not silently any of them.
    STATIC_REQUIRE_FALSE(std::is_convertible_v<query_range, head_range>);
    STATIC_REQUIRE_FALSE(std::is_convertible_v<key_range, query_range>);
    STATIC_REQUIRE_FALSE(
        blocked_takes<ropekit::index_range, ropekit::index_range, ropekit::index_range>::value);
    // size() of an extreme (invalid) range does not overflow: the hot entry points ask it
    // before their checks reject the range (found by fuzzing).
    CHECK(query_range{INT64_MIN, INT64_MAX}.size() == INT64_MAX);
    CHECK(key_range{-1, INT64_MAX}.size() == INT64_MAX);
    CHECK(head_range{5, 2}.size() == 0);
    CHECK(ropekit::index_range{INT64_MIN, 1}.size() == INT64_MAX);
}

TEST_CASE("null position ids with no token to read: accepted by the front door and the kernel",
          "[attention][positions]") {
    // attention() accepts null ids for zero tokens; the hot kernel asserted on them (found by
    // fuzzing): the two must agree.
    problem<float> pr(0, 30, 4, 2, 64, 59u);
    attention_params p = attention_params::with_softmax_scale(0.125);
    p.q_positions = ropekit::positions::ids(static_cast<const std::int32_t*>(nullptr));
    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p);
    problem<float> pk(3, 0, 4, 2, 64, 61u);
    attention_params pkp = attention_params::with_softmax_scale(0.125);
    pkp.k_positions = ropekit::positions::ids(static_cast<const std::int64_t*>(nullptr));
    pkp.lse = pk.lse.data();
    ropekit::attention(pk.qv(), pk.kv_k(), pk.kv_v(), pk.ov(), ropekit::causal_mask{}, pkp);
    for (float x : pk.o) CHECK(x == 0.0f);  // no key: zeros
    // Null ids with tokens to read are rejected by both.
    problem<float> pn(3, 30, 4, 2, 64, 67u);
    attention_params pn_p = attention_params::with_softmax_scale(0.125);
    pn_p.k_positions = ropekit::positions::ids(static_cast<const std::int64_t*>(nullptr));
    CHECK_THROWS_AS(
        ropekit::attention(pn.qv(), pn.kv_k(), pn.kv_v(), pn.ov(), ropekit::causal_mask{}, pn_p),
        ropekit::error);
    auto ws = std::make_unique<ropekit::attention_workspace>();
    CHECK_THROWS_AS(ropekit::attention_blocked(arch{}, pn.qv(), pn.kv_k(), pn.kv_v(), pn.ov(),
                                               ropekit::causal_mask{}, pn_p, head_range{0, 4},
                                               query_range{0, 3}, key_range{0, 30}, *ws),
                    ropekit_test::assert_failure);
}

TEST_CASE("non-const K/V views are accepted and give the same result", "[attention][api]") {
    problem<ropekit::bfloat16> pr(7, 70, 4, 2, 64, 23u);
    const attention_params p = attention_params::with_softmax_scale(0.125);
    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p);
    const std::vector<float> want = pr.o;
    // Mutable K/V (a cache the engine also writes), float and bfloat16.
    auto k = ropekit::packed_view(pr.k.data(), pr.n_kv, 2, 64);
    auto v = ropekit::packed_view(pr.v.data(), pr.n_kv, 2, 64);
    auto q = ropekit::packed_view(pr.q.data(), pr.n_q, 4, 64);
    std::fill(pr.o.begin(), pr.o.end(), -1.0f);
    ropekit::attention(q, k, v, pr.ov(), ropekit::causal_mask{}, p);
    CHECK(pr.o == want);
    std::fill(pr.o.begin(), pr.o.end(), -1.0f);
    auto ws = std::make_unique<ropekit::attention_workspace>();
    ropekit::attention_blocked(arch{}, q, k, v, pr.ov(), ropekit::causal_mask{}, p,
                               head_range{0, 4}, query_range{0, pr.n_q}, key_range{0, pr.n_kv},
                               *ws);
    CHECK(pr.o == want);
    std::fill(pr.o.begin(), pr.o.end(), -1.0f);
    ropekit::attention(q, k, v, pr.ov(), ropekit::causal_mask{}, p, *ws);  // caller's workspace
    CHECK(pr.o == want);
    std::vector<double> ro, rl;
    ropekit::attention_reference(q, k, v, ropekit::causal_mask{}, p, ro, rl);
    CHECK(compare(pr.o, ro).max_rel <= 1e-5);
    problem<float> pf(5, 40, 2, 1, 64, 29u);
    auto kf = ropekit::packed_view(pf.k.data(), pf.n_kv, 1, 64);
    auto vf = ropekit::packed_view(pf.v.data(), pf.n_kv, 1, 64);
    ropekit::attention(pf.qv(), kf, vf, pf.ov(), ropekit::full_mask{}, p);
    std::vector<double> fo, fl;
    ropekit::attention_reference(pf.qv(), kf, vf, ropekit::full_mask{}, p, fo, fl);
    CHECK(compare(pf.o, fo).max_rel <= 1e-5);
}

TEST_CASE("softmax scale comes from the frequencies", "[attention][api]") {
    STATIC_REQUIRE_FALSE(std::is_default_constructible_v<attention_params>);
    const auto freqs = make_freqs(128, 128, ropekit::rope_layout::neox, 1.2f);
    const attention_params p = attention_params::for_model(freqs);
    CHECK(p.softmax_scale() == float(freqs.logit_scale() / std::sqrt(128.0)));
    CHECK(attention_params(freqs).softmax_scale() == p.softmax_scale());
    CHECK(p.logit_scale() == freqs.logit_scale());
    CHECK(p.head_dim() == 128);
    // Overriding 1/sqrt(head_dim) (Gemma's query_pre_attn_scalar) keeps the attention factor.
    const attention_params g = p.with_scaling(1.0 / 16.0);
    CHECK(g.softmax_scale() == float(freqs.logit_scale() / 16.0));
    CHECK(attention_params::with_softmax_scale(0.25).softmax_scale() == 0.25f);
    CHECK(attention_params::with_softmax_scale(0.25).logit_scale() == 1.0);
    for (double bad : {0.0, -1.0, std::numeric_limits<double>::infinity(), 1e300}) {
        try {
            (void)attention_params::with_softmax_scale(bad);
            FAIL("no throw for " << bad);
        } catch (const ropekit::error& e) {
            CHECK(e.field() == "softmax_scale");
        }
    }
    CHECK_THROWS_AS(p.with_scaling(0.0), ropekit::error);
    ropekit::rope_frequencies broken = freqs;
    broken.inv_freq.pop_back();
    CHECK_THROWS_AS(attention_params::for_model(broken), ropekit::error);
    // The params' head_dim must match the views'.
    problem<float> pr(3, 20, 2, 1, 64, 31u);
    try {
        ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p);
        FAIL("no throw");
    } catch (const ropekit::error& e) {
        CHECK(e.field() == "head_dim");
    }
}

TEST_CASE("rerope_attention does not ignore the frequencies' attention factor",
          "[attention][rerope][api]") {
    problem<float> pr(20, 60, 2, 1, 64, 37u);
    const auto freqs = make_freqs(64, 64, ropekit::rope_layout::neox, 1.3f);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 60);
    // A scale without the factor (1/sqrt(head_dim) alone) is rejected, naming logit_scale.
    const attention_params plain = attention_params::with_softmax_scale(0.125);
    try {
        ropekit::rerope_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{},
                                  plain, ropekit::rerope{16}, freqs, table);
        FAIL("no throw");
    } catch (const ropekit::error& e) {
        CHECK(e.field() == "logit_scale");
    }
    auto ws = std::make_unique<ropekit::attention_workspace>();
    CHECK_THROWS_AS(ropekit::rerope_attention_blocked(
                        arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{},
                        plain, ropekit::rerope{16}, freqs, table, head_range{0, 2},
                        query_range{0, 20}, key_range{0, 60}, *ws),
                    ropekit_test::assert_failure);
    // With the factor, the result is the reference at scale 1.3^2 / 8.
    const attention_params p = attention_params::for_model(freqs);
    CHECK(p.softmax_scale() == float(1.3f * 1.3f / 8.0));
    ropekit::rerope_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p,
                              ropekit::rerope{16}, freqs, table, *ws);
    std::vector<double> ro, rl;
    ropekit::rerope_attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), ropekit::causal_mask{}, p,
                                        ropekit::rerope{16}, freqs, ro, rl);
    CHECK(compare(pr.o, ro).max_rel <= 1e-5);
}

TEST_CASE("positions: int32 ids, int64 ids, contiguous and constant agree",
          "[attention][positions]") {
    const std::int64_t n_q = 37, n_kv = 133;
    problem<float> pr(n_q, n_kv, 4, 2, 64, 41u);
    std::vector<std::int64_t> q64(n_q), k64(n_kv);
    std::vector<std::int32_t> q32(n_q), k32(n_kv);
    for (std::int64_t t = 0; t < n_q; ++t) q32[t] = std::int32_t(q64[t] = 1000 + 2 * t);
    for (std::int64_t j = 0; j < n_kv; ++j) k32[j] = std::int32_t(k64[j] = 1000 + j);
    const ropekit::sliding_window_mask mask{30};
    attention_params p = attention_params::with_softmax_scale(0.125);
    p.q_positions = ropekit::positions::ids(q64.data());
    p.k_positions = ropekit::positions::ids(k64.data());
    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, p);
    const std::vector<float> want = pr.o;
    std::vector<double> ro, rl;
    ropekit::attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), mask, p, ro, rl);
    CHECK(compare(want, ro).max_rel <= 1e-5);
    p.q_positions = ropekit::positions::ids(q32.data());  // llama.cpp positions are int32
    p.k_positions = ropekit::positions::ids(k32.data());
    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, p);
    CHECK(pr.o == want);
    p.k_positions = ropekit::positions::contiguous(1000);
    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, p);
    CHECK(pr.o == want);
    // Decode at a constant position: the same as ids that repeat it.
    problem<float> pd(1, 50, 4, 2, 64, 43u);
    attention_params pc = attention_params::with_softmax_scale(0.125);
    pc.q_positions = ropekit::positions::constant(20);
    ropekit::attention(pd.qv(), pd.kv_k(), pd.kv_v(), pd.ov(), ropekit::causal_mask{}, pc);
    ropekit::attention_reference(pd.qv(), pd.kv_k(), pd.kv_v(), ropekit::causal_mask{}, pc, ro, rl);
    CHECK(compare(pd.o, ro).max_rel <= 1e-5);
    // ReRoPE with int32 positions.
    const auto freqs = make_freqs(64, 64, ropekit::rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 2000);
    attention_params pr32 = attention_params::for_model(freqs);
    pr32.q_positions = ropekit::positions::ids(q32.data());
    pr32.k_positions = ropekit::positions::ids(k32.data());
    ropekit::rerope_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, pr32,
                              ropekit::rerope{20}, freqs, table);
    ropekit::rerope_attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), ropekit::causal_mask{}, pr32,
                                        ropekit::rerope{20}, freqs, ro, rl);
    CHECK(compare(pr.o, ro).max_rel <= 1e-5);
}

namespace {
/// Runs attention() and returns the field of the ropekit::error it throws ("" if none).
template <class Mask>
std::string error_field(problem<float>& pr, const Mask& mask, const attention_params& p,
                        head_view<float> o) {
    try {
        ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), o, mask, p);
    } catch (const ropekit::error& e) {
        return std::string(e.field());  // field() may be a string_view
    }
    return "";
}
}  // namespace

TEST_CASE("attention() validates the mask, o, strides, positions and sinks",
          "[attention][errors]") {
    problem<float> pr(4, 10, 4, 2, 64, 47u);
    const attention_params p = attention_params::with_softmax_scale(0.125);
    // Masks: attention() calls validate() (these segfaulted or passed before).
    CHECK(error_field(pr, ropekit::parallel_context_mask{nullptr, 2}, p, pr.ov()) == "window_ends");
    const std::int64_t ends[] = {3, 3, 8};
    CHECK(error_field(pr, ropekit::parallel_context_mask{ends, -1}, p, pr.ov()) == "n_windows");
    CHECK(error_field(pr, ropekit::parallel_context_mask{ends, 3}, p, pr.ov()) == "window_ends");
    const std::int64_t decreasing[] = {5, 2};
    CHECK(error_field(pr, ropekit::parallel_context_mask{decreasing, 2}, p, pr.ov()) ==
          "window_ends");
    CHECK(error_field(pr, ropekit::sliding_window_mask{0}, p, pr.ov()) == "window");
    CHECK(error_field(pr, ropekit::sliding_window_mask{INT64_MAX}, p, pr.ov()) == "window");
    CHECK(error_field(pr, ropekit::sink_window_mask{-1, 4}, p, pr.ov()) == "n_sink");
    CHECK(error_field(pr, ropekit::sink_window_mask{4, 0}, p, pr.ov()) == "window");
    CHECK(error_field(pr, ropekit::causal_mask{}, p, pr.ov()).empty());
    // o: null, overlapping rows, negative strides.
    auto o = pr.ov();
    o.data = nullptr;
    CHECK(error_field(pr, ropekit::causal_mask{}, p, o) == "head_view");
    o = pr.ov();
    o.head_stride = 32;  // heads overlap
    CHECK(error_field(pr, ropekit::causal_mask{}, p, o) == "head_view");
    o = pr.ov();
    o.token_stride = -o.token_stride;
    CHECK(error_field(pr, ropekit::causal_mask{}, p, o) == "head_view");
    {
        auto k = pr.kv_k();
        k.token_stride = 64;  // tokens overlap the second head
        CHECK_THROWS_AS(
            ropekit::attention(pr.qv(), k, pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p),
            ropekit::error);
    }
    // Positions and query_index_offset that would overflow the mask arithmetic.
    std::vector<std::int64_t> huge(10, INT64_MAX);
    attention_params pp = p;
    pp.q_positions = ropekit::positions::ids(huge.data());
    CHECK(error_field(pr, ropekit::sliding_window_mask{4}, pp, pr.ov()) == "q_positions");
    pp = p;
    huge[3] = INT64_MIN;
    std::fill(huge.begin(), huge.begin() + 3, 0);
    pp.k_positions = ropekit::positions::ids(huge.data());
    CHECK(error_field(pr, ropekit::causal_mask{}, pp, pr.ov()) == "k_positions");
    pp = p;
    pp.k_positions = ropekit::positions::contiguous(INT64_MAX - 3);
    CHECK(error_field(pr, ropekit::causal_mask{}, pp, pr.ov()) == "k_positions");
    pp = p;
    pp.q_positions = ropekit::positions::ids(static_cast<const std::int32_t*>(nullptr));
    CHECK(error_field(pr, ropekit::causal_mask{}, pp, pr.ov()) == "q_positions");
    pp = p;
    pp.q_positions = ropekit::positions::table_rows();
    CHECK(error_field(pr, ropekit::causal_mask{}, pp, pr.ov()) == "q_positions");
    pp = p;
    pp.query_index_offset = INT64_MAX - 1;
    const std::int64_t pcw_ends[] = {2, 5};
    CHECK(error_field(pr, ropekit::parallel_context_mask{pcw_ends, 2}, pp, pr.ov()) ==
          "query_index_offset");
    // Sinks: NaN and +inf are rejected; -inf is no sink.
    std::vector<float> sinks(4, std::numeric_limits<float>::quiet_NaN());
    pp = p;
    pp.sink_logits = sinks.data();
    CHECK(error_field(pr, ropekit::causal_mask{}, pp, pr.ov()) == "sink_logits");
    std::fill(sinks.begin(), sinks.end(), std::numeric_limits<float>::infinity());
    CHECK(error_field(pr, ropekit::causal_mask{}, pp, pr.ov()) == "sink_logits");
    std::fill(sinks.begin(), sinks.end(), -std::numeric_limits<float>::infinity());
    CHECK(error_field(pr, ropekit::causal_mask{}, pp, pr.ov()).empty());
    // Hot path: zero query heads (a division by zero before), a reversed range.
    auto ws = std::make_unique<ropekit::attention_workspace>();
    auto q0 = pr.qv();
    q0.heads = 0;
    auto o0 = pr.ov();
    o0.heads = 0;
    CHECK_THROWS_AS(
        ropekit::attention_blocked(arch{}, q0, pr.kv_k(), pr.kv_v(), o0, ropekit::causal_mask{}, p,
                                   head_range{0, 0}, query_range{0, 4}, key_range{0, 10}, *ws),
        ropekit_test::assert_failure);
    CHECK_THROWS_AS(ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(),
                                               ropekit::causal_mask{}, p, head_range{0, 4},
                                               query_range{3, 1}, key_range{0, 10}, *ws),
                    ropekit_test::assert_failure);
    // merge_attention: an 8-row destination and a 4-row partial (heap overflow before).
    std::vector<float> oa(8 * 4 * 64), ob(4 * 4 * 64), la(8 * 4), lb(4 * 4);
    CHECK_THROWS_AS(ropekit::merge_attention(ropekit::packed_view(oa.data(), 8, 4, 64), la.data(),
                                             ropekit::packed_view<const float>(ob.data(), 4, 4, 64),
                                             lb.data(), head_range{0, 4}, query_range{0, 8}),
                    ropekit_test::assert_failure);
}

TEST_CASE("a -inf learned sink on a row that sees no key gives zeros, not NaN",
          "[attention][sinks]") {
    const std::int64_t H = 4;
    for (std::int64_t n_q : {1, 6, 70}) {  // decode form and blocked form
        problem<float> pr(n_q, 50, H, 2, 64, 53u);
        std::vector<std::int64_t> qpos(std::size_t(n_q), -1);  // before every key
        std::vector<float> sinks(std::size_t(H), -std::numeric_limits<float>::infinity());
        sinks[1] = 0.5f;  // one finite sink: LSE = sink, output zeros
        attention_params p = attention_params::with_softmax_scale(0.125);
        p.q_positions = ropekit::positions::ids(qpos.data());
        p.sink_logits = sinks.data();
        p.lse = pr.lse.data();
        ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p);
        for (float x : pr.o) REQUIRE(x == 0.0f);
        for (std::int64_t t = 0; t < n_q; ++t)
            for (std::int64_t h = 0; h < H; ++h)
                REQUIRE(pr.lse[std::size_t(t * H + h)] ==
                        (h == 1 ? 0.5f : -std::numeric_limits<float>::infinity()));
        // Rows that do see keys: a -inf sink changes nothing.
        p.q_positions.reset();
        ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), ropekit::causal_mask{}, p);
        std::vector<double> ro, rl;
        ropekit::attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), ropekit::causal_mask{}, p, ro,
                                     rl);
        CHECK(compare(pr.o, ro).max_rel <= 1e-5);
    }
}
