// SPDX-License-Identifier: Apache-2.0
/// \file
/// The decode micro-kernels: a few query rows of one K/V head against a chunk of keys, each K
/// and V row read once in its storage type and shared by the rows (scores by a transpose-and-add
/// tree, the chunk's softmax, P.V), and one decode step composed of them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../config.hpp"
#include "../storage.hpp"
#include "attention_micro.hpp"
#include "attention_simd.hpp"

#include "warnings_push.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail::attn {

/// Query rows of a decode segment (one K/V head) rounded up to 1, 2, 4 or 8, so that the
/// transpose-and-add tree (width / NR keys at once) always applies; padding rows hold zero
/// queries and their results are never read.
inline int decode_padded_rows(int rows) noexcept {
    return rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : 8;
}

/// Decode scores of NR query rows (`q[i * RS]`) against the keys [0, nc) of one K/V
/// head, nc <= decode_chunk, into the key-major tile `sd[c * NR + i]`. Each K row is read once,
/// in its storage type, and shared by the NR rows; a transpose-and-add tree reduces W / NR keys
/// at once and its result is exactly W consecutive entries of the tile (one aligned store).
template <class Ops, int NR, int P, int RS, class KV>
ROPEKIT_ALWAYS_INLINE void decode_chunk_scores(const KV* kbase, std::ptrdiff_t kstride, int nc,
                                               int D, const float* q, float* sd,
                                               std::ptrdiff_t prefetch_offset) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    int c = 0;
    if constexpr (W >= 4 && W % NR == 0) {
        constexpr int KB = W / NR;
        for (; c + KB <= nc; c += KB)
            Ops::store(sd + c * NR, score_tree<Ops, NR, P, RS>(kbase + c * kstride, kstride, D, q,
                                                               prefetch_offset));
    }
    for (; c < nc; ++c) {
        const KV* kr = kbase + c * kstride;
        V acc[NR];
        ROPEKIT_UNROLL
        for (int i = 0; i < NR; ++i) acc[i] = Ops::zero();
        for (int d = 0; d < D; d += P * W) {
            if (prefetch_offset != 0) kv_traits<KV>::prefetch(kr, d, prefetch_offset);
            V kv[P];
            load_kv<Ops, P>(kr, d, kv);
            ROPEKIT_UNROLL
            for (int h = 0; h < P; ++h) {
                ROPEKIT_UNROLL
                for (int i = 0; i < NR; ++i)
                    acc[i] = Ops::fma(Ops::load(q + i * RS + d + h * W), kv[h], acc[i]);
            }
        }
        ROPEKIT_UNROLL
        for (int i = 0; i < NR; ++i) sd[c * NR + i] = Ops::reduce_add(acc[i]);
    }
}

/// Online-softmax update of NR decode rows with the key-major score tile `sd[c * NR + i]` of
/// keys [0, nc): running max m, running sum l, P written over S, alpha = rescale factor of the
/// old accumulators. The tile is decode_chunk * NR floats, whole vectors: lane f of the tile
/// belongs to row f % NR, so the max and the sum are vertical over the vectors and only the
/// last W (or NR) lanes are folded per row.
template <class Ops, int NR>
ROPEKIT_ALWAYS_INLINE void decode_chunk_softmax(float* sd, int nc, float* m, float* l,
                                                float* alpha) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    constexpr int NV = decode_chunk * NR / W;  // vectors in the tile
    constexpr int G = NR > W ? NR / W : 1;     // vectors before the row pattern repeats
    constexpr int T = G * W;                   // lanes of one pattern (a multiple of NR)
    static_assert(decode_chunk * NR % W == 0 && NV % G == 0, "a decode tile is whole vectors");
    constexpr float ninf = -std::numeric_limits<float>::infinity();
    for (int f = nc * NR; f < decode_chunk * NR; ++f) sd[f] = ninf;
    alignas(64) float t[T];
    V acc[G];
    ROPEKIT_UNROLL
    for (int g = 0; g < G; ++g) acc[g] = Ops::load(sd + g * W);
    ROPEKIT_UNROLL
    for (int v = G; v < NV; ++v) acc[v % G] = Ops::max(acc[v % G], Ops::load(sd + v * W));
    ROPEKIT_UNROLL
    for (int g = 0; g < G; ++g) Ops::store(t + g * W, acc[g]);
    float m_sub[NR];
    ROPEKIT_UNROLL
    for (int i = 0; i < NR; ++i) {
        float mx = m[i];
        ROPEKIT_UNROLL
        for (int f = i; f < T; f += NR) mx = std::max(mx, t[f]);
        // A row that has seen no visible key keeps m = -inf: subtract 0 instead, so every exp
        // argument is -inf (-> exactly 0) and never NaN.
        m_sub[i] = mx == ninf ? 0.0f : mx;
        alpha[i] = m[i] - m_sub[i];
        m[i] = mx;
    }
    ROPEKIT_UNROLL
    for (int f = 0; f < T; ++f) t[f] = alpha[f % NR];
    V mp[G];
    ROPEKIT_UNROLL
    for (int g = 0; g < G; ++g) Ops::store(t + g * W, Ops::exp(Ops::load(t + g * W)));
    ROPEKIT_UNROLL
    for (int i = 0; i < NR; ++i) alpha[i] = t[i];
    ROPEKIT_UNROLL
    for (int f = 0; f < T; ++f) t[f] = m_sub[f % NR];
    ROPEKIT_UNROLL
    for (int g = 0; g < G; ++g) {
        mp[g] = Ops::load(t + g * W);
        acc[g] = Ops::zero();
    }
    ROPEKIT_UNROLL
    for (int v = 0; v < NV; ++v) {
        const V p = Ops::exp(Ops::load(sd + v * W) - mp[v % G]);
        Ops::store(sd + v * W, p);
        acc[v % G] = acc[v % G] + p;
    }
    ROPEKIT_UNROLL
    for (int g = 0; g < G; ++g) Ops::store(t + g * W, acc[g]);
    ROPEKIT_UNROLL
    for (int i = 0; i < NR; ++i) {
        float sum = 0.0f;
        ROPEKIT_UNROLL
        for (int f = i; f < T; f += NR) sum += t[f];
        l[i] = l[i] * alpha[i] + sum;
    }
}

/// Decode O = alpha * O + P V for rows [r0, r0 + NRB) of NR (`orow[i * RS]`,
/// channels [d0, d0 + NDV * width)) over keys [0, nc), P in the key-major tile `p[c * NR + i]`:
/// each V vector is loaded once and shared by the NRB rows. With bf16 pairs (P = 2) O holds
/// each 2 x width block of channels as its even channels, then its odd ones.
template <class Ops, int NR, int NRB, int NDV, int P, int RS, class KV>
ROPEKIT_ALWAYS_INLINE void decode_chunk_pv_micro(const KV* vbase, std::ptrdiff_t vstride, int nc,
                                                 const float* p, const float* alpha, float* orow,
                                                 int r0, int d0,
                                                 std::ptrdiff_t prefetch_offset) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    V acc[NRB][NDV];
    ROPEKIT_UNROLL
    for (int i = 0; i < NRB; ++i) {
        const V a = Ops::set1(alpha[r0 + i]);
        ROPEKIT_UNROLL
        for (int n = 0; n < NDV; ++n) acc[i][n] = Ops::load(orow + (r0 + i) * RS + d0 + n * W) * a;
    }
    const KV* vr = vbase;
    for (int c = 0; c < nc; ++c, vr += vstride) {
        V vv[NDV];
        static_assert(NDV % P == 0, "pairs of V vectors");
        using S = kv_traits<KV>;
        // Block-scaled storage (q8_0): vectors per block; 1 for the others (unused there).
        constexpr int VB = S::scaled ? S::block_values / W : 1;
        if constexpr (S::scaled && NDV % VB == 0) {
            // Whole blocks (d0 is then a multiple of the block): each block's scale widened once.
            ROPEKIT_UNROLL
            for (int nb = 0; nb < NDV / VB; ++nb) {
                const KV* blk = S::block_at(vr, d0) + nb;
                if (prefetch_offset != 0) S::prefetch_block(blk, true, prefetch_offset);
                const V sc = S::template scale<Ops>(blk);
                ROPEKIT_UNROLL
                for (int u = 0; u < VB; ++u)
                    vv[nb * VB + u] = S::template load_unscaled<Ops>(blk, u * W) * sc;
            }
        } else if constexpr (S::scaled && VB % NDV == 0) {
            // The pass lies inside one block (d0 is a multiple of NDV * W): one scale.
            const KV* blk = S::block_at(vr, d0);
            const int j0 = d0 % S::block_values;
            if (prefetch_offset != 0 && j0 == 0) S::prefetch_block(blk, true, prefetch_offset);
            const V sc = S::template scale<Ops>(blk);
            ROPEKIT_UNROLL
            for (int n = 0; n < NDV; ++n)
                vv[n] = S::template load_unscaled<Ops>(blk, j0 + n * W) * sc;
        } else {
            ROPEKIT_UNROLL
            for (int n = 0; n < NDV; n += P) {
                if (prefetch_offset != 0) S::prefetch(vr, d0 + n * W, prefetch_offset);
                load_kv<Ops, P>(vr, d0 + n * W, vv + n);
            }
        }
        ROPEKIT_UNROLL
        for (int i = 0; i < NRB; ++i) {
            const V pb = Ops::set1(p[c * NR + r0 + i]);
            ROPEKIT_UNROLL
            for (int n = 0; n < NDV; ++n) acc[i][n] = Ops::fma(pb, vv[n], acc[i][n]);
        }
    }
    ROPEKIT_UNROLL
    for (int i = 0; i < NRB; ++i) {
        ROPEKIT_UNROLL
        for (int n = 0; n < NDV; ++n) Ops::store(orow + (r0 + i) * RS + d0 + n * W, acc[i][n]);
    }
}

/// One decode step of one K/V head over one chunk of keys [0, nc): scores of its NR (padded)
/// query rows over D (q / k) channels, `hide(sd)` (the soft-cap and the mask), the online
/// softmax, and P V for the `rows` real rows (4 at a time) and all DV (v) channels.
template <class Ops, int NR, int P, int RS, class KV, class Hide>
ROPEKIT_ALWAYS_INLINE void decode_step(const KV* kbase, std::ptrdiff_t kstride, const KV* vbase,
                                       std::ptrdiff_t vstride, int nc, int D, int DV, int rows,
                                       const float* q, float* sd, float* m, float* l, float* alpha,
                                       float* orow, std::ptrdiff_t k_prefetch,
                                       std::ptrdiff_t v_prefetch, Hide&& hide) noexcept {
    constexpr int W = Ops::width;
    constexpr int NDV = blocking<Ops>::nv;
    decode_chunk_scores<Ops, NR, P, RS>(kbase, kstride, nc, D, q, sd, k_prefetch);
    hide(sd);
    decode_chunk_softmax<Ops, NR>(sd, nc, m, l, alpha);
    for (int r0 = 0; r0 < rows; r0 += 4)
        with_nr(rows - r0, [&](auto nrc) {
            constexpr int nrb = decltype(nrc)::value;
            for (int d0 = 0; d0 < DV; d0 += NDV * W) {
                auto pass = [&](auto nvc) {
                    decode_chunk_pv_micro<Ops, NR, nrb, decltype(nvc)::value, P, RS>(
                        vbase, vstride, nc, sd, alpha, orow, r0, d0, r0 == 0 ? v_prefetch : 0);
                };
                if constexpr (P == 2) {
                    // Pairs: DV is a multiple of 2 x width, so every pass is 4 or 2 vectors.
                    static_assert(NDV == 4, "pairs are only used with 4 vectors per pass");
                    if (DV - d0 >= 4 * W)
                        pass(std::integral_constant<int, 4>{});
                    else
                        pass(std::integral_constant<int, 2>{});
                } else {
                    with_nv<NDV>((DV - d0) / W, pass);
                }
            }
        });
}

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE

#include "warnings_pop.hpp"
