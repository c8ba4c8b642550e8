// SPDX-License-Identifier: Apache-2.0
/// \file
/// Blocked (flash-style) CPU attention with online softmax: masks as policies (mask.hpp),
/// GQA/MQA, float or 16-bit K/V, gpt-oss learned sinks, split-key partials merged by
/// log-sum-exp, and the relative-position rules of position_rules.hpp (ReRoPE, Leaky ReRoPE,
/// Self-Extend, StreamingLLM cache positions) fused into the same single pass.
///
/// Shapes: Q is n_q x n_heads x head_dim (float), K is n_kv x n_kv_heads x head_dim and V
/// n_kv x n_kv_heads x v_head_dim (float, bfloat16, half, or ggml-compatible q8_0 blocks; V may
/// alias K's first channels, as MLA's latent cache does), O is n_q x n_heads x v_head_dim (float);
/// n_heads is a multiple of n_kv_heads and query head h reads K/V head `h / (n_heads /
/// n_kv_heads)`. Memory is O(tile): the scores are never materialised beyond a 64 x 64 tile (see
/// attention_workspace).
///
/// For every query row the result is `sum_j softmax_j(scale * q.k_j) v_j` over the keys the
/// mask makes visible. A row that sees no key (and has no sink) returns zeros and LSE = -inf.
///
/// Entry points:
/// - attention() / position_rule_attention(): validate everything (views, mask, positions,
///   sinks; the rule and its table) and throw ropekit::error naming the field, then run the whole
///   problem on this thread, in a workspace of the caller's or a freshly allocated one;
/// - attention_blocked() / position_rule_attention_blocked(): the hot-path kernels, on a
///   head_range, a query_range and a key_range (always in that order; distinct types, so a swap
///   does not compile), with a caller-owned workspace, so an engine can spread (heads x query
///   blocks) or (key ranges) over its threads;
/// - rerope_attention() / rerope_attention_blocked(): the 0.2 names, kept, forwarding;
/// - merge_attention(): combine two partial results over disjoint key sets (split-KV decode).
///
/// The hot entry points never throw or allocate: they check their preconditions with
/// ROPEKIT_ASSERT and, with the asserts compiled out, write nothing when one fails, rather than
/// read or write out of bounds. The softmax scale comes from attention_params::for_model(freqs).
/// K and V may be views of const or non-const elements.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>

#include "arch.hpp"
#include "attention_temperature.hpp"
#include "attention_types.hpp"
#include "detail/attention_kernel.hpp"
#include "error.hpp"
#include "mask.hpp"
#include "paged_view.hpp"
#include "position_rules.hpp"
#include "rope.hpp"
#include "storage.hpp"
#include "table.hpp"

ROPEKIT_BEGIN_NAMESPACE

namespace detail::attn {

/// The K/V storage type of views `head_view<KT>` / `head_view<VT>`, const or not.
template <class KT, class VT>
struct kv_element {
    using type = std::remove_const_t<KT>;  ///< float, bfloat16, half or block_q8_0
    static_assert(std::is_same_v<type, std::remove_const_t<VT>>,
                  "K and V must have the same element type");
    static_assert(is_kv_storage_type_v<type>, "K/V storage is float, bfloat16, half or block_q8_0");
};
template <class KT, class VT>
using kv_element_t = typename kv_element<KT, VT>::type;

/// Whether Mask has a validate() member (every ropekit mask does; a user policy may not).
template <class Mask, class = void>
struct has_validate : std::false_type {};
template <class Mask>
struct has_validate<Mask, std::void_t<decltype(std::declval<const Mask&>().validate())>>
    : std::true_type {};

/// Throws ropekit::error unless `pos` is usable for `n` tokens: not table_rows(), ids not null,
/// every |position| < attention_position_limit.
// Cold-path validators: their code depends on the compile flags (abi.hpp).
ROPEKIT_BEGIN_ISA_NAMESPACE

inline void validate_attention_positions(const positions& pos, std::int64_t n, const char* field) {
    require(pos.which() != positions::kind::table_rows, field,
            "must be positions by value (contiguous, ids or constant), not table_rows()",
            "table_rows()");
    if (n <= 0) return;
    const bool ids = pos.which() == positions::kind::ids32 || pos.which() == positions::kind::ids64;
    require(!ids || pos.id_data() != nullptr, field, "ids must not be null with tokens", n);
    constexpr std::int64_t hi = attention_position_limit - 1;
    for_each_position(pos, 0, n, -hi, hi, [&](std::int64_t t, std::int64_t p) {
        fail(field, "must satisfy |position| < 2^62",
             "token " + format_value(t) + " at " + format_value(p));
    });
}

/// Throws ropekit::error (field `logit_softcap`) unless the cap is 0 (none) or a normal float32:
/// the kernels multiply by 1/cap, a subnormal cap has 1/cap = inf, and a zero score then gives
/// 0 * inf = NaN.
inline void validate_logit_softcap(const attention_params& p) {
    require(logit_softcap_ok(p.logit_softcap), "logit_softcap",
            "must be 0 (no cap) or a normal float32 > 0 (>= 1.1754943508222875e-38, finite)",
            p.logit_softcap);
}

/// Cold-path check of everything attention() / position_rule_attention() need; throws
/// ropekit::error naming the field.
template <class KVView, class Mask>
void validate_attention(const head_view<const float>& q, const KVView& k, const KVView& v,
                        const head_view<float>& o, const Mask& mask, const attention_params& p) {
    using KV = std::remove_const_t<std::remove_pointer_t<decltype(k.at(0, 0))>>;
    static_assert(is_kv_storage_type_v<KV>, "K/V storage is float, bfloat16, half or block_q8_0");
    // q / k share one head size and v / o another (MLA: 192 / 128 in prefill, 576 / 512 in the
    // absorbed decode, where v may be a view of k's first 512 channels).
    require(q.head_dim > 0 && q.head_dim <= max_head_dim, "head_dim", "must be in [1, 576]",
            q.head_dim);
    require(k.head_dim == q.head_dim, "k.head_dim", "must equal q's head_dim", k.head_dim);
    require(v.head_dim > 0 && v.head_dim <= max_head_dim, "v.head_dim", "must be in [1, 576]",
            v.head_dim);
    require(o.head_dim == v.head_dim, "o.head_dim", "must equal v's head_dim", o.head_dim);
    require(p.head_dim() == 0 || p.head_dim() == q.head_dim, "head_dim",
            "(of q and k) must equal that of the frequencies attention_params were built from",
            q.head_dim);
    validate_logit_softcap(p);
    require(q.heads > 0, "n_heads", "must be > 0", q.heads);
    require(k.heads > 0 && q.heads % k.heads == 0, "n_kv_heads", "must be > 0 and divide n_heads",
            k.heads);
    require(v.heads == k.heads, "v.heads", "must equal k.heads", v.heads);
    require(o.heads == q.heads, "o.heads", "must equal q.heads", o.heads);
    require(q.tokens >= 0 && k.tokens >= 0, "tokens", "must be >= 0", k.tokens);
    require(v.tokens == k.tokens, "v.tokens", "must equal k.tokens", v.tokens);
    require(o.tokens == q.tokens, "o.tokens", "must equal q.tokens", o.tokens);
    // The views' own checks: non-null data with rows, strides that keep rows apart.
    q.validate();
    k.validate();
    v.validate();
    o.validate();
    if constexpr (has_validate<Mask>::value) mask.validate();
    require(std::isfinite(p.softmax_scale()) && p.softmax_scale() > 0.0f, "softmax_scale",
            "must be finite and > 0", p.softmax_scale());
    require(q.tokens < attention_position_limit && k.tokens < attention_position_limit, "tokens",
            "must be < 2^62", std::max(q.tokens, k.tokens));
    if (p.q_positions) validate_attention_positions(*p.q_positions, q.tokens, "q_positions");
    if (p.k_positions) validate_attention_positions(*p.k_positions, k.tokens, "k_positions");
    require(p.query_index_offset < 0 || p.query_index_offset <= attention_position_limit - q.tokens,
            "query_index_offset", "+ n_q must be <= 2^62", p.query_index_offset);
    if (p.sink_logits) {
        for (int h = 0; h < q.heads; ++h)
            require(!std::isnan(p.sink_logits[h]) &&
                        p.sink_logits[h] < std::numeric_limits<float>::infinity(),
                    "sink_logits", "must not be NaN or +inf (-inf: no sink)", p.sink_logits[h]);
    }
}

ROPEKIT_END_ISA_NAMESPACE

// Hot-path checks, templated on Arch like every helper the kernels call (abi.hpp).

/// Hot-path shape check shared by the kernels: consistent views and ranges inside them.
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE bool has_rows(const head_view<T>& x) noexcept {
    return x.data != nullptr;
}
template <class Arch, class T>
ROPEKIT_ALWAYS_INLINE bool has_rows(const paged_view<T>& x) noexcept {
    return x.pool != nullptr && x.block_table != nullptr && x.page_size > 0;
}

template <class Arch, class KVView>
bool shapes_ok(const head_view<const float>& q, const KVView& k, const KVView& v,
               const head_view<float>& o, head_range heads, query_range queries,
               key_range keys) noexcept {
    return q.head_dim > 0 && q.head_dim <= max_head_dim && k.head_dim == q.head_dim &&
           v.head_dim > 0 && v.head_dim <= max_head_dim && o.head_dim == v.head_dim &&
           k.heads > 0 && q.heads >= k.heads && q.heads % k.heads == 0 && v.heads == k.heads &&
           o.heads == q.heads && v.tokens == k.tokens && o.tokens == q.tokens && heads.begin >= 0 &&
           heads.begin <= heads.end && heads.end <= q.heads && queries.begin >= 0 &&
           queries.begin <= queries.end && queries.end <= q.tokens && keys.begin >= 0 &&
           keys.begin <= keys.end && keys.end <= k.tokens &&
           (queries.size() == 0 || heads.size() == 0 || (q.data && o.data)) &&
           (keys.size() == 0 || (has_rows<Arch>(k) && has_rows<Arch>(v)));
}

/// Hot-path check of the parameters: a positive scale and usable positions (null ids only
/// with no token to read, as validate_attention allows).
template <class Arch>
bool params_ok(const attention_params& p, head_range heads, query_range queries,
               key_range keys) noexcept {
    (void)heads;  // the decode form reads query positions even for an empty head range
    const bool rows = queries.size() > 0;
    return p.softmax_scale() > 0.0f && logit_softcap_ok(p.logit_softcap) &&
           (!p.q_positions || positions_usable(*p.q_positions, rows)) &&
           (!p.k_positions || positions_usable(*p.k_positions, rows && keys.size() > 0));
}

}  // namespace detail::attn

namespace detail::attn {
/// The body of attention_blocked for either kind of K/V view.
template <class Arch, class KV, class Mask, class KVView>
void run_blocked(const head_view<const float>& q, const KVView& k, const KVView& v,
                 const head_view<float>& o, const Mask& mask, const attention_params& params,
                 head_range heads, query_range queries, key_range keys, attention_workspace& ws) {
    const bool shapes = shapes_ok<Arch>(q, k, v, o, heads, queries, keys);
    ROPEKIT_ASSERT(shapes, "attention_blocked: inconsistent shapes or ranges");
    const bool usable = params_ok<Arch>(params, heads, queries, keys);
    ROPEKIT_ASSERT(usable, "attention_blocked: softmax_scale <= 0, or unusable positions");
    // With the asserts compiled out (NDEBUG) a broken precondition writes nothing rather than
    // reading out of bounds, as the rotary kernels do.
    if (!shapes || !usable) return;
    const no_rotation none{};
    kernel<Arch, KV, Mask, no_rotation, KVView> kern(q, k, v, o, mask, params, none, ws);
    kern.run(heads.indices(), queries.indices(), keys.indices());
}
}  // namespace detail::attn

/// Blocked attention on query heads `heads`, query tokens `queries` and keys `keys` (the
/// hot-path kernel: no allocation, no throw; preconditions are ROPEKIT_ASSERTs).
///
/// Writes O (and params.lse) for exactly the rows (t, h) in `queries` x `heads`, so disjoint
/// ranges may run concurrently on different threads with different workspaces. Restricting
/// `keys` gives a partial result (normalised over those keys, with its LSE) for merge_attention.
/// With ROPEKIT_ASSERT compiled out, inconsistent shapes or ranges write nothing. Positions,
/// masks and sinks are not checked here: attention() validates them.
/// \tparam Arch xsimd architecture tag or ropekit::scalar_arch.
/// \tparam KV float, bfloat16, half or block_q8_0 (8-bit blocks, storage.hpp: head_dim and
/// v_head_dim multiples of 32; decode reads the blocks directly, prefill dequantises tiles).
/// \tparam Mask a mask policy from mask.hpp (or any type with the same three functions).
template <class Arch, class KV, class Mask>
ROPEKIT_ALWAYS_INLINE void attention_blocked(Arch arch, head_view<const float> q,
                                             head_view<const KV> k, head_view<const KV> v,
                                             head_view<float> o, const Mask& mask,
                                             const attention_params& params, head_range heads,
                                             query_range queries, key_range keys,
                                             attention_workspace& ws) {
    attention_run(arch, attention_problem<head_view<const KV>, Mask>{q, k, v, o, mask, params},
                  attention_work{heads, queries, keys}, ws);
}

/// attention_blocked over a paged K/V cache (paged_view.hpp): the same kernel, reading each
/// tile and decode chunk one page-long run at a time. `k` and `v` hold the sequence's
/// k.tokens cached tokens; keys index them.
template <class Arch, class KV, class Mask>
ROPEKIT_ALWAYS_INLINE void attention_blocked(Arch arch, head_view<const float> q,
                                             paged_view<const KV> k, paged_view<const KV> v,
                                             head_view<float> o, const Mask& mask,
                                             const attention_params& params, head_range heads,
                                             query_range queries, key_range keys,
                                             attention_workspace& ws) {
    attention_run(arch, attention_problem<paged_view<const KV>, Mask>{q, k, v, o, mask, params},
                  attention_work{heads, queries, keys}, ws);
}

/// attention_blocked for K/V views of non-const elements (`head_view<bfloat16>`, ...): the
/// same kernel, on read-only views of them.
template <class Arch, class KT, class VT, class Mask,
          std::enable_if_t<!(std::is_const_v<KT> && std::is_const_v<VT>), int> = 0>
void attention_blocked(Arch arch, head_view<const float> q, head_view<KT> k, head_view<VT> v,
                       head_view<float> o, const Mask& mask, const attention_params& params,
                       head_range heads, query_range queries, key_range keys,
                       attention_workspace& ws) {
    using KV = detail::attn::kv_element_t<KT, VT>;
    attention_blocked(arch, q, head_view<const KV>(k), head_view<const KV>(v), o, mask, params,
                      heads, queries, keys, ws);
}

/// attention_blocked for paged K/V views of non-const elements.
template <class Arch, class KT, class VT, class Mask,
          std::enable_if_t<!(std::is_const_v<KT> && std::is_const_v<VT>), int> = 0>
void attention_blocked(Arch arch, head_view<const float> q, paged_view<KT> k, paged_view<VT> v,
                       head_view<float> o, const Mask& mask, const attention_params& params,
                       head_range heads, query_range queries, key_range keys,
                       attention_workspace& ws) {
    using KV = detail::attn::kv_element_t<KT, VT>;
    attention_blocked(arch, q, paged_view<const KV>(k), paged_view<const KV>(v), o, mask, params,
                      heads, queries, keys, ws);
}

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Attention over the whole problem on the calling thread, in the caller's workspace (front
/// door: validates the views, the mask, the positions, query_index_offset and the sinks, and
/// throws ropekit::error naming the field at fault).
/// \tparam KT, VT K and V element types: float, bfloat16, half or block_q8_0, const or not (the
/// same).
template <class KT, class VT, class Mask>
void attention(head_view<const float> q, head_view<KT> k, head_view<VT> v, head_view<float> o,
               const Mask& mask, const attention_params& params, attention_workspace& ws) {
    using KV = detail::attn::kv_element_t<KT, VT>;
    const head_view<const KV> kc = k, vc = v;
    detail::attn::validate_attention(q, kc, vc, o, mask, params);
    attention_blocked(default_arch{}, q, kc, vc, o, mask, params, head_range{0, q.heads},
                      query_range{0, q.tokens}, key_range{0, k.tokens}, ws);
}

/// attention() in a freshly allocated workspace (about 1 MB, one allocation per call); pass
/// one to the overload above to reuse it.
template <class KT, class VT, class Mask>
void attention(head_view<const float> q, head_view<KT> k, head_view<VT> v, head_view<float> o,
               const Mask& mask, const attention_params& params) {
    auto ws = std::make_unique<attention_workspace>();
    attention(q, k, v, o, mask, params, *ws);
}

/// attention() over one sequence's paged K/V (paged_view.hpp): validates as attention() does,
/// plus the page layout and every block table entry the sequence uses (field `paged_view` or
/// `block_table`).
template <class KT, class VT, class Mask>
void attention(head_view<const float> q, paged_view<KT> k, paged_view<VT> v, head_view<float> o,
               const Mask& mask, const attention_params& params, attention_workspace& ws) {
    using KV = detail::attn::kv_element_t<KT, VT>;
    const paged_view<const KV> kc = k, vc = v;
    detail::attn::validate_attention(q, kc, vc, o, mask, params);
    attention_blocked(default_arch{}, q, kc, vc, o, mask, params, head_range{0, q.heads},
                      query_range{0, q.tokens}, key_range{0, k.tokens}, ws);
}

/// attention() over paged K/V in a freshly allocated workspace (about 1 MB per call).
template <class KT, class VT, class Mask>
void attention(head_view<const float> q, paged_view<KT> k, paged_view<VT> v, head_view<float> o,
               const Mask& mask, const attention_params& params) {
    auto ws = std::make_unique<attention_workspace>();
    attention(q, k, v, o, mask, params, *ws);
}

ROPEKIT_END_ISA_NAMESPACE

namespace detail::attn {

/// Whether attention_params carry the attention factor of `freqs` (built by for_model(freqs)).
template <class Arch>
bool logit_scale_matches(const attention_params& p, const rope_frequencies& f) noexcept {
    return std::abs(p.logit_scale() - f.logit_scale()) <= 1e-6 * f.logit_scale();
}

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Cold-path check of a position rule call (beyond validate_attention): the rule's fields, the
/// frequencies, the attention factor in `p`, and that `table` is a range table of `freqs`
/// holding every row the kernel looks up: the query and key positions for rules with
/// unrotated inputs, and Self-Extend's far rows (q at floor(i/G) + w - floor(w/G), k at
/// floor(j/G)) for the pairs that are far. StreamingLLM's far q rows (the conjugates of rows
/// 1 .. i - c) need not be in it: the kernel computes missing ones accurately.
template <class Rule>
void validate_position_rule(const Rule& rule, const rope_frequencies& freqs,
                            const cos_sin_table& table, const head_view<const float>& q,
                            std::int64_t n_kv, const attention_params& p) {
    static_assert(is_position_rule_v<Rule>,
                  "Rule must have the shape of a position rule (position_rules.hpp)");
    rule.validate();
    freqs.validate();
    require(freqs.head_dim == q.head_dim, "head_dim", "must equal rope_frequencies::head_dim",
            q.head_dim);
    require(q.head_dim <= max_rule_head_dim, "head_dim", "must be <= 256 with a position rule",
            q.head_dim);
    // The fused rotations are the ordinary (partial) rotary of the first rotary_dim channels;
    // a slice at an offset (MLA) or a wider NeoX span (Gemma 4 proportional) is not done here.
    require(freqs.rotary_offset == 0, "rotary_offset", "must be 0 with a position rule",
            freqs.rotary_offset);
    require(freqs.ordinary_geometry(), "pair_span",
            "must be 0 or rotary_dim / 2 with a position rule", freqs.pair_span);
    require(logit_scale_matches<isa_tag>(p, freqs), "logit_scale",
            "of attention_params must be the frequencies' logit_scale(): build them with "
            "attention_params::for_model(freqs)",
            p.logit_scale());
    require(table.is_range() && table.pairs() == freqs.pairs() && table.layout() == freqs.layout,
            "table", "must be a range table built from the same frequencies", table.pairs());
    // The query positions are rotated even with no key (as the hot path checks them).
    std::int64_t qlo = 0, qhi = 0, klo = 0, khi = 0;
    if (q.tokens > 0)
        position_bounds<void>(resolved_q_positions(p, q.tokens, n_kv), 0, q.tokens, qlo, qhi);
    if (n_kv > 0) position_bounds<void>(resolved_k_positions(p), 0, n_kv, klo, khi);
    if constexpr (Rule::inputs == rule_inputs::unrotated) {
        if (q.tokens > 0) {
            require(table.contains(qlo), "position", "is outside the cos/sin table", qlo);
            require(table.contains(qhi), "position", "is outside the cos/sin table", qhi);
        }
        if (n_kv > 0) {
            require(table.contains(klo), "position", "is outside the cos/sin table", klo);
            require(table.contains(khi), "position", "is outside the cos/sin table", khi);
        }
    }
    if (q.tokens <= 0 || n_kv <= 0) return;
    // What only this call can tell: the far positions its queries and keys reach (the rule's
    // validate_call hook, position_rules.hpp).
    detail::validate_rule_call(
        rule, rule_call_bounds{qlo, qhi, klo, khi, max_accurate_position(freqs.inv_freq)}, table);
}

/// The 0.2 name of validate_position_rule (ReRoPE and Leaky ReRoPE).
template <class Rule>
void validate_rerope(const Rule& rule, const rope_frequencies& freqs, const cos_sin_table& table,
                     const head_view<const float>& q, std::int64_t n_kv,
                     const attention_params& p) {
    validate_position_rule(rule, freqs, table, q, n_kv, p);
}

ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail::attn

namespace detail::attn {
/// The body of position_rule_attention_blocked for either kind of K/V view.
template <class Arch, class KV, class Mask, class Rule, class KVView>
void run_rule_blocked(const head_view<const float>& q, const KVView& k, const KVView& v,
                      const head_view<float>& o, const Mask& mask, const attention_params& params,
                      const Rule& rule, const rope_frequencies& freqs, const cos_sin_table& table,
                      head_range heads, query_range queries, key_range keys,
                      attention_workspace& ws) {
    static_assert(is_position_rule_v<Rule>,
                  "Rule must have the shape of a position rule (position_rules.hpp)");
    const bool shapes = shapes_ok<Arch>(q, k, v, o, heads, queries, keys);
    ROPEKIT_ASSERT(shapes, "position_rule_attention_blocked: inconsistent shapes or ranges");
    const bool usable =
        params_ok<Arch>(params, heads, queries, keys) && logit_scale_matches<Arch>(params, freqs);
    ROPEKIT_ASSERT(usable,
                   "position_rule_attention_blocked: params without the frequencies' attention "
                   "factor, or unusable positions");
    const bool tables_match = freqs.head_dim == q.head_dim && v.head_dim == q.head_dim &&
                              q.head_dim <= max_rule_head_dim && freqs.ordinary_geometry() &&
                              freqs.rotary_dim > 0 && freqs.rotary_dim <= q.head_dim &&
                              freqs.inv_freq.size() == std::size_t(freqs.pairs()) &&
                              table.pairs() == freqs.pairs() && table.is_range();
    ROPEKIT_ASSERT(tables_match,
                   "position_rule_attention_blocked: frequencies / table do not match head_dim");
    const bool mask_fits = ropekit::detail::rule_accepts_mask(rule, mask);
    ROPEKIT_ASSERT(mask_fits,
                   "position_rule_attention_blocked: the rule is defined for rule.mask() only");
    if (!shapes || !usable || !tables_match || !mask_fits) return;  // NDEBUG: write nothing
    bool covered = true;
    if constexpr (Rule::inputs == rule_inputs::unrotated) {
        // Every position the kernel rotates at must have a table row (cheap: O(1) for
        // contiguous positions, O(n_q + n_kv) for ids); the table is one interval, so the
        // bounds suffice.
        std::int64_t lo = 0, hi = 0;
        if (queries.size() > 0 && heads.size() > 0) {
            position_bounds<Arch>(resolved_q_positions(params, q.tokens, k.tokens), queries.begin,
                                  queries.end, lo, hi);
            covered = table.contains(lo) && table.contains(hi);
            if (keys.size() > 0) {
                position_bounds<Arch>(resolved_k_positions(params), keys.begin, keys.end, lo, hi);
                covered = covered && table.contains(lo) && table.contains(hi);
            }
        }
    }
    ROPEKIT_ASSERT(covered,
                   "position_rule_attention_blocked: a position is outside the cos/sin table");
    if (!covered) return;
    using Pos = rule_rotation<Rule>;
    const Pos rot{rule, &freqs, &table};
    kernel<Arch, KV, Mask, Pos, KVView> kern(q, k, v, o, mask, params, rot, ws);
    kern.run(heads.indices(), queries.indices(), keys.indices());
}
}  // namespace detail::attn

/// The blocked entry point on a problem struct (attention_types.hpp): `work` of `problem`, hot
/// path (no allocation, no throw; preconditions are ROPEKIT_ASSERTs and, with them compiled out,
/// a failed one writes nothing). attention_blocked and position_rule_attention_blocked are this
/// call with their arguments gathered; an instantiation names the problem type
/// (ROPEKIT_INSTANTIATE_ATTENTION), not a signature.
/// \tparam Problem attention_problem<KVView, Mask, Rule>
template <class Arch, class Problem>
void attention_run(Arch, const Problem& problem, const attention_work& work,
                   attention_workspace& ws) {
    using KVView = typename Problem::kv_view_type;
    using KV = std::remove_const_t<std::remove_pointer_t<decltype(problem.k.at(0, 0))>>;
    using Rule = typename Problem::rule_type;
    const Problem& p = problem;
    if constexpr (std::is_same_v<Rule, no_position_rule>) {
        // Traced under the entry points' names (tests/abi, engines' logs).
        ROPEKIT_TRACE_KERNEL("attention_blocked", Arch::name());
        detail::attn::run_blocked<Arch, KV, typename Problem::mask_type, KVView>(
            p.q, p.k, p.v, p.o, p.mask, p.params, work.heads, work.queries, work.keys, ws);
    } else {
        ROPEKIT_TRACE_KERNEL("position_rule_attention_blocked", Arch::name());
        const bool tables = p.freqs != nullptr && p.table != nullptr;
        ROPEKIT_ASSERT(tables, "attention_run: a position rule needs freqs and table");
        if (!tables) return;
        detail::attn::run_rule_blocked<Arch, KV, typename Problem::mask_type, Rule, KVView>(
            p.q, p.k, p.v, p.o, p.mask, p.params, p.rule, *p.freqs, *p.table, work.heads,
            work.queries, work.keys, ws);
    }
}

/// Blocked attention under a relative-position rule (position_rules.hpp: rerope,
/// leaky_rerope, self_extend, streaming_llm) in one pass with O(tile) memory: the hot-path
/// kernel (no allocation, no throw; preconditions are ROPEKIT_ASSERTs and, with them compiled
/// out, a failed one writes nothing). See position_rule_attention for the semantics and which
/// inputs arrive rotated; ranges, workspace and partial results are as in attention_blocked.
///
/// Per key tile the kernel computes only the products it needs: the near one for tiles
/// entirely inside the window, the far one for tiles entirely beyond it, both (selected per
/// element) only on the band around the window edge; a query block's far q rows are computed
/// on its first tile with far pairs.
/// \param table range cos/sin table of `freqs`; for rules with unrotated inputs it must hold
///        every query and key position (checked here). Self-Extend's far rows and
///        StreamingLLM's conjugate rows missing from it are computed accurately.
template <class Arch, class KV, class Mask, class Rule>
ROPEKIT_ALWAYS_INLINE void position_rule_attention_blocked(
    Arch arch, head_view<const float> q, head_view<const KV> k, head_view<const KV> v,
    head_view<float> o, const Mask& mask, const attention_params& params, const Rule& rule,
    const rope_frequencies& freqs, const cos_sin_table& table, head_range heads,
    query_range queries, key_range keys, attention_workspace& ws) {
    static_assert(is_position_rule_v<Rule>,
                  "Rule must have the shape of a position rule (position_rules.hpp)");
    attention_run(arch,
                  attention_problem<head_view<const KV>, Mask, Rule>{q, k, v, o, mask, params, rule,
                                                                     &freqs, &table},
                  attention_work{heads, queries, keys}, ws);
}

/// position_rule_attention_blocked over a paged K/V cache (paged_view.hpp).
template <class Arch, class KV, class Mask, class Rule>
ROPEKIT_ALWAYS_INLINE void position_rule_attention_blocked(
    Arch arch, head_view<const float> q, paged_view<const KV> k, paged_view<const KV> v,
    head_view<float> o, const Mask& mask, const attention_params& params, const Rule& rule,
    const rope_frequencies& freqs, const cos_sin_table& table, head_range heads,
    query_range queries, key_range keys, attention_workspace& ws) {
    static_assert(is_position_rule_v<Rule>,
                  "Rule must have the shape of a position rule (position_rules.hpp)");
    attention_run(arch,
                  attention_problem<paged_view<const KV>, Mask, Rule>{q, k, v, o, mask, params,
                                                                      rule, &freqs, &table},
                  attention_work{heads, queries, keys}, ws);
}

/// position_rule_attention_blocked for K/V views of non-const elements.
template <class Arch, class KT, class VT, class Mask, class Rule,
          std::enable_if_t<!(std::is_const_v<KT> && std::is_const_v<VT>), int> = 0>
void position_rule_attention_blocked(Arch arch, head_view<const float> q, head_view<KT> k,
                                     head_view<VT> v, head_view<float> o, const Mask& mask,
                                     const attention_params& params, const Rule& rule,
                                     const rope_frequencies& freqs, const cos_sin_table& table,
                                     head_range heads, query_range queries, key_range keys,
                                     attention_workspace& ws) {
    using KV = detail::attn::kv_element_t<KT, VT>;
    position_rule_attention_blocked(arch, q, head_view<const KV>(k), head_view<const KV>(v), o,
                                    mask, params, rule, freqs, table, heads, queries, keys, ws);
}

/// position_rule_attention_blocked for paged K/V views of non-const elements.
template <class Arch, class KT, class VT, class Mask, class Rule,
          std::enable_if_t<!(std::is_const_v<KT> && std::is_const_v<VT>), int> = 0>
void position_rule_attention_blocked(Arch arch, head_view<const float> q, paged_view<KT> k,
                                     paged_view<VT> v, head_view<float> o, const Mask& mask,
                                     const attention_params& params, const Rule& rule,
                                     const rope_frequencies& freqs, const cos_sin_table& table,
                                     head_range heads, query_range queries, key_range keys,
                                     attention_workspace& ws) {
    using KV = detail::attn::kv_element_t<KT, VT>;
    position_rule_attention_blocked(arch, q, paged_view<const KV>(k), paged_view<const KV>(v), o,
                                    mask, params, rule, freqs, table, heads, queries, keys, ws);
}

/// Blocked ReRoPE / Leaky ReRoPE attention: kept for 0.2 code, forwards to
/// position_rule_attention_blocked (same results, same speed). Q and K arrive unrotated.
template <class Arch, class KV, class Mask, class Rule>
ROPEKIT_ALWAYS_INLINE void rerope_attention_blocked(
    Arch arch, head_view<const float> q, head_view<const KV> k, head_view<const KV> v,
    head_view<float> o, const Mask& mask, const attention_params& params, const Rule& rule,
    const rope_frequencies& freqs, const cos_sin_table& table, head_range heads,
    query_range queries, key_range keys, attention_workspace& ws) {
    static_assert(std::is_same_v<Rule, rerope> || std::is_same_v<Rule, leaky_rerope>,
                  "Rule is ropekit::rerope or ropekit::leaky_rerope");
    position_rule_attention_blocked(arch, q, k, v, o, mask, params, rule, freqs, table, heads,
                                    queries, keys, ws);
}

/// rerope_attention_blocked for K/V views of non-const elements (kept for 0.2 code).
template <class Arch, class KT, class VT, class Mask, class Rule,
          std::enable_if_t<!(std::is_const_v<KT> && std::is_const_v<VT>), int> = 0>
ROPEKIT_ALWAYS_INLINE void rerope_attention_blocked(
    Arch arch, head_view<const float> q, head_view<KT> k, head_view<VT> v, head_view<float> o,
    const Mask& mask, const attention_params& params, const Rule& rule,
    const rope_frequencies& freqs, const cos_sin_table& table, head_range heads,
    query_range queries, key_range keys, attention_workspace& ws) {
    using KV = detail::attn::kv_element_t<KT, VT>;
    rerope_attention_blocked(arch, q, head_view<const KV>(k), head_view<const KV>(v), o, mask,
                             params, rule, freqs, table, heads, queries, keys, ws);
}

ROPEKIT_BEGIN_ISA_NAMESPACE

/// Attention under a relative-position rule over the whole problem in the caller's workspace
/// (front door: validates as attention() does, plus the rule's fields, the frequencies, that
/// `params` carry their attention factor (attention_params::for_model(freqs)) and that `table`
/// covers every row the rule looks up; throws ropekit::error naming the field at fault).
///
/// The score of query position i and key position j is RoPE at the rule's relative position:
/// near pairs (`i - j < rule.window`) `(R_i q).(R_j k)`, far pairs
/// `(R_{far_q_position(i)} q).(R_{far_k_position(j)} k)`. What Q and K must be:
/// - `rerope{w}`: **unrotated** Q and K. Far: q at w, k unrotated.
/// - `leaky_rerope{w, k}`: **unrotated** Q and K. Far: q at (i + w(k-1))/k, k at j/k.
/// - `self_extend{w, G}`: **unrotated** Q and K. Far: q at floor(i/G) + w - floor(w/G), k at
///   floor(j/G); `table` must hold those rows too.
/// - `streaming_llm{n_sink, window}`: Q and K **rotated** at their own (stream) positions i and
///   j, as an engine stores them; use mask `rule.mask()`. Near scores are plain q.k; far ones
///   (the sinks, under that mask) re-rotate q to `min(i, n_sink + window - 1)`.
/// \param table range cos/sin table of `freqs` (engines keep one per model).
template <class KT, class VT, class Mask, class Rule>
void position_rule_attention(head_view<const float> q, head_view<KT> k, head_view<VT> v,
                             head_view<float> o, const Mask& mask, const attention_params& params,
                             const Rule& rule, const rope_frequencies& freqs,
                             const cos_sin_table& table, attention_workspace& ws) {
    using KV = detail::attn::kv_element_t<KT, VT>;
    const head_view<const KV> kc = k, vc = v;
    detail::attn::validate_attention(q, kc, vc, o, mask, params);
    detail::require(v.head_dim == q.head_dim, "v.head_dim",
                    "must equal q's head_dim with a position rule", v.head_dim);
    detail::attn::validate_position_rule(rule, freqs, table, q, k.tokens, params);
    detail::require(detail::rule_accepts_mask(rule, mask), "mask",
                    "must be rule.mask() for this rule (its meaning fixes the sinks and the "
                    "window)",
                    std::string("another mask"));
    position_rule_attention_blocked(default_arch{}, q, kc, vc, o, mask, params, rule, freqs, table,
                                    head_range{0, q.heads}, query_range{0, q.tokens},
                                    key_range{0, k.tokens}, ws);
}

/// position_rule_attention() in a freshly allocated workspace (about 1 MB, one allocation per
/// call); pass one to the overload above to reuse it.
template <class KT, class VT, class Mask, class Rule>
void position_rule_attention(head_view<const float> q, head_view<KT> k, head_view<VT> v,
                             head_view<float> o, const Mask& mask, const attention_params& params,
                             const Rule& rule, const rope_frequencies& freqs,
                             const cos_sin_table& table) {
    auto ws = std::make_unique<attention_workspace>();
    position_rule_attention(q, k, v, o, mask, params, rule, freqs, table, *ws);
}

/// position_rule_attention() over one sequence's paged K/V (paged_view.hpp).
template <class KT, class VT, class Mask, class Rule>
void position_rule_attention(head_view<const float> q, paged_view<KT> k, paged_view<VT> v,
                             head_view<float> o, const Mask& mask, const attention_params& params,
                             const Rule& rule, const rope_frequencies& freqs,
                             const cos_sin_table& table, attention_workspace& ws) {
    using KV = detail::attn::kv_element_t<KT, VT>;
    const paged_view<const KV> kc = k, vc = v;
    detail::attn::validate_attention(q, kc, vc, o, mask, params);
    detail::require(v.head_dim == q.head_dim, "v.head_dim",
                    "must equal q's head_dim with a position rule", v.head_dim);
    detail::attn::validate_position_rule(rule, freqs, table, q, k.tokens, params);
    detail::require(detail::rule_accepts_mask(rule, mask), "mask",
                    "must be rule.mask() for this rule (its meaning fixes the sinks and the "
                    "window)",
                    std::string("another mask"));
    position_rule_attention_blocked(default_arch{}, q, kc, vc, o, mask, params, rule, freqs, table,
                                    head_range{0, q.heads}, query_range{0, q.tokens},
                                    key_range{0, k.tokens}, ws);
}

/// position_rule_attention() over paged K/V in a freshly allocated workspace (about 1 MB per
/// call).
template <class KT, class VT, class Mask, class Rule>
void position_rule_attention(head_view<const float> q, paged_view<KT> k, paged_view<VT> v,
                             head_view<float> o, const Mask& mask, const attention_params& params,
                             const Rule& rule, const rope_frequencies& freqs,
                             const cos_sin_table& table) {
    auto ws = std::make_unique<attention_workspace>();
    position_rule_attention(q, k, v, o, mask, params, rule, freqs, table, *ws);
}

/// ReRoPE / Leaky ReRoPE attention (Q and K unrotated): kept for 0.2 code, forwards to
/// position_rule_attention.
template <class KT, class VT, class Mask, class Rule>
void rerope_attention(head_view<const float> q, head_view<KT> k, head_view<VT> v,
                      head_view<float> o, const Mask& mask, const attention_params& params,
                      const Rule& rule, const rope_frequencies& freqs, const cos_sin_table& table,
                      attention_workspace& ws) {
    static_assert(std::is_same_v<Rule, rerope> || std::is_same_v<Rule, leaky_rerope>,
                  "Rule is ropekit::rerope or ropekit::leaky_rerope");
    position_rule_attention(q, k, v, o, mask, params, rule, freqs, table, ws);
}

/// rerope_attention() in a freshly allocated workspace (about 1 MB per call; kept for 0.2 code).
template <class KT, class VT, class Mask, class Rule>
void rerope_attention(head_view<const float> q, head_view<KT> k, head_view<VT> v,
                      head_view<float> o, const Mask& mask, const attention_params& params,
                      const Rule& rule, const rope_frequencies& freqs, const cos_sin_table& table) {
    auto ws = std::make_unique<attention_workspace>();
    rerope_attention(q, k, v, o, mask, params, rule, freqs, table, *ws);
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

ROPEKIT_END_ISA_NAMESPACE
namespace detail::attn {
ROPEKIT_BEGIN_ISA_NAMESPACE
/// Hot-path check of merge_attention: same head count and head_dim, ranges inside both
/// partials, non-null data for a non-empty range.
inline bool merge_shapes_ok(const head_view<float>& o_a, const float* lse_a,
                            const head_view<const float>& o_b, const float* lse_b, head_range heads,
                            query_range queries) noexcept {
    const bool empty = heads.size() == 0 || queries.size() == 0;
    return o_a.head_dim > 0 && o_b.head_dim == o_a.head_dim && o_b.heads == o_a.heads &&
           heads.begin >= 0 && heads.begin <= heads.end && heads.end <= o_a.heads &&
           queries.begin >= 0 && queries.begin <= queries.end && queries.end <= o_a.tokens &&
           queries.end <= o_b.tokens &&
           (empty || (o_a.data && o_b.data && lse_a != nullptr && lse_b != nullptr));
}
ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail::attn
ROPEKIT_BEGIN_ISA_NAMESPACE

/// Merges partial result b into a for query heads `heads` and query tokens `queries` (the same
/// order and range types as attention_blocked; LSE arrays laid out `[n_q][n_heads]` as
/// attention_params::lse). `sink_logits` (per query head, or null; not NaN or +inf) are added by
/// this call: for split keys, pass the sinks here exactly once and never to the partial
/// attention calls. Hot path: inconsistent shapes are a ROPEKIT_ASSERT and, with asserts
/// compiled out, write nothing.
inline void merge_attention(head_view<float> o_a, float* lse_a, head_view<const float> o_b,
                            const float* lse_b, head_range heads, query_range queries,
                            const float* sink_logits = nullptr) {
    const bool ok = detail::attn::merge_shapes_ok(o_a, lse_a, o_b, lse_b, heads, queries);
    ROPEKIT_ASSERT(ok, "merge_attention: inconsistent shapes or ranges");
    if (!ok) return;  // NDEBUG: write nothing rather than read out of bounds
    for (std::int64_t t = queries.begin; t < queries.end; ++t)
        for (std::int64_t h = heads.begin; h < heads.end; ++h) {
            const std::int64_t i = t * o_a.heads + h;
            merge_attention_row(o_a.at(t, int(h)), lse_a[i], o_b.at(t, int(h)), lse_b[i],
                                o_a.head_dim, sink_logits ? sink_logits + h : nullptr);
        }
}

/// Part `part` of `parts` near-equal key ranges of [0, n_kv), aligned to the 64-key tile, for
/// splitting one (decode) problem over threads. Empty unless 0 <= part < parts and n_kv >= 0.
inline key_range split_keys(std::int64_t n_kv, int parts, int part) noexcept {
    if (parts <= 0 || part < 0 || part >= parts || n_kv <= 0) return key_range{};
    const std::int64_t tiles = (n_kv + detail::attn::tile_keys - 1) / detail::attn::tile_keys;
    const std::int64_t b = tiles * part / parts * detail::attn::tile_keys;
    const std::int64_t e = tiles * (part + 1) / parts * detail::attn::tile_keys;
    return key_range{std::min(b, n_kv), std::min(e, n_kv)};
}

ROPEKIT_END_ISA_NAMESPACE

/// Llama 4 temperature tuning on the NoPE layers: multiplies every head of query token t in
/// `tokens` by `temp.scale_at(position of t)` in place (HF: `q * attn_scales` in float32, the
/// scale computed from the token's cache position). Hot path: no allocation, no throw;
/// unusable positions (table_rows(), null ids) or ranges outside q are a ROPEKIT_ASSERT and,
/// with it compiled out, write nothing. Positions must be >= 0
/// (apply_attention_temperature() checks).
template <class Arch>
void attention_temperature_blocked(Arch, head_view<float> q, const positions& pos,
                                   const attention_temperature& temp, query_range tokens) {
    ROPEKIT_TRACE_KERNEL("attention_temperature_blocked", Arch::name());
    const bool ok = tokens.begin >= 0 && tokens.begin <= tokens.end && tokens.end <= q.tokens &&
                    (tokens.size() == 0 || q.data != nullptr) &&
                    detail::attn::positions_usable(pos, tokens.size() > 0 && q.heads > 0);
    ROPEKIT_ASSERT(ok, "attention_temperature_blocked: range outside q or unusable positions");
    if (!ok) return;
    using Ops = detail::attn::vec_ops<Arch>;
    constexpr int W = Ops::width;
    const int D = q.head_dim;
    for (std::int64_t t = tokens.begin; t < tokens.end; ++t) {
        const float f = temp.scale_at(pos.at(t));
        const auto fv = Ops::set1(f);
        for (int h = 0; h < q.heads; ++h) {
            float* row = q.at(t, h);
            int d = 0;
            for (; d + W <= D; d += W) Ops::storeu(row + d, Ops::loadu(row + d) * fv);
            for (; d < D; ++d) row[d] *= f;
        }
    }
}

ROPEKIT_BEGIN_ISA_NAMESPACE

/// attention_temperature_blocked over all of q (front door: validates q, `temp`, and that the
/// positions are by value with every position in [0, 2^62); throws ropekit::error naming the
/// field).
inline void apply_attention_temperature(head_view<float> q, const positions& pos,
                                        const attention_temperature& temp) {
    q.validate();
    temp.validate();
    detail::attn::validate_attention_positions(pos, q.tokens, "positions");
    if (q.tokens > 0)
        detail::for_each_position(
            pos, 0, q.tokens, 0, attention_position_limit - 1, [](std::int64_t t, std::int64_t p) {
                detail::fail("positions", "must be >= 0",
                             "token " + detail::format_value(t) + " at " + detail::format_value(p));
            });
    attention_temperature_blocked(default_arch{}, q, pos, temp, query_range{0, q.tokens});
}

ROPEKIT_END_ISA_NAMESPACE
ROPEKIT_END_NAMESPACE

// The explicit-instantiation macros (ROPEKIT_DECLARE_ATTENTION, ..._LIST, the 0.2 families).
#include "attention_instantiate.hpp"
