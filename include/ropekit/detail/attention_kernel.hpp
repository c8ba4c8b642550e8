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
#include <optional>
#include <type_traits>

#include "../config.hpp"
#include "../error.hpp"
#include "../layout.hpp"
#include "../mask.hpp"
#include "../position_rules.hpp"
#include "../rope.hpp"
#include "../storage.hpp"
#include "../table.hpp"
#include "../view.hpp"
#include "attention_rules.hpp"
#include "attention_simd.hpp"
#include "rope_kernels.hpp"
#if ROPEKIT_HAS_XSIMD
#include "simd_storage.hpp"
#endif

// See attention_simd.hpp: GCC 12 false positives inside inlined AVX-512 intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

ROPEKIT_BEGIN_NAMESPACE

namespace detail {
/// The common part of head_range, query_range and key_range: [begin, end).
struct range_base {
    std::int64_t begin = 0;  ///< first index
    std::int64_t end = 0;    ///< one past the last index
    /// Number of indices (0 when empty; at most INT64_MAX), computed without overflow: the hot
    /// entry points ask it of ranges they have not checked yet (see index_range::size).
    constexpr std::int64_t size() const noexcept { return indices().size(); }
    /// The same range as a plain index_range (what mask policies use).
    constexpr index_range indices() const noexcept { return {begin, end}; }
};
}  // namespace detail

/// Query heads [begin, end) of an attention call. The three range types are distinct and
/// their constructors explicit, so passing queries where heads are expected (or `{0, n}` for
/// any of them) does not compile: the kernels' argument order cannot be swapped silently.
struct head_range : detail::range_base {
    /// Empty range.
    constexpr head_range() noexcept = default;
    /// Heads [begin, end).
    constexpr explicit head_range(std::int64_t begin, std::int64_t end) noexcept
        : range_base{begin, end} {}
};

/// Query tokens [begin, end) of an attention call (rows of Q and O). See head_range.
struct query_range : detail::range_base {
    /// Empty range.
    constexpr query_range() noexcept = default;
    /// Query tokens [begin, end).
    constexpr explicit query_range(std::int64_t begin, std::int64_t end) noexcept
        : range_base{begin, end} {}
};

/// Keys [begin, end) of an attention call (rows of K and V). See head_range.
struct key_range : detail::range_base {
    /// Empty range.
    constexpr key_range() noexcept = default;
    /// Keys [begin, end).
    constexpr explicit key_range(std::int64_t begin, std::int64_t end) noexcept
        : range_base{begin, end} {}
};

/// Everything besides the tensors and the mask.
///
/// The softmax scale comes from the model's frequencies: for_model(freqs) (or the constructor
/// from rope_frequencies) sets `1/sqrt(head_dim) * freqs.logit_scale()`, so YaRN / LongRoPE's
/// attention factor cannot be forgotten (forgetting it moved a real model's NLL by up to 0.03
/// nats and looked plausible). with_scaling() replaces the `1/sqrt(head_dim)` part (Gemma's
/// query_pre_attn_scalar) and keeps the factor; with_softmax_scale() sets the whole scale for a
/// model without RoPE. There is no default constructor: a zero scale cannot be built.
class attention_params {
  public:
    /// Deleted: build the parameters from the model's frequencies,
    /// `attention_params::for_model(freqs)`, or set the whole scale explicitly,
    /// `attention_params::with_softmax_scale(s)` (models without RoPE).
    attention_params() = delete;

    /// Same as for_model(freqs).
    ROPEKIT_ALWAYS_INLINE explicit attention_params(const rope_frequencies& freqs)
        : attention_params(for_model(freqs)) {}

    /// Softmax scale `logit_scale() / sqrt(head_dim)` of the model whose frequencies are
    /// `freqs` (HF's `scaling = head_dim ** -0.5`, times attention_factor^2 for the cos/sin
    /// scaling of q and k). Throws ropekit::error unless `freqs.validate()` passes.
    ROPEKIT_ALWAYS_INLINE static attention_params for_model(const rope_frequencies& freqs) {
        freqs.validate();
        return attention_params(1.0 / std::sqrt(double(freqs.head_dim)), freqs.logit_scale(),
                                freqs.head_dim);
    }

    /// The whole softmax scale, explicitly: for a model without RoPE, or whose q already carries
    /// the attention factor. logit_scale() is then 1, so rerope_attention (which knows the
    /// frequencies) rejects it for frequencies with an attention factor. Throws ropekit::error
    /// unless `softmax_scale` is finite and > 0.
    ROPEKIT_ALWAYS_INLINE static attention_params with_softmax_scale(double softmax_scale) {
        detail::require_positive_f32(softmax_scale, "softmax_scale");
        return attention_params(softmax_scale, 1.0, 0);
    }

    /// A copy whose `1/sqrt(head_dim)` part is `scaling` (HF's `self.scaling`, e.g. Gemma's
    /// `query_pre_attn_scalar ** -0.5`); the attention factor (logit_scale()) is kept. Throws
    /// ropekit::error unless `scaling` and the resulting scale are > 0 and finite in float32.
    ROPEKIT_ALWAYS_INLINE attention_params with_scaling(double scaling) const {
        detail::require_positive_f32(scaling, "scaling");
        attention_params p = *this;
        p.set(scaling, logit_scale_);
        return p;
    }

    /// What multiplies q.k before the softmax: scaling() * logit_scale(), finite and > 0.
    ROPEKIT_ALWAYS_INLINE float softmax_scale() const noexcept { return softmax_scale_; }
    /// The `1/sqrt(head_dim)` part of the scale (or the whole explicit scale).
    ROPEKIT_ALWAYS_INLINE double scaling() const noexcept { return scaling_; }
    /// The frequencies' attention factor squared (1 for with_softmax_scale()).
    ROPEKIT_ALWAYS_INLINE double logit_scale() const noexcept { return logit_scale_; }
    /// head_dim of the frequencies the parameters were built from (0 for with_softmax_scale()):
    /// the front doors check it against the views.
    ROPEKIT_ALWAYS_INLINE int head_dim() const noexcept { return head_dim_; }

    /// Position of each query token (the same type the rotary kernels take: contiguous, int32
    /// or int64 ids, constant; not table_rows()). Unset: `n_kv - n_q + t`, the causal suffix.
    std::optional<positions> q_positions{};
    /// Position of each key token. Unset: the key index j. Key-range skipping (constant cost
    /// for sinks + window) is available when key positions equal the key indices (unset or
    /// contiguous(0)).
    std::optional<positions> k_positions{};
    /// Row of query token 0 in the key sequence, for index-based masks (sinks, parallel context
    /// windows): query t is row `query_index_offset + t`. Negative: `n_kv - n_q`.
    std::int64_t query_index_offset = -1;
    /// gpt-oss learned sink logits, one per *query* head (indexed by the query head, which is
    /// `kv_head * group + g`), in the units of the scaled scores. Null: no sink. The kernel adds
    /// them once per row at finalisation: they join the maximum and the denominator, never the
    /// numerator. A sink of -inf is no sink (a row that sees no key then returns zeros). With
    /// split keys pass them to merge_attention, not to the partial calls.
    const float* sink_logits = nullptr;
    /// Optional output: log-sum-exp of each row's scaled scores (including the sink when one is
    /// given), laid out `[n_q][n_heads]` contiguous. -inf for a row that sees no key and has no
    /// sink. With logit_softcap, of the capped scores (what merge_attention then combines).
    float* lse = nullptr;
    /// Logit soft-capping (Gemma 2 `attn_logit_softcapping`): each scaled score s becomes
    /// `cap * tanh(s / cap)` before the mask and the sink logits, as HF's eager attention does
    /// (scores * scaling, then / cap, tanh, * cap, then + mask). 0: no cap; otherwise a normal
    /// float32 (>= 1.1754943508222875e-38: the kernels multiply by 1/cap) and finite.
    float logit_softcap = 0.0f;

  private:
    ROPEKIT_ALWAYS_INLINE attention_params(double scaling, double logit_scale, int head_dim) {
        head_dim_ = head_dim;
        set(scaling, logit_scale);
    }
    ROPEKIT_ALWAYS_INLINE void set(double scaling, double logit_scale) {
        // Checked before the cast: a double beyond float32 converts with undefined behaviour.
        detail::require(detail::positive_f32(scaling * logit_scale), "softmax_scale",
                        "(scaling * logit_scale) must be > 0 and finite in float32",
                        scaling * logit_scale);
        const float s = float(scaling * logit_scale);
        scaling_ = scaling;
        logit_scale_ = logit_scale;
        softmax_scale_ = s;
    }
    double scaling_ = 0.0;
    double logit_scale_ = 1.0;
    float softmax_scale_ = 0.0f;
    int head_dim_ = 0;
};

namespace detail::attn {

/// Largest head_dim (of q / k, and of v / o) the fixed-size tiles hold: 576 is absorbed MLA's
/// decode (DeepSeek V2 / V3: q and k are the 512-channel latent plus 64 rotary channels, v the
/// latent). Rows of the tiles keep their compile-time strides, so a smaller head only touches
/// the first part of each tile.
constexpr int max_head_dim = 576;
/// Largest head_dim of the position-rule kernels and the sink cache, which rotate q and k with
/// fixed-size cos|sin rows (and require equal q / k / v head sizes).
constexpr int max_rule_head_dim = 256;
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
constexpr int max_pairs = max_rule_head_dim / 2;

}  // namespace detail::attn

/// Scratch memory of one attention call on one thread: every tile the kernel touches. Allocate
/// one per worker thread (it is about 1 MB: `sizeof(attention_workspace)`) and reuse it; the
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
    alignas(64) float leaky_off[C * 2 * detail::attn::max_pairs];  // leaky ReRoPE: offsets o/k
    alignas(64) float cs_tmp[2 * detail::attn::max_pairs];
    alignas(64) float cs_cap[2 * detail::attn::max_pairs];  // ReRoPE: cos|sin at the window
    std::int64_t tok_pos[R], tok_idx[R];
    std::int64_t kpos[C];
    /// \endcond
};

namespace detail::attn {

/// Rotates one head by a cos|sin row (pairs cosines then pairs sines), into `out`; channels
/// past rotary_dim are copied. The rotation is the rope kernels' own (rope_kernels.hpp), in
/// place on the copy: vectorised for NeoX, which GCC 12 -O2 would not do for a loop with a
/// runtime trip count (ReRoPE rotates every key of every tile, Leaky ReRoPE twice).
template <class Arch>
inline void rotate_head(const float* ROPEKIT_RESTRICT x, float* ROPEKIT_RESTRICT out,
                        const float* cs, int pairs, int head_dim, rope_layout layout) noexcept {
    std::memcpy(out, x, std::size_t(head_dim) * sizeof(float));
    const float* c = cs;
    const float* s = cs + pairs;
    if (layout == rope_layout::neox)
        rotate_neox_pairs<Arch, float>(out, out + pairs, c, s, pairs);
    else
        rotate_gptj_scalar<Arch, float>(out, c, s, pairs);
}

/// cos|sin of a + b from the rows of a and b (angle addition).
template <class Ops>
ROPEKIT_ALWAYS_INLINE void compose_rows(const float* a, const float* b, int pairs,
                                        float* ROPEKIT_RESTRICT out) noexcept {
    constexpr int W = Ops::width;
    int i = 0;
    for (; i + W <= pairs; i += W) {
        const auto ca = Ops::loadu(a + i), sa = Ops::loadu(a + pairs + i);
        const auto cb = Ops::loadu(b + i), sb = Ops::loadu(b + pairs + i);
        Ops::storeu(out + i, ca * cb - sa * sb);
        Ops::storeu(out + pairs + i, Ops::fma(sa, cb, ca * sb));
    }
    for (; i < pairs; ++i) {
        const float ca = a[i], sa = a[pairs + i], cb = b[i], sb = b[pairs + i];
        out[i] = ca * cb - sa * sb;
        out[pairs + i] = sa * cb + ca * sb;
    }
}

/// Converts `n` stored values to float (for block_q8_0: n / 32 blocks, n a multiple of 32).
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE void convert_row(const T* ROPEKIT_RESTRICT src, float* ROPEKIT_RESTRICT dst,
                                       int n) noexcept {
    if constexpr (std::is_same_v<T, block_q8_0>) {
#if ROPEKIT_HAS_XSIMD
        if constexpr (!std::is_same_v<Arch, scalar_arch>) {
            constexpr int W = int(xsimd::batch<float, Arch>::size);
            for (int d = 0; d < n; d += W)
                simd::load_q8_0<Arch>(src + d / q8_0_block_values, d % q8_0_block_values)
                    .store_unaligned(dst + d);
            return;
        }
#endif
        dequantize_q8_0(src, dst, n);
        return;
    } else {
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
}

/// The query positions a call uses: attention_params::q_positions, or the causal suffix
/// `n_kv - n_q + t`.
inline positions resolved_q_positions(const attention_params& p, std::int64_t n_q,
                                      std::int64_t n_kv) noexcept {
    return p.q_positions ? *p.q_positions : positions::contiguous(n_kv - n_q);
}
/// The key positions a call uses: attention_params::k_positions, or the key index.
inline positions resolved_k_positions(const attention_params& p) noexcept {
    return p.k_positions ? *p.k_positions : positions::contiguous(0);
}
/// Whether the kernels can use `pos` (hot-path check): not table_rows(), ids not null when
/// `read` (the call reads positions: its range of tokens is not empty), as attention() checks.
inline bool positions_usable(const positions& pos, bool read) noexcept {
    switch (pos.which()) {
        case positions::kind::ids32:
        case positions::kind::ids64:
            return !read || pos.id_data() != nullptr;
        case positions::kind::table_rows:
            return false;
        default:
            return true;
    }
}

/// Positions of tokens [t0, t0 + n) into `out` as int64: one switch on the kind per call (per
/// tile or query block), then a branch-free loop, so the inner loops never look at the kind.
template <class Arch>
inline void fill_positions(const positions& pos, std::int64_t t0, int n,
                           std::int64_t* ROPEKIT_RESTRICT out) noexcept {
    switch (pos.which()) {
        case positions::kind::ids32: {
            const std::int32_t* ids = static_cast<const std::int32_t*>(pos.id_data()) + t0;
            for (int i = 0; i < n; ++i) out[i] = ids[i];
            return;
        }
        case positions::kind::ids64: {
            const std::int64_t* ids = static_cast<const std::int64_t*>(pos.id_data()) + t0;
            for (int i = 0; i < n; ++i) out[i] = ids[i];
            return;
        }
        case positions::kind::constant: {
            const std::int64_t v = pos.at(0);
            for (int i = 0; i < n; ++i) out[i] = v;
            return;
        }
        default: {  // contiguous (table_rows is rejected at entry; it would be the same)
            const std::int64_t first = pos.at(t0);
            for (int i = 0; i < n; ++i) out[i] = first + i;
            return;
        }
    }
}

/// Smallest and largest position of tokens [t0, t1), t0 < t1 (O(1) unless ids).
template <class Arch>
inline void position_bounds(const positions& pos, std::int64_t t0, std::int64_t t1,
                            std::int64_t& lo, std::int64_t& hi) noexcept {
    switch (pos.which()) {
        case positions::kind::ids32:
        case positions::kind::ids64:
            lo = hi = pos.at(t0);
            for (std::int64_t t = t0 + 1; t < t1; ++t) {
                const std::int64_t x = pos.at(t);
                lo = std::min(lo, x);
                hi = std::max(hi, x);
            }
            return;
        case positions::kind::constant:
            lo = hi = pos.at(0);
            return;
        default:
            lo = pos.at(t0);
            hi = pos.at(t1 - 1);
            return;
    }
}

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
/// to float (dequantised for block_q8_0); P = 2 (bfloat16 only), 2 x width values as their even
/// and odd elements (vec_ops::load_bf16_pairs).
template <class Ops, int P, class KV>
ROPEKIT_ALWAYS_INLINE void load_kv(const KV* row, int d, typename Ops::vec* out) noexcept {
    if constexpr (std::is_same_v<KV, block_q8_0>) {
        static_assert(P == 1, "q8_0 blocks are read one vector at a time");
        out[0] = Ops::load_q8_0(row + d / q8_0_block_values, d % q8_0_block_values);
    } else if constexpr (P == 2) {
        Ops::load_bf16_pairs(row + d, out[0], out[1]);
    } else {
        out[0] = Ops::load_stored(row + d);
    }
    ROPEKIT_UNROLL
    for (int i = 0; i < P; ++i) Ops::in_register(out[i]);
}

/// Bytes of a row of `values` values of KV (a multiple of 32 for block_q8_0).
template <class KV>
constexpr int row_bytes(int values) noexcept {
    return values / values_per_element_v<KV> * int(sizeof(KV));
}

/// prefetch_l2 of the element holding value `d` of `row`, `offset` elements ahead. A q8_0 block
/// (34 bytes) is asked for once, at its first value: one hint per vector would issue 4 to 8
/// prefetches per cache line.
template <class KV>
ROPEKIT_ALWAYS_INLINE void prefetch_kv(const KV* row, int d, std::ptrdiff_t offset) noexcept {
    if constexpr (std::is_same_v<KV, block_q8_0>) {
        if (d % q8_0_block_values == 0) prefetch_l2(row + d / q8_0_block_values, offset);
    } else {
        prefetch_l2(row + d, offset);
    }
}

/// prefetch_l2 of q8_0 block `b`, and with `last` of its last byte too. Block starts are 34
/// bytes apart, so hinting each block's start reaches every cache line of a row but, at some
/// alignments, the one holding the row's last bytes: the last block also hints its end.
ROPEKIT_ALWAYS_INLINE void prefetch_q8_0(const block_q8_0* b, bool last,
                                         std::ptrdiff_t offset) noexcept {
    prefetch_l2(b, offset);
    if (last)
        prefetch_l2(reinterpret_cast<const char*>(b) + sizeof(block_q8_0) - 1,
                    offset * std::ptrdiff_t(sizeof(block_q8_0)));
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
    if constexpr (std::is_same_v<KV, block_q8_0>) {
        // One block at a time, its scale widened once per key (a half -> float conversion and
        // a broadcast per vector cost more than the FMAs the vector feeds).
        constexpr int VB = q8_0_block_values / W;
        static_assert(VB >= 1 && q8_0_block_values % W == 0, "whole vectors per block");
        for (int d = 0; d < D; d += q8_0_block_values) {
            const int b = d / q8_0_block_values;
            V sc[KB];
            ROPEKIT_UNROLL
            for (int c = 0; c < KB; ++c) {
                if (prefetch_offset != 0)
                    prefetch_q8_0(kp[c] + b, d + q8_0_block_values == D, prefetch_offset);
                sc[c] = Ops::q8_0_scale(kp[c] + b);
            }
            ROPEKIT_UNROLL
            for (int u = 0; u < VB; ++u) {
                V qv[NR];
                ROPEKIT_UNROLL
                for (int i = 0; i < NR; ++i) qv[i] = Ops::load(q + i * RS + d + u * W);
                ROPEKIT_UNROLL
                for (int c = 0; c < KB; ++c) {
                    const V kv = Ops::load_q8_0_ints(kp[c] + b, u * W) * sc[c];
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
            if (prefetch_offset != 0) prefetch_kv(kp[c], d, prefetch_offset);
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
            if (prefetch_offset != 0) prefetch_kv(kr, d, prefetch_offset);
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
        constexpr int VB = q8_0_block_values / W;  // (q8_0) vectors per block
        if constexpr (std::is_same_v<KV, block_q8_0> && NDV % VB == 0) {
            // Whole blocks (d0 is then a multiple of 32): each block's scale widened once.
            ROPEKIT_UNROLL
            for (int nb = 0; nb < NDV / VB; ++nb) {
                const KV* blk = vr + d0 / q8_0_block_values + nb;
                if (prefetch_offset != 0) prefetch_q8_0(blk, true, prefetch_offset);
                const V sc = Ops::q8_0_scale(blk);
                ROPEKIT_UNROLL
                for (int u = 0; u < VB; ++u) vv[nb * VB + u] = Ops::load_q8_0_ints(blk, u * W) * sc;
            }
        } else if constexpr (std::is_same_v<KV, block_q8_0> && VB % NDV == 0) {
            // The pass lies inside one block (d0 is a multiple of NDV * W): one scale.
            const KV* blk = vr + d0 / q8_0_block_values;
            const int j0 = d0 % q8_0_block_values;
            if (prefetch_offset != 0 && j0 == 0) prefetch_q8_0(blk, true, prefetch_offset);
            const V sc = Ops::q8_0_scale(blk);
            ROPEKIT_UNROLL
            for (int n = 0; n < NDV; ++n) vv[n] = Ops::load_q8_0_ints(blk, j0 + n * W) * sc;
        } else {
            ROPEKIT_UNROLL
            for (int n = 0; n < NDV; n += P) {
                if (prefetch_offset != 0) prefetch_kv(vr, d0 + n * W, prefetch_offset);
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

/// The blocked kernel for one argument set. `Pos` is no_rotation or rule_rotation<Rule>
/// (attention_rules.hpp): with a rule, every tile computes the near product, the far one, or
/// (only on the band around the window edge) both, selected per element.
template <class Arch, class KV, class Mask, class Pos>
class kernel {
  public:
    using Ops = vec_ops<Arch>;
    static constexpr int W = Ops::width;
    static constexpr int R = block_rows;
    static constexpr int C = tile_keys;
    using traits = pos_traits<Pos>;
    /// A rule is fused (the name predates rules whose inputs arrive rotated).
    static constexpr bool rotating = traits::rule;
    /// Few rows use the decode form: without a rule, or with a rule whose inputs arrive rotated
    /// (StreamingLLM: the far q is a second set of q rows, K is read as given).
    static constexpr bool decode_form = !rotating || !traits::rotate_inputs;
    /// 16 registers (AVX2, SSE2), no rule: up to max_group consecutive query blocks of one K/V
    /// head share each K/V tile pass (block_group). Measured on a Zen 3 VM that reads L3 at
    /// ~6 GB/s per core, causal prefill, head_dim 128: with one 64-row block per pass, 40% of
    /// the time at n 4096 (30% at n 1024) went to the K / V tile copies waiting on memory;
    /// groups of 4 took 36-48% off the time at n 4096 and 15-20% at n 1024 (fp32 and bf16).
    static constexpr bool grouped = !rotating && Ops::registers < 32 && W > 1;
    /// Query blocks per group: 4 x 64 rows; their Q^T and O^T (head_dim 128: 256 KB) and the
    /// K / V tiles stay in a 512 KB L2.
    static constexpr int max_group = 4;

    kernel(const head_view<const float>& q, const head_view<const KV>& k,
           const head_view<const KV>& v, const head_view<float>& o, const Mask& mask,
           const attention_params& p, const Pos& pos, attention_workspace& ws) noexcept
        : q_(q),
          k_(k),
          v_(v),
          o_(o),
          mask_(mask),
          p_(p),
          pos_(pos),
          ws_(ws),
          q_src_(resolved_q_positions(p, q.tokens, k.tokens)),
          k_src_(resolved_k_positions(p)) {
        D_ = q.head_dim;
        Dv_ = v.head_dim;
        rs_ = std::max(D_, Dv_) <= decode_row_stride_small ? decode_row_stride_small : max_head_dim;
        softcap_ = p.logit_softcap > 0.0f;
        cap_ = p.logit_softcap;
        inv_cap_ = softcap_ ? 1.0f / p.logit_softcap : 0.0f;
        group_ = q.heads / k.heads;
        n_q_ = q.tokens;
        n_kv_ = k.tokens;
        q_index_offset_ = p.query_index_offset >= 0 ? p.query_index_offset : n_kv_ - n_q_;
        k_is_index_ = k_src_.which() == positions::kind::contiguous && k_src_.at(0) == 0;
    }

    void run(index_range heads, index_range queries, index_range keys) noexcept {
        if constexpr (rotating) prepare_rotation();
        const std::int64_t kv0 = heads.begin / group_;
        const std::int64_t kv1 = (heads.end + group_ - 1) / group_;
        const std::int64_t nq = queries.size();
        // The decode form exists only without in-kernel rotation of K and with vectors (a
        // constexpr guard: rules with unrotated inputs and scalar kernels never instantiate it).
        if constexpr (decode_form && W > 1) {
            if (D_ % W == 0 && Dv_ % W == 0 && nq > 0 && group_ * nq <= 8) {
                // Decode: one block spans several K/V heads (up to 64 padded rows), so the
                // per-call setup and the chunk loop are shared by them.
                const std::int64_t per_block =
                    std::max<std::int64_t>(1, R / decode_padded_rows(int(group_ * nq)));
                for (std::int64_t g = kv0; g < kv1; g += per_block)
                    decode_block(g, std::min(kv1, g + per_block), heads, queries.begin, int(nq),
                                 keys);
                return;
            }
        }
        for (std::int64_t kvh = kv0; kvh < kv1; ++kvh) {
            const std::int64_t g0 = std::max(heads.begin, kvh * group_);
            const std::int64_t g1 = std::min(heads.end, (kvh + 1) * group_);
            for (std::int64_t h0 = g0; h0 < g1; h0 += R) {
                const int nh = int(std::min<std::int64_t>(R, g1 - h0));
                const int tokens_per_block = R / nh;
                for (std::int64_t t0 = queries.begin; t0 < queries.end; t0 += tokens_per_block) {
                    if constexpr (grouped) {
                        const int ng = group_size(nh, t0, tokens_per_block, queries.end);
                        if (ng >= 2) {
                            block_group(kvh, h0, nh, t0, tokens_per_block, ng, queries.end, keys);
                            t0 += std::int64_t(ng - 1) * tokens_per_block;
                            continue;
                        }
                    }
                    const int nt = int(std::min<std::int64_t>(tokens_per_block, queries.end - t0));
                    block(kvh, h0, nh, t0, nt, keys);
                }
            }
        }
    }

  private:
    void prepare_rotation() noexcept {
        if constexpr (rotating) {
            const rope_frequencies& f = *pos_.freqs;
            const int pairs = f.pairs();
            using rule_t = typename Pos::rule_type;
            if constexpr (is_leaky_v<rule_t>) {
                const double k = pos_.rule.k;
                for (int o = 0; o < C; ++o)
                    accurate_row<Arch>(double(o) / k, f.inv_freq.data(), pairs,
                                       ws_.leaky_off + o * 2 * pairs);
            } else if constexpr (std::is_same_v<rule_t, rerope>) {
                accurate_row<Arch>(double(pos_.rule.window), f.inv_freq.data(), pairs, ws_.cs_cap);
            }
        }
    }

    const float* table_row(std::int64_t position) const noexcept {
        return table_row_at<Arch>(*pos_.table, position);
    }

    /// Loads the block's Q^T (scaled; rotated at the query position when the rule's inputs are
    /// unrotated) and zero-pads rows to full vectors. The far q of a rule is loaded on the
    /// first tile that needs it (load_far_q): StreamingLLM blocks inside the cache never do.
    void load_q(std::int64_t h0, int nh, std::int64_t t0, int nt, int nrv) noexcept {
        load_q(h0, nh, t0, nt, nrv, ws_.qt);
    }
    /// load_q() into `qt` (the group path's per-block Q^T); rules always use ws_.qt.
    void load_q(std::int64_t h0, int nh, std::int64_t t0, int nt, int nrv, float* qt) noexcept {
        const float scale = p_.softmax_scale();
        const int rows = nh * nt;
        fill_positions<Arch>(q_src_, t0, nt, ws_.tok_pos);
        for (int tl = 0; tl < nt; ++tl) {
            const std::int64_t t = t0 + tl;
            ws_.tok_idx[tl] = q_index_offset_ + t;
            for (int hh = 0; hh < nh; ++hh) q_rows_[tl * nh + hh] = q_.at(t, h0 + hh);
        }
        far_q_ready_ = false;
        block_nh_ = nh;
        block_nt_ = nt;
        block_nrv_ = nrv;
        if constexpr (!traits::rotate_inputs) {
            rows_to_columns(q_rows_, rows, nrv, scale, qt);
        } else {
            // Rotated rows are staged row-major in the K tiles (free until the first tile).
            const rope_frequencies& f = *pos_.freqs;
            const int pairs = f.pairs();
            alignas(64) float tmp[max_head_dim];
            const float* rot_rows[R];
            for (int tl = 0; tl < nt; ++tl) {
                for (int hh = 0; hh < nh; ++hh) {
                    const int r = tl * nh + hh;
                    float* rot = ws_.kt + r * max_rule_head_dim;
                    for (int d = 0; d < D_; ++d) tmp[d] = q_rows_[r][d] * scale;
                    rotate_head<Arch>(tmp, rot, table_row(ws_.tok_pos[tl]), pairs, D_, f.layout);
                    rot_rows[r] = rot;
                }
            }
            rows_to_columns(rot_rows, rows, nrv, 1.0f, ws_.qt);
        }
    }

    /// The block's far Q^T (ws_.qcap): q (scaled) rotated by the rule's far q row. Called at the
    /// start of a tile, when the K tiles are free to stage the rows in.
    void load_far_q() noexcept {
        far_q_ready_ = true;
        if constexpr (rotating) {
            const float scale = p_.softmax_scale();
            const rope_frequencies& f = *pos_.freqs;
            const int pairs = f.pairs();
            const int nh = block_nh_, nt = block_nt_;
            alignas(64) float tmp[max_head_dim];
            const float* cap_rows[R];
            for (int tl = 0; tl < nt; ++tl) {
                const float* cs = far_q_row<Arch>(pos_, ws_.tok_pos[tl], ws_.cs_cap, ws_.cs_tmp);
                for (int hh = 0; hh < nh; ++hh) {
                    const int r = tl * nh + hh;
                    float* cap = ws_.kc + r * max_rule_head_dim;
                    if (cs == nullptr) {  // the far q is the near one (no rotation)
                        for (int d = 0; d < D_; ++d) cap[d] = q_rows_[r][d] * scale;
                    } else {
                        for (int d = 0; d < D_; ++d) tmp[d] = q_rows_[r][d] * scale;
                        rotate_head<Arch>(tmp, cap, cs, pairs, D_, f.layout);
                    }
                    cap_rows[r] = cap;
                }
            }
            rows_to_columns(cap_rows, nh * nt, block_nrv_, 1.0f, ws_.qcap);
        }
    }

    /// dst[d * R + r] = scale * src[r][d] for d < D and r < nrv * W (rows past `rows` are zero),
    /// a W x W register transpose per block.
    void rows_to_columns(const float* const* src, int rows, int nrv, float scale,
                         float* dst) const noexcept {
        using V = typename Ops::vec;
        const V sv = Ops::set1(scale);
        const int dv = D_ / W * W;
        for (int r0 = 0; r0 < nrv * W; r0 += W) {
            for (int d0 = 0; d0 < dv; d0 += W) {
                V v[W];
                ROPEKIT_UNROLL
                for (int i = 0; i < W; ++i)
                    v[i] = r0 + i < rows ? Ops::loadu(src[r0 + i] + d0) * sv : Ops::zero();
                Ops::transpose(v);
                ROPEKIT_UNROLL
                for (int j = 0; j < W; ++j) Ops::store(dst + (d0 + j) * R + r0, v[j]);
            }
            for (int d = dv; d < D_; ++d) {
                ROPEKIT_UNROLL
                for (int i = 0; i < W; ++i)
                    dst[d * R + r0 + i] = r0 + i < rows ? src[r0 + i][d] * scale : 0.0f;
            }
        }
    }

    /// A K or V tile as float rows: the stored rows themselves when KV is float, else converted.
    /// `pack` copies fp32 rows too: a compact tile spans 8 pages instead of one page per row.
    const float* float_tile(const head_view<const KV>& x, int dim, std::int64_t kvh,
                            std::int64_t c0, int nc, float* buf, std::ptrdiff_t& stride,
                            bool pack) noexcept {
        if constexpr (std::is_same_v<KV, float>) {
            if (!pack) {
                stride = x.token_stride;
                return x.at(c0, kvh);
            }
        }
        const int ds = (dim + 15) / 16 * 16;
        for (int c = 0; c < nc; ++c) convert_row<Arch, KV>(x.at(c0 + c, kvh), buf + c * ds, dim);
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
    /// other key positions the mask cannot map positions to indices: all of `keys`, and the
    /// per-tile classification does the skipping.
    int visible_key_ranges(const block_bounds& qb, index_range keys,
                           index_range (&ranges)[2]) const noexcept {
        ranges[0] = keys;
        return k_is_index_ ? mask_.key_ranges(qb, ranges) : 1;
    }

    void block(std::int64_t kvh, std::int64_t h0, int nh, std::int64_t t0, int nt,
               index_range keys) noexcept {
        const int rows = nh * nt;
        if constexpr (decode_form && W > 1) {
            if (D_ % W == 0 && Dv_ % W == 0 && rows <= 8) {
                // Few rows (a narrow head range with several queries): the decode form
                // vectorises over head channels instead of rows, so a vector is not mostly
                // padding.
                decode_block(kvh, kvh + 1, {h0, h0 + nh}, t0, nt, keys);
                return;
            }
        }
        const int nrv = (rows + W - 1) / W;
        load_q(h0, nh, t0, nt, nrv);
        for (int r = 0; r < nrv * W; ++r) {
            ws_.m[r] = -std::numeric_limits<float>::infinity();
            ws_.l[r] = 0.0f;
        }
        for (int d = 0; d < Dv_; ++d)
            for (int r = 0; r < nrv * W; ++r) ws_.ot[d * R + r] = 0.0f;

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

    /// Query blocks of [t0, t_end) (tokens_per_block each) the group path takes at t0: 0 or 1
    /// when it does not apply (the head sizes leave no room for two blocks' Q^T and O^T in the
    /// workspace, or a block would use the decode form).
    int group_size(int nh, std::int64_t t0, int tokens_per_block,
                   std::int64_t t_end) const noexcept {
        const int cap = std::min(max_group, max_head_dim / std::max(D_, Dv_));
        int ng = 0;
        for (std::int64_t t = t0; ng < cap && t < t_end; t += tokens_per_block, ++ng) {
            const int nt = int(std::min<std::int64_t>(tokens_per_block, t_end - t));
            if (nh * nt <= 8) break;  // block() hands it to the decode form
        }
        return ng;
    }

    /// Loads the positions of query tokens [t0, t0 + nt) into ws_.tok_pos / tok_idx.
    void load_positions(std::int64_t t0, int nt) noexcept {
        fill_positions<Arch>(q_src_, t0, nt, ws_.tok_pos);
        for (int tl = 0; tl < nt; ++tl) ws_.tok_idx[tl] = q_index_offset_ + t0 + tl;
    }

    /// `ng` consecutive query blocks (tokens_per_block tokens from t0, the last cut at t_end) of
    /// heads [h0, h0 + nh) over the keys: each K / V tile is converted once and used by every
    /// block that sees it. Block g keeps Q^T at ws_.qt + g D R, O^T at ws_.ot + g Dv R and its
    /// m / l / alpha in ws_.st2 (free without a rule). The tiles of one block are the same as
    /// block()'s when every block's visible keys start at the same key (causal, full).
    void block_group(std::int64_t kvh, std::int64_t h0, int nh, std::int64_t t0,
                     int tokens_per_block, int ng, std::int64_t t_end, index_range keys) noexcept {
        static_assert(3 * R * max_group <= C * R, "group m / l / alpha fit in ws.st2");
        block_bounds qbs[max_group];
        int nts[max_group], nrvs[max_group];
        float *qts[max_group], *ots[max_group], *ms[max_group], *ls[max_group], *as[max_group];
        index_range spans[2 * max_group];
        int n_spans = 0;
        for (int g = 0; g < ng; ++g) {
            const std::int64_t t = t0 + std::int64_t(g) * tokens_per_block;
            nts[g] = int(std::min<std::int64_t>(tokens_per_block, t_end - t));
            nrvs[g] = (nh * nts[g] + W - 1) / W;
            qts[g] = ws_.qt + g * D_ * R;
            ots[g] = ws_.ot + g * Dv_ * R;
            ms[g] = ws_.st2 + g * 3 * R;
            ls[g] = ms[g] + R;
            as[g] = ls[g] + R;
            load_q(h0, nh, t, nts[g], nrvs[g], qts[g]);
            for (int r = 0; r < nrvs[g] * W; ++r) {
                ms[g][r] = -std::numeric_limits<float>::infinity();
                ls[g][r] = 0.0f;
            }
            for (int d = 0; d < Dv_; ++d)
                for (int r = 0; r < nrvs[g] * W; ++r) ots[g][d * R + r] = 0.0f;
            qbs[g] = query_block_bounds(nts[g]);
            index_range ranges[2];
            const int n_ranges = visible_key_ranges(qbs[g], keys, ranges);
            for (int ri = 0; ri < n_ranges; ++ri) {
                const std::int64_t b = std::max(ranges[ri].begin, keys.begin);
                const std::int64_t e = std::min(ranges[ri].end, keys.end);
                if (b < e) spans[n_spans++] = {b, e};
            }
        }
        int pos_block = ng - 1;  // whose positions ws_.tok_pos / tok_idx hold
        // The union of the blocks' key ranges, as disjoint spans in key order.
        // (Insertion sort: at most 2 x max_group spans, and GCC 12 -O3 warns on std::sort's
        // unrolled insertion into a small array, -Warray-bounds.)
        for (int i = 1; i < n_spans; ++i)
            for (int j = i; j > 0 && spans[j].begin < spans[j - 1].begin; --j)
                std::swap(spans[j], spans[j - 1]);
        int n_merged = 0;
        for (int i = 0; i < n_spans; ++i) {
            if (n_merged > 0 && spans[i].begin <= spans[n_merged - 1].end)
                spans[n_merged - 1].end = std::max(spans[n_merged - 1].end, spans[i].end);
            else
                spans[n_merged++] = spans[i];
        }
        for (int si = 0; si < n_merged; ++si) {
            for (std::int64_t c0 = spans[si].begin; c0 < spans[si].end; c0 += C) {
                const int nc = int(std::min<std::int64_t>(C, spans[si].end - c0));
                const float* kf = nullptr;
                const float* vf = nullptr;
                std::ptrdiff_t ks = 0, vs = 0;
                for (int g = 0; g < ng; ++g) {
                    block_bounds b;
                    const tile_visibility vis = classify_tile(qbs[g], c0, nc, b);
                    if (vis == tile_visibility::none) continue;
                    if (kf == nullptr) {
                        prefetch_next(kvh, c0 + nc);
                        kf = float_tile(k_, D_, kvh, c0, nc, ws_.kt, ks, pack_f32_k);
                        vf = float_tile(v_, Dv_, kvh, c0, nc, ws_.vt, vs, pack_f32_v);
                    }
                    float* st = ws_.st;
                    const int nrv = nrvs[g], nt = nts[g];
                    scores<Ops>(kf, ks, nc, D_, qts[g], st, nrv);
                    if (vis == tile_visibility::partial && pos_block != g) {
                        load_positions(t0 + std::int64_t(g) * tokens_per_block, nt);
                        pos_block = g;
                    }
                    cap_and_hide(st, vis, c0, nc, nt, nh, nrv);
                    softmax_update<Ops>(st, nc, nrv, ms[g], ls[g], as[g]);
                    accumulate_pv<Ops>(vf, vs, nc, Dv_, st, as[g], ots[g], nrv);
                }
            }
        }
        for (int g = 0; g < ng; ++g)
            finish(h0, nh, t0 + std::int64_t(g) * tokens_per_block, nts[g], ots[g], ms[g], ls[g]);
    }

    /// The score tile `st` of keys [c0, c0 + nc) before its softmax: Gemma 2's cap on the
    /// scaled scores (before the mask), then -inf wherever the mask hides a (query, key) pair;
    /// only a partially visible tile has such pairs. The nt x nh rows' positions are the ones
    /// in ws_.tok_pos / tok_idx.
    void cap_and_hide(float* st, tile_visibility vis, std::int64_t c0, int nc, int nt, int nh,
                      int nrv) const noexcept {
        if (softcap_)
            for (int c = 0; c < nc; ++c) softcap_scores<Ops>(st + c * R, nrv * W, cap_, inv_cap_);
        if (vis != tile_visibility::partial) return;
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

    void tile(std::int64_t kvh, int nh, int nt, int nrv, const block_bounds& qb, std::int64_t c0,
              int nc) noexcept {
        block_bounds b = qb;
        b.k_index_min = c0;
        b.k_index_max = c0 + nc - 1;
        const tile_visibility vis = classify_tile(qb, c0, nc, b);
        if (vis == tile_visibility::none) return;

        float* st = ws_.st;
        if constexpr (!rotating) {
            prefetch_next(kvh, c0 + nc);
            std::ptrdiff_t ks = 0;
            const float* kf = float_tile(k_, D_, kvh, c0, nc, ws_.kt, ks, pack_f32_k);
            scores<Ops>(kf, ks, nc, D_, ws_.qt, st, nrv);
        } else {
            st = rule_scores(kvh, nrv, b, c0, nc, nt, nh);
        }

        cap_and_hide(st, vis, c0, nc, nt, nh, nrv);
        softmax_update<Ops>(st, nc, nrv, ws_.m, ws_.l, ws_.alpha);
        std::ptrdiff_t vs = 0;
        const float* vf = float_tile(v_, Dv_, kvh, c0, nc, ws_.vt, vs, pack_f32_v);
        accumulate_pv<Ops>(vf, vs, nc, Dv_, st, ws_.alpha, ws_.ot, nrv);
    }

    /// Asks for the next tile's K and V rows now. With a [token][head][d] cache every key row
    /// of one head sits on its own 4 KB page (8 heads x 128 x 4 bytes), where hardware
    /// prefetchers stop, so without this decode waits on memory latency instead of bandwidth.
    void prefetch_next(std::int64_t kvh, std::int64_t c_next) const noexcept {
#if defined(__GNUC__) || defined(__clang__)
        const std::int64_t c_end = std::min<std::int64_t>(c_next + C, k_.tokens);
        const int kbytes = row_bytes<KV>(D_), vbytes = row_bytes<KV>(Dv_);
        for (std::int64_t c = c_next; c < c_end; ++c) {
            const char* kr = reinterpret_cast<const char*>(k_.at(c, kvh));
            const char* vr = reinterpret_cast<const char*>(v_.at(c, kvh));
            for (int off = 0; off < kbytes; off += 64) __builtin_prefetch(kr + off, 0, 2);
            for (int off = 0; off < vbytes; off += 64) __builtin_prefetch(vr + off, 0, 2);
        }
#else
        (void)kvh, (void)c_next;
#endif
    }

    /// A rule's scores of one tile, chosen per tile: distances all below the window use the
    /// near product, all at or beyond it the far one, and only tiles that straddle the window
    /// edge compute both and select per element. Returns the score tile.
    float* rule_scores(std::int64_t kvh, int nrv, const block_bounds& b, std::int64_t c0, int nc,
                       int nt, int nh) noexcept {
        if constexpr (rotating) {
            constexpr far_key_rotation fk = traits::far_keys;
            static_assert(traits::rotate_inputs || fk == far_key_rotation::same,
                          "rules with rotated inputs keep the key rotation");
            const rope_frequencies& f = *pos_.freqs;
            const int pairs = f.pairs();
            const std::int64_t w = pos_.rule.window;
            const std::int64_t dmin = b.q_pos_min - b.k_pos_max;
            const std::int64_t dmax = b.q_pos_max - b.k_pos_min;
            const bool need_cap = dmax >= w && !far_pairs_hidden<Arch>(pos_.rule, mask_, b);
            // A tile needs one product at least (all far and hidden: the mask hides them all).
            const bool need_ord = dmin < w || !need_cap;
            if (need_cap && !far_q_ready_) load_far_q();
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
            // Rotated inputs (StreamingLLM): both products use the K tile as given, read
            // exactly as the plain kernel reads it (packed, next tile prefetched).
            const float* kf = nullptr;
            std::ptrdiff_t ks = 0;
            if constexpr (!traits::rotate_inputs) {
                prefetch_next(kvh, c0 + nc);
                kf = float_tile(k_, D_, kvh, c0, nc, ws_.kt, ks, pack_f32_k);
            }
            if (need_ord) {
                if constexpr (traits::rotate_inputs) {
                    for (int c = 0; c < nc; ++c)
                        rotate_head<Arch>(raw_row(c), ws_.kt + c * max_rule_head_dim,
                                          table_row(ws_.kpos[c]), pairs, D_, f.layout);
                    scores<Ops>(ws_.kt, max_rule_head_dim, nc, D_, ws_.qt, ws_.st, nrv);
                } else {
                    scores<Ops>(kf, ks, nc, D_, ws_.qt, ws_.st, nrv);
                }
            }
            if (need_cap) {
                const float* kc = nullptr;
                std::ptrdiff_t kcs = max_rule_head_dim;
                if constexpr (fk == far_key_rotation::scaled) {
                    // k at j / k: the tile base angle composed with the per-call offset table.
                    const double kk = pos_.rule.k;
                    accurate_row<Arch>(double(b.k_pos_min) / kk, f.inv_freq.data(), pairs,
                                       ws_.cs_tmp);
                    alignas(64) float cs[max_head_dim];
                    for (int c = 0; c < nc; ++c) {
                        const std::int64_t off = ws_.kpos[c] - b.k_pos_min;
                        if (off < C)
                            compose_rows<Ops>(ws_.cs_tmp, ws_.leaky_off + off * 2 * pairs, pairs,
                                              cs);
                        else
                            accurate_row<Arch>(double(ws_.kpos[c]) / kk, f.inv_freq.data(), pairs,
                                               cs);
                        rotate_head<Arch>(raw_row(c), ws_.kc + c * max_rule_head_dim, cs, pairs, D_,
                                          f.layout);
                    }
                    kc = ws_.kc;
                } else if constexpr (fk == far_key_rotation::integer) {
                    // Self-Extend: k at the table row floor(j / G) (a tile spans ~64 / G rows).
                    for (int c = 0; c < nc; ++c)
                        rotate_head<Arch>(raw_row(c), ws_.kc + c * max_rule_head_dim,
                                          far_k_row<Arch>(pos_, ws_.kpos[c], ws_.cs_tmp), pairs, D_,
                                          f.layout);
                    kc = ws_.kc;
                } else if constexpr (fk == far_key_rotation::same) {
                    kc = kf;
                    kcs = ks;
                } else {  // identity: the key unrotated (ReRoPE)
                    if constexpr (std::is_same_v<KV, float>) {
                        kc = kraw_base;
                        kcs = kraw_stride;
                    } else {
                        for (int c = 0; c < nc; ++c)
                            convert_row<Arch, KV>(k_.at(c0 + c, kvh),
                                                  ws_.kc + c * max_rule_head_dim, D_);
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
    /// `heads`. Rows are grouped by K/V head (segment, padded to decode_padded_rows), then token,
    /// then head. The keys are walked in chunks of decode_chunk, and each chunk goes through every
    /// segment in turn (decode_step): the scores, softmax and P V of one K/V head over one chunk
    /// read its K and V rows once, while the next chunks' rows are prefetched into L2.
    void decode_block(std::int64_t g0, std::int64_t g1, index_range heads, std::int64_t t0, int nt,
                      index_range keys) noexcept {
        // The soft-cap is a template parameter here: as a runtime branch inside the chunk loop
        // its inlined tanh made bf16 decode (head_dim 128, GQA 4) 1.3x slower without a cap.
        if (softcap_)
            decode_block_impl<true>(g0, g1, heads, t0, nt, keys);
        else
            decode_block_impl<false>(g0, g1, heads, t0, nt, keys);
    }

    template <bool Cap>
    void decode_block_impl(std::int64_t g0, std::int64_t g1, index_range heads, std::int64_t t0,
                           int nt, index_range keys) noexcept {
        int seg_r0[R], seg_rows[R], seg_nh[R];
        std::int64_t seg_g[R], seg_h0[R];
        int nseg = 0, rows = 0;
        for (std::int64_t g = g0; g < g1; ++g) {
            const std::int64_t h0 = std::max(heads.begin, g * group_);
            const std::int64_t h1 = std::min(heads.end, (g + 1) * group_);
            if (h1 <= h0) continue;
            seg_g[nseg] = g;
            seg_h0[nseg] = h0;
            seg_nh[nseg] = int(h1 - h0);
            seg_rows[nseg] = nt * seg_nh[nseg];
            seg_r0[nseg] = rows;
            rows += decode_padded_rows(seg_rows[nseg]);
            ++nseg;
        }
        const float scale = p_.softmax_scale();
        fill_positions<Arch>(q_src_, t0, nt, ws_.tok_pos);
        for (int tl = 0; tl < nt; ++tl) ws_.tok_idx[tl] = q_index_offset_ + t0 + tl;
        // Only channels [0, D) of a row are ever read; padding rows stay zero queries.
        for (int r = 0; r < rows; ++r) {
            zero_floats(ws_.kc + r * rs_, D_);
            zero_floats(ws_.ot + r * rs_, Dv_);
        }
        // bf16 K/V on AVX-512 with whole 32-channel blocks: K and V are read as even / odd
        // pairs (vec_ops::load_bf16_pairs), so q is stored, and O accumulated, in that order.
        pairs_ = use_pairs();
        for (int sg = 0; sg < nseg; ++sg)
            for (int tl = 0; tl < nt; ++tl)
                for (int hh = 0; hh < seg_nh[sg]; ++hh) {
                    const int r = seg_r0[sg] + tl * seg_nh[sg] + hh;
                    const float* src = q_.at(t0 + tl, seg_h0[sg] + hh);
                    float* dst = ws_.kc + r * rs_;
                    for (int d = 0; d < D_; ++d) dst[pairs_ ? pair_slot(d) : d] = src[d] * scale;
                }
        for (int r = 0; r < rows; ++r) {
            ws_.m[r] = -std::numeric_limits<float>::infinity();
            ws_.l[r] = 0.0f;
        }
        // A rule's far q rows (StreamingLLM's q re-rotated to its cache slot), in the same
        // layout as the near ones in ws_.kc, built on the first chunk that has far pairs.
        bool far_ready = false;
        auto load_far_rows = [&] {
            far_ready = true;
            if constexpr (rotating) {
                const rope_frequencies& f = *pos_.freqs;
                alignas(64) float tmp[max_head_dim], rot[max_head_dim];
                for (int r = 0; r < rows; ++r) zero_floats(ws_.qcap + r * rs_, D_);
                for (int tl = 0; tl < nt; ++tl) {
                    const float* cs =
                        far_q_row<Arch>(pos_, ws_.tok_pos[tl], ws_.cs_cap, ws_.cs_tmp);
                    for (int sg = 0; sg < nseg; ++sg)
                        for (int hh = 0; hh < seg_nh[sg]; ++hh) {
                            const int r = seg_r0[sg] + tl * seg_nh[sg] + hh;
                            const float* src = q_.at(t0 + tl, seg_h0[sg] + hh);
                            for (int d = 0; d < D_; ++d) tmp[d] = src[d] * scale;
                            const float* x = tmp;
                            if (cs) {
                                rotate_head<Arch>(tmp, rot, cs, f.pairs(), D_, f.layout);
                                x = rot;
                            }
                            float* dst = ws_.qcap + r * rs_;
                            for (int d = 0; d < D_; ++d) dst[pairs_ ? pair_slot(d) : d] = x[d];
                        }
                }
            }
        };

        index_range ranges[2];
        const block_bounds qb = query_block_bounds(nt);
        const int n_ranges = visible_key_ranges(qb, keys, ranges);
        constexpr float ninf = -std::numeric_limits<float>::infinity();
        const int pf_keys =
            std::max(decode_chunk, decode_prefetch_bytes / std::max(1, row_bytes<KV>(D_)));
        const std::ptrdiff_t kpf = pf_keys * k_.token_stride;
        const std::ptrdiff_t vpf = pf_keys * v_.token_stride;
        for (int ri = 0; ri < n_ranges; ++ri) {
            const std::int64_t b = std::max(ranges[ri].begin, keys.begin);
            const std::int64_t e = std::min(ranges[ri].end, keys.end);
            for (std::int64_t c0 = b; c0 < e; c0 += decode_chunk) {
                const int nc = int(std::min<std::int64_t>(decode_chunk, e - c0));
                block_bounds bb;
                const tile_visibility vis = classify_tile(qb, c0, nc, bb);
                if (vis == tile_visibility::none) continue;
                // With a rule: which of the near and far products the chunk needs (as
                // rule_scores decides per tile).
                bool need_ord = true, need_cap = false;
                std::int64_t w = 0;
                if constexpr (rotating) {
                    w = pos_.rule.window;
                    need_cap = bb.q_pos_max - bb.k_pos_min >= w &&
                               !far_pairs_hidden<Arch>(pos_.rule, mask_, bb);
                    need_ord = bb.q_pos_min - bb.k_pos_max < w || !need_cap;
                    if (need_cap && !far_ready) load_far_rows();
                }
                for (int sg = 0; sg < nseg; ++sg) {
                    const int nr = seg_rows[sg];
                    float* sd = ws_.st + seg_r0[sg] * decode_chunk;
                    const float* q = ws_.kc + seg_r0[sg] * rs_;
                    if constexpr (rotating) {
                        if (!need_ord) q = ws_.qcap + seg_r0[sg] * rs_;
                    }
                    const float* qfar = ws_.qcap + seg_r0[sg] * rs_;
                    const int r0 = seg_r0[sg];
                    const int nh = seg_nh[sg];
                    with_row_stride([&](auto rsc) {
                        with_pairs([&](auto pc) {
                            with_padded_rows(decode_padded_rows(nr), [&](auto nrc) {
                                constexpr int NR = decltype(nrc)::value;
                                decode_step<Ops, NR, decltype(pc)::value, decltype(rsc)::value>(
                                    k_.at(c0, seg_g[sg]), k_.token_stride, v_.at(c0, seg_g[sg]),
                                    v_.token_stride, nc, D_, Dv_, nr, q, sd, ws_.m + r0, ws_.l + r0,
                                    ws_.alpha + r0, ws_.ot + r0 * rs_, kpf, vpf, [&](float* s) {
                                        if constexpr (rotating) {
                                            if (need_ord && need_cap) {
                                                // Band chunk: far scores with the far q rows,
                                                // selected per element.
                                                alignas(64) float s2[decode_chunk * NR];
                                                decode_chunk_scores<Ops, NR, decltype(pc)::value,
                                                                    decltype(rsc)::value>(
                                                    k_.at(c0, seg_g[sg]), k_.token_stride, nc, D_,
                                                    qfar, s2, 0);
                                                for (int c = 0; c < nc; ++c)
                                                    for (int tl = 0; tl < nt; ++tl)
                                                        if (ws_.tok_pos[tl] - ws_.kpos[c] >= w)
                                                            for (int hh = 0; hh < nh; ++hh)
                                                                s[c * NR + tl * nh + hh] =
                                                                    s2[c * NR + tl * nh + hh];
                                            }
                                        }
                                        // The whole tile (its padding is reset by the softmax).
                                        if constexpr (Cap)
                                            softcap_scores<Ops>(s, decode_chunk * NR, cap_,
                                                                inv_cap_);
                                        if (vis != tile_visibility::partial) return;
                                        for (int c = 0; c < nc; ++c)
                                            for (int tl = 0; tl < nt; ++tl)
                                                if (!mask_.visible(ws_.tok_pos[tl], ws_.tok_idx[tl],
                                                                   ws_.kpos[c], c0 + c))
                                                    for (int hh = 0; hh < nh; ++hh)
                                                        s[c * NR + tl * nh + hh] = ninf;
                                    });
                            });
                        });
                    });
                }
            }
        }
        for (int sg = 0; sg < nseg; ++sg)
            for (int tl = 0; tl < nt; ++tl)
                for (int hh = 0; hh < seg_nh[sg]; ++hh)
                    finish_decode_row(t0 + tl, seg_h0[sg] + hh, seg_r0[sg] + tl * seg_nh[sg] + hh);
    }

    /// Key positions of tile [c0, c0 + nc) into ws_.kpos and the mask's verdict on it.
    tile_visibility classify_tile(const block_bounds& qb, std::int64_t c0, int nc,
                                  block_bounds& b) noexcept {
        b = qb;
        b.k_index_min = c0;
        b.k_index_max = c0 + nc - 1;
        if (!k_is_index_) {
            fill_positions<Arch>(k_src_, c0, nc, ws_.kpos);
            b.k_pos_min = b.k_pos_max = ws_.kpos[0];
            for (int c = 0; c < nc; ++c) {
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

    /// Writes the block's O rows (O^T back to [token][head][d], one W x W register transpose per
    /// block) and LSE.
    void finish(std::int64_t h0, int nh, std::int64_t t0, int nt) noexcept {
        finish(h0, nh, t0, nt, ws_.ot, ws_.m, ws_.l);
    }
    /// finish() of a block whose O^T, running max and sum are at `ot`, `m` and `l`.
    void finish(std::int64_t h0, int nh, std::int64_t t0, int nt, const float* ot, const float* m,
                const float* l) noexcept {
        using V = typename Ops::vec;
        const int rows = nh * nt;
        float* dst[R];
        alignas(64) float scale[R];
        for (int tl = 0; tl < nt; ++tl)
            for (int hh = 0; hh < nh; ++hh) {
                const int r = tl * nh + hh;
                scale[r] = row_scale(t0 + tl, h0 + hh, m[r], l[r]);
                dst[r] = o_.at(t0 + tl, h0 + hh);
            }
        const int dv = Dv_ / W * W;
        alignas(64) float spill[max_head_dim];  // target of the padding rows' stores
        for (int r0 = 0; r0 < rows; r0 += W) {
            const int nr = std::min(W, rows - r0);
            for (int i = nr; i < W; ++i) scale[r0 + i] = 0.0f;
            const V sv = Ops::load(scale + r0);
            for (int d0 = 0; d0 < dv; d0 += W) {
                V v[W];
                ROPEKIT_UNROLL
                for (int i = 0; i < W; ++i) v[i] = Ops::load(ot + (d0 + i) * R + r0) * sv;
                Ops::transpose(v);
                ROPEKIT_UNROLL
                for (int j = 0; j < W; ++j) Ops::storeu((j < nr ? dst[r0 + j] : spill) + d0, v[j]);
            }
            for (int i = 0; i < nr; ++i)
                for (int d = dv; d < Dv_; ++d) dst[r0 + i][d] = ot[d * R + r0 + i] * scale[r0 + i];
        }
    }

    /// The factor that normalises row r (query token t, head h), including the learned sink,
    /// and the row's LSE (written when requested).
    float row_scale(std::int64_t t, std::int64_t h, int r) noexcept {
        return row_scale(t, h, ws_.m[r], ws_.l[r]);
    }
    /// row_scale() of a row with running max `row_m` and sum `row_l`.
    float row_scale(std::int64_t t, std::int64_t h, float row_m, float row_l) noexcept {
        double m = row_m;
        double l = row_l;
        double o_scale = 0.0;
        // gpt-oss sink: joins the max and the denominator, never the numerator. A -inf sink on
        // a row that saw no key adds nothing (exp(-inf - -inf) would be NaN): zeros, LSE -inf.
        if (p_.sink_logits &&
            (l > 0.0 || p_.sink_logits[h] > -std::numeric_limits<float>::infinity())) {
            const double s = p_.sink_logits[h];
            const double mm = std::max(m, s);
            const double keep = l > 0.0 ? std::exp(m - mm) : 0.0;
            l = l * keep + std::exp(s - mm);
            o_scale = keep / l;
            m = mm;
        } else if (l > 0.0) {
            o_scale = 1.0 / l;
        }
        if (p_.lse) {
            p_.lse[t * q_.heads + h] =
                l > 0.0 ? float(m + std::log(l)) : -std::numeric_limits<float>::infinity();
        }
        return float(o_scale);
    }

    /// Writes decode row r (row-major accumulator `ot[r][d]`, in pair order when pairs_) as
    /// O(t, h), and its LSE.
    void finish_decode_row(std::int64_t t, std::int64_t h, int r) noexcept {
        const float os = row_scale(t, h, r);
        float* out = o_.at(t, h);
        const float* acc = ws_.ot + r * rs_;
        for (int d = 0; d < Dv_; ++d) out[d] = acc[pairs_ ? pair_slot(d) : d] * os;
    }

    /// Whether decode reads bf16 K/V as even / odd pairs: AVX-512 and head_dim a multiple of 32.
    /// Measured: 8-10% less time per (key, K/V head) from L2 at head_dim 128, GQA 4.
    bool use_pairs() const noexcept {
        if constexpr (std::is_same_v<KV, bfloat16> && W == 16)
            return D_ % (2 * W) == 0 && Dv_ % (2 * W) == 0;
        return false;
    }
    /// Slot of channel d in pair order: in each block of 2 x width channels, the even channels
    /// first, then the odd ones.
    static int pair_slot(int d) noexcept {
        const int base = d / (2 * W) * (2 * W), i = d - base;
        return base + (i % 2) * W + i / 2;
    }
    /// Calls f with the decode row stride rs_ as a std::integral_constant.
    template <class F>
    void with_row_stride(F&& f) const {
        if (rs_ == decode_row_stride_small)
            return f(std::integral_constant<int, decode_row_stride_small>{});
        f(std::integral_constant<int, max_head_dim>{});
    }
    /// Calls f with std::integral_constant<int, 2> (pairs) or <int, 1>.
    template <class F>
    void with_pairs(F&& f) const {
        if constexpr (std::is_same_v<KV, bfloat16> && W == 16) {
            if (pairs_) return f(std::integral_constant<int, 2>{});
        }
        f(std::integral_constant<int, 1>{});
    }

    head_view<const float> q_;
    head_view<const KV> k_, v_;
    head_view<float> o_;
    const Mask& mask_;
    const attention_params& p_;
    const Pos& pos_;
    attention_workspace& ws_;
    positions q_src_, k_src_;  // resolved query / key positions
    bool k_is_index_ = true;   // key position == key index: the mask's key ranges apply
    int D_ = 0;                // head_dim of q and k
    int Dv_ = 0;               // head_dim of v and o
    int rs_ = max_head_dim;    // decode row stride (q and O rows in ws_.kc / ws_.ot)
    bool softcap_ = false;
    float cap_ = 0.0f, inv_cap_ = 0.0f;
    std::int64_t group_ = 1, n_q_ = 0, n_kv_ = 0, q_index_offset_ = 0;
    bool pairs_ = false;
    // The current block's q rows and shape, for the far q loaded on demand (load_far_q).
    const float* q_rows_[R] = {};
    bool far_q_ready_ = false;
    int block_nh_ = 0, block_nt_ = 0, block_nrv_ = 0;
};

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
