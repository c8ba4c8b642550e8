// SPDX-License-Identifier: Apache-2.0
/// \file
/// The register-blocked micro-kernels of blocked attention in the "queries in lanes" layout
/// (attention_kernel.hpp explains it): S^T = K Q^T and O^T += V P^T over one tile, the online
/// softmax update, soft-capping, the K/V loads (through kv_traits, kv_storage.hpp), and the score
/// tree the decode path shares.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../attention_types.hpp"
#include "../config.hpp"
#include "../storage.hpp"
#include "attention_simd.hpp"
#include "kv_storage.hpp"

#include "warnings_push.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail::attn {

/// S^T rows [c, c + RB) x row vectors [rv0, rv0 + NV): acc = sum_d K[c+i][d] * qt[d][:].
template <class Ops, int RB, int NV>
ROPEKIT_ALWAYS_INLINE void score_micro(const float* kbase, std::ptrdiff_t kstride, int D,
                                       const float* qt, float* st, int rv0) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    constexpr int R = block_rows;
    V acc[RB][NV];
    ROPEKIT_UNROLL
    for (int i = 0; i < RB; ++i) {
        ROPEKIT_UNROLL
        for (int n = 0; n < NV; ++n) acc[i][n] = Ops::zero();
    }
    const float* kp[RB];
    ROPEKIT_UNROLL
    for (int i = 0; i < RB; ++i) kp[i] = kbase + i * kstride;
    const float* q = qt + rv0 * W;
    for (int d = 0; d < D; ++d, q += R) {
        V qv[NV];
        ROPEKIT_UNROLL
        for (int n = 0; n < NV; ++n) {
            qv[n] = Ops::load(q + n * W);
            // Without this GCC 12 sometimes folds the load into each of the RB FMAs that use it
            // (seen once run() inlined more: 18% slower sinks + window prefill).
            Ops::in_register(qv[n]);
        }
        ROPEKIT_UNROLL
        for (int i = 0; i < RB; ++i) {
            const V kb = Ops::set1(kp[i][d]);
            ROPEKIT_UNROLL
            for (int n = 0; n < NV; ++n) acc[i][n] = Ops::fma(kb, qv[n], acc[i][n]);
        }
    }
    ROPEKIT_UNROLL
    for (int i = 0; i < RB; ++i) {
        ROPEKIT_UNROLL
        for (int n = 0; n < NV; ++n) Ops::store(st + i * R + (rv0 + n) * W, acc[i][n]);
    }
}

/// O^T rows [d, d + RD) x row vectors [rv0, rv0 + NV): acc = alpha * acc + sum_c V[c][d] P^T[c].
template <class Ops, int RD, int NV>
ROPEKIT_ALWAYS_INLINE void pv_micro(const float* vbase, std::ptrdiff_t vstride, int nc,
                                    const float* pt, const float* alpha, float* ot,
                                    int rv0) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    constexpr int R = block_rows;
    V acc[RD][NV];
    {
        V a[NV];
        ROPEKIT_UNROLL
        for (int n = 0; n < NV; ++n) a[n] = Ops::load(alpha + (rv0 + n) * W);
        ROPEKIT_UNROLL
        for (int i = 0; i < RD; ++i) {
            ROPEKIT_UNROLL
            for (int n = 0; n < NV; ++n) acc[i][n] = Ops::load(ot + i * R + (rv0 + n) * W) * a[n];
        }
    }
    const float* p = pt + rv0 * W;
    const float* vr = vbase;
    for (int c = 0; c < nc; ++c, p += R, vr += vstride) {
        V pv[NV];
        ROPEKIT_UNROLL
        for (int n = 0; n < NV; ++n) {
            pv[n] = Ops::load(p + n * W);
            Ops::in_register(pv[n]);
        }
        ROPEKIT_UNROLL
        for (int i = 0; i < RD; ++i) {
            const V vb = Ops::set1(vr[i]);
            ROPEKIT_UNROLL
            for (int n = 0; n < NV; ++n) acc[i][n] = Ops::fma(vb, pv[n], acc[i][n]);
        }
    }
    ROPEKIT_UNROLL
    for (int i = 0; i < RD; ++i) {
        ROPEKIT_UNROLL
        for (int n = 0; n < NV; ++n) Ops::store(ot + i * R + (rv0 + n) * W, acc[i][n]);
    }
}

/// Register blocking of `Ops`: RB keys (or head channels) x NV row vectors.
template <class Ops>
struct blocking {
    static constexpr int nv = Ops::registers >= 32 ? 4 : 2;
    static constexpr int rb = 6;
    /// 16 registers (AVX2, SSE2): the keys (64 per tile) and channels (128) past the last whole
    /// rb block go through 4- and 2-row micro-kernels before single rows. A 1-row kernel has
    /// only nv = 2 accumulators, so on Zen 3 (FMA latency 4, two pipes) it runs at a quarter of
    /// the rate: the 4 keys left of a 64-key tile cost about as much as 16 of the others.
    static constexpr bool split_tail = Ops::registers < 32 && Ops::width > 1;
};

/// The micro-kernel `f` over rows [0, n) in blocks of RB, then (with `split_tail`) one block
/// of 4 and one of 2, then single rows: `f(row, integral_constant<rows>)`.
template <int RB, bool SplitTail, class F>
ROPEKIT_ALWAYS_INLINE void for_row_blocks(int n, F&& f) noexcept {
    int i = 0;
    for (; i + RB <= n; i += RB) f(i, std::integral_constant<int, RB>{});
    if constexpr (SplitTail && RB > 4) {
        if (i + 4 <= n) {
            f(i, std::integral_constant<int, 4>{});
            i += 4;
        }
    }
    if constexpr (SplitTail && RB > 2) {
        if (i + 2 <= n) {
            f(i, std::integral_constant<int, 2>{});
            i += 2;
        }
    }
    for (; i < n; ++i) f(i, std::integral_constant<int, 1>{});
}

/// Dispatches a runtime vector count 1..NV to the micro-kernel instantiation.
template <int NV, class F>
ROPEKIT_ALWAYS_INLINE void with_nv(int nv, F&& f) noexcept {
    if constexpr (NV >= 4) {
        if (nv >= 4) return f(std::integral_constant<int, 4>{});
        if (nv == 3) return f(std::integral_constant<int, 3>{});
    }
    if (nv >= 2) return f(std::integral_constant<int, 2>{});
    f(std::integral_constant<int, 1>{});
}

/// S^T[c][r] for keys [0, nc) and row vectors [0, nrv).
template <class Ops>
inline void scores(const float* kbase, std::ptrdiff_t kstride, int nc, int D, const float* qt,
                   float* st, int nrv) noexcept {
    constexpr int RB = blocking<Ops>::rb;
    constexpr int NV = blocking<Ops>::nv;
    for (int rv0 = 0; rv0 < nrv; rv0 += NV) {
        with_nv<NV>(nrv - rv0, [&](auto nvc) {
            constexpr int nv = decltype(nvc)::value;
            for_row_blocks<RB, blocking<Ops>::split_tail>(nc, [&](int c, auto rbc) {
                score_micro<Ops, decltype(rbc)::value, nv>(kbase + c * kstride, kstride, D, qt,
                                                           st + c * block_rows, rv0);
            });
        });
    }
}

/// O^T = alpha * O^T + V^T P^T for head channels [0, D), keys [0, nc), row vectors [0, nrv).
template <class Ops>
inline void accumulate_pv(const float* vbase, std::ptrdiff_t vstride, int nc, int D,
                          const float* pt, const float* alpha, float* ot, int nrv) noexcept {
    constexpr int RD = blocking<Ops>::rb;
    constexpr int NV = blocking<Ops>::nv;
    for (int rv0 = 0; rv0 < nrv; rv0 += NV) {
        with_nv<NV>(nrv - rv0, [&](auto nvc) {
            constexpr int nv = decltype(nvc)::value;
            for_row_blocks<RD, blocking<Ops>::split_tail>(D, [&](int d, auto rdc) {
                pv_micro<Ops, decltype(rdc)::value, nv>(vbase + d, vstride, nc, pt, alpha,
                                                        ot + d * block_rows, rv0);
            });
        });
    }
}

/// Keys per chunk in the decode loops (all heads of a block visit a chunk before the next).
/// 32 rather than 16 halves the per-chunk softmax folding and O reloads (-11% time per key in
/// L2, bf16 head_dim 128); 64 was slower from DRAM on Zen 4.
constexpr int decode_chunk = 32;
static_assert(block_rows * decode_chunk <= tile_keys * block_rows,
              "the decode score tiles of a block fit in the workspace score tile");
/// Zeroes the padding rows of a tile row. A call rather than a loop: GCC 12 -O3 interchanges
/// the (channel, padded row) loop nest and emits aligned stores at the unaligned first padding
/// row (a crash at 37 rows with AVX-512).
inline void zero_floats(float* p, int n) noexcept {
    if (n > 0) std::memset(p, 0, std::size_t(n) * sizeof(float));
}

/// How far ahead of the keys it reads the decode loop prefetches (into L2), in bytes of one
/// head's K (or V) rows: about 16 KB per head hid the DRAM latency on Zen 4 for fp32 and bf16
/// (32 and 64 keys at head_dim 128); the prefetch lines of all heads of a block (256 KB for 8
/// K/V heads) stay well inside L2.
constexpr int decode_prefetch_bytes = 16384;

/// Runtime padded row count (1, 2, 4 or 8) to an instantiation.
template <class F>
ROPEKIT_ALWAYS_INLINE void with_padded_rows(int nr, F&& f) noexcept {
    if (nr >= 8) return f(std::integral_constant<int, 8>{});
    if (nr == 4) return f(std::integral_constant<int, 4>{});
    if (nr == 2) return f(std::integral_constant<int, 2>{});
    f(std::integral_constant<int, 1>{});
}

/// Runtime row count 1..4 to an instantiation.
template <class F>
ROPEKIT_ALWAYS_INLINE void with_nr(int nr, F&& f) noexcept {
    if (nr >= 4) return f(std::integral_constant<int, 4>{});
    if (nr == 3) return f(std::integral_constant<int, 3>{});
    if (nr == 2) return f(std::integral_constant<int, 2>{});
    f(std::integral_constant<int, 1>{});
}

/// Loads the K / V values [d, d + P * width) of the row at `row`: P = 1, width values widened
/// to float; P = 2 (kv_traits::even_odd_pairs), 2 x width values as their even and odd values.
template <class Ops, int P, class KV>
ROPEKIT_ALWAYS_INLINE void load_kv(const KV* row, int d, typename Ops::vec* out) noexcept {
    using S = kv_traits<KV>;
    if constexpr (P == 2) {
        static_assert(S::template even_odd_pairs<Ops>, "pairs are read only where the traits say");
        S::template load_pairs<Ops>(row, d, out[0], out[1]);
    } else {
        out[0] = S::template load<Ops>(row, d);
    }
    ROPEKIT_UNROLL
    for (int i = 0; i < P; ++i) Ops::in_register(out[i]);
}

/// Row strides of the decode tiles (q rows, O rows): 256 floats while both head sizes fit, so
/// the rows of a block stay exactly as compact as before 576-channel heads existed, else
/// max_head_dim.
constexpr int decode_row_stride_small = 256;

/// The dot products of NR query rows (`q[i * RS]`) with KB = width / NR key rows,
/// reduced together by one transpose-and-add tree instead of one horizontal sum each: lane
/// `c * NR + i` of the result is q_i . k_c. P = 2: K is read as bf16 even / odd pairs and q is
/// stored in the same order (each 2 x width block: its even channels, then its odd ones).
template <class Ops, int NR, int P, int RS, class KV>
ROPEKIT_ALWAYS_INLINE typename Ops::vec score_tree(const KV* kbase, std::ptrdiff_t kstride, int D,
                                                   const float* q,
                                                   std::ptrdiff_t prefetch_offset) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    constexpr int KB = W / NR;
    V acc[KB * NR];
    ROPEKIT_UNROLL
    for (int j = 0; j < KB * NR; ++j) acc[j] = Ops::zero();
    const KV* kp[KB];
    ROPEKIT_UNROLL
    for (int c = 0; c < KB; ++c) kp[c] = kbase + c * kstride;
    using S = kv_traits<KV>;
    if constexpr (S::scaled) {
        // One block at a time, its scale widened once per key (a half -> float conversion and
        // a broadcast per vector cost more than the FMAs the vector feeds).
        constexpr int BV = S::block_values;
        constexpr int VB = BV / W;
        static_assert(VB >= 1 && BV % W == 0, "whole vectors per block");
        for (int d = 0; d < D; d += BV) {
            const int b = d / BV;
            V sc[KB];
            ROPEKIT_UNROLL
            for (int c = 0; c < KB; ++c) {
                if (prefetch_offset != 0)
                    S::prefetch_block(kp[c] + b, d + BV == D, prefetch_offset);
                sc[c] = S::template scale<Ops>(kp[c] + b);
            }
            ROPEKIT_UNROLL
            for (int u = 0; u < VB; ++u) {
                V qv[NR];
                ROPEKIT_UNROLL
                for (int i = 0; i < NR; ++i) qv[i] = Ops::load(q + i * RS + d + u * W);
                ROPEKIT_UNROLL
                for (int c = 0; c < KB; ++c) {
                    const V kv = S::template load_unscaled<Ops>(kp[c] + b, u * W) * sc[c];
                    ROPEKIT_UNROLL
                    for (int i = 0; i < NR; ++i)
                        acc[c * NR + i] = Ops::fma(qv[i], kv, acc[c * NR + i]);
                }
            }
        }
        return Ops::sum_rows(acc);
    }
    for (int d = 0; d < D; d += P * W) {
        V qv[NR][P];
        ROPEKIT_UNROLL
        for (int i = 0; i < NR; ++i) {
            ROPEKIT_UNROLL
            for (int h = 0; h < P; ++h) {
                qv[i][h] = Ops::load(q + i * RS + d + h * W);
                // With 8 rows of pairs the q vectors would crowd out the accumulators: those
                // stay memory operands.
                if constexpr (NR * P <= 8) Ops::in_register(qv[i][h]);
            }
        }
        ROPEKIT_UNROLL
        for (int c = 0; c < KB; ++c) {
            if (prefetch_offset != 0) S::prefetch(kp[c], d, prefetch_offset);
            V kv[P];
            load_kv<Ops, P>(kp[c], d, kv);
            ROPEKIT_UNROLL
            for (int h = 0; h < P; ++h) {
                ROPEKIT_UNROLL
                for (int i = 0; i < NR; ++i)
                    acc[c * NR + i] = Ops::fma(qv[i][h], kv[h], acc[c * NR + i]);
            }
        }
    }
    return Ops::sum_rows(acc);
}

/// Online-softmax update of rows [0, nrv * W) with the scores of keys [0, nc): running max m,
/// running sum l, P^T written over S^T, alpha = rescale factor of the old accumulators.
template <class Ops>
inline void softmax_update(float* st, int nc, int nrv, float* m, float* l, float* alpha) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    for (int rv = 0; rv < nrv; ++rv) {
        const int r = rv * W;
        const V m_old = Ops::load(m + r);
        V m_tile = Ops::set1(-std::numeric_limits<float>::infinity());
        for (int c = 0; c < nc; ++c) m_tile = Ops::max(m_tile, Ops::load(st + c * block_rows + r));
        const V m_new = Ops::max(m_old, m_tile);
        // A row that has seen no visible key keeps m = -inf: subtract 0 instead, so every
        // exp argument is -inf (-> exactly 0) and never NaN.
        const V m_sub = Ops::finite_or_zero(m_new);
        const V a = Ops::exp(m_old - m_sub);
        V sum = Ops::zero();
        for (int c = 0; c < nc; ++c) {
            float* s = st + c * block_rows + r;
            const V p = Ops::exp(Ops::load(s) - m_sub);
            Ops::store(s, p);
            sum = sum + p;
        }
        Ops::store(l + r, Ops::fma(Ops::load(l + r), a, sum));
        Ops::store(m + r, m_new);
        Ops::store(alpha + r, a);
    }
}

/// Logit soft-cap of `n` scores at `s` (whole vectors, aligned): `cap * tanh(s * inv_cap)`.
template <class Ops>
ROPEKIT_ALWAYS_INLINE void softcap_scores(float* s, int n, float cap, float inv_cap) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    const V c = Ops::set1(cap), ic = Ops::set1(inv_cap);
    for (int i = 0; i < n; i += W) Ops::store(s + i, c * Ops::tanh(Ops::load(s + i) * ic));
}

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE

#include "warnings_pop.hpp"
