// SPDX-License-Identifier: Apache-2.0
// M-RoPE against Hugging Face's golden data (tests/data/mrope_golden.inc, written by
// generate_mrope_golden.py from a transcription of HF's get_rope_index and rotary embeddings):
// get_rope_index's position ids and rope delta exactly, the cos/sin the kernels gather within
// 1e-6 of the float64 truth, and get_rope_index's named errors.
#include "test_support.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ropekit/mrope.hpp"
#include "ropekit/scaling.hpp"

namespace {

struct golden_segment {
    int kind;  // 0 text, 1 image, 2 video
    std::int64_t length;
    std::int64_t t, h, w;
    double second_per_grid_t;
};

struct golden_case {
    const char* name;
    ropekit::mrope_model model;
    ropekit::mrope_layout layout;
    int section[3];
    const golden_segment* segments;
    int n_segments;
    std::int64_t tokens;
    const std::int64_t* pos;  // (3, tokens)
    std::int64_t rope_delta;
    const double* cos;  // (tokens, 64)
    const double* sin;
};

#include "data/mrope_golden.inc"

std::vector<ropekit::mrope_segment> segments_of(const golden_case& g) {
    std::vector<ropekit::mrope_segment> s;
    for (int i = 0; i < g.n_segments; ++i) {
        const golden_segment& x = g.segments[i];
        if (x.kind == 0)
            s.push_back(ropekit::mrope_segment::text(x.length));
        else if (x.kind == 1)
            s.push_back(ropekit::mrope_segment::image(x.t, x.h, x.w));
        else
            s.push_back(ropekit::mrope_segment::video(x.t, x.h, x.w, x.second_per_grid_t));
    }
    return s;
}

ropekit::mrope_index_options options_of(ropekit::mrope_model m) {
    ropekit::mrope_index_options o;
    o.model = m;
    o.spatial_merge_size = 2;
    o.tokens_per_second = 2.0;
    return o;
}

ropekit::rope_frequencies golden_freqs() {
    ropekit::rope_frequencies f;
    f.head_dim = 128;
    f.rotary_dim = 128;
    f.layout = ropekit::rope_layout::neox;
    f.inv_freq.assign(golden_inv_freq, golden_inv_freq + 64);
    return f;
}

}  // namespace

TEST_CASE("get_rope_index reproduces HF's position ids and rope delta", "[mrope]") {
    for (const golden_case& g : golden_cases) {
        INFO(g.name);
        const auto idx = ropekit::get_rope_index(segments_of(g), options_of(g.model));
        REQUIRE(idx.tokens == g.tokens);
        CHECK(idx.rope_delta == g.rope_delta);
        REQUIRE(idx.position_ids.size() == std::size_t(3 * g.tokens));
        std::int64_t mismatches = 0;
        for (std::int64_t i = 0; i < 3 * g.tokens; ++i)
            mismatches += idx.position_ids[std::size_t(i)] != g.pos[i];
        CHECK(mismatches == 0);
    }
}

TEST_CASE("M-RoPE cos/sin through the kernel match HF's truth within 1e-6", "[mrope]") {
    const auto f = golden_freqs();
    // ropekit's own default frequencies are HF's float32 inv_freq within 2 ulps.
    const auto mine =
        ropekit::make_frequencies(ropekit::rope_params{1e6, 128, 128}, ropekit::default_rope{});
    for (int i = 0; i < 64; ++i)
        CHECK(std::fabs(mine.inv_freq[std::size_t(i)] - golden_inv_freq[i]) <=
              2 * std::fabs(std::nextafter(golden_inv_freq[i], 2.0f) - golden_inv_freq[i]));
    for (const golden_case& g : golden_cases) {
        INFO(g.name);
        const ropekit::mrope_sections sec{{g.section[0], g.section[1], g.section[2]}, g.layout};
        const auto idx = ropekit::get_rope_index(segments_of(g), options_of(g.model));
        const auto table = ropekit::cos_sin_table::for_range(f, 0, g.tokens + g.rope_delta + 1);
        // Unit vectors (1, 0) in every pair: the rotation writes (cos, sin) into the pair.
        const std::int64_t n = g.tokens;
        std::vector<float> x(std::size_t(n * 128), 0.0f);
        for (std::int64_t t = 0; t < n; ++t)
            for (int i = 0; i < 64; ++i) x[std::size_t(t * 128 + i)] = 1.0f;
        const auto view = ropekit::head_view<float>::packed(x.data(), n, 1, 128);
        ropekit::validate_mrope_call(table, sec, view, idx.positions(), 0, n);
        ropekit::apply_mrope(table, sec, view, idx.positions(), 0, n);
        double worst = 0.0;
        for (std::int64_t t = 0; t < n; ++t)
            for (int i = 0; i < 64; ++i) {
                const double c = x[std::size_t(t * 128 + i)], s = x[std::size_t(t * 128 + 64 + i)];
                worst = std::max(worst, std::fabs(c - g.cos[t * 64 + i]));
                worst = std::max(worst, std::fabs(s - g.sin[t * 64 + i]));
                // The table row of the pair's axis holds the same values.
                const auto axis = int(sec.axis_of_pair(i));
                const std::int64_t r = table.row_of(idx.at(axis, t));
                CHECK(table.cos_row(r)[i] == float(c));
                CHECK(table.sin_row(r)[i] == float(s));
            }
        CHECK(worst <= 1e-6);
    }
}

TEST_CASE("get_rope_index semantics beyond the golden cases", "[mrope]") {
    using ropekit::mrope_segment;
    // Text only: 0 .. n-1 on every axis, delta 0.
    auto o = options_of(ropekit::mrope_model::qwen2_vl);
    auto idx = ropekit::get_rope_index({mrope_segment::text(5)}, o);
    CHECK(idx.rope_delta == 0);
    for (int a = 0; a < 3; ++a)
        for (int t = 0; t < 5; ++t) CHECK(idx.at(a, t) == t);
    // Empty sequence.
    idx = ropekit::get_rope_index(std::vector<mrope_segment>{}, o);
    CHECK((idx.tokens == 0 && idx.rope_delta == 0 && idx.position_ids.empty()));
    // Qwen3-VL: a video of 3 frames equals its frames as three segments.
    o = options_of(ropekit::mrope_model::qwen3_vl);
    const auto whole = ropekit::get_rope_index(
        {mrope_segment::text(2), mrope_segment::video(3, 4, 6), mrope_segment::text(1)}, o);
    const auto frames = ropekit::get_rope_index(
        {mrope_segment::text(2), mrope_segment::video(1, 4, 6), mrope_segment::video(1, 4, 6),
         mrope_segment::video(1, 4, 6), mrope_segment::text(1)},
        o);
    CHECK(whole.position_ids == frames.position_ids);
    CHECK(whole.rope_delta == frames.rope_delta);
    // ... whose frames restart the temporal id: frame 2 starts 3 after frame 1 (max(2, 3) ids).
    CHECK(whole.at(0, 2) == 2);
    CHECK(whole.at(0, 2 + 6) == 2 + 3);
    // Qwen2-VL numbers the frames; Qwen2.5-VL scales them by second_per_grid_t *
    // tokens_per_second as a float product truncated toward zero (0.5 s * 2 tokens/s = 1 per
    // frame; 0.7 s * 3 = 2.1 -> 2, 4.2 -> 4); its images have temporal id 0.
    o = options_of(ropekit::mrope_model::qwen2_5_vl);
    idx = ropekit::get_rope_index({mrope_segment::video(3, 2, 2, 0.5)}, o);
    CHECK((idx.at(0, 0) == 0 && idx.at(0, 1) == 1 && idx.at(0, 2) == 2));
    o.tokens_per_second = 3.0;
    idx = ropekit::get_rope_index({mrope_segment::video(3, 2, 2, 0.7)}, o);
    CHECK((idx.at(0, 0) == 0 && idx.at(0, 1) == 2 && idx.at(0, 2) == 4));
    CHECK(idx.rope_delta == 5 - 3);
    idx = ropekit::get_rope_index({mrope_segment::image(2, 4, 4)}, o);
    CHECK((idx.at(0, 0) == 0 && idx.at(0, 4) == 0));
    // The decode offset: after the prompt, token i sits at i + rope_delta on every axis.
    o = options_of(ropekit::mrope_model::qwen2_vl);
    idx = ropekit::get_rope_index({mrope_segment::text(3), mrope_segment::image(1, 8, 8)}, o);
    CHECK(idx.tokens == 3 + 16);
    CHECK(idx.tokens + idx.rope_delta == 3 + 4);  // the next id after the 4 x 4 grid at 3
}

TEST_CASE("get_rope_index: bad input gets a named error before any allocation", "[mrope][errors]") {
    using ropekit::mrope_segment;
    using ropekit_test::thrown_field;
    auto o = options_of(ropekit::mrope_model::qwen2_5_vl);
    auto field = [&](std::vector<mrope_segment> s) {
        return thrown_field<ropekit::error>([&] { ropekit::get_rope_index(s, o); });
    };
    CHECK(field({mrope_segment::image(0, 4, 4)}) == "grid_thw");
    CHECK(field({mrope_segment::image(1, -2, 4)}) == "grid_thw");
    CHECK(field({mrope_segment::image(1, 4, 5)}) == "grid_thw");  // not a multiple of 2
    CHECK(field({mrope_segment::video(std::int64_t(1) << 40, 4, 4)}) == "grid_thw");
    CHECK(field({mrope_segment::image(1, std::int64_t(1) << 20, std::int64_t(1) << 20)}) ==
          "tokens");  // 2^38 tokens: refused, not allocated
    CHECK(field({mrope_segment::text(-1)}) == "length");
    CHECK(field({mrope_segment::text(std::int64_t(1) << 24), mrope_segment::text(1)}) == "tokens");
    CHECK(field({mrope_segment::video(2, 4, 4, std::nan(""))}) == "second_per_grid_t");
    CHECK(field({mrope_segment::video(2, 4, 4, -1.0)}) == "second_per_grid_t");
    CHECK(field({mrope_segment::video(3, 4, 4, 1e9)}) == "position_ids");
    o.max_tokens = std::int64_t(1) << 28;
    CHECK(field({mrope_segment::text(std::int64_t(1) << 28), mrope_segment::text(1)}) == "tokens");
    o.max_tokens = std::int64_t(1) << 29;
    CHECK(field({mrope_segment::text(1)}) == "max_tokens");
    o = options_of(ropekit::mrope_model::qwen2_5_vl);
    o.tokens_per_second = 0.0;
    CHECK(field({mrope_segment::text(1)}) == "tokens_per_second");
    o = options_of(ropekit::mrope_model::qwen2_vl);
    o.spatial_merge_size = 0;
    CHECK(field({mrope_segment::text(1)}) == "spatial_merge_size");
    o = options_of(ropekit::mrope_model::qwen2_vl);
    CHECK(thrown_field<ropekit::error>([&] { ropekit::get_rope_index(nullptr, 2, o); }) ==
          "segments");
    // Sections.
    const ropekit::mrope_sections neg{{-1, 33, 32}, ropekit::mrope_layout::contiguous};
    CHECK(thrown_field<ropekit::error>([&] { neg.validate(64); }) == "mrope_section");
}
