// SPDX-License-Identifier: Apache-2.0
/// \file
/// The blocked attention kernel behind attention.hpp: one call's walk over K/V heads, query
/// blocks and keys, handing each block to the prefill driver (attention_prefill.hpp) or the
/// decode driver (attention_decode.hpp). What they share (positions, the rule's rotations, the
/// score epilogue, row normalisation) is attention_call.hpp; the micro-kernels are
/// attention_micro.hpp and attention_decode_micro.hpp; K/V storage types are read through
/// kv_storage.hpp, position rules through attention_rules.hpp.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../config.hpp"
#include "attention_prefill.hpp"

#include "warnings_push.hpp"

ROPEKIT_BEGIN_NAMESPACE

namespace detail::attn {

/// The blocked kernel for one argument set (see call for `Pos`).
template <class Arch, class KV, class Mask, class Pos, class KVView = head_view<const KV>>
class kernel : public prefill_driver<Arch, KV, Mask, Pos, KVView> {
    using base = prefill_driver<Arch, KV, Mask, Pos, KVView>;

  public:
    using base::grouped;
    using base::R;
    using base::rotating;

    using base::base;

    /// Attention of query tokens `queries` of heads `heads` over keys `keys`.
    void run(index_range heads, index_range queries, index_range keys) noexcept {
        if constexpr (rotating) this->prepare_rotation();
        const std::int64_t kv0 = heads.begin / this->group_;
        const std::int64_t kv1 = (heads.end + this->group_ - 1) / this->group_;
        const std::int64_t nq = queries.size();
        // The decode form exists only without in-kernel rotation of K and with vectors (a
        // constexpr guard: rules with unrotated inputs and scalar kernels never instantiate it).
        if (this->decode_fits(this->group_ * nq)) {
            // Decode: one block spans several K/V heads (up to 64 padded rows), so the per-call
            // setup and the chunk loop are shared by them.
            const std::int64_t per_block =
                std::max<std::int64_t>(1, R / decode_padded_rows(int(this->group_ * nq)));
            for (std::int64_t g = kv0; g < kv1; g += per_block)
                this->decode_block(g, std::min(kv1, g + per_block), heads, queries.begin, int(nq),
                                   keys);
            return;
        }
        for (std::int64_t kvh = kv0; kvh < kv1; ++kvh) {
            const std::int64_t g0 = std::max(heads.begin, kvh * this->group_);
            const std::int64_t g1 = std::min(heads.end, (kvh + 1) * this->group_);
            for (std::int64_t h0 = g0; h0 < g1; h0 += R) {
                const int nh = int(std::min<std::int64_t>(R, g1 - h0));
                const int tokens_per_block = R / nh;
                for (std::int64_t t0 = queries.begin; t0 < queries.end; t0 += tokens_per_block) {
                    if constexpr (grouped) {
                        const int ng = this->group_size(nh, t0, tokens_per_block, queries.end);
                        if (ng >= 2) {
                            this->block_group(kvh, h0, nh, t0, tokens_per_block, ng, queries.end,
                                              keys);
                            t0 += std::int64_t(ng - 1) * tokens_per_block;
                            continue;
                        }
                    }
                    const int nt = int(std::min<std::int64_t>(tokens_per_block, queries.end - t0));
                    this->block(kvh, h0, nh, t0, nt, keys);
                }
            }
        }
    }
};

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE

#include "warnings_pop.hpp"
