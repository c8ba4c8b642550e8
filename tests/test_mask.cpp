// SPDX-License-Identifier: Apache-2.0
// Mask policies: the tile classification is conservative (never `none` with a visible pair, never
// `all` with a hidden one) and the key ranges contain every visible key, checked exhaustively on
// small grids; the sinks + window ranges have a size independent of the sequence length.
#include "test_support.hpp"

#include <ropekit/mask.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace {

using ropekit::block_bounds;
using ropekit::index_range;
using ropekit::tile_visibility;

/// Checks classify() and key_ranges() of `m` against visible() for every query block and key
/// tile of the given sizes over a sequence of n tokens (positions == indices, queries are the
/// last n_q tokens).
template <class Mask>
void check_policy(const Mask& m, std::int64_t n, std::int64_t n_q, std::int64_t br,
                  std::int64_t bc) {
    const std::int64_t off = n - n_q;
    for (std::int64_t t0 = 0; t0 < n_q; t0 += br) {
        const std::int64_t t1 = std::min(n_q, t0 + br);
        block_bounds qb{};
        qb.q_pos_min = qb.q_index_min = off + t0;
        qb.q_pos_max = qb.q_index_max = off + t1 - 1;
        index_range ranges[2];
        const int nr = m.key_ranges(qb, ranges);
        for (std::int64_t j = 0; j < n; ++j) {
            bool any = false;
            for (std::int64_t t = t0; t < t1; ++t) any = any || m.visible(off + t, off + t, j, j);
            if (!any) continue;
            bool inside = false;
            for (int r = 0; r < nr; ++r)
                inside = inside || (j >= ranges[r].begin && j < ranges[r].end);
            INFO("block " << t0 << " key " << j);
            REQUIRE(inside);
        }
        for (std::int64_t c0 = 0; c0 < n; c0 += bc) {
            const std::int64_t c1 = std::min(n, c0 + bc);
            block_bounds b = qb;
            b.k_pos_min = b.k_index_min = c0;
            b.k_pos_max = b.k_index_max = c1 - 1;
            std::int64_t vis = 0;
            for (std::int64_t t = t0; t < t1; ++t)
                for (std::int64_t j = c0; j < c1; ++j) vis += m.visible(off + t, off + t, j, j);
            const tile_visibility cls = m.classify(b);
            INFO("block " << t0 << " tile " << c0 << " visible " << vis);
            if (cls == tile_visibility::none) REQUIRE(vis == 0);
            if (cls == tile_visibility::all) REQUIRE(vis == (t1 - t0) * (c1 - c0));
        }
    }
}

}  // namespace

TEST_CASE("mask classification is conservative and key ranges cover the visible keys", "[mask]") {
    const std::int64_t ends[] = {13, 29, 30};
    for (std::int64_t br : {1, 7, 16}) {
        for (std::int64_t bc : {1, 5, 16}) {
            DYNAMIC_SECTION("br " << br << " bc " << bc) {
                check_policy(ropekit::full_mask{}, 70, 31, br, bc);
                check_policy(ropekit::causal_mask{}, 70, 70, br, bc);
                check_policy(ropekit::causal_mask{}, 70, 9, br, bc);
                for (std::int64_t w : {1, 2, 9, 100})
                    check_policy(ropekit::sliding_window_mask{w}, 70, 40, br, bc);
                for (std::int64_t s : {0, 1, 4, 20})
                    for (std::int64_t w : {1, 3, 10})
                        check_policy(ropekit::sink_window_mask{s, w}, 70, 70, br, bc);
                check_policy(ropekit::parallel_context_mask{ends, 3}, 70, 70, br, bc);
                check_policy(ropekit::parallel_context_mask{ends, 0}, 40, 11, br, bc);
            }
        }
    }
}

TEST_CASE("visible sets as documented", "[mask]") {
    const ropekit::sink_window_mask sw{4, 10};
    CHECK(sw.visible(100, 100, 3, 3));  // sink
    CHECK_FALSE(sw.visible(100, 100, 4, 4));
    CHECK(sw.visible(100, 100, 91, 91));  // distance 9 = W - 1
    CHECK_FALSE(sw.visible(100, 100, 90, 90));
    CHECK_FALSE(sw.visible(2, 2, 3, 3));  // sinks stay causal
    const std::int64_t ends[] = {10, 20};
    const ropekit::parallel_context_mask pcw{ends, 2};
    CHECK(pcw.visible(0, 15, 0, 12));       // same window
    CHECK_FALSE(pcw.visible(0, 15, 0, 5));  // other window
    CHECK(pcw.visible(0, 25, 0, 5));        // task token sees every window
    CHECK(pcw.visible(0, 25, 0, 21));
    CHECK_FALSE(pcw.visible(0, 25, 0, 26));  // causal by index
    CHECK(pcw.segment(9) == 0);
    CHECK(pcw.segment(10) == 1);
    CHECK(pcw.segment(20) == 2);
    const std::int64_t bad[] = {10, 10};
    CHECK_THROWS_AS((ropekit::parallel_context_mask{bad, 2}.validate()), ropekit::error);
    CHECK_THROWS_AS((ropekit::sink_window_mask{-1, 4}.validate()), ropekit::error);
}

TEST_CASE("sinks + window key ranges do not grow with the sequence", "[mask]") {
    const ropekit::sink_window_mask m{4, 1020};
    for (std::int64_t n : {4096, 32768, 1 << 20}) {
        block_bounds qb{};
        qb.q_pos_min = qb.q_index_min = n - 64;
        qb.q_pos_max = qb.q_index_max = n - 1;
        index_range r[2];
        const int nr = m.key_ranges(qb, r);
        std::int64_t keys = 0;
        for (int i = 0; i < nr; ++i) keys += r[i].size();
        CHECK(keys == 4 + 1020 + 63);
    }
}

TEST_CASE("mask validate(): every mask has one; windows bounded so no arithmetic overflows",
          "[mask]") {
    ropekit::full_mask{}.validate();
    ropekit::causal_mask{}.validate();
    ropekit::sliding_window_mask{ropekit::attention_position_limit}.validate();
    CHECK_THROWS_AS(ropekit::sliding_window_mask{ropekit::attention_position_limit + 1}.validate(),
                    ropekit::error);
    CHECK_THROWS_AS(ropekit::sliding_window_mask{INT64_MAX}.validate(), ropekit::error);
    CHECK_THROWS_AS(ropekit::sliding_window_mask{-3}.validate(), ropekit::error);
    CHECK_THROWS_AS((ropekit::sink_window_mask{4, INT64_MAX}.validate()), ropekit::error);
    CHECK_THROWS_AS((ropekit::sink_window_mask{4, 0}.validate()), ropekit::error);
    CHECK_THROWS_AS((ropekit::parallel_context_mask{nullptr, 2}.validate()), ropekit::error);
    CHECK_THROWS_AS((ropekit::parallel_context_mask{nullptr, -1}.validate()), ropekit::error);
    const std::int64_t zero_first[] = {0, 4};
    CHECK_THROWS_AS((ropekit::parallel_context_mask{zero_first, 2}.validate()), ropekit::error);
    // The extremes validation allows: a window of 2^62 at the most negative position.
    const std::int64_t lim = ropekit::attention_position_limit - 1;
    block_bounds b{};
    b.q_pos_min = b.q_index_min = -lim;
    b.q_pos_max = b.q_index_max = lim;
    b.k_pos_min = b.k_index_min = -lim;
    b.k_pos_max = b.k_index_max = lim;
    index_range r[2];
    const ropekit::sliding_window_mask w{ropekit::attention_position_limit};
    CHECK(w.key_ranges(b, r) == 1);
    CHECK(r[0].begin == 0);
    CHECK(r[0].end == lim + 1);
    CHECK(w.classify(b) == tile_visibility::partial);
    CHECK(ropekit::sink_window_mask{4, ropekit::attention_position_limit}.classify(b) ==
          tile_visibility::partial);
}
