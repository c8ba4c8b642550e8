// SPDX-License-Identifier: Apache-2.0
/// \file
/// Storage types for q, k and v: bfloat16 and IEEE half (16 bits per value), and block_q8_0
/// (8-bit values in blocks of 32 with one half scale, byte-compatible with ggml's q8_0). Math is
/// always float; these types only say how a value is stored. Conversions to 16 bits round to
/// nearest, ties to even (what torch's `.to(bfloat16)` and F16C's `vcvtps2ph` with rounding mode
/// 0 do).
#pragma once

#include "config.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

// Every function here is ROPEKIT_ALWAYS_INLINE: the kernels call them, and the types are shared
// by every instruction-set configuration (abi.hpp), so no out-of-line copy with flag-dependent
// code may exist for the linker to pick.
ROPEKIT_BEGIN_NAMESPACE

namespace detail {
ROPEKIT_ALWAYS_INLINE std::uint32_t float_bits(float f) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
ROPEKIT_ALWAYS_INLINE float bits_float(std::uint32_t u) noexcept {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
}  // namespace detail

/// bfloat16: the upper 16 bits of an IEEE float32 (8-bit exponent, 7-bit stored mantissa).
struct bfloat16 {
    std::uint16_t bits = 0;  ///< raw bit pattern

    bfloat16() = default;
    /// Rounds `f` to nearest even; NaN stays a (quiet) NaN, never turns into infinity.
    ROPEKIT_ALWAYS_INLINE explicit bfloat16(float f) noexcept : bits(round_from_float(f)) {}
    /// Exact widening to float.
    ROPEKIT_ALWAYS_INLINE explicit operator float() const noexcept {
        return detail::bits_float(std::uint32_t(bits) << 16);
    }
    /// Wraps a raw bit pattern.
    ROPEKIT_ALWAYS_INLINE static bfloat16 from_bits(std::uint16_t b) noexcept {
        bfloat16 r;
        r.bits = b;
        return r;
    }
    /// The round-to-nearest-even bit pattern of `f`.
    ROPEKIT_ALWAYS_INLINE static std::uint16_t round_from_float(float f) noexcept {
        std::uint32_t u = detail::float_bits(f);
        if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x0040u);
        u += 0x7fffu + ((u >> 16) & 1u);
        return std::uint16_t(u >> 16);
    }
};

/// IEEE 754 binary16 ("half", fp16): 5-bit exponent, 10-bit mantissa, max 65504.
struct half {
    std::uint16_t bits = 0;  ///< raw bit pattern

    half() = default;
    /// Rounds `f` to nearest even; overflow gives infinity, tiny values become subnormals.
    ROPEKIT_ALWAYS_INLINE explicit half(float f) noexcept : bits(round_from_float(f)) {}
    /// Exact widening to float.
    ROPEKIT_ALWAYS_INLINE explicit operator float() const noexcept { return to_float(bits); }
    /// Wraps a raw bit pattern.
    ROPEKIT_ALWAYS_INLINE static half from_bits(std::uint16_t b) noexcept {
        half r;
        r.bits = b;
        return r;
    }
    /// The round-to-nearest-even bit pattern of `f`.
    ROPEKIT_ALWAYS_INLINE static std::uint16_t round_from_float(float f) noexcept {
        std::uint32_t u = detail::float_bits(f);
        const std::uint32_t sign = (u >> 16) & 0x8000u;
        u &= 0x7fffffffu;
        if (u >= 0x47800000u) {  // |f| >= 65536 (or inf/nan): inf, or a quiet NaN
            return std::uint16_t(sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u));
        }
        if (u < 0x38800000u) {  // below 2^-14: subnormal or zero.
            // Adding 0.5 aligns the binary16 subnormal grid (step 2^-24) with float's
            // last mantissa bit, so the FPU's own rounding is the round-to-nearest-even.
            const float aligned = detail::bits_float(u) + 0.5f;
            return std::uint16_t(sign | (detail::float_bits(aligned) - 0x3f000000u));
        }
        // Normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits to
        // nearest even; a carry out of the mantissa correctly bumps the exponent (up to inf).
        const std::uint32_t odd = (u >> 13) & 1u;
        u += 0xc8000fffu + odd;  // (15 - 127) << 23, plus the rounding bias
        return std::uint16_t(sign | (u >> 13));
    }
    /// Exact widening of a binary16 bit pattern.
    ROPEKIT_ALWAYS_INLINE static float to_float(std::uint16_t h) noexcept {
        const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
        const std::uint32_t exponent = (h >> 10) & 0x1fu;
        const std::uint32_t mantissa = h & 0x3ffu;
        if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
            const float mag = float(mantissa) * 5.9604644775390625e-08f;
            return detail::bits_float(detail::float_bits(mag) | sign);
        }
        if (exponent == 31) return detail::bits_float(sign | 0x7f800000u | (mantissa << 13));
        return detail::bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    }
};

static_assert(sizeof(bfloat16) == 2 && sizeof(half) == 2, "16-bit storage types must be 2 bytes");

/// Values in one block_q8_0.
inline constexpr int q8_0_block_values = 32;

/// 32 values stored as 8-bit integers with one IEEE half scale: value j is `float(d) * qs[j]`.
///
/// The layout (34 bytes: `d`, then `qs`, no padding, 2-byte alignment) is ggml's `block_q8_0`
/// (ggml-common.h: `ggml_half d; int8_t qs[QK8_0];`, QK8_0 = 32), so an engine's q8_0 K/V cache
/// can be handed to ropekit as it is. A head row of head_dim values is head_dim / 32
/// consecutive blocks (head_dim must be a multiple of 32); a head_view of blocks counts its
/// strides in blocks and its head_dim in values (view.hpp).
struct block_q8_0 {
    half d;                             ///< scale: amax / 127 of the 32 values, rounded to half
    std::int8_t qs[q8_0_block_values];  ///< quantised values, in [-127, 127]
};

static_assert(sizeof(block_q8_0) == 34 && alignof(block_q8_0) == 2,
              "block_q8_0 must have ggml's 34-byte layout");

namespace detail {
/// The block whose input held a NaN or an infinity: d = NaN, qs = 0 (see quantize_block_q8_0).
ROPEKIT_ALWAYS_INLINE void set_q8_0_poisoned(block_q8_0& b) noexcept {
    b.d = half::from_bits(0x7e00u);
    for (int j = 0; j < q8_0_block_values; ++j) b.qs[j] = 0;
}
/// ggml's scale of a block from its (finite) amax: stores d = half(amax / 127) in `b` and
/// returns id = 1 / d in float (0 for d == 0). 1 / d overflows for d below 2^-128 (amax <
/// 4e-37), where ggml's x * inf would be an undefined cast; half(d) is 0 there anyway, so id = 0
/// (qs = 0) decodes to the same zeros.
ROPEKIT_ALWAYS_INLINE float set_q8_0_scale(float amax, block_q8_0& b) noexcept {
    const float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!std::isfinite(id)) id = 0.0f;
    b.d = half(d);
    return id;
}
}  // namespace detail

/// Quantises 32 floats into one block exactly as ggml's `quantize_row_q8_0_ref` does, so the
/// bytes match a cache llama.cpp wrote: `d = amax / 127` in float, `id = 1 / d` (0 when d is 0),
/// stored d = half(d) (nearest even), `qs[j] = roundf(x[j] * id)` (ties away from zero).
///
/// ggml leaves non-finite input (and amax < 4e-37) undefined (a NaN cast to int8); here a block
/// with a NaN or an infinity stores d = NaN and qs = 0, so it dequantises to NaN (a poisoned key
/// stays visible, as it would in float storage). A block whose amax exceeds 127 * 65504 stores d =
/// +inf, as ggml does.
ROPEKIT_ALWAYS_INLINE block_q8_0 quantize_block_q8_0(const float* x) noexcept {
    block_q8_0 b;
    float amax = 0.0f;
    bool finite = true;
    for (int j = 0; j < q8_0_block_values; ++j) {
        finite = finite && std::isfinite(x[j]);
        amax = std::max(amax, std::fabs(x[j]));
    }
    if (!finite) {
        detail::set_q8_0_poisoned(b);
        return b;
    }
    const float id = detail::set_q8_0_scale(amax, b);
    // |x * id| <= 127 up to rounding of id (at most 127.00002, which rounds to 127).
    for (int j = 0; j < q8_0_block_values; ++j) b.qs[j] = std::int8_t(std::round(x[j] * id));
    return b;
}

/// Quantises `n` floats (a multiple of 32) into n / 32 blocks (quantize_block_q8_0 each).
ROPEKIT_ALWAYS_INLINE void quantize_q8_0(const float* x, block_q8_0* y, std::int64_t n) noexcept {
    for (std::int64_t i = 0; i + q8_0_block_values <= n; i += q8_0_block_values)
        y[i / q8_0_block_values] = quantize_block_q8_0(x + i);
}

/// Value `j` (0 <= j < 32) of a block: `float(d) * qs[j]`.
ROPEKIT_ALWAYS_INLINE float dequantize_q8_0(const block_q8_0& b, int j) noexcept {
    return float(b.d) * float(b.qs[j]);
}

/// Dequantises n / 32 blocks into `n` floats (n a multiple of 32).
ROPEKIT_ALWAYS_INLINE void dequantize_q8_0(const block_q8_0* x, float* y, std::int64_t n) noexcept {
    for (std::int64_t i = 0; i < n; ++i)
        y[i] = dequantize_q8_0(x[i / q8_0_block_values], int(i % q8_0_block_values));
}

/// True for the element types ropekit kernels accept as storage: float, bfloat16, half.
template <class T>
inline constexpr bool is_storage_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, bfloat16> || std::is_same_v<T, half>;

/// True for the K/V storage of attention: float, bfloat16, half, or block_q8_0 blocks.
template <class T>
inline constexpr bool is_kv_storage_type_v = is_storage_type_v<T> || std::is_same_v<T, block_q8_0>;

/// Values one element of T holds: 32 for block_q8_0, 1 for the scalar storage types.
template <class T>
inline constexpr int values_per_element_v =
    std::is_same_v<std::remove_const_t<T>, block_q8_0> ? q8_0_block_values : 1;

/// Widens a stored value to float.
template <class T>
ROPEKIT_ALWAYS_INLINE float to_float(T v) noexcept {
    static_assert(is_storage_type_v<T>, "ropekit storage is float, bfloat16 or half");
    if constexpr (std::is_same_v<T, float>)
        return v;
    else
        return static_cast<float>(v);
}

/// Rounds a float to the storage type (nearest even for the 16-bit types).
template <class T>
ROPEKIT_ALWAYS_INLINE T from_float(float f) noexcept {
    static_assert(is_storage_type_v<T>, "ropekit storage is float, bfloat16 or half");
    if constexpr (std::is_same_v<T, float>)
        return f;
    else
        return T(f);
}

/// Value `i` of a stored row as float: `to_float(row[i])`, or for block_q8_0 value i % 32 of
/// block i / 32 (references and tests read every storage type through this).
template <class T>
ROPEKIT_ALWAYS_INLINE float stored_value(const T* row, std::int64_t i) noexcept {
    if constexpr (std::is_same_v<std::remove_const_t<T>, block_q8_0>)
        return dequantize_q8_0(row[i / q8_0_block_values], int(i % q8_0_block_values));
    else
        return to_float(row[i]);
}

/// Short name for logs and benchmark labels: "f32", "bf16", "f16", "q8_0".
template <class T>
constexpr const char* storage_name() noexcept {
    if constexpr (std::is_same_v<T, float>)
        return "f32";
    else if constexpr (std::is_same_v<T, bfloat16>)
        return "bf16";
    else if constexpr (std::is_same_v<T, half>)
        return "f16";
    else
        return "q8_0";
}

ROPEKIT_END_NAMESPACE
