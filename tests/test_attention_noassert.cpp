// SPDX-License-Identifier: Apache-2.0
// The hot entry points with ROPEKIT_ASSERT compiled out (as under NDEBUG): a broken precondition
// must write nothing and read nothing out of bounds. (The other tests turn the asserts into
// exceptions, so they never reach these guards.)
#define ROPEKIT_ASSERT(cond, msg) ((void)0)

#include <ropekit/attention.hpp>

#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "catch.hpp"

namespace {

using ropekit::attention_params;
using ropekit::head_range;
using ropekit::key_range;
using ropekit::query_range;

/// Q, K, V with one value everywhere and O / LSE filled with a sentinel.
struct tensors {
    std::int64_t n_q, n_kv;
    int heads, kv_heads, D;
    std::vector<float> q, k, v, o, lse;
    tensors(std::int64_t nq, std::int64_t nkv, int h, int kvh, int d)
        : n_q(nq), n_kv(nkv), heads(h), kv_heads(kvh), D(d) {
        q.assign(std::size_t(nq * h * d), 0.5f);
        k.assign(std::size_t(nkv * kvh * d), 0.25f);
        v.assign(k.size(), 1.0f);
        o.assign(q.size(), 7.0f);
        lse.assign(std::size_t(nq * h), 7.0f);
    }
    ropekit::head_view<const float> qv() const {
        return ropekit::packed_view(q.data(), n_q, heads, D);
    }
    ropekit::head_view<const float> kv(const std::vector<float>& x) const {
        return ropekit::packed_view(x.data(), n_kv, kv_heads, D);
    }
    ropekit::head_view<float> ov() { return ropekit::packed_view(o.data(), n_q, heads, D); }
    bool untouched() const {
        for (float x : o)
            if (x != 7.0f) return false;
        for (float x : lse)
            if (x != 7.0f) return false;
        return true;
    }
};

}  // namespace

TEST_CASE("asserts off: merge_attention with a partial shorter than the range writes nothing",
          "[attention][merge]") {
    // An 8-row destination and a 4-row partial view (heap-buffer-overflow before). The partial's
    // storage has 8 rows of finite values, so a merge that ignored the view's extent would
    // change the destination instead of crashing.
    const int H = 4, D = 64;
    std::vector<float> oa(8 * H * D, 3.0f), la(8 * H, 0.0f);
    std::vector<float> ob(8 * H * D, 1.0f), lb(8 * H, 0.0f);
    const std::vector<float> oa0 = oa, la0 = la;
    ropekit::merge_attention(ropekit::packed_view(oa.data(), 8, H, D), la.data(),
                             ropekit::packed_view<const float>(ob.data(), 4, H, D), lb.data(),
                             head_range{0, H}, query_range{0, 8});
    CHECK(oa == oa0);
    CHECK(la == la0);
    // Heads beyond the views, a negative begin, mismatched head_dim, null LSE: nothing either.
    ropekit::merge_attention(ropekit::packed_view(oa.data(), 8, H, D), la.data(),
                             ropekit::packed_view<const float>(ob.data(), 8, H, D), lb.data(),
                             head_range{0, H + 1}, query_range{0, 8});
    ropekit::merge_attention(ropekit::packed_view(oa.data(), 8, H, D), la.data(),
                             ropekit::packed_view<const float>(ob.data(), 8, H, D), lb.data(),
                             head_range{-1, H}, query_range{0, 8});
    ropekit::merge_attention(ropekit::packed_view(oa.data(), 8, H, D), la.data(),
                             ropekit::packed_view<const float>(ob.data(), 8, H, D / 2), lb.data(),
                             head_range{0, H}, query_range{0, 8});
    ropekit::merge_attention(ropekit::packed_view(oa.data(), 8, H, D), la.data(),
                             ropekit::packed_view<const float>(ob.data(), 8, H, D), nullptr,
                             head_range{0, H}, query_range{0, 8});
    CHECK(oa == oa0);
    CHECK(la == la0);
    // The consistent call does merge.
    ropekit::merge_attention(ropekit::packed_view(oa.data(), 8, H, D), la.data(),
                             ropekit::packed_view<const float>(ob.data(), 8, H, D), lb.data(),
                             head_range{0, H}, query_range{0, 8});
    CHECK(oa[0] == 2.0f);
}

TEST_CASE("asserts off: attention_blocked with bad shapes or ranges writes nothing",
          "[attention]") {
    auto ws = std::make_unique<ropekit::attention_workspace>();
    const attention_params p = attention_params::with_softmax_scale(0.125);
    tensors t(6, 40, 4, 2, 64);
    const auto run = [&](ropekit::head_view<const float> q, ropekit::head_view<float> o,
                         head_range h, query_range qr, key_range kr) {
        ropekit::attention_params pp = p;
        pp.lse = t.lse.data();
        ropekit::attention_blocked(ropekit::default_arch{}, q, t.kv(t.k), t.kv(t.v), o,
                                   ropekit::causal_mask{}, pp, h, qr, kr, *ws);
    };
    run(t.qv(), t.ov(), head_range{0, 5}, query_range{0, 6}, key_range{0, 40});
    run(t.qv(), t.ov(), head_range{0, 4}, query_range{0, 7}, key_range{0, 40});
    run(t.qv(), t.ov(), head_range{0, 4}, query_range{0, 6}, key_range{0, 41});
    run(t.qv(), t.ov(), head_range{0, 4}, query_range{-1, 6}, key_range{0, 40});
    run(t.qv(), t.ov(), head_range{0, 4}, query_range{4, 2}, key_range{0, 40});
    auto q0 = t.qv();
    q0.heads = 0;  // n_heads / n_kv_heads = 0: a division by zero before
    auto o0 = t.ov();
    o0.heads = 0;
    run(q0, o0, head_range{0, 0}, query_range{0, 6}, key_range{0, 40});
    auto on = t.ov();
    on.data = nullptr;
    run(t.qv(), on, head_range{0, 4}, query_range{0, 6}, key_range{0, 40});
    // Positions the kernel cannot read: null ids, table_rows().
    ropekit::attention_params bad = p;
    bad.lse = t.lse.data();
    bad.k_positions = ropekit::positions::ids(static_cast<const std::int32_t*>(nullptr));
    ropekit::attention_blocked(ropekit::default_arch{}, t.qv(), t.kv(t.k), t.kv(t.v), t.ov(),
                               ropekit::causal_mask{}, bad, head_range{0, 4}, query_range{0, 6},
                               key_range{0, 40}, *ws);
    bad.k_positions.reset();
    bad.q_positions = ropekit::positions::table_rows();
    ropekit::attention_blocked(ropekit::default_arch{}, t.qv(), t.kv(t.k), t.kv(t.v), t.ov(),
                               ropekit::causal_mask{}, bad, head_range{0, 4}, query_range{0, 6},
                               key_range{0, 40}, *ws);
    CHECK(t.untouched());
    run(t.qv(), t.ov(), head_range{0, 4}, query_range{0, 6}, key_range{0, 40});
    CHECK(t.o[0] == 1.0f);  // V is 1 everywhere
}

TEST_CASE("asserts off: rerope_attention_blocked without the table rows writes nothing",
          "[attention][rerope]") {
    auto ws = std::make_unique<ropekit::attention_workspace>();
    tensors t(6, 40, 4, 2, 64);
    ropekit::rope_frequencies f;
    f.head_dim = f.rotary_dim = 64;
    for (int i = 0; i < 32; ++i) f.inv_freq.push_back(1.0f / float(1 + i));
    f.attention_factor = 1.5f;
    const auto short_table = ropekit::cos_sin_table::for_range(f, 0, 20);
    const auto table = ropekit::cos_sin_table::for_range(f, 0, 40);
    attention_params p = attention_params::for_model(f);
    p.lse = t.lse.data();
    ropekit::rerope_attention_blocked(ropekit::default_arch{}, t.qv(), t.kv(t.k), t.kv(t.v), t.ov(),
                                      ropekit::causal_mask{}, p, ropekit::rerope{8}, f, short_table,
                                      head_range{0, 4}, query_range{0, 6}, key_range{0, 40}, *ws);
    // Params without the frequencies' attention factor.
    attention_params plain = attention_params::with_softmax_scale(0.125);
    plain.lse = t.lse.data();
    ropekit::rerope_attention_blocked(ropekit::default_arch{}, t.qv(), t.kv(t.k), t.kv(t.v), t.ov(),
                                      ropekit::causal_mask{}, plain, ropekit::rerope{8}, f, table,
                                      head_range{0, 4}, query_range{0, 6}, key_range{0, 40}, *ws);
    CHECK(t.untouched());
}
