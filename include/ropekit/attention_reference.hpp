// SPDX-License-Identifier: Apache-2.0
/// \file
/// Naive attention in double that materialises the full n_q x n_kv score matrix: the oracle the
/// blocked kernels are tested against (and that engines may reuse for their own golden tests).
#pragma once

#include "abi.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention.hpp"

ROPEKIT_BEGIN_NAMESPACE

namespace detail::attn_ref {

/// Rotates one head in double by angle `position * inv_freq[i]` per pair.
inline std::vector<double> rotate(const std::vector<double>& x, double position,
                                  const rope_frequencies& f) {
    std::vector<double> out = x;
    const int pairs = f.pairs();
    for (int i = 0; i < pairs; ++i) {
        const double a = position * double(f.inv_freq[i]);
        const double c = std::cos(a), s = std::sin(a);
        const int i0 = f.layout == rope_layout::neox ? i : 2 * i;
        const int i1 = f.layout == rope_layout::neox ? i + pairs : 2 * i + 1;
        out[i0] = x[i0] * c - x[i1] * s;
        out[i1] = x[i1] * c + x[i0] * s;
    }
    return out;
}

template <class T>
std::vector<double> head(const head_view<const T>& x, std::int64_t t, std::int64_t h) {
    std::vector<double> r(std::size_t(x.head_dim));
    for (int d = 0; d < x.head_dim; ++d) r[d] = double(stored_value(x.at(t, h), d));
    return r;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

/// Softmax over one score row (hidden keys are -inf), sink in the denominator only, output
/// and LSE in double.
template <class KV>
void finish_row(const std::vector<double>& s, const head_view<const KV>& v, std::int64_t kvh,
                const float* sink, int head_dim, double* out, double& lse) {
    double mx = sink ? double(*sink) : -std::numeric_limits<double>::infinity();
    for (double x : s) mx = std::max(mx, x);
    for (int d = 0; d < head_dim; ++d) out[d] = 0.0;
    if (mx == -std::numeric_limits<double>::infinity()) {
        lse = -std::numeric_limits<double>::infinity();
        return;
    }
    double den = sink ? std::exp(double(*sink) - mx) : 0.0;
    for (std::size_t j = 0; j < s.size(); ++j) {
        if (s[j] == -std::numeric_limits<double>::infinity()) continue;
        const double p = std::exp(s[j] - mx);
        den += p;
        const KV* vr = v.at(std::int64_t(j), kvh);
        for (int d = 0; d < head_dim; ++d) out[d] += p * double(stored_value(vr, d));
    }
    for (int d = 0; d < head_dim; ++d) out[d] /= den;
    lse = mx + std::log(den);
}

/// Generic driver: `score(t, h, j)` gives the scaled, unmasked score in double; the soft-cap
/// (attention_params::logit_softcap) applies to it before the mask, as in HF's eager attention.
/// O has v's head size (q / k may have another: MLA).
template <class KV, class Mask, class Score>
void run(const head_view<const float>& q, const head_view<const KV>& k,
         const head_view<const KV>& v, std::vector<double>& o, std::vector<double>& lse,
         const Mask& mask, const attention_params& p, Score&& score) {
    const std::int64_t n_q = q.tokens, n_kv = k.tokens, H = q.heads;
    const std::int64_t group = H / k.heads;
    const int D = v.head_dim;
    const double cap = double(p.logit_softcap);
    const std::int64_t qoff = p.query_index_offset >= 0 ? p.query_index_offset : n_kv - n_q;
    const positions qpos = detail::attn::resolved_q_positions(p, n_q, n_kv);
    const positions kpos = detail::attn::resolved_k_positions(p);
    o.assign(std::size_t(n_q * H * D), 0.0);
    lse.assign(std::size_t(n_q * H), 0.0);
    std::vector<double> s(static_cast<std::size_t>(n_kv));
    for (std::int64_t h = 0; h < H; ++h) {
        // Full score matrix, one row at a time per head (n_q x n_kv doubles overall).
        for (std::int64_t t = 0; t < n_q; ++t) {
            const std::int64_t qp = qpos.at(t);
            for (std::int64_t j = 0; j < n_kv; ++j) {
                const std::int64_t kp = kpos.at(j);
                if (!mask.visible(qp, qoff + t, kp, j)) {
                    s[j] = -std::numeric_limits<double>::infinity();
                    continue;
                }
                const double x = score(t, h, j, qp, kp);
                s[j] = cap > 0.0 ? cap * std::tanh(x / cap) : x;
            }
            finish_row(s, v, h / group, p.sink_logits ? p.sink_logits + h : nullptr, D,
                       o.data() + (t * H + h) * D, lse[t * H + h]);
        }
    }
}

}  // namespace detail::attn_ref

/// softmax(softcap(scale * Q K^T) + mask) V in double with the full score matrix. Q and K may
/// have another head size than V (MLA). Outputs o as `[n_q][n_heads][v.head_dim]` and lse as
/// `[n_q][n_heads]` (double). Same semantics as
/// ropekit::attention (sinks, positions, empty rows -> zeros and LSE -inf). No validation: give
/// it what attention() accepts.
/// \tparam KT, VT K and V element types (float, bfloat16 or half, const or not).
template <class KT, class VT, class Mask>
void attention_reference(head_view<const float> q, head_view<KT> k_view, head_view<VT> v_view,
                         const Mask& mask, const attention_params& p, std::vector<double>& o,
                         std::vector<double>& lse) {
    using namespace detail::attn_ref;
    using KV = detail::attn::kv_element_t<KT, VT>;
    const head_view<const KV> k = k_view, v = v_view;
    const std::int64_t group = q.heads / k.heads;
    std::vector<std::vector<double>> qs, ks;
    for (std::int64_t t = 0; t < q.tokens; ++t)
        for (std::int64_t h = 0; h < q.heads; ++h) qs.push_back(head(q, t, h));
    for (std::int64_t j = 0; j < k.tokens; ++j)
        for (std::int64_t h = 0; h < k.heads; ++h) ks.push_back(head(k, j, h));
    run(q, k, v, o, lse, mask, p,
        [&](std::int64_t t, std::int64_t h, std::int64_t j, std::int64_t, std::int64_t) {
            return double(p.softmax_scale()) *
                   dot(qs[std::size_t(t * q.heads + h)], ks[std::size_t(j * k.heads + h / group)]);
        });
}

/// Attention under a relative-position rule (position_rules.hpp) by the two-matrix definition,
/// in double: s_near = (R_i q).(R_j k), s_far = (R_{far_q(i)} q).(R_{far_k(j)} k), score =
/// where(i - j < window, s_near, s_far), angles from the rule's own far_q_position /
/// far_k_position. It takes the inputs the kernel takes: for rules with unrotated inputs, raw q
/// and k; for rules with rotated inputs (streaming_llm), q and k already rotated at i and j, so
/// s_near = q.k and s_far = (R_{far_q(i) - i} q).(R_{far_k(j) - j} k). Outputs as
/// attention_reference. No validation.
template <class KT, class VT, class Mask, class Rule>
void position_rule_attention_reference(head_view<const float> q, head_view<KT> k_view,
                                       head_view<VT> v_view, const Mask& mask,
                                       const attention_params& p, const Rule& rule,
                                       const rope_frequencies& freqs, std::vector<double>& o,
                                       std::vector<double>& lse) {
    using namespace detail::attn_ref;
    using KV = detail::attn::kv_element_t<KT, VT>;
    const head_view<const KV> k = k_view, v = v_view;
    const positions qpos = detail::attn::resolved_q_positions(p, q.tokens, k.tokens);
    const positions kpos = detail::attn::resolved_k_positions(p);
    const std::int64_t group = q.heads / k.heads;
    constexpr bool rotated = Rule::inputs == rule_inputs::rotated;
    const std::int64_t n_q = q.tokens, n_kv = k.tokens;
    // Near operands (rotated at i and j, or as given) and far operands, one per (token, head).
    std::vector<std::vector<double>> q1, q2, k1, k2;
    for (std::int64_t t = 0; t < n_q; ++t) {
        const std::int64_t i = qpos.at(t);
        for (std::int64_t h = 0; h < q.heads; ++h) {
            const std::vector<double> x = head(q, t, h);
            q1.push_back(rotated ? x : rotate(x, double(i), freqs));
            q2.push_back(rotate(x, rule.far_q_position(i) - (rotated ? double(i) : 0.0), freqs));
        }
    }
    for (std::int64_t j = 0; j < n_kv; ++j) {
        const std::int64_t kp = kpos.at(j);
        for (std::int64_t h = 0; h < k.heads; ++h) {
            const std::vector<double> x = head(k, j, h);
            k1.push_back(rotated ? x : rotate(x, double(kp), freqs));
            k2.push_back(rotate(x, rule.far_k_position(kp) - (rotated ? double(kp) : 0.0), freqs));
        }
    }
    run(q, k, v, o, lse, mask, p,
        [&](std::int64_t t, std::int64_t h, std::int64_t j, std::int64_t qp, std::int64_t kp) {
            const std::size_t qi = std::size_t(t * q.heads + h);
            const std::size_t ki = std::size_t(j * k.heads + h / group);
            const double s = qp - kp < rule.window ? dot(q1[qi], k1[ki]) : dot(q2[qi], k2[ki]);
            return double(p.softmax_scale()) * s;
        });
}

/// ReRoPE / Leaky ReRoPE by the published two-matrix definition (FORMULAS.md section 8), Q and
/// K unrotated: kept for 0.2 code, forwards to position_rule_attention_reference.
template <class KT, class VT, class Mask, class Rule>
void rerope_attention_reference(head_view<const float> q, head_view<KT> k_view,
                                head_view<VT> v_view, const Mask& mask, const attention_params& p,
                                const Rule& rule, const rope_frequencies& freqs,
                                std::vector<double>& o, std::vector<double>& lse) {
    position_rule_attention_reference(q, k_view, v_view, mask, p, rule, freqs, o, lse);
}

ROPEKIT_END_NAMESPACE
