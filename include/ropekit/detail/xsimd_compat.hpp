// SPDX-License-Identifier: Apache-2.0
/// \file
/// The only place that knows which xsimd major version is installed (8.1 on Debian 12, up to
/// 14 elsewhere). Kernels call these shims instead of the renamed xsimd functions.
#pragma once

#include "../abi.hpp"

#if defined(ROPEKIT_NO_SIMD)
#define ROPEKIT_HAS_XSIMD 0
#elif defined(__has_include)
#if __has_include(<xsimd/xsimd.hpp>)
#include <xsimd/xsimd.hpp>
#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
#define ROPEKIT_HAS_XSIMD 0
#else
#define ROPEKIT_HAS_XSIMD 1
#endif
#else
#define ROPEKIT_HAS_XSIMD 0
#endif
#else
#include <xsimd/xsimd.hpp>
#define ROPEKIT_HAS_XSIMD 1
#endif

#if ROPEKIT_HAS_XSIMD
#include <type_traits>

ROPEKIT_BEGIN_NAMESPACE
namespace detail::simd {

/// Horizontal sum of a batch (xsimd 8: hadd; 9+: reduce_add).
template <class T, class A>
ROPEKIT_ALWAYS_INLINE T reduce_add(const xsimd::batch<T, A>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
    return xsimd::reduce_add(b);
#else
    return xsimd::hadd(b);
#endif
}

/// Horizontal maximum of a batch (xsimd 8 has no reduce_max: go through memory).
template <class T, class A>
ROPEKIT_ALWAYS_INLINE T reduce_max(const xsimd::batch<T, A>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
    return xsimd::reduce_max(b);
#else
    alignas(64) T lanes[xsimd::batch<T, A>::size];
    b.store_aligned(lanes);
    T m = lanes[0];
    for (std::size_t i = 1; i < xsimd::batch<T, A>::size; ++i) m = lanes[i] > m ? lanes[i] : m;
    return m;
#endif
}

/// a * b + c with one rounding. xsimd 8.1 has no AVX-512 kernel for fma: its generic fallback
/// is `a * b + c`, which GCC contracts (-ffp-contract=fast is its default) and clang does not,
/// so under clang every AVX-512 "fma" was a multiply and an add (attention prefill at 68 instead
/// of 82 GFLOP/s). The intrinsic where the target has it; xsimd::fma otherwise.
template <class T, class A>
ROPEKIT_ALWAYS_INLINE xsimd::batch<T, A> fma(const xsimd::batch<T, A>& a,
                                             const xsimd::batch<T, A>& b,
                                             const xsimd::batch<T, A>& c) noexcept {
#if defined(__AVX512F__) && (defined(__x86_64__) || defined(__i386__))
    if constexpr (std::is_base_of_v<xsimd::avx512f, A> && std::is_same_v<T, float>) {
        return xsimd::batch<T, A>(_mm512_fmadd_ps(a, b, c));
    } else if constexpr (std::is_base_of_v<xsimd::avx512f, A> && std::is_same_v<T, double>) {
        return xsimd::batch<T, A>(_mm512_fmadd_pd(a, b, c));
    } else
#endif
    {
        return xsimd::fma(a, b, c);
    }
}

/// a * b - c with one rounding (see fma).
template <class T, class A>
ROPEKIT_ALWAYS_INLINE xsimd::batch<T, A> fms(const xsimd::batch<T, A>& a,
                                             const xsimd::batch<T, A>& b,
                                             const xsimd::batch<T, A>& c) noexcept {
#if defined(__AVX512F__) && (defined(__x86_64__) || defined(__i386__))
    if constexpr (std::is_base_of_v<xsimd::avx512f, A> && std::is_same_v<T, float>) {
        return xsimd::batch<T, A>(_mm512_fmsub_ps(a, b, c));
    } else if constexpr (std::is_base_of_v<xsimd::avx512f, A> && std::is_same_v<T, double>) {
        return xsimd::batch<T, A>(_mm512_fmsub_pd(a, b, c));
    } else
#endif
    {
        return xsimd::fms(a, b, c);
    }
}

/// Reinterprets the bits of a batch as another element type of the same width.
template <class To, class From, class A>
ROPEKIT_ALWAYS_INLINE xsimd::batch<To, A> bit_cast(const xsimd::batch<From, A>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 11
    return xsimd::bitwise_cast<To>(b);
#else
    return xsimd::bitwise_cast<xsimd::batch<To, A>>(b);
#endif
}

}  // namespace detail::simd
ROPEKIT_END_NAMESPACE
#endif
