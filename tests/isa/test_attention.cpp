// SPDX-License-Identifier: Apache-2.0
// Blocked attention vs the naive double-precision reference (full score matrix), for every mask x
// GQA ratio x K/V storage x head_dim, plus learned sinks, empty rows, split-key merges, ReRoPE and
// Leaky ReRoPE against the two-matrix definition. Built once per ISA variant.
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

namespace {

using ropekit::attention_params;
using ropekit::head_view;
using ropekit::index_range;
using arch = ropekit::default_arch;

/// Error metrics of a result against the double reference: normwise maximum relative error
/// max|a - b| / max|b| and NMSE sum (a - b)^2 / sum b^2.
struct errors {
    double max_rel = 0, nmse = 0;
};
errors compare(const std::vector<float>& got, const std::vector<double>& ref) {
    double max_abs = 0, max_ref = 0, se = 0, sr = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        const double d = double(got[i]) - ref[i];
        max_abs = std::max(max_abs, std::abs(d));
        max_ref = std::max(max_ref, std::abs(ref[i]));
        se += d * d;
        sr += ref[i] * ref[i];
    }
    errors e;
    e.max_rel = max_ref > 0 ? max_abs / max_ref : max_abs;
    e.nmse = sr > 0 ? se / sr : se;
    return e;
}

void check_lse(const std::vector<float>& got, const std::vector<double>& ref) {
    for (std::size_t i = 0; i < ref.size(); ++i) {
        if (std::isinf(ref[i])) {
            REQUIRE(got[i] == float(ref[i]));
        } else {
            REQUIRE(std::abs(double(got[i]) - ref[i]) <= 1e-5 * std::max(1.0, std::abs(ref[i])));
        }
    }
}

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
        for (float x : kf) k.push_back(ropekit::from_float<KV>(x));
        for (float x : vf) v.push_back(ropekit::from_float<KV>(x));
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
    attention_params p;
    p.softmax_scale = 1.0f / std::sqrt(float(D));
    p.sink_logits = with_sinks ? sinks.data() : nullptr;
    p.q_positions = qpos;
    p.k_positions = kpos;
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
    for (int D : {64, 80, 128}) {
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

TEST_CASE("sliding window boundary: W-1 visible, W hidden", "[attention][mask]") {
    const ropekit::sliding_window_mask m{8};
    CHECK(m.visible(10, 0, 3, 3));        // distance 7 = W - 1
    CHECK_FALSE(m.visible(10, 0, 2, 2));  // distance 8 = W
    CHECK(m.visible(10, 0, 10, 10));
    CHECK_FALSE(m.visible(10, 0, 11, 11));
    // A window of 1 sees only the diagonal: output = v of the same position.
    problem<float> pr(9, 9, 1, 1, 64, 3u);
    attention_params p;
    p.softmax_scale = 0.125f;
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
        attention_params p;
        p.softmax_scale = 1.0f;
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
    attention_params p;
    p.softmax_scale = 0.125f;
    p.q_positions = qpos.data();
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
    p.q_positions = nullptr;
    ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(),
                               ropekit::causal_mask{}, p, {0, H}, {0, 6}, {20, 20}, *ws);
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
        attention_params p;
        p.softmax_scale = 1.0f / std::sqrt(128.0f);
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
                    const index_range keys{n_kv * i / parts, n_kv * (i + 1) / parts};
                    attention_params pp = p;
                    pp.sink_logits = (sink_in_partial && i == 1) ? sinks.data() : nullptr;
                    pp.lse = i == 0 ? l_acc.data() : l_part.data();
                    ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(),
                                               i == 0 ? acc : part, mask, pp, {0, H}, {0, n_q},
                                               keys, *ws);
                    if (i > 0)
                        ropekit::merge_attention(
                            acc, l_acc.data(), part, l_part.data(), {0, n_q}, {0, H},
                            (!sink_in_partial && i == parts - 1) ? sinks.data() : nullptr);
                }
                CHECK(compare(o_acc, ro).max_rel <= 1e-5);
                check_lse(l_acc, rl);
            }
        }
        // split_keys covers [0, n_kv) without overlap.
        std::int64_t covered = 0;
        for (int i = 0; i < 3; ++i) {
            const index_range r = ropekit::split_keys(n_kv, 3, i);
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
