// SPDX-License-Identifier: Apache-2.0
/// \file
/// SIMD loads and stores between float, bfloat16 or half storage and float batches, bit-exact
/// with ropekit::bfloat16 / ropekit::half (round to nearest even on store).
///
/// Every function is a template on the xsimd architecture, so translation units built with
/// different `-m` flags never share (and never link-merge) an instantiation. The fast paths
/// are chosen by the batch width *and* the compile flags of the including translation unit:
///
/// | storage  | 4 lanes (SSE)              | 8 lanes (AVX)                  | 16 lanes (AVX-512) |
/// |----------|----------------------------|--------------------------------|------------------------------|
/// | bfloat16 | SSE2 unpack / pack         | AVX2 `vpmovzxwd` / `vpackusdw` | `vpmovzxwd` /
/// `vpmovdw`      | | half     | F16C `vcvtph2ps/vcvtps2ph` | F16C                           |
/// AVX-512F `vcvtph2ps/vcvtps2ph` |
///
/// Without those flags the conversion is done with xsimd integer batches (same bits), and the
/// widening/narrowing of 16-bit lanes with a small stack buffer.
///
/// One documented difference: F16C widens a *signaling* NaN half to the quiet NaN with the same
/// payload, where ropekit::half keeps it signaling. Every other half bit pattern, and every
/// bfloat16 and float pattern, converts bit-identically in both directions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../config.hpp"
#include "../storage.hpp"
#include "xsimd_compat.hpp"

#if ROPEKIT_HAS_XSIMD && (defined(__x86_64__) || defined(__i386__) || defined(_M_X64))
#include <immintrin.h>
#define ROPEKIT_SIMD_X86 1
#else
#define ROPEKIT_SIMD_X86 0
#endif

#if ROPEKIT_HAS_XSIMD
ROPEKIT_BEGIN_NAMESPACE
namespace detail::simd {

/// Float lanes of `Arch`.
template <class Arch>
inline constexpr std::size_t float_lanes = xsimd::batch<float, Arch>::size;

namespace storage_impl {

template <class Arch>
using fbatch = xsimd::batch<float, Arch>;
template <class Arch>
using ibatch = xsimd::batch<std::int32_t, Arch>;

// True when the batch is the native register of that width (an Arch tag whose register is an
// __m128 / __m256 / __m512), so the intrinsics below may be applied to it.
template <class Arch, std::size_t Lanes>
inline constexpr bool is_x86_width = ROPEKIT_SIMD_X86&& float_lanes<Arch> == Lanes &&
                                     (std::is_base_of_v<xsimd::sse2, Arch> ||
                                      std::is_base_of_v<xsimd::avx, Arch> ||
                                      std::is_base_of_v<xsimd::avx512f, Arch>);

// ---------------------------------------------------------------------------------------------
// 16-bit lanes <-> 32-bit lanes (zero extension; narrowing of values known to be < 2^16).

template <class Arch>
ROPEKIT_ALWAYS_INLINE ibatch<Arch> widen_u16(const std::uint16_t* p) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (is_x86_width<Arch, 16>) {
        return _mm512_maskz_cvtepu16_epi32(0xffff,
                                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX2__)
        if constexpr (is_x86_width<Arch, 8>) {
        return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__SSE2__)
        if constexpr (is_x86_width<Arch, 4>) {
        return _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)),
                                  _mm_setzero_si128());
    } else
#endif
    {
        alignas(64) std::int32_t lanes[float_lanes<Arch>];
        for (std::size_t i = 0; i < float_lanes<Arch>; ++i) lanes[i] = p[i];
        return ibatch<Arch>::load_aligned(lanes);
    }
}

template <class Arch>
ROPEKIT_ALWAYS_INLINE void narrow_u16(std::uint16_t* p, const ibatch<Arch>& v) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (is_x86_width<Arch, 16>) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_maskz_cvtepi32_epi16(0xffff, v));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX2__)
        if constexpr (is_x86_width<Arch, 8>) {
        // packus works within 128-bit lanes: gather the two packed quarters into the low half.
        const __m256i packed = _mm256_packus_epi32(v, v);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                         _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08)));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__SSE2__)
        if constexpr (is_x86_width<Arch, 4>) {
        // SSE2 has only the signed-saturating pack: sign-extend the low 16 bits first, so the
        // saturation never triggers and the bit pattern survives.
        const __m128i s = _mm_srai_epi32(_mm_slli_epi32(v, 16), 16);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi32(s, s));
    } else
#endif
    {
        alignas(64) std::int32_t lanes[float_lanes<Arch>];
        v.store_aligned(lanes);
        for (std::size_t i = 0; i < float_lanes<Arch>; ++i) p[i] = std::uint16_t(lanes[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// Bit-level conversions on 32-bit lanes, the same arithmetic as ropekit::bfloat16 / ropekit::half.

template <class Arch>
ROPEKIT_ALWAYS_INLINE ibatch<Arch> bf16_bits_from_float(const fbatch<Arch>& f) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (is_x86_width<Arch, 16>) {
        // Same arithmetic with the zero-masking shifts: GCC 12's unmasked AVX-512 shifts start
        // from _mm512_undefined_epi32() and trip -Wmaybe-uninitialized (GCC bug 105593).
        const __m512i u = _mm512_castps_si512(f);
        const __m512i hi = _mm512_maskz_srli_epi32(0xffff, u, 16);
        const __m512i bias =
            _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(hi, _mm512_set1_epi32(1)));
        const __m512i rounded = _mm512_maskz_srli_epi32(0xffff, _mm512_add_epi32(u, bias), 16);
        const __mmask16 nan = _mm512_cmpgt_epi32_mask(
            _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
        return _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    } else
#endif
    {
        // An else branch, so AVX-512 never instantiates it: xsimd 8.1's AVX-512 integer select
        // does not compile with GCC 12 at -O0 (its blend intrinsics are then macros whose casts
        // reject xsimd batches), which broke every debug build that stores bf16.
        using I = ibatch<Arch>;
        const I u = bit_cast<std::int32_t>(f);
        const I hi = (u >> 16) & I(0xffff);  // logical shift from an arithmetic one
        const I a = u & I(0x7fffffff);
        const I nan = hi | I(0x0040);
        // u + 0x7fff + lsb wraps only for negative NaNs, which take the other branch; do it on
        // the unsigned view so even the discarded lanes have no signed overflow.
        const auto uu = bit_cast<std::uint32_t>(u);
        const auto rounded = bit_cast<std::int32_t>(
            uu + xsimd::batch<std::uint32_t, Arch>(0x7fffu) + bit_cast<std::uint32_t>(hi & I(1)));
        return xsimd::select(a > I(0x7f800000), nan, (rounded >> 16) & I(0xffff));
    }
}

template <class Arch>
ROPEKIT_ALWAYS_INLINE ibatch<Arch> half_bits_from_float(const fbatch<Arch>& f) noexcept {
    using I = ibatch<Arch>;
    const I u = bit_cast<std::int32_t>(f);
    const I sign = (u >> 16) & I(0x8000);
    const I a = u & I(0x7fffffff);
    const I big = xsimd::select(a > I(0x7f800000), I(0x7e00), I(0x7c00));
    // Subnormal: adding 0.5 lines the binary16 subnormal grid up with float's last mantissa
    // bit, so the FPU's own rounding is the round-to-nearest-even.
    const I sub = bit_cast<std::int32_t>(bit_cast<float>(a) + fbatch<Arch>(0.5f)) - I(0x3f000000);
    // Normal: rebias 127 -> 15 and round the 13 dropped bits to nearest even;
    // a - 0x37fff001 == a + ((15 - 127) << 23) + 0xfff (mod 2^32), without signed overflow.
    const I normal = ((a - I(0x37fff001) + ((a >> 13) & I(1))) >> 13);
    const I mag =
        xsimd::select(a >= I(0x47800000), big, xsimd::select(a < I(0x38800000), sub, normal));
    return sign | (mag & I(0x7fff));
}

template <class Arch>
ROPEKIT_ALWAYS_INLINE fbatch<Arch> float_from_half_bits(const ibatch<Arch>& h) noexcept {
    using I = ibatch<Arch>;
    const I sign = (h & I(0x8000)) << 16;
    const I em = h & I(0x7fff);
    // Subnormals through an exact int -> float conversion (immune to DAZ), normals by rebias.
    const I sub = bit_cast<std::int32_t>(xsimd::batch_cast<float>(em) *
                                         fbatch<Arch>(5.9604644775390625e-08f));
    const I normal = (em << 13) + I(112 << 23);
    const I infnan = (em << 13) | I(0x7f800000);
    const I mag =
        xsimd::select(em >= I(0x7c00), infnan, xsimd::select(em < I(0x0400), sub, normal));
    return bit_cast<float>(sign | mag);
}

// ---------------------------------------------------------------------------------------------
// Full-width load / store.

template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE fbatch<Arch> load(const T* p) noexcept {
    if constexpr (std::is_same_v<T, float>) {
        return fbatch<Arch>::load_unaligned(p);
    } else if constexpr (std::is_same_v<T, bfloat16>) {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
        if constexpr (is_x86_width<Arch, 16>)
            return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(
                0xffff, widen_u16<Arch>(reinterpret_cast<const std::uint16_t*>(p)), 16));
#endif
        return bit_cast<float>(widen_u16<Arch>(reinterpret_cast<const std::uint16_t*>(p)) << 16);
    } else {
        static_assert(std::is_same_v<T, half>, "ropekit storage is float, bfloat16 or half");
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
        if constexpr (is_x86_width<Arch, 16>) {
            return _mm512_maskz_cvtph_ps(0xffff,
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__F16C__)
            if constexpr (is_x86_width<Arch, 8>) {
            return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        } else if constexpr (is_x86_width<Arch, 4>) {
            return _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        } else
#endif
        {
            return float_from_half_bits<Arch>(
                widen_u16<Arch>(reinterpret_cast<const std::uint16_t*>(p)));
        }
    }
}

/// x > bound ? if_greater : otherwise, per 32-bit lane. On AVX-512 through the intrinsics:
/// xsimd 8.1's AVX-512 integer select does not compile with GCC 12 at -O0 (its blend intrinsics
/// are then macros whose casts reject xsimd batches), which broke debug builds.
template <class Arch>
ROPEKIT_ALWAYS_INLINE ibatch<Arch> select_greater(const ibatch<Arch>& x, std::int32_t bound,
                                                  const ibatch<Arch>& if_greater,
                                                  const ibatch<Arch>& otherwise) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (is_x86_width<Arch, 16>) {
        return _mm512_mask_blend_epi32(_mm512_cmpgt_epi32_mask(x, _mm512_set1_epi32(bound)),
                                       otherwise, if_greater);
    } else
#endif
    {
        return xsimd::select(x > ibatch<Arch>(bound), if_greater, otherwise);
    }
}

template <class Arch>
ROPEKIT_ALWAYS_INLINE fbatch<Arch> quiet_nans_for_f16c(const fbatch<Arch>& v) noexcept {
    // vcvtps2ph keeps the top 9 NaN payload bits, ropekit::half returns the canonical quiet NaN
    // (sign kept): replace NaN lanes by the float canonical NaN of the same sign first.
    // (Integer test: xsimd's float != is an ordered compare on some archs, false for NaN.)
    using I = ibatch<Arch>;
    const I u = bit_cast<std::int32_t>(v);
    const I canonical = (u & I(std::int32_t(0x80000000u))) | I(0x7fc00000);
    return bit_cast<float>(select_greater<Arch>(u & I(0x7fffffff), 0x7f800000, canonical, u));
}

template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void store(T* p, const fbatch<Arch>& v) noexcept {
    if constexpr (std::is_same_v<T, float>) {
        v.store_unaligned(p);
    } else if constexpr (std::is_same_v<T, bfloat16>) {
        narrow_u16<Arch>(reinterpret_cast<std::uint16_t*>(p), bf16_bits_from_float<Arch>(v));
    } else {
        static_assert(std::is_same_v<T, half>, "ropekit storage is float, bfloat16 or half");
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
        if constexpr (is_x86_width<Arch, 16>) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                                _mm512_maskz_cvtps_ph(0xffff, quiet_nans_for_f16c<Arch>(v),
                                                      _MM_FROUND_TO_NEAREST_INT));
        } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__F16C__)
            if constexpr (is_x86_width<Arch, 8>) {
            _mm_storeu_si128(
                reinterpret_cast<__m128i*>(p),
                _mm256_cvtps_ph(quiet_nans_for_f16c<Arch>(v), _MM_FROUND_TO_NEAREST_INT));
        } else if constexpr (is_x86_width<Arch, 4>) {
            _mm_storel_epi64(reinterpret_cast<__m128i*>(p),
                             _mm_cvtps_ph(quiet_nans_for_f16c<Arch>(v), _MM_FROUND_TO_NEAREST_INT));
        } else
#endif
        {
            narrow_u16<Arch>(reinterpret_cast<std::uint16_t*>(p), half_bits_from_float<Arch>(v));
        }
    }
}

/// Sign-extends `float_lanes<Arch>` int8 values at `p` to 32-bit lanes.
template <class Arch>
ROPEKIT_ALWAYS_INLINE ibatch<Arch> widen_i8(const std::int8_t* p) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (is_x86_width<Arch, 16>) {
        return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX2__)
        if constexpr (is_x86_width<Arch, 8>) {
        return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    } else
#endif
#if ROPEKIT_SIMD_X86 && defined(__SSE2__)
        if constexpr (is_x86_width<Arch, 4>) {
        // SSE2 has no sign-extending move: put each byte in the top of its lane, shift back.
        std::int32_t four;
        std::memcpy(&four, p, 4);
        const __m128i x = _mm_cvtsi32_si128(four);
        const __m128i w = _mm_unpacklo_epi16(_mm_setzero_si128(), _mm_unpacklo_epi8(x, x));
        return _mm_srai_epi32(w, 24);
    } else
#endif
    {
        alignas(64) std::int32_t lanes[float_lanes<Arch>];
        for (std::size_t i = 0; i < float_lanes<Arch>; ++i) lanes[i] = p[i];
        return ibatch<Arch>::load_aligned(lanes);
    }
}

/// The scale of a block_q8_0 as float: F16C's one-instruction widening where the flags allow
/// (the same value as half::to_float for every finite or infinite scale; a signaling-NaN scale
/// comes out quiet, which multiplies to the same NaN lanes).
template <class Arch>
ROPEKIT_ALWAYS_INLINE float q8_0_scale(const block_q8_0* b) noexcept {
#if ROPEKIT_SIMD_X86 && defined(__F16C__)
    return _cvtsh_ss(b->d.bits);
#else
    return half::to_float(b->d.bits);
#endif
}

}  // namespace storage_impl

/// Values [j, j + float_lanes<Arch>) of block `*b` as float (`float(d) * qs[j + i]`, exact:
/// an 8-bit integer times a half scale fits in float's 24-bit mantissa). 32 is a multiple of
/// every lane count, so the values never straddle two blocks.
template <class Arch>
ROPEKIT_ALWAYS_INLINE xsimd::batch<float, Arch> load_q8_0(const block_q8_0* b, int j) noexcept {
    using F = xsimd::batch<float, Arch>;
    const F ints = xsimd::batch_cast<float>(storage_impl::widen_i8<Arch>(b->qs + j));
    return ints * F(storage_impl::q8_0_scale<Arch>(b));
}

/// Values [j, j + float_lanes<Arch>) of block `*b` as unscaled float integers (qs[j + i]).
template <class Arch>
ROPEKIT_ALWAYS_INLINE xsimd::batch<float, Arch> load_q8_0_ints(const block_q8_0* b,
                                                               int j) noexcept {
    return xsimd::batch_cast<float>(storage_impl::widen_i8<Arch>(b->qs + j));
}

/// The scale of block `*b` in every lane.
template <class Arch>
ROPEKIT_ALWAYS_INLINE xsimd::batch<float, Arch> q8_0_scale(const block_q8_0* b) noexcept {
    return xsimd::batch<float, Arch>(storage_impl::q8_0_scale<Arch>(b));
}

/// Loads `float_lanes<Arch>` consecutive values of storage type `T` from `p` (any alignment)
/// and widens them to float (exact).
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE xsimd::batch<float, Arch> load_as_float(const T* p) noexcept {
    static_assert(is_storage_type_v<T>, "ropekit storage is float, bfloat16 or half");
    return storage_impl::load<Arch, T>(p);
}

/// Loads `n < float_lanes<Arch>` values from `p` into the low lanes, zeros in the others.
/// Never reads at or past `p + n`.
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE xsimd::batch<float, Arch> load_as_float_partial(const T* p,
                                                                      std::size_t n) noexcept {
    static_assert(is_storage_type_v<T>, "ropekit storage is float, bfloat16 or half");
    constexpr std::size_t lanes = float_lanes<Arch>;
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (storage_impl::is_x86_width<Arch, 16>) {
        const __mmask16 m = __mmask16((1u << n) - 1u);
        if constexpr (std::is_same_v<T, float>) {
            return _mm512_maskz_loadu_ps(m, p);
        }
#if defined(__AVX512BW__) && defined(__AVX512VL__)
        else {
            const __m256i raw = _mm256_maskz_loadu_epi16(m, p);
            if constexpr (std::is_same_v<T, bfloat16>)
                return _mm512_castsi512_ps(
                    _mm512_maskz_slli_epi32(0xffff, _mm512_maskz_cvtepu16_epi32(0xffff, raw), 16));
            else
                return _mm512_maskz_cvtph_ps(0xffff, raw);
        }
#endif
    }
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX__)
    if constexpr (std::is_same_v<T, float> && storage_impl::is_x86_width<Arch, 8>) {
        // vmaskmovps suppresses faults on the masked-off lanes.
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), idx);
        return _mm256_maskload_ps(p, mask);
    }
#endif
    alignas(64) T buf[lanes] = {};
    if (n > 0) std::memcpy(buf, p, n * sizeof(T));  // (p may be null when n == 0)
    return storage_impl::load<Arch, T>(buf);
}

/// Rounds the lanes of `v` to the storage type (nearest even, exactly like ropekit::bfloat16 /
/// ropekit::half) and stores all `float_lanes<Arch>` of them to `p` (any alignment).
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void store_from_float(T* p, const xsimd::batch<float, Arch>& v) noexcept {
    static_assert(is_storage_type_v<T>, "ropekit storage is float, bfloat16 or half");
    storage_impl::store<Arch, T>(p, v);
}

/// Like store_from_float for the low `n < float_lanes<Arch>` lanes only; never writes at or
/// past `p + n`.
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void store_from_float_partial(T* p, const xsimd::batch<float, Arch>& v,
                                                    std::size_t n) noexcept {
    static_assert(is_storage_type_v<T>, "ropekit storage is float, bfloat16 or half");
    constexpr std::size_t lanes = float_lanes<Arch>;
#if ROPEKIT_SIMD_X86 && defined(__AVX512F__)
    if constexpr (storage_impl::is_x86_width<Arch, 16>) {
        const __mmask16 m = __mmask16((1u << n) - 1u);
        if constexpr (std::is_same_v<T, float>) {
            _mm512_mask_storeu_ps(p, m, v);
            return;
        }
#if defined(__AVX512BW__) && defined(__AVX512VL__)
        else if constexpr (std::is_same_v<T, bfloat16>) {
            _mm256_mask_storeu_epi16(
                p, m,
                _mm512_maskz_cvtepi32_epi16(0xffff, storage_impl::bf16_bits_from_float<Arch>(v)));
            return;
        } else {
            _mm256_mask_storeu_epi16(
                p, m,
                _mm512_maskz_cvtps_ph(0xffff, storage_impl::quiet_nans_for_f16c<Arch>(v),
                                      _MM_FROUND_TO_NEAREST_INT));
            return;
        }
#endif
    }
#endif
#if ROPEKIT_SIMD_X86 && defined(__AVX__)
    if constexpr (std::is_same_v<T, float> && storage_impl::is_x86_width<Arch, 8>) {
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), idx);
        _mm256_maskstore_ps(p, mask, v);
        return;
    }
#endif
    alignas(64) T buf[lanes];
    storage_impl::store<Arch, T>(buf, v);
    if (n > 0) std::memcpy(p, buf, n * sizeof(T));
}

}  // namespace detail::simd
ROPEKIT_END_NAMESPACE
#endif
