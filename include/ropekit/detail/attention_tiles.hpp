// SPDX-License-Identifier: Apache-2.0
/// \file
/// What the attention drivers do around the micro-kernels: rotating a head by a cos|sin row,
/// widening a K/V row of any storage type into a float tile (kv_storage.hpp), and resolving /
/// bounding the query and key positions of a call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../attention_types.hpp"
#include "../config.hpp"
#include "../layout.hpp"
#include "../positions.hpp"
#include "../storage.hpp"
#include "attention_simd.hpp"
#include "kv_storage.hpp"
#include "rope_kernels.hpp"

#include "warnings_push.hpp"

ROPEKIT_BEGIN_NAMESPACE
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

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE

#include "warnings_pop.hpp"
