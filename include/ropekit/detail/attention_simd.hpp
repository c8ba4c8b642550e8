// SPDX-License-Identifier: Apache-2.0
/// \file
/// The handful of vector operations the attention micro-kernels use, for xsimd architectures
/// and for ropekit::scalar_arch (plain floats), plus a vectorised exp for softmax.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../arch.hpp"
#include "../config.hpp"
#include "../storage.hpp"
#if ROPEKIT_HAS_XSIMD
#include "simd_storage.hpp"
#endif

#include "warnings_push.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail::attn {

/// Vector operations on `Arch`. The primary template (xsimd architectures) is defined only when
/// xsimd is available; scalar_arch always has its specialisation below.
template <class Arch>
struct vec_ops;

/// Plain-float operations: the same micro-kernels compile to scalar loops.
template <>
struct vec_ops<scalar_arch> {
    using vec = float;
    static constexpr int width = 1;
    /// 16 registers is what the blocking assumes for the scalar code (x86-64 GPR/XMM count).
    static constexpr int registers = 16;
    static ROPEKIT_ALWAYS_INLINE vec load(const float* p) noexcept { return *p; }
    static ROPEKIT_ALWAYS_INLINE vec loadu(const float* p) noexcept { return *p; }
    template <class T>
    static ROPEKIT_ALWAYS_INLINE vec load_stored(const T* p) noexcept {
        return to_float(*p);
    }
    /// Value j of block `*b`.
    static ROPEKIT_ALWAYS_INLINE vec load_q8_0(const block_q8_0* b, int j) noexcept {
        return dequantize_q8_0(*b, j);
    }
    /// qs[j] of block `*b`, unscaled.
    static ROPEKIT_ALWAYS_INLINE vec load_q8_0_ints(const block_q8_0* b, int j) noexcept {
        return float(b->qs[j]);
    }
    /// The scale of block `*b`.
    static ROPEKIT_ALWAYS_INLINE vec q8_0_scale(const block_q8_0* b) noexcept {
        return float(b->d);
    }
    static ROPEKIT_ALWAYS_INLINE float reduce_add(vec v) noexcept { return v; }
    static ROPEKIT_ALWAYS_INLINE void store(float* p, vec v) noexcept { *p = v; }
    static ROPEKIT_ALWAYS_INLINE void storeu(float* p, vec v) noexcept { *p = v; }
    static ROPEKIT_ALWAYS_INLINE vec set1(float x) noexcept { return x; }
    static ROPEKIT_ALWAYS_INLINE vec zero() noexcept { return 0.0f; }
    static ROPEKIT_ALWAYS_INLINE vec fma(vec a, vec b, vec c) noexcept { return a * b + c; }
    static ROPEKIT_ALWAYS_INLINE vec max(vec a, vec b) noexcept { return a > b ? a : b; }
    /// Replaces -inf (the running max of a row that has seen no key yet) by 0, so that
    /// `s - m` never evaluates `-inf - -inf`.
    static ROPEKIT_ALWAYS_INLINE vec finite_or_zero(vec m) noexcept {
        return m == -std::numeric_limits<float>::infinity() ? 0.0f : m;
    }
    static ROPEKIT_ALWAYS_INLINE vec exp(vec x) noexcept { return std::exp(x); }
    static ROPEKIT_ALWAYS_INLINE vec tanh(vec x) noexcept { return std::tanh(x); }
    static ROPEKIT_ALWAYS_INLINE float reduce_max(vec v) noexcept { return v; }
    static ROPEKIT_ALWAYS_INLINE void in_register(vec&) noexcept {}
    static ROPEKIT_ALWAYS_INLINE void transpose(vec*) noexcept {}
};

#if ROPEKIT_HAS_XSIMD
/// xsimd operations on 32-bit float batches of `Arch`.
template <class Arch>
struct vec_ops {
    using vec = xsimd::batch<float, Arch>;
    using ivec = xsimd::batch<std::int32_t, Arch>;
    static constexpr int width = int(vec::size);
    /// AVX-512 has 32 vector registers, SSE/AVX2 16: the register blocking depends on it.
    static constexpr int registers = width == 16 ? 32 : 16;
    static ROPEKIT_ALWAYS_INLINE vec load(const float* p) noexcept { return vec::load_aligned(p); }
    static ROPEKIT_ALWAYS_INLINE vec loadu(const float* p) noexcept {
        return vec::load_unaligned(p);
    }
    /// `width` stored values (float, bfloat16 or half) widened to float, any alignment.
    template <class T>
    static ROPEKIT_ALWAYS_INLINE vec load_stored(const T* p) noexcept {
        return detail::simd::load_as_float<Arch, T>(p);
    }
    /// Values [j, j + width) of block `*b` as float (j a multiple of width).
    static ROPEKIT_ALWAYS_INLINE vec load_q8_0(const block_q8_0* b, int j) noexcept {
        return detail::simd::load_q8_0<Arch>(b, j);
    }
    /// qs[j, j + width) of block `*b` as unscaled floats.
    static ROPEKIT_ALWAYS_INLINE vec load_q8_0_ints(const block_q8_0* b, int j) noexcept {
        return detail::simd::load_q8_0_ints<Arch>(b, j);
    }
    /// The scale of block `*b` in every lane.
    static ROPEKIT_ALWAYS_INLINE vec q8_0_scale(const block_q8_0* b) noexcept {
        return detail::simd::q8_0_scale<Arch>(b);
    }
    /// 2 x width bfloat16 values at `p` as two float vectors: the even elements (0, 2, 4, ...)
    /// and the odd ones. One load and two integer operations, where two widening loads cost a
    /// zero-extending shuffle and a shift each; the caller keeps the other operand in the same
    /// even / odd order (decode permutes q and O once per call).
    static ROPEKIT_ALWAYS_INLINE void load_bf16_pairs(const bfloat16* p, vec& even,
                                                      vec& odd) noexcept {
        using u32 = xsimd::batch<std::uint32_t, Arch>;
        const u32 x = u32::load_unaligned(reinterpret_cast<const std::uint32_t*>(p));
        even = detail::simd::bit_cast<float>(x << 16);
        odd = detail::simd::bit_cast<float>(x & u32(0xFFFF0000u));
    }
    static ROPEKIT_ALWAYS_INLINE void store(float* p, const vec& v) noexcept { v.store_aligned(p); }
    static ROPEKIT_ALWAYS_INLINE void storeu(float* p, const vec& v) noexcept {
        v.store_unaligned(p);
    }
    static ROPEKIT_ALWAYS_INLINE float reduce_add(const vec& v) noexcept {
        return detail::simd::reduce_add(v);
    }
    static ROPEKIT_ALWAYS_INLINE vec set1(float x) noexcept { return vec(x); }
    static ROPEKIT_ALWAYS_INLINE vec zero() noexcept { return vec(0.0f); }
    static ROPEKIT_ALWAYS_INLINE vec fma(const vec& a, const vec& b, const vec& c) noexcept {
        return detail::simd::fma(a, b, c);
    }
    static ROPEKIT_ALWAYS_INLINE vec max(const vec& a, const vec& b) noexcept {
        return xsimd::max(a, b);
    }
    static ROPEKIT_ALWAYS_INLINE vec finite_or_zero(const vec& m) noexcept {
        return xsimd::select(m == vec(-std::numeric_limits<float>::infinity()), vec(0.0f), m);
    }
    /// exp(x) for the softmax, x <= 0 in practice (scores minus the running max).
    ///
    /// Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then the degree-7 Taylor polynomial of
    /// e^r (truncation error |r|^8/8! < 6e-9, below float rounding), then 2^n by adding n to the
    /// exponent bits. Maximum relative error about 2 ulp. Inputs below -87.3 (including -inf,
    /// i.e. masked scores) give exactly 0, so a hidden key never contributes to the denominator;
    /// inputs above 88 are clamped (they cannot occur: x is a score minus a running maximum).
    static ROPEKIT_ALWAYS_INLINE vec exp(const vec& x) noexcept {
        const vec lo(-87.3f);
        const vec xc = xsimd::min(xsimd::max(x, lo), vec(88.0f));
        const vec n = xsimd::nearbyint(xc * vec(1.44269504088896341f));
        vec r = detail::simd::fma(n, vec(-0.693145751953125f), xc);  // ln2 high part (exact n*hi)
        r = detail::simd::fma(n, vec(-1.428606765330187e-06f), r);   // ln2 low part
        vec p(1.0f / 5040.0f);
        p = detail::simd::fma(p, r, vec(1.0f / 720.0f));
        p = detail::simd::fma(p, r, vec(1.0f / 120.0f));
        p = detail::simd::fma(p, r, vec(1.0f / 24.0f));
        p = detail::simd::fma(p, r, vec(1.0f / 6.0f));
        p = detail::simd::fma(p, r, vec(0.5f));
        p = detail::simd::fma(p, r, vec(1.0f));
        p = detail::simd::fma(p, r, vec(1.0f));
        const ivec e = (xsimd::to_int(n) + ivec(127)) << 23;
        const vec scale = detail::simd::bit_cast<float>(e);
        return xsimd::select(x < lo, vec(0.0f), p * scale);
    }
    /// tanh(x) for the logit soft-cap (Gemma 2's `cap * tanh(s / cap)`), within 3 ulp of the
    /// float-rounded truth (tests/isa/test_attention_families.cpp sweeps it against std::tanh).
    ///
    /// |x| < 0.625: `x + x^3 P(x^2)`, P of degree 4 fitted here (weighted least squares on
    /// Chebyshev nodes for the relative error; 0.83 ulp in float arithmetic), where the other
    /// form would lose bits to cancellation. Beyond: `1 - 2 / (e^{2|x|} + 1)` with the softmax
    /// exp above (its 2 ulp shrink by the derivative), sign restored; e^{2|x|} saturates at
    /// e^88, so |x| >= 9 (and +-inf) gives exactly +-1. NaN stays NaN (the exp's clamps would
    /// turn it into a number).
    static ROPEKIT_ALWAYS_INLINE vec tanh(const vec& x) noexcept {
        const vec ax = xsimd::abs(x);
        const vec z = x * x;
        vec p(-0.005718957632780075f);
        p = detail::simd::fma(p, z, vec(0.020653119310736656f));
        p = detail::simd::fma(p, z, vec(-0.05374465510249138f));
        p = detail::simd::fma(p, z, vec(0.13331513106822968f));
        p = detail::simd::fma(p, z, vec(-0.3333328664302826f));
        const vec small = detail::simd::fma(x * z, p, x);
        const vec e = exp(ax + ax);
        const vec big = vec(1.0f) - vec(2.0f) / (e + vec(1.0f));
        const vec big_signed = xsimd::select(x < vec(0.0f), -big, big);
        const vec r = xsimd::select(ax < vec(0.625f), small, big_signed);
        // x == x is false only for NaN (an ordered compare; xsimd's != is ordered too on AVX-512).
        return xsimd::select(x == x, r, x);
    }
    static ROPEKIT_ALWAYS_INLINE float reduce_max(const vec& v) noexcept {
        return detail::simd::reduce_max(v);
    }
    /// Makes `v` a register value the compiler cannot re-derive from memory. Decode micro-kernels
    /// load each K / V vector once for several query rows; GCC 12 and clang 14 otherwise fold
    /// the load into every FMA that uses it (and redo a 16-bit widening per use), which makes the
    /// loop bound by load ports (one 512-bit load per cycle on Zen 4) instead of FMAs.
    static ROPEKIT_ALWAYS_INLINE void in_register(vec& v) noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        typename vec::register_type r = v;
        __asm__("" : "+v"(r));  // "v": any SSE / AVX / AVX-512 register
        v = r;
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
        typename vec::register_type r = v;
        __asm__("" : "+w"(r));  // "w": any NEON / SVE register
        v = r;
#else
        (void)v;
#endif
    }
    /// Transposes the width x width matrix held in `v[0..width)` (v[i] lane j becomes v[j]
    /// lane i): unpack / shuffle networks for AVX-512 (64 shuffles for 256 floats) and AVX
    /// (24 for 64); other targets go through memory. Q^T and O^T (the kernel's "queries in lanes"
    /// layout) are filled and emptied this way instead of one scalar per element.
    static ROPEKIT_ALWAYS_INLINE void transpose(vec* v) noexcept {
#if defined(__AVX512F__) && (defined(__x86_64__) || defined(__i386__))
        if constexpr (width == 16 && std::is_base_of_v<xsimd::avx512f, Arch>) {
            __m512 t[16], u[16];
            ROPEKIT_UNROLL
            for (int k = 0; k < 8; ++k) {
                t[2 * k] = _mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]);
                t[2 * k + 1] = _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]);
            }
            // u[4g + c], 128-bit block L: column 4L + c of rows 4g .. 4g + 3.
            ROPEKIT_UNROLL
            for (int g = 0; g < 4; ++g) {
                const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 2]);
                const __m512d c = _mm512_castps_pd(t[4 * g + 1]),
                              d = _mm512_castps_pd(t[4 * g + 3]);
                u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
                u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
                u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
                u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
            }
            ROPEKIT_UNROLL
            for (int c = 0; c < 4; ++c) {
                const __m512 v02 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
                const __m512 v13 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
                const __m512 w02 =
                    _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
                const __m512 w13 =
                    _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
                v[c] = _mm512_shuffle_f32x4(v02, w02, _MM_SHUFFLE(2, 0, 2, 0));
                v[8 + c] = _mm512_shuffle_f32x4(v02, w02, _MM_SHUFFLE(3, 1, 3, 1));
                v[4 + c] = _mm512_shuffle_f32x4(v13, w13, _MM_SHUFFLE(2, 0, 2, 0));
                v[12 + c] = _mm512_shuffle_f32x4(v13, w13, _MM_SHUFFLE(3, 1, 3, 1));
            }
            return;
        }
#endif
#if defined(__AVX__) && (defined(__x86_64__) || defined(__i386__))
        if constexpr (width == 8 && std::is_base_of_v<xsimd::avx, Arch>) {
            __m256 t[8], u[8];
            ROPEKIT_UNROLL
            for (int k = 0; k < 4; ++k) {
                t[2 * k] = _mm256_unpacklo_ps(v[2 * k], v[2 * k + 1]);
                t[2 * k + 1] = _mm256_unpackhi_ps(v[2 * k], v[2 * k + 1]);
            }
            ROPEKIT_UNROLL
            for (int g = 0; g < 2; ++g) {
                u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(1, 0, 1, 0));
                u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(3, 2, 3, 2));
                u[4 * g + 2] =
                    _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(1, 0, 1, 0));
                u[4 * g + 3] =
                    _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(3, 2, 3, 2));
            }
            ROPEKIT_UNROLL
            for (int c = 0; c < 4; ++c) {
                v[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
                v[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
            }
            return;
        }
#endif
        alignas(64) float m[width * width];
        ROPEKIT_UNROLL
        for (int i = 0; i < width; ++i) v[i].store_aligned(m + i * width);
        alignas(64) float t[width * width];
        ROPEKIT_UNROLL
        for (int i = 0; i < width; ++i) {
            ROPEKIT_UNROLL
            for (int j = 0; j < width; ++j) t[j * width + i] = m[i * width + j];
        }
        ROPEKIT_UNROLL
        for (int i = 0; i < width; ++i) v[i] = vec::load_aligned(t + i * width);
    }

    /// Lane i = horizontal sum of rows[i], for `width` batches (a transpose-and-add tree: about
    /// one shuffle and one add per batch instead of a whole reduction each).
    static ROPEKIT_ALWAYS_INLINE vec sum_rows(const vec* rows) noexcept {
#if defined(__AVX512F__) && (defined(__x86_64__) || defined(__i386__))
        if constexpr (width == 16 && std::is_base_of_v<xsimd::avx512f, Arch>) {
            // xsimd 8.1's AVX-512 haddp returns the lanes permuted (0 1 4 5 2 3 ...): own tree.
            __m512 s2[8];
            ROPEKIT_UNROLL
            for (int i = 0; i < 8; ++i) {
                const __m512 a = rows[2 * i], b = rows[2 * i + 1];
                s2[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
            }
            __m512 s4[4];
            ROPEKIT_UNROLL
            for (int i = 0; i < 4; ++i) {
                const __m512d a = _mm512_castps_pd(s2[2 * i]), b = _mm512_castps_pd(s2[2 * i + 1]);
                s4[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                                      _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
            }
            __m512 s8[2];
            ROPEKIT_UNROLL
            for (int i = 0; i < 2; ++i) {
                const __m512 a = s4[2 * i], b = s4[2 * i + 1];
                s8[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
            }
            return _mm512_add_ps(_mm512_shuffle_f32x4(s8[0], s8[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(s8[0], s8[1], _MM_SHUFFLE(3, 1, 3, 1)));
        } else
#endif
        {
            return xsimd::haddp(rows);
        }
    }
};
#endif

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE

#include "warnings_pop.hpp"
