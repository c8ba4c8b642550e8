// SPDX-License-Identifier: Apache-2.0
/// \file
/// The rotary kernels behind ropekit/rope.hpp: one pass over the tokens of a call, the angles of
/// a token produced once (table row or table-free SIMD cos/sin) and applied to every head of
/// every target (q and k), SIMD over the pairs with masked tails.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "../arch.hpp"
#include "../config.hpp"
#include "../layout.hpp"
#include "../storage.hpp"
#include "simd_math.hpp"
#include "simd_storage.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail {

/// Pairs handled per pass. A token's angles for one pass live in a stack buffer, so the kernels
/// never allocate; rotary dims up to 2 * rope_chunk_pairs (512) take a single pass.
inline constexpr int rope_chunk_pairs = 256;

/// One tensor the kernel rotates: rows of `head_dim` elements at
/// `data + token * token_stride + head * head_stride`.
template <class T>
struct rope_target {
    T* data;
    int heads;
    std::ptrdiff_t token_stride;
    std::ptrdiff_t head_stride;
};

/// Per-call scratch: the angles of one token for one pass, pair-duplicated for GPT-J, and the
/// padded inv_freq of the pass for the table-free source. About 11 KiB on the caller's stack.
struct rope_scratch {
    alignas(64) float cos[rope_chunk_pairs + 16];
    alignas(64) float sin[rope_chunk_pairs + 16];
    alignas(64) float cos_dup[2 * rope_chunk_pairs + 32];
    alignas(64) float sin_dup[2 * rope_chunk_pairs + 32];
    alignas(64) float inv[rope_chunk_pairs + 16];
    alignas(64) float inv_from[rope_chunk_pairs + 16];
    alignas(64) float reduced[rope_chunk_pairs + 16];  // table-free: angle mod pi/2
    alignas(64) float quadrant[rope_chunk_pairs + 16];
    alignas(64) float cos_eo[rope_chunk_pairs];  // NeoX bf16 AVX-512: even/odd order per 32
    alignas(64) float sin_eo[rope_chunk_pairs];
};

/// rope_scratch plus the M-RoPE lane masks (interleaved layout: 1.0f where a pair takes the
/// height / width row). A separate type, so the 1-D kernels keep their stack frame.
struct mrope_scratch : rope_scratch {
    alignas(64) float mrope_h[rope_chunk_pairs + 16];
    alignas(64) float mrope_w[rope_chunk_pairs + 16];
};

// ---------------------------------------------------------------------------------------------
// Rotation of one row's pairs [p0, p0 + n): scalar and SIMD.

/// Scalar NeoX rotation of n pairs (x0[i], x1[i]) by (c[i], s[i]), float math.
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void rotate_neox_scalar(T* ROPEKIT_RESTRICT x0, T* ROPEKIT_RESTRICT x1,
                                              const float* c, const float* s, int n) noexcept {
    for (int i = 0; i < n; ++i) {
        const float a = to_float(x0[i]), b = to_float(x1[i]);
        x0[i] = from_float<T>(a * c[i] - b * s[i]);
        x1[i] = from_float<T>(b * c[i] + a * s[i]);
    }
}

/// Scalar GPT-J rotation of n adjacent pairs (x[2i], x[2i+1]) by (c[i], s[i]).
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void rotate_gptj_scalar(T* x, const float* c, const float* s,
                                              int n) noexcept {
    for (int i = 0; i < n; ++i) {
        const float a = to_float(x[2 * i]), b = to_float(x[2 * i + 1]);
        x[2 * i] = from_float<T>(a * c[i] - b * s[i]);
        x[2 * i + 1] = from_float<T>(b * c[i] + a * s[i]);
    }
}

#if ROPEKIT_HAS_XSIMD
/// NeoX: x0' = x0 c - x1 s, x1' = x1 c + x0 s, a batch of pairs at a time, masked tail.
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void rotate_neox_simd(T* ROPEKIT_RESTRICT x0, T* ROPEKIT_RESTRICT x1,
                                            const float* c, const float* s, int n) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr int w = int(B::size);
    int i = 0;
    for (; i + w <= n; i += w) {
        const B a = simd::load_as_float<Arch>(x0 + i), b = simd::load_as_float<Arch>(x1 + i);
        const B cc = B::load_unaligned(c + i), ss = B::load_unaligned(s + i);
        simd::store_from_float<Arch>(x0 + i, detail::simd::fms(a, cc, b * ss));
        simd::store_from_float<Arch>(x1 + i, detail::simd::fma(b, cc, a * ss));
    }
    if (i < n) {
        const std::size_t m = std::size_t(n - i);
        const B a = simd::load_as_float_partial<Arch>(x0 + i, m);
        const B b = simd::load_as_float_partial<Arch>(x1 + i, m);
        const B cc = simd::load_as_float_partial<Arch>(c + i, m);
        const B ss = simd::load_as_float_partial<Arch>(s + i, m);
        simd::store_from_float_partial<Arch>(x0 + i, detail::simd::fms(a, cc, b * ss), m);
        simd::store_from_float_partial<Arch>(x1 + i, detail::simd::fma(b, cc, a * ss), m);
    }
}

/// GPT-J on m = 2n interleaved channels: x' = x * cd + swap_adjacent(x) * sd with the
/// pair-duplicated cosines cd = [c0 c0 c1 c1 ..] and sign-folded sines sd = [-s0 s0 -s1 s1 ..],
/// so no deinterleave is needed.
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void rotate_gptj_simd(T* x, const float* cd, const float* sd,
                                            int m) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr int w = int(B::size);
    int i = 0;
    for (; i + w <= m; i += w) {
        const B v = simd::load_as_float<Arch>(x + i);
        const B r = detail::simd::fma(v, B::load_unaligned(cd + i),
                                      simd::swap_adjacent<Arch>(v) * B::load_unaligned(sd + i));
        simd::store_from_float<Arch>(x + i, r);
    }
    if (i < m) {
        const std::size_t k = std::size_t(m - i);
        const B v = simd::load_as_float_partial<Arch>(x + i, k);
        const B r = detail::simd::fma(
            v, simd::load_as_float_partial<Arch>(cd + i, k),
            simd::swap_adjacent<Arch>(v) * simd::load_as_float_partial<Arch>(sd + i, k));
        simd::store_from_float_partial<Arch>(x + i, r, k);
    }
}

#if ROPEKIT_SIMD_X86 && defined(__AVX512BW__) && defined(__AVX512DQ__)
#define ROPEKIT_BF16_AVX512_PAIRS 1
/// bfloat16 with AVX-512, 32 values per register: a bf16 is the top half of a float, so one
/// 64-byte load splits into the floats of the even elements (shift left) and of the odd elements
/// (mask the low half) without widening, and two rounded results merge back with one shift and
/// one ternary-logic op. For GPT-J the even/odd split *is* the pair split; for NeoX the caller
/// passes cos/sin reordered per 32-pair block into 16 even then 16 odd pairs.
///
/// Every helper is a template on Arch (only ever instantiated for an AVX-512BW arch): their
/// bodies depend on ISA macros (`__AVX512BF16__` in merge), and a non-template inline function
/// would get a different definition in each per-ISA translation unit of a runtime-dispatching
/// program (an ODR violation); with Arch in the mangled name each TU's copy is its own.
namespace bf16x32 {

template <class Arch>
ROPEKIT_ALWAYS_INLINE __m512 even(__m512i x) noexcept {
    // Zero-masking shifts throughout: GCC 12's unmasked ones trip -Wmaybe-uninitialized.
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, x, 16));
}
template <class Arch>
ROPEKIT_ALWAYS_INLINE __m512 odd(__m512i x) noexcept {
    return _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(std::int32_t(0xffff0000u))));
}
/// Round-to-nearest-even to the top 16 bits (the low 16 bits are garbage), exactly
/// ropekit::bfloat16: u + 0x7fff + lsb, and NaN -> quiet NaN with the same top bits.
template <class Arch>
ROPEKIT_ALWAYS_INLINE __m512i round_top(__m512 v) noexcept {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb =
        _mm512_and_si512(_mm512_maskz_srli_epi32(0xffff, u, 16), _mm512_set1_epi32(1));
    const __m512i t = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
    const __mmask16 nan = _mm512_fpclass_ps_mask(v, 0x81);  // quiet or signaling NaN
    return _mm512_mask_or_epi32(t, nan, u, _mm512_set1_epi32(0x00400000));
}
/// 32 bf16 from the float results of the even and the odd elements.
template <class Arch>
ROPEKIT_ALWAYS_INLINE __m512i merge(__m512 even_result, __m512 odd_result) noexcept {
#if defined(__AVX512BF16__)
    // vcvtne2ps2bf16 rounds to nearest even and quiets NaNs exactly like ropekit::bfloat16, but
    // flushes float subnormals to zero. Only a subnormal or a zero float gives a bf16 (+-)0, so
    // one word test of the packed result rules subnormals out; classifying the floats themselves
    // (two fpclass) on every block measured slower. A zero result pays for that check as well.
    // Low 16 words: even results, high 16: odd results; interleave them back.
    const __m512i packed = (__m512i)_mm512_cvtne2ps_pbh(odd_result, even_result);
    const __mmask32 zero = _mm512_testn_epi16_mask(packed, _mm512_set1_epi16(0x7fff));
    if (__builtin_expect(zero == 0, 1) || (_mm512_fpclass_ps_mask(even_result, 0x20) |
                                           _mm512_fpclass_ps_mask(odd_result, 0x20)) == 0) {
        const __m512i order =
            _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                             22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        return _mm512_maskz_permutexvar_epi16(~__mmask32(0), order, packed);
    }
#endif
    const __m512i lo = _mm512_maskz_srli_epi32(0xffff, round_top<Arch>(even_result), 16);
    // lo | (odd & 0xffff0000): truth table A | (B & C) = 0xf8.
    return _mm512_ternarylogic_epi32(lo, round_top<Arch>(odd_result),
                                     _mm512_set1_epi32(std::int32_t(0xffff0000u)), 0xf8);
}

/// NeoX on pairs [0, m) with m a multiple of 32; ceo/seo hold, per block of 32 pairs, the
/// cos/sin of its 16 even pairs then of its 16 odd pairs.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void rotate_neox(bfloat16* ROPEKIT_RESTRICT x0, bfloat16* ROPEKIT_RESTRICT x1,
                                       const float* ceo, const float* seo, int m) noexcept {
    for (int i = 0; i < m; i += 32) {
        const __m512i a = _mm512_loadu_si512(x0 + i), b = _mm512_loadu_si512(x1 + i);
        const __m512 ce = _mm512_loadu_ps(ceo + i), co = _mm512_loadu_ps(ceo + i + 16);
        const __m512 se = _mm512_loadu_ps(seo + i), so = _mm512_loadu_ps(seo + i + 16);
        const __m512 ae = even<Arch>(a), ao = odd<Arch>(a), be = even<Arch>(b), bo = odd<Arch>(b);
        _mm512_storeu_si512(x0 + i, merge<Arch>(_mm512_fmsub_ps(ae, ce, _mm512_mul_ps(be, se)),
                                                _mm512_fmsub_ps(ao, co, _mm512_mul_ps(bo, so))));
        _mm512_storeu_si512(x1 + i, merge<Arch>(_mm512_fmadd_ps(be, ce, _mm512_mul_ps(ae, se)),
                                                _mm512_fmadd_ps(bo, co, _mm512_mul_ps(ao, so))));
    }
}

/// GPT-J on 16 * blocks pairs (32 * blocks channels) with natural-order cos/sin.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void rotate_gptj(bfloat16* x, const float* c, const float* s,
                                       int pairs) noexcept {
    for (int j = 0; j < pairs; j += 16) {
        const __m512i v = _mm512_loadu_si512(x + 2 * j);
        const __m512 cc = _mm512_loadu_ps(c + j), ss = _mm512_loadu_ps(s + j);
        const __m512 a = even<Arch>(v), b = odd<Arch>(v);
        _mm512_storeu_si512(x + 2 * j, merge<Arch>(_mm512_fmsub_ps(a, cc, _mm512_mul_ps(b, ss)),
                                                   _mm512_fmadd_ps(b, cc, _mm512_mul_ps(a, ss))));
    }
}

/// Builds the per-32-pair even/odd reordering of c and s used by rotate_neox (m a multiple of
/// 32). Two-source permutes and vector stores: scalar stores would stall the vector loads that
/// follow in every head on store forwarding.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void build_even_odd_angles(const float* c, const float* s, int m, float* ceo,
                                                 float* seo) noexcept {
    const __m512i even_idx =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_idx =
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int blk = 0; blk < m; blk += 32) {
        const __m512 c0 = _mm512_loadu_ps(c + blk), c1 = _mm512_loadu_ps(c + blk + 16);
        const __m512 s0 = _mm512_loadu_ps(s + blk), s1 = _mm512_loadu_ps(s + blk + 16);
        _mm512_storeu_ps(ceo + blk, _mm512_maskz_permutex2var_ps(0xffff, c0, even_idx, c1));
        _mm512_storeu_ps(ceo + blk + 16, _mm512_maskz_permutex2var_ps(0xffff, c0, odd_idx, c1));
        _mm512_storeu_ps(seo + blk, _mm512_maskz_permutex2var_ps(0xffff, s0, even_idx, s1));
        _mm512_storeu_ps(seo + blk + 16, _mm512_maskz_permutex2var_ps(0xffff, s0, odd_idx, s1));
    }
}

}  // namespace bf16x32
#else
#define ROPEKIT_BF16_AVX512_PAIRS 0
#endif

/// True when the 32-wide bfloat16 AVX-512 path applies to (Arch, T).
template <class Arch, class T>
inline constexpr bool use_bf16x32 = ROPEKIT_BF16_AVX512_PAIRS&& std::is_same_v<T, bfloat16>&&
    simd::storage_impl::is_x86_width<Arch, 16>;

/// Table-free angles of pairs [0, n) of the pass: cos/sin(pos * inv[i] - pos * inv_from[i]).
/// Both products are exact in double (24-bit by < 2^29); the reduction to [-pi/4, pi/4] runs in
/// double lanes, the polynomials in float lanes (twice as wide). `inv`/`inv_from` are padded to
/// a whole number of batches; `red`/`quad` are scratch of the same size.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void table_free_angles_simd(double pos, const float* inv,
                                                  const float* inv_from, int n, float* red,
                                                  float* quad, float* c, float* s) noexcept {
    using D = xsimd::batch<double, Arch>;
    using F = xsimd::batch<float, Arch>;
    constexpr int wd = int(D::size), wf = int(F::size);
    const D p(pos);
    const int padded = (n + wf - 1) / wf * wf;  // <= n + 15: inside the zero padding of inv
    for (int i = 0; i < padded; i += wd) {
        D a = p * simd::load_float_as_double<Arch>(inv + i);
        if (inv_from) a = a - p * simd::load_float_as_double<Arch>(inv_from + i);
        simd::reduce_quadrant<Arch>(a, red + i, quad + i);
    }
    for (int i = 0; i < padded; i += wf) {
        F cc, ss;
        simd::cos_sin_quadrant<Arch>(F::load_aligned(red + i), F::load_aligned(quad + i), cc, ss);
        cc.store_aligned(c + i);
        ss.store_aligned(s + i);
    }
}
#endif

/// Scalar table-free angles: the same exact double angle, std::cos/std::sin in double
/// (glibc reduces exactly), rounded once to float.
template <class Arch>
inline void table_free_angles_scalar(double pos, const float* inv, const float* inv_from, int n,
                                     float* c, float* s) noexcept {
    for (int i = 0; i < n; ++i) {
        double a = pos * double(inv[i]);
        if (inv_from) a -= pos * double(inv_from[i]);
        c[i] = float(std::cos(a));
        s[i] = float(std::sin(a));
    }
}

template <class Arch>
inline constexpr bool is_simd_arch = !std::is_same_v<Arch, scalar_arch>;

/// NeoX rotation of n pairs (x0[i], x1[i]) by (c[i], s[i]): SIMD on a vector Arch, else scalar.
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void rotate_neox_pairs(T* ROPEKIT_RESTRICT x0, T* ROPEKIT_RESTRICT x1,
                                             const float* c, const float* s, int n) noexcept {
#if ROPEKIT_HAS_XSIMD
    if constexpr (is_simd_arch<Arch>) {
        rotate_neox_simd<Arch, T>(x0, x1, c, s, n);
        return;
    }
#endif
    rotate_neox_scalar<Arch, T>(x0, x1, c, s, n);
}

/// Calls f(std::integral_constant<int, k>) for k = 0 .. K-1, fully unrolled (so arrays of
/// batches indexed by k stay in registers).
template <int K, class F, int... Ks>
ROPEKIT_ALWAYS_INLINE void static_for_impl(F&& f, std::integer_sequence<int, Ks...>) {
    (f(std::integral_constant<int, Ks>{}), ...);
}
template <int K, class F>
ROPEKIT_ALWAYS_INLINE void static_for(F&& f) {
    static_for_impl<K>(f, std::make_integer_sequence<int, K>{});
}

#if ROPEKIT_HAS_XSIMD
/// The common case (64 pairs, head_dim 128 fully rotated) with the angles of the token held in
/// registers across all heads: per vector of channels only load, math and store remain.
/// `a`/`b` are NeoX (c, s) or GPT-J (cd, sd), or the bf16x32 even/odd forms.
///
/// `fixed_span` > 0 is the NeoX span as a constant (the ordinary 64): the second half is then a
/// constant displacement, and the compiler can tell every load from every store of the head
/// and schedule them freely; with a runtime span (0: use `span_arg`) it cannot, which measured
/// 20% slower for bf16 out of cache, so the ordinary case keeps its own instantiation.
template <class Arch, class T, int pairs, int fixed_span = 0>
ROPEKIT_ALWAYS_INLINE bool rotate_token_fixed(rope_layout layout, int span_arg, const float* c,
                                              const float* s, const float* cd, const float* sd,
                                              const float* ceo, const float* seo,
                                              const rope_target<T>* targets, int n_targets,
                                              std::int64_t t) noexcept {
    using B = xsimd::batch<float, Arch>;
    constexpr int w = int(B::size);
    const int span = fixed_span > 0 ? fixed_span : span_arg;
    if constexpr (use_bf16x32<Arch, T>) {
#if ROPEKIT_BF16_AVX512_PAIRS
        if (layout == rope_layout::neox) {
            constexpr int blocks = pairs / 32;
            __m512 ce[blocks], co[blocks], se[blocks], so[blocks];
            static_for<blocks>([&](auto k) {
                ce[k] = _mm512_loadu_ps(ceo + 32 * k);
                co[k] = _mm512_loadu_ps(ceo + 32 * k + 16);
                se[k] = _mm512_loadu_ps(seo + 32 * k);
                so[k] = _mm512_loadu_ps(seo + 32 * k + 16);
            });
            for (int g = 0; g < n_targets; ++g) {
                const rope_target<T>& tg = targets[g];
                T* row = tg.data + t * tg.token_stride;
                for (int h = 0; h < tg.heads; ++h, row += tg.head_stride) {
                    static_for<blocks>([&](auto k) {
                        T* x0 = row + 32 * k;
                        T* x1 = row + span + 32 * k;
                        const __m512i a = _mm512_loadu_si512(x0), b = _mm512_loadu_si512(x1);
                        const __m512 ae = bf16x32::even<Arch>(a), ao = bf16x32::odd<Arch>(a);
                        const __m512 be = bf16x32::even<Arch>(b), bo = bf16x32::odd<Arch>(b);
                        _mm512_storeu_si512(
                            x0, bf16x32::merge<Arch>(
                                    _mm512_fmsub_ps(ae, ce[k], _mm512_mul_ps(be, se[k])),
                                    _mm512_fmsub_ps(ao, co[k], _mm512_mul_ps(bo, so[k]))));
                        _mm512_storeu_si512(
                            x1, bf16x32::merge<Arch>(
                                    _mm512_fmadd_ps(be, ce[k], _mm512_mul_ps(ae, se[k])),
                                    _mm512_fmadd_ps(bo, co[k], _mm512_mul_ps(ao, so[k]))));
                    });
                }
            }
        } else {
            constexpr int blocks = pairs / 16;
            __m512 cc[blocks], ss[blocks];
            static_for<blocks>([&](auto k) {
                cc[k] = _mm512_loadu_ps(c + 16 * k);
                ss[k] = _mm512_loadu_ps(s + 16 * k);
            });
            for (int g = 0; g < n_targets; ++g) {
                const rope_target<T>& tg = targets[g];
                T* row = tg.data + t * tg.token_stride;
                for (int h = 0; h < tg.heads; ++h, row += tg.head_stride) {
                    static_for<blocks>([&](auto k) {
                        const __m512i v = _mm512_loadu_si512(row + 32 * k);
                        const __m512 a = bf16x32::even<Arch>(v), b = bf16x32::odd<Arch>(v);
                        _mm512_storeu_si512(
                            row + 32 * k, bf16x32::merge<Arch>(
                                              _mm512_fmsub_ps(a, cc[k], _mm512_mul_ps(b, ss[k])),
                                              _mm512_fmadd_ps(b, cc[k], _mm512_mul_ps(a, ss[k]))));
                    });
                }
            }
        }
#endif
        (void)c, (void)s, (void)cd, (void)sd, (void)ceo, (void)seo, (void)span;
        return true;
    } else if constexpr (pairs % w == 0 && 2 * (2 * pairs / w) <= 16) {
        (void)ceo, (void)seo;
        if (layout == rope_layout::neox) {
            constexpr int k_count = pairs / w;
            B cc[k_count], ss[k_count];
            static_for<k_count>([&](auto k) {
                cc[k] = B::load_unaligned(c + w * k);
                ss[k] = B::load_unaligned(s + w * k);
            });
            for (int g = 0; g < n_targets; ++g) {
                const rope_target<T>& tg = targets[g];
                T* row = tg.data + t * tg.token_stride;
                for (int h = 0; h < tg.heads; ++h, row += tg.head_stride) {
                    static_for<k_count>([&](auto k) {
                        T* x0 = row + w * k;
                        T* x1 = row + span + w * k;
                        const B a = simd::load_as_float<Arch>(x0),
                                b = simd::load_as_float<Arch>(x1);
                        simd::store_from_float<Arch>(x0, detail::simd::fms(a, cc[k], b * ss[k]));
                        simd::store_from_float<Arch>(x1, detail::simd::fma(b, cc[k], a * ss[k]));
                    });
                }
            }
        } else {
            constexpr int k_count = 2 * pairs / w;
            B cc[k_count], ss[k_count];
            static_for<k_count>([&](auto k) {
                cc[k] = B::load_unaligned(cd + w * k);
                ss[k] = B::load_unaligned(sd + w * k);
            });
            for (int g = 0; g < n_targets; ++g) {
                const rope_target<T>& tg = targets[g];
                T* row = tg.data + t * tg.token_stride;
                for (int h = 0; h < tg.heads; ++h, row += tg.head_stride) {
                    static_for<k_count>([&](auto k) {
                        const B v = simd::load_as_float<Arch>(row + w * k);
                        simd::store_from_float<Arch>(
                            row + w * k,
                            detail::simd::fma(v, cc[k], simd::swap_adjacent<Arch>(v) * ss[k]));
                    });
                }
            }
        }
        return true;
    } else {
        (void)layout, (void)span, (void)c, (void)s, (void)cd, (void)sd, (void)ceo, (void)seo;
        (void)targets, (void)n_targets, (void)t;
        return false;
    }
}
#endif

/// Builds, for the GPT-J layout, the pair-duplicated cosines [c0 c0 c1 c1 ..] and sign-folded
/// sines [-s0 s0 -s1 s1 ..] of n pairs.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void build_gptj_angles(const float* c, const float* s, int n, float* cd,
                                             float* sd) noexcept {
    int i0 = 0;
#if ROPEKIT_HAS_XSIMD
    if constexpr (is_simd_arch<Arch>) {
        // Vector stores: scalar ones here would defeat store-to-load forwarding of the vector
        // loads that follow in every head.
        constexpr int w = int(xsimd::batch<float, Arch>::size);
        for (; i0 + w <= n; i0 += w) {
            simd::duplicate_pairs<Arch, false>(c + i0, cd + 2 * i0);
            simd::duplicate_pairs<Arch, true>(s + i0, sd + 2 * i0);
        }
    }
#endif
    for (int i = i0; i < n; ++i) {
        cd[2 * i] = c[i];
        cd[2 * i + 1] = c[i];
        sd[2 * i] = -s[i];
        sd[2 * i + 1] = s[i];
    }
}

/// Rotates pairs [p0, p0 + n) of token t in every head of every target, given the angles of
/// those pairs (c[i], s[i] for pair p0 + i). `pairs` is the call's pair count (rotary_dim / 2),
/// `span` the NeoX distance between the two channels of a pair (rotary_dim / 2 for ordinary
/// rotary, head_dim / 2 for Gemma 4's proportional RoPE); the targets' data already point at
/// the first rotated channel (rope_geometry::offset).
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void rotate_token(rope_layout layout, int pairs, int span, int p0, int n,
                                        const float* c, const float* s,
                                        const rope_target<T>* targets, int n_targets,
                                        std::int64_t t, rope_scratch& scratch) noexcept {
    (void)pairs;  // (only the SIMD fixed path asks)
    float* cd = scratch.cos_dup;
    float* sd = scratch.sin_dup;
#if ROPEKIT_HAS_XSIMD
    if constexpr (is_simd_arch<Arch>) {
        if (n == 64 && pairs == 64) {  // one pass of 64 pairs, any span
            if constexpr (use_bf16x32<Arch, T>) {
#if ROPEKIT_BF16_AVX512_PAIRS
                if (layout == rope_layout::neox)
                    bf16x32::build_even_odd_angles<Arch>(c, s, 64, scratch.cos_eo, scratch.sin_eo);
#endif
            } else if (layout == rope_layout::gptj) {
                build_gptj_angles<Arch>(c, s, 64, cd, sd);
            }
            // The ordinary span (and GPT-J, which has none) as a template constant.
            if (span == 64 || layout == rope_layout::gptj
                    ? rotate_token_fixed<Arch, T, 64, 64>(layout, 64, c, s, cd, sd, scratch.cos_eo,
                                                          scratch.sin_eo, targets, n_targets, t)
                    : rotate_token_fixed<Arch, T, 64>(layout, span, c, s, cd, sd, scratch.cos_eo,
                                                      scratch.sin_eo, targets, n_targets, t))
                return;
        }
    }
#endif
    if (layout == rope_layout::neox) {
#if ROPEKIT_BF16_AVX512_PAIRS
        if constexpr (use_bf16x32<Arch, T>) {
            const int m = n / 32 * 32;
            if (m > 0) {
                bf16x32::build_even_odd_angles<Arch>(c, s, m, scratch.cos_eo, scratch.sin_eo);
                for (int g = 0; g < n_targets; ++g) {
                    const rope_target<T>& tg = targets[g];
                    T* row = tg.data + t * tg.token_stride + p0;
                    for (int h = 0; h < tg.heads; ++h, row += tg.head_stride) {
                        bf16x32::rotate_neox<Arch>(row, row + span, scratch.cos_eo, scratch.sin_eo,
                                                   m);
                        if (m < n)
                            rotate_neox_simd<Arch, T>(row + m, row + span + m, c + m, s + m, n - m);
                    }
                }
                return;
            }
        }
#endif
        for (int g = 0; g < n_targets; ++g) {
            const rope_target<T>& tg = targets[g];
            T* row = tg.data + t * tg.token_stride + p0;
            for (int h = 0; h < tg.heads; ++h, row += tg.head_stride)
                rotate_neox_pairs<Arch, T>(row, row + span, c, s, n);
        }
        return;
    }
    if constexpr (is_simd_arch<Arch>) {
        build_gptj_angles<Arch>(c, s, n, cd, sd);
#if ROPEKIT_HAS_XSIMD
        for (int g = 0; g < n_targets; ++g) {
            const rope_target<T>& tg = targets[g];
            T* row = tg.data + t * tg.token_stride + 2 * p0;
            for (int h = 0; h < tg.heads; ++h, row += tg.head_stride) {
#if ROPEKIT_BF16_AVX512_PAIRS
                if constexpr (use_bf16x32<Arch, T>) {
                    const int m = n / 16 * 16;
                    bf16x32::rotate_gptj<Arch>(row, c, s, m);
                    if (m < n)
                        rotate_gptj_simd<Arch, T>(row + 2 * m, cd + 2 * m, sd + 2 * m, 2 * (n - m));
                    continue;
                }
#endif
                rotate_gptj_simd<Arch, T>(row, cd, sd, 2 * n);
            }
        }
#endif
    } else {
        (void)cd, (void)sd;
        for (int g = 0; g < n_targets; ++g) {
            const rope_target<T>& tg = targets[g];
            T* row = tg.data + t * tg.token_stride + 2 * p0;
            for (int h = 0; h < tg.heads; ++h, row += tg.head_stride)
                rotate_gptj_scalar<Arch, T>(row, c, s, n);
        }
    }
}

/// The bytes between one token's rotated rows and the next token's, [begin, end) for token 0
/// and `t * stride` further for token t: the v heads of a packed QKV buffer. Zen 4's L2 stream
/// prefetcher stops at a gap of a few cache lines and restarts late on the other side, which cut
/// the fused q+k call on a packed QKV buffer to about half of the contiguous bandwidth (a plain
/// load/store loop over 40 of every 48 heads shows the same); software prefetches of the rows
/// ahead did not help, a prefetch of every gap line in address order, right after the token,
/// keeps the stream alive. The gap is only a hint: prefetches never fault and never touch data.
/// (A template on Arch, like everything the kernels call: see find_rope_gap.)
template <class Arch>
struct rope_gap {
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;
    std::uintptr_t stride = 0;

    bool active() const noexcept { return end > begin; }

    void prefetch(std::int64_t t) const noexcept {
#if defined(__GNUC__)
        const std::uintptr_t off = std::uintptr_t(t) * stride;
        for (std::uintptr_t a = (begin + off) & ~std::uintptr_t(63); a < end + off; a += 64) {
            __builtin_prefetch(reinterpret_cast<const void*>(a), 0, 3);
            // GCC counts a prefetch as no side effect and, assuming loops finish, deleted the
            // whole loop; the empty volatile asm keeps it (and costs nothing).
            __asm__ __volatile__("");
        }
#else
        (void)t;
#endif
    }
};

/// Bytes a call must touch before gap prefetching is worth it: smaller calls run in L2.
inline constexpr std::int64_t rope_gap_min_bytes = std::int64_t(1) << 21;

/// The gap of a single-pass call whose targets share one positive token stride, when the gap is
/// at most as large as the rows themselves (prefetching more would waste more bandwidth than the
/// stream restart costs); inactive otherwise. A target's rotated channels are the `extent`
/// channels from its data pointer (rope_geometry: the targets already start at the rotary
/// offset, and a proportional NeoX head touches [0, pairs) and [span, span + pairs), whose
/// cache lines the hardware stream covers as one run).
///
/// Arch is not used: it puts the architecture in the mangled name, because the compiler
/// vectorises even this integer code (an AVX-512 TU emitted VEX moves here, and k-mask
/// instructions in check_view), and a copy the linker kept from an AVX TU must never serve a
/// baseline caller.
template <class Arch, class T>
rope_gap<Arch> find_rope_gap(int pairs, int extent, const rope_target<T>* targets, int n_targets,
                             std::int64_t t0, std::int64_t t1) noexcept {
    rope_gap<Arch> gap;
    if (n_targets < 1 || pairs > rope_chunk_pairs || t1 - t0 < 2) return gap;
    const std::ptrdiff_t stride = targets[0].token_stride;
    std::uintptr_t lo = 0, hi = 0;
    std::int64_t touched = 0;
    for (int g = 0; g < n_targets; ++g) {
        const rope_target<T>& tg = targets[g];
        if (tg.heads <= 0) continue;
        if (tg.token_stride != stride || stride <= 0 || tg.head_stride < 0) return gap;
        const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(tg.data);
        const std::uintptr_t b =
            a + (std::uintptr_t(tg.heads - 1) * std::uintptr_t(tg.head_stride) +
                 std::uintptr_t(extent)) *
                    sizeof(T);
        lo = touched == 0 ? a : std::min(lo, a);
        hi = touched == 0 ? b : std::max(hi, b);
        touched += std::int64_t(tg.heads) * 2 * pairs * std::int64_t(sizeof(T));  // bytes used
    }
    const std::uintptr_t stride_bytes = std::uintptr_t(stride) * sizeof(T);
    if (touched * (t1 - t0) < rope_gap_min_bytes || hi - lo >= stride_bytes) return gap;
    const std::uintptr_t gap_bytes = lo + stride_bytes - hi;
    if (gap_bytes > hi - lo) return gap;
    gap.begin = hi;  // token 0's gap; token t's is t * stride further
    gap.end = lo + stride_bytes;
    gap.stride = stride_bytes;
    return gap;
}

/// Which channels of a head a call rotates (rope_frequencies' geometry, resolved): pair i is
/// channels (offset + i, offset + i + span) for NeoX and (offset + 2i, offset + 2i + 1) for
/// GPT-J; `extent` is span + pairs (NeoX) or 2 * pairs (GPT-J).
struct rope_geometry {
    int pairs;
    int span;
    int offset;
    int extent;
    rope_layout layout;
};

/// The geometry of `f` (rope_frequencies or cos_sin_table alike).
template <class Arch>
ROPEKIT_ALWAYS_INLINE rope_geometry geometry_of(int pairs, int span, int offset,
                                                rope_layout layout) noexcept {
    const int s = layout == rope_layout::neox ? span : pairs;
    return {pairs, s, offset, layout == rope_layout::neox ? s + pairs : 2 * pairs, layout};
}

/// Where the angles come from. `Lookup(t, p0, n, scratch, c, s)` points c, s at the cosines
/// and sines of pairs [p0, p0 + n) of token t (a table row, or scratch it fills), or returns
/// false to skip the token;
/// `Prepare(p0, n, scratch)` runs once per pass. The targets' data point at the geometry's
/// first rotated channel (target_of adds the offset). `Scratch` is rope_scratch or a type
/// derived from it (mrope_scratch), passed to both callables.
template <class Arch, class T, class Prepare, class Lookup, class Scratch = rope_scratch>
void rope_run(const rope_geometry& geo, const rope_target<T>* targets, int n_targets,
              std::int64_t t0, std::int64_t t1, Prepare&& prepare, Lookup&& lookup) {
    Scratch scratch;
    const int pairs = geo.pairs;
    const rope_gap<Arch> gap = find_rope_gap<Arch>(pairs, geo.extent, targets, n_targets, t0, t1);
    for (int p0 = 0; p0 < pairs; p0 += rope_chunk_pairs) {
        const int n = std::min(rope_chunk_pairs, pairs - p0);
        prepare(p0, n, scratch);
        for (std::int64_t t = t0; t < t1; ++t) {
            const float* c = nullptr;
            const float* s = nullptr;
            if (lookup(t, p0, n, scratch, c, s))
                rotate_token<Arch, T>(geo.layout, pairs, geo.span, p0, n, c, s, targets, n_targets,
                                      t, scratch);
            if (gap.active()) gap.prefetch(t);
        }
    }
}

/// Table-free angle computation of one pass for `Arch`, with reuse while the position repeats
/// (constant deltas, repeated positions in speculative decoding).
template <class Arch>
struct table_free_angles {
    const float* inv_freq;
    const float* inv_from;  // null, or the frequencies being rotated away from (rebase)
    double last = std::numeric_limits<double>::quiet_NaN();

    void prepare(int p0, int n, rope_scratch& sc) {
        // Pad to a whole number of SIMD batches: the lanes past n are computed and never used.
        for (int i = 0; i < n; ++i) sc.inv[i] = inv_freq[p0 + i];
        for (int i = n; i < n + 16; ++i) sc.inv[i] = 0.0f;
        if (inv_from) {
            for (int i = 0; i < n; ++i) sc.inv_from[i] = inv_from[p0 + i];
            for (int i = n; i < n + 16; ++i) sc.inv_from[i] = 0.0f;
        }
        last = std::numeric_limits<double>::quiet_NaN();
    }

    void compute(double pos, int n, rope_scratch& sc) {
        if (pos == last) return;
        last = pos;
        const float* from = inv_from ? sc.inv_from : nullptr;
#if ROPEKIT_HAS_XSIMD
        if constexpr (is_simd_arch<Arch>) {
            table_free_angles_simd<Arch>(pos, sc.inv, from, n, sc.reduced, sc.quadrant, sc.cos,
                                         sc.sin);
            return;
        }
#endif
        table_free_angles_scalar<Arch>(pos, sc.inv, from, n, sc.cos, sc.sin);
    }
};

}  // namespace detail
ROPEKIT_END_NAMESPACE
