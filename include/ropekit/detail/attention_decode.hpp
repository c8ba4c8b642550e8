// SPDX-License-Identifier: Apache-2.0
/// \file
/// The decode driver: few query rows per K/V head (decode, GQA groups, a narrow head range),
/// vectorised over head channels instead of rows, over the micro-kernels of
/// attention_decode_micro.hpp. The prefill driver hands it every block of at most 8 rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../config.hpp"
#include "attention_call.hpp"
#include "attention_decode_micro.hpp"

#include "warnings_push.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail::attn {

template <class Arch, class KV, class Mask, class Pos, class KVView = head_view<const KV>>
class decode_driver : public call<Arch, KV, Mask, Pos, KVView> {
    using base = call<Arch, KV, Mask, Pos, KVView>;

  public:
    using base::R;
    using base::rotating;
    using base::W;
    using typename base::Ops;
    using typename base::S;
    using typename base::traits;
    /// Few rows use the decode form: without a rule, or with a rule whose inputs arrive rotated
    /// (StreamingLLM: the far q is a second set of q rows, K is read as given).
    static constexpr bool decode_form = !rotating || !traits::rotate_inputs;

    decode_driver(const head_view<const float>& q, const KVView& k, const KVView& v,
                  const head_view<float>& o, const Mask& mask, const attention_params& p,
                  const Pos& pos, attention_workspace& ws) noexcept
        : base(q, k, v, o, mask, p, pos, ws) {
        rs_ = std::max(this->D_, this->Dv_) <= decode_row_stride_small ? decode_row_stride_small
                                                                       : max_head_dim;
    }

  protected:
    using base::D_;
    using base::Dv_;
    using base::group_;
    using base::k_;
    using base::mask_;
    using base::p_;
    using base::pos_;
    using base::q_;
    using base::v_;
    using base::ws_;

    /// Whether a block of `rows` query rows takes the decode form (needs whole vectors of
    /// channels; the scalar kernels never instantiate it).
    bool decode_fits(std::int64_t rows) const noexcept {
        if constexpr (decode_form && W > 1)
            return D_ % W == 0 && Dv_ % W == 0 && rows > 0 && rows <= 8;
        (void)rows;
        return false;
    }

    /// Decode block: query tokens [t0, t0 + nt) of the heads of K/V heads [g0, g1) within
    /// `heads`. Rows are grouped by K/V head (segment, padded to decode_padded_rows), then token,
    /// then head. The keys are walked in chunks of decode_chunk, and each chunk goes through every
    /// segment in turn (decode_step): the scores, softmax and P V of one K/V head over one chunk
    /// read its K and V rows once, while the next chunks' rows are prefetched into L2.
    void decode_block(std::int64_t g0, std::int64_t g1, index_range heads, std::int64_t t0, int nt,
                      index_range keys) noexcept {
        if constexpr (decode_form && W > 1) {
            // The soft-cap is a template parameter here: as a runtime branch inside the chunk
            // loop its inlined tanh made bf16 decode (head_dim 128, GQA 4) 1.3x slower without a
            // cap.
            if (this->softcap_)
                decode_block_impl<true>(g0, g1, heads, t0, nt, keys);
            else
                decode_block_impl<false>(g0, g1, heads, t0, nt, keys);
        } else {
            (void)g0, (void)g1, (void)heads, (void)t0, (void)nt, (void)keys;
        }
    }

  private:
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
        this->load_positions(t0, nt);
        // Only channels [0, D) of a row are ever read; padding rows stay zero queries.
        for (int r = 0; r < rows; ++r) {
            zero_floats(ws_.kc + r * rs_, D_);
            zero_floats(ws_.ot + r * rs_, Dv_);
        }
        // Storage read as even / odd pairs (kv_traits::even_odd_pairs: bf16 on 16-wide vectors)
        // with whole 2 x width blocks: q is stored, and O accumulated, in that order.
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
        const block_bounds qb = this->query_block_bounds(nt);
        const int n_ranges = this->visible_key_ranges(qb, keys, ranges);
        const int pf_keys =
            std::max(decode_chunk, decode_prefetch_bytes / std::max(1, S::row_bytes(D_)));
        for (int ri = 0; ri < n_ranges; ++ri) {
            const std::int64_t b = std::max(ranges[ri].begin, keys.begin);
            const std::int64_t e = std::min(ranges[ri].end, keys.end);
            for (std::int64_t c0 = b, nc = 0; c0 < e; c0 += nc) {
                // A chunk is one stride run of K and V rows: paged K/V cut it at page ends.
                nc = std::min<std::int64_t>(
                    {decode_chunk, e - c0, run_length(k_, c0), run_length(v_, c0)});
                block_bounds bb;
                const tile_visibility vis = this->classify_tile(qb, c0, int(nc), bb);
                if (vis == tile_visibility::none) continue;
                // With a rule: which of the near and far products the chunk needs.
                const typename base::products need = this->rule_products(bb);
                if constexpr (rotating) {
                    if (need.far && !far_ready) load_far_rows();
                }
                // The rows pf_keys on (in a paged cache: the same slot of a later page).
                const std::ptrdiff_t kpf = prefetch_ahead(k_, c0, pf_keys);
                const std::ptrdiff_t vpf = prefetch_ahead(v_, c0, pf_keys);
                for (int sg = 0; sg < nseg; ++sg)
                    chunk(need, vis, seg_g[sg], seg_r0[sg], seg_rows[sg], seg_nh[sg], c0, int(nc),
                          nt, kpf, vpf, std::bool_constant<Cap>{});
            }
        }
        for (int sg = 0; sg < nseg; ++sg)
            for (int tl = 0; tl < nt; ++tl)
                for (int hh = 0; hh < seg_nh[sg]; ++hh)
                    finish_decode_row(t0 + tl, seg_h0[sg] + hh, seg_r0[sg] + tl * seg_nh[sg] + hh);
    }

    /// One chunk of keys [c0, c0 + nc) for the `nr` rows of one K/V head `g` (its segment starts
    /// at row r0): scores (the near product, or the far one when the chunk has no near pair; on
    /// a band both), the score epilogue, the softmax and P V (decode_step).
    template <bool Cap>
    ROPEKIT_ALWAYS_INLINE void chunk(typename base::products need, tile_visibility vis,
                                     std::int64_t g, int r0, int nr, int nh, std::int64_t c0,
                                     int nc, int nt, std::ptrdiff_t kpf, std::ptrdiff_t vpf,
                                     std::bool_constant<Cap>) noexcept {
        float* sd = ws_.st + r0 * decode_chunk;
        const float* q = ws_.kc + r0 * rs_;
        if constexpr (rotating) {
            if (!need.near) q = ws_.qcap + r0 * rs_;
        }
        const float* qfar = ws_.qcap + r0 * rs_;
        with_row_stride([&](auto rsc) {
            with_pairs([&](auto pc) {
                with_padded_rows(decode_padded_rows(nr), [&](auto nrc) {
                    constexpr int NR = decltype(nrc)::value;
                    constexpr int P = decltype(pc)::value;
                    constexpr int RS = decltype(rsc)::value;
                    decode_step<Ops, NR, P, RS>(
                        k_.at(c0, g), k_.token_stride, v_.at(c0, g), v_.token_stride, nc, D_, Dv_,
                        nr, q, sd, ws_.m + r0, ws_.l + r0, ws_.alpha + r0, ws_.ot + r0 * rs_, kpf,
                        vpf, [&](float* s) {
                            const float* s_far = nullptr;
                            alignas(64) float s2[rotating ? decode_chunk * NR : 1];
                            if constexpr (rotating) {
                                if (need.near && need.far) {
                                    // Band chunk: far scores with the far q rows, selected per
                                    // element by the epilogue.
                                    decode_chunk_scores<Ops, NR, P, RS>(
                                        k_.at(c0, g), k_.token_stride, nc, D_, qfar, s2, 0);
                                    s_far = s2;
                                }
                            } else {
                                (void)s2, (void)qfar, (void)need;
                            }
                            // The whole tile is capped (its padding is reset by the softmax).
                            this->template score_epilogue<Cap>(s, s_far, NR, decode_chunk, NR, vis,
                                                               c0, nc, nt, nh);
                        });
                });
            });
        });
    }

    /// Writes decode row r (row-major accumulator `ot[r][d]`, in pair order when pairs_) as
    /// O(t, h), and its LSE.
    void finish_decode_row(std::int64_t t, std::int64_t h, int r) noexcept {
        const float os = this->row_scale(t, h, ws_.m[r], ws_.l[r]);
        float* out = this->o_.at(t, h);
        const float* acc = ws_.ot + r * rs_;
        for (int d = 0; d < Dv_; ++d) out[d] = acc[pairs_ ? pair_slot(d) : d] * os;
    }

    /// Whether decode reads K/V as even / odd pairs: where the storage's traits offer it and
    /// both head sizes are whole 2 x width blocks.
    bool use_pairs() const noexcept {
        if constexpr (S::template even_odd_pairs<Ops>)
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
        if constexpr (S::template even_odd_pairs<Ops>) {
            if (pairs_) return f(std::integral_constant<int, 2>{});
        }
        f(std::integral_constant<int, 1>{});
    }

    int rs_ = max_head_dim;  // decode row stride (q and O rows in ws_.kc / ws_.ot)
    bool pairs_ = false;
};

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE

#include "warnings_pop.hpp"
