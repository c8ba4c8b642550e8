// SPDX-License-Identifier: Apache-2.0
/// \file
/// The blocked attention kernel behind attention.hpp: the driver that walks query blocks and
/// key tiles (prefill, grouped prefill, decode, position-rule rotations) over the micro-kernels
/// of attention_micro.hpp / attention_decode_micro.hpp.
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

#include "../attention_types.hpp"
#include "../config.hpp"
#include "../error.hpp"
#include "../layout.hpp"
#include "../mask.hpp"
#include "../position_rules.hpp"
#include "../positions.hpp"
#include "../storage.hpp"
#include "../table.hpp"
#include "../view.hpp"
#include "attention_decode_micro.hpp"
#include "attention_micro.hpp"
#include "attention_rules.hpp"
#include "attention_simd.hpp"
#include "attention_tiles.hpp"
#include "rope_kernels.hpp"
#if ROPEKIT_HAS_XSIMD
#include "simd_storage.hpp"
#endif

#include "warnings_push.hpp"

ROPEKIT_BEGIN_NAMESPACE

namespace detail::attn {

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

#include "warnings_pop.hpp"
