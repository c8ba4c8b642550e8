// SPDX-License-Identifier: Apache-2.0
/// \file
/// One blocked-attention call as the drivers see it (attention_prefill.hpp,
/// attention_decode.hpp): the resolved views, positions and head sizes, the rule's per-call
/// rotations, which keys a query block may see, the one score epilogue every path runs, and the
/// normalisation of a finished row (learned sinks, LSE).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "../attention_types.hpp"
#include "../config.hpp"
#include "../mask.hpp"
#include "../paged_view.hpp"
#include "../position_rules.hpp"
#include "../positions.hpp"
#include "../table.hpp"
#include "../view.hpp"
#include "attention_micro.hpp"
#include "attention_rules.hpp"
#include "attention_simd.hpp"
#include "attention_tiles.hpp"
#include "kv_storage.hpp"

#include "warnings_push.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail::attn {

/// The state of one call and what every path shares. `Pos` is no_rotation or
/// rule_rotation<Rule> (attention_rules.hpp): with a rule, every tile computes the near
/// product, the far one, or (only on the band around the window edge) both, selected per
/// element by the score epilogue.
template <class Arch, class KV, class Mask, class Pos, class KVView = head_view<const KV>>
class call {
  public:
    using Ops = vec_ops<Arch>;
    using S = kv_traits<KV>;  ///< what the kernel knows of the K/V storage type
    static constexpr int W = Ops::width;
    static constexpr int R = block_rows;
    static constexpr int C = tile_keys;
    using traits = pos_traits<Pos>;
    /// A rule is fused (the name predates rules whose inputs arrive rotated).
    static constexpr bool rotating = traits::rule;

    call(const head_view<const float>& q, const KVView& k, const KVView& v,
         const head_view<float>& o, const Mask& mask, const attention_params& p, const Pos& pos,
         attention_workspace& ws) noexcept
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
        softcap_ = p.logit_softcap > 0.0f;
        cap_ = p.logit_softcap;
        inv_cap_ = softcap_ ? 1.0f / p.logit_softcap : 0.0f;
        group_ = q.heads / k.heads;
        n_q_ = q.tokens;
        n_kv_ = k.tokens;
        q_index_offset_ = p.query_index_offset >= 0 ? p.query_index_offset : n_kv_ - n_q_;
        k_is_index_ = k_src_.which() == positions::kind::contiguous && k_src_.at(0) == 0;
    }

  protected:
    /// The per-call rows of the rule's rotation forms: a fixed far q position's row, and for
    /// scaled far keys (j / divisor) the rows of the offsets o / divisor, o < C, which each tile
    /// composes with its base row (the prefill driver's rule_scores).
    void prepare_rotation() noexcept {
        if constexpr (rotating) {
            const rope_frequencies& f = *pos_.freqs;
            const int pairs = f.pairs();
            if constexpr (traits::far_keys == far_key_rotation::scaled) {
                const double k = pos_.rule.far_k_divisor();
                for (int o = 0; o < C; ++o)
                    accurate_row<Arch>(double(o) / k, f.inv_freq.data(), pairs,
                                       ws_.leaky_off + o * 2 * pairs);
            }
            if constexpr (traits::far_q == far_query_rotation::fixed)
                accurate_row<Arch>(pos_.rule.far_q_position(0), f.inv_freq.data(), pairs,
                                   ws_.cs_cap);
        }
    }

    const float* table_row(std::int64_t position) const noexcept {
        return table_row_at<Arch>(*pos_.table, position);
    }

    /// Loads the positions of query tokens [t0, t0 + nt) into ws_.tok_pos / tok_idx.
    void load_positions(std::int64_t t0, int nt) noexcept {
        fill_positions<Arch>(q_src_, t0, nt, ws_.tok_pos);
        for (int tl = 0; tl < nt; ++tl) ws_.tok_idx[tl] = q_index_offset_ + t0 + tl;
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

    /// Which of a rule's two products a tile (or decode chunk) with bounds `b` needs: the far
    /// one when some pair is at distance >= window and the mask does not hide every such pair,
    /// the near one when some pair is within the window or nothing else is computed (all far and
    /// hidden: the mask hides them all).
    struct products {
        bool near = true, far = false;
    };
    products rule_products(const block_bounds& b) const noexcept {
        products need;
        if constexpr (rotating) {
            const std::int64_t w = pos_.rule.window;
            need.far =
                b.q_pos_max - b.k_pos_min >= w && !far_pairs_hidden<Arch>(pos_.rule, mask_, b);
            need.near = b.q_pos_min - b.k_pos_max < w || !need.far;
        } else {
            (void)b;
        }
        return need;
    }

    /// The score epilogue of every path (prefill tiles, grouped prefill, rules, decode chunks),
    /// on one tile of scores before its softmax. The score of query token tl, head hh (of the
    /// nh heads of the block) and key c is `s[c * key_stride + tl * nh + hh]`. In this order:
    /// 1. a rule's band (`s_far` not null, same layout): where the pair is far,
    ///    `i - j >= window`, its far score replaces the near one;
    /// 2. Gemma 2's logit soft-cap on the scaled scores, before the mask (`Cap`): the first
    ///    `cap_len` scores (whole vectors; padding rows included) of keys [0, cap_keys);
    /// 3. -inf wherever the mask hides a pair: only a partially visible tile has such pairs.
    /// Query positions are those in ws_.tok_pos / tok_idx, key positions those in ws_.kpos.
    template <bool Cap>
    void score_epilogue(float* s, const float* s_far, int key_stride, int cap_keys, int cap_len,
                        tile_visibility vis, std::int64_t c0, int nc, int nt,
                        int nh) const noexcept {
        if constexpr (rotating) {
            if (s_far != nullptr) {
                const std::int64_t w = pos_.rule.window;
                for (int c = 0; c < nc; ++c) {
                    float* s1 = s + c * key_stride;
                    const float* s2 = s_far + c * key_stride;
                    for (int tl = 0; tl < nt; ++tl) {
                        if (ws_.tok_pos[tl] - ws_.kpos[c] >= w)
                            for (int hh = 0; hh < nh; ++hh) s1[tl * nh + hh] = s2[tl * nh + hh];
                    }
                }
            }
        } else {
            (void)s_far;
        }
        if constexpr (Cap) {
            if (cap_len == key_stride)
                softcap_scores<Ops>(s, cap_keys * key_stride, cap_, inv_cap_);
            else
                for (int c = 0; c < cap_keys; ++c)
                    softcap_scores<Ops>(s + c * key_stride, cap_len, cap_, inv_cap_);
        } else {
            (void)cap_keys, (void)cap_len;
        }
        if (vis != tile_visibility::partial) return;
        constexpr float ninf = -std::numeric_limits<float>::infinity();
        for (int c = 0; c < nc; ++c) {
            const std::int64_t kp = ws_.kpos[c];
            float* srow = s + c * key_stride;
            for (int tl = 0; tl < nt; ++tl) {
                if (!mask_.visible(ws_.tok_pos[tl], ws_.tok_idx[tl], kp, c0 + c))
                    for (int hh = 0; hh < nh; ++hh) srow[tl * nh + hh] = ninf;
            }
        }
    }

    /// The factor that normalises a row (query token t, head h) with running max `row_m` and
    /// sum `row_l`, including the learned sink, and the row's LSE (written when requested).
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

    head_view<const float> q_;
    KVView k_, v_;  // head_view or paged_view of the K/V storage
    head_view<float> o_;
    const Mask& mask_;
    const attention_params& p_;
    const Pos& pos_;
    attention_workspace& ws_;
    positions q_src_, k_src_;  // resolved query / key positions
    bool k_is_index_ = true;   // key position == key index: the mask's key ranges apply
    int D_ = 0;                // head_dim of q and k
    int Dv_ = 0;               // head_dim of v and o
    bool softcap_ = false;
    float cap_ = 0.0f, inv_cap_ = 0.0f;
    std::int64_t group_ = 1, n_q_ = 0, n_kv_ = 0, q_index_offset_ = 0;
};

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE

#include "warnings_pop.hpp"
