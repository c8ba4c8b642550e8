// SPDX-License-Identifier: Apache-2.0
/// \file
/// Blocked (flash-style) CPU attention with online softmax: masks as policies (mask.hpp),
/// GQA/MQA, float or 16-bit K/V, gpt-oss learned sinks, split-key partials merged by
/// log-sum-exp, and ReRoPE / Leaky ReRoPE fused into the same single pass.
///
/// Shapes: Q is n_q x n_heads x head_dim (float), K and V are n_kv x n_kv_heads x head_dim
/// (float, bfloat16 or half), O is n_q x n_heads x head_dim (float); n_heads is a multiple of
/// n_kv_heads and query head h reads K/V head `h / (n_heads / n_kv_heads)`. Memory is
/// O(tile): the scores are never materialised beyond a 64 x 64 tile (see attention_workspace).
///
/// For every query row the result is `sum_j softmax_j(scale * q.k_j) v_j` over the keys the
/// mask makes visible. A row that sees no key (and has no sink) returns zeros and LSE = -inf.
///
/// Entry points:
/// - attention() / rerope_attention(): validate, then run the whole problem on this thread;
/// - attention_blocked() / rerope_attention_blocked(): the hot-path kernels, on a range of query
///   heads, a range of query tokens and a range of keys, with a caller-owned workspace, so an
///   engine can spread (heads x query blocks) or (key ranges) over its threads;
/// - merge_attention(): combine two partial results over disjoint key sets (split-KV decode).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>

#include "arch.hpp"
#include "detail/attention_kernel.hpp"
#include "error.hpp"
#include "mask.hpp"
#include "rerope.hpp"
#include "storage.hpp"
#include "table.hpp"

ROPEKIT_BEGIN_NAMESPACE

// Cold-path checks and front doors are compiled per instruction-set namespace (abi.hpp).
namespace detail::attn {
ROPEKIT_BEGIN_ISA_NAMESPACE

template <class KV>
void validate_shapes(const head_view<const float>& q, const head_view<const KV>& k,
                     const head_view<const KV>& v, const head_view<float>& o,
                     const attention_params& p) {
    static_assert(is_storage_type_v<KV>, "K/V storage is float, bfloat16 or half");
    require(q.head_dim > 0 && q.head_dim <= max_head_dim, "head_dim", "must be in [1, 256]",
            q.head_dim);
    require(k.head_dim == q.head_dim && v.head_dim == q.head_dim && o.head_dim == q.head_dim,
            "head_dim", "must be the same for q, k, v and o", k.head_dim);
    require(q.heads > 0, "n_heads", "must be > 0", q.heads);
    require(k.heads > 0 && q.heads % k.heads == 0, "n_kv_heads", "must be > 0 and divide n_heads",
            k.heads);
    require(v.heads == k.heads, "v.heads", "must equal k.heads", v.heads);
    require(o.heads == q.heads, "o.heads", "must equal q.heads", o.heads);
    require(v.tokens == k.tokens, "v.tokens", "must equal k.tokens", v.tokens);
    require(o.tokens == q.tokens, "o.tokens", "must equal q.tokens", o.tokens);
    require(q.tokens >= 0 && k.tokens >= 0, "tokens", "must be >= 0", k.tokens);
    require(q.tokens == 0 || q.data != nullptr, "q", "must not be null", q.tokens);
    require(k.tokens == 0 || (k.data != nullptr && v.data != nullptr), "k", "must not be null",
            k.tokens);
    require(std::isfinite(p.softmax_scale) && p.softmax_scale > 0.0f, "softmax_scale",
            "must be finite and > 0", p.softmax_scale);
}

ROPEKIT_END_ISA_NAMESPACE

template <class Arch, class KV>
bool shapes_ok(const head_view<const float>& q, const head_view<const KV>& k,
               const head_view<const KV>& v, const head_view<float>& o, index_range heads,
               index_range queries, index_range keys) noexcept {
    return q.head_dim > 0 && q.head_dim <= max_head_dim && k.head_dim == q.head_dim &&
           v.head_dim == q.head_dim && o.head_dim == q.head_dim && k.heads > 0 &&
           q.heads % k.heads == 0 && v.heads == k.heads && o.heads == q.heads &&
           v.tokens == k.tokens && o.tokens == q.tokens && heads.begin >= 0 &&
           heads.end <= q.heads && queries.begin >= 0 && queries.end <= q.tokens &&
           keys.begin >= 0 && keys.end <= k.tokens;
}

}  // namespace detail::attn

/// Blocked attention on query heads `heads`, query tokens `queries` and keys `keys` (the
/// hot-path kernel: no allocation, no throw; preconditions are ROPEKIT_ASSERTs).
///
/// Writes O (and params.lse) for exactly the rows (t, h) in `queries` x `heads`, so disjoint
/// ranges may run concurrently on different threads with different workspaces. Restricting
/// `keys` gives a partial result (normalised over those keys, with its LSE) for merge_attention.
/// \tparam Arch xsimd architecture tag or ropekit::scalar_arch.
/// \tparam KV float, bfloat16 or half.
/// \tparam Mask a mask policy from mask.hpp (or any type with the same three functions).
template <class Arch, class KV, class Mask>
void attention_blocked(Arch, head_view<const float> q, head_view<const KV> k, head_view<const KV> v,
                       head_view<float> o, const Mask& mask, const attention_params& params,
                       index_range heads, index_range queries, index_range keys,
                       attention_workspace& ws) {
    ROPEKIT_TRACE_KERNEL("attention_blocked", Arch::name());
    const bool shapes = detail::attn::shapes_ok<Arch, KV>(q, k, v, o, heads, queries, keys);
    ROPEKIT_ASSERT(shapes, "attention_blocked: inconsistent shapes or ranges");
    const bool scale = params.softmax_scale > 0.0f;
    ROPEKIT_ASSERT(scale, "attention_blocked: softmax_scale must be > 0");
    // With the asserts compiled out (NDEBUG) a broken precondition writes nothing rather than
    // reading out of bounds, as the rotary kernels do.
    if (!shapes || !scale) return;
    const detail::attn::no_rotation none{};
    detail::attn::kernel<Arch, KV, Mask, detail::attn::no_rotation> kern(q, k, v, o, mask, params,
                                                                         none, ws);
    kern.run(heads, queries, keys);
}

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Attention over the whole problem on the calling thread (front door: validates and throws
/// ropekit::error naming the field at fault; allocates one attention_workspace).
template <class KV, class Mask>
void attention(head_view<const float> q, head_view<const KV> k, head_view<const KV> v,
               head_view<float> o, const Mask& mask, const attention_params& params) {
    detail::attn::validate_shapes(q, k, v, o, params);
    auto ws = std::make_unique<attention_workspace>();
    attention_blocked(default_arch{}, q, k, v, o, mask, params, {0, q.heads}, {0, q.tokens},
                      {0, k.tokens}, *ws);
}

ROPEKIT_END_ISA_NAMESPACE
namespace detail::attn {
ROPEKIT_BEGIN_ISA_NAMESPACE

template <class Rule>
void validate_rerope(const Rule& rule, const rope_frequencies& freqs, const cos_sin_table& table,
                     const head_view<const float>& q, const head_view<const float>& o,
                     std::int64_t n_kv, const attention_params& p) {
    rule.validate();
    freqs.validate();
    require(freqs.head_dim == q.head_dim, "head_dim", "must equal rope_frequencies::head_dim",
            q.head_dim);
    require(table.is_range() && table.pairs() == freqs.pairs() && table.layout() == freqs.layout,
            "table", "must be a range table built from the same frequencies", table.pairs());
    (void)o;
    auto check = [&](std::int64_t pos) {
        require(table.contains(pos), "position", "is outside the cos/sin table", pos);
    };
    const std::int64_t n_q = q.tokens;
    for (std::int64_t t = 0; t < n_q; ++t) check(p.q_positions ? p.q_positions[t] : n_kv - n_q + t);
    for (std::int64_t j = 0; j < n_kv; ++j) check(p.k_positions ? p.k_positions[j] : j);
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail::attn

/// Blocked ReRoPE / Leaky ReRoPE attention (Su 2023), in one pass with O(tile) memory.
///
/// **Q and K arrive unrotated** (the kernel rotates them): the score of query i and key j is
/// the RoPE score at relative position `rule.relative_position(i - j)`, i.e. ordinary RoPE
/// (`(R_i q).(R_j k)`) when `i - j < window`, and beyond it `(R_w q).k` (ReRoPE) or
/// `(R_{(i + w(k-1))/k} q).(R_{j/k} k)` (Leaky). Per key tile the kernel computes only the
/// scores it needs: ordinary for tiles entirely inside the window, capped for tiles entirely
/// beyond it, both (selected per element) on the band around the window edge.
/// \param table range cos/sin table of `freqs` covering every query and key position (engines
///        keep one per model); non-integer Leaky angles are computed with accurate_cos_sin.
template <class Arch, class KV, class Mask, class Rule>
void rerope_attention_blocked(Arch, head_view<const float> q, head_view<const KV> k,
                              head_view<const KV> v, head_view<float> o, const Mask& mask,
                              const attention_params& params, const Rule& rule,
                              const rope_frequencies& freqs, const cos_sin_table& table,
                              index_range heads, index_range queries, index_range keys,
                              attention_workspace& ws) {
    static_assert(std::is_same_v<Rule, rerope> || std::is_same_v<Rule, leaky_rerope>,
                  "Rule is ropekit::rerope or ropekit::leaky_rerope");
    ROPEKIT_TRACE_KERNEL("rerope_attention_blocked", Arch::name());
    const bool shapes = detail::attn::shapes_ok<Arch, KV>(q, k, v, o, heads, queries, keys);
    ROPEKIT_ASSERT(shapes, "rerope_attention_blocked: inconsistent shapes or ranges");
    const bool tables_match =
        freqs.head_dim == q.head_dim && table.pairs() == freqs.pairs() && table.is_range();
    ROPEKIT_ASSERT(tables_match,
                   "rerope_attention_blocked: frequencies / table do not match head_dim");
    if (!shapes || !tables_match) return;  // NDEBUG: write nothing rather than read out of bounds
    // Every position the kernel will look up must have a table row (cheap: O(n_q + n_kv)).
    bool covered = true;
    for (std::int64_t t = queries.begin; t < queries.end; ++t)
        covered = covered && table.contains(params.q_positions ? params.q_positions[t]
                                                               : k.tokens - q.tokens + t);
    for (std::int64_t j = keys.begin; j < keys.end; ++j)
        covered = covered && table.contains(params.k_positions ? params.k_positions[j] : j);
    ROPEKIT_ASSERT(covered, "rerope_attention_blocked: a position is outside the cos/sin table");
    if (!covered) return;
    const detail::attn::rerope_rotation<Rule> rot{rule, &freqs, &table};
    detail::attn::kernel<Arch, KV, Mask, detail::attn::rerope_rotation<Rule>> kern(q, k, v, o, mask,
                                                                                   params, rot, ws);
    kern.run(heads, queries, keys);
}

ROPEKIT_BEGIN_ISA_NAMESPACE

/// ReRoPE / Leaky ReRoPE attention over the whole problem (front door: validates, including
/// that `table` covers every position, and allocates one workspace). See
/// rerope_attention_blocked.
template <class KV, class Mask, class Rule>
void rerope_attention(head_view<const float> q, head_view<const KV> k, head_view<const KV> v,
                      head_view<float> o, const Mask& mask, const attention_params& params,
                      const Rule& rule, const rope_frequencies& freqs, const cos_sin_table& table) {
    detail::attn::validate_shapes(q, k, v, o, params);
    detail::attn::validate_rerope(rule, freqs, table, q, o, k.tokens, params);
    auto ws = std::make_unique<attention_workspace>();
    rerope_attention_blocked(default_arch{}, q, k, v, o, mask, params, rule, freqs, table,
                             {0, q.heads}, {0, q.tokens}, {0, k.tokens}, *ws);
}

/// Merges one row's partial result `(o_b, lse_b)` into `(o_a, lse_a)`: both normalised over
/// disjoint key sets. With `sink` non-null its logit joins the denominator here (once).
/// Empty partials (LSE -inf) are neutral; if everything is empty, o = 0 and lse = -inf.
inline void merge_attention_row(float* o_a, float& lse_a, const float* o_b, float lse_b,
                                int head_dim, const float* sink = nullptr) noexcept {
    const double la = lse_a, lb = lse_b;
    const double s = sink ? double(*sink) : -std::numeric_limits<double>::infinity();
    const double mx = std::max(std::max(la, lb), s);
    if (mx == -std::numeric_limits<double>::infinity()) {
        for (int d = 0; d < head_dim; ++d) o_a[d] = 0.0f;
        lse_a = -std::numeric_limits<float>::infinity();
        return;
    }
    const double wa = std::exp(la - mx), wb = std::exp(lb - mx), ws = std::exp(s - mx);
    const double total = wa + wb + ws;
    const float fa = float(wa / total), fb = float(wb / total);
    for (int d = 0; d < head_dim; ++d) o_a[d] = fa * o_a[d] + fb * o_b[d];
    lse_a = float(mx + std::log(total));
}

/// Merges partial result b into a for query tokens `queries` and heads `heads` (LSE arrays laid
/// out `[n_q][n_heads]` as attention_params::lse). `sink_logits` (per query head, or null) are
/// added by this call: for split keys, pass the sinks here exactly once and never to the partial
/// attention calls.
inline void merge_attention(head_view<float> o_a, float* lse_a, head_view<const float> o_b,
                            const float* lse_b, index_range queries, index_range heads,
                            const float* sink_logits = nullptr) {
    ROPEKIT_ASSERT(o_a.heads == o_b.heads && o_a.head_dim == o_b.head_dim &&
                       queries.end <= o_a.tokens && queries.end <= o_b.tokens &&
                       heads.end <= o_a.heads,
                   "merge_attention: inconsistent shapes");
    for (std::int64_t t = queries.begin; t < queries.end; ++t)
        for (std::int64_t h = heads.begin; h < heads.end; ++h) {
            const std::int64_t i = t * o_a.heads + h;
            merge_attention_row(o_a.at(t, h), lse_a[i], o_b.at(t, h), lse_b[i], o_a.head_dim,
                                sink_logits ? sink_logits + h : nullptr);
        }
}

/// Part `part` of `parts` near-equal key ranges of [0, n_kv), aligned to the 64-key tile, for
/// splitting one (decode) problem over threads.
inline index_range split_keys(std::int64_t n_kv, int parts, int part) noexcept {
    const std::int64_t tiles = (n_kv + detail::attn::tile_keys - 1) / detail::attn::tile_keys;
    const std::int64_t b = tiles * part / parts * detail::attn::tile_keys;
    const std::int64_t e = tiles * (part + 1) / parts * detail::attn::tile_keys;
    return {std::min(b, n_kv), std::min(e, n_kv)};
}

ROPEKIT_END_ISA_NAMESPACE
ROPEKIT_END_NAMESPACE

/// \cond INTERNAL
#define ROPEKIT_ATTENTION_KERNELS_(PREFIX, ARCH, KV, MASK)                                  \
    PREFIX template void ropekit::attention_blocked<ARCH, KV, MASK>(                        \
        ARCH, ::ropekit::head_view<const float>, ::ropekit::head_view<const KV>,            \
        ::ropekit::head_view<const KV>, ::ropekit::head_view<float>, const MASK&,           \
        const ::ropekit::attention_params&, ::ropekit::index_range, ::ropekit::index_range, \
        ::ropekit::index_range, ::ropekit::attention_workspace&);
#define ROPEKIT_REROPE_ATTENTION_KERNELS_(PREFIX, ARCH, KV, MASK, RULE)                      \
    PREFIX template void ropekit::rerope_attention_blocked<ARCH, KV, MASK, RULE>(            \
        ARCH, ::ropekit::head_view<const float>, ::ropekit::head_view<const KV>,             \
        ::ropekit::head_view<const KV>, ::ropekit::head_view<float>, const MASK&,            \
        const ::ropekit::attention_params&, const RULE&, const ::ropekit::rope_frequencies&, \
        const ::ropekit::cos_sin_table&, ::ropekit::index_range, ::ropekit::index_range,     \
        ::ropekit::index_range, ::ropekit::attention_workspace&);
/// \endcond

/// Declares (extern template) attention_blocked of architecture ARCH for K/V storage KV and mask
/// type MASK, so a translation unit built without ARCH's flags can call
/// `ropekit::attention_blocked(ARCH{}, ...)` while the code lives in a TU built with those flags,
/// which uses ROPEKIT_INSTANTIATE_ATTENTION_KERNELS(ARCH, KV, MASK). One (KV, MASK) pair per
/// line: instantiate only what the engine uses (each costs tens of seconds of compile time).
/// See examples/runtime_dispatch.
#define ROPEKIT_DECLARE_ATTENTION_KERNELS(ARCH, KV, MASK) \
    ROPEKIT_ATTENTION_KERNELS_(extern, ARCH, KV, MASK)

/// Explicitly instantiates attention_blocked of ARCH for KV and MASK (see
/// ROPEKIT_DECLARE_ATTENTION_KERNELS). Put it in a translation unit compiled with ARCH's flags.
#define ROPEKIT_INSTANTIATE_ATTENTION_KERNELS(ARCH, KV, MASK) \
    ROPEKIT_ATTENTION_KERNELS_(, ARCH, KV, MASK)

/// Declares (extern template) rerope_attention_blocked of ARCH for KV, MASK and RULE
/// (ropekit::rerope or ropekit::leaky_rerope); see ROPEKIT_DECLARE_ATTENTION_KERNELS.
#define ROPEKIT_DECLARE_REROPE_ATTENTION_KERNELS(ARCH, KV, MASK, RULE) \
    ROPEKIT_REROPE_ATTENTION_KERNELS_(extern, ARCH, KV, MASK, RULE)

/// Explicitly instantiates rerope_attention_blocked of ARCH for KV, MASK and RULE.
#define ROPEKIT_INSTANTIATE_REROPE_ATTENTION_KERNELS(ARCH, KV, MASK, RULE) \
    ROPEKIT_REROPE_ATTENTION_KERNELS_(, ARCH, KV, MASK, RULE)
