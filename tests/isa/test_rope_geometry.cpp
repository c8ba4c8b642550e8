// SPDX-License-Identifier: Apache-2.0
// Rotary geometry (pair_span, rotary_offset: Gemma 4's proportional RoPE, DeepSeek's MLA slice,
// odd offsets and spans) and the M-RoPE kernels (ropekit/mrope.hpp) against the naive double
// reference, built once per instruction set (scalar, SSE2, AVX2, AVX-512). Every channel outside
// the geometry's pairs is filled with NaN payloads, -0.0 and subnormals and must come out
// bit-identical; the rotated ones are held to test_rope.cpp's tolerances.
#include "test_support.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "ropekit/mrope.hpp"
#include "ropekit/rope.hpp"
#include "ropekit/rope_reference.hpp"
#include "ropekit/view.hpp"

namespace {

using ropekit::bfloat16;
using ropekit::half;
using ropekit::head_view;
using ropekit::mrope_layout;
using ropekit::mrope_positions;
using ropekit::mrope_sections;
using ropekit::positions;
using ropekit::rope_layout;
using arch = ropekit::default_arch;

template <class T>
std::uint32_t raw_bits(T v) {
    if constexpr (std::is_same_v<T, float>) {
        std::uint32_t u;
        std::memcpy(&u, &v, 4);
        return u;
    } else {
        return v.bits;
    }
}

template <class T>
T from_bits(std::uint32_t u) {
    if constexpr (std::is_same_v<T, float>) {
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    } else {
        T v;
        v.bits = std::uint16_t(u);
        return v;
    }
}

// Values a conversion round trip or an arithmetic pass would change: a signaling-NaN payload,
// a quiet NaN with a payload, -0.0 and the smallest subnormal.
template <class T>
T pass_through_value(std::size_t i) {
    static const std::uint32_t f32[4] = {0x7fa12345u, 0xffc54321u, 0x80000000u, 0x00000001u};
    static const std::uint32_t bf[4] = {0x7f81u, 0xffc5u, 0x8000u, 0x0001u};
    static const std::uint32_t hf[4] = {0x7d01u, 0xfe45u, 0x8000u, 0x0001u};
    if constexpr (std::is_same_v<T, float>)
        return from_bits<T>(f32[i % 4]);
    else if constexpr (std::is_same_v<T, bfloat16>)
        return from_bits<T>(bf[i % 4]);
    else
        return from_bits<T>(hf[i % 4]);
}

template <class T>
long ulp_distance(T a, T b) {
    auto ord = [](std::uint16_t u) { return (u & 0x8000) ? -long(u & 0x7fff) : long(u); };
    return std::labs(ord(a.bits) - ord(b.bits));
}

struct geometry {
    int head_dim;
    int rotary_dim;
    rope_layout layout;
    int pair_span;  // 0: rotary_dim / 2
    int offset;
    const char* what;
};

// Frequencies over a denominator `freq_dim` (head_dim for Gemma 4's proportional RoPE).
ropekit::rope_frequencies make_freqs(const geometry& g, int freq_dim, double base = 10000.0) {
    ropekit::rope_frequencies f;
    f.head_dim = g.head_dim;
    f.rotary_dim = g.rotary_dim;
    f.layout = g.layout;
    f.pair_span = g.pair_span;
    f.rotary_offset = g.offset;
    for (int i = 0; i < g.rotary_dim / 2; ++i)
        f.inv_freq.push_back(float(std::pow(base, -2.0 * i / freq_dim)));
    f.validate();
    return f;
}

// Channels of a head that the geometry rotates.
std::vector<char> rotated_channels(const ropekit::rope_frequencies& f) {
    std::vector<char> r(std::size_t(f.head_dim), 0);
    for (int i = 0; i < f.pairs(); ++i) {
        const bool neox = f.layout == rope_layout::neox;
        r[std::size_t(f.rotary_offset + (neox ? i : 2 * i))] = 1;
        r[std::size_t(f.rotary_offset + (neox ? i + f.neox_pair_span() : 2 * i + 1))] = 1;
    }
    return r;
}

// A padded [t][h][d] tensor (rows padded by 3 elements, tokens by 5 more): rotated channels
// random, every other element (pass-through channels, padding) a special bit pattern.
template <class T>
struct tensor {
    std::vector<T> buf;
    head_view<T> view;
};

template <class T>
tensor<T> make_tensor(const ropekit::rope_frequencies& f, std::int64_t tokens, int heads,
                      std::mt19937& rng) {
    tensor<T> tc;
    const std::ptrdiff_t hs = f.head_dim + 3, ts = std::ptrdiff_t(heads) * hs + 5;
    tc.buf.resize(std::size_t(tokens * ts + 8));
    for (std::size_t i = 0; i < tc.buf.size(); ++i) tc.buf[i] = pass_through_value<T>(i);
    const auto rot = rotated_channels(f);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (std::int64_t t = 0; t < tokens; ++t)
        for (int h = 0; h < heads; ++h)
            for (int c = 0; c < f.head_dim; ++c)
                if (rot[std::size_t(c)])
                    tc.buf[std::size_t(t * ts + h * hs + c)] = ropekit::from_float<T>(u(rng));
    tc.view = head_view<T>{tc.buf.data(), tokens, heads, f.head_dim, ts, hs};
    return tc;
}

template <class T>
tensor<T> copy_of(const tensor<T>& a) {
    tensor<T> b = a;
    b.view.data = b.buf.data();
    return b;
}

// Rotated elements of tokens [t0, t1) within tolerance of the reference, everything else in
// the buffer bit-identical to it.
template <class T>
std::string compare(const tensor<T>& got, const tensor<T>& want, const ropekit::rope_frequencies& f,
                    std::int64_t t0, std::int64_t t1) {
    const head_view<T>& v = got.view;
    const auto rot = rotated_channels(f);
    std::vector<char> rotated(got.buf.size(), 0);
    for (std::int64_t t = t0; t < t1; ++t) {
        for (int h = 0; h < v.heads; ++h) {
            const std::size_t row = std::size_t(t * v.token_stride + h * v.head_stride);
            double max_abs = 0.0;
            for (int c = 0; c < f.head_dim; ++c)
                if (rot[std::size_t(c)])
                    max_abs = std::max(
                        max_abs,
                        std::fabs(double(ropekit::to_float(want.buf[row + std::size_t(c)]))));
            for (int c = 0; c < f.head_dim; ++c) {
                if (!rot[std::size_t(c)]) continue;
                rotated[row + std::size_t(c)] = 1;
                const T g = got.buf[row + std::size_t(c)], w = want.buf[row + std::size_t(c)];
                const double diff =
                    std::fabs(double(ropekit::to_float(g)) - double(ropekit::to_float(w)));
                bool ok;
                if constexpr (std::is_same_v<T, float>)
                    ok = diff <= 1e-6 * max_abs;
                else
                    ok = ulp_distance(g, w) <= 1 || diff <= 1e-6 * max_abs;
                if (!ok) {
                    std::ostringstream os;
                    os << "token " << t << " head " << h << " channel " << c << ": got "
                       << ropekit::to_float(g) << " want " << ropekit::to_float(w);
                    return os.str();
                }
            }
        }
    }
    for (std::size_t i = 0; i < got.buf.size(); ++i)
        if (!rotated[i] && raw_bits(got.buf[i]) != raw_bits(want.buf[i])) {
            std::ostringstream os;
            os << "element " << i << " outside the rotated channels changed: bits " << std::hex
               << raw_bits(got.buf[i]) << " want " << raw_bits(want.buf[i]);
            return os.str();
        }
    return {};
}

// Every geometry the tests sweep: Gemma 4 proportional (pairs = int(0.25 * head_dim) // 2, span
// head_dim / 2, denominator head_dim), DeepSeek MLA (192 = 128 nope + 64 rope), odd offsets,
// odd pair counts and spans that exercise the SIMD tails, the fixed 64-pair path with a span
// other than 64, the bf16x32 path with a tail, and a two-pass call (300 pairs).
std::vector<geometry> geometries() {
    return {
        {256, 2 * (int(0.25 * 256) / 2), rope_layout::neox, 128, 0, "gemma4-256"},
        {512, 2 * (int(0.25 * 512) / 2), rope_layout::neox, 256, 0, "gemma4-512"},
        {192, 64, rope_layout::gptj, 0, 128, "mla-gptj"},
        {192, 64, rope_layout::neox, 0, 128, "mla-neox"},
        {100, 26, rope_layout::neox, 0, 3, "offset3-13pairs"},
        {100, 26, rope_layout::neox, 40, 5, "offset5-span40"},
        {100, 26, rope_layout::gptj, 0, 7, "gptj-offset7-13pairs"},
        {97, 2 * 37, rope_layout::gptj, 0, 23, "gptj-offset23-37pairs"},
        {300, 160, rope_layout::neox, 130, 11, "80pairs-span130"},
        {128, 128, rope_layout::neox, 64, 0, "ordinary-128"},
        {640, 600, rope_layout::neox, 310, 7, "two-pass-span310"},
        {640, 600, rope_layout::gptj, 0, 33, "two-pass-gptj-offset33"},
    };
}

enum class source { table, table_free };

template <class T>
std::string run_geometry_case(const geometry& g, source src, bool ids, std::uint32_t seed) {
    std::mt19937 rng(seed);
    const int freq_dim = g.pair_span > g.rotary_dim / 2 ? g.head_dim : g.rotary_dim;
    const auto f = make_freqs(g, freq_dim);
    const std::int64_t tokens = 7;
    auto q = make_tensor<T>(f, tokens, 4, rng);  // GQA: 4 q heads, 2 k heads
    auto k = make_tensor<T>(f, tokens, 2, rng);
    auto qr = copy_of(q), kr = copy_of(k);
    std::vector<std::int64_t> id(static_cast<std::size_t>(tokens));
    for (auto& p : id) p = std::uniform_int_distribution<std::int64_t>(0, 5000)(rng);
    const positions pos = ids ? positions::ids(id.data()) : positions::contiguous(4090);
    const std::int64_t t0 = 1, t1 = tokens;
    if (src == source::table) {
        const auto table = ropekit::cos_sin_table::for_range(f, 0, 5001);
        ropekit::validate_rope_call(table, q.view, k.view, pos, t0, t1);
        ropekit::apply_rope_qk<arch>(table, q.view, k.view, pos, t0, t1);
    } else {
        ropekit::validate_rope_call(f, q.view, k.view, pos, t0, t1);
        ropekit::apply_rope_qk<arch>(f, q.view, k.view, pos, t0, t1);
    }
    ropekit::apply_rope_reference(f, qr.view, pos, t0, t1);
    ropekit::apply_rope_reference(f, kr.view, pos, t0, t1);
    std::string err = compare(q, qr, f, t0, t1);
    if (err.empty()) err = compare(k, kr, f, t0, t1);
    if (!err.empty())
        err = std::string(g.what) + " " + ropekit::storage_name<T>() +
              (src == source::table ? " table" : " table-free") + (ids ? " ids: " : ": ") + err;
    return err;
}

}  // namespace

TEMPLATE_TEST_CASE("geometry: pair span and rotary offset in every kernel", "[rope][geometry]",
                   float, bfloat16, half) {
    using T = TestType;
    std::uint32_t seed = 1;
    for (const geometry& g : geometries())
        for (source src : {source::table, source::table_free})
            for (bool ids : {false, true}) {
                const std::string err = run_geometry_case<T>(g, src, ids, seed++);
                INFO(err);
                CHECK(err.empty());
            }
}

TEMPLATE_TEST_CASE("geometry: single-view apply, rerotate_keys and rebase_keys", "[rope][geometry]",
                   float, bfloat16, half) {
    using T = TestType;
    std::uint32_t seed = 100;
    for (const geometry& g : geometries()) {
        INFO(g.what);
        std::mt19937 rng(seed++);
        const auto f = make_freqs(g, g.head_dim);
        auto to = make_freqs(g, g.head_dim, 500000.0);
        const std::int64_t tokens = 5;
        auto x = make_tensor<T>(f, tokens, 3, rng);
        auto xr = copy_of(x);
        // apply_rope through the table, then a shift by -37 (table-free deltas) and a table of
        // deltas (+5), then a rebase onto other frequencies.
        const auto table = ropekit::cos_sin_table::for_range(f, 0, 300);
        ropekit::apply_rope<arch>(table, x.view, positions::contiguous(200), 0, tokens);
        ropekit::apply_rope_reference(f, xr.view, positions::contiguous(200), 0, tokens);
        CHECK(compare(x, xr, f, 0, tokens).empty());
        x = copy_of(xr);
        ropekit::rerotate_keys<arch>(f, x.view, positions::constant(-37), 0, tokens);
        ropekit::apply_rope_reference(f, xr.view, positions::constant(-37), 0, tokens);
        CHECK(compare(x, xr, f, 0, tokens).empty());
        x = copy_of(xr);
        const std::int64_t d = 5;
        const auto deltas = ropekit::cos_sin_table::for_positions(f, &d, 1);
        std::vector<std::int64_t> zero_rows(std::size_t(tokens), 0);
        (void)zero_rows;
        const auto delta_range = ropekit::cos_sin_table::for_range(f, 5, 1);
        ropekit::rerotate_keys<arch>(delta_range, x.view, positions::constant(5), 0, tokens);
        ropekit::apply_rope_reference(f, xr.view, positions::constant(5), 0, tokens);
        CHECK(compare(x, xr, f, 0, tokens).empty());
        CHECK(deltas.rotary_offset() == g.offset);
        x = copy_of(xr);
        std::vector<std::int32_t> ids = {3, -8, 1000, 17, 17};
        ropekit::validate_rebase_call(f, to, x.view, positions::ids(ids.data()), 0, tokens);
        ropekit::rebase_keys<arch>(f, to, x.view, positions::ids(ids.data()), 0, tokens);
        ropekit::rebase_keys_reference(f, to, xr.view, positions::ids(ids.data()), 0, tokens);
        CHECK(compare(x, xr, f, 0, tokens).empty());
    }
}

TEMPLATE_TEST_CASE("geometry: zero-frequency pairs pass through bit for bit", "[rope][geometry]",
                   float, bfloat16, half) {
    // Gemma 4's proportional RoPE as HF computes it (all head_dim / 2 pairs, the non-rotating
    // ones with inv_freq 0: cos 1, sin 0) equals the geometry with only the rotating pairs:
    // x * 1 - y * 0 is x exactly for every finite non-zero x, subnormals included. Not for
    // zeros: -0.0 * 1 - (-0.0) * 0 is +0.0, and a NaN in the partner channel spreads, which is
    // why ropekit expresses the pass-through pairs as geometry and never touches them (the
    // other tests check those bits).
    using T = TestType;
    for (int head_dim : {256, 512}) {
        const int pairs = int(0.25 * head_dim) / 2;
        const geometry part{head_dim, 2 * pairs, rope_layout::neox, head_dim / 2, 0, "part"};
        const auto f = make_freqs(part, head_dim);
        ropekit::rope_frequencies full = f;
        full.rotary_dim = head_dim;
        full.pair_span = 0;
        full.inv_freq.resize(std::size_t(head_dim / 2), 0.0f);
        full.validate();
        std::mt19937 rng(7);
        auto x = make_tensor<T>(f, 6, 2, rng);
        // The full-rotation call reads every channel: the pass-through ones get finite non-zero
        // values (the subnormals stay).
        for (auto& v : x.buf)
            if (std::isnan(ropekit::to_float(v)) || ropekit::to_float(v) == 0.0f)
                v = ropekit::from_float<T>(-0.75f);
        auto y = copy_of(x);
        const auto t_part = ropekit::cos_sin_table::for_range(f, 0, 64);
        const auto t_full = ropekit::cos_sin_table::for_range(full, 0, 64);
        ropekit::apply_rope<arch>(t_part, x.view, positions::contiguous(10), 0, 6);
        ropekit::apply_rope<arch>(t_full, y.view, positions::contiguous(10), 0, 6);
        bool same = true;
        for (std::size_t i = 0; i < x.buf.size(); ++i)
            same = same && raw_bits(x.buf[i]) == raw_bits(y.buf[i]);
        CHECK(same);
    }
}

TEST_CASE("geometry: bad geometry gets a named error", "[rope][geometry][errors]") {
    using ropekit_test::thrown_field;
    const geometry mla{192, 64, rope_layout::neox, 0, 128, "mla"};
    const auto f = make_freqs(mla, 64);
    std::vector<float> buf(4 * 2 * 192, 0.5f);
    const head_view<float> fits{buf.data(), 4, 2, 192, 2 * 192, 192};
    // A view of 160 channels: rotary_dim 64 fits, the slice [128, 192) does not.
    const head_view<float> narrow{buf.data(), 4, 2, 160, 2 * 192, 192};
    const auto table = ropekit::cos_sin_table::for_range(f, 0, 16);
    const positions pos = positions::contiguous(0);
    CHECK_NOTHROW(ropekit::validate_rope_call(table, fits, pos, 0, 4));
    CHECK(thrown_field<ropekit::error>(
              [&] { ropekit::validate_rope_call(table, narrow, pos, 0, 4); }) == "rotated_extent");
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_rope_call(table, fits, narrow, pos, 0, 4);
          }) == "rotated_extent");
    CHECK(thrown_field<ropekit::error>(
              [&] { ropekit::validate_rope_call(f, narrow, pos, 0, 4); }) == "rotated_extent");
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_rope_call(f, fits, narrow, pos, 0, 4);
          }) == "rotated_extent");
    // The kernels ROPEKIT_ASSERT the same (and skip the call when asserts are compiled out).
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, narrow, pos, 0, 4),
                    ropekit_test::assert_failure);
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(f, narrow, pos, 0, 4), ropekit_test::assert_failure);
    // Frequencies: a span shorter than the pairs, a GPT-J span, a negative offset, a slice past
    // head_dim.
    auto bad = f;
    bad.pair_span = 31;
    CHECK(thrown_field<ropekit::error>([&] { bad.validate(); }) == "pair_span");
    bad = f;
    bad.layout = rope_layout::gptj;
    bad.pair_span = 40;
    CHECK(thrown_field<ropekit::error>([&] { bad.validate(); }) == "pair_span");
    bad = f;
    bad.rotary_offset = -1;
    CHECK(thrown_field<ropekit::error>([&] { bad.validate(); }) == "rotary_offset");
    bad = f;
    bad.rotary_offset = 129;
    CHECK(thrown_field<ropekit::error>([&] { bad.validate(); }) == "head_dim");
    // rebase_keys needs the same geometry on both sides.
    auto other = f;
    other.rotary_offset = 0;
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_rebase_call(f, other, fits, pos, 0, 4);
          }) == "rotary_offset");
    other = f;
    other.pair_span = 40;
    CHECK(thrown_field<ropekit::error>(
              [&] { ropekit::validate_rebase_call(f, other, fits, pos, 0, 4); }) == "pair_span");
    CHECK_THROWS_AS(ropekit::rebase_keys<arch>(f, other, fits, pos, 0, 4),
                    ropekit_test::assert_failure);
}

// ---------------------------------------------------------------------------------------------
// M-RoPE kernels.

namespace {

// Mixed text / image ids like get_rope_index's: text tokens with three equal ids, image tokens
// with (start, start + row, start + column), laid out (3, tokens).
std::vector<std::int64_t> mixed_ids(std::int64_t tokens, std::int64_t start) {
    std::vector<std::int64_t> id(std::size_t(3 * tokens));
    std::int64_t next = start;
    std::int64_t t = 0;
    while (t < tokens) {
        for (int j = 0; j < 3 && t < tokens; ++j, ++t)  // 3 text tokens
            id[std::size_t(t)] = id[std::size_t(tokens + t)] = id[std::size_t(2 * tokens + t)] =
                next++;
        const std::int64_t gh = 2, gw = 3;  // a 2 x 3 image
        for (std::int64_t y = 0; y < gh; ++y)
            for (std::int64_t x = 0; x < gw && t < tokens; ++x, ++t) {
                id[std::size_t(t)] = next;
                id[std::size_t(tokens + t)] = next + y;
                id[std::size_t(2 * tokens + t)] = next + x;
            }
        next += 3;
    }
    return id;
}

struct mrope_case {
    int head_dim;
    int rotary_dim;
    rope_layout layout;
    int offset;
    mrope_sections sections;
    const char* what;
};

std::vector<mrope_case> mrope_cases() {
    return {
        {128, 128, rope_layout::neox, 0, {{16, 24, 24}, mrope_layout::contiguous}, "qwen2-vl"},
        {128, 128, rope_layout::neox, 0, {{24, 20, 20}, mrope_layout::interleaved}, "qwen3-vl"},
        {128, 128, rope_layout::gptj, 0, {{16, 24, 24}, mrope_layout::contiguous}, "gptj-contig"},
        {128, 128, rope_layout::gptj, 0, {{24, 20, 20}, mrope_layout::interleaved}, "gptj-inter"},
        {50, 42, rope_layout::neox, 5, {{5, 8, 8}, mrope_layout::contiguous}, "21pairs-contig"},
        {50, 42, rope_layout::neox, 3, {{7, 7, 7}, mrope_layout::interleaved}, "21pairs-inter"},
        {80, 72, rope_layout::gptj, 8, {{12, 12, 12}, mrope_layout::interleaved}, "36pairs-gptj"},
        {600, 600, rope_layout::neox, 0, {{100, 100, 100}, mrope_layout::interleaved}, "300-inter"},
        {600, 600, rope_layout::neox, 0, {{250, 30, 20}, mrope_layout::contiguous}, "300-contig"},
    };
}

template <class T>
std::string run_mrope_case(const mrope_case& mc, bool qk, int id_kind, std::uint32_t seed) {
    std::mt19937 rng(seed);
    const geometry g{mc.head_dim, mc.rotary_dim, mc.layout, 0, mc.offset, mc.what};
    const auto f = make_freqs(g, mc.rotary_dim, 1e6);
    const std::int64_t tokens = 23;
    auto q = make_tensor<T>(f, tokens, 4, rng);
    auto k = make_tensor<T>(f, tokens, 2, rng);
    auto qr = copy_of(q), kr = copy_of(k);
    const auto id64 = mixed_ids(tokens, 40);
    std::vector<std::int32_t> id32(id64.begin(), id64.end());
    const mrope_positions pos = id_kind == 0   ? mrope_positions::ids(id64.data(), tokens)
                                : id_kind == 1 ? mrope_positions::ids(id32.data(), tokens)
                                               : mrope_positions::contiguous(33);
    const auto table = ropekit::cos_sin_table::for_range(f, 30, 60);
    const std::int64_t t0 = 2, t1 = tokens;
    if (qk) {
        ropekit::validate_mrope_call(table, mc.sections, q.view, k.view, pos, t0, t1);
        ropekit::apply_mrope_qk<arch>(table, mc.sections, q.view, k.view, pos, t0, t1);
    } else {
        ropekit::validate_mrope_call(table, mc.sections, q.view, pos, t0, t1);
        ropekit::apply_mrope<arch>(table, mc.sections, q.view, pos, t0, t1);
        ropekit::apply_mrope<arch>(table, mc.sections, k.view, pos, t0, t1);
    }
    ropekit::apply_mrope_reference(f, mc.sections, qr.view, pos, t0, t1);
    ropekit::apply_mrope_reference(f, mc.sections, kr.view, pos, t0, t1);
    std::string err = compare(q, qr, f, t0, t1);
    if (err.empty()) err = compare(k, kr, f, t0, t1);
    if (!err.empty())
        err = std::string(mc.what) + " " + ropekit::storage_name<T>() + (qk ? " qk" : "") +
              " ids kind " + std::to_string(id_kind) + ": " + err;
    return err;
}

}  // namespace

TEMPLATE_TEST_CASE("apply_mrope matches the reference in both layouts", "[rope][mrope]", float,
                   bfloat16, half) {
    using T = TestType;
    std::uint32_t seed = 500;
    for (const mrope_case& mc : mrope_cases())
        for (bool qk : {false, true})
            for (int id_kind : {0, 1, 2}) {
                const std::string err = run_mrope_case<T>(mc, qk, id_kind, seed++);
                INFO(err);
                CHECK(err.empty());
            }
}

TEMPLATE_TEST_CASE("apply_mrope with three equal ids is apply_rope bit for bit", "[rope][mrope]",
                   float, bfloat16, half) {
    using T = TestType;
    for (const mrope_case& mc : mrope_cases()) {
        INFO(mc.what);
        const geometry g{mc.head_dim, mc.rotary_dim, mc.layout, 0, mc.offset, mc.what};
        const auto f = make_freqs(g, mc.rotary_dim, 1e6);
        const auto table = ropekit::cos_sin_table::for_range(f, 0, 4096);
        std::mt19937 rng(9);
        const std::int64_t tokens = 19;
        auto q = make_tensor<T>(f, tokens, 4, rng);
        auto k = make_tensor<T>(f, tokens, 2, rng);
        auto q1 = copy_of(q), k1 = copy_of(k), q2 = copy_of(q), k2 = copy_of(k);
        std::vector<std::int64_t> one_d(static_cast<std::size_t>(tokens));
        for (auto& p : one_d) p = std::uniform_int_distribution<std::int64_t>(0, 4095)(rng);
        std::vector<std::int64_t> three(3 * one_d.size());
        for (int a = 0; a < 3; ++a)
            std::copy(one_d.begin(), one_d.end(), three.begin() + a * tokens);
        ropekit::apply_rope_qk<arch>(table, q.view, k.view, positions::ids(one_d.data()), 0,
                                     tokens);
        ropekit::apply_mrope_qk<arch>(table, mc.sections, q1.view, k1.view,
                                      mrope_positions::ids(three.data(), tokens), 0, tokens);
        // Contiguous text positions: the same as positions::contiguous.
        auto q3 = copy_of(q2);
        ropekit::apply_rope<arch>(table, q2.view, positions::contiguous(100), 0, tokens);
        ropekit::apply_mrope<arch>(table, mc.sections, q3.view, mrope_positions::contiguous(100), 0,
                                   tokens);
        bool same = true;
        for (std::size_t i = 0; i < q.buf.size(); ++i)
            same = same && raw_bits(q.buf[i]) == raw_bits(q1.buf[i]) &&
                   raw_bits(q2.buf[i]) == raw_bits(q3.buf[i]);
        for (std::size_t i = 0; i < k.buf.size(); ++i)
            same = same && raw_bits(k.buf[i]) == raw_bits(k1.buf[i]);
        CHECK(same);
        (void)k2;
    }
}

TEST_CASE("apply_mrope: bad input gets a named error", "[rope][mrope][errors]") {
    using ropekit_test::thrown_field;
    const geometry g{128, 128, rope_layout::neox, 0, 0, "qwen"};
    const auto f = make_freqs(g, 128, 1e6);
    const auto table = ropekit::cos_sin_table::for_range(f, 0, 64);
    std::vector<float> buf(4 * 2 * 128, 0.25f);
    const head_view<float> x{buf.data(), 4, 2, 128, 256, 128};
    const mrope_sections ok{{16, 24, 24}, mrope_layout::contiguous};
    std::vector<std::int64_t> ids = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    CHECK_NOTHROW(
        ropekit::validate_mrope_call(table, ok, x, mrope_positions::ids(ids.data(), 4), 0, 4));
    const mrope_sections short_sum{{16, 24, 23}, mrope_layout::contiguous};
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_mrope_call(table, short_sum, x, mrope_positions::ids(ids.data(), 4),
                                           0, 4);
          }) == "mrope_section");
    const mrope_sections long_h{{0, 23, 41}, mrope_layout::interleaved};
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_mrope_call(table, long_h, x, mrope_positions::ids(ids.data(), 4), 0,
                                           4);
          }) == "mrope_section");
    CHECK_THROWS_AS(
        ropekit::apply_mrope<arch>(table, short_sum, x, mrope_positions::ids(ids.data(), 4), 0, 4),
        ropekit_test::assert_failure);
    // An id outside the table on one axis only (the width id of token 2).
    auto far = ids;
    far[10] = 64;
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_mrope_call(table, ok, x, mrope_positions::ids(far.data(), 4), 0, 4);
          }) == "positions");
    CHECK_THROWS_AS(
        ropekit::apply_mrope<arch>(table, ok, x, mrope_positions::ids(far.data(), 4), 0, 4),
        ropekit_test::assert_failure);
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_mrope_call(table, ok, x, mrope_positions::contiguous(61), 0, 4);
          }) == "positions");
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_mrope_call(
                  table, ok, x, mrope_positions::ids(static_cast<std::int64_t*>(nullptr), 4), 0, 4);
          }) == "positions");
    const std::int64_t p = 0;
    const auto list = ropekit::cos_sin_table::for_positions(f, &p, 1);
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_mrope_call(list, ok, x, mrope_positions::contiguous(0), 0, 1);
          }) == "table");
    const head_view<float> narrow{buf.data(), 4, 2, 96, 256, 128};
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_mrope_call(table, ok, narrow, mrope_positions::contiguous(0), 0, 4);
          }) == "rotary_dim");
    CHECK(thrown_field<ropekit::error>([&] {
              ropekit::validate_mrope_call(table, ok, x, x, mrope_positions::contiguous(0), 0, 5);
          }) == "token_range");
}

TEST_CASE("geometry: the gap prefetch starts after the rotated slice, not the head start",
          "[rope][geometry]") {
    // DeepSeek-MLA-shaped q of a packed q|k|v buffer: 32 q heads of 192 channels rotated at
    // [128, 192), then 16 more heads per token the call skips. The gap of token t runs from the
    // end of its last rotated slice to the start of token t + 1's first one.
    const int hd = 192, heads = 32, stride_heads = 48;
    const std::int64_t tokens = 512;
    std::vector<float> buf(std::size_t(tokens) * stride_heads * hd);
    const head_view<float> q{buf.data(), tokens, heads, hd, std::ptrdiff_t(stride_heads) * hd, hd};
    for (int offset : {0, 128}) {
        const auto tg = ropekit::detail::target_of<arch>(q, offset);
        CHECK(tg.data == buf.data() + offset);
        const int extent = offset == 0 ? hd : 64;  // whole head, or the 64-channel slice
        const auto gap =
            ropekit::detail::find_rope_gap<arch>(extent / 2, extent, &tg, 1, 0, tokens);
        REQUIRE(gap.active());
        const auto addr = [&](std::int64_t t, int h, int c) {
            return reinterpret_cast<std::uintptr_t>(buf.data() + t * q.token_stride +
                                                    h * q.head_stride + c);
        };
        CHECK(gap.begin == addr(0, heads - 1, hd));
        CHECK(gap.end == addr(1, 0, offset));
        CHECK(gap.stride == std::uintptr_t(q.token_stride) * sizeof(float));
    }
}
