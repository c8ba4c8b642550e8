// SPDX-License-Identifier: Apache-2.0
/// \file
/// The rule-specific part of the blocked attention kernel (attention_kernel.hpp): how each
/// relative-position rule of position_rules.hpp turns into at most two q rotations and two k
/// rotations. The kernel asks the rule, per tile, whether it needs the near product, the far
/// one or both; this header answers "which cos|sin row" for each operand, so the kernel itself
/// has no per-rule branches beyond the far key kind.
///
/// The kernel reads only the rule's rotation forms (far_query_rotation, far_key_rotation) and
/// the hooks they name; no rule is named here. Per rule (i: query position, j: key position):
///
/// | rule          | inputs    | near q | near k | far q                          | far k         |
/// |---------------|-----------|--------|--------|--------------------------------|---------------|
/// | rerope        | unrotated | R_i    | R_j    | R_w (one row per call)         | identity      |
/// | leaky_rerope  | unrotated | R_i    | R_j    | R_{(i + w(k-1))/k} (accurate)  | R_{j/k}       |
/// | self_extend   | unrotated | R_i    | R_j    | table row floor(i/G) + w - w/G | row floor(j/G)|
/// | streaming_llm | rotated   | given  | given  | given q times R_{min(i,c) - i} | given k       |
///
/// StreamingLLM's far q rotation is by a non-positive delta, the conjugate (sin negated) of the
/// table row at `i - min(i, c)`; rows outside the table are computed accurately instead, so a
/// table need not cover them. Self-Extend's far rows fall back the same way in the kernel (the
/// front door still requires the table to cover them, as it does every other position).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../config.hpp"
#include "../mask.hpp"
#include "../position_rules.hpp"
#include "../table.hpp"
#include "rope_kernels.hpp"

ROPEKIT_BEGIN_NAMESPACE
namespace detail::attn {

/// No rotation inside the kernel (Q and K arrive rotated, or the model has no RoPE).
struct no_rotation {};

/// A relative-position rule fused into the kernel, with the model's frequencies and a range
/// cos/sin table of them (engines keep one per model).
template <class Rule>
struct rule_rotation {
    using rule_type = Rule;  ///< a position rule (position_rules.hpp)
    Rule rule;
    const rope_frequencies* freqs;
    const cos_sin_table* table;
};

/// The 0.2 name of rule_rotation (ReRoPE and Leaky ReRoPE only then).
template <class Rule>
using rerope_rotation = rule_rotation<Rule>;

/// What the kernel needs to know about its position policy at compile time.
template <class Pos>
struct pos_traits {
    static constexpr bool rule = false;           ///< a rule: two products per tile at most
    static constexpr bool rotate_inputs = false;  ///< the kernel rotates q and k at i and j
    static constexpr far_query_rotation far_q = far_query_rotation::fixed;
    static constexpr far_key_rotation far_keys = far_key_rotation::same;
};
template <class Rule>
struct pos_traits<rule_rotation<Rule>> {
    static_assert(is_position_rule_v<Rule>,
                  "Rule must have the shape of a position rule (position_rules.hpp)");
    static constexpr bool rule = true;
    static constexpr bool rotate_inputs = Rule::inputs == rule_inputs::unrotated;
    static constexpr far_query_rotation far_q = Rule::far_q;
    static constexpr far_key_rotation far_keys = Rule::far_keys;
    static_assert(rotate_inputs || far_q == far_query_rotation::integer,
                  "rules with rotated inputs turn q by an integer difference of positions");
};

/// cos|sin of `position * inv_freq` for every pair, accurate (see detail::accurate_cos_sin).
template <class Arch>
inline void accurate_row(double position, const float* inv_freq, int pairs, float* cs) noexcept {
    for (int i = 0; i < pairs; ++i) accurate_cos_sin(position, inv_freq[i], cs[i], cs[pairs + i]);
}

/// The table row of `position` (which the caller checked is in the table).
template <class Arch>
ROPEKIT_ALWAYS_INLINE const float* table_row_at(const cos_sin_table& t,
                                                std::int64_t position) noexcept {
    return t.data() + (position - t.first_position()) * t.row_stride();
}

/// cos|sin at an integer `position`: the table row when the table has it, else computed
/// accurately into `tmp` (the kernel never reads outside the table).
template <class Arch>
ROPEKIT_ALWAYS_INLINE const float* row_or_accurate(const cos_sin_table& t,
                                                   const rope_frequencies& f, std::int64_t position,
                                                   float* tmp) noexcept {
    if (t.contains(position)) return table_row_at<Arch>(t, position);
    accurate_row<Arch>(double(position), f.inv_freq.data(), f.pairs(), tmp);
    return tmp;
}

/// The cos|sin row the far q of query position i is rotated by, or null for no rotation (the
/// far q equals the near one). `tmp` holds a computed row (2 * pairs floats). A fixed far
/// position's row is the kernel's (prepared once per call), passed in as `fixed`.
/// - unrotated inputs: R at the far position (a table row for integer positions);
/// - rotated inputs (StreamingLLM): q arrives rotated at i and the far score wants it at
///   m = far_q_index(i), so q is turned by m - i: no rotation when it is 0, else the table row
///   at |m - i|, conjugated (sin negated) when m < i, or that row computed when the table
///   lacks it.
template <class Arch, class Rule>
ROPEKIT_ALWAYS_INLINE const float* far_q_row(const rule_rotation<Rule>& rot, std::int64_t i,
                                             const float* fixed, float* tmp) noexcept {
    const rope_frequencies& f = *rot.freqs;
    constexpr far_query_rotation form = Rule::far_q;
    if constexpr (form == far_query_rotation::fixed) {
        (void)i, (void)tmp, (void)f;
        return fixed;
    } else if constexpr (form == far_query_rotation::fractional) {
        (void)fixed;
        accurate_row<Arch>(rot.rule.far_q_position(i), f.inv_freq.data(), f.pairs(), tmp);
        return tmp;
    } else if constexpr (Rule::inputs == rule_inputs::unrotated) {
        (void)fixed;
        return row_or_accurate<Arch>(*rot.table, f, rot.rule.far_q_index(i), tmp);
    } else {
        (void)fixed;
        const std::int64_t delta = rot.rule.far_q_index(i) - i;
        if (delta == 0) return nullptr;
        const std::int64_t back = delta < 0 ? -delta : delta;
        const int pairs = f.pairs();
        if (rot.table->contains(back)) {
            const float* row = table_row_at<Arch>(*rot.table, back);
            const float sign = delta < 0 ? -1.0f : 1.0f;
            for (int p = 0; p < pairs; ++p) {
                tmp[p] = row[p];
                tmp[pairs + p] = sign * row[pairs + p];
            }
        } else {
            accurate_row<Arch>(double(delta), f.inv_freq.data(), pairs, tmp);
        }
        return tmp;
    }
}

/// The far key row of key position j for far_key_rotation::integer (a table row, or computed
/// into tmp).
template <class Arch, class Rule>
ROPEKIT_ALWAYS_INLINE const float* far_k_row(const rule_rotation<Rule>& rot, std::int64_t j,
                                             float* tmp) noexcept {
    static_assert(Rule::far_keys == far_key_rotation::integer, "integer far key positions");
    return row_or_accurate<Arch>(*rot.table, *rot.freqs, rot.rule.far_k_index(j), tmp);
}

/// Whether the mask hides every far pair of a tile (then the kernel skips the far product on
/// it: its far pairs get -inf from the per-element mask, which such a tile always applies,
/// because a mask never calls a tile with hidden pairs `all`). False unless known:
template <class Arch, class Rule, class Mask>
ROPEKIT_ALWAYS_INLINE bool far_pairs_hidden(const Rule&, const Mask&,
                                            const block_bounds&) noexcept {
    return false;
}
/// a sliding window no wider than the rule's window hides every far pair (i - j >= window);
template <class Arch, class Rule>
ROPEKIT_ALWAYS_INLINE bool far_pairs_hidden(const Rule& r, const sliding_window_mask& m,
                                            const block_bounds&) noexcept {
    return m.window <= r.window;
}
/// sinks + a window no wider than the rule's: far pairs are visible only for the sink rows, so
/// a tile past them has none. This is what keeps StreamingLLM at the plain kernel's cost: the
/// band tiles at the window edge compute one product, and only sink tiles the far one.
template <class Arch, class Rule>
ROPEKIT_ALWAYS_INLINE bool far_pairs_hidden(const Rule& r, const sink_window_mask& m,
                                            const block_bounds& b) noexcept {
    return m.window <= r.window && b.k_index_min >= m.n_sink;
}

}  // namespace detail::attn
ROPEKIT_END_NAMESPACE
