// SPDX-License-Identifier: Apache-2.0
// Relative-position rules fused into blocked attention (position_rule_attention) against the
// naive two-matrix reference, for every rule x mask, GQA ratio, K/V storage, head_dim, sizes off
// the 64-key / 64-row tiling, split keys merged by LSE and decode shapes; plus two checks that
// do not go through the reference at all: StreamingLLM against its literal cache, Self-Extend
// against the paper's relative-position matrix. Built once per ISA variant.
//
// Compile time: every case runs through one runtime mask type (any_mask below, a user-style
// policy dispatching to the ropekit masks), so the kernel is instantiated once per rule x K/V
// storage (12 kernels), not per mask.
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
#include <variant>
#include <vector>

namespace {

using ropekit::attention_params;
using ropekit::head_range;
using ropekit::head_view;
using ropekit::key_range;
using ropekit::query_range;
using ropekit::rope_layout;

/// One of the ropekit masks, chosen at run time (a mask policy as a user would write one).
struct any_mask {
    std::variant<ropekit::full_mask, ropekit::causal_mask, ropekit::sliding_window_mask,
                 ropekit::sink_window_mask, ropekit::parallel_context_mask>
        m;
    void validate() const {
        std::visit([](const auto& x) { x.validate(); }, m);
    }
    bool visible(std::int64_t qp, std::int64_t qi, std::int64_t kp, std::int64_t ki) const {
        return std::visit([&](const auto& x) { return x.visible(qp, qi, kp, ki); }, m);
    }
    ropekit::tile_visibility classify(const ropekit::block_bounds& b) const {
        return std::visit([&](const auto& x) { return x.classify(b); }, m);
    }
    int key_ranges(const ropekit::block_bounds& b, ropekit::index_range out[2]) const {
        return std::visit([&](const auto& x) { return x.key_ranges(b, out); }, m);
    }
};

using ropekit_test::check_lse;
using ropekit_test::compare;
using ropekit_test::errors;

using ropekit_test::make_freqs;

/// Random Q/K/V, [tokens][heads][head_dim], K/V stored as KV.
template <class KV>
struct problem {
    std::int64_t n_q, n_kv, heads, kv_heads;
    int D;
    std::vector<float> q;
    std::vector<KV> k, v;
    std::vector<float> o, lse;
    problem(std::int64_t nq, std::int64_t nkv, std::int64_t h, std::int64_t kvh, int d,
            unsigned seed)
        : n_q(nq), n_kv(nkv), heads(h), kv_heads(kvh), D(d) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        q.resize(std::size_t(nq * h * d));
        for (auto& x : q) x = nd(rng);
        for (std::int64_t i = 0; i < nkv * kvh * d; ++i)
            k.push_back(ropekit::from_float<KV>(nd(rng)));
        for (std::int64_t i = 0; i < nkv * kvh * d; ++i)
            v.push_back(ropekit::from_float<KV>(nd(rng)));
        o.assign(q.size(), std::numeric_limits<float>::quiet_NaN());
        lse.assign(std::size_t(nq * h), std::numeric_limits<float>::quiet_NaN());
    }
    head_view<const float> qv() const { return ropekit::packed_view(q.data(), n_q, heads, D); }
    head_view<const KV> kv_k() const { return ropekit::packed_view(k.data(), n_kv, kv_heads, D); }
    head_view<const KV> kv_v() const { return ropekit::packed_view(v.data(), n_kv, kv_heads, D); }
    head_view<float> ov() { return ropekit::packed_view(o.data(), n_q, heads, D); }
};

enum class mask_kind { full, causal, sliding, sink_window, pcw };
enum class storage { f32, bf16, f16 };

/// One row of the case table.
struct rule_case {
    int rule;  // 0 rerope, 1 leaky, 2 self_extend, 3 streaming_llm
    std::int64_t a;
    double b;  // rule parameters: window / k; window / group; n_sink / window
    mask_kind mask;
    std::int64_t ratio;
    storage kv;
    int D;
    std::int64_t n_q, n_kv;
    bool split;  // also run as two key ranges merged by LSE
};

// PCW over 133 keys: windows [0, 40), [40, 90), task tokens after; positions restart per window.
const std::int64_t pcw_ends[] = {40, 90};
std::vector<std::int64_t> pcw_positions(std::int64_t n_kv) {
    std::vector<std::int64_t> kpos(static_cast<std::size_t>(n_kv));
    for (std::int64_t j = 0; j < n_kv; ++j) kpos[j] = j < 40 ? j : j < 90 ? j - 40 : 50 + (j - 90);
    return kpos;
}

any_mask make_mask(mask_kind m, std::int64_t n_sink) {
    switch (m) {
        case mask_kind::full:
            return {ropekit::full_mask{}};
        case mask_kind::causal:
            return {ropekit::causal_mask{}};
        case mask_kind::sliding:
            return {ropekit::sliding_window_mask{50}};
        case mask_kind::sink_window:
            return {ropekit::sink_window_mask{n_sink, 40}};
        default:
            return {ropekit::parallel_context_mask{pcw_ends, 2}};
    }
}

ropekit::rope_frequencies case_freqs(const rule_case& c) {
    return make_freqs(c.D, c.D == 80 ? 48 : c.D, c.D == 80 ? rope_layout::gptj : rope_layout::neox,
                      c.D == 64 ? 1.2f : 1.0f);
}

template <class KV, class Rule, class Mask>
void run_rule_case_masked(const Rule& rule, const rule_case& c, unsigned seed, const Mask& mask) {
    const std::int64_t KVH = 2, H = KVH * c.ratio;
    problem<KV> pr(c.n_q, c.n_kv, H, KVH, c.D, seed);
    const auto freqs = case_freqs(c);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, c.n_kv + 1);
    attention_params p = attention_params::for_model(freqs);
    std::vector<std::int64_t> kpos;
    if (c.mask == mask_kind::pcw) {
        kpos = pcw_positions(c.n_kv);
        p.q_positions = ropekit::positions::ids(kpos.data() + (c.n_kv - c.n_q));
        p.k_positions = ropekit::positions::ids(kpos.data());
    }
    p.lse = pr.lse.data();
    ropekit::position_rule_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, p, rule, freqs,
                                     table);
    std::vector<double> ro, rl;
    ropekit::position_rule_attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), mask, p, rule, freqs,
                                               ro, rl);
    const errors e = compare(pr.o, ro);
    CHECK(e.max_rel <= 1e-5);
    CHECK(e.nmse <= 1e-10);
    check_lse(pr.lse, rl);

    if (c.split) {
        // Two key ranges (the split not on a tile edge) merged by LSE equal the whole.
        const std::int64_t cut = c.n_kv / 2 + 3;
        std::vector<float> o2(pr.o.size()), l2(pr.lse.size());
        auto ws = std::make_unique<ropekit::attention_workspace>();
        attention_params pa = p, pb = p;
        pb.lse = l2.data();
        ropekit::position_rule_attention_blocked(
            ropekit::default_arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, pa, rule, freqs,
            table, head_range{0, H}, query_range{0, c.n_q}, key_range{0, cut}, *ws);
        ropekit::position_rule_attention_blocked(
            ropekit::default_arch{}, pr.qv(), pr.kv_k(), pr.kv_v(),
            ropekit::packed_view(o2.data(), c.n_q, H, c.D), mask, pb, rule, freqs, table,
            head_range{0, H}, query_range{0, c.n_q}, key_range{cut, c.n_kv}, *ws);
        ropekit::merge_attention(
            pr.ov(), pr.lse.data(),
            ropekit::packed_view(static_cast<const float*>(o2.data()), c.n_q, H, c.D), l2.data(),
            head_range{0, H}, query_range{0, c.n_q});
        const errors es = compare(pr.o, ro);
        CHECK(es.max_rel <= 1e-5);
        CHECK(es.nmse <= 1e-10);
        check_lse(pr.lse, rl);
    }
}

/// StreamingLLM runs under its own mask only (as a concrete sink_window_mask: a user-style
/// runtime mask cannot show which mask it is); any other is a named error.
template <class KV, class Rule>
void run_rule_case(const Rule& rule, const rule_case& c, unsigned seed) {
    if constexpr (std::is_same_v<Rule, ropekit::streaming_llm>) {
        if (c.mask == mask_kind::sink_window)
            return run_rule_case_masked<KV>(rule, c, seed, rule.mask());
        problem<KV> pr(c.n_q, c.n_kv, 2 * c.ratio, 2, c.D, seed);
        const auto freqs = case_freqs(c);
        const auto table = ropekit::cos_sin_table::for_range(freqs, 0, c.n_kv + 1);
        CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
                  ropekit::position_rule_attention(
                      pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), make_mask(c.mask, 4),
                      attention_params::for_model(freqs), rule, freqs, table);
              }) == "mask");
    } else {
        run_rule_case_masked<KV>(rule, c, seed, make_mask(c.mask, 4));
    }
}

template <class KV>
void run_with_storage(const rule_case& c, unsigned seed) {
    switch (c.rule) {
        case 0:
            return run_rule_case<KV>(ropekit::rerope{c.a}, c, seed);
        case 1:
            return run_rule_case<KV>(ropekit::leaky_rerope{c.a, c.b}, c, seed);
        case 2:
            return run_rule_case<KV>(ropekit::self_extend{c.a, std::int64_t(c.b)}, c, seed);
        default:
            return run_rule_case<KV>(ropekit::streaming_llm{c.a, std::int64_t(c.b)}, c, seed);
    }
}

const char* rule_name(int r) {
    static const char* names[] = {"rerope", "leaky_rerope", "self_extend", "streaming_llm"};
    return names[r];
}

/// Unrotated q/k rotated in double at position p (the test's own rotation, no ropekit code).
std::vector<double> rotate_d(const float* x, int D, double p, const ropekit::rope_frequencies& f) {
    std::vector<double> out(x, x + D);
    const int pairs = f.rotary_dim / 2;
    for (int i = 0; i < pairs; ++i) {
        const double a = p * double(f.inv_freq[i]);
        const int i0 = f.layout == rope_layout::neox ? i : 2 * i;
        const int i1 = f.layout == rope_layout::neox ? i + pairs : 2 * i + 1;
        out[i0] = double(x[i0]) * std::cos(a) - double(x[i1]) * std::sin(a);
        out[i1] = double(x[i1]) * std::cos(a) + double(x[i0]) * std::sin(a);
    }
    return out;
}

/// softmax(scores) V over the given keys, in double, into out.
void attend(const std::vector<double>& s, const std::vector<const float*>& vrows, int D,
            double* out) {
    double mx = -std::numeric_limits<double>::infinity();
    for (double x : s) mx = std::max(mx, x);
    double den = 0;
    for (int d = 0; d < D; ++d) out[d] = 0;
    for (std::size_t j = 0; j < s.size(); ++j) {
        const double p = std::exp(s[j] - mx);
        den += p;
        for (int d = 0; d < D; ++d) out[d] += p * double(vrows[j][d]);
    }
    for (int d = 0; d < D; ++d) out[d] /= den;
}

}  // namespace

TEST_CASE("every position rule in one pass equals its two-matrix definition",
          "[attention][rules]") {
    using mk = mask_kind;
    using st = storage;
    // rule, a, b, mask, ratio, storage, D, n_q, n_kv, split. Windows are small enough that
    // near, far and band tiles all occur; n_q / n_kv are off the 64-row / 64-key tiling.
    const rule_case cases[] = {
        // ReRoPE and Leaky ReRoPE (kept exactly as before) under the other masks too.
        {0, 20, 0, mk::causal, 1, st::f32, 64, 150, 150, true},
        {0, 70, 0, mk::full, 4, st::bf16, 80, 37, 133, false},
        {0, 20, 0, mk::sink_window, 8, st::f16, 128, 70, 133, false},
        {0, 1, 0, mk::causal, 8, st::f32, 128, 1, 300, true},  // decode
        {1, 20, 4.0, mk::causal, 4, st::f32, 80, 70, 201, false},
        {1, 30, 16.0, mk::sliding, 1, st::bf16, 64, 133, 133, true},
        {1, 20, 2.0, mk::pcw, 4, st::f32, 64, 60, 133, false},
        {1, 100, 16.0, mk::causal, 8, st::f16, 128, 8, 260, false},
        // Self-Extend: G dividing w and not, G = 1 (plain RoPE), every mask.
        {2, 32, 4, mk::causal, 1, st::f32, 64, 150, 150, true},
        {2, 30, 7, mk::causal, 4, st::bf16, 128, 90, 201, false},
        {2, 16, 8, mk::full, 8, st::f32, 80, 37, 133, false},
        {2, 24, 3, mk::sliding, 4, st::f16, 64, 133, 133, false},
        {2, 20, 4, mk::sink_window, 1, st::f32, 128, 70, 133, true},
        {2, 16, 4, mk::pcw, 1, st::bf16, 64, 60, 133, false},
        {2, 40, 1, mk::causal, 4, st::f32, 64, 100, 100, false},
        {2, 32, 8, mk::causal, 8, st::f32, 128, 1, 300, true},  // decode
        {2, 48, 16, mk::causal, 4, st::f16, 128, 2, 260, false},
        // StreamingLLM (q/k rotated): its own mask (sinks + window); any other is an error.
        {3, 2, 20, mk::sink_window, 4, st::bf16, 64, 37, 133, false},
        {3, 4, 64, mk::sink_window, 1, st::f16, 128, 133, 133, false},
        {3, 4, 40, mk::sink_window, 4, st::f32, 64, 2, 200, true},
        {3, 4, 40, mk::sink_window, 1, st::f32, 64, 150, 150, true},
        {3, 2, 33, mk::sink_window, 1, st::f16, 80, 1, 150, false},
        {3, 4, 30, mk::sink_window, 1, st::f32, 80, 133, 133, false},
        {3, 3, 40, mk::sink_window, 4, st::bf16, 128, 200, 200, false},
        {3, 4, 40, mk::sink_window, 8, st::f16, 80, 70, 201, false},
        {3, 4, 40, mk::sink_window, 8, st::f32, 128, 1, 300, true},   // decode
        {3, 4, 40, mk::sink_window, 4, st::bf16, 128, 1, 300, true},  // decode, bf16 pairs
        {3, 4, 40, mk::causal, 4, st::f32, 64, 2, 200, true},         // decode: band chunks select
        {3, 2, 33, mk::full, 1, st::f16, 80, 1, 150, false},
        {3, 0, 25, mk::sink_window, 4, st::f32, 64, 3, 133, false},  // no sinks
        {3, 4, 30, mk::causal, 1, st::f32, 80, 133, 133, false},
        {3, 2, 20, mk::full, 4, st::bf16, 64, 37, 133, false},
        {3, 4, 64, mk::sliding, 1, st::f16, 128, 133, 133, false},
        {3, 4, 20, mk::pcw, 1, st::f32, 64, 60, 133, false},
    };
    unsigned seed = 1;
    for (const rule_case& c : cases) {
        ++seed;
        INFO(rule_name(c.rule) << "(" << c.a << ", " << c.b << ") mask " << int(c.mask) << " ratio "
                               << c.ratio << " storage " << int(c.kv) << " D " << c.D << " n_q "
                               << c.n_q << " n_kv " << c.n_kv);
        switch (c.kv) {
            case st::f32:
                run_with_storage<float>(c, seed);
                break;
            case st::bf16:
                run_with_storage<ropekit::bfloat16>(c, seed);
                break;
            default:
                run_with_storage<ropekit::half>(c, seed);
                break;
        }
    }
}

TEST_CASE("StreamingLLM equals attention over its literal cache, prefill longer than the cache",
          "[attention][rules][streaming]") {
    // Unrotated q/k; per query the StreamingLLM cache is the sinks plus the last `window`
    // tokens, rotated in double at their *cache slots* (sinks 0 .. n_sink - 1, the window right
    // after, the query last). The kernel instead gets q/k rotated at stream positions
    // (apply_rope, as an engine stores them) and the rule's mask.
    for (auto layout : {rope_layout::neox, rope_layout::gptj}) {
        const int D = 64;
        const std::int64_t n = 150, H = 4, KVH = 2;
        const ropekit::streaming_llm rule{4, 24};
        const auto freqs = make_freqs(D, D, layout);
        const auto table = ropekit::cos_sin_table::for_range(freqs, 0, n);
        std::mt19937 rng(7);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<float> q(std::size_t(n * H * D)), k(std::size_t(n * KVH * D)), v(k.size());
        for (auto& x : q) x = nd(rng);
        for (auto& x : k) x = nd(rng);
        for (auto& x : v) x = nd(rng);
        std::vector<float> qr = q, kr = k, o(q.size());
        ropekit::apply_rope(table, ropekit::packed_view(qr.data(), n, H, D),
                            ropekit::positions::contiguous(0));
        ropekit::apply_rope(table, ropekit::packed_view(kr.data(), n, KVH, D),
                            ropekit::positions::contiguous(0));
        const attention_params p = attention_params::for_model(freqs);
        ropekit::position_rule_attention(
            ropekit::packed_view(static_cast<const float*>(qr.data()), n, H, D),
            ropekit::packed_view(static_cast<const float*>(kr.data()), n, KVH, D),
            ropekit::packed_view(static_cast<const float*>(v.data()), n, KVH, D),
            ropekit::packed_view(o.data(), n, H, D), rule.mask(), p, rule, freqs, table);

        std::vector<double> ref(q.size());
        const std::int64_t ns = rule.n_sink, w = rule.window;
        for (std::int64_t i = 0; i < n; ++i) {
            // The cache after token i arrived: (stream index, cache slot) pairs.
            std::vector<std::pair<std::int64_t, std::int64_t>> cache;
            const std::int64_t first_recent = std::max<std::int64_t>(ns, i - w + 1);
            for (std::int64_t s = 0; s < std::min(ns, i + 1); ++s) cache.push_back({s, s});
            for (std::int64_t j = first_recent; j <= i; ++j)
                cache.push_back({j, std::int64_t(cache.size())});
            const std::int64_t q_slot = cache.back().second;
            for (std::int64_t h = 0; h < H; ++h) {
                const auto qd = rotate_d(q.data() + (i * H + h) * D, D, double(q_slot), freqs);
                std::vector<double> s;
                std::vector<const float*> vrows;
                for (const auto& e : cache) {
                    const auto kd = rotate_d(k.data() + (e.first * KVH + h / 2) * D, D,
                                             double(e.second), freqs);
                    double dot = 0;
                    for (int d = 0; d < D; ++d) dot += qd[d] * kd[d];
                    s.push_back(double(p.softmax_scale()) * dot);
                    vrows.push_back(v.data() + (e.first * KVH + h / 2) * D);
                }
                attend(s, vrows, D, ref.data() + (i * H + h) * D);
            }
        }
        const errors e = compare(o, ref);
        CHECK(e.max_rel <= 1e-5);
        CHECK(e.nmse <= 1e-10);
    }
}

TEST_CASE("Self-Extend equals the paper's relative-position matrix", "[attention][rules]") {
    // Jin et al. 2024: P[i][j] = i - j inside the neighbour window, else
    // floor(i/G) - floor(j/G) + w - floor(w/G); the score is (R_P q).k for unrotated q, k.
    const int D = 128;
    const std::int64_t n = 200, H = 8, KVH = 2;
    for (const ropekit::self_extend rule :
         {ropekit::self_extend{32, 4}, ropekit::self_extend{20, 6}}) {
        const auto freqs = make_freqs(D, D, rope_layout::neox);
        const auto table = ropekit::cos_sin_table::for_range(freqs, 0, n);
        std::mt19937 rng(11);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<float> q(std::size_t(n * H * D)), k(std::size_t(n * KVH * D)), v(k.size()),
            o(q.size());
        for (auto& x : q) x = nd(rng);
        for (auto& x : k) x = nd(rng);
        for (auto& x : v) x = nd(rng);
        const attention_params p = attention_params::for_model(freqs);
        ropekit::position_rule_attention(
            ropekit::packed_view(static_cast<const float*>(q.data()), n, H, D),
            ropekit::packed_view(static_cast<const float*>(k.data()), n, KVH, D),
            ropekit::packed_view(static_cast<const float*>(v.data()), n, KVH, D),
            ropekit::packed_view(o.data(), n, H, D), ropekit::causal_mask{}, p, rule, freqs, table);
        const std::int64_t w = rule.window, G = rule.group;
        std::vector<double> ref(q.size());
        for (std::int64_t i = 0; i < n; ++i)
            for (std::int64_t h = 0; h < H; ++h) {
                std::vector<double> s;
                std::vector<const float*> vrows;
                for (std::int64_t j = 0; j <= i; ++j) {
                    const std::int64_t rel = i - j < w ? i - j : i / G - j / G + w - w / G;
                    const auto qd = rotate_d(q.data() + (i * H + h) * D, D, double(rel), freqs);
                    const float* kr = k.data() + (j * KVH + h / 4) * D;
                    double dot = 0;
                    for (int d = 0; d < D; ++d) dot += qd[d] * double(kr[d]);
                    s.push_back(double(p.softmax_scale()) * dot);
                    vrows.push_back(v.data() + (j * KVH + h / 4) * D);
                }
                attend(s, vrows, D, ref.data() + (i * H + h) * D);
            }
        const errors e = compare(o, ref);
        CHECK(e.max_rel <= 1e-5);
        CHECK(e.nmse <= 1e-10);
    }
}

TEST_CASE("StreamingLLM: far q rows outside the table are computed, not read out of bounds",
          "[attention][rules][streaming]") {
    // The conjugate rows i - (n_sink + window - 1) may exceed the table: the kernel computes
    // them accurately, so a one-row table gives the same result as a full one.
    problem<float> pr(100, 100, 4, 2, 64, 3u);
    const auto freqs = make_freqs(64, 64, rope_layout::neox);
    const auto tiny = ropekit::cos_sin_table::for_range(freqs, 0, 1);
    const ropekit::streaming_llm rule{4, 20};
    attention_params p = attention_params::for_model(freqs);
    p.lse = pr.lse.data();
    ropekit::position_rule_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), rule.mask(), p, rule,
                                     freqs, tiny);
    std::vector<double> ro, rl;
    ropekit::position_rule_attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), rule.mask(), p, rule,
                                               freqs, ro, rl);
    const errors e = compare(pr.o, ro);
    CHECK(e.max_rel <= 1e-5);
    CHECK(e.nmse <= 1e-10);
    check_lse(pr.lse, rl);
}

TEST_CASE("position rules: bad input throws ropekit::error naming the field",
          "[attention][rules][errors]") {
    using ropekit_test::thrown_field;
    problem<float> pr(40, 40, 4, 2, 64, 5u);
    const auto freqs = make_freqs(64, 64, rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 40);
    const attention_params p = attention_params::for_model(freqs);
    const ropekit::causal_mask causal{};
    auto call = [&](const auto& rule, const ropekit::cos_sin_table& t, const attention_params& pp) {
        return thrown_field<ropekit::error>([&] {
            ropekit::position_rule_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), causal, pp,
                                             rule, freqs, t);
        });
    };
    CHECK(call(ropekit::self_extend{16, 4}, table, p) == "no error");
    CHECK(call(ropekit::self_extend{0, 4}, table, p) == "window");
    CHECK(call(ropekit::self_extend{16, 0}, table, p) == "group");
    CHECK(call(ropekit::self_extend{16, -2}, table, p) == "group");
    CHECK(call(ropekit::streaming_llm{-1, 16}, table, p) == "n_sink");
    CHECK(call(ropekit::streaming_llm{4, 0}, table, p) == "window");
    CHECK(call(ropekit::leaky_rerope{16, 0.5}, table, p) == "k");
    CHECK(call(ropekit::rerope{0}, table, p) == "window");
    // A table missing the near positions (rules with unrotated inputs).
    const auto short_table = ropekit::cos_sin_table::for_range(freqs, 0, 20);
    CHECK(call(ropekit::self_extend{16, 4}, short_table, p) == "position");
    CHECK(call(ropekit::streaming_llm{4, 16}, short_table, p) == "mask");  // causal: not its own
    CHECK(thrown_field<ropekit::error>([&] {
              const ropekit::streaming_llm sl{4, 16};
              ropekit::position_rule_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), sl.mask(), p,
                                               sl, freqs, short_table);
          }) == "no error");
    // The attention factor must be the frequencies'.
    const auto f12 = make_freqs(64, 64, rope_layout::neox, 1.2f);
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::position_rule_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), causal, p,
                                               ropekit::streaming_llm{4, 16}, f12,
                                               ropekit::cos_sin_table::for_range(f12, 0, 40));
          }) == "logit_scale");
    // A table of other frequencies.
    const auto other =
        ropekit::cos_sin_table::for_range(make_freqs(64, 32, rope_layout::neox), 0, 40);
    CHECK(call(ropekit::streaming_llm{4, 16}, other, p) == "table");

    // Self-Extend's far rows: positions 1000 .. 1039 and a table for exactly those positions.
    // Far keys sit at rows floor(j / 4) = 250 .., far queries at floor(i / 4) + 12: not in it.
    const auto shifted = ropekit::cos_sin_table::for_range(freqs, 1000, 40);
    attention_params ps = p;
    ps.q_positions = ropekit::positions::contiguous(1000);
    ps.k_positions = ropekit::positions::contiguous(1000);
    CHECK(call(ropekit::self_extend{16, 4}, shifted, ps) == "table");
    CHECK(call(ropekit::self_extend{64, 4}, shifted, ps) == "no error");  // no far pair
    CHECK(call(ropekit::rerope{16}, shifted, ps) == "no error");
    // The rows the far pairs need, and no more: a table of 0 .. 1039 suffices.
    const auto from0 = ropekit::cos_sin_table::for_range(freqs, 0, 1040);
    CHECK(call(ropekit::self_extend{16, 4}, from0, ps) == "no error");

    // Hot path: a table missing positions is a ROPEKIT_ASSERT (an exception in the tests).
    auto ws = std::make_unique<ropekit::attention_workspace>();
    CHECK_THROWS_AS(ropekit::position_rule_attention_blocked(
                        ropekit::default_arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), causal, p,
                        ropekit::self_extend{16, 4}, freqs, short_table, head_range{0, 4},
                        query_range{0, 40}, key_range{0, 40}, *ws),
                    ropekit_test::assert_failure);
}
