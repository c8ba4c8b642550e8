// SPDX-License-Identifier: Apache-2.0
// The attention extras of the 2025-26 families against the naive double reference: Gemma 2's
// logit soft-cap (and the SIMD tanh behind it), Llama 4's chunked local attention and NoPE
// temperature tuning, MLA's head sizes (q / k 192 with v 128 in prefill, 576 / 512 in the
// absorbed decode with v a view of k's first 512 channels), split keys merged by LSE, and the
// named errors. Built once per ISA variant.
#include "test_support.hpp"

#include "attention_checks.hpp"

#include <ropekit/attention.hpp>
#include <ropekit/attention_reference.hpp>
#include <ropekit/sink_cache.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
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

/// Random Q (n_q x heads x dk), K (n_kv x kv_heads x dk), V (n_kv x kv_heads x dv) in storage
/// KV. With `alias_v`, V is the first dv channels of K (absorbed MLA's latent cache).
template <class KV>
struct problem {
    std::int64_t n_q, n_kv;
    int heads, kv_heads, dk, dv;
    bool alias_v;
    std::vector<float> q, o, lse;
    std::vector<KV> k, v;

    problem(std::int64_t nq, std::int64_t nkv, int h, int kvh, int dk_, int dv_, unsigned seed,
            float q_scale, bool alias = false)
        : n_q(nq), n_kv(nkv), heads(h), kv_heads(kvh), dk(dk_), dv(dv_), alias_v(alias) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        q.resize(std::size_t(nq * h * dk));
        for (auto& x : q) x = nd(rng) * q_scale;
        k.resize(std::size_t(nkv * kvh * dk));
        for (auto& x : k) x = ropekit::from_float<KV>(nd(rng));
        if (!alias) {
            v.resize(std::size_t(nkv * kvh * dv));
            for (auto& x : v) x = ropekit::from_float<KV>(nd(rng));
        }
        o.assign(std::size_t(nq * h * dv), std::numeric_limits<float>::quiet_NaN());
        lse.assign(std::size_t(nq * h), std::numeric_limits<float>::quiet_NaN());
    }
    head_view<const float> qv() const { return ropekit::packed_view(q.data(), n_q, heads, dk); }
    head_view<const KV> kv_k() const { return ropekit::packed_view(k.data(), n_kv, kv_heads, dk); }
    head_view<const KV> kv_v() const {
        if (alias_v)  // row (j, h) of V starts where row (j, h) of K does
            return {k.data(), n_kv, kv_heads, dv, std::ptrdiff_t(kv_heads) * dk, dk};
        return ropekit::packed_view(v.data(), n_kv, kv_heads, dv);
    }
    head_view<float> ov() { return ropekit::packed_view(o.data(), n_q, heads, dv); }
};

/// attention() against attention_reference() on the same stored K/V, with LSE.
template <class KV, class Mask>
void check_case(const Mask& mask, int ratio, int dk, int dv, std::int64_t n_q, std::int64_t n_kv,
                float softcap, bool sinks, bool alias = false, int kv_heads = 2) {
    const int heads = kv_heads * ratio;
    problem<KV> pr(n_q, n_kv, heads, kv_heads, dk, dv, unsigned(dk * 31 + dv + ratio * 7 + n_q),
                   softcap > 0 ? 4.0f : 1.0f, alias);
    std::vector<float> sink(static_cast<std::size_t>(heads));
    for (int h = 0; h < heads; ++h) sink[h] = 0.5f * float(h % 5) - 1.0f;
    attention_params p = attention_params::with_softmax_scale(1.0 / std::sqrt(double(dk)));
    p.logit_softcap = softcap;
    p.sink_logits = sinks ? sink.data() : nullptr;
    p.lse = pr.lse.data();
    ropekit::attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, p);
    std::vector<double> ro, rl;
    ropekit::attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), mask, p, ro, rl);
    const errors e = compare(pr.o, ro);
    CHECK(e.max_rel <= 1e-5);
    CHECK(e.nmse <= 1e-10);
    check_lse(pr.lse, rl);
}

/// Split keys: parts over split_keys merged with merge_attention (sinks only in the merge)
/// against the whole problem's reference.
template <class KV, class Mask>
void check_split(const Mask& mask, int ratio, int dk, int dv, std::int64_t n_q, std::int64_t n_kv,
                 float softcap, int parts, bool alias, int kv_heads) {
    const int heads = kv_heads * ratio;
    problem<KV> pr(n_q, n_kv, heads, kv_heads, dk, dv, unsigned(dk + 3 * dv + ratio + parts),
                   softcap > 0 ? 4.0f : 1.0f, alias);
    std::vector<float> sink(static_cast<std::size_t>(heads));
    for (int h = 0; h < heads; ++h) sink[h] = 0.25f * float(h % 3);
    attention_params p = attention_params::with_softmax_scale(1.0 / std::sqrt(double(dk)));
    p.logit_softcap = softcap;
    auto ws = std::make_unique<ropekit::attention_workspace>();
    std::vector<float> po(pr.o.size()), pl(pr.lse.size());
    for (int part = 0; part < parts; ++part) {
        attention_params pp = p;
        pp.lse = part == 0 ? pr.lse.data() : pl.data();
        const head_view<float> out =
            part == 0 ? pr.ov() : ropekit::packed_view(po.data(), n_q, heads, dv);
        ropekit::attention_blocked(arch{}, pr.qv(), pr.kv_k(), pr.kv_v(), out, mask, pp,
                                   head_range{0, heads}, query_range{0, n_q},
                                   ropekit::split_keys(n_kv, parts, part), *ws);
        if (part > 0)
            ropekit::merge_attention(
                pr.ov(), pr.lse.data(),
                ropekit::packed_view(static_cast<const float*>(po.data()), n_q, heads, dv),
                pl.data(), head_range{0, heads}, query_range{0, n_q},
                part == parts - 1 ? sink.data() : nullptr);
    }
    attention_params pr_p = p;
    pr_p.sink_logits = sink.data();
    std::vector<double> ro, rl;
    ropekit::attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), mask, pr_p, ro, rl);
    const errors e = compare(pr.o, ro);
    CHECK(e.max_rel <= 1e-5);
    CHECK(e.nmse <= 1e-10);
    check_lse(pr.lse, rl);
}

/// float-rounded ulp distance of `got` from the double `truth`.
double ulps(float got, double truth) {
    const float t = float(truth);
    if (t == 0.0f) return got == 0.0f ? 0.0 : std::abs(double(got)) / 1e-45;
    const double ulp = std::ldexp(1.0, std::ilogb(t) - 23);
    return std::abs(double(got) - truth) / ulp;
}

}  // namespace

TEST_CASE("attention families: SIMD tanh against std::tanh, ends and NaN", "[attention][softcap]") {
    using Ops = ropekit::detail::attn::vec_ops<arch>;
    constexpr int W = Ops::width;
    std::vector<float> xs;
    for (int i = -400000; i <= 400000; ++i) xs.push_back(float(i) * 5e-5f);  // [-20, 20]
    for (float x :
         {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-7f, 0.6249999f, 0.625f, 8.9f, 9.1f, 50.0f, -50.0f, 1e30f,
          -1e30f, std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::infinity()})
        xs.push_back(x);
    while (xs.size() % W) xs.push_back(0.5f);
    alignas(64) float in[W], out[W];
    double worst = 0;
    for (std::size_t i = 0; i < xs.size(); i += W) {
        for (int l = 0; l < W; ++l) in[l] = xs[i + l];
        Ops::store(out, Ops::tanh(Ops::load(in)));
        for (int l = 0; l < W; ++l) {
            const double truth = std::tanh(double(in[l]));
            worst = std::max(worst, ulps(out[l], truth));
            if (std::abs(in[l]) >= 9.1f) REQUIRE(out[l] == (in[l] > 0 ? 1.0f : -1.0f));
        }
    }
    CHECK(worst <= 3.0);
    in[0] = std::numeric_limits<float>::quiet_NaN();
    for (int l = 1; l < W; ++l) in[l] = -std::numeric_limits<float>::quiet_NaN();
    Ops::store(out, Ops::tanh(Ops::load(in)));
    for (int l = 0; l < W; ++l) CHECK(std::isnan(out[l]));
}

TEMPLATE_TEST_CASE("attention families: soft-capped prefill and decode vs the reference",
                   "[attention][softcap]", float, ropekit::bfloat16, ropekit::half) {
    using KV = TestType;
    for (int D : {64, 80, 128}) {
        for (int ratio : {1, 4, 8}) {
            DYNAMIC_SECTION("D=" << D << " ratio=" << ratio) {
                check_case<KV>(ropekit::causal_mask{}, ratio, D, D, 70, 133, 5.0f, false);
                check_case<KV>(ropekit::causal_mask{}, ratio, D, D, 70, 133, 2.5f, true);
                check_case<KV>(ropekit::sink_window_mask{4, 30}, ratio, D, D, 70, 133, 5.0f, false);
                check_case<KV>(ropekit::causal_mask{}, ratio, D, D, 1, 133, 5.0f, true);  // decode
                check_case<KV>(ropekit::causal_mask{}, ratio, D, D, 2, 133, 3.0f, false);
                check_split<KV>(ropekit::causal_mask{}, ratio, D, D, 1, 300, 5.0f, 3, false, 2);
            }
        }
    }
}

TEMPLATE_TEST_CASE("attention families: chunked local attention vs the reference",
                   "[attention][chunked]", float, ropekit::bfloat16, ropekit::half) {
    using KV = TestType;
    for (std::int64_t C : {1, 7, 50, 64, 100}) {
        for (int ratio : {1, 4, 8}) {
            DYNAMIC_SECTION("C=" << C << " ratio=" << ratio) {
                const ropekit::chunked_mask m{C};
                check_case<KV>(m, ratio, 64, 64, 133, 133, 0.0f, false);  // prefill
                check_case<KV>(m, ratio, 80, 80, 70, 203, 0.0f, true);    // suffix
                check_case<KV>(m, ratio, 64, 64, 1, 203, 0.0f, false);    // decode
                check_case<KV>(m, ratio, 64, 64, 3, 203, 4.0f, false);    // + soft-cap
            }
        }
    }
}

TEST_CASE("attention families: chunked mask tiles and key ranges are conservative",
          "[attention][chunked]") {
    // Every (query block, key tile) of a small grid: `none` hides every pair, `all` shows
    // every one, and the key ranges contain every visible key; the ranges start at the chunk.
    for (std::int64_t C : {1, 3, 8, 13}) {
        const ropekit::chunked_mask m{C};
        for (std::int64_t q0 = 0; q0 < 40; q0 += 3)
            for (std::int64_t nq : {1, 4, 9})
                for (std::int64_t k0 = 0; k0 < 40; k0 += 2)
                    for (std::int64_t nk : {1, 5, 16}) {
                        const std::int64_t q1 = q0 + nq - 1, k1 = k0 + nk - 1;
                        const ropekit::block_bounds b{q0, q1, q0, q1, k0, k1, k0, k1};
                        bool any = false, every = true;
                        for (std::int64_t i = q0; i <= q1; ++i)
                            for (std::int64_t j = k0; j <= k1; ++j) {
                                const bool vis = m.visible(i, i, j, j);
                                any = any || vis;
                                every = every && vis;
                            }
                        const ropekit::tile_visibility t = m.classify(b);
                        if (t == ropekit::tile_visibility::none) REQUIRE_FALSE(any);
                        if (t == ropekit::tile_visibility::all) REQUIRE(every);
                        ropekit::index_range r[2];
                        REQUIRE(m.key_ranges(b, r) == 1);
                        REQUIRE(r[0].begin == q0 / C * C);
                        for (std::int64_t i = q0; i <= q1; ++i)
                            for (std::int64_t j = 0; j < 60; ++j)
                                if (m.visible(i, i, j, j))
                                    REQUIRE((j >= r[0].begin && j < r[0].end));
                    }
        // Negative positions chunk by floor division.
        CHECK(m.chunk(-1) == -1);
        CHECK(m.chunk(-C) == -1);
        CHECK(m.chunk(-C - 1) == -2);
    }
}

TEMPLATE_TEST_CASE("attention families: MLA head sizes (192/128 prefill, 576/512 decode)",
                   "[attention][mla]", float, ropekit::bfloat16, ropekit::half) {
    using KV = TestType;
    for (int ratio : {1, 4, 8}) {
        DYNAMIC_SECTION("prefill 192/128 ratio=" << ratio) {
            check_case<KV>(ropekit::causal_mask{}, ratio, 192, 128, 133, 133, 0.0f, false);
            check_case<KV>(ropekit::causal_mask{}, ratio, 192, 128, 37, 133, 0.0f, true);
            check_case<KV>(ropekit::sliding_window_mask{50}, ratio, 192, 128, 70, 133, 0.0f, false);
            check_case<KV>(ropekit::causal_mask{}, ratio, 192, 128, 2, 133, 0.0f, false);
        }
    }
    // Absorbed MLA decode: one latent K/V head shared by all q heads, V aliasing K.
    for (int heads : {1, 2, 8, 16}) {
        DYNAMIC_SECTION("decode 576/512 heads=" << heads) {
            check_case<KV>(ropekit::causal_mask{}, heads, 576, 512, 1, 300, 0.0f, false, true, 1);
            check_case<KV>(ropekit::causal_mask{}, heads, 576, 512, 2, 300, 0.0f, true, true, 1);
            check_case<KV>(ropekit::causal_mask{}, heads, 576, 512, 1, 300, 0.0f, false, false, 1);
            check_split<KV>(ropekit::causal_mask{}, heads, 576, 512, 1, 700, 0.0f, 3, true, 1);
        }
    }
    DYNAMIC_SECTION("576/512 prefill block") {
        check_case<KV>(ropekit::causal_mask{}, 4, 576, 512, 40, 100, 0.0f, false, true, 1);
    }
}

TEST_CASE("attention families: temperature tuning scales q rows by the float formula",
          "[attention][temperature]") {
    const ropekit::attention_temperature temp{4.0, 0.1};
    const std::int64_t n = 37;
    const int H = 3, D = 21;  // odd head_dim: the vector tail
    std::vector<float> q(std::size_t(n * H * D)), orig;
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    for (auto& x : q) x = nd(rng);
    orig = q;
    const std::vector<std::int64_t> ids = [&] {
        std::vector<std::int64_t> v;
        for (std::int64_t t = 0; t < n; ++t) v.push_back(t * t * 997);
        return v;
    }();
    for (int pass = 0; pass < 2; ++pass) {
        q = orig;
        const ropekit::positions pos =
            pass == 0 ? ropekit::positions::contiguous(5) : ropekit::positions::ids(ids.data());
        ropekit::apply_attention_temperature(ropekit::packed_view(q.data(), n, H, D), pos, temp);
        for (std::int64_t t = 0; t < n; ++t) {
            const std::int64_t p = pass == 0 ? 5 + t : ids[std::size_t(t)];
            // HF: floor((p + 1) / floor_scale), log1p-free, float32 throughout.
            const float steps = std::floor((float(p) + 1.0f) / 4.0f);
            const float f = std::log(steps + 1.0f) * 0.1f + 1.0f;
            for (int i = 0; i < H * D; ++i)
                REQUIRE(q[std::size_t(t * H * D + i)] == orig[std::size_t(t * H * D + i)] * f);
        }
    }
    // Llama 4's defaults: exactly 1 below floor_scale - 1, log(2) * 0.1 + 1 at 8191.
    const ropekit::attention_temperature llama4{};
    CHECK(llama4.scale_at(0) == 1.0f);
    CHECK(llama4.scale_at(8190) == 1.0f);
    CHECK(llama4.scale_at(8191) == std::log(2.0f) * 0.1f + 1.0f);
    // A token range leaves the other rows alone.
    q = orig;
    ropekit::attention_temperature_blocked(arch{}, ropekit::packed_view(q.data(), n, H, D),
                                           ropekit::positions::contiguous(100), temp,
                                           query_range{3, 5});
    for (std::int64_t t = 0; t < n; ++t)
        for (int i = 0; i < H * D; ++i) {
            const float f = t >= 3 && t < 5 ? temp.scale_at(100 + t) : 1.0f;
            REQUIRE(q[std::size_t(t * H * D + i)] == orig[std::size_t(t * H * D + i)] * f);
        }
}

TEST_CASE("attention families: named errors", "[attention][errors]") {
    std::vector<float> q(2 * 4 * 576, 0.5f), k(3 * 2 * 576, 0.5f), v(3 * 2 * 576, 0.5f),
        o(2 * 4 * 576);
    auto qv = [&](int d) {
        return ropekit::packed_view(static_cast<const float*>(q.data()), 2, 4, d);
    };
    auto kv = [&](const std::vector<float>& x, int d) {
        return ropekit::packed_view(static_cast<const float*>(x.data()), 3, 2, d);
    };
    auto ov = [&](int d) { return ropekit::packed_view(o.data(), 2, 4, d); };
    const attention_params p = attention_params::with_softmax_scale(0.1);
    const ropekit::causal_mask c{};
    CHECK_NOTHROW(ropekit::attention(qv(576), kv(k, 576), kv(v, 512), ov(512), c, p));
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::attention(qv(577), kv(k, 577), kv(v, 64), ov(64), c, p);
          }) == "head_dim");
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::attention(qv(64), kv(k, 32), kv(v, 64), ov(64), c, p);
          }) == "k.head_dim");
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::attention(qv(64), kv(k, 64), kv(v, 577), ov(577), c, p);
          }) == "v.head_dim");
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::attention(qv(64), kv(k, 64), kv(v, 32), ov(64), c, p);
          }) == "o.head_dim");
    for (float bad :
         {-1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        attention_params pb = p;
        pb.logit_softcap = bad;
        CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
                  ropekit::attention(qv(64), kv(k, 64), kv(v, 64), ov(64), c, pb);
              }) == "logit_softcap");
    }
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::attention(qv(64), kv(k, 64), kv(v, 64), ov(64), ropekit::chunked_mask{0}, p);
          }) == "attention_chunk_size");
    // for_model(freqs): the head_dim check is against q / k's head size.
    const ropekit::rope_frequencies f192 =
        ropekit_test::make_freqs(192, 64, ropekit::rope_layout::neox);
    CHECK_NOTHROW(ropekit::attention(qv(192), kv(k, 192), kv(v, 128), ov(128), c,
                                     attention_params::for_model(f192)));
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::attention(qv(128), kv(k, 128), kv(v, 192), ov(192), c,
                                 attention_params::for_model(f192));
          }) == "head_dim");

    // Position rules: equal head sizes, ordinary geometry.
    const ropekit::rope_frequencies f =
        ropekit_test::make_freqs(64, 64, ropekit::rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(f, 0, 8);
    const attention_params pf = attention_params::for_model(f);
    CHECK_NOTHROW(ropekit::position_rule_attention(qv(64), kv(k, 64), kv(v, 64), ov(64), c, pf,
                                                   ropekit::rerope{2}, f, table));
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::position_rule_attention(qv(64), kv(k, 64), kv(v, 32), ov(32), c, pf,
                                               ropekit::rerope{2}, f, table);
          }) == "v.head_dim");
    ropekit::rope_frequencies fo = ropekit_test::make_freqs(64, 32, ropekit::rope_layout::neox);
    fo.rotary_offset = 32;
    const auto to = ropekit::cos_sin_table::for_range(fo, 0, 8);
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::position_rule_attention(qv(64), kv(k, 64), kv(v, 64), ov(64), c,
                                               attention_params::for_model(fo), ropekit::rerope{2},
                                               fo, to);
          }) == "rotary_offset");
    ropekit::rope_frequencies fs = ropekit_test::make_freqs(64, 32, ropekit::rope_layout::neox);
    fs.pair_span = 32;
    const auto ts = ropekit::cos_sin_table::for_range(fs, 0, 8);
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::position_rule_attention(qv(64), kv(k, 64), kv(v, 64), ov(64), c,
                                               attention_params::for_model(fs), ropekit::rerope{2},
                                               fs, ts);
          }) == "pair_span");
    ropekit::sink_cache_options sc;
    sc.n_kv_heads = 2;
    sc.head_dim = 64;
    CHECK_NOTHROW(ropekit::sink_cache<float>(f, sc));
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] { ropekit::sink_cache<float>(fo, sc); }) ==
          "rotary_offset");
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] { ropekit::sink_cache<float>(fs, sc); }) ==
          "pair_span");

    // Temperature tuning.
    std::vector<float> qt(4 * 2 * 8, 1.0f);
    const auto qtv = ropekit::packed_view(qt.data(), 4, 2, 8);
    const std::int64_t neg[] = {0, 1, -2, 3};
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::apply_attention_temperature(qtv, ropekit::positions::ids(neg),
                                                   ropekit::attention_temperature{});
          }) == "positions");
    CHECK(ropekit_test::thrown_field<ropekit::error>([&] {
              ropekit::apply_attention_temperature(qtv, ropekit::positions::contiguous(0),
                                                   ropekit::attention_temperature{0.5, 0.1});
          }) == "floor_scale");
}
