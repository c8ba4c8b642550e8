// SPDX-License-Identifier: Apache-2.0
/// \file
/// SIMD helpers of the rotary kernels: table-free cos/sin of `position * inv_freq` (exact
/// reduction in double lanes, float polynomials), float <-> double lane conversions, and the
/// adjacent-pair swap of the GPT-J layout.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>

#include "../config.hpp"
#include "simd_storage.hpp"
#include "xsimd_compat.hpp"

#if ROPEKIT_HAS_XSIMD
ROPEKIT_BEGIN_NAMESPACE
namespace detail::simd {

/// Double lanes of `Arch` (half the float lanes).
template <class Arch>
inline constexpr std::size_t double_lanes = xsimd::batch<double, Arch>::size;

/// Loads `double_lanes<Arch>` floats from `p` and widens them to double (exact).
template <class Arch>
ROPEKIT_ALWAYS_INLINE xsimd::batch<double, Arch> load_float_as_double(const float* p) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (storage_impl::is_x86_width<Arch, 16>) {
        return _mm512_maskz_cvtps_pd(0xff, _mm256_loadu_ps(p));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX__)
        if constexpr (storage_impl::is_x86_width<Arch, 8>) {
        return _mm256_cvtps_pd(_mm_loadu_ps(p));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__SSE2__)
        if constexpr (storage_impl::is_x86_width<Arch, 4>) {
        return _mm_cvtps_pd(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p))));
    } else
#endif
    {
        alignas(64) double lanes[double_lanes<Arch>];
        for (std::size_t i = 0; i < double_lanes<Arch>; ++i) lanes[i] = double(p[i]);
        return xsimd::batch<double, Arch>::load_aligned(lanes);
    }
}

/// Rounds the `double_lanes<Arch>` lanes of `v` to float (nearest even) and stores them to `p`.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void store_double_as_float(float* p,
                                                 const xsimd::batch<double, Arch>& v) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (storage_impl::is_x86_width<Arch, 16>) {
        _mm256_storeu_ps(p, _mm512_maskz_cvtpd_ps(0xff, v));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX__)
        if constexpr (storage_impl::is_x86_width<Arch, 8>) {
        _mm_storeu_ps(p, _mm256_cvtpd_ps(v));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__SSE2__)
        if constexpr (storage_impl::is_x86_width<Arch, 4>) {
        _mm_store_sd(reinterpret_cast<double*>(p), _mm_castps_pd(_mm_cvtpd_ps(v)));
    } else
#endif
    {
        alignas(64) double lanes[double_lanes<Arch>];
        v.store_aligned(lanes);
        for (std::size_t i = 0; i < double_lanes<Arch>; ++i) p[i] = float(lanes[i]);
    }
}

/// Swaps the two floats of every adjacent pair: [a0 b0 a1 b1 ...] -> [b0 a0 b1 a1 ...].
template <class Arch>
ROPEKIT_ALWAYS_INLINE xsimd::batch<float, Arch> swap_adjacent(
    const xsimd::batch<float, Arch>& v) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (storage_impl::is_x86_width<Arch, 16>) {
        return _mm512_maskz_permute_ps(0xffff, v, 0xb1);
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX__)
        if constexpr (storage_impl::is_x86_width<Arch, 8>) {
        return _mm256_permute_ps(v, 0xb1);
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__SSE2__)
        if constexpr (storage_impl::is_x86_width<Arch, 4>) {
        return _mm_shuffle_ps(v, v, 0xb1);
    } else
#endif
    {
        constexpr std::size_t n = float_lanes<Arch>;
        alignas(64) float in[n], out[n];
        v.store_aligned(in);
        for (std::size_t i = 0; i < n; i += 2) {
            out[i] = in[i + 1];
            out[i + 1] = in[i];
        }
        return xsimd::batch<float, Arch>::load_aligned(out);
    }
}

/// Writes the `float_lanes<Arch>` floats of `src` each twice to dst[0, 2 * lanes):
/// [v0 v0 v1 v1 ...]; with `negate_first` the first copy of each is negated: [-v0 v0 -v1 v1 ...]
/// (the pair-duplicated cosines and sign-folded sines of the GPT-J layout).
template <class Arch, bool negate_first>
ROPEKIT_ALWAYS_INLINE void duplicate_pairs(const float* src, float* dst) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t n = B::size;
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (storage_impl::is_x86_width<Arch, 16>) {
        const __m512 v = _mm512_loadu_ps(src);
        const __m512i lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        const __m512i hi =
            _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
        __m512 a = _mm512_maskz_permutexvar_ps(0xffff, lo, v);
        __m512 b = _mm512_maskz_permutexvar_ps(0xffff, hi, v);
        if constexpr (negate_first) {
            const __m512i sign =
                _mm512_setr_epi32(INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN,
                                  0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0);
            a = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), sign));
            b = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(b), sign));
        }
        _mm512_storeu_ps(dst, a);
        _mm512_storeu_ps(dst + 16, b);
        return;
    }
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX2__)
    if constexpr (storage_impl::is_x86_width<Arch, 8>) {
        const __m256 v = _mm256_loadu_ps(src);
        __m256 a = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
        __m256 b = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7));
        if constexpr (negate_first) {
            const __m256 sign = _mm256_castsi256_ps(
                _mm256_setr_epi32(INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0));
            a = _mm256_xor_ps(a, sign);
            b = _mm256_xor_ps(b, sign);
        }
        _mm256_storeu_ps(dst, a);
        _mm256_storeu_ps(dst + 8, b);
        return;
    }
#endif
#if ROPEKIT_SIMD_X86 && defined(__SSE2__)
    if constexpr (storage_impl::is_x86_width<Arch, 4>) {
        const __m128 v = _mm_loadu_ps(src);
        __m128 a = _mm_unpacklo_ps(v, v), b = _mm_unpackhi_ps(v, v);
        if constexpr (negate_first) {
            const __m128 sign = _mm_castsi128_ps(_mm_setr_epi32(INT32_MIN, 0, INT32_MIN, 0));
            a = _mm_xor_ps(a, sign);
            b = _mm_xor_ps(b, sign);
        }
        _mm_storeu_ps(dst, a);
        _mm_storeu_ps(dst + 4, b);
        return;
    }
#endif
    alignas(64) float out[2 * n];
    for (std::size_t i = 0; i < n; ++i) {
        out[2 * i] = negate_first ? -src[i] : src[i];
        out[2 * i + 1] = src[i];
    }
    B::load_aligned(out).store_unaligned(dst);
    B::load_aligned(out + n).store_unaligned(dst + n);
}

/// Rounds to the nearest integer, ties to even (current rounding mode, never raised).
template <class Arch>
ROPEKIT_ALWAYS_INLINE xsimd::batch<double, Arch> round_nearest(
    const xsimd::batch<double, Arch>& v) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (storage_impl::is_x86_width<Arch, 16>) {
        // The zero-masking form: GCC 12's unmasked roundscale trips -Wmaybe-uninitialized.
        return _mm512_maskz_roundscale_pd(0xff, v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else
#endif
    {
        return xsimd::nearbyint(v);
    }
}

/// Reduces the double angles `a` (|a| < 2^29) to r in [-pi/4, pi/4] and a quadrant q in
/// {-2, ..., 2} with a = r + (q + 4j) pi/2, stored as floats to r_out / q_out.
///
/// k = nearest integer to a * 2/pi, r = a - k * pi/2 with pi/2 split in three float parts
/// (Cody-Waite): each part has 24 significant bits, so k * part is exact in double for
/// |k| < 2^29 and the first subtraction is exact (Sterbenz); the lost tail of pi/2 (~1e-23)
/// times k stays below 1e-14. No fma is needed, so archs without one (SSE2) reduce exactly too.
/// The only rounding that matters is r's to float: at most 2^-25 rad.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void reduce_quadrant(const xsimd::batch<double, Arch>& a, float* r_out,
                                           float* q_out) noexcept {
    using D = xsimd::batch<double, Arch>;
    constexpr double two_over_pi = 0.63661977236758134308;
    constexpr double pio2_1 = 0x1.921fb6p+0;    // float(pi/2)
    constexpr double pio2_2 = -0x1.777a5cp-25;  // float(pi/2 - pio2_1)
    constexpr double pio2_3 = -0x1.ee59dap-50;  // float(pi/2 - pio2_1 - pio2_2); rest ~1e-23
    const D k = round_nearest<Arch>(a * D(two_over_pi));
    const D r = ((a - k * D(pio2_1)) - k * D(pio2_2)) - k * D(pio2_3);
    // q = k - 4 round(k/4) is k mod 4 up to a multiple of 4.
    const D q = k - D(4.0) * round_nearest<Arch>(k * D(0.25));
    store_double_as_float<Arch>(r_out, r);
    store_double_as_float<Arch>(q_out, q);
}

/// cos and sin of r + q pi/2 for |r| <= pi/4 and q in {-2, ..., 2} (from reduce_quadrant), in
/// float. Taylor series to degree 11 (sin) and 12 (cos): truncation (pi/4)^13/13! ~ 8e-12 and
/// the float evaluation stay within about one ulp.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void cos_sin_quadrant(const xsimd::batch<float, Arch>& r,
                                            const xsimd::batch<float, Arch>& q,
                                            xsimd::batch<float, Arch>& c,
                                            xsimd::batch<float, Arch>& s) noexcept {
    using F = xsimd::batch<float, Arch>;
    const F r2 = r * r;
    F ps = F(float(-1.0 / 39916800.0));                        // -1/11!
    ps = detail::simd::fma(ps, r2, F(float(1.0 / 362880.0)));  // 1/9!
    ps = detail::simd::fma(ps, r2, F(float(-1.0 / 5040.0)));   // -1/7!
    ps = detail::simd::fma(ps, r2, F(float(1.0 / 120.0)));     // 1/5!
    ps = detail::simd::fma(ps, r2, F(float(-1.0 / 6.0)));      // -1/3!
    ps = detail::simd::fma(ps * r2, r, r);
    F pc = F(float(1.0 / 479001600.0));                          // 1/12!
    pc = detail::simd::fma(pc, r2, F(float(-1.0 / 3628800.0)));  // -1/10!
    pc = detail::simd::fma(pc, r2, F(float(1.0 / 40320.0)));     // 1/8!
    pc = detail::simd::fma(pc, r2, F(float(-1.0 / 720.0)));      // -1/6!
    pc = detail::simd::fma(pc, r2, F(float(1.0 / 24.0)));        // 1/4!
    pc = detail::simd::fma(pc, r2, F(-0.5f));
    pc = detail::simd::fma(pc, r2, F(1.0f));
    // sin(r + q pi/2), cos(r + q pi/2): q odd swaps sin and cos; q = 1: (cos, -sin);
    // q = +-2: (-sin, -cos); q = -1: (-cos, sin).
    const auto odd = (q == F(1.0f)) | (q == F(-1.0f));
    const auto two = (q == F(2.0f)) | (q == F(-2.0f));
    const F sin_sign = xsimd::select(two | (q == F(-1.0f)), F(-1.0f), F(1.0f));
    const F cos_sign = xsimd::select(two | (q == F(1.0f)), F(-1.0f), F(1.0f));
    s = xsimd::select(odd, pc, ps) * sin_sign;
    c = xsimd::select(odd, ps, pc) * cos_sign;
}

}  // namespace detail::simd
ROPEKIT_END_NAMESPACE
#endif
