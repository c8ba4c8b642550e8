// SPDX-License-Identifier: Apache-2.0
/// \file
/// One traits row per K/V storage type: everything the attention drivers and micro-kernels need
/// to read a stored K or V row, so that they never name a storage type (ggml keeps the same kind
/// of row per type: `to_float`, `from_float`, `vec_dot`). Adding a storage type is its struct
/// (storage.hpp) plus one specialisation of kv_traits here plus its tests.
///
/// What a row of traits says (every member is used by the kernels):
/// - `name`: the short name the benchmarks and errors use ("f32", "bf16", "f16", "q8_0").
/// - `block_values`: values per stored element (32 for q8_0's blocks, else 1);
///   `row_bytes(values)` the bytes of a row (what decode's prefetch distance and the benchmarks'
///   byte counts use).
/// - `float_rows`: the stored rows are float rows the tiles may read in place (no widening copy).
/// - `scaled`: elements carry one scale per block of `block_values` values; the micro-kernels
///   then widen the block's scale once and multiply the unscaled values by it
///   (`block_at` / `scale` / `load_unscaled` / `prefetch_block`) instead of calling `load` per
///   vector: a half -> float conversion and a broadcast per vector cost more than the FMAs
///   the vector feeds.
/// - `load<Ops>(row, d)`: `Ops::width` values from value d, widened to float (d a multiple of
///   the width); `prefetch(row, d, offset)` the hint for them.
/// - `even_odd_pairs<Ops>`: decode may read 2 x width values at once as their even and odd
///   values (`load_pairs`), with q and O kept in that order (bf16 on 16-wide vectors: one shift
///   and one mask per vector instead of a widening shuffle).
/// - `widen<Arch>(src, dst, n)`: n values of a row to float, with the widest vectors of Arch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../arch.hpp"
#include "../config.hpp"
#include "../storage.hpp"
#if ROPEKIT_HAS_XSIMD
#include "simd_storage.hpp"
#endif

ROPEKIT_BEGIN_NAMESPACE
namespace detail::attn {

/// Hints that the element `offset` elements after `p` will be read soon, into L2 (Zen 4 and
/// Intel put T1 prefetches there): far enough ahead to cover DRAM latency without evicting the
/// L1 lines in use. Computed on integers: the address may lie past the array, which is harmless
/// for a prefetch.
template <class T>
ROPEKIT_ALWAYS_INLINE void prefetch_l2(const T* p, std::ptrdiff_t offset) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    const std::uintptr_t a =
        reinterpret_cast<std::uintptr_t>(p) + std::uintptr_t(offset * std::ptrdiff_t(sizeof(T)));
    __builtin_prefetch(reinterpret_cast<const void*>(a), 0, 2);
#else
    (void)p, (void)offset;
#endif
}

/// The traits of K/V storage type KV (specialised below for every is_kv_storage_type_v type).
template <class KV>
struct kv_traits;

/// Storage with one value per element (float, bfloat16, half), widened by Ops::load_stored.
template <class T>
struct elementwise_kv_traits {
    using element = T;
    static constexpr int block_values = 1;
    static constexpr bool scaled = false;
    static constexpr bool float_rows = std::is_same_v<T, float>;
    template <class Ops>
    static constexpr bool even_odd_pairs = false;

    static constexpr int row_bytes(int values) noexcept { return values * int(sizeof(T)); }

    template <class Ops>
    static ROPEKIT_ALWAYS_INLINE typename Ops::vec load(const T* row, int d) noexcept {
        return Ops::load_stored(row + d);
    }
    static ROPEKIT_ALWAYS_INLINE void prefetch(const T* row, int d,
                                               std::ptrdiff_t offset) noexcept {
        prefetch_l2(row + d, offset);
    }

    template <class Arch>
    static ROPEKIT_ALWAYS_INLINE void widen(const T* ROPEKIT_RESTRICT src,
                                            float* ROPEKIT_RESTRICT dst, int n) noexcept {
#if ROPEKIT_HAS_XSIMD
        if constexpr (!std::is_same_v<Arch, scalar_arch>) {
            constexpr int W = int(xsimd::batch<float, Arch>::size);
            int d = 0;
            for (; d + W <= n; d += W)
                simd::load_as_float<Arch, T>(src + d).store_unaligned(dst + d);
            if (d < n)
                simd::load_as_float_partial<Arch, T>(src + d, std::size_t(n - d))
                    .store_unaligned(dst + d);
            return;
        }
#endif
        for (int d = 0; d < n; ++d) dst[d] = to_float(src[d]);
    }
};

/// float K/V: read in place by the prefill tiles (when not packed) and by the rules' raw rows.
template <>
struct kv_traits<float> : elementwise_kv_traits<float> {
    static constexpr const char* name = "f32";
};

/// IEEE half K/V (F16C's vcvtph2ps where the target has it).
template <>
struct kv_traits<half> : elementwise_kv_traits<half> {
    static constexpr const char* name = "f16";
};

/// bfloat16 K/V. On 16-wide vectors decode reads 32 values as their even and odd values
/// (vec_ops::load_bf16_pairs: a shift and a mask per vector instead of a widening shuffle);
/// measured 8-10% less time per (key, K/V head) from L2 at head_dim 128, GQA 4.
template <>
struct kv_traits<bfloat16> : elementwise_kv_traits<bfloat16> {
    static constexpr const char* name = "bf16";
    template <class Ops>
    static constexpr bool even_odd_pairs = Ops::width == 16;

    /// Values [d, d + 2 W) as their even (`even`) and odd (`odd`) values.
    template <class Ops>
    static ROPEKIT_ALWAYS_INLINE void load_pairs(const bfloat16* row, int d,
                                                 typename Ops::vec& even,
                                                 typename Ops::vec& odd) noexcept {
        Ops::load_bf16_pairs(row + d, even, odd);
    }
};

/// ggml's q8_0: blocks of 32 int8 values with one half scale (storage.hpp). Rows hold whole
/// blocks (head_dim a multiple of 32, checked by the views).
template <>
struct kv_traits<block_q8_0> {
    using element = block_q8_0;
    static constexpr const char* name = "q8_0";
    static constexpr int block_values = q8_0_block_values;
    static constexpr bool scaled = true;
    static constexpr bool float_rows = false;
    template <class Ops>
    static constexpr bool even_odd_pairs = false;

    static constexpr int row_bytes(int values) noexcept {
        return values / block_values * int(sizeof(block_q8_0));
    }

    /// The block holding value d of `row`.
    static ROPEKIT_ALWAYS_INLINE const block_q8_0* block_at(const block_q8_0* row, int d) noexcept {
        return row + d / block_values;
    }
    /// The scale of block `b`, broadcast.
    template <class Ops>
    static ROPEKIT_ALWAYS_INLINE typename Ops::vec scale(const block_q8_0* b) noexcept {
        return Ops::q8_0_scale(b);
    }
    /// Values [j, j + W) of block `b`, unscaled.
    template <class Ops>
    static ROPEKIT_ALWAYS_INLINE typename Ops::vec load_unscaled(const block_q8_0* b,
                                                                 int j) noexcept {
        return Ops::load_q8_0_ints(b, j);
    }
    /// prefetch_l2 of block `b`, and with `last` of its last byte too. Block starts are 34
    /// bytes apart, so hinting each block's start reaches every cache line of a row but, at some
    /// alignments, the one holding the row's last bytes: the last block also hints its end.
    static ROPEKIT_ALWAYS_INLINE void prefetch_block(const block_q8_0* b, bool last,
                                                     std::ptrdiff_t offset) noexcept {
        prefetch_l2(b, offset);
        if (last)
            prefetch_l2(reinterpret_cast<const char*>(b) + sizeof(block_q8_0) - 1,
                        offset * std::ptrdiff_t(sizeof(block_q8_0)));
    }

    template <class Ops>
    static ROPEKIT_ALWAYS_INLINE typename Ops::vec load(const block_q8_0* row, int d) noexcept {
        return Ops::load_q8_0(row + d / block_values, d % block_values);
    }
    /// One hint per block, at its first value: one per vector would issue 4 to 8 prefetches per
    /// cache line.
    static ROPEKIT_ALWAYS_INLINE void prefetch(const block_q8_0* row, int d,
                                               std::ptrdiff_t offset) noexcept {
        if (d % block_values == 0) prefetch_l2(row + d / block_values, offset);
    }

    /// n values (a multiple of 32: n / 32 blocks) to float.
    template <class Arch>
    static ROPEKIT_ALWAYS_INLINE void widen(const block_q8_0* ROPEKIT_RESTRICT src,
                                            float* ROPEKIT_RESTRICT dst, int n) noexcept {
#if ROPEKIT_HAS_XSIMD
        if constexpr (!std::is_same_v<Arch, scalar_arch>) {
            constexpr int W = int(xsimd::batch<float, Arch>::size);
            for (int d = 0; d < n; d += W)
                simd::load_q8_0<Arch>(src + d / block_values, d % block_values)
                    .store_unaligned(dst + d);
            return;
        }
#endif
        dequantize_q8_0(src, dst, n);
    }
};

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE
