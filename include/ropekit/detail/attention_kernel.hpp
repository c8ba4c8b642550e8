// SPDX-License-Identifier: Apache-2.0
/// \file
/// The blocked attention kernel behind attention.hpp: tile workspace, register-blocked
/// micro-kernels for S = Q K^T and O += P V, online softmax and the ReRoPE pre-pass.
///
/// Layout choice ("queries in lanes"). A block holds up to 64 query rows (for GQA, the rows are
/// (token, head) pairs of one K/V head, so the heads of a group share every K/V load). Q is
/// stored transposed, `qt[d][row]`, once per block; the score tile is `st[key][row]` and the
/// output accumulator `ot[d][row]`. Then
///   S^T[c][:] = sum_d K[c][d] * qt[d][:]   (K element broadcast, 64 rows in 4 zmm)
///   O^T[d][:] += sum_c V[c][d] * P^T[c][:] (V element broadcast)
/// so K and V are read in their natural [token][d] layout (no transposition or packing of fp32
/// K/V at all), and the softmax max/sum over keys are vertical vector operations (no horizontal
/// reductions). The alternative (pack K^T per tile, broadcast q) costs a transposition per key
/// tile and query block; this one only transposes Q and O once per block.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../config.hpp"
#include "../layout.hpp"
#include "../mask.hpp"
#include "../rerope.hpp"
#include "../storage.hpp"
#include "../table.hpp"
#include "../view.hpp"
#include "attention_simd.hpp"
#if ROPEKIT_HAS_XSIMD
#include "simd_storage.hpp"
#endif

// See attention_simd.hpp: GCC 12 false positives inside inlined AVX-512 intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ropekit {

/// Everything besides the tensors and the mask.
struct attention_params {
    /// Multiplies q.k before the softmax (usually 1/sqrt(head_dim), times
    /// rope_frequencies::logit_scale() for YaRN / LongRoPE). Finite and > 0.
    float softmax_scale = 0.0f;
    /// Position of each query token (n_q entries). Null: `n_kv - n_q + t` (the causal suffix).
    const std::int64_t* q_positions = nullptr;
    /// Position of each key token (n_kv entries). Null: the key index j. Key-range skipping
    /// (constant cost for sinks + window) is only available with null key positions.
    const std::int64_t* k_positions = nullptr;
    /// Row of query token 0 in the key sequence, for index-based masks (sinks, parallel context
    /// windows): query t is row `query_index_offset + t`. Negative: `n_kv - n_q`.
    std::int64_t query_index_offset = -1;
    /// gpt-oss learned sink logits, one per *query* head (indexed by the query head, which is
    /// `kv_head * group + g`), in the units of the scaled scores. Null: no sink. The kernel adds
    /// them once per row at finalisation: they join the maximum and the denominator, never the
    /// numerator. With split keys pass them to merge_attention, not to the partial calls.
    const float* sink_logits = nullptr;
    /// Optional output: log-sum-exp of each row's scaled scores (including the sink when one is
    /// given), laid out `[n_q][n_heads]` contiguous. -inf for a row that sees no key and has no
    /// sink.
    float* lse = nullptr;
};

namespace detail::attn {

/// Largest head_dim the fixed-size tiles hold.
constexpr int max_head_dim = 256;
/// Query rows per block (all (token, head) pairs of one K/V head).
constexpr int block_rows = 64;
/// Keys per tile.
constexpr int tile_keys = 64;
/// Copy fp32 K / V tiles into the workspace before the micro-kernels (16-bit tiles are always
/// widened into it). In a [token][head][d] cache each row of one head sits on its own 4 KB page
/// (or several rows per 16 KB with 32 heads), so the micro-kernels' walks over 64 rows miss the
/// L1 TLB; a compact tile spans 8 pages. Measured on causal prefill, head_dim 128, AVX-512:
/// packed V was faster at every shape; packed K was neutral with 8 heads and clearly faster with
/// 32 (the bf16 runs, which always pack, beat unpacked fp32 by 1.35x at n = 4096, 32 heads).
constexpr bool pack_f32_k = true;
constexpr bool pack_f32_v = true;
/// Largest number of rotation pairs (head_dim 256).
constexpr int max_pairs = max_head_dim / 2;

}  // namespace detail::attn

/// Scratch memory of one attention call on one thread: every tile the kernel touches. Allocate
/// one per worker thread (it is about 0.5 MB: `sizeof(attention_workspace)`) and reuse it; the
/// kernels never allocate.
struct alignas(64) attention_workspace {
    /// \cond INTERNAL
    static constexpr int R = detail::attn::block_rows;
    static constexpr int C = detail::attn::tile_keys;
    static constexpr int D = detail::attn::max_head_dim;
    alignas(64) float qt[D * R];    // scaled Q^T (ReRoPE: rotated at the query position)
    alignas(64) float qcap[D * R];  // ReRoPE: scaled Q^T rotated at the capped position
    alignas(64) float ot[D * R];    // O^T accumulators
    alignas(64) float st[C * R];    // S^T, then P^T
    alignas(64) float st2[C * R];   // ReRoPE: capped scores
    alignas(64) float kt[C * D];    // K tile as float (16-bit storage, or rotated)
    alignas(64) float kc[C * D];    // ReRoPE: K tile for the capped scores
    alignas(64) float vt[C * D];    // V tile as float (16-bit storage)
    alignas(64) float m[R], l[R], alpha[R], ones[R];
    alignas(64) float leaky_off[C * D];  // leaky ReRoPE: cos|sin of offsets o/k, o < C
    alignas(64) float cs_tmp[D];
    alignas(64) float cs_cap[D];  // ReRoPE: cos|sin at the window (q capped rotation)
    std::int64_t tok_pos[R], tok_idx[R];
    std::int64_t kpos[C];
    /// \endcond
};

namespace detail::attn {

/// Rotates one head by a cos|sin row (pairs cosines then pairs sines), into `out`; channels
/// past rotary_dim are copied. Same pairing as ropekit::rope_layout.
inline void rotate_head(const float* x, float* out, const float* cs, int pairs, int head_dim,
                        rope_layout layout) noexcept {
    const float* c = cs;
    const float* s = cs + pairs;
    if (layout == rope_layout::neox) {
        for (int i = 0; i < pairs; ++i) {
            const float a = x[i], b = x[i + pairs];
            out[i] = a * c[i] - b * s[i];
            out[i + pairs] = b * c[i] + a * s[i];
        }
    } else {
        for (int i = 0; i < pairs; ++i) {
            const float a = x[2 * i], b = x[2 * i + 1];
            out[2 * i] = a * c[i] - b * s[i];
            out[2 * i + 1] = b * c[i] + a * s[i];
        }
    }
    for (int d = 2 * pairs; d < head_dim; ++d) out[d] = x[d];
}

/// cos|sin of `position * inv_freq` for every pair, accurate (see detail::accurate_cos_sin).
inline void accurate_row(double position, const float* inv_freq, int pairs, float* cs) noexcept {
    for (int i = 0; i < pairs; ++i) accurate_cos_sin(position, inv_freq[i], cs[i], cs[pairs + i]);
}

/// cos|sin of a + b from the rows of a and b (angle addition).
inline void compose_rows(const float* a, const float* b, int pairs, float* out) noexcept {
    for (int i = 0; i < pairs; ++i) {
        const float ca = a[i], sa = a[pairs + i], cb = b[i], sb = b[pairs + i];
        out[i] = ca * cb - sa * sb;
        out[pairs + i] = sa * cb + ca * sb;
    }
}

/// Converts `n` stored values to float.
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void convert_row(const T* ROPEKIT_RESTRICT src, float* ROPEKIT_RESTRICT dst,
                                       int n) noexcept {
#if ROPEKIT_HAS_XSIMD
    if constexpr (!std::is_same_v<Arch, scalar_arch>) {
        constexpr int W = int(xsimd::batch<float, Arch>::size);
        int d = 0;
        for (; d + W <= n; d += W) simd::load_as_float<Arch, T>(src + d).store_unaligned(dst + d);
        if (d < n)
            simd::load_as_float_partial<Arch, T>(src + d, std::size_t(n - d))
                .store_unaligned(dst + d);
        return;
    }
#endif
    for (int d = 0; d < n; ++d) dst[d] = to_float(src[d]);
}

/// No rotation inside the kernel (Q and K arrive rotated, or the model has no RoPE).
struct no_rotation {};

/// ReRoPE / Leaky ReRoPE rotation inside the kernel: Q and K arrive unrotated.
template <class Rule>
struct rerope_rotation {
    Rule rule;
    const rope_frequencies* freqs;
    const cos_sin_table* table;
};

template <class Rule>
inline constexpr bool is_leaky_v = std::is_same_v<Rule, leaky_rerope>;

/// S^T rows [c, c + RB) x row vectors [rv0, rv0 + NV): acc = sum_d K[c+i][d] * qt[d][:].
template <class Ops, int RB, int NV>
ROPEKIT_ALWAYS_INLINE void score_micro(const float* kbase, std::ptrdiff_t kstride, int D,
                                       const float* qt, float* st, int rv0) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    constexpr int R = block_rows;
    V acc[RB][NV];
    for (int i = 0; i < RB; ++i)
        for (int n = 0; n < NV; ++n) acc[i][n] = Ops::zero();
    const float* kp[RB];
    for (int i = 0; i < RB; ++i) kp[i] = kbase + i * kstride;
    const float* q = qt + rv0 * W;
    for (int d = 0; d < D; ++d, q += R) {
        V qv[NV];
        for (int n = 0; n < NV; ++n) qv[n] = Ops::load(q + n * W);
        for (int i = 0; i < RB; ++i) {
            const V kb = Ops::set1(kp[i][d]);
            for (int n = 0; n < NV; ++n) acc[i][n] = Ops::fma(kb, qv[n], acc[i][n]);
        }
    }
    for (int i = 0; i < RB; ++i)
        for (int n = 0; n < NV; ++n) Ops::store(st + i * R + (rv0 + n) * W, acc[i][n]);
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
        for (int n = 0; n < NV; ++n) a[n] = Ops::load(alpha + (rv0 + n) * W);
        for (int i = 0; i < RD; ++i)
            for (int n = 0; n < NV; ++n) acc[i][n] = Ops::load(ot + i * R + (rv0 + n) * W) * a[n];
    }
    const float* p = pt + rv0 * W;
    const float* vr = vbase;
    for (int c = 0; c < nc; ++c, p += R, vr += vstride) {
        V pv[NV];
        for (int n = 0; n < NV; ++n) pv[n] = Ops::load(p + n * W);
        for (int i = 0; i < RD; ++i) {
            const V vb = Ops::set1(vr[i]);
            for (int n = 0; n < NV; ++n) acc[i][n] = Ops::fma(vb, pv[n], acc[i][n]);
        }
    }
    for (int i = 0; i < RD; ++i)
        for (int n = 0; n < NV; ++n) Ops::store(ot + i * R + (rv0 + n) * W, acc[i][n]);
}

/// Register blocking of `Ops`: RB keys (or head channels) x NV row vectors.
template <class Ops>
struct blocking {
    static constexpr int nv = Ops::registers >= 32 ? 4 : 2;
    static constexpr int rb = 6;
};

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
            int c = 0;
            for (; c + RB <= nc; c += RB)
                score_micro<Ops, RB, nv>(kbase + c * kstride, kstride, D, qt, st + c * block_rows,
                                         rv0);
            for (; c < nc; ++c)
                score_micro<Ops, 1, nv>(kbase + c * kstride, kstride, D, qt, st + c * block_rows,
                                        rv0);
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
            int d = 0;
            for (; d + RD <= D; d += RD)
                pv_micro<Ops, RD, nv>(vbase + d, vstride, nc, pt, alpha, ot + d * block_rows, rv0);
            for (; d < D; ++d)
                pv_micro<Ops, 1, nv>(vbase + d, vstride, nc, pt, alpha, ot + d * block_rows, rv0);
        });
    }
}

/// Keys per chunk in the decode loops (all heads of a block visit a chunk before the next).
constexpr int decode_chunk = 16;
/// Prefetch distance of the decode loops, in key rows.
constexpr int decode_prefetch_rows = 16;

/// Zeroes the padding rows of a tile row. A call rather than a loop: GCC 12 -O3 interchanges
/// the (channel, padded row) loop nest and emits aligned stores at the unaligned first padding
/// row (a crash at 37 rows with AVX-512).
inline void zero_floats(float* p, int n) noexcept {
    if (n > 0) std::memset(p, 0, std::size_t(n) * sizeof(float));
}

/// Keys the decode block prefetches ahead of the chunk it computes (whole token rows of K and
/// V over the block's heads).
constexpr int decode_prefetch_keys = 32;

/// Hints that `bytes` bytes from `p` will be read soon (into L2: the distance is too far for L1).
ROPEKIT_ALWAYS_INLINE void prefetch_bytes(const void* p, std::ptrdiff_t bytes) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    const char* c = static_cast<const char*>(p);
    for (std::ptrdiff_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 0, 2);
#else
    (void)p, (void)bytes;
#endif
}

/// Hints that the row at `p + ahead * stride` (elements of T) will be read soon. Computed on
/// integers: the address may lie past the array, which is harmless for a prefetch.
template <class T>
ROPEKIT_ALWAYS_INLINE void prefetch_row(const T* p, std::ptrdiff_t stride, int bytes) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    const std::uintptr_t a =
        reinterpret_cast<std::uintptr_t>(p) +
        std::uintptr_t(decode_prefetch_rows * stride * std::ptrdiff_t(sizeof(T)));
    for (int off = 0; off < bytes; off += 64)
        __builtin_prefetch(reinterpret_cast<const void*>(a + std::uintptr_t(off)), 0, 3);
#else
    (void)p, (void)stride, (void)bytes;
#endif
}

/// Decode form (a few query rows): S[r][c] = q_r . k_c vectorised over head channels, one
/// horizontal sum per (row, key). `qrow` holds the rows [r][max_head_dim]; D % width == 0.
/// K is read in its storage type (16-bit rows are widened in registers, never copied).
template <class Ops, int NR, class KV>
ROPEKIT_ALWAYS_INLINE void score_decode(const KV* kbase, std::ptrdiff_t kstride, int nc, int D,
                                        const float* qrow, float* st, int r0,
                                        bool prefetch) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    for (int c = 0; c < nc; ++c) {
        const KV* kr = kbase + c * kstride;
        if (prefetch) prefetch_row(kr, kstride, D * int(sizeof(KV)));
        V acc[NR];
        for (int i = 0; i < NR; ++i) acc[i] = Ops::zero();
        for (int d = 0; d < D; d += W) {
            const V kv = Ops::load_stored(kr + d);
            for (int i = 0; i < NR; ++i)
                acc[i] = Ops::fma(Ops::load(qrow + (r0 + i) * max_head_dim + d), kv, acc[i]);
        }
        for (int i = 0; i < NR; ++i) st[c * block_rows + r0 + i] = Ops::reduce_add(acc[i]);
    }
}

/// Decode form of O = alpha * O + P V with O row-major `orow[r][max_head_dim]`: V rows are
/// loaded once per key and shared by the NR rows; NDV channel vectors per pass.
template <class Ops, int NR, int NDV, class KV>
ROPEKIT_ALWAYS_INLINE void pv_decode(const KV* vbase, std::ptrdiff_t vstride, int nc,
                                     const float* pt, const float* alpha, float* orow, int r0,
                                     int d0, int prefetch_bytes) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    V acc[NR][NDV];
    for (int i = 0; i < NR; ++i) {
        const V a = Ops::set1(alpha[r0 + i]);
        for (int n = 0; n < NDV; ++n)
            acc[i][n] = Ops::load(orow + (r0 + i) * max_head_dim + d0 + n * W) * a;
    }
    const KV* vr = vbase + d0;
    for (int c = 0; c < nc; ++c, vr += vstride) {
        if (prefetch_bytes > 0) prefetch_row(vr, vstride, prefetch_bytes);
        V vv[NDV];
        for (int n = 0; n < NDV; ++n) vv[n] = Ops::load_stored(vr + n * W);
        for (int i = 0; i < NR; ++i) {
            const V pb = Ops::set1(pt[c * block_rows + r0 + i]);
            for (int n = 0; n < NDV; ++n) acc[i][n] = Ops::fma(pb, vv[n], acc[i][n]);
        }
    }
    for (int i = 0; i < NR; ++i)
        for (int n = 0; n < NDV; ++n)
            Ops::store(orow + (r0 + i) * max_head_dim + d0 + n * W, acc[i][n]);
}

/// Runtime row count 1..4 to an instantiation.
template <class F>
ROPEKIT_ALWAYS_INLINE void with_nr(int nr, F&& f) noexcept {
    if (nr >= 4) return f(std::integral_constant<int, 4>{});
    if (nr == 3) return f(std::integral_constant<int, 3>{});
    if (nr == 2) return f(std::integral_constant<int, 2>{});
    f(std::integral_constant<int, 1>{});
}

/// score_decode for KB = width / NR keys at once: the KB x NR dot products are reduced
/// together by one transpose-and-add tree instead of one horizontal sum each.
template <class Ops, int NR, class KV>
ROPEKIT_ALWAYS_INLINE void score_decode_tree(const KV* kbase, std::ptrdiff_t kstride, int D,
                                             const float* qrow, float* st, int r0) noexcept {
    using V = typename Ops::vec;
    constexpr int W = Ops::width;
    constexpr int KB = W / NR;
    V acc[KB * NR];
    for (int j = 0; j < KB * NR; ++j) acc[j] = Ops::zero();
    const KV* kp[KB];
    for (int c = 0; c < KB; ++c) kp[c] = kbase + c * kstride;
    for (int d = 0; d < D; d += W) {
        V qv[NR];
        for (int i = 0; i < NR; ++i) qv[i] = Ops::load(qrow + (r0 + i) * max_head_dim + d);
        for (int c = 0; c < KB; ++c) {
            const V kv = Ops::load_stored(kp[c] + d);
            for (int i = 0; i < NR; ++i) acc[c * NR + i] = Ops::fma(qv[i], kv, acc[c * NR + i]);
        }
    }
    alignas(64) float sums[W];
    Ops::store(sums, Ops::sum_rows(acc));
    for (int c = 0; c < KB; ++c)
        for (int i = 0; i < NR; ++i) st[c * block_rows + r0 + i] = sums[c * NR + i];
}

template <class Ops, class KV>
inline void scores_decode(const KV* kbase, std::ptrdiff_t kstride, int nc, int D, const float* qrow,
                          float* st, int row_begin, int rows, bool prefetch = true) noexcept {
    const int row_end = row_begin + rows;
    for (int r0 = row_begin; r0 < row_end; r0 += 4)
        with_nr(row_end - r0, [&](auto nrc) {
            constexpr int nr = decltype(nrc)::value;
            constexpr int W = Ops::width;
            int c = 0;
            if constexpr (W >= 4 && W % nr == 0) {
                constexpr int kb = W / nr;
                if (!prefetch)
                    for (; c + kb <= nc; c += kb)
                        score_decode_tree<Ops, nr>(kbase + c * kstride, kstride, D, qrow,
                                                   st + c * block_rows, r0);
            }
            score_decode<Ops, nr>(kbase + c * kstride, kstride, nc - c, D, qrow,
                                  st + c * block_rows, r0, prefetch && r0 == row_begin);
        });
}

template <class Ops, class KV>
inline void accumulate_pv_decode(const KV* vbase, std::ptrdiff_t vstride, int nc, int D,
                                 const float* pt, const float* alpha, float* orow, int row_begin,
                                 int rows, bool prefetch = true) noexcept {
    constexpr int W = Ops::width;
    constexpr int NDV = blocking<Ops>::nv;
    const int row_end = row_begin + rows;
    for (int r0 = row_begin; r0 < row_end; r0 += 4)
        with_nr(row_end - r0, [&](auto nrc) {
            constexpr int nr = decltype(nrc)::value;
            for (int d0 = 0; d0 < D; d0 += NDV * W)
                with_nv<NDV>((D - d0) / W, [&](auto nvc) {
                    // The first pass over the rows prefetches the whole V row ahead.
                    const int pf =
                        (prefetch && r0 == row_begin && d0 == 0) ? D * int(sizeof(KV)) : 0;
                    pv_decode<Ops, nr, decltype(nvc)::value>(vbase, vstride, nc, pt, alpha, orow,
                                                             r0, d0, pf);
                });
        });
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

/// The blocked kernel for one argument set. `Pos` is no_rotation or rerope_rotation<Rule>.
template <class Arch, class KV, class Mask, class Pos>
class kernel {
  public:
    using Ops = vec_ops<Arch>;
    static constexpr int W = Ops::width;
    static constexpr int R = block_rows;
    static constexpr int C = tile_keys;
    static constexpr bool rotating = !std::is_same_v<Pos, no_rotation>;

    kernel(const head_view<const float>& q, const head_view<const KV>& k,
           const head_view<const KV>& v, const head_view<float>& o, const Mask& mask,
           const attention_params& p, const Pos& pos, attention_workspace& ws) noexcept
        : q_(q), k_(k), v_(v), o_(o), mask_(mask), p_(p), pos_(pos), ws_(ws) {
        D_ = q.head_dim;
        group_ = q.heads / k.heads;
        n_q_ = q.tokens;
        n_kv_ = k.tokens;
        q_index_offset_ = p.query_index_offset >= 0 ? p.query_index_offset : n_kv_ - n_q_;
    }

    void run(index_range heads, index_range queries, index_range keys) noexcept {
        if constexpr (rotating) prepare_rotation();
        const std::int64_t kv0 = heads.begin / group_;
        const std::int64_t kv1 = (heads.end + group_ - 1) / group_;
        const std::int64_t nq = queries.size();
        if (!rotating && W > 1 && D_ % W == 0 && nq > 0 && group_ * nq <= 8) {
            // Decode: one block spans several K/V heads, so each key tile is read token by
            // token across heads (contiguous in a [token][head][d] cache) instead of one
            // 4 KB-strided head at a time.
            const std::int64_t per_block = std::max<std::int64_t>(1, R / (group_ * nq));
            for (std::int64_t g = kv0; g < kv1; g += per_block)
                decode_block(g, std::min(kv1, g + per_block), heads, queries.begin, int(nq), keys);
            return;
        }
        for (std::int64_t kvh = kv0; kvh < kv1; ++kvh) {
            const std::int64_t g0 = std::max(heads.begin, kvh * group_);
            const std::int64_t g1 = std::min(heads.end, (kvh + 1) * group_);
            for (std::int64_t h0 = g0; h0 < g1; h0 += R) {
                const int nh = int(std::min<std::int64_t>(R, g1 - h0));
                const int tokens_per_block = R / nh;
                for (std::int64_t t0 = queries.begin; t0 < queries.end; t0 += tokens_per_block) {
                    const int nt = int(std::min<std::int64_t>(tokens_per_block, queries.end - t0));
                    block(kvh, h0, nh, t0, nt, keys);
                }
            }
        }
    }

  private:
    std::int64_t q_pos(std::int64_t t) const noexcept {
        return p_.q_positions ? p_.q_positions[t] : n_kv_ - n_q_ + t;
    }
    std::int64_t k_pos(std::int64_t j) const noexcept {
        return p_.k_positions ? p_.k_positions[j] : j;
    }

    void prepare_rotation() noexcept {
        if constexpr (rotating) {
            const rope_frequencies& f = *pos_.freqs;
            const int pairs = f.pairs();
            if constexpr (is_leaky_v<std::decay_t<decltype(pos_.rule)>>) {
                const double k = pos_.rule.k;
                for (int o = 0; o < C; ++o)
                    accurate_row(double(o) / k, f.inv_freq.data(), pairs,
                                 ws_.leaky_off + o * 2 * pairs);
            } else {
                accurate_row(double(pos_.rule.window), f.inv_freq.data(), pairs, ws_.cs_cap);
            }
        }
    }

    const float* table_row(std::int64_t position) const noexcept {
        const cos_sin_table& t = *pos_.table;
        return t.data() + (position - t.first_position()) * t.row_stride();
    }

    /// Loads the block's Q^T (scaled; rotated for ReRoPE) and zero-pads rows to full vectors.
    void load_q(std::int64_t h0, int nh, std::int64_t t0, int nt, int nrv) noexcept {
        const float scale = p_.softmax_scale;
        alignas(64) float tmp[max_head_dim];
        alignas(64) float rot[max_head_dim];
        const int rows = nh * nt;
        for (int d = 0; d < D_; ++d) {
            zero_floats(ws_.qt + d * R + rows, nrv * W - rows);
            if constexpr (rotating) zero_floats(ws_.qcap + d * R + rows, nrv * W - rows);
        }
        for (int tl = 0; tl < nt; ++tl) {
            const std::int64_t t = t0 + tl;
            ws_.tok_pos[tl] = q_pos(t);
            ws_.tok_idx[tl] = q_index_offset_ + t;
            for (int hh = 0; hh < nh; ++hh) {
                const int r = tl * nh + hh;
                const float* src = q_.at(t, h0 + hh);
                if constexpr (!rotating) {
                    for (int d = 0; d < D_; ++d) ws_.qt[d * R + r] = src[d] * scale;
                } else {
                    const rope_frequencies& f = *pos_.freqs;
                    const int pairs = f.pairs();
                    for (int d = 0; d < D_; ++d) tmp[d] = src[d] * scale;
                    rotate_head(tmp, rot, table_row(ws_.tok_pos[tl]), pairs, D_, f.layout);
                    for (int d = 0; d < D_; ++d) ws_.qt[d * R + r] = rot[d];
                    if constexpr (is_leaky_v<std::decay_t<decltype(pos_.rule)>>) {
                        // Leaky: q at (i + w (k - 1)) / k, a non-integer position.
                        if (hh == 0) {
                            const double k = pos_.rule.k;
                            const double w = double(pos_.rule.window);
                            accurate_row((double(ws_.tok_pos[tl]) + w * (k - 1.0)) / k,
                                         f.inv_freq.data(), pairs, ws_.cs_tmp);
                        }
                        rotate_head(tmp, rot, ws_.cs_tmp, pairs, D_, f.layout);
                    } else {
                        // ReRoPE: q at the window, k unrotated: relative position w.
                        rotate_head(tmp, rot, ws_.cs_cap, pairs, D_, f.layout);
                    }
                    for (int d = 0; d < D_; ++d) ws_.qcap[d * R + r] = rot[d];
                }
            }
        }
    }

    /// A K or V tile as float rows: the stored rows themselves when KV is float, else converted.
    /// `pack` copies fp32 rows too: a compact tile spans 8 pages instead of one page per row.
    const float* float_tile(const head_view<const KV>& x, std::int64_t kvh, std::int64_t c0, int nc,
                            float* buf, std::ptrdiff_t& stride, bool pack) noexcept {
        if constexpr (std::is_same_v<KV, float>) {
            if (!pack) {
                stride = x.token_stride;
                return x.at(c0, kvh);
            }
        }
        const int ds = (D_ + 15) / 16 * 16;
        for (int c = 0; c < nc; ++c) convert_row<Arch, KV>(x.at(c0 + c, kvh), buf + c * ds, D_);
        stride = ds;
        return buf;
    }

    /// Position and index bounds of the nt query tokens loaded into the workspace.
    block_bounds query_block_bounds(int nt) const noexcept {
        block_bounds qb{};
        qb.q_pos_min = qb.q_pos_max = ws_.tok_pos[0];
        for (int tl = 1; tl < nt; ++tl) {
            qb.q_pos_min = std::min(qb.q_pos_min, ws_.tok_pos[tl]);
            qb.q_pos_max = std::max(qb.q_pos_max, ws_.tok_pos[tl]);
        }
        qb.q_index_min = ws_.tok_idx[0];
        qb.q_index_max = ws_.tok_idx[nt - 1];
        return qb;
    }

    /// The key index ranges (at most 2) the mask lets this query block see within `keys`. With
    /// explicit key positions the mask cannot map positions to indices: all of `keys`, and the
    /// per-tile classification does the skipping.
    int visible_key_ranges(const block_bounds& qb, index_range keys,
                           index_range (&ranges)[2]) const noexcept {
        ranges[0] = keys;
        return p_.k_positions ? 1 : mask_.key_ranges(qb, ranges);
    }

    void block(std::int64_t kvh, std::int64_t h0, int nh, std::int64_t t0, int nt,
               index_range keys) noexcept {
        const int rows = nh * nt;
        const int nrv = (rows + W - 1) / W;
        // Few rows (decode): vectorise over head channels instead of rows, so a 16-lane vector
        // is not mostly padding; K and V rows are still read once and shared by the rows.
        decode_ = !rotating && W > 1 && D_ % W == 0 && rows <= 8;
        rows_ = rows;
        load_q(h0, nh, t0, nt, nrv);
        if (decode_) {
            for (int r = 0; r < rows; ++r)
                for (int d = 0; d < D_; ++d) ws_.kc[r * max_head_dim + d] = ws_.qt[d * R + r];
            for (int c = 0; c < C; ++c) zero_floats(ws_.st + c * R + rows, nrv * W - rows);
        }
        for (int r = 0; r < nrv * W; ++r) {
            ws_.m[r] = -std::numeric_limits<float>::infinity();
            ws_.l[r] = 0.0f;
        }
        if (decode_) {
            for (int r = 0; r < rows; ++r)
                for (int d = 0; d < D_; ++d) ws_.ot[r * max_head_dim + d] = 0.0f;
        } else {
            for (int d = 0; d < D_; ++d)
                for (int r = 0; r < nrv * W; ++r) ws_.ot[d * R + r] = 0.0f;
        }

        index_range ranges[2];
        const block_bounds qb = query_block_bounds(nt);
        const int n_ranges = visible_key_ranges(qb, keys, ranges);

        for (int ri = 0; ri < n_ranges; ++ri) {
            const std::int64_t b = std::max(ranges[ri].begin, keys.begin);
            const std::int64_t e = std::min(ranges[ri].end, keys.end);
            for (std::int64_t c0 = b; c0 < e; c0 += C) {
                const int nc = int(std::min<std::int64_t>(C, e - c0));
                tile(kvh, nh, nt, nrv, qb, c0, nc);
            }
        }
        finish(h0, nh, t0, nt);
    }

    void tile(std::int64_t kvh, int nh, int nt, int nrv, const block_bounds& qb, std::int64_t c0,
              int nc) noexcept {
        block_bounds b = qb;
        b.k_index_min = c0;
        b.k_index_max = c0 + nc - 1;
        const tile_visibility vis = classify_tile(qb, c0, nc, b);
        if (vis == tile_visibility::none) return;

        float* st = ws_.st;
        if constexpr (!rotating) {
            if (decode_) {
                scores_decode<Ops>(k_.at(c0, kvh), k_.token_stride, nc, D_, ws_.kc, st, 0, rows_);
            } else {
                prefetch_next(kvh, c0 + nc);
                std::ptrdiff_t ks = 0;
                const float* kf = float_tile(k_, kvh, c0, nc, ws_.kt, ks, pack_f32_k);
                scores<Ops>(kf, ks, nc, D_, ws_.qt, st, nrv);
            }
        } else {
            st = rerope_scores(kvh, nrv, b, c0, nc, nt, nh);
        }

        if (vis == tile_visibility::partial) {
            constexpr float ninf = -std::numeric_limits<float>::infinity();
            for (int c = 0; c < nc; ++c) {
                const std::int64_t kp = ws_.kpos[c];
                float* srow = st + c * R;
                for (int tl = 0; tl < nt; ++tl) {
                    if (!mask_.visible(ws_.tok_pos[tl], ws_.tok_idx[tl], kp, c0 + c))
                        for (int hh = 0; hh < nh; ++hh) srow[tl * nh + hh] = ninf;
                }
            }
        }
        softmax_update<Ops>(st, nc, nrv, ws_.m, ws_.l, ws_.alpha);
        if (decode_) {
            accumulate_pv_decode<Ops>(v_.at(c0, kvh), v_.token_stride, nc, D_, st, ws_.alpha,
                                      ws_.ot, 0, rows_);
        } else {
            std::ptrdiff_t vs = 0;
            const float* vf = float_tile(v_, kvh, c0, nc, ws_.vt, vs, pack_f32_v);
            accumulate_pv<Ops>(vf, vs, nc, D_, st, ws_.alpha, ws_.ot, nrv);
        }
    }

    /// Asks for the next tile's K and V rows now. With a [token][head][d] cache every key row
    /// of one head sits on its own 4 KB page (8 heads x 128 x 4 bytes), where hardware
    /// prefetchers stop, so without this decode waits on memory latency instead of bandwidth.
    void prefetch_next(std::int64_t kvh, std::int64_t c_next) const noexcept {
#if defined(__GNUC__) || defined(__clang__)
        const std::int64_t c_end = std::min<std::int64_t>(c_next + C, k_.tokens);
        const int bytes = D_ * int(sizeof(KV));
        for (std::int64_t c = c_next; c < c_end; ++c) {
            const char* kr = reinterpret_cast<const char*>(k_.at(c, kvh));
            const char* vr = reinterpret_cast<const char*>(v_.at(c, kvh));
            for (int off = 0; off < bytes; off += 64) {
                __builtin_prefetch(kr + off, 0, 2);
                __builtin_prefetch(vr + off, 0, 2);
            }
        }
#else
        (void)kvh, (void)c_next;
#endif
    }

    /// ReRoPE scores of one tile, chosen per tile: distances all below the window use the
    /// ordinary rotation, all at or beyond it the capped one, and only tiles that straddle the
    /// window edge compute both and select per element. Returns the score tile.
    float* rerope_scores(std::int64_t kvh, int nrv, const block_bounds& b, std::int64_t c0, int nc,
                         int nt, int nh) noexcept {
        if constexpr (rotating) {
            const rope_frequencies& f = *pos_.freqs;
            const int pairs = f.pairs();
            const std::int64_t w = pos_.rule.window;
            const std::int64_t dmin = b.q_pos_min - b.k_pos_max;
            const std::int64_t dmax = b.q_pos_max - b.k_pos_min;
            const bool need_ord = dmin < w;
            const bool need_cap = dmax >= w;
            alignas(64) float raw[max_head_dim];
            const float* kraw_base = nullptr;
            std::ptrdiff_t kraw_stride = 0;
            if constexpr (std::is_same_v<KV, float>) {
                kraw_base = k_.at(c0, kvh);
                kraw_stride = k_.token_stride;
            }
            auto raw_row = [&](int c) -> const float* {
                if constexpr (std::is_same_v<KV, float>) {
                    return kraw_base + c * kraw_stride;
                } else {
                    convert_row<Arch, KV>(k_.at(c0 + c, kvh), raw, D_);
                    return raw;
                }
            };
            constexpr bool leaky = is_leaky_v<std::decay_t<decltype(pos_.rule)>>;
            if (need_ord) {
                for (int c = 0; c < nc; ++c)
                    rotate_head(raw_row(c), ws_.kt + c * max_head_dim, table_row(ws_.kpos[c]),
                                pairs, D_, f.layout);
                scores<Ops>(ws_.kt, max_head_dim, nc, D_, ws_.qt, ws_.st, nrv);
            }
            if (need_cap) {
                const float* kc = nullptr;
                std::ptrdiff_t kcs = max_head_dim;
                if constexpr (leaky) {
                    // k at j / k: the tile base angle composed with the per-call offset table.
                    const double kk = pos_.rule.k;
                    accurate_row(double(b.k_pos_min) / kk, f.inv_freq.data(), pairs, ws_.cs_tmp);
                    alignas(64) float cs[max_head_dim];
                    for (int c = 0; c < nc; ++c) {
                        const std::int64_t off = ws_.kpos[c] - b.k_pos_min;
                        if (off < C)
                            compose_rows(ws_.cs_tmp, ws_.leaky_off + off * 2 * pairs, pairs, cs);
                        else
                            accurate_row(double(ws_.kpos[c]) / kk, f.inv_freq.data(), pairs, cs);
                        rotate_head(raw_row(c), ws_.kc + c * max_head_dim, cs, pairs, D_, f.layout);
                    }
                    kc = ws_.kc;
                } else {
                    if constexpr (std::is_same_v<KV, float>) {
                        kc = kraw_base;
                        kcs = kraw_stride;
                    } else {
                        for (int c = 0; c < nc; ++c)
                            convert_row<Arch, KV>(k_.at(c0 + c, kvh), ws_.kc + c * max_head_dim,
                                                  D_);
                        kc = ws_.kc;
                    }
                }
                scores<Ops>(kc, kcs, nc, D_, ws_.qcap, ws_.st2, nrv);
            }
            if (!need_ord) return ws_.st2;
            if (!need_cap) return ws_.st;
            for (int c = 0; c < nc; ++c) {
                float* s1 = ws_.st + c * R;
                const float* s2 = ws_.st2 + c * R;
                for (int tl = 0; tl < nt; ++tl) {
                    if (ws_.tok_pos[tl] - ws_.kpos[c] >= w)
                        for (int hh = 0; hh < nh; ++hh) s1[tl * nh + hh] = s2[tl * nh + hh];
                }
            }
            return ws_.st;
        } else {
            (void)kvh, (void)nrv, (void)b, (void)c0, (void)nc, (void)nt, (void)nh;
            return ws_.st;
        }
    }

    /// Decode block: query tokens [t0, t0 + nt) of the heads of K/V heads [g0, g1) within
    /// `heads`. Rows are grouped by K/V head (segment), then token, then head.
    void decode_block(std::int64_t g0, std::int64_t g1, index_range heads, std::int64_t t0, int nt,
                      index_range keys) noexcept {
        decode_ = true;
        int seg_r0[R], seg_nh[R];
        std::int64_t seg_g[R], seg_h0[R];
        int nseg = 0, rows = 0;
        for (std::int64_t g = g0; g < g1; ++g) {
            const std::int64_t h0 = std::max(heads.begin, g * group_);
            const std::int64_t h1 = std::min(heads.end, (g + 1) * group_);
            if (h1 <= h0) continue;
            seg_g[nseg] = g;
            seg_h0[nseg] = h0;
            seg_nh[nseg] = int(h1 - h0);
            seg_r0[nseg] = rows;
            rows += nt * seg_nh[nseg];
            ++nseg;
        }
        const int nrv = (rows + W - 1) / W;
        const float scale = p_.softmax_scale;
        for (int tl = 0; tl < nt; ++tl) {
            ws_.tok_pos[tl] = q_pos(t0 + tl);
            ws_.tok_idx[tl] = q_index_offset_ + t0 + tl;
        }
        for (int sg = 0; sg < nseg; ++sg)
            for (int tl = 0; tl < nt; ++tl)
                for (int hh = 0; hh < seg_nh[sg]; ++hh) {
                    const int r = seg_r0[sg] + tl * seg_nh[sg] + hh;
                    const float* src = q_.at(t0 + tl, seg_h0[sg] + hh);
                    for (int d = 0; d < D_; ++d) {
                        ws_.kc[r * max_head_dim + d] = src[d] * scale;
                        ws_.ot[r * max_head_dim + d] = 0.0f;
                    }
                }
        for (int r = 0; r < nrv * W; ++r) {
            ws_.m[r] = -std::numeric_limits<float>::infinity();
            ws_.l[r] = 0.0f;
        }
        for (int c = 0; c < C; ++c) zero_floats(ws_.st + c * R + rows, nrv * W - rows);

        index_range ranges[2];
        const block_bounds qb = query_block_bounds(nt);
        const int n_ranges = visible_key_ranges(qb, keys, ranges);
        constexpr float ninf = -std::numeric_limits<float>::infinity();
        // Bytes of one token's K (or V) row over the block's K/V heads: contiguous in a
        // [token][head][d] cache, so prefetching whole token rows ahead turns the walk into one
        // sequential stream per tensor (the per-head walk below jumps a page per key).
        const std::ptrdiff_t span_k =
            std::ptrdiff_t(sizeof(KV)) * ((seg_g[nseg - 1] - seg_g[0]) * k_.head_stride + D_);
        const std::ptrdiff_t span_v =
            std::ptrdiff_t(sizeof(KV)) * ((seg_g[nseg - 1] - seg_g[0]) * v_.head_stride + D_);
        for (int ri = 0; ri < n_ranges; ++ri) {
            const std::int64_t b = std::max(ranges[ri].begin, keys.begin);
            const std::int64_t e = std::min(ranges[ri].end, keys.end);
            // One chunk of keys at a time, scores then softmax then P V, so K and V of a chunk
            // are read together and both streams are prefetched the same distance ahead.
            for (std::int64_t c0 = b; c0 < e; c0 += decode_chunk) {
                const int nc = int(std::min<std::int64_t>(decode_chunk, e - c0));
                const std::int64_t pf_end =
                    std::min<std::int64_t>(e, c0 + nc + decode_prefetch_keys);
                for (std::int64_t c = c0 == b ? b : c0 + decode_prefetch_keys; c < pf_end; ++c) {
                    prefetch_bytes(k_.at(c, seg_g[0]), span_k);
                    prefetch_bytes(v_.at(c, seg_g[0]), span_v);
                }
                block_bounds bb;
                const tile_visibility vis = classify_tile(qb, c0, nc, bb);
                if (vis == tile_visibility::none) continue;
                for (int sg = 0; sg < nseg; ++sg)
                    scores_decode<Ops>(k_.at(c0, seg_g[sg]), k_.token_stride, nc, D_, ws_.kc,
                                       ws_.st, seg_r0[sg], nt * seg_nh[sg], false);
                if (vis == tile_visibility::partial) {
                    for (int c = 0; c < nc; ++c)
                        for (int tl = 0; tl < nt; ++tl) {
                            if (mask_.visible(ws_.tok_pos[tl], ws_.tok_idx[tl], ws_.kpos[c],
                                              c0 + c))
                                continue;
                            for (int sg = 0; sg < nseg; ++sg)
                                for (int hh = 0; hh < seg_nh[sg]; ++hh)
                                    ws_.st[c * R + seg_r0[sg] + tl * seg_nh[sg] + hh] = ninf;
                        }
                }
                softmax_update<Ops>(ws_.st, nc, nrv, ws_.m, ws_.l, ws_.alpha);
                for (int sg = 0; sg < nseg; ++sg)
                    accumulate_pv_decode<Ops>(v_.at(c0, seg_g[sg]), v_.token_stride, nc, D_, ws_.st,
                                              ws_.alpha, ws_.ot, seg_r0[sg], nt * seg_nh[sg],
                                              false);
            }
        }
        for (int sg = 0; sg < nseg; ++sg)
            for (int tl = 0; tl < nt; ++tl)
                for (int hh = 0; hh < seg_nh[sg]; ++hh)
                    finish_row(t0 + tl, seg_h0[sg] + hh, seg_r0[sg] + tl * seg_nh[sg] + hh);
    }

    /// Key positions of tile [c0, c0 + nc) into ws_.kpos and the mask's verdict on it.
    tile_visibility classify_tile(const block_bounds& qb, std::int64_t c0, int nc,
                                  block_bounds& b) noexcept {
        b = qb;
        b.k_index_min = c0;
        b.k_index_max = c0 + nc - 1;
        if (p_.k_positions) {
            b.k_pos_min = b.k_pos_max = p_.k_positions[c0];
            for (int c = 0; c < nc; ++c) {
                ws_.kpos[c] = p_.k_positions[c0 + c];
                b.k_pos_min = std::min(b.k_pos_min, ws_.kpos[c]);
                b.k_pos_max = std::max(b.k_pos_max, ws_.kpos[c]);
            }
        } else {
            for (int c = 0; c < nc; ++c) ws_.kpos[c] = c0 + c;
            b.k_pos_min = c0;
            b.k_pos_max = c0 + nc - 1;
        }
        return mask_.classify(b);
    }

    void finish(std::int64_t h0, int nh, std::int64_t t0, int nt) noexcept {
        for (int tl = 0; tl < nt; ++tl)
            for (int hh = 0; hh < nh; ++hh) finish_row(t0 + tl, h0 + hh, tl * nh + hh);
    }

    /// Normalises row r (query token t, head h), adds the learned sink, writes O and LSE.
    void finish_row(std::int64_t t, std::int64_t h, int r) noexcept {
        {
            {
                double m = ws_.m[r];
                double l = ws_.l[r];
                double o_scale = 0.0;
                if (p_.sink_logits) {
                    // gpt-oss sink: joins the max and the denominator, never the numerator.
                    const double s = p_.sink_logits[h];
                    const double mm = std::max(m, s);
                    const double keep = l > 0.0 ? std::exp(m - mm) : 0.0;
                    l = l * keep + std::exp(s - mm);
                    o_scale = keep / l;
                    m = mm;
                } else if (l > 0.0) {
                    o_scale = 1.0 / l;
                }
                float* out = o_.at(t, h);
                const float os = float(o_scale);
                if (decode_)
                    for (int d = 0; d < D_; ++d) out[d] = ws_.ot[r * max_head_dim + d] * os;
                else
                    for (int d = 0; d < D_; ++d) out[d] = ws_.ot[d * R + r] * os;
                if (p_.lse) {
                    p_.lse[t * q_.heads + h] =
                        l > 0.0 ? float(m + std::log(l)) : -std::numeric_limits<float>::infinity();
                }
            }
        }
    }

    head_view<const float> q_;
    head_view<const KV> k_, v_;
    head_view<float> o_;
    const Mask& mask_;
    const attention_params& p_;
    const Pos& pos_;
    attention_workspace& ws_;
    int D_ = 0;
    int rows_ = 0;
    bool decode_ = false;
    std::int64_t group_ = 1, n_q_ = 0, n_kv_ = 0, q_index_offset_ = 0;
};

}  // namespace detail::attn
}  // namespace ropekit

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
