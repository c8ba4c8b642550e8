// SPDX-License-Identifier: Apache-2.0
/// \file
/// The value types of an attention call besides the tensors and the mask: the three index
/// ranges a call (or an engine's work unit) covers, attention_params (scale, positions, sinks,
/// LSE output, soft-cap) and the per-thread attention_workspace.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

#include "config.hpp"
#include "error.hpp"
#include "mask.hpp"
#include "positions.hpp"
#include "table.hpp"
#include "view.hpp"

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
    /// Largest softmax scale accepted, 2^16: the kernels scale q before the products, and a
    /// scale near float's maximum overflows the scores of ordinary q and k into inf and NaN.
    /// Real models use about 0.02 to 1 (1/sqrt(head_dim) times YaRN / DeepSeek factors below 10).
    static constexpr double max_softmax_scale = 65536.0;

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
        detail::require(scaling * logit_scale <= max_softmax_scale, "softmax_scale",
                        "(scaling * logit_scale) must be <= 65536 (max_softmax_scale)",
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
/// The soft-cap rule, in one place for the front doors (which throw) and the hot path (which
/// asserts): 0 (no cap) or a normal, finite float, since the kernels multiply by 1/cap.
ROPEKIT_ALWAYS_INLINE bool logit_softcap_ok(float cap) noexcept {
    return cap == 0.0f || (cap >= std::numeric_limits<float>::min() &&
                           cap < std::numeric_limits<float>::infinity());
}
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

/// "No relative-position rule": plain attention (q and k arrive rotated, or the layer has no
/// RoPE). The default rule of attention_problem.
struct no_position_rule {};

/// One attention call for the blocked entry point attention_run: the operands, the mask, the
/// parameters and (for a position rule, position_rules.hpp) the rule with the model's
/// frequencies and a range cos/sin table of them. Non-owning. Build it as an aggregate,
/// `attention_problem<head_view<const bfloat16>, causal_mask>{q, k, v, o, mask, params}` (the
/// rule members last). Its type is what an instantiation macro names
/// (ROPEKIT_INSTANTIATE_ATTENTION).
/// \tparam KVView `head_view<const KV>` or `paged_view<const KV>` (paged_view.hpp)
/// \tparam Mask a mask policy (mask.hpp)
/// \tparam Rule no_position_rule or a position rule
template <class KVView, class Mask, class Rule = no_position_rule>
struct attention_problem {
    using kv_view_type = KVView;  ///< the K/V view type
    using mask_type = Mask;       ///< the mask policy
    using rule_type = Rule;       ///< the position rule, or no_position_rule

    head_view<const float> q;                 ///< queries, n_q x n_heads x head_dim
    KVView k;                                 ///< keys, n_kv x n_kv_heads x head_dim
    KVView v;                                 ///< values, n_kv x n_kv_heads x v_head_dim
    head_view<float> o;                       ///< outputs, n_q x n_heads x v_head_dim
    Mask mask;                                ///< which keys each query sees
    attention_params params;                  ///< scale, positions, sinks, soft-cap, LSE
    Rule rule{};                              ///< the relative-position rule, if any
    const rope_frequencies* freqs = nullptr;  ///< the rule's frequencies (rules only)
    const cos_sin_table* table = nullptr;     ///< a range table of them (rules only)
};

/// The part of an attention_problem one call computes: query heads x query tokens x keys, the
/// ranges attention_blocked takes. Disjoint heads x queries may run on different threads; key
/// ranges give partial results to merge (merge_attention).
struct attention_work {
    head_range heads;     ///< query heads
    query_range queries;  ///< query tokens
    key_range keys;       ///< keys

    /// The whole problem: every head, query and key.
    template <class Problem>
    static attention_work all(const Problem& p) noexcept {
        return {head_range{0, p.q.heads}, query_range{0, p.q.tokens}, key_range{0, p.k.tokens}};
    }
};

/// Scratch memory of one attention call on one thread: every tile the kernel touches. Allocate
/// one per worker thread (it is about 1 MB: `sizeof(attention_workspace)`) and reuse it; the
/// kernels never allocate.
struct alignas(64) attention_workspace {
    /// \cond INTERNAL
    static constexpr int R = detail::attn::block_rows;
    static constexpr int C = detail::attn::tile_keys;
    static constexpr int D = detail::attn::max_head_dim;
    alignas(64) float qt[D * R];    // scaled Q^T (rules with unrotated inputs: rotated at i)
    alignas(64) float qcap[D * R];  // rules: scaled Q^T rotated at the far q position
    alignas(64) float ot[D * R];    // O^T accumulators
    alignas(64) float st[C * R];    // S^T, then P^T
    alignas(64) float st2[C * R];   // rules: far scores (grouped prefill: m / l / alpha)
    alignas(64) float kt[C * D];    // K tile as float (16-bit storage, or rotated)
    alignas(64) float kc[C * D];    // rules: K tile of the far scores (decode: q rows)
    alignas(64) float vt[C * D];    // V tile as float (16-bit storage)
    alignas(64) float m[R], l[R], alpha[R], ones[R];
    alignas(64) float leaky_off[C * 2 * detail::attn::max_pairs];  // scaled far keys: rows of o/k
    alignas(64) float cs_tmp[2 * detail::attn::max_pairs];
    alignas(64) float cs_cap[2 * detail::attn::max_pairs];  // fixed far q: its cos|sin row
    std::int64_t tok_pos[R], tok_idx[R];
    std::int64_t kpos[C];
    /// \endcond
};

ROPEKIT_END_NAMESPACE
