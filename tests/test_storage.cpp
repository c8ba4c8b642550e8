// SPDX-License-Identifier: Apache-2.0
// Scalar storage conversions (ropekit::bfloat16, ropekit::half) against definitions that are
// obviously right: widening by the IEEE formula in double, rounding by picking the nearest of the
// two neighbouring 16-bit values (ties to the even one). Also the SIMD conversions of
// detail/simd_storage.hpp under the default compile flags (the per-ISA builds are in
// tests/isa/test_rope.cpp).
#include "test_support.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "ropekit/detail/simd_storage.hpp"
#include "ropekit/storage.hpp"

namespace {

using ropekit::bfloat16;
using ropekit::half;

std::uint32_t bits_of(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
float float_of(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// IEEE binary16 value of a bit pattern, in double (the textbook formula).
double half_value(std::uint16_t h) {
    const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    const double sign = s ? -1.0 : 1.0;
    if (e == 0) return sign * std::ldexp(double(m), -24);
    if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
    return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

double bf16_value(std::uint16_t b) {
    return double(float_of(std::uint32_t(b) << 16));
}

// Round-to-nearest-even by search: the reference does no bit tricks. `value(bits)` must be
// monotonic in the magnitude bits. Returns the pattern of the nearest finite value, or infinity
// when |x| rounds past the largest finite value (IEEE overflow under nearest-even).
template <class Value>
std::uint16_t round_reference(double x, Value value, std::uint16_t max_finite) {
    const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(x);
    // Binary search the largest magnitude pattern with value <= a.
    std::uint16_t lo = 0, hi = max_finite;
    if (a >= value(max_finite)) {
        lo = max_finite;
    } else {
        while (hi - lo > 1) {
            const std::uint16_t mid = std::uint16_t((lo + hi) / 2);
            if (value(mid) <= a)
                lo = mid;
            else
                hi = mid;
        }
    }
    const double below = value(lo);
    double next;
    if (lo == max_finite) {
        // One ulp above the largest finite value: IEEE rounds to infinity from the midpoint on.
        const double ulp = value(max_finite) - value(std::uint16_t(max_finite - 1));
        next = value(max_finite) + ulp;
    } else {
        next = value(std::uint16_t(lo + 1));
    }
    std::uint16_t pick;
    if (a - below < next - a)
        pick = lo;
    else if (a - below > next - a)
        pick = std::uint16_t(lo + 1);
    else
        pick = (lo & 1) ? std::uint16_t(lo + 1) : lo;
    if (pick > max_finite) pick = std::uint16_t(max_finite + 1);  // infinity pattern
    return std::uint16_t(sign | pick);
}

std::uint16_t half_reference(float f) {
    if (std::isnan(f)) return std::uint16_t((std::signbit(f) ? 0x8000 : 0) | 0x7e00);
    if (std::isinf(f)) return std::uint16_t((std::signbit(f) ? 0x8000 : 0) | 0x7c00);
    return round_reference(double(f), half_value, 0x7bff);
}

std::uint16_t bf16_reference(float f) {
    if (std::isnan(f)) return std::uint16_t((bits_of(f) >> 16) | 0x40);
    if (std::isinf(f)) return std::uint16_t(bits_of(f) >> 16);
    return round_reference(double(f), bf16_value, 0x7f7f);
}

std::vector<float> interesting_floats() {
    std::vector<float> v;
    // Every upper half with lower halves at the rounding boundaries of both 16-bit formats.
    const std::uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000,
                                  0x3000, 0x7fff, 0x8000, 0x8001, 0xc000, 0xffff};
    for (std::uint32_t hi = 0; hi < 0x10000; hi += 1) {
        for (std::uint32_t lo : lows) v.push_back(float_of((hi << 16) | lo));
    }
    std::mt19937 rng(12345);
    for (int i = 0; i < 200000; ++i) v.push_back(float_of(rng()));
    return v;
}

}  // namespace

TEST_CASE("bfloat16 widening is exact for every bit pattern", "[storage]") {
    for (std::uint32_t b = 0; b < 0x10000; ++b) {
        const float f = float(bfloat16::from_bits(std::uint16_t(b)));
        const double v = bf16_value(std::uint16_t(b));
        if (std::isnan(v)) {
            REQUIRE(std::isnan(f));
            REQUIRE(bits_of(f) == b << 16);
        } else {
            REQUIRE(double(f) == v);
            REQUIRE(bits_of(f) == b << 16);
        }
    }
}

TEST_CASE("half widening matches the IEEE formula for every bit pattern", "[storage]") {
    for (std::uint32_t h = 0; h < 0x10000; ++h) {
        const float f = float(half::from_bits(std::uint16_t(h)));
        const double v = half_value(std::uint16_t(h));
        if (std::isnan(v)) {
            REQUIRE(std::isnan(f));
            REQUIRE((bits_of(f) >> 31) == (h >> 15));
            REQUIRE(((bits_of(f) >> 13) & 0x3ff) == (h & 0x3ff));  // payload kept
        } else {
            REQUIRE(double(f) == v);
            REQUIRE(std::signbit(f) == bool(h >> 15));  // -0 stays -0
        }
    }
}

TEST_CASE("16-bit rounding is round-to-nearest-even", "[storage]") {
    SECTION("bfloat16 ties, NaN, inf") {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        CHECK(bfloat16(1.0f + 0x1p-8f).bits == 0x3f80);
        CHECK(bfloat16(1.0f + 3 * 0x1p-8f).bits == 0x3f82);  // tie to the even one above
        CHECK(bfloat16(1.0f + 0x1p-8f + 0x1p-20f).bits == 0x3f81);
        CHECK(bfloat16(std::numeric_limits<float>::infinity()).bits == 0x7f80);
        CHECK(bfloat16(-std::numeric_limits<float>::infinity()).bits == 0xff80);
        CHECK(bfloat16(std::numeric_limits<float>::max()).bits == 0x7f80);  // rounds to inf
        CHECK(bfloat16(float_of(0x7f800001)).bits == 0x7fc0);  // signaling NaN -> quiet, not inf
        CHECK(bfloat16(float_of(0xffffffff)).bits == 0xffff);
        CHECK(bfloat16(float_of(0x00000001)).bits == 0x0000);  // float subnormal
        CHECK(bfloat16(float_of(0x00008000)).bits == 0x0000);  // tie at a subnormal, to even
        CHECK(bfloat16(float_of(0x00018000)).bits == 0x0002);
    }
    SECTION("half ties, overflow, subnormals") {
        CHECK(half(1.0f + 0x1p-11f).bits == 0x3c00);
        CHECK(half(1.0f + 3 * 0x1p-11f).bits == 0x3c02);
        CHECK(half(65504.0f).bits == 0x7bff);
        CHECK(half(65519.99f).bits == 0x7bff);
        CHECK(half(65520.0f).bits == 0x7c00);  // the tie above max rounds to even = inf
        CHECK(half(-1e6f).bits == 0xfc00);
        CHECK(half(0x1p-24f).bits == 0x0001);    // smallest subnormal
        CHECK(half(0x1p-25f).bits == 0x0000);    // tie between 0 and 2^-24 -> 0 (even)
        CHECK(half(0x1.8p-24f).bits == 0x0002);  // tie between 1 and 2 ulps -> 2 (even)
        CHECK(half(0x1.000002p-25f).bits == 0x0001);
        CHECK(half(0x1p-14f).bits == 0x0400);      // smallest normal
        CHECK(half(0x1.ff8p-15f).bits == 0x03ff);  // largest subnormal
        CHECK(half(0x1.ffcp-15f).bits == 0x0400);  // + half an ulp: tie, to the even normal
        CHECK(half(-0.0f).bits == 0x8000);
        CHECK(half(std::numeric_limits<float>::quiet_NaN()).bits == 0x7e00);
        CHECK(half(float_of(0xff812345)).bits == 0xfe00);
    }
    SECTION("against the nearest-neighbour reference") {
        for (float f : interesting_floats()) {
            const std::uint16_t hb = half(f).bits, bb = bfloat16(f).bits;
            if (hb != half_reference(f) || bb != bf16_reference(f)) {
                INFO("float bits " << std::hex << bits_of(f));
                CHECK(hb == half_reference(f));
                CHECK(bb == bf16_reference(f));
            }
        }
    }
}

#if ROPEKIT_HAS_XSIMD
TEST_CASE("SIMD storage conversions under the default flags equal the scalar types",
          "[storage][simd]") {
    using arch = xsimd::default_arch;
    namespace simd = ropekit::detail::simd;
    constexpr std::size_t lanes = simd::float_lanes<arch>;
    const std::vector<float> floats = interesting_floats();
    std::vector<std::uint16_t> h(lanes), b(lanes);
    for (std::size_t i = 0; i + lanes <= floats.size(); i += lanes) {
        const auto v = simd::load_as_float<arch>(floats.data() + i);
        simd::store_from_float<arch>(reinterpret_cast<half*>(h.data()), v);
        simd::store_from_float<arch>(reinterpret_cast<bfloat16*>(b.data()), v);
        for (std::size_t j = 0; j < lanes; ++j) {
            if (h[j] != half(floats[i + j]).bits || b[j] != bfloat16(floats[i + j]).bits) {
                INFO("float bits " << std::hex << bits_of(floats[i + j]));
                REQUIRE(h[j] == half(floats[i + j]).bits);
                REQUIRE(b[j] == bfloat16(floats[i + j]).bits);
            }
        }
    }
}
#endif

TEST_CASE("block_q8_0 has ggml's byte layout and quantize_row_q8_0_ref's rounding",
          "[storage][q8_0]") {
    // ggml-common.h: struct { ggml_half d; int8_t qs[32]; }, 34 bytes, d first (little endian).
    STATIC_REQUIRE(sizeof(ropekit::block_q8_0) == 34);
    STATIC_REQUIRE(offsetof(ropekit::block_q8_0, qs) == 2);
    // amax 127: d = 1 exactly (half 0x3c00), id = 1, so qs = roundf(x): ties away from zero
    // (2.5 -> 3, -0.5 -> -1, -126.5 -> -127), just below a tie stays (0.49999997 -> 0).
    float x[32] = {127.0f, 2.5f, -0.5f, 0.49999997f, -126.5f, 1.5f, -2.5f, 0.0f};
    for (int j = 8; j < 32; ++j) x[j] = float(j) - 20.0f;
    const ropekit::block_q8_0 b = ropekit::quantize_block_q8_0(x);
    unsigned char bytes[34];
    std::memcpy(bytes, &b, sizeof bytes);
    CHECK(bytes[0] == 0x00);
    CHECK(bytes[1] == 0x3c);
    const int expect[8] = {127, 3, -1, 0, -127, 2, -3, 0};
    for (int j = 0; j < 8; ++j) CHECK(int(std::int8_t(bytes[2 + j])) == expect[j]);
    for (int j = 8; j < 32; ++j) CHECK(int(std::int8_t(bytes[2 + j])) == j - 20);

    // x = j - 15.5: amax 15.5, d = 15.5 / 127 rounds to half 0x2fd0 (0.1220703125); the values
    // use id = 127 / 15.5 in float (not 1 / half(d)), as ggml does: -15.5 -> -127, -0.5 -> -4.
    float y[32];
    for (int j = 0; j < 32; ++j) y[j] = float(j) - 15.5f;
    const ropekit::block_q8_0 c = ropekit::quantize_block_q8_0(y);
    CHECK(c.d.bits == 0x2fd0);
    CHECK(c.qs[0] == -127);
    CHECK(c.qs[31] == 127);
    CHECK(c.qs[15] == -4);
    CHECK(c.qs[16] == 4);
    for (int j = 0; j < 32; ++j) {
        const float id = 1.0f / (15.5f / 127.0f);
        CHECK(int(c.qs[j]) == int(std::round(y[j] * id)));
        CHECK(ropekit::dequantize_q8_0(c, j) == float(c.d) * float(c.qs[j]));
    }

    // All zeros: d = 0, qs = 0 (ggml's id = 0 branch). Tiny amax (1 / d overflows): zeros.
    float z[32] = {};
    const ropekit::block_q8_0 zb = ropekit::quantize_block_q8_0(z);
    CHECK(zb.d.bits == 0);
    z[5] = 1e-38f;
    const ropekit::block_q8_0 tb = ropekit::quantize_block_q8_0(z);
    CHECK(tb.d.bits == 0);
    for (int j = 0; j < 32; ++j) CHECK(tb.qs[j] == 0);
    // Non-finite input: d = NaN, qs = 0, so every value of the block dequantises to NaN.
    z[7] = std::numeric_limits<float>::infinity();
    const ropekit::block_q8_0 nb = ropekit::quantize_block_q8_0(z);
    CHECK(std::isnan(float(nb.d)));
    for (int j = 0; j < 32; ++j) CHECK(std::isnan(ropekit::dequantize_q8_0(nb, j)));
    // Rows of blocks round-trip through quantize_q8_0 / dequantize_q8_0 / stored_value.
    std::vector<float> row(96), back(96);
    for (int j = 0; j < 96; ++j) row[j] = std::sin(0.37f * float(j)) * float(1 + j / 32);
    std::vector<ropekit::block_q8_0> q(3);
    ropekit::quantize_q8_0(row.data(), q.data(), 96);
    ropekit::dequantize_q8_0(q.data(), back.data(), 96);
    for (int j = 0; j < 96; ++j) {
        CHECK(back[j] == ropekit::stored_value(q.data(), j));
        // Rounding x / d costs at most d / 2, rounding d to half at most 127 |d - half(d)|.
        double amax = 0;
        for (int i = j / 32 * 32; i < j / 32 * 32 + 32; ++i)
            amax = std::max(amax, std::abs(double(row[i])));
        const double d = double(float(amax) / 127.0f), dh = double(float(q[j / 32].d));
        CHECK(std::abs(double(back[j]) - double(row[j])) <=
              0.5 * d + 127.0 * std::abs(d - dh) + 1e-7);
    }
}
