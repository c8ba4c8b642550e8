// SPDX-License-Identifier: Apache-2.0
/// \file
/// The fused rotate-and-store kernels behind ropekit::rope_store (rope.hpp): float source rows
/// are rotated out of place and every channel is written, converted, to a float, bfloat16, half
/// or block_q8_0 destination in one pass.
///
/// Bit-exactness contract: every rotated value is computed with exactly the operations of the
/// in-place float kernel (rope_kernels.hpp) for the same Arch, so rope_store equals apply_rope
/// on a float copy followed by the element conversion (from_float, or quantize_block_q8_0 per
/// block of 32). Only then is the rounding to the destination type applied.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../arch.hpp"
#include "../config.hpp"
#include "../layout.hpp"
#include "../storage.hpp"
#include "rope_kernels.hpp"
#include "simd_storage.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail {

/// Channels of a q8_0 row computed in float per step before quantisation: 8 blocks, so the
/// buffer stays in L1 and any head_dim (a multiple of 32) works without allocating.
inline constexpr int rope_store_segment = 256;

/// The source and destination rows of a rope_store call. Strides of a dimension the call never
/// steps (count 1) are 0 (see store_target_of), so no pointer arithmetic wraps.
template <class Dst>
struct store_target {
    const float* src;
    std::ptrdiff_t src_token_stride;
    std::ptrdiff_t src_head_stride;
    Dst* dst;
    std::ptrdiff_t dst_token_stride;  ///< in elements of Dst (blocks for block_q8_0)
    std::ptrdiff_t dst_head_stride;
    int heads;
    int head_dim;  ///< in values
};

/// rope_scratch plus the float segment of a q8_0 row (with one slack float on each side for a
/// GPT-J pair that straddles a segment boundary).
struct rope_store_scratch : rope_scratch {
    alignas(64) float row[rope_store_segment + 32];
};

// ---------------------------------------------------------------------------------------------
// Out-of-place rotation and conversion of channel runs. Each mirrors its in-place counterpart
// in rope_kernels.hpp operation for operation (same fma/fms, same operand order).

/// Converts n floats to Out (pass-through channels).
template <class Arch, class Out>
ROPEKIT_ALWAYS_INLINE void store_convert_run(const float* x, Out* y, int n) noexcept {
#if ROPEKIT_HAS_XSIMD
    if constexpr (is_simd_arch<Arch>) {
        using B = xsimd::batch<float, Arch>;
        constexpr int w = int(B::size);
        int i = 0;
        for (; i + w <= n; i += w) simd::store_from_float<Arch>(y + i, B::load_unaligned(x + i));
        if (i < n) {
            const std::size_t m = std::size_t(n - i);
            simd::store_from_float_partial<Arch>(y + i, simd::load_as_float_partial<Arch>(x + i, m),
                                                 m);
        }
        return;
    }
#endif
    for (int i = 0; i < n; ++i) y[i] = from_float<Out>(x[i]);
}

/// NeoX pairs (x0[i], x1[i]) rotated by (c[i], s[i]) into y0 (when First) and y1 (when Second),
/// as rotate_neox_simd / rotate_neox_scalar compute them. A q8_0 segment may hold only one half.
template <class Arch, class Out, bool First, bool Second>
ROPEKIT_ALWAYS_INLINE void store_neox_run(const float* x0, const float* x1, Out* y0, Out* y1,
                                          const float* c, const float* s, int n) noexcept {
#if ROPEKIT_HAS_XSIMD
    if constexpr (is_simd_arch<Arch>) {
        using B = xsimd::batch<float, Arch>;
        constexpr int w = int(B::size);
        int i = 0;
        for (; i + w <= n; i += w) {
            const B a = B::load_unaligned(x0 + i), b = B::load_unaligned(x1 + i);
            const B cc = B::load_unaligned(c + i), ss = B::load_unaligned(s + i);
            if constexpr (First) simd::store_from_float<Arch>(y0 + i, simd::fms(a, cc, b * ss));
            if constexpr (Second) simd::store_from_float<Arch>(y1 + i, simd::fma(b, cc, a * ss));
        }
        if (i < n) {
            const std::size_t m = std::size_t(n - i);
            const B a = simd::load_as_float_partial<Arch>(x0 + i, m);
            const B b = simd::load_as_float_partial<Arch>(x1 + i, m);
            const B cc = simd::load_as_float_partial<Arch>(c + i, m);
            const B ss = simd::load_as_float_partial<Arch>(s + i, m);
            if constexpr (First)
                simd::store_from_float_partial<Arch>(y0 + i, simd::fms(a, cc, b * ss), m);
            if constexpr (Second)
                simd::store_from_float_partial<Arch>(y1 + i, simd::fma(b, cc, a * ss), m);
        }
        return;
    }
#endif
    for (int i = 0; i < n; ++i) {
        const float a = x0[i], b = x1[i];
        if constexpr (First) y0[i] = from_float<Out>(a * c[i] - b * s[i]);
        if constexpr (Second) y1[i] = from_float<Out>(b * c[i] + a * s[i]);
    }
}

/// GPT-J on m interleaved channels (m even, starting at a pair): SIMD with the pair-duplicated
/// cd / sign-folded sd (rotate_gptj_simd), scalar with c / s (rotate_gptj_scalar).
template <class Arch, class Out>
ROPEKIT_ALWAYS_INLINE void store_gptj_run(const float* x, Out* y, const float* c, const float* s,
                                          const float* cd, const float* sd, int m) noexcept {
#if ROPEKIT_HAS_XSIMD
    if constexpr (is_simd_arch<Arch>) {
        (void)c, (void)s;
        using B = xsimd::batch<float, Arch>;
        constexpr int w = int(B::size);
        int i = 0;
        for (; i + w <= m; i += w) {
            const B v = B::load_unaligned(x + i);
            simd::store_from_float<Arch>(
                y + i, simd::fma(v, B::load_unaligned(cd + i),
                                 simd::swap_adjacent<Arch>(v) * B::load_unaligned(sd + i)));
        }
        if (i < m) {
            const std::size_t k = std::size_t(m - i);
            const B v = simd::load_as_float_partial<Arch>(x + i, k);
            const B r = simd::fma(
                v, simd::load_as_float_partial<Arch>(cd + i, k),
                simd::swap_adjacent<Arch>(v) * simd::load_as_float_partial<Arch>(sd + i, k));
            simd::store_from_float_partial<Arch>(y + i, r, k);
        }
        return;
    }
#endif
    (void)cd, (void)sd;
    for (int i = 0; i < m / 2; ++i) {
        const float a = x[2 * i], b = x[2 * i + 1];
        y[2 * i] = from_float<Out>(a * c[i] - b * s[i]);
        y[2 * i + 1] = from_float<Out>(b * c[i] + a * s[i]);
    }
}

/// Angles of one token for rope_store: c / s per pair, and for GPT-J on a SIMD Arch the
/// pair-duplicated cd / sign-folded sd.
struct store_angles {
    const float* c;
    const float* s;
    const float* cd;
    const float* sd;
};

/// Writes channels [j0, j1) of one head: `x` is the source row (channel 0), `y` the slot of
/// channel j0. Rotated channels come from their pair, the others are converted unchanged.
/// When [j0, j1) cuts a GPT-J pair (only q8_0 segments do), the whole pair is computed and the
/// partner lands in y[-1] or y[j1 - j0]: the caller provides that slack.
template <class Arch, class Out>
ROPEKIT_ALWAYS_INLINE void store_channels(const float* x, Out* y, int j0, int j1,
                                          const rope_geometry& geo, int head_dim,
                                          const store_angles& an) noexcept {
    const int off = geo.offset, p = geo.pairs;
    auto pass = [&](int a, int b) {
        a = std::max(a, j0);
        b = std::min(b, j1);
        if (a < b) store_convert_run<Arch, Out>(x + a, y + (a - j0), b - a);
    };
    if (geo.layout == rope_layout::neox) {
        const int sp = geo.span;
        pass(0, off);
        const int f0 = std::max(off, j0), f1 = std::min(off + p, j1);
        const int s0 = std::max(off + sp, j0), s1 = std::min(off + sp + p, j1);
        if (f0 == off && f1 == off + p && s0 == off + sp && s1 == off + sp + p) {
            // Both halves inside: one pass over the pairs, each source value loaded once.
            store_neox_run<Arch, Out, true, true>(x + off, x + off + sp, y + (off - j0),
                                                  y + (off + sp - j0), an.c, an.s, p);
        } else {
            if (f0 < f1)
                store_neox_run<Arch, Out, true, false>(x + f0, x + f0 + sp, y + (f0 - j0), nullptr,
                                                       an.c + (f0 - off), an.s + (f0 - off),
                                                       f1 - f0);
            if (s0 < s1)
                store_neox_run<Arch, Out, false, true>(x + s0 - sp, x + s0, nullptr, y + (s0 - j0),
                                                       an.c + (s0 - off - sp),
                                                       an.s + (s0 - off - sp), s1 - s0);
        }
        pass(off + p, off + sp);
        pass(off + sp + p, head_dim);
        return;
    }
    pass(0, off);
    int g0 = std::max(off, j0), g1 = std::min(off + 2 * p, j1);
    if (g0 < g1) {
        g0 -= (g0 - off) & 1;  // start and end on whole pairs (slack, see above)
        g1 += (g1 - off) & 1;
        const int k = g0 - off;
        store_gptj_run<Arch, Out>(x + g0, y + (g0 - j0), an.c + k / 2, an.s + k / 2,
                                  an.cd ? an.cd + k : nullptr, an.sd ? an.sd + k : nullptr,
                                  g1 - g0);
    }
    pass(off + 2 * p, head_dim);
}

// ---------------------------------------------------------------------------------------------
// q8_0 quantisation of 32 floats, bit-identical with quantize_block_q8_0.

/// The scale of a block from its largest |value| `amax` (finite): quantize_block_q8_0's rule
/// (detail::set_q8_0_scale), stored in `out`; returns id.
template <class Arch>
ROPEKIT_ALWAYS_INLINE float q8_0_inverse_scale(float amax, block_q8_0& out) noexcept {
    return set_q8_0_scale(amax, out);
}

/// The non-finite block: d = NaN, qs = 0 (quantize_block_q8_0's rule).
template <class Arch>
ROPEKIT_ALWAYS_INLINE void q8_0_poisoned(block_q8_0& out) noexcept {
    set_q8_0_poisoned(out);
}

#if ROPEKIT_HAS_XSIMD
/// roundf(y) (ties away from zero) as int32 lanes, for |y| < 2^23: t = trunc(y), plus sign(y)
/// when |y - t| >= 0.5. y - t is exact, so this is the correctly rounded roundf.
template <class Arch>
ROPEKIT_ALWAYS_INLINE xsimd::batch<std::int32_t, Arch> round_away_i32(
    const xsimd::batch<float, Arch>& y) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (simd::storage_impl::is_x86_width<Arch, 16>) {
        // Zero-masking forms throughout: GCC 12's unmasked ones start from _mm512_undefined_*()
        // and trip -Wmaybe-uninitialized at -O0 (GCC bug 105593).
        const __m512i t = _mm512_maskz_cvttps_epi32(0xffff, y);
        const __m512 f = _mm512_sub_ps(y, _mm512_maskz_cvtepi32_ps(0xffff, t));
        const __mmask16 up = _mm512_cmp_ps_mask(f, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
        const __mmask16 down = _mm512_cmp_ps_mask(f, _mm512_set1_ps(-0.5f), _CMP_LE_OQ);
        const __m512i one = _mm512_set1_epi32(1);
        const __m512i u = _mm512_mask_add_epi32(t, up, t, one);
        return _mm512_mask_sub_epi32(u, down, u, one);
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX2__)
        if constexpr (simd::storage_impl::is_x86_width<Arch, 8>) {
        const __m256i t = _mm256_cvttps_epi32(y);
        const __m256 f = _mm256_sub_ps(y, _mm256_cvtepi32_ps(t));
        // The compare masks are -1 in the true lanes: subtracting the "up" mask adds 1.
        const __m256i up = _mm256_castps_si256(_mm256_cmp_ps(f, _mm256_set1_ps(0.5f), _CMP_GE_OQ));
        const __m256i down =
            _mm256_castps_si256(_mm256_cmp_ps(f, _mm256_set1_ps(-0.5f), _CMP_LE_OQ));
        return _mm256_add_epi32(_mm256_sub_epi32(t, up), down);
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__SSE2__)
        if constexpr (simd::storage_impl::is_x86_width<Arch, 4>) {
        const __m128i t = _mm_cvttps_epi32(y);
        const __m128 f = _mm_sub_ps(y, _mm_cvtepi32_ps(t));
        const __m128i up = _mm_castps_si128(_mm_cmpge_ps(f, _mm_set1_ps(0.5f)));
        const __m128i down = _mm_castps_si128(_mm_cmple_ps(f, _mm_set1_ps(-0.5f)));
        return _mm_add_epi32(_mm_sub_epi32(t, up), down);
    } else
#endif
    {
        using F = xsimd::batch<float, Arch>;
        const F t = xsimd::trunc(y);
        const F f = y - t;
        const F r = t + xsimd::select(f >= F(0.5f), F(1.0f), F(0.0f)) -
                    xsimd::select(f <= F(-0.5f), F(1.0f), F(0.0f));
        return xsimd::batch_cast<std::int32_t>(r);
    }
}

/// max(m, the |v| bit patterns) per lane (as int32: non-negative, ordered like the floats).
template <class Arch>
ROPEKIT_ALWAYS_INLINE xsimd::batch<std::int32_t, Arch> abs_bits_max(
    const xsimd::batch<std::int32_t, Arch>& m, const xsimd::batch<float, Arch>& v) noexcept {
    using I = xsimd::batch<std::int32_t, Arch>;
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (simd::storage_impl::is_x86_width<Arch, 16>) {
        // (xsimd 8.1's AVX-512 max is the unmasked intrinsic: see round_away_i32.)
        return _mm512_maskz_max_epi32(
            0xffff, m, _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
    } else
#endif
    {
        return xsimd::max(m, simd::bit_cast<std::int32_t>(v) & I(0x7fffffff));
    }
}

/// Largest lane of non-negative int32 lanes (the |x| bit patterns: their integer order is the
/// float order, and every non-finite pattern is >= 0x7f800000).
template <class Arch>
ROPEKIT_ALWAYS_INLINE std::int32_t max_lane_i32(
    const xsimd::batch<std::int32_t, Arch>& v) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (simd::storage_impl::is_x86_width<Arch, 16>) {
        // (Masked extracts, even for the low half: GCC 12's cast is an unmasked extract.)
        const __m256i m = _mm256_max_epi32(_mm512_maskz_extracti64x4_epi64(0xff, v, 0),
                                           _mm512_maskz_extracti64x4_epi64(0xff, v, 1));
        __m128i r = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
        r = _mm_max_epi32(r, _mm_shuffle_epi32(r, 0x4e));
        r = _mm_max_epi32(r, _mm_shuffle_epi32(r, 0xb1));
        return _mm_cvtsi128_si32(r);
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX2__)
        if constexpr (simd::storage_impl::is_x86_width<Arch, 8>) {
        __m128i r = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        r = _mm_max_epi32(r, _mm_shuffle_epi32(r, 0x4e));
        r = _mm_max_epi32(r, _mm_shuffle_epi32(r, 0xb1));
        return _mm_cvtsi128_si32(r);
    } else
#endif
    {
        return simd::reduce_max(v);
    }
}

/// Narrows 32 int32 values in [-127, 127] (32 / lanes batches) to the 32 bytes at `q`.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void store_q8_lanes(std::int8_t* q,
                                          const xsimd::batch<std::int32_t, Arch>* v) noexcept {
    constexpr int w = int(xsimd::batch<std::int32_t, Arch>::size);
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (simd::storage_impl::is_x86_width<Arch, 16>) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_maskz_cvtsepi32_epi8(0xffff, v[0]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16),
                         _mm512_maskz_cvtsepi32_epi8(0xffff, v[1]));
        return;
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX2__)
        if constexpr (simd::storage_impl::is_x86_width<Arch, 8>) {
        // The packs work per 128-bit lane: bytes come out in dword order 0 4 1 5 2 6 3 7.
        const __m256i p01 = _mm256_packs_epi32(v[0], v[1]);
        const __m256i p23 = _mm256_packs_epi32(v[2], v[3]);
        const __m256i p = _mm256_packs_epi16(p01, p23);
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(q),
            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        return;
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__SSE2__)
        if constexpr (simd::storage_impl::is_x86_width<Arch, 4>) {
        for (int h = 0; h < 2; ++h) {
            const __m128i lo = _mm_packs_epi32(v[4 * h], v[4 * h + 1]);
            const __m128i hi = _mm_packs_epi32(v[4 * h + 2], v[4 * h + 3]);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * h), _mm_packs_epi16(lo, hi));
        }
        return;
    } else
#endif
    {
        alignas(64) std::int32_t lanes[w];
        for (int k = 0; k < q8_0_block_values / w; ++k) {
            v[k].store_aligned(lanes);
            for (int j = 0; j < w; ++j) q[w * k + j] = std::int8_t(lanes[j]);
        }
    }
}
#endif

/// quantize_block_q8_0 of the 32 floats at `x` (any alignment), with SIMD on a vector Arch.
template <class Arch>
ROPEKIT_ALWAYS_INLINE void quantize_block_q8_0_arch(const float* x, block_q8_0& out) noexcept {
#if ROPEKIT_HAS_XSIMD
    if constexpr (is_simd_arch<Arch>) {
        using F = xsimd::batch<float, Arch>;
        using I = xsimd::batch<std::int32_t, Arch>;
        constexpr int w = int(F::size), k = q8_0_block_values / w;
        static_assert(q8_0_block_values % w == 0, "a block is a whole number of batches");
        F v[k];
        I m(0);
        static_for<k>([&](auto i) {
            v[i] = F::load_unaligned(x + w * i);
            m = abs_bits_max<Arch>(m, v[i]);
        });
        const std::int32_t amax_bits = max_lane_i32<Arch>(m);
        if (amax_bits >= 0x7f800000) {  // an infinity or a NaN
            q8_0_poisoned<Arch>(out);
            return;
        }
        const F id(q8_0_inverse_scale<Arch>(bits_float(std::uint32_t(amax_bits)), out));
        I q[k];
        static_for<k>([&](auto i) { q[i] = round_away_i32<Arch>(v[i] * id); });
        store_q8_lanes<Arch>(out.qs, q);
        return;
    }
#endif
    out = quantize_block_q8_0(x);
}

// ---------------------------------------------------------------------------------------------
// One call: every token of [t0, t1), every head.

/// Writes one head row: rotated and pass-through channels, converted (Dst = float, bfloat16,
/// half) straight into the destination, or computed in float per segment and quantised
/// (block_q8_0).
template <class Arch, class Dst>
ROPEKIT_ALWAYS_INLINE void store_head(const float* x, Dst* y, const rope_geometry& geo,
                                      int head_dim, const store_angles& an,
                                      rope_store_scratch& scratch) noexcept {
    if constexpr (std::is_same_v<Dst, block_q8_0>) {
        float* seg = scratch.row + 16;  // 64-byte aligned, with slack before and after
        for (int j0 = 0; j0 < head_dim; j0 += rope_store_segment) {
            const int j1 = std::min(head_dim, j0 + rope_store_segment);
            store_channels<Arch, float>(x, seg, j0, j1, geo, head_dim, an);
            for (int b = 0; b < (j1 - j0) / q8_0_block_values; ++b)
                quantize_block_q8_0_arch<Arch>(seg + q8_0_block_values * b,
                                               y[j0 / q8_0_block_values + b]);
        }
    } else {
        (void)scratch;
        store_channels<Arch, Dst>(x, y, 0, head_dim, geo, head_dim, an);
    }
}

/// The rope_store loop. `Prepare` / `Lookup` are an angle source (with_table_source /
/// with_table_free_source in rope.hpp, shared with apply_rope); the call has a single pass
/// (geo.pairs <= rope_chunk_pairs, checked by the caller), so the angles of a token are
/// fetched once and used for all its heads. A token the lookup skips is not written.
template <class Arch, class Dst, class Prepare, class Lookup>
void rope_store_run(const rope_geometry& geo, const store_target<Dst>& st, std::int64_t t0,
                    std::int64_t t1, Prepare&& prepare, Lookup&& lookup) {
    rope_store_scratch scratch;
    prepare(0, geo.pairs, scratch);
    for (std::int64_t t = t0; t < t1; ++t) {
        store_angles an{nullptr, nullptr, nullptr, nullptr};
        if (!lookup(t, 0, geo.pairs, scratch, an.c, an.s)) continue;
        if constexpr (is_simd_arch<Arch>) {
            if (geo.layout == rope_layout::gptj) {
                build_gptj_angles<Arch>(an.c, an.s, geo.pairs, scratch.cos_dup, scratch.sin_dup);
                an.cd = scratch.cos_dup;
                an.sd = scratch.sin_dup;
            }
        }
        const float* x = st.src + t * st.src_token_stride;
        Dst* y = st.dst + t * st.dst_token_stride;
        for (int h = 0; h < st.heads; ++h, x += st.src_head_stride, y += st.dst_head_stride)
            store_head<Arch, Dst>(x, y, geo, st.head_dim, an, scratch);
    }
}

}  // namespace detail
ROPEKIT_END_NAMESPACE
