// SPDX-License-Identifier: Apache-2.0
/// \file
/// The prefill driver: query blocks of up to 64 rows against key tiles of 64, over the
/// micro-kernels of attention_micro.hpp; a position rule's near and far products per tile; and
/// (16 registers, no rule) groups of blocks sharing each K/V tile. Blocks of at most 8 rows go
/// to the decode driver it is built on.
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
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "../config.hpp"
#include "../paged_view.hpp"
#include "attention_decode.hpp"

#include "warnings_push.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail::attn {

template <class Arch, class KV, class Mask, class Pos, class KVView = head_view<const KV>>
class prefill_driver : public decode_driver<Arch, KV, Mask, Pos, KVView> {
    using base = decode_driver<Arch, KV, Mask, Pos, KVView>;
    using call_type = call<Arch, KV, Mask, Pos, KVView>;

  public:
    using base::C;
    using base::R;
    using base::rotating;
    using base::W;
    using typename base::Ops;
    using typename base::S;
    using typename base::traits;
    /// 16 registers (AVX2, SSE2), no rule: up to max_group consecutive query blocks of one K/V
    /// head share each K/V tile pass (block_group). Measured on a Zen 3 VM that reads L3 at
    /// ~6 GB/s per core, causal prefill, head_dim 128: with one 64-row block per pass, 40% of
    /// the time at n 4096 (30% at n 1024) went to the K / V tile copies waiting on memory;
    /// groups of 4 took 36-48% off the time at n 4096 and 15-20% at n 1024 (fp32 and bf16).
    static constexpr bool grouped = !rotating && Ops::registers < 32 && W > 1;
    /// Query blocks per group: 4 x 64 rows; their Q^T and O^T (head_dim 128: 256 KB) and the
    /// K / V tiles stay in a 512 KB L2.
    static constexpr int max_group = 4;

    using base::base;

  protected:
    using base::D_;
    using base::Dv_;
    using base::k_;
    using base::p_;
    using base::pos_;
    using base::q_;
    using base::v_;
    using base::ws_;

    /// Query tokens [t0, t0 + nt) of heads [h0, h0 + nh) of K/V head kvh over `keys`.
    void block(std::int64_t kvh, std::int64_t h0, int nh, std::int64_t t0, int nt,
               index_range keys) noexcept {
        const int rows = nh * nt;
        if (this->decode_fits(rows)) {
            // Few rows (a narrow head range with several queries): the decode form vectorises
            // over head channels instead of rows, so a vector is not mostly padding.
            this->decode_block(kvh, kvh + 1, {h0, h0 + nh}, t0, nt, keys);
            return;
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
        const block_bounds qb = this->query_block_bounds(nt);
        const int n_ranges = this->visible_key_ranges(qb, keys, ranges);

        for (int ri = 0; ri < n_ranges; ++ri) {
            const std::int64_t b = std::max(ranges[ri].begin, keys.begin);
            const std::int64_t e = std::min(ranges[ri].end, keys.end);
            for (std::int64_t c0 = b; c0 < e; c0 += C) {
                const int nc = int(std::min<std::int64_t>(C, e - c0));
                tile(kvh, nh, nt, nrv, qb, c0, nc);
            }
        }
        finish(h0, nh, t0, nt, ws_.ot, ws_.m, ws_.l);
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
            qbs[g] = this->query_block_bounds(nts[g]);
            index_range ranges[2];
            const int n_ranges = this->visible_key_ranges(qbs[g], keys, ranges);
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
                    const tile_visibility vis = this->classify_tile(qbs[g], c0, nc, b);
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
                        this->load_positions(t0 + std::int64_t(g) * tokens_per_block, nt);
                        pos_block = g;
                    }
                    epilogue(st, nullptr, vis, c0, nc, nt, nh, nrv);
                    softmax_update<Ops>(st, nc, nrv, ms[g], ls[g], as[g]);
                    accumulate_pv<Ops>(vf, vs, nc, Dv_, st, as[g], ots[g], nrv);
                }
            }
        }
        for (int g = 0; g < ng; ++g)
            finish(h0, nh, t0 + std::int64_t(g) * tokens_per_block, nts[g], ots[g], ms[g], ls[g]);
    }

  private:
    /// Loads the block's Q^T into `qt` (scaled; rotated at the query position when the rule's
    /// inputs are unrotated) and zero-pads rows to full vectors. The far q of a rule is loaded
    /// on the first tile that needs it (load_far_q): StreamingLLM blocks inside the cache never
    /// do. Rules always use ws_.qt; the group path passes each block's own.
    void load_q(std::int64_t h0, int nh, std::int64_t t0, int nt, int nrv) noexcept {
        load_q(h0, nh, t0, nt, nrv, ws_.qt);
    }
    void load_q(std::int64_t h0, int nh, std::int64_t t0, int nt, int nrv, float* qt) noexcept {
        const float scale = p_.softmax_scale();
        const int rows = nh * nt;
        this->load_positions(t0, nt);
        for (int tl = 0; tl < nt; ++tl)
            for (int hh = 0; hh < nh; ++hh) q_rows_[tl * nh + hh] = q_.at(t0 + tl, h0 + hh);
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
                    rotate_head<Arch>(tmp, rot, this->table_row(ws_.tok_pos[tl]), pairs, D_,
                                      f.layout);
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

    /// A K or V tile as float rows: the stored rows themselves when they are float rows, else
    /// widened. `pack` copies fp32 rows too: a compact tile spans 8 pages instead of one page
    /// per row.
    const float* float_tile(const KVView& x, int dim, std::int64_t kvh, std::int64_t c0, int nc,
                            float* buf, std::ptrdiff_t& stride, bool pack) noexcept {
        if constexpr (S::float_rows) {
            if (!pack && run_length(x, c0) >= nc) {
                stride = x.token_stride;
                return x.at(c0, kvh);
            }
        }
        const int ds = (dim + 15) / 16 * 16;
        for (int c = 0; c < nc; ++c) S::template widen<Arch>(x.at(c0 + c, kvh), buf + c * ds, dim);
        stride = ds;
        return buf;
    }

    /// The prefill form of the score epilogue (attention_call.hpp): key rows of R scores, the
    /// soft-cap on the block's nrv row vectors.
    void epilogue(float* st, const float* s_far, tile_visibility vis, std::int64_t c0, int nc,
                  int nt, int nh, int nrv) const noexcept {
        if (this->softcap_)
            this->template score_epilogue<true>(st, s_far, R, nc, nrv * W, vis, c0, nc, nt, nh);
        else
            this->template score_epilogue<false>(st, s_far, R, nc, nrv * W, vis, c0, nc, nt, nh);
    }

    void tile(std::int64_t kvh, int nh, int nt, int nrv, const block_bounds& qb, std::int64_t c0,
              int nc) noexcept {
        block_bounds b;
        const tile_visibility vis = this->classify_tile(qb, c0, nc, b);
        if (vis == tile_visibility::none) return;

        float* st = ws_.st;
        const float* s_far = nullptr;
        if constexpr (!rotating) {
            prefetch_next(kvh, c0 + nc);
            std::ptrdiff_t ks = 0;
            const float* kf = float_tile(k_, D_, kvh, c0, nc, ws_.kt, ks, pack_f32_k);
            scores<Ops>(kf, ks, nc, D_, ws_.qt, st, nrv);
        } else {
            st = rule_scores(kvh, nrv, b, c0, nc, s_far);
        }

        epilogue(st, s_far, vis, c0, nc, nt, nh, nrv);
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
        const int kbytes = S::row_bytes(D_), vbytes = S::row_bytes(Dv_);
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

    /// A rule's scores of one tile, chosen per tile (call::rule_products): distances all below
    /// the window use the near product, all at or beyond it the far one, and only tiles that
    /// straddle the window edge compute both, leaving the far ones in `s_far` for the epilogue
    /// to select per element. Returns the score tile.
    float* rule_scores(std::int64_t kvh, int nrv, const block_bounds& b, std::int64_t c0, int nc,
                       const float*& s_far) noexcept {
        if constexpr (rotating) {
            constexpr far_key_rotation fk = traits::far_keys;
            static_assert(traits::rotate_inputs || fk == far_key_rotation::same,
                          "rules with rotated inputs keep the key rotation");
            const rope_frequencies& f = *pos_.freqs;
            const int pairs = f.pairs();
            const typename call_type::products need = this->rule_products(b);
            if (need.far && !far_q_ready_) load_far_q();
            alignas(64) float raw[max_head_dim];
            // float rows are read in place: one base and stride when the tile is one run.
            const float* kraw_base = nullptr;
            std::ptrdiff_t kraw_stride = 0;
            if constexpr (S::float_rows) {
                if (run_length(k_, c0) >= nc) {
                    kraw_base = k_.at(c0, kvh);
                    kraw_stride = k_.token_stride;
                }
            }
            auto raw_row = [&](int c) -> const float* {
                if constexpr (S::float_rows) {
                    return kraw_base ? kraw_base + c * kraw_stride : k_.at(c0 + c, kvh);
                } else {
                    S::template widen<Arch>(k_.at(c0 + c, kvh), raw, D_);
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
            if (need.near) {
                if constexpr (traits::rotate_inputs) {
                    for (int c = 0; c < nc; ++c)
                        rotate_head<Arch>(raw_row(c), ws_.kt + c * max_rule_head_dim,
                                          this->table_row(ws_.kpos[c]), pairs, D_, f.layout);
                    scores<Ops>(ws_.kt, max_rule_head_dim, nc, D_, ws_.qt, ws_.st, nrv);
                } else {
                    scores<Ops>(kf, ks, nc, D_, ws_.qt, ws_.st, nrv);
                }
            }
            if (need.far) {
                const float* kc = nullptr;
                std::ptrdiff_t kcs = max_rule_head_dim;
                if constexpr (fk == far_key_rotation::scaled) {
                    // k at j / divisor: the tile base angle composed with the per-call offset
                    // table (call::prepare_rotation).
                    const double kk = pos_.rule.far_k_divisor();
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
                    // k at the table row far_k_index(j) (Self-Extend: floor(j / G), so a tile
                    // spans ~64 / G rows).
                    for (int c = 0; c < nc; ++c)
                        rotate_head<Arch>(raw_row(c), ws_.kc + c * max_rule_head_dim,
                                          far_k_row<Arch>(pos_, ws_.kpos[c], ws_.cs_tmp), pairs, D_,
                                          f.layout);
                    kc = ws_.kc;
                } else if constexpr (fk == far_key_rotation::same) {
                    kc = kf;
                    kcs = ks;
                } else {  // identity: the key unrotated (ReRoPE)
                    if constexpr (S::float_rows) {
                        if (kraw_base) {
                            kc = kraw_base;
                            kcs = kraw_stride;
                        } else {  // a tile across pages: its rows gathered
                            for (int c = 0; c < nc; ++c)
                                std::memcpy(ws_.kc + c * max_rule_head_dim, k_.at(c0 + c, kvh),
                                            std::size_t(D_) * sizeof(float));
                            kc = ws_.kc;
                        }
                    } else {
                        for (int c = 0; c < nc; ++c)
                            S::template widen<Arch>(k_.at(c0 + c, kvh),
                                                    ws_.kc + c * max_rule_head_dim, D_);
                        kc = ws_.kc;
                    }
                }
                scores<Ops>(kc, kcs, nc, D_, ws_.qcap, ws_.st2, nrv);
            }
            if (!need.near) return ws_.st2;
            if (need.far) s_far = ws_.st2;
            return ws_.st;
        } else {
            (void)kvh, (void)nrv, (void)b, (void)c0, (void)nc, (void)s_far;
            return ws_.st;
        }
    }

    /// Writes a block's O rows (O^T at `ot` back to [token][head][d], one W x W register
    /// transpose per block) and LSE; its running max and sum are at `m` and `l`.
    void finish(std::int64_t h0, int nh, std::int64_t t0, int nt, const float* ot, const float* m,
                const float* l) noexcept {
        using V = typename Ops::vec;
        const int rows = nh * nt;
        float* dst[R];
        alignas(64) float scale[R];
        for (int tl = 0; tl < nt; ++tl)
            for (int hh = 0; hh < nh; ++hh) {
                const int r = tl * nh + hh;
                scale[r] = this->row_scale(t0 + tl, h0 + hh, m[r], l[r]);
                dst[r] = this->o_.at(t0 + tl, h0 + hh);
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

    // The current block's q rows and shape, for the far q loaded on demand (load_far_q).
    const float* q_rows_[R] = {};
    bool far_q_ready_ = false;
    int block_nh_ = 0, block_nt_ = 0, block_nrv_ = 0;
};

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE

#include "warnings_pop.hpp"
