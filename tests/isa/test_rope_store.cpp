// SPDX-License-Identifier: Apache-2.0
// Fused rotate-and-store (ropekit::rope_store, rope.hpp), built once per instruction set: the
// bytes it writes must equal apply_rope on a float copy of the source followed by the element
// conversion (from_float, or quantize_block_q8_0 per block), for both layouts, partial and
// offset rotary, both angle sources, ids and contiguous positions, padded / head-major
// destinations and token sub-ranges (every other byte untouched); the rotated values are also
// checked against the double reference (rope_reference.hpp). Plus the SIMD q8_0 quantiser
// against the scalar one (ties, non-finite and tiny blocks), the validator's fields and the
// hot-path preconditions (nothing written when one fails).
#include "test_support.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "ropekit/rope.hpp"
#include "ropekit/rope_reference.hpp"
#include "ropekit/storage.hpp"
#include "ropekit/view.hpp"

namespace {

using ropekit::bfloat16;
using ropekit::block_q8_0;
using ropekit::half;
using ropekit::head_view;
using ropekit::positions;
using ropekit::rope_layout;
using arch = ropekit::default_arch;

constexpr unsigned char sentinel = 0xa5;

/// One geometry of the sweep.
struct geometry {
    int head_dim;
    int rotary_dim;
    int pair_span;      // 0: rotary_dim / 2
    int rotary_offset;  // first rotated channel
};

ropekit::rope_frequencies make_freqs(const geometry& g, rope_layout layout) {
    ropekit::rope_frequencies f;
    f.head_dim = g.head_dim;
    f.rotary_dim = g.rotary_dim;
    f.layout = layout;
    f.pair_span = layout == rope_layout::neox ? g.pair_span : 0;
    f.rotary_offset = g.rotary_offset;
    for (int i = 0; i < g.rotary_dim / 2; ++i)
        f.inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / g.rotary_dim)));
    return f;
}

enum class dst_layout { packed, padded, head_major };
const char* name_of(dst_layout d) {
    return d == dst_layout::packed ? "packed" : d == dst_layout::padded ? "padded" : "head_major";
}

/// A destination buffer (filled with the sentinel byte) and its view of `tokens` tokens.
template <class Dst>
struct dst_buffer {
    std::vector<Dst> buf;
    head_view<Dst> view;

    dst_buffer(dst_layout kind, std::int64_t tokens, int heads, int head_dim) {
        const int row = head_view<Dst>::row_elements(head_dim);
        std::size_t n = 0;
        if (kind == dst_layout::packed) n = std::size_t(tokens * heads * row);
        if (kind == dst_layout::padded) n = std::size_t(tokens * (heads * row + 3));
        if (kind == dst_layout::head_major) n = std::size_t(heads * (tokens + 2) * row);
        buf.resize(n);
        std::memset(static_cast<void*>(buf.data()), sentinel, n * sizeof(Dst));
        if (kind == dst_layout::packed)
            view = head_view<Dst>::packed(buf.data(), tokens, heads, head_dim);
        if (kind == dst_layout::padded)
            view = head_view<Dst>::padded(buf.data(), tokens, heads, head_dim, heads * row + 3);
        if (kind == dst_layout::head_major)
            view = head_view<Dst>::head_major(buf.data(), heads, tokens + 2, head_dim)
                       .tokens_slice(0, tokens);
        view.validate(buf.size());
    }
};

/// Expected destination row for a rotated float row: the element conversion of every channel.
template <class Dst>
void convert_row(const float* row, Dst* out, int head_dim) {
    if constexpr (std::is_same_v<Dst, block_q8_0>) {
        ropekit::quantize_q8_0(row, out, head_dim);
    } else {
        for (int j = 0; j < head_dim; ++j) out[j] = ropekit::from_float<Dst>(row[j]);
    }
}

/// |stored - exact| allowed by the destination's rounding, for the double-reference check.
template <class Dst>
double rounding_slack(double exact, const Dst* row, int j) {
    if constexpr (std::is_same_v<Dst, float>) {
        (void)row, (void)j;
        return 4e-6 * (1.0 + std::fabs(exact));
    } else if constexpr (std::is_same_v<Dst, block_q8_0>) {
        const double d = double(float(row[j / 32].d));
        // Half a step of the stored scale, plus |q| <= 127 times the rounding of d to half.
        return (0.5 + 127.0 * 0x1p-11) * d * (1 + 1e-5) + 4e-6 * (1.0 + std::fabs(exact));
    } else {
        (void)row, (void)j;
        const double ulp = std::is_same_v<Dst, bfloat16> ? 0x1p-8 : 0x1p-11;
        return ulp * std::fabs(exact) + 4e-6 + (std::is_same_v<Dst, half> ? 0x1p-24 : 0.0);
    }
}

template <class Dst>
double stored_value(const Dst* row, int j) {
    if constexpr (std::is_same_v<Dst, block_q8_0>)
        return double(ropekit::dequantize_q8_0(row[j / 32], j % 32));
    else
        return double(ropekit::to_float(row[j]));
}

/// One case: rope_store against apply_rope + conversion (bytes, whole buffer) and against the
/// double reference (values). Returns the number of byte mismatches.
template <class Dst>
void check_case(const geometry& g, rope_layout layout, bool use_table, bool use_ids, dst_layout dl,
                std::int64_t t0, std::int64_t t1, std::uint32_t seed) {
    const std::int64_t tokens = 7;
    const int heads = 3;
    const ropekit::rope_frequencies freqs = make_freqs(g, layout);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 256);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::uniform_int_distribution<int> pd(0, 255);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens));
    for (auto& p : ids) p = pd(rng);
    const positions pos = use_ids ? positions::ids(ids.data()) : positions::contiguous(17);

    // Source: padded rows when the destination is padded too (a strided source).
    const std::ptrdiff_t src_stride =
        dl == dst_layout::padded ? heads * g.head_dim + 5 : std::ptrdiff_t(heads) * g.head_dim;
    std::vector<float> src(std::size_t(tokens * src_stride));
    for (auto& v : src) v = nd(rng);
    const auto sv =
        head_view<const float>::padded(src.data(), tokens, heads, g.head_dim, src_stride);
    const std::vector<float> src_before = src;

    // The library's float kernel on a packed copy: the expected rotated rows.
    std::vector<float> rot(std::size_t(tokens * heads * g.head_dim));
    for (std::int64_t t = 0; t < tokens; ++t)
        for (int h = 0; h < heads; ++h)
            std::memcpy(&rot[std::size_t((t * heads + h) * g.head_dim)], sv.at(t, h),
                        sizeof(float) * std::size_t(g.head_dim));
    std::vector<float> ref = rot;
    const auto rv = ropekit::packed_view(rot.data(), tokens, heads, g.head_dim);
    if (use_table)
        ropekit::apply_rope<arch, float>(table, rv, pos, t0, t1);
    else
        ropekit::apply_rope<arch, float>(freqs, rv, pos, t0, t1);
    ropekit::apply_rope_reference(
        freqs, ropekit::packed_view(ref.data(), tokens, heads, g.head_dim), pos, t0, t1);

    dst_buffer<Dst> actual(dl, tokens, heads, g.head_dim);
    dst_buffer<Dst> expected(dl, tokens, heads, g.head_dim);
    for (std::int64_t t = t0; t < t1; ++t)
        for (int h = 0; h < heads; ++h)
            convert_row(&rot[std::size_t((t * heads + h) * g.head_dim)], expected.view.at(t, h),
                        g.head_dim);
    if (use_table) {
        ropekit::validate_rope_store_call(table, sv, actual.view, pos, t0, t1);
        ropekit::rope_store<arch>(table, sv, actual.view, pos, t0, t1);
    } else {
        ropekit::validate_rope_store_call(freqs, sv, actual.view, pos, t0, t1);
        ropekit::rope_store<arch>(freqs, sv, actual.view, pos, t0, t1);
    }

    INFO(ropekit::storage_name<Dst>()
         << " " << ropekit::to_string(layout) << " head_dim=" << g.head_dim << " rotary_dim="
         << g.rotary_dim << " span=" << g.pair_span << " offset=" << g.rotary_offset
         << (use_table ? " table" : " table-free") << (use_ids ? " ids" : " contiguous") << " "
         << name_of(dl) << " tokens [" << t0 << ", " << t1 << ")");
    const std::size_t bytes = actual.buf.size() * sizeof(Dst);
    std::size_t mismatched = 0, first = bytes;
    const auto* a = reinterpret_cast<const unsigned char*>(actual.buf.data());
    const auto* e = reinterpret_cast<const unsigned char*>(expected.buf.data());
    for (std::size_t i = 0; i < bytes; ++i)
        if (a[i] != e[i]) {
            ++mismatched;
            if (first == bytes) first = i;
        }
    INFO("first mismatching byte " << first << " of " << bytes);
    CHECK(mismatched == 0);
    CHECK(src == src_before);  // the source is never written

    // Against the double reference: every channel of the written rows within the rounding.
    double worst = 0.0;
    for (std::int64_t t = t0; t < t1; ++t)
        for (int h = 0; h < heads; ++h) {
            const Dst* row = actual.view.at(t, h);
            for (int j = 0; j < g.head_dim; ++j) {
                const double exact = ref[std::size_t((t * heads + h) * g.head_dim + j)];
                const double err = std::fabs(stored_value(row, j) - exact);
                worst = std::fmax(worst, err / rounding_slack(exact, row, j));
            }
        }
    INFO("worst error / allowed " << worst);
    CHECK(worst <= 1.0);
}

template <class Dst>
void sweep() {
    // Full rotary, partial rotary (pass-through tail), an odd pair count (masked tails), a
    // Gemma-4-like proportional NeoX span, a DeepSeek-like offset slice, a row of more than one
    // q8_0 segment (256 channels) whose GPT-J pairs straddle the segment boundary (odd offset).
    const geometry gs[] = {{128, 128, 0, 0}, {128, 64, 0, 0}, {96, 44, 0, 0},   {128, 32, 64, 0},
                           {128, 64, 0, 64}, {64, 2, 0, 0},   {320, 300, 0, 3}, {576, 64, 0, 512}};
    std::uint32_t seed = 1;
    for (const geometry& g : gs)
        for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
            if (layout == rope_layout::gptj && g.pair_span != 0) continue;
            for (bool use_table : {true, false})
                for (bool use_ids : {false, true})
                    for (dst_layout dl :
                         {dst_layout::packed, dst_layout::padded, dst_layout::head_major}) {
                        check_case<Dst>(g, layout, use_table, use_ids, dl, 0, 7, seed++);
                        check_case<Dst>(g, layout, use_table, use_ids, dl, 2, 5, seed++);
                    }
        }
}

TEST_CASE("rope_store f32 equals apply_rope on a float copy", "[rope_store]") {
    sweep<float>();
}
TEST_CASE("rope_store bf16 equals apply_rope then bfloat16 rounding", "[rope_store]") {
    sweep<bfloat16>();
}
TEST_CASE("rope_store f16 equals apply_rope then half rounding", "[rope_store]") {
    sweep<half>();
}
TEST_CASE("rope_store q8_0 equals quantize_block_q8_0 of apply_rope's float rows", "[rope_store]") {
    sweep<block_q8_0>();
}

TEST_CASE("rope_store: an empty token range writes nothing", "[rope_store]") {
    const geometry g{64, 64, 0, 0};
    check_case<half>(g, rope_layout::neox, true, false, dst_layout::packed, 3, 3, 99);
    check_case<block_q8_0>(g, rope_layout::gptj, false, true, dst_layout::head_major, 7, 7, 98);
}

// ---------------------------------------------------------------------------------------------
// q8_0: the SIMD quantiser against quantize_block_q8_0, and non-finite input through rope_store.

bool same_block(const block_q8_0& a, const block_q8_0& b) {
    return std::memcmp(&a, &b, sizeof(block_q8_0)) == 0;
}

TEST_CASE("q8_0 quantiser of the kernels is bit-identical with quantize_block_q8_0",
          "[rope_store][q8_0]") {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    alignas(64) float x[32];
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    int checked = 0;
    auto check = [&](const char* what) {
        const block_q8_0 want = ropekit::quantize_block_q8_0(x);
        block_q8_0 got;
        std::memset(static_cast<void*>(&got), sentinel, sizeof got);
        ropekit::detail::quantize_block_q8_0_arch<arch>(x, got);
        INFO(what << " block " << checked << ": d bits " << got.d.bits << " vs " << want.d.bits);
        CHECK(same_block(got, want));
        ++checked;
    };
    for (int r = 0; r < 2000; ++r) {
        const float scale = std::ldexp(1.0f, int(rng() % 60) - 30);
        for (float& v : x) v = nd(rng) * scale;
        check("random");
    }
    // Exact ties: amax 127 gives d = 1 and id = 1, so k + 0.5 lands on a tie (away from zero).
    for (int r = 0; r < 200; ++r) {
        for (int j = 0; j < 32; ++j)
            x[j] = float(int(rng() % 253) - 126) + ((j & 1) ? 0.5f : -0.5f);
        x[r % 32] = (r & 1) ? 127.0f : -127.0f;
        check("ties");
    }
    // Values just below and above .5 after scaling, and signed zeros.
    for (int j = 0; j < 32; ++j)
        x[j] = j % 4 == 0   ? std::nextafter(2.5f, 0.0f)
               : j % 4 == 1 ? std::nextafter(-2.5f, 0.0f)
               : j % 4 == 2 ? -0.0f
                            : 0.0f;
    x[31] = 127.0f;
    check("near ties");
    for (float& v : x) v = 0.0f;
    check("zeros");
    for (int j = 0; j < 32; ++j) x[j] = (j & 1 ? -1.0f : 1.0f) * 1e-38f * float(j + 1);
    check("tiny (1 / d overflows)");
    for (int j = 0; j < 32; ++j) x[j] = std::ldexp(float(j + 1), -149 + (j % 3));
    check("subnormal");
    for (int j = 0; j < 32; ++j) x[j] = float(j - 16) * 3e5f;
    x[0] = 127.0f * 65504.0f * 2.0f;
    check("d overflows half");
    for (int j = 0; j < 32; ++j) x[j] = nd(rng);
    for (float bad : {nan, -nan, inf, -inf}) {
        for (int at : {0, 13, 31}) {
            float keep = x[at];
            x[at] = bad;
            check("non-finite");
            x[at] = keep;
        }
    }
}

TEST_CASE("rope_store q8_0 with NaN and inf inputs", "[rope_store][q8_0]") {
    // Rotary on the first 32 channels only: block 0 is rotated (a NaN there poisons its pair
    // partner too), blocks 1-3 are pass-through, so the non-finite and tie values reach the
    // quantiser unchanged.
    const geometry g{128, 32, 0, 0};
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        const ropekit::rope_frequencies freqs = make_freqs(g, layout);
        const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 16);
        const std::int64_t tokens = 4;
        const int heads = 2;
        std::vector<float> src(std::size_t(tokens * heads * g.head_dim));
        std::mt19937 rng(3);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (auto& v : src) v = nd(rng);
        const float nan = std::numeric_limits<float>::quiet_NaN();
        const float inf = std::numeric_limits<float>::infinity();
        src[5] = nan;                  // token 0 head 0, rotated block
        src[128 + 40] = inf;           // token 0 head 1, pass-through block 1
        src[256 + 3 * 32 + 7] = -inf;  // token 1 head 0, block 3
        src[384 + 17] = -nan;          // token 1 head 1, rotated block
        for (int j = 0; j < 32; ++j) src[512 + 64 + j] = float(j) - 15.5f;  // ties: amax 15.5
        src[512 + 64] = 127.0f;                                             // d = 1
        std::vector<float> rot = src;
        ropekit::apply_rope<arch, float>(
            table, ropekit::packed_view(rot.data(), tokens, heads, g.head_dim),
            positions::contiguous(1), 0, tokens);
        std::vector<block_q8_0> want(std::size_t(tokens * heads * 4)), got(want.size());
        ropekit::quantize_q8_0(rot.data(), want.data(), std::int64_t(rot.size()));
        std::memset(static_cast<void*>(got.data()), sentinel, got.size() * sizeof(block_q8_0));
        ropekit::rope_store<arch>(table,
                                  ropekit::packed_view(src.data(), tokens, heads, g.head_dim),
                                  ropekit::packed_view(got.data(), tokens, heads, g.head_dim),
                                  positions::contiguous(1), 0, tokens);
        for (std::size_t b = 0; b < got.size(); ++b) {
            INFO(ropekit::to_string(layout) << " block " << b);
            CHECK(same_block(got[b], want[b]));
        }
        CHECK(std::isnan(float(got[0].d)));   // the NaN block is poisoned
        CHECK(std::isnan(float(got[5].d)));   // token 0 head 1 block 1: inf
        CHECK(std::isnan(float(got[11].d)));  // token 1 head 0 block 3: -inf
        CHECK(got[1].d.bits == want[1].d.bits);
    }
}

// ---------------------------------------------------------------------------------------------
// Front doors, validator fields and hot-path preconditions.

TEST_CASE("rope_store front doors use default_arch over all tokens", "[rope_store]") {
    const geometry g{64, 64, 0, 0};
    const ropekit::rope_frequencies freqs = make_freqs(g, rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 64);
    std::vector<float> src(std::size_t(5 * 2 * 64));
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = std::sin(float(i) * 0.37f);
    std::vector<bfloat16> a(src.size()), b(src.size());
    const auto sv = ropekit::packed_view(src.data(), 5, 2, 64);  // head_view<float> converts
    ropekit::rope_store(table, sv, ropekit::packed_view(a.data(), 5, 2, 64),
                        positions::contiguous(3));
    ropekit::rope_store<arch>(table, sv, ropekit::packed_view(b.data(), 5, 2, 64),
                              positions::contiguous(3), 0, 5);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(bfloat16)) == 0);
    ropekit::rope_store(freqs, sv, ropekit::packed_view(a.data(), 5, 2, 64),
                        positions::contiguous(3));
    ropekit::rope_store<arch>(freqs, sv, ropekit::packed_view(b.data(), 5, 2, 64),
                              positions::contiguous(3), 0, 5);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(bfloat16)) == 0);
}

TEST_CASE("validate_rope_store_call names the field", "[rope_store][validate]") {
    using ropekit_test::thrown_field;
    const geometry g{64, 64, 0, 0};
    const ropekit::rope_frequencies freqs = make_freqs(g, rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 32);
    std::vector<float> src(std::size_t(8 * 2 * 96));
    std::vector<half> dst(src.size());
    std::vector<block_q8_0> q8(src.size() / 32);
    const auto sv = head_view<const float>::packed(src.data(), 8, 2, 64);
    const auto dv = head_view<half>::packed(dst.data(), 8, 2, 64);
    const positions pos = positions::contiguous(0);
    auto field = [&](auto&& call) { return thrown_field<ropekit::error>(call); };

    CHECK(field([&] { ropekit::validate_rope_store_call(table, sv, dv, pos, 0, 8); }) ==
          "no error");
    CHECK(field([&] { ropekit::validate_rope_store_call(freqs, sv, dv, pos, 0, 8); }) ==
          "no error");
    CHECK(field([&] {
              ropekit::validate_rope_store_call(
                  table, sv, head_view<half>::packed(dst.data(), 7, 2, 64), pos, 0, 7);
          }) == "tokens");
    CHECK(field([&] {
              ropekit::validate_rope_store_call(
                  table, sv, head_view<half>::packed(dst.data(), 8, 1, 64), pos, 0, 8);
          }) == "heads");
    CHECK(field([&] {
              ropekit::validate_rope_store_call(
                  table, sv, head_view<half>::packed(dst.data(), 8, 2, 96), pos, 0, 8);
          }) == "head_dim");
    {  // q8_0: head_dim 48 is not a whole number of blocks
        const auto s48 = head_view<const float>::packed(src.data(), 8, 2, 48);
        const head_view<block_q8_0> q48{q8.data(), 8, 2, 48, 2, 1};
        CHECK(field([&] { ropekit::validate_rope_store_call(freqs, s48, q48, pos, 0, 8); }) ==
              "head_dim");
    }
    {  // the table's rotary_dim is larger than both views' head_dim
        const auto s32 = head_view<const float>::packed(src.data(), 8, 2, 32);
        const auto d32 = head_view<half>::packed(dst.data(), 8, 2, 32);
        CHECK(field([&] { ropekit::validate_rope_store_call(table, s32, d32, pos, 0, 8); }) ==
              "rotary_dim");
    }
    {  // an offset slice that runs past the views' head_dim (the frequencies' is 128)
        ropekit::rope_frequencies off = make_freqs({128, 64, 0, 40}, rope_layout::gptj);
        const auto s96 = head_view<const float>::packed(src.data(), 8, 2, 96);
        const auto d96 = head_view<half>::packed(dst.data(), 8, 2, 96);
        CHECK(field([&] { ropekit::validate_rope_store_call(off, s96, d96, pos, 0, 8); }) ==
              "rotated_extent");
    }
    {  // rotary_dim above rope_store's single-pass limit
        std::vector<float> big(std::size_t(2 * 640));
        std::vector<bfloat16> bigd(big.size());
        const ropekit::rope_frequencies wide = make_freqs({640, 520, 0, 0}, rope_layout::neox);
        CHECK(field([&] {
                  ropekit::validate_rope_store_call(
                      wide, head_view<const float>::packed(big.data(), 2, 1, 640),
                      head_view<bfloat16>::packed(bigd.data(), 2, 1, 640), pos, 0, 2);
              }) == "rotary_dim");
    }
    CHECK(field([&] { ropekit::validate_rope_store_call(table, sv, dv, pos, 2, 9); }) ==
          "token_range");
    CHECK(field([&] {
              ropekit::validate_rope_store_call(table, sv, dv, positions::contiguous(30), 0, 8);
          }) == "positions");
    CHECK(field([&] {
              ropekit::validate_rope_store_call(freqs, sv, dv,
                                                positions::constant(std::int64_t(1) << 40), 0, 8);
          }) == "positions");
    CHECK(field([&] {
              ropekit::validate_rope_store_call(
                  table, sv, dv, positions::ids(static_cast<const std::int32_t*>(nullptr)), 0, 8);
          }) == "positions");
    CHECK(field([&] {  // overlapping destination rows
              ropekit::validate_rope_store_call(
                  table, sv, head_view<half>{dst.data(), 8, 2, 64, 64, 32}, pos, 0, 8);
          }) == "head_view");
}

TEST_CASE("rope_store preconditions: ROPEKIT_ASSERT fires and nothing is written",
          "[rope_store][validate]") {
    const geometry g{64, 64, 0, 0};
    const ropekit::rope_frequencies freqs = make_freqs(g, rope_layout::gptj);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 32);
    std::vector<float> src(std::size_t(8 * 2 * 64), 1.0f);
    std::vector<bfloat16> dst(src.size());
    std::memset(static_cast<void*>(dst.data()), sentinel, dst.size() * sizeof(bfloat16));
    const std::vector<bfloat16> before = dst;
    const auto sv = head_view<const float>::packed(src.data(), 8, 2, 64);
    auto untouched = [&] {
        return std::memcmp(dst.data(), before.data(), dst.size() * sizeof(bfloat16)) == 0;
    };
    using ropekit_test::assert_failure;
    CHECK_THROWS_AS(
        ropekit::rope_store<arch>(table, sv, head_view<bfloat16>::packed(dst.data(), 8, 1, 64),
                                  positions::contiguous(0), 0, 8),
        assert_failure);
    CHECK(untouched());
    CHECK_THROWS_AS(
        ropekit::rope_store<arch>(freqs, sv, head_view<bfloat16>::packed(dst.data(), 8, 2, 64),
                                  positions::contiguous(0), 0, 9),
        assert_failure);
    CHECK(untouched());
    CHECK_THROWS_AS(
        ropekit::rope_store<arch>(table, sv, head_view<bfloat16>::packed(dst.data(), 8, 2, 64),
                                  positions::table_rows(), 0, 8),
        assert_failure);
    CHECK(untouched());
    const ropekit::rope_frequencies wide = make_freqs({64, 64, 0, 8}, rope_layout::gptj);
    CHECK_THROWS_AS(
        ropekit::rope_store<arch>(wide, sv, head_view<bfloat16>::packed(dst.data(), 8, 2, 64),
                                  positions::contiguous(0), 0, 8),
        assert_failure);
    CHECK(untouched());
}

}  // namespace
