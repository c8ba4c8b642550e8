// SPDX-License-Identifier: Apache-2.0
// Rotary kernels (ropekit/rope.hpp) and SIMD storage conversions against the naive double
// reference, built once per instruction set (scalar, SSE2, AVX2, AVX-512): every layout x
// storage type x head_dim x rotary_dim x stride layout x position kind x angle source, pair
// counts 0..2x the vector width with misaligned starts, plus the algebraic properties the
// engines rely on (composition, inverse, norm, relative positions) and the precondition checks.
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "ropekit/detail/simd_storage.hpp"
#include "ropekit/rope.hpp"
#include "ropekit/rope_reference.hpp"
#include "ropekit/view.hpp"

namespace {

using ropekit::bfloat16;
using ropekit::half;
using ropekit::head_view;
using ropekit::positions;
using ropekit::rope_layout;
using arch = ropekit::default_arch;

#if ROPEKIT_HAS_XSIMD
constexpr int lanes = int(xsimd::batch<float, arch>::size);
#else
constexpr int lanes = 8;  // the scalar kernels have no width; sweep as if 8
#endif

std::uint32_t bits_of(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
[[maybe_unused]] float float_of(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

template <class T>
std::uint32_t raw_bits(T v) {
    if constexpr (std::is_same_v<T, float>)
        return bits_of(v);
    else
        return v.bits;
}

// Distance in units in the last place between two 16-bit values of the same type (ordered
// integer view of sign-magnitude bits).
template <class T>
long ulp_distance(T a, T b) {
    auto ord = [](std::uint16_t u) { return (u & 0x8000) ? -long(u & 0x7fff) : long(u); };
    return std::labs(ord(a.bits) - ord(b.bits));
}

ropekit::rope_frequencies make_freqs(int head_dim, int rotary_dim, rope_layout layout,
                                     double base = 10000.0) {
    ropekit::rope_frequencies f;
    f.head_dim = head_dim;
    f.rotary_dim = rotary_dim;
    f.layout = layout;
    for (int i = 0; i < rotary_dim / 2; ++i)
        f.inv_freq.push_back(float(std::pow(base, -2.0 * i / rotary_dim)));
    return f;
}

enum class stride_kind { token_major, head_major, padded };
enum class pos_kind { contiguous, ids32, ids64_negative };
enum class source_kind { table, table_free };

const char* name(stride_kind s) {
    return s == stride_kind::token_major  ? "[t][h][d]"
           : s == stride_kind::head_major ? "[h][t][d]"
                                          : "padded";
}
const char* name(pos_kind p) {
    return p == pos_kind::contiguous ? "contiguous" : p == pos_kind::ids32 ? "ids32" : "ids64-neg";
}

// A strided tensor plus everything needed to check one call.
template <class T>
struct tensor_case {
    std::vector<T> buf;
    head_view<T> view;
};

template <class T>
tensor_case<T> make_tensor(std::int64_t tokens, int heads, int head_dim, stride_kind sk,
                           int misalign, std::mt19937& rng) {
    tensor_case<T> tc;
    std::ptrdiff_t ts = 0, hs = 0;
    if (sk == stride_kind::token_major) {
        ts = std::ptrdiff_t(heads) * head_dim;
        hs = head_dim;
    } else if (sk == stride_kind::head_major) {
        ts = head_dim;
        hs = std::ptrdiff_t(std::max<std::int64_t>(tokens, 1)) * head_dim;
    } else {  // rows padded by 3 elements, heads by 5 more (packed-QKV-like)
        hs = head_dim + 3;
        ts = std::ptrdiff_t(heads) * hs + 5;
    }
    const std::size_t extent = std::size_t(misalign) +
                               std::size_t(std::max<std::int64_t>(tokens, 1) * ts + heads * hs) + 8;
    tc.buf.resize(extent);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (auto& v : tc.buf) v = ropekit::from_float<T>(u(rng));
    tc.view = head_view<T>{tc.buf.data() + misalign, tokens, heads, head_dim, ts, hs};
    return tc;
}

// Checks a kernel output against the reference output (both from the same input): rotated
// elements within tolerance, everything else in the buffer bit-identical.
template <class T>
std::string compare(const tensor_case<T>& got, const tensor_case<T>& want, int rotary_dim,
                    std::int64_t t0, std::int64_t t1) {
    const head_view<T>& v = got.view;
    std::vector<char> rotated(got.buf.size(), 0);
    const std::ptrdiff_t off = v.data - got.buf.data();
    for (std::int64_t t = t0; t < t1; ++t)
        for (int h = 0; h < v.heads; ++h)
            for (int c = 0; c < rotary_dim; ++c)
                rotated[std::size_t(off + t * v.token_stride + h * v.head_stride + c)] = 1;
    for (std::int64_t t = t0; t < t1; ++t) {
        for (int h = 0; h < v.heads; ++h) {
            const std::size_t row = std::size_t(off + t * v.token_stride + h * v.head_stride);
            double max_abs = 0.0;
            for (int c = 0; c < rotary_dim; ++c)
                max_abs = std::max(
                    max_abs, std::fabs(double(ropekit::to_float(want.buf[row + std::size_t(c)]))));
            for (int c = 0; c < rotary_dim; ++c) {
                const T g = got.buf[row + std::size_t(c)], w = want.buf[row + std::size_t(c)];
                bool ok;
                if constexpr (std::is_same_v<T, float>)
                    ok = std::fabs(double(g) - double(w)) <= 1e-6 * max_abs;
                else {
                    // At most 1 ulp of the 16-bit type. The only exception is an element whose
                    // exact value is far below max |x| (cancellation): there the float-math
                    // error, bounded like the fp32 case by 1e-6 max |x|, can exceed that
                    // element's own 16-bit ulp.
                    ok = ulp_distance(g, w) <= 1 ||
                         std::fabs(double(ropekit::to_float(g)) - double(ropekit::to_float(w))) <=
                             1e-6 * max_abs;
                }
                if (!ok) {
                    std::ostringstream os;
                    os << "token " << t << " head " << h << " channel " << c << ": got "
                       << ropekit::to_float(g) << " want " << ropekit::to_float(w) << " (max |x| "
                       << max_abs << ")";
                    return os.str();
                }
            }
        }
    }
    for (std::size_t i = 0; i < got.buf.size(); ++i) {
        if (!rotated[i] && raw_bits(got.buf[i]) != raw_bits(want.buf[i])) {
            std::ostringstream os;
            os << "element " << i << " outside the rotated channels changed";
            return os.str();
        }
    }
    return {};
}

template <class T>
std::string run_case(rope_layout layout, int head_dim, int rotary_dim, stride_kind sk, pos_kind pk,
                     source_kind src, std::int64_t tokens, int heads, std::int64_t t0,
                     std::int64_t t1, int misalign, std::uint32_t seed) {
    std::mt19937 rng(seed);
    const auto freqs = make_freqs(head_dim, rotary_dim, layout);
    tensor_case<T> got = make_tensor<T>(tokens, heads, head_dim, sk, misalign, rng);
    tensor_case<T> want = got;
    want.view.data = want.buf.data() + (got.view.data - got.buf.data());
    std::vector<std::int32_t> id32(static_cast<std::size_t>(tokens));
    std::vector<std::int64_t> id64(static_cast<std::size_t>(tokens));
    positions pos = positions::contiguous(0);
    std::int64_t lo = 0, hi = 0;
    if (pk == pos_kind::contiguous) {
        const std::int64_t start = std::uniform_int_distribution<std::int64_t>(0, 70000)(rng);
        pos = positions::contiguous(start);
        lo = start;
        hi = start + tokens;
    } else if (pk == pos_kind::ids32) {
        // Unordered ids with repeats, near an arbitrary base (the table covers only their span).
        const std::int32_t base = std::uniform_int_distribution<std::int32_t>(0, 60000)(rng);
        std::uniform_int_distribution<std::int32_t> d(base, base + 40);
        for (auto& p : id32) p = d(rng);
        pos = positions::ids(id32.data());
        lo = base;
        hi = base + 41;
    } else {
        // Negative deltas and positions around zero.
        const std::int64_t base = std::uniform_int_distribution<std::int64_t>(-6000, 0)(rng);
        std::uniform_int_distribution<std::int64_t> d(base, base + 40);
        for (auto& p : id64) p = d(rng);
        pos = positions::ids(id64.data());
        lo = base;
        hi = base + 41;
    }
    if (src == source_kind::table) {
        const auto table = ropekit::cos_sin_table::for_range(freqs, lo, hi - lo);
        ropekit::apply_rope<arch>(table, got.view, pos, t0, t1);
    } else {
        ropekit::apply_rope<arch>(freqs, got.view, pos, t0, t1);
    }
    ropekit::apply_rope_reference(freqs, want.view, pos, t0, t1);
    std::string err = compare(got, want, rotary_dim, t0, t1);
    if (!err.empty()) {
        std::ostringstream os;
        os << ropekit::to_string(layout) << " " << ropekit::storage_name<T>() << " head_dim "
           << head_dim << " rotary_dim " << rotary_dim << " " << name(sk) << " " << name(pk)
           << (src == source_kind::table ? " table" : " table-free") << " tokens " << tokens
           << " heads " << heads << " range [" << t0 << "," << t1 << ") misalign " << misalign
           << ": " << err;
        return os.str();
    }
    return err;
}

}  // namespace

TEMPLATE_TEST_CASE("apply_rope matches the double reference over the full grid", "[rope]", float,
                   bfloat16, half) {
    using T = TestType;
    std::uint32_t seed = 1;
    int cases = 0;
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        for (int head_dim : {64, 72, 80, 96, 120, 128, 256, 576}) {
            for (int rotary_dim : {head_dim, head_dim / 2, 20}) {
                if (rotary_dim % 2) continue;
                for (stride_kind sk :
                     {stride_kind::token_major, stride_kind::head_major, stride_kind::padded}) {
                    for (pos_kind pk :
                         {pos_kind::contiguous, pos_kind::ids32, pos_kind::ids64_negative}) {
                        for (source_kind src : {source_kind::table, source_kind::table_free}) {
                            const std::int64_t tokens = 5;
                            const std::string err =
                                run_case<T>(layout, head_dim, rotary_dim, sk, pk, src, tokens, 3, 1,
                                            4, int(seed % 3), seed);
                            ++seed;
                            ++cases;
                            if (!err.empty()) FAIL(err);
                        }
                    }
                }
            }
        }
    }
    CHECK(cases == 2 * 8 * 3 * 3 * 3 * 2);
}

TEMPLATE_TEST_CASE("apply_rope: pair counts 0..2x the vector width, misaligned, tails", "[rope]",
                   float, bfloat16, half) {
    using T = TestType;
    std::uint32_t seed = 100;
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        // rotary_dim 2 .. 4 * lanes covers 1 .. 2*lanes pairs (neox) and 2 .. 4*lanes channels.
        for (int rotary_dim = 2; rotary_dim <= 4 * lanes + 2; rotary_dim += 2) {
            for (int extra : {0, 6}) {
                for (int misalign : {0, 1, 3}) {
                    for (source_kind src : {source_kind::table, source_kind::table_free}) {
                        const std::string err = run_case<T>(
                            layout, rotary_dim + extra, rotary_dim, stride_kind::padded,
                            pos_kind::ids64_negative, src, 3, 2, 0, 3, misalign, seed++);
                        if (!err.empty()) FAIL(err);
                    }
                }
            }
        }
    }
    // Token counts 0 .. 2 * lanes, including empty ranges and ranges not starting at 0.
    for (std::int64_t tokens = 0; tokens <= 2 * lanes; ++tokens) {
        for (std::int64_t t0 : {std::int64_t(0), tokens / 2}) {
            const std::string err = run_case<T>(rope_layout::neox, 64, 64, stride_kind::token_major,
                                                pos_kind::contiguous, source_kind::table_free,
                                                tokens, 2, t0, tokens, 1, seed++);
            if (!err.empty()) FAIL(err);
        }
    }
}

TEMPLATE_TEST_CASE("apply_rope: zero heads and empty ranges touch nothing", "[rope]", float,
                   bfloat16, half) {
    using T = TestType;
    const auto freqs = make_freqs(64, 64, rope_layout::neox);
    head_view<T> empty{nullptr, 0, 4, 64, 256, 64};
    ropekit::apply_rope<arch>(freqs, empty, positions::contiguous(0), 0, 0);
    head_view<T> no_heads{nullptr, 7, 0, 64, 256, 64};
    ropekit::apply_rope<arch>(freqs, no_heads, positions::contiguous(0), 0, 7);
    std::vector<T> buf(4 * 64, ropekit::from_float<T>(1.0f));
    ropekit::apply_rope<arch>(freqs, head_view<T>::packed(buf.data(), 1, 4, 64),
                              positions::contiguous(5), 0, 0);
    for (const T& v : buf) CHECK(ropekit::to_float(v) == 1.0f);
}

TEST_CASE("table-free angles stay accurate at large positions", "[rope]") {
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        for (std::int64_t p : {std::int64_t(131071), std::int64_t(1) << 20,
                               (std::int64_t(1) << 28) + 12345, -(std::int64_t(1) << 27) - 7}) {
            const auto freqs = make_freqs(128, 128, layout, 500000.0);
            std::mt19937 rng(static_cast<std::uint32_t>(p));
            auto got = make_tensor<float>(2, 4, 128, stride_kind::token_major, 0, rng);
            auto want = got;
            want.view.data = want.buf.data();
            std::vector<std::int64_t> ids = {p, p + 1};
            ropekit::apply_rope<arch>(freqs, got.view, positions::ids(ids.data()), 0, 2);
            ropekit::apply_rope_reference(freqs, want.view, positions::ids(ids.data()), 0, 2);
            const std::string err = compare(got, want, 128, 0, 2);
            INFO("position " << p << " " << ropekit::to_string(layout));
            INFO(err);
            CHECK(err.empty());
        }
    }
}

TEMPLATE_TEST_CASE("16-bit storage and range tables stay accurate at large positions", "[rope]",
                   float, bfloat16, half) {
    // The same tolerances as the grid (fp32 1e-6 of the row's max |x|, 16-bit one ulp), at
    // positions far from the grid's, through both angle sources: a range table holding just
    // the rows needed (accurate_cos_sin) and the table-free SIMD reduction.
    using T = TestType;
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        for (std::int64_t p :
             {std::int64_t(131071), (std::int64_t(1) << 24) - 1, (std::int64_t(1) << 28) + 12345,
              (std::int64_t(1) << 29) - 2, -(std::int64_t(1) << 27) - 7}) {
            for (source_kind src : {source_kind::table, source_kind::table_free}) {
                const auto freqs = make_freqs(128, 128, layout, 500000.0);
                std::mt19937 rng(static_cast<std::uint32_t>(p) + 17);
                auto got = make_tensor<T>(2, 3, 128, stride_kind::padded, 1, rng);
                auto want = got;
                want.view.data = want.buf.data() + 1;
                std::vector<std::int64_t> ids = {p + 1, p};
                const positions pos = positions::ids(ids.data());
                if (src == source_kind::table) {
                    const auto table = ropekit::cos_sin_table::for_range(freqs, p, 2);
                    ropekit::validate_positions(table, pos, 0, 2);
                    ropekit::apply_rope<arch>(table, got.view, pos, 0, 2);
                } else {
                    ropekit::validate_positions(freqs, pos, 0, 2);
                    ropekit::apply_rope<arch>(freqs, got.view, pos, 0, 2);
                }
                ropekit::apply_rope_reference(freqs, want.view, pos, 0, 2);
                const std::string err = compare(got, want, 128, 0, 2);
                INFO("position " << p << " " << ropekit::to_string(layout) << " "
                                 << (src == source_kind::table ? "table" : "table-free") << ": "
                                 << err);
                CHECK(err.empty());
            }
        }
    }
}

TEMPLATE_TEST_CASE("more than rope_chunk_pairs pairs: the multi-pass path", "[rope]", float,
                   bfloat16, half) {
    // rotary_dim 1040 = 520 pairs: passes of 256, 256 and 8 pairs (576 = 288 pairs, in the grid,
    // gives 256 + 32); partial rotary 1040 of 1152; every position kind and angle source.
    using T = TestType;
    static_assert(ropekit::detail::rope_chunk_pairs == 256, "update the dims below");
    std::uint32_t seed = 500;
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        for (auto [head_dim, rotary_dim] :
             {std::pair{1040, 1040}, std::pair{1152, 1040}, std::pair{1152, 1152}}) {
            for (stride_kind sk : {stride_kind::token_major, stride_kind::padded}) {
                for (pos_kind pk : {pos_kind::contiguous, pos_kind::ids64_negative}) {
                    for (source_kind src : {source_kind::table, source_kind::table_free}) {
                        const std::string err = run_case<T>(layout, head_dim, rotary_dim, sk, pk,
                                                            src, 4, 2, 1, 4, int(seed % 3), seed);
                        ++seed;
                        if (!err.empty()) FAIL(err);
                    }
                }
            }
        }
    }
}

TEMPLATE_TEST_CASE("multi-pass: fused q+k equals separate calls, rebase_keys matches reference",
                   "[rope]", float, bfloat16) {
    using T = TestType;
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        const int d = 1152, r = 1040, hq = 4, hk = 2;
        const std::int64_t tokens = 5;
        const auto freqs = make_freqs(d, r, layout);
        const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 64);
        std::mt19937 rng(31);
        std::uniform_real_distribution<float> u(-1, 1);
        std::vector<T> qkv(std::size_t(tokens) * (hq + 2 * hk) * d);
        for (auto& v : qkv) v = ropekit::from_float<T>(u(rng));
        const std::ptrdiff_t ts = (hq + 2 * hk) * d;
        for (int src = 0; src < 2; ++src) {
            std::vector<T> a = qkv, b = qkv;
            const head_view<T> qa{a.data(), tokens, hq, d, ts, d};
            const head_view<T> ka{a.data() + hq * d, tokens, hk, d, ts, d};
            const head_view<T> qb{b.data(), tokens, hq, d, ts, d};
            const head_view<T> kb{b.data() + hq * d, tokens, hk, d, ts, d};
            const positions pos = positions::contiguous(40);
            if (src == 0) {
                ropekit::apply_rope_qk<arch>(table, qa, ka, pos, 1, 5);
                ropekit::apply_rope<arch>(table, qb, pos, 1, 5);
                ropekit::apply_rope<arch>(table, kb, pos, 1, 5);
            } else {
                ropekit::apply_rope_qk<arch>(freqs, qa, ka, pos, 1, 5);
                ropekit::apply_rope<arch>(freqs, qb, pos, 1, 5);
                ropekit::apply_rope<arch>(freqs, kb, pos, 1, 5);
            }
            bool same = true;
            for (std::size_t i = 0; i < a.size(); ++i)
                same = same && raw_bits(a[i]) == raw_bits(b[i]);
            INFO(ropekit::to_string(layout) << (src == 0 ? " table" : " table-free"));
            CHECK(same);
        }
        // rebase_keys: the second pass must read inv_freq and inv_from at the pass offset.
        const auto to = make_freqs(d, r, layout, 40000.0);
        auto k = make_tensor<T>(3, 2, d, stride_kind::head_major, 2, rng);
        auto ref = k;
        ref.view.data = ref.buf.data() + 2;
        std::vector<std::int32_t> ids = {9000, -4, 123};
        ropekit::rebase_keys<arch>(freqs, to, k.view, positions::ids(ids.data()), 0, 3);
        ropekit::rebase_keys_reference(freqs, to, ref.view, positions::ids(ids.data()), 0, 3);
        const std::string err = compare(k, ref, r, 0, 3);
        INFO(ropekit::to_string(layout) << " rebase_keys: " << err);
        CHECK(err.empty());
    }
}

TEMPLATE_TEST_CASE("fused q+k (GQA) equals two separate calls, bit for bit", "[rope]", float,
                   bfloat16, half) {
    using T = TestType;
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        const auto freqs = make_freqs(128, 96, layout);
        const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 64);
        std::mt19937 rng(7);
        // Packed QKV buffer: 8 q heads, 2 k heads, 2 v heads per token.
        const int hq = 8, hk = 2, d = 128;
        const std::int64_t tokens = 9;
        std::vector<T> qkv(std::size_t(tokens) * (hq + 2 * hk) * d);
        std::uniform_real_distribution<float> u(-1, 1);
        for (auto& v : qkv) v = ropekit::from_float<T>(u(rng));
        const std::ptrdiff_t ts = (hq + 2 * hk) * d;
        for (int src = 0; src < 2; ++src) {
            std::vector<T> a = qkv, b = qkv;
            auto views = [&](std::vector<T>& buf) {
                return std::make_pair(head_view<T>{buf.data(), tokens, hq, d, ts, d},
                                      head_view<T>{buf.data() + hq * d, tokens, hk, d, ts, d});
            };
            auto [qa, ka] = views(a);
            auto [qb, kb] = views(b);
            const positions pos = positions::contiguous(17);
            if (src == 0) {
                ropekit::apply_rope_qk<arch>(table, qa, ka, pos, 2, 9);
                ropekit::apply_rope<arch>(table, qb, pos, 2, 9);
                ropekit::apply_rope<arch>(table, kb, pos, 2, 9);
            } else {
                ropekit::apply_rope_qk<arch>(freqs, qa, ka, pos, 2, 9);
                ropekit::apply_rope<arch>(freqs, qb, pos, 2, 9);
                ropekit::apply_rope<arch>(freqs, kb, pos, 2, 9);
            }
            bool same = true;
            for (std::size_t i = 0; i < a.size(); ++i)
                same = same && raw_bits(a[i]) == raw_bits(b[i]);
            CHECK(same);
        }
    }
}

TEMPLATE_TEST_CASE("fused q+k on a large packed QKV buffer: same bits, v heads untouched", "[rope]",
                   float, bfloat16) {
    // Large enough (> 2 MiB rotated) for the kernels to prefetch the v heads between tokens.
    using T = TestType;
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        const auto freqs = make_freqs(128, 128, layout);
        const int hq = 8, hk = 2, d = 128;
        const std::int64_t tokens = 1200;
        const auto table = ropekit::cos_sin_table::for_range(freqs, 0, tokens);
        std::mt19937 rng(11);
        std::uniform_real_distribution<float> u(-1, 1);
        std::vector<T> qkv(std::size_t(tokens) * (hq + 2 * hk) * d);
        for (auto& v : qkv) v = ropekit::from_float<T>(u(rng));
        const std::ptrdiff_t ts = (hq + 2 * hk) * d;
        std::vector<T> a = qkv, b = qkv;
        const positions pos = positions::contiguous(0);
        ropekit::apply_rope_qk<arch>(table, head_view<T>{a.data(), tokens, hq, d, ts, d},
                                     head_view<T>{a.data() + hq * d, tokens, hk, d, ts, d}, pos, 0,
                                     tokens);
        ropekit::apply_rope<arch>(table, head_view<T>{b.data(), tokens, hq, d, ts, d}, pos, 0,
                                  tokens);
        ropekit::apply_rope<arch>(table, head_view<T>{b.data() + hq * d, tokens, hk, d, ts, d}, pos,
                                  0, tokens);
        bool same = true, v_kept = true;
        for (std::size_t i = 0; i < a.size(); ++i) {
            same = same && raw_bits(a[i]) == raw_bits(b[i]);
            if (std::ptrdiff_t(i) % ts >= (hq + hk) * d)
                v_kept = v_kept && raw_bits(a[i]) == raw_bits(qkv[i]);
        }
        CHECK(same);
        CHECK(v_kept);
    }
}

TEST_CASE("bf16 results round like ropekit::bfloat16: subnormals, zeros, NaNs", "[rope]") {
    // Position 0 rotates by cos 1, sin 0, so every product is exact and the float results are
    // known on every arch: the inputs themselves (up to the sign of zero and NaN quieting).
    // Subnormal and zero results must survive the rounding bit for bit (vcvtne2ps2bf16 would
    // flush the subnormals), in blocks with and without zeros, on the fixed (head_dim 128) and
    // general (96) paths.
    std::mt19937 rng(5);
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        for (int d : {128, 96}) {
            const auto freqs = make_freqs(d, d, layout);
            const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 1);
            const int heads = 6, pairs = d / 2;
            std::vector<bfloat16> x(std::size_t(heads) * d);
            for (int h = 0; h < heads; ++h) {
                for (int i = 0; i < d; ++i) {
                    const bool first = layout == rope_layout::neox ? i < pairs : i % 2 == 0;
                    std::uint16_t bits;
                    const std::uint32_t r = rng();
                    switch (h) {
                        case 0:
                            bits = std::uint16_t(r & 0x807f);
                            break;  // subnormals, zeros
                        case 1:
                            bits = std::uint16_t((r & 0x807f) | 0x0001);
                            break;  // subnormal
                        case 2:
                            bits = std::uint16_t(r & 0x8000);
                            break;  // zeros
                        case 3:
                            bits = i % 7 ? std::uint16_t(0x3f80 | (r & 0x807f)) : 0;
                            break;
                        case 4:  // NaNs (only in the first element of a pair: no NaN sign games)
                            bits = first && i % 3 == 0 ? std::uint16_t(0x7f81 | (r & 0x803f))
                                                       : std::uint16_t(r & 0x8fff);
                            break;
                        default:
                            bits = std::uint16_t(r & 0x7fff & ~0x7f80u) | (r & 0x8000);
                            break;
                    }
                    x[std::size_t(h) * d + i] = bfloat16::from_bits(bits);
                }
            }
            std::vector<bfloat16> want(x.size());
            for (int h = 0; h < heads; ++h) {
                bfloat16* row = x.data() + std::size_t(h) * d;
                bfloat16* out = want.data() + std::size_t(h) * d;
                for (int p = 0; p < pairs; ++p) {
                    const int i0 = layout == rope_layout::neox ? p : 2 * p;
                    const int i1 = layout == rope_layout::neox ? p + pairs : 2 * p + 1;
                    const float a = float(row[i0]), b = float(row[i1]);
                    const float zero = float_of(0);
                    out[i0] = bfloat16(a - b * zero);
                    out[i1] = bfloat16(b + a * zero);
                }
            }
            ropekit::apply_rope<arch>(table, head_view<bfloat16>::packed(x.data(), 1, heads, d),
                                      positions::contiguous(0), 0, 1);
            for (std::size_t i = 0; i < x.size(); ++i) {
                if (x[i].bits != want[i].bits) {
                    INFO("d " << d << " element " << i << " got " << std::hex << x[i].bits
                              << " want " << want[i].bits);
                    REQUIRE(x[i].bits == want[i].bits);
                }
            }
        }
    }
}

TEST_CASE("list tables: one row per token (positions::table_rows)", "[rope]") {
    const auto freqs = make_freqs(80, 80, rope_layout::gptj);
    std::vector<std::int32_t> ids = {5, -3, 1000, 7, 7};
    const auto table = ropekit::cos_sin_table::for_positions(freqs, ids.data(), 5);
    std::mt19937 rng(3);
    auto got = make_tensor<float>(5, 2, 80, stride_kind::head_major, 1, rng);
    auto want = got;
    want.view.data = want.buf.data() + 1;
    ropekit::apply_rope<arch>(table, got.view, positions::table_rows(), 0, 5);
    ropekit::apply_rope_reference(freqs, want.view, positions::ids(ids.data()), 0, 5);
    const std::string err = compare(got, want, 80, 0, 5);
    INFO(err);
    CHECK(err.empty());
}

TEMPLATE_TEST_CASE("rotating by a then b equals rotating by a + b; shifts keep norms",
                   "[rope][delta]", float, bfloat16, half) {
    using T = TestType;
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        const auto freqs = make_freqs(128, 128, layout);
        std::mt19937 rng(11);
        auto x = make_tensor<T>(6, 4, 128, stride_kind::token_major, 0, rng);
        auto y = x;
        y.view.data = y.buf.data();
        std::vector<std::int64_t> a = {0, 100, 4095, 7000, -3, 12}, b = {5, -67, 1, -7000, 900, 0},
                                  ab(6);
        for (int i = 0; i < 6; ++i) ab[std::size_t(i)] = a[std::size_t(i)] + b[std::size_t(i)];
        const std::vector<T> original = x.buf;
        // x: rotate by a (table), then rerotate by b (table-free deltas); y: rotate by a + b once.
        const auto table = ropekit::cos_sin_table::for_range(freqs, -10, 7020);
        ropekit::apply_rope<arch>(table, x.view, positions::ids(a.data()), 0, 6);
        ropekit::rerotate_keys<arch>(freqs, x.view, positions::ids(b.data()), 0, 6);
        ropekit::apply_rope<arch>(freqs, y.view, positions::ids(ab.data()), 0, 6);
        double max_abs = 0, max_diff = 0;
        for (std::size_t i = 0; i < x.buf.size(); ++i) {
            max_abs = std::max(max_abs, std::fabs(double(ropekit::to_float(y.buf[i]))));
            max_diff = std::max(max_diff, std::fabs(double(ropekit::to_float(x.buf[i])) -
                                                    double(ropekit::to_float(y.buf[i]))));
        }
        if constexpr (std::is_same_v<T, float>) {
            CHECK(max_diff <= 1e-5 * max_abs);
        } else {
            // Two roundings to the 16-bit type against one: a couple of ulps of max |x|.
            const double ulp = std::is_same_v<T, bfloat16> ? 0x1p-7 : 0x1p-10;
            CHECK(max_diff <= 2.0 * ulp * max_abs);
        }

        // Repeated shifts: 40 shifts by +37 then the inverse, 40 by -37. Norms stay (no growth
        // per shift, unlike K-shifts that multiply by an attention factor) and the keys return.
        auto z = make_tensor<T>(3, 4, 128, stride_kind::padded, 0, rng);
        const std::vector<T> z0 = z.buf;
        auto norms = [&](const std::vector<T>& buf) {
            std::vector<double> n;
            for (std::int64_t t = 0; t < 3; ++t)
                for (int h = 0; h < 4; ++h) {
                    double s = 0;
                    for (int c = 0; c < 128; ++c) {
                        const double v = ropekit::to_float(
                            buf[std::size_t(t * z.view.token_stride + h * z.view.head_stride + c)]);
                        s += v * v;
                    }
                    n.push_back(std::sqrt(s));
                }
            return n;
        };
        const auto n0 = norms(z0);
        const int shifts = 40;
        for (int i = 0; i < shifts; ++i)
            ropekit::rerotate_keys<arch>(freqs, z.view, positions::constant(37), 0, 3);
        const auto n1 = norms(z.buf);
        for (int i = 0; i < shifts; ++i)
            ropekit::rerotate_keys<arch>(freqs, z.view, positions::constant(-37), 0, 3);
        const double eps = std::is_same_v<T, float>      ? 1e-5
                           : std::is_same_v<T, bfloat16> ? 0x1p-8 * 4
                                                         : 0x1p-11 * 4;
        for (std::size_t i = 0; i < n0.size(); ++i) CHECK(std::fabs(n1[i] / n0[i] - 1.0) <= eps);
        double back = 0, mx = 0;
        for (std::size_t i = 0; i < z.buf.size(); ++i) {
            back = std::max(back, std::fabs(double(ropekit::to_float(z.buf[i])) -
                                            double(ropekit::to_float(z0[i]))));
            mx = std::max(mx, std::fabs(double(ropekit::to_float(z0[i]))));
        }
        const double unit = std::is_same_v<T, float>      ? 1e-7
                            : std::is_same_v<T, bfloat16> ? 0x1p-8
                                                          : 0x1p-11;
        CHECK(back <= 2.0 * shifts * unit * mx);
        (void)original;
    }
}

TEST_CASE("relative-position invariance <R(m)q, R(n)k> = <R(m+t)q, R(n+t)k>", "[rope]") {
    for (rope_layout layout : {rope_layout::neox, rope_layout::gptj}) {
        const auto freqs = make_freqs(128, 128, layout);
        std::mt19937 rng(5);
        std::uniform_real_distribution<float> u(-1, 1);
        std::vector<float> q(128), k(128);
        for (auto& v : q) v = u(rng);
        for (auto& v : k) v = u(rng);
        auto dot_at = [&](std::int64_t m, std::int64_t n) {
            std::vector<float> qq = q, kk = k;
            ropekit::apply_rope<arch>(freqs, head_view<float>::packed(qq.data(), 1, 1, 128),
                                      positions::constant(m), 0, 1);
            ropekit::apply_rope<arch>(freqs, head_view<float>::packed(kk.data(), 1, 1, 128),
                                      positions::constant(n), 0, 1);
            double s = 0;
            for (int i = 0; i < 128; ++i) s += double(qq[std::size_t(i)]) * kk[std::size_t(i)];
            return s;
        };
        double scale = 0;
        for (int i = 0; i < 128; ++i)
            scale += std::fabs(double(q[std::size_t(i)]) * k[std::size_t(i)]);
        for (std::int64_t t : {1, 1000, 65536, 300000}) {
            CHECK(std::fabs(dot_at(10, 3) - dot_at(10 + t, 3 + t)) <= 1e-5 * scale);
            CHECK(std::fabs(dot_at(0, 500) - dot_at(t, 500 + t)) <= 1e-5 * scale);
        }
    }
}

TEST_CASE("gptj equals neox after the channel permutation", "[rope]") {
    const int d = 96, r = 64;
    const auto fn = make_freqs(d, r, rope_layout::neox), fg = make_freqs(d, r, rope_layout::gptj);
    std::mt19937 rng(9);
    std::uniform_real_distribution<float> u(-3, 3);
    const std::int64_t tokens = 4;
    std::vector<float> xn(std::size_t(tokens) * d), xg(xn.size());
    for (auto& v : xn) v = u(rng);
    // neox channel i <-> gptj channel 2i, neox i + r/2 <-> gptj 2i + 1; the rest unchanged.
    auto to_gptj = [&](const std::vector<float>& n) {
        std::vector<float> g(n.size());
        for (std::int64_t t = 0; t < tokens; ++t) {
            const float* a = n.data() + t * d;
            float* b = g.data() + t * d;
            for (int i = 0; i < r / 2; ++i) {
                b[2 * i] = a[i];
                b[2 * i + 1] = a[i + r / 2];
            }
            for (int c = r; c < d; ++c) b[c] = a[c];
        }
        return g;
    };
    xg = to_gptj(xn);
    for (int src = 0; src < 2; ++src) {
        std::vector<float> a = xn, b = xg;
        if (src == 0) {
            ropekit::apply_rope<arch>(fn, head_view<float>::packed(a.data(), tokens, 1, d),
                                      positions::contiguous(33), 0, tokens);
            ropekit::apply_rope<arch>(fg, head_view<float>::packed(b.data(), tokens, 1, d),
                                      positions::contiguous(33), 0, tokens);
        } else {
            const auto tn = ropekit::cos_sin_table::for_range(fn, 0, 64);
            const auto tg = ropekit::cos_sin_table::for_range(fg, 0, 64);
            ropekit::apply_rope<arch>(tn, head_view<float>::packed(a.data(), tokens, 1, d),
                                      positions::contiguous(33), 0, tokens);
            ropekit::apply_rope<arch>(tg, head_view<float>::packed(b.data(), tokens, 1, d),
                                      positions::contiguous(33), 0, tokens);
        }
        const std::vector<float> ag = to_gptj(a);
        double diff = 0;
        for (std::size_t i = 0; i < b.size(); ++i)
            diff = std::max(diff, double(std::fabs(ag[i] - b[i])));
        CHECK(diff <= 3e-6 * 3);
    }
}

TEMPLATE_TEST_CASE("rebase_keys moves keys from one set of frequencies to another", "[rope][delta]",
                   float, bfloat16) {
    using T = TestType;
    const auto from = make_freqs(128, 128, rope_layout::neox, 10000.0);
    const auto to = make_freqs(128, 128, rope_layout::neox, 40000.0);
    std::mt19937 rng(21);
    auto k = make_tensor<T>(7, 2, 128, stride_kind::head_major, 0, rng);
    auto want = k;
    want.view.data = want.buf.data();
    auto fresh = k;
    fresh.view.data = fresh.buf.data();
    const positions pos = positions::contiguous(3000);
    ropekit::apply_rope<arch>(from, k.view, pos, 0, 7);
    ropekit::rebase_keys<arch>(from, to, k.view, pos, 0, 7);
    ropekit::apply_rope<arch>(to, fresh.view, pos, 0, 7);
    double max_abs = 0, diff = 0;
    for (std::size_t i = 0; i < k.buf.size(); ++i) {
        max_abs = std::max(max_abs, std::fabs(double(ropekit::to_float(fresh.buf[i]))));
        diff = std::max(diff, std::fabs(double(ropekit::to_float(k.buf[i])) -
                                        double(ropekit::to_float(fresh.buf[i]))));
    }
    CHECK(diff <= (std::is_same_v<T, float> ? 1e-5 : 2 * 0x1p-7) * max_abs);
    // Against its own reference (one rotation, one rounding).
    ropekit::apply_rope<arch>(from, want.view, pos, 0, 7);
    auto ref = want;
    ref.view.data = ref.buf.data();
    ropekit::rebase_keys<arch>(from, to, want.view, pos, 0, 7);
    ropekit::rebase_keys_reference(from, to, ref.view, pos, 0, 7);
    const std::string err = compare(want, ref, 128, 0, 7);
    INFO(err);
    CHECK(err.empty());
}

TEST_CASE("threads over disjoint token ranges on one shared table equal one call",
          "[rope][threads]") {
    const auto freqs = make_freqs(128, 128, rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 512);
    std::mt19937 rng(2);
    auto a = make_tensor<bfloat16>(300, 8, 128, stride_kind::token_major, 0, rng);
    auto b = a;
    b.view.data = b.buf.data();
    ropekit::apply_rope<arch>(table, a.view, positions::contiguous(100), 0, 300);
    std::vector<std::thread> pool;
    for (int i = 0; i < 4; ++i) {
        pool.emplace_back([&, i] {
            const std::int64_t t0 = 75 * i, t1 = 75 * (i + 1);
            if (i % 2)
                ropekit::apply_rope<arch>(table, b.view, positions::contiguous(100), t0, t1);
            else
                ropekit::apply_rope<arch>(table, b.view.heads_slice(0, 8),
                                          positions::contiguous(100), t0, t1);
        });
    }
    for (auto& t : pool) t.join();
    bool same = true;
    for (std::size_t i = 0; i < a.buf.size(); ++i) same = same && a.buf[i].bits == b.buf[i].bits;
    CHECK(same);
}

TEST_CASE("head_view (ropekit/view.hpp): packed_view, at, const view, heads_slice",
          "[rope][view]") {
    static_assert(std::is_aggregate_v<head_view<float>>);
    static_assert(std::is_convertible_v<head_view<bfloat16>, head_view<const bfloat16>>);
    static_assert(!std::is_convertible_v<head_view<const float>, head_view<float>>);
    static_assert(!std::is_convertible_v<head_view<float>, head_view<const half>>);
    std::vector<float> buf(3 * 4 * 8);
    const auto v = ropekit::packed_view(buf.data(), 3, 4, 8);
    static_assert(std::is_same_v<std::remove_const_t<decltype(v)>, head_view<float>>);
    const auto p = head_view<float>::packed(buf.data(), 3, 4, 8);
    CHECK((v.data == p.data && v.tokens == 3 && v.heads == 4 && v.head_dim == 8 &&
           v.token_stride == 32 && v.head_stride == 8 && p.token_stride == 32 &&
           p.head_stride == 8));
    CHECK(v.at(0, 0) == buf.data());
    CHECK(v.at(2, 3) == buf.data() + 2 * 32 + 3 * 8);
    const head_view<const float> c = v;
    CHECK((c.data == v.data && c.tokens == 3 && c.heads == 4 && c.head_dim == 8 &&
           c.token_stride == 32 && c.head_stride == 8));
    CHECK(c.at(1, 2) == v.at(1, 2));
    const float* cp = buf.data();
    const auto cv = ropekit::packed_view(cp, 3, 4, 8);
    static_assert(std::is_same_v<std::remove_const_t<decltype(cv)>, head_view<const float>>);
    CHECK_NOTHROW(cv.validate());
    const auto hs = v.heads_slice(1, 3);
    CHECK((hs.heads == 2 && hs.at(2, 1) == v.at(2, 2)));
    CHECK_THROWS_AS(v.heads_slice(2, 5), ropekit_test::assert_failure);
    // Head-major: [h][t][d].
    const head_view<float> hm{buf.data(), 3, 4, 8, 8, 24};
    CHECK_NOTHROW(hm.validate());
    CHECK(hm.at(2, 3) == buf.data() + 3 * 24 + 2 * 8);
}

TEST_CASE("bad input: library error or assert, never an out-of-bounds read", "[rope][errors]") {
    const auto freqs = make_freqs(64, 64, rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 16);
    std::vector<float> buf(4 * 2 * 64);
    using fail = ropekit_test::assert_failure;
    const head_view<float> good = head_view<float>::packed(buf.data(), 4, 2, 64);
    const positions p0 = positions::contiguous(0);

    CHECK_NOTHROW(good.validate());
    head_view<float> null_data = good;
    null_data.data = nullptr;
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, null_data, p0, 0, 4), fail);
    CHECK_THROWS_AS(null_data.validate(), ropekit::error);

    head_view<float> short_stride = good;
    short_stride.head_stride = 63;
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(freqs, short_stride, p0, 0, 4), fail);
    CHECK_THROWS_AS(short_stride.validate(), ropekit::error);

    head_view<float> overlap = good;  // token stride steps over one head only
    overlap.token_stride = 64;
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, overlap, p0, 0, 4), fail);
    CHECK_THROWS_AS(overlap.validate(), ropekit::error);

    head_view<float> narrow = good;  // rotary_dim 64 > head_dim 48
    narrow.head_dim = 48;
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, narrow, p0, 0, 4), fail);
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(freqs, narrow, p0, 0, 4), fail);

    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, good, positions::contiguous(13), 0, 4), fail);
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, good, positions::contiguous(-1), 0, 4), fail);
    std::vector<std::int32_t> ids = {0, 3, 16, 2};
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, good, positions::ids(ids.data()), 0, 4), fail);
    CHECK_NOTHROW(ropekit::apply_rope<arch>(table, good, positions::ids(ids.data()), 0, 2));
    CHECK_THROWS_AS(
        ropekit::apply_rope<arch>(table, good,
                                  positions::ids(static_cast<const std::int32_t*>(nullptr)), 0, 4),
        fail);
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, good, p0, 2, 5), fail);
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, good, p0, 3, 2), fail);
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, good, positions::table_rows(), 0, 4), fail);
    const auto list = ropekit::cos_sin_table::for_positions(freqs, ids.data(), 3);
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(list, good, positions::table_rows(), 0, 4), fail);
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(list, good, p0, 0, 2), fail);
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(freqs, good, positions::table_rows(), 0, 2), fail);
    auto bad_freqs = freqs;
    bad_freqs.inv_freq.pop_back();
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(bad_freqs, good, p0, 0, 2), fail);
    const auto other = make_freqs(64, 32, rope_layout::neox);
    CHECK_THROWS_AS(ropekit::rebase_keys<arch>(freqs, other, good, p0, 0, 2), fail);
    head_view<float> k_short = good;
    k_short.tokens = 3;
    CHECK_THROWS_AS(ropekit::apply_rope_qk<arch>(table, good, k_short, p0, 0, 2), fail);
}

namespace {
// The message of the ropekit::error `f` throws, or "no error".
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const ropekit::error& e) {
        return e.what();
    }
    return "no error";
}
bool has(const std::string& s, const char* part) {
    return s.find(part) != std::string::npos;
}
}  // namespace

TEST_CASE("validate_positions (table): throws naming the token and the position",
          "[rope][errors]") {
    const auto freqs = make_freqs(64, 64, rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 100, 50);  // [100, 150)
    const auto ok = [&](const positions& p, std::int64_t t0, std::int64_t t1) {
        return error_of([&] { ropekit::validate_positions(table, p, t0, t1); });
    };
    std::string e;
    // Contiguous runs: inside, crossing the table end, starting before it, with t0 > 0.
    CHECK(ok(positions::contiguous(100), 0, 50) == "no error");
    e = ok(positions::contiguous(101), 0, 50);
    INFO(e);
    CHECK((has(e, "token 49 ") && has(e, "position 150") && has(e, "[100, 150)")));
    CHECK(ok(positions::contiguous(90), 10, 60) == "no error");
    e = ok(positions::contiguous(90), 10, 61);
    CHECK((has(e, "token 60 ") && has(e, "position 150")));
    e = ok(positions::contiguous(90), 9, 20);
    CHECK((has(e, "token 9 ") && has(e, "position 99")));
    e = ok(positions::contiguous(140), 5, 30);
    CHECK((has(e, "token 10 ") && has(e, "position 150")));
    e = ok(positions::contiguous(-1000), 0, 1);
    CHECK((has(e, "token 0 ") && has(e, "position -1000")));
    // No signed overflow for contiguous runs near the int64 limits.
    const std::int64_t big = std::numeric_limits<std::int64_t>::max();
    CHECK(has(ok(positions::contiguous(big - 1), 0, 5), "token 0 "));
    CHECK(has(ok(positions::contiguous(big), 3, 4), "overflows"));
    CHECK(
        has(ok(positions::contiguous(std::numeric_limits<std::int64_t>::min()), 0, 3), "token 0 "));
    // int32 and int64 ids: the first bad token is named, a token range before it passes.
    std::vector<std::int32_t> id32 = {100, 149, 120, 150, 99};
    CHECK(ok(positions::ids(id32.data()), 0, 3) == "no error");
    e = ok(positions::ids(id32.data()), 0, 5);
    CHECK((has(e, "token 3 ") && has(e, "position 150")));
    e = ok(positions::ids(id32.data()), 4, 5);
    CHECK((has(e, "token 4 ") && has(e, "position 99")));
    std::vector<std::int64_t> id64 = {149, 100, std::int64_t(1) << 40, -1};
    CHECK(ok(positions::ids(id64.data()), 0, 2) == "no error");
    e = ok(positions::ids(id64.data()), 1, 4);
    CHECK((has(e, "token 2 ") && has(e, "position 1099511627776")));
    e = ok(positions::ids(id64.data()), 3, 4);
    CHECK((has(e, "token 3 ") && has(e, "position -1")));
    // Constant positions (a uniform delta); empty ranges; null ids; bad token ranges.
    CHECK(ok(positions::constant(149), 0, 1000) == "no error");
    e = ok(positions::constant(150), 7, 9);
    CHECK((has(e, "token 7 ") && has(e, "position 150")));
    CHECK(ok(positions::contiguous(0), 3, 3) == "no error");
    CHECK(ok(positions::ids(static_cast<const std::int32_t*>(nullptr)), 0, 0) == "no error");
    CHECK(has(ok(positions::ids(static_cast<const std::int64_t*>(nullptr)), 0, 1), "null"));
    CHECK(has(ok(positions::contiguous(100), 3, 2), "token_begin"));
    CHECK(has(ok(positions::contiguous(100), -1, 2), "token_begin"));
    // Table kinds: table_rows() needs a list table with enough rows.
    CHECK(has(ok(positions::table_rows(), 0, 1), "list table"));
    const auto list = ropekit::cos_sin_table::for_positions(freqs, id32.data(), 3);
    CHECK(error_of([&] { ropekit::validate_positions(list, positions::table_rows(), 0, 3); }) ==
          "no error");
    e = error_of([&] { ropekit::validate_positions(list, positions::table_rows(), 1, 5); });
    CHECK((has(e, "token 3 ") && has(e, "3 rows")));
    CHECK(has(error_of([&] { ropekit::validate_positions(list, positions::contiguous(0), 0, 1); }),
              "table_rows"));
    // An empty range table accepts no position.
    const auto empty = ropekit::cos_sin_table::for_range(freqs, 5, 0);
    CHECK(has(error_of([&] { ropekit::validate_positions(empty, positions::constant(5), 0, 1); }),
              "token 0 "));
}

TEST_CASE("validate_positions accepts exactly what the table kernel accepts", "[rope][errors]") {
    // Whatever passes the cold-path check runs without a ROPEKIT_ASSERT, and whatever fails it
    // would have been skipped silently (left unrotated) in a release build.
    const auto freqs = make_freqs(64, 64, rope_layout::gptj);
    const auto table = ropekit::cos_sin_table::for_range(freqs, -20, 40);  // [-20, 20)
    std::vector<float> buf(12 * 64);
    const auto x = ropekit::packed_view(buf.data(), 12, 1, 64);
    std::vector<std::int32_t> id32(12);
    std::vector<std::int64_t> id64(12);
    std::mt19937 rng(4);
    std::uniform_int_distribution<int> d(-23, 22);
    int rejected = 0;
    for (int trial = 0; trial < 200; ++trial) {
        positions p = positions::contiguous(d(rng));
        if (trial % 3 == 1) {
            for (auto& v : id32) v = d(rng) / 2;
            p = positions::ids(id32.data());
        } else if (trial % 3 == 2) {
            for (auto& v : id64) v = d(rng) / 2 + d(rng) / 4;
            p = positions::ids(id64.data());
        }
        const std::int64_t t0 = trial % 5, t1 = 12 - trial % 4;
        const bool check_throws =
            error_of([&] { ropekit::validate_positions(table, p, t0, t1); }) != "no error";
        bool kernel_asserts = false;
        try {
            ropekit::apply_rope<arch>(table, x, p, t0, t1);
        } catch (const ropekit_test::assert_failure&) {
            kernel_asserts = true;
        }
        INFO("trial " << trial);
        CHECK(check_throws == kernel_asserts);
        rejected += check_throws;
    }
    CHECK(rejected > 20);
    CHECK(rejected < 180);
}

TEST_CASE("validate_positions (table-free): |position| < 2^29", "[rope][errors]") {
    const auto freqs = make_freqs(128, 96, rope_layout::neox);
    const auto ok = [&](const ropekit::rope_frequencies& f, const positions& p, std::int64_t t0,
                        std::int64_t t1) {
        return error_of([&] { ropekit::validate_positions(f, p, t0, t1); });
    };
    const std::int64_t lim = std::int64_t(1) << 29;
    CHECK(ropekit::table_free_position_limit == lim);
    std::string e;
    CHECK(ok(freqs, positions::contiguous(lim - 3), 0, 3) == "no error");
    e = ok(freqs, positions::contiguous(lim - 3), 0, 4);
    CHECK((has(e, "token 3 ") && has(e, "position 536870912") && has(e, "2^29")));
    e = ok(freqs, positions::contiguous(-lim - 5), 2, 9);
    CHECK((has(e, "token 2 ") && has(e, "position -536870915")));
    CHECK(ok(freqs, positions::contiguous(-lim + 1), 0, 2) == "no error");
    std::vector<std::int32_t> id32 = {0, -5, std::numeric_limits<std::int32_t>::max(), 3};
    CHECK(ok(freqs, positions::ids(id32.data()), 0, 2) == "no error");
    e = ok(freqs, positions::ids(id32.data()), 0, 4);
    CHECK((has(e, "token 2 ") && has(e, "position 2147483647")));
    std::vector<std::int64_t> id64 = {lim - 1, -(lim - 1), -lim, 7};
    CHECK(ok(freqs, positions::ids(id64.data()), 0, 2) == "no error");
    e = ok(freqs, positions::ids(id64.data()), 1, 4);
    CHECK((has(e, "token 2 ") && has(e, "position -536870912")));
    CHECK(ok(freqs, positions::constant(lim - 1), 0, 9) == "no error");
    CHECK(has(ok(freqs, positions::constant(std::numeric_limits<std::int64_t>::min()), 4, 9),
              "token 4 "));
    CHECK(has(ok(freqs, positions::table_rows(), 0, 1), "table_rows"));
    CHECK(has(ok(freqs, positions::ids(static_cast<const std::int32_t*>(nullptr)), 0, 1), "null"));
    CHECK(ok(freqs, positions::ids(static_cast<const std::int32_t*>(nullptr)), 2, 2) == "no error");
    // An inv_freq above 1 lowers the bound to keep |position * inv_freq| < 2^29.
    auto fast = freqs;
    fast.inv_freq[0] = 4.0f;
    CHECK(ok(fast, positions::constant(lim / 4 - 1), 0, 1) == "no error");
    e = ok(fast, positions::constant(lim / 4), 0, 1);
    CHECK((has(e, "token 0 ") && has(e, "inv_freq")));
}

#if ROPEKIT_HAS_XSIMD
namespace {
template <class A>
void check_storage_conversions() {
    namespace simd = ropekit::detail::simd;
    constexpr std::size_t n = simd::float_lanes<A>;
    INFO("arch " << A::name() << ", " << n << " lanes");
    // Loads: every 16-bit pattern, bit-exact (a signaling-NaN half may come back quiet).
    std::vector<std::uint16_t> all(0x10000 + 32);
    for (std::uint32_t i = 0; i < all.size(); ++i) all[i] = std::uint16_t(i);
    float out[64];
    for (std::uint32_t i = 0; i + n <= 0x10000; i += std::uint32_t(n)) {
        simd::load_as_float<A>(reinterpret_cast<const bfloat16*>(all.data()) + i)
            .store_unaligned(out);
        for (std::size_t j = 0; j < n; ++j)
            REQUIRE(bits_of(out[j]) == bits_of(float(bfloat16::from_bits(all[i + j]))));
        simd::load_as_float<A>(reinterpret_cast<const half*>(all.data()) + i).store_unaligned(out);
        for (std::size_t j = 0; j < n; ++j) {
            const std::uint16_t h = all[i + j];
            const std::uint32_t want = bits_of(float(half::from_bits(h)));
            const bool snan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) && !(h & 0x200);
            if (snan)
                REQUIRE((bits_of(out[j]) | 0x00400000u) == (want | 0x00400000u));
            else
                REQUIRE(bits_of(out[j]) == want);
        }
    }
    // Stores: every upper half with lower halves at both formats' rounding boundaries, plus
    // random patterns; NaNs of every payload, infinities, subnormals and ties included.
    std::vector<float> f;
    const std::uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x2000,
                                  0x3000, 0x7fff, 0x8000, 0x8001, 0xffff};
    for (std::uint32_t hi = 0; hi < 0x10000; ++hi)
        for (std::uint32_t lo : lows) f.push_back(float_of((hi << 16) | lo));
    std::mt19937 rng(77);
    for (int i = 0; i < 50000; ++i) f.push_back(float_of(rng()));
    std::uint16_t hb[64], bb[64];
    for (std::size_t i = 0; i + n <= f.size(); i += n) {
        const auto v = xsimd::batch<float, A>::load_unaligned(f.data() + i);
        simd::store_from_float<A>(reinterpret_cast<half*>(hb), v);
        simd::store_from_float<A>(reinterpret_cast<bfloat16*>(bb), v);
        for (std::size_t j = 0; j < n; ++j) {
            if (hb[j] != half(f[i + j]).bits || bb[j] != bfloat16(f[i + j]).bits) {
                INFO("float bits " << std::hex << bits_of(f[i + j]));
                REQUIRE(hb[j] == half(f[i + j]).bits);
                REQUIRE(bb[j] == bfloat16(f[i + j]).bits);
            }
        }
    }
    // Partial loads/stores: n' < lanes, zeros elsewhere, nothing written past the end.
    for (std::size_t m = 0; m < n; ++m) {
        std::vector<float> src(m), fdst(n + 4, -7.0f);
        for (std::size_t j = 0; j < m; ++j) src[j] = float(j) + 0.375f;
        auto v = simd::load_as_float_partial<A>(src.data(), m);
        v.store_unaligned(out);
        for (std::size_t j = 0; j < n; ++j) REQUIRE(out[j] == (j < m ? src[j] : 0.0f));
        simd::store_from_float_partial<A>(fdst.data(), v, m);
        for (std::size_t j = 0; j < n + 4; ++j) REQUIRE(fdst[j] == (j < m ? src[j] : -7.0f));
        std::vector<bfloat16> bsrc(m), bdst(n + 4, bfloat16(-7.0f));
        std::vector<half> hsrc(m), hdst(n + 4, half(-7.0f));
        for (std::size_t j = 0; j < m; ++j) {
            bsrc[j] = bfloat16(src[j] * 1.001f);
            hsrc[j] = half(src[j] * 1.001f);
        }
        simd::load_as_float_partial<A>(bsrc.data(), m).store_unaligned(out);
        for (std::size_t j = 0; j < n; ++j) REQUIRE(out[j] == (j < m ? float(bsrc[j]) : 0.0f));
        simd::store_from_float_partial<A>(bdst.data(),
                                          simd::load_as_float_partial<A>(bsrc.data(), m), m);
        for (std::size_t j = 0; j < n + 4; ++j)
            REQUIRE(bdst[j].bits == (j < m ? bsrc[j].bits : bfloat16(-7.0f).bits));
        simd::load_as_float_partial<A>(hsrc.data(), m).store_unaligned(out);
        for (std::size_t j = 0; j < n; ++j) REQUIRE(out[j] == (j < m ? float(hsrc[j]) : 0.0f));
        simd::store_from_float_partial<A>(hdst.data(),
                                          simd::load_as_float_partial<A>(hsrc.data(), m), m);
        for (std::size_t j = 0; j < n + 4; ++j)
            REQUIRE(hdst[j].bits == (j < m ? hsrc[j].bits : half(-7.0f).bits));
    }
}
template <class A>
void check_if_compiled() {
    if constexpr (A::supported()) check_storage_conversions<A>();
}
}  // namespace

TEST_CASE("SIMD storage conversions are bit-exact with the scalar types, every compiled arch",
          "[storage][simd]") {
    check_storage_conversions<arch>();
    check_if_compiled<xsimd::sse2>();
    check_if_compiled<xsimd::avx>();
    check_if_compiled<xsimd::fma3<xsimd::avx2>>();
    check_if_compiled<xsimd::avx512f>();
}
#endif

TEST_CASE("validate_rope_call: what validate() + validate_positions() let through",
          "[rope][errors]") {
    const auto freqs = make_freqs(64, 64, rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 64);
    std::vector<float> buf(4 * 2 * 64, 1.0f);
    const auto x = head_view<float>::packed(buf.data(), 4, 2, 64);
    const positions p0 = positions::contiguous(0);
    const auto field_of = [](auto&& call) {
        return ropekit_test::thrown_field<ropekit::error>(call);
    };
    CHECK_NOTHROW(ropekit::validate_rope_call(table, x, p0, 0, 4));
    CHECK_NOTHROW(ropekit::validate_rope_call(freqs, x, p0, 1, 3));
    // A token range beyond the view: the separate validators passed it, then apply_rope
    // asserted (debug) or did nothing at all (release).
    CHECK_NOTHROW(x.validate());
    CHECK_NOTHROW(ropekit::validate_positions(table, p0, 0, 8));
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, x, p0, 0, 8), ropekit_test::assert_failure);
    CHECK(field_of([&] { ropekit::validate_rope_call(table, x, p0, 0, 8); }) == "token_range");
    CHECK(field_of([&] { ropekit::validate_rope_call(freqs, x, p0, 0, 5); }) == "token_range");
    CHECK(field_of([&] { ropekit::validate_rope_call(freqs, x, p0, -1, 2); }) == "token_range");
    // rotary_dim above head_dim, the same story.
    const auto narrow = head_view<float>::packed(buf.data(), 4, 2, 48);
    CHECK_NOTHROW(narrow.validate());
    CHECK_THROWS_AS(ropekit::apply_rope<arch>(table, narrow, p0, 0, 4),
                    ropekit_test::assert_failure);
    CHECK(field_of([&] { ropekit::validate_rope_call(table, narrow, p0, 0, 4); }) == "rotary_dim");
    CHECK(field_of([&] { ropekit::validate_rope_call(freqs, narrow, p0, 0, 4); }) == "rotary_dim");
    // The view, the positions and the table are checked as well.
    head_view<float> overlap = x;
    overlap.token_stride = 64;
    CHECK(field_of([&] { ropekit::validate_rope_call(table, overlap, p0, 0, 4); }) == "head_view");
    CHECK(field_of([&] {
              ropekit::validate_rope_call(table, x, positions::contiguous(61), 0, 4);
          }) == "positions");
    CHECK(field_of([&] { ropekit::validate_rope_call(ropekit::cos_sin_table{}, x, p0, 0, 4); }) ==
          "table");
    auto bad = freqs;
    bad.inv_freq.pop_back();
    CHECK(field_of([&] { ropekit::validate_rope_call(bad, x, p0, 0, 4); }) == "inv_freq");
    // q and k.
    std::vector<float> kbuf(4 * 64, 1.0f);
    const auto k = head_view<float>::packed(kbuf.data(), 4, 1, 64);
    CHECK_NOTHROW(ropekit::validate_rope_call(table, x, k, p0, 0, 4));
    CHECK(field_of([&] {
              ropekit::validate_rope_call(table, x, head_view<float>::packed(kbuf.data(), 3, 1, 64),
                                          p0, 0, 3);
          }) == "tokens");
    CHECK(field_of([&] {
              ropekit::validate_rope_call(freqs, x, head_view<float>::packed(kbuf.data(), 4, 1, 32),
                                          p0, 0, 4);
          }) == "rotary_dim");
    // rebase_keys: the frequencies must agree, positions must be accurate for both.
    const auto other = make_freqs(64, 32, rope_layout::neox);
    CHECK(field_of([&] { ropekit::validate_rebase_call(freqs, other, x, p0, 0, 4); }) ==
          "rotary_dim");
    const auto gptj = make_freqs(64, 64, rope_layout::gptj);
    CHECK(field_of([&] { ropekit::validate_rebase_call(freqs, gptj, x, p0, 0, 4); }) == "layout");
    auto fast = freqs;
    fast.inv_freq[0] = 8.0f;
    const positions far = positions::constant(ropekit::table_free_position_limit / 4);
    CHECK_NOTHROW(ropekit::validate_positions(freqs, far, 0, 4));
    CHECK(field_of([&] { ropekit::validate_rebase_call(fast, freqs, x, far, 0, 4); }) ==
          "positions");
    CHECK_NOTHROW(ropekit::validate_rebase_call(freqs, freqs, x, p0, 0, 4));
    // NaN frequencies: no position is accurate (the bound used to ignore them).
    auto nan = freqs;
    nan.inv_freq[3] = std::numeric_limits<float>::quiet_NaN();
    CHECK(field_of([&] { ropekit::validate_positions(nan, p0, 0, 4); }) == "inv_freq");
}

TEMPLATE_TEST_CASE("unused strides and empty views never reach pointer arithmetic",
                   "[rope][errors]", float, bfloat16) {
    using T = TestType;
    // 300 pairs: the multi-pass path adds the pass offset p0 = 256 to each target's data.
    for (int rotary_dim : {64, 600}) {
        const auto freqs = make_freqs(rotary_dim, rotary_dim, rope_layout::neox);
        std::mt19937 rng(11);
        auto q = make_tensor<T>(3, 2, rotary_dim, stride_kind::token_major, 0, rng);
        auto want = q;
        want.view.data = want.buf.data();
        // An empty k with null data (a q-only call): null + offset was undefined behaviour.
        const head_view<T> no_k{nullptr, 3, 0, rotary_dim, 0, 0};
        ropekit::validate_rope_call(freqs, q.view, no_k, positions::contiguous(7), 0, 3);
        ropekit::apply_rope_qk<arch>(freqs, q.view, no_k, positions::contiguous(7), 0, 3);
        ropekit::apply_rope<arch>(freqs, want.view, positions::contiguous(7), 0, 3);
        for (std::size_t i = 0; i < q.buf.size(); ++i)
            CHECK(raw_bits(q.buf[i]) == raw_bits(want.buf[i]));
        // Its target is dropped, not passed with a null base.
        ropekit::detail::rope_target<T> tg[2];
        CHECK(ropekit::detail::targets_of<arch>(q.view, no_k, tg) == 1);
        CHECK(ropekit::detail::targets_of<arch>(no_k, no_k, tg) == 0);
    }
    // One head with a head stride of 2^62 (never used; validate() accepts it): the kernels
    // stepped `row += head_stride` past the last head, wrapping the address.
    const auto freqs = make_freqs(64, 64, rope_layout::gptj);
    std::vector<T> buf(3 * 64, ropekit::from_float<T>(0.5f));
    const head_view<T> one_head{buf.data(), 3, 1, 64, 64, std::ptrdiff_t(1) << 62};
    CHECK_NOTHROW(one_head.validate(buf.size()));
    const auto tg = ropekit::detail::target_of<arch>(one_head);
    CHECK((tg.heads == 1 && tg.head_stride == 0 && tg.token_stride == 64));
    const head_view<T> one_token{buf.data(), 1, 3, 64, std::ptrdiff_t(1) << 62, 64};
    CHECK(ropekit::detail::target_of<arch>(one_token).token_stride == 0);
    auto want = buf;
    ropekit::apply_rope<arch>(freqs, one_head, positions::contiguous(3), 0, 3);
    ropekit::apply_rope<arch>(freqs, head_view<T>::packed(want.data(), 3, 1, 64),
                              positions::contiguous(3), 0, 3);
    for (std::size_t i = 0; i < buf.size(); ++i) CHECK(raw_bits(buf[i]) == raw_bits(want[i]));
}
